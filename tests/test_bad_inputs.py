"""A catalogue of bad inputs (this file's ``CASES`` and ``bad_input_cases.SWEEP_CASES``): every one is refused by ``kdlab.cli.main`` with exit code 2, a message that
names the bad value and what is accepted (no traceback), and no file that existed before is changed.

Most cases fail during config validation, before any data is loaded; the weights cases go through
``kdlab evaluate`` / ``kdlab export`` (which read the file first) and a few through ``teacher.checkpoint``
and ``model.checkpoint`` of a run. ``docs/bad_inputs.md`` lists the same catalogue.
"""
from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
import torch
import yaml

from bad_input_cases import API_CASES, SWEEP_CASES, _api_cases, make_sweep_files
from conftest import gan_student_config, small_config
from kdlab.cli import main
from kdlab.engine.checkpoint import classifier_metadata, save_checkpoint, save_classifier
from kdlab.engine.generators import save_generator
from kdlab.models import build_generator, build_model

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Path:
    """Good, damaged and foreign weights files, and malformed YAML (read-only for the tests)."""
    d = tmp_path_factory.mktemp("bad_inputs")
    torch.manual_seed(0)
    clf = build_model("mlp", num_classes=10, in_channels=1, image_size=28, hidden=[16])
    good = save_classifier(clf, d / "good.safetensors", data="fashion-mnist").read_bytes()
    (d / "trunc.safetensors").write_bytes(good[: len(good) - 100])
    (d / "edited_run").mkdir()  # a run directory whose config.yaml was edited into malformed YAML
    (d / "edited_run" / "student.safetensors").write_bytes(good)
    (d / "edited_run" / "config.yaml").write_text("name: [unclosed\n  bad: : :\n")
    (d / "zero.safetensors").write_bytes(b"")
    (d / "zero.ckpt").write_bytes(b"")
    (d / "rand.safetensors").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    (d / "rand.ckpt").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    edited = bytearray(good)
    edited[-9] ^= 0x40  # one bit of the last tensor's data
    (d / "edited.safetensors").write_bytes(bytes(edited))
    nan = build_model("mlp", num_classes=10, in_channels=1, image_size=28, hidden=[16])
    with torch.no_grad():
        next(nan.parameters())[0, 0] = float("nan")
    save_classifier(nan, d / "nan.safetensors", data="fashion-mnist")  # a valid file of NaN weights
    state = {k: v.clone() for k, v in clf.state_dict().items()}
    meta = classifier_metadata(clf)
    first = next(iter(state))
    # an old checkpoint (no hash) with one tensor cut down: the shape check must catch it
    torch.save({"format": "kdlab-run-1", "model": {**state, first: state[first][:3].clone()}, "model_meta": meta},
               d / "shape.ckpt")
    # a hashed checkpoint whose tensor values were changed afterwards (shape kept): the hash must catch it
    save_checkpoint({"format": "kdlab-run-1", "model": state, "model_meta": meta}, d / "good.ckpt")
    raw = torch.load(d / "good.ckpt", weights_only=True)
    raw["model"][first] = raw["model"][first] + 1.0
    torch.save(raw, d / "hash.ckpt")
    ckpt = (d / "good.ckpt").read_bytes()
    (d / "trunc.ckpt").write_bytes(ckpt[: len(ckpt) // 2])
    (d / "pickle.ckpt").write_bytes(pickle.dumps({"model": Path("not-weights")}))
    torch.save(clf.state_dict(), d / "foreign.ckpt")  # a plain state_dict: no kdlab metadata
    gen = save_generator(build_generator("dcgan", 1, 28, d=4, latent_dim=16), d / "gen.safetensors",
                         data="fashion-mnist").read_bytes()
    (d / "gen_trunc.safetensors").write_bytes(gen[:200])
    gen_edited = bytearray(gen)
    gen_edited[-5] ^= 0x01
    (d / "gen_edited.safetensors").write_bytes(bytes(gen_edited))
    (d / "bracket.yaml").write_text("name: x\noptim: {lr: [0.1, 0.2\ntrainer: {epochs: 1}\n")
    (d / "tab.yaml").write_text("trainer:\n\tepochs: 1\n")
    (d / "list.yaml").write_text("- name: x\n- seed: 1\n")
    (d / "scalar_section.yaml").write_text("name: x\ndata: 5\n")
    (d / "empty_images").mkdir()
    (d / "empty_images" / "cat").mkdir()  # an image folder whose class has no images
    from PIL import Image

    for split in ("train", "test"):  # a pix2pix folder whose A|B image has an odd width: halves 7x8 and 8x8
        (d / "odd_pairs" / split).mkdir(parents=True)
        Image.new("RGB", (15, 8)).save(d / "odd_pairs" / split / "odd.png")
    for sub in ("trainA", "testA", "testB"):  # a CycleGAN folder without trainB/
        (d / "no_trainB" / sub).mkdir(parents=True)
    make_sweep_files(d)
    for p in d.rglob("*"):
        if p.is_file():
            p.chmod(0o444)
    return d


def snapshot(*roots: Path) -> Dict[Path, str]:
    """SHA-256 of every file under ``roots``."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for r in roots for p in sorted(r.rglob("*")) if p.is_file()}


def cfg_file(tmp_path: Path) -> Path:
    """A valid small run config without a method (each command supplies its own default)."""
    cfg = small_config(tmp_path / "runs")
    cfg.pop("method")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "cfg.yaml"


def gan_cfg_file(tmp_path: Path, teacher: Path) -> Path:
    cfg = gan_student_config(tmp_path / "runs", teacher)
    (tmp_path / "gan.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "gan.yaml"


def case(area: str, argv: str, *expect: str, marks=(), id: str = None):
    """One catalogue entry: ``argv`` (``{cfg}``, ``{gan}``, ``{f}`` (the files), ``{out}`` placeholders,
    split on spaces) must exit 2 with every ``expect`` substring in the message."""
    return pytest.param(argv, expect, marks=marks, id=id or f"{area}: {argv}")


EXP = "jacobian-table1"  # any registered experiment: the bad option is refused before it runs
NO_CUDA = pytest.mark.skipif(CUDA, reason="this machine has CUDA")
CASES = [
    # --- command line
    case("cli", "distill no-such-recipe", "'no-such-recipe'", "recipes:"),
    case("cli", "distill {cfg} trainer.epochs", "'trainer.epochs'", "key=value"),
    case("cli", "distill {cfg} =5", "'=5'", "key=value"),
    case("config", "distill {cfg} name=" + "n" * 250, "(250 characters)", "1 to 120 letters"),
    case("config", "distill {cfg} data.n_per_class=10 data.transfer=mnist-digits", "data.n_per_class = 10",
         "ignored", "'mnist-digits'", "data.transfer_n"),
    case("config", "distill {cfg} out_dir={cfg}", "is a file", "accepted: a directory"),
    case("cli", "distill {cfg} trainer..epochs=3", "'trainer..epochs'", "empty part", "trainer.epochs=5"),
    case("config", "distill {cfg} objective.student.kdd.weight=1", "'kdd'", "did you mean 'kd'?", "known terms"),
    case("config", "train-teacher {cfg} data.name=fashion2digits", "'fashion2digits' is an image-to-image task",
         "accepted: cifar10", "kdlab train-gan"),
    case("config", "distill {cfg} objective.student.vem.steps=1000000000", "vem.steps' = 1000000000", "<= 1000"),
    case("config", "distill {cfg} objective.student.kd.temprature=2", "did you mean 'temperature'?", "accepts:"),
    # --- plugins and library model names (kdlab.plugins, kdlab.models.hub)
    case("plugins", "distill {cfg} --import no_such_plugin_mod", "no module named 'no_such_plugin_mod'", "a .py file"),
    case("plugins", "distill {cfg} imports=[{out}/missing_plugin.py]", "missing_plugin.py' does not exist", "a .py file"),
    case("models", "train-teacher {cfg} model.name=torchvision:resnet81", "unknown torchvision model 'resnet81'",
         "nearest names: resnet18"),
    case("config", "distill {cfg} players.input_nois=0.1", "'input_nois'", "did you mean 'input_noise'?",
         "accepted: input_noise"),
    case("cli", "train-teacher {cfg} --bogus", "--bogus", "accepted: the options of `kdlab train-teacher --help`"),
    case("cli", "train-teacher {cfg} method=distill", "method 'distill'", "`kdlab distill`"),
    case("cli", "frobnicate", "'frobnicate'", "train-teacher"),
    case("cli", "evaluate {f}/edited_run", "config.yaml', line 2, column 6", "did not find expected"),
    case("cli", "export {f}/edited_run", "config.yaml', line 2, column 6", "did not find expected"),
    case("cli", "evaluate {f}/good.safetensors --sigmas abc", "'abc' is not a number", "comma-separated finite numbers >= 0"),
    case("cli", "evaluate {f}/good.safetensors --sigmas 0,nan", "nan is out of range", "finite numbers >= 0"),
    case("cli", "evaluate {f}/good.safetensors --sigmas -0.5", "-0.5 is out of range", ">= 0"),
    case("cli", "evaluate {f}/good.safetensors --threads 0", "--threads = 0", ">= 1"),
    case("cli", "evaluate {f}/good.safetensors trainer.epochs=3", "'trainer.epochs=3'", "data.* overrides only"),
    case("cli", "evaluate {f}/good.safetensors data.max_test=0", "'data.max_test' = 0", "> 0"),
    case("cli", "evaluate-gan {f}/gen.safetensors --n-samples 1", "--n-samples = 1", ">= 2"),
    case("cli", "export {f}/good.safetensors --max-test 0", "--max-test = 0", ">= 1"),
    case("cli", "export {f}/good.safetensors --format tflite", "'tflite'", "onnx"),
    case("cli", "export {f}/good.safetensors --atol 0", "atol", "> 0"),
    case("cli", "export {f}/good.safetensors --atol inf", "atol", "finite number > 0"),
    case("cli", "list nothing", "'nothing'", "accepted: models"),
    # --- config values (all refused before any data is read)
    case("config", "train-teacher {cfg} seed=-1", "'seed' = -1", ">= 0"),
    case("config", "train-teacher {cfg} optim.lr=nan", "'optim.lr' = nan", "must be > 0 and <= 1000 (a finite number"),
    case("config", "train-teacher {cfg} optim.lr=inf", "'optim.lr' = inf", "must be > 0 and <= 1000 (a finite number"),
    case("config", "train-teacher {cfg} optim.lr=0", "'optim.lr' = 0", "> 0"),
    case("config", "train-teacher {cfg} optim.weight_decay=nan", "'optim.weight_decay' = nan", "must be >= 0 (a finite number"),
    case("config", "train-teacher {cfg} optim.momentum=-inf", "'optim.momentum' = -inf", "must be >= 0 (a finite number"),
    case("config", "train-teacher {cfg} optim.betas=[0.9]", "'optim.betas' = [0.9]", "exactly 2"),
    case("config", "train-teacher {cfg} optim.betas=[0.9,1.5]", "1.5", "< 1"),
    case("config", "train-teacher {cfg} optim.name=rmsprop", "'rmsprop'", "sgd, adam, adamw"),
    case("config", "train-teacher {cfg} optim.scheduler=step", "'step'", "cosine, multistep, linear, none"),
    case("config", "train-teacher {cfg} optim.milestones=[0]", "'optim.milestones'", ">= 1"),
    case("config", "train-teacher {cfg} trainer.threads=-1", "'trainer.threads' = -1", ">= 1 (or null)"),
    case("config", "train-teacher {cfg} trainer.limit_train_batches=0", "'trainer.limit_train_batches' = 0", ">= 1"),
    case("config", "train-teacher {cfg} trainer.epochs=0", "'trainer.epochs' = 0", "> 0"),
    case("config", "train-teacher {cfg} trainer.epochs=abc", "trainer.epochs", "abc"),
    case("config", "train-teacher {cfg} trainer.log_every_n_steps=0", "'trainer.log_every_n_steps' = 0", "> 0"),
    case("config", "train-teacher {cfg} trainer.accelerator=cuda", "'cuda'", "no CUDA device", "accepted here: cpu, auto",
         marks=NO_CUDA),
    case("config", "train-teacher {cfg} trainer.accelerator=tpu", "'tpu'", "cpu, cuda, gpu, mps, auto"),
    case("config", "train-teacher {cfg} trainer.devices=0", "'trainer.devices' = 0", "a count >= 1"),
    case("config", "train-teacher {cfg} trainer.compile=fast", "'fast'", "none, default, reduce-overhead"),
    case("config", "train-teacher {cfg} trainer.teacher_cache=maybe", "'maybe'", "auto, on, off"),
    case("config", "train-teacher {cfg} name=..", "'..'", "one directory inside out_dir"),
    case("config", "train-teacher {cfg} name=a/b", "'a/b'", "letters, digits"),
    case("config", "train-teacher {cfg} name=.hidden", "'.hidden'", "not starting with '.'"),
    case("config", "train-teacher {cfg} eval.noise_sigmas=[nan]", "'eval.noise_sigmas' = [nan]", "must be >= 0 (a finite number"),
    case("config", "train-teacher {cfg} eval.noise_sigmas=[-0.1]", "-0.1", ">= 0"),
    case("config", "train-teacher {cfg} eval.latency_iters=0", "'eval.latency_iters' = 0", ">= 1"),
    case("config", "train-teacher {cfg} bogus_key=1", "bogus_key", "not in"),
    case("config", "train-teacher {cfg} method=nosuch", "'nosuch'", "known methods"),
    case("config", "distill {cfg} objective.student.kd.weight=nan", "'objective.student.kd.weight' = nan", "must be >= 0 (a finite number"),
    case("config", "distill {cfg} objective.student.kd.temperature=1e-30", "1e-30", ">= 0.001"),
    case("config", "train-teacher {cfg} model.kwargs.dropout=.nan", "'model.kwargs.dropout' = nan", "a finite number"),
    case("config", "distill {cfg} objective.student.nosuch.weight=1", "'nosuch'", "kdlab list terms"),
    case("config", "distill {cfg} objective.student.kd.bogus=1", "'bogus'", "accepts: weight"),
    case("config", "distill {cfg} loss.kd=0.5", "section 'loss' is gone", "loss.kd is now objective.student.kd.weight"),
    case("config", "distill {cfg} loss=5", "section 'loss' = 5", "a mapping of its keys"),
    case("config", "train-teacher {cfg} trainer=3", "section 'trainer' = 3", "a mapping of its keys"),
    # --- YAML
    case("yaml", "train-teacher {f}/bracket.yaml", "bracket.yaml", "line 3, column", "','"),
    case("yaml", "train-teacher {f}/tab.yaml", "tab.yaml", "line 2, column 1", "not tabs"),
    case("yaml", "train-teacher {f}/list.yaml", "list.yaml", "holds a list", "a mapping of keys"),
    case("yaml", "train-teacher {f}/scalar_section.yaml", "section 'data' = 5", "a mapping of its keys"),
    case("yaml", "train-teacher {cfg} optim.betas=[0.9", "'optim.betas=[0.9'", "not valid YAML"),
    case("yaml", "train-teacher {f}/missing.yaml", "missing.yaml", "recipes:"),
    # --- data
    case("data", "train-teacher {cfg} data.classes=[3]", "'data.classes' = [3]", "at least 2"),
    case("data", "train-teacher {cfg} data.classes=[1,1]", "[1, 1]", "distinct"),
    case("data", "train-teacher {cfg} data.classes=[1,-2]", "-2", ">= 0"),
    case("data", "train-teacher {cfg} data.batch_size=0", "'data.batch_size' = 0", "> 0"),
    case("data", "train-teacher {cfg} data.val_size=-1", "'data.val_size' = -1", ">= 0"),
    case("data", "train-teacher {cfg} data.n_per_class=0", "'data.n_per_class' = 0", "> 0 (or null)"),
    case("data", "train-teacher {cfg} data.num_workers=-1", "'data.num_workers' = -1", ">= 0"),
    case("data", "train-teacher {cfg} data.privileged=blur", "'blur'", "downsample, mask"),
    case("data", "train-teacher {cfg} data.transfer_select=entropy", "'entropy'", "needs data.transfer_k"),
    case("data", "train-teacher {cfg} data.transfer_k=5", "data.transfer_k = 5", "data.transfer_select (entropy | balanced)"),
    case("data", "train-teacher {cfg} data.transfer=none", "data-free", "methods that can run data-free"),
    case("data", "train-teacher {cfg} data.name=nosuchdata", "'nosuchdata'", "fashion-mnist", "translation tasks:"),
    # --- image-to-image translation data (kdlab.data.translation)
    case("data", "train-gan cyclegan_fashion2digits data.name=unpaired:fashion-mnist,skimage-patches", "'fashion-mnist' has 1 channel",
         "'skimage-patches' has 3", "data.channels=1", "data.channels=3"),
    case("data", "train-gan pix2pix_edges2fashion data.name=paired-folder:{f}/odd_pairs", "odd.png", "7x8", "8x8", "A|B"),
    case("data", "train-gan cyclegan_fashion2digits data.name=unpaired-folder:{f}/no_trainB", "lacks trainB/", "trainA/, trainB/, testA/, testB/"),
    case("data", "train-gan cyclegan_fashion2digits data.name=unpaired:fashion-mnist", "'unpaired:<setA>,<setB>'", "edges2fashion"),
    case("data", "train-teacher {cfg} data.channels=2", "'data.channels' = 2", "accepted: None, 1, 3"),
    case("data", "train-teacher {cfg} data.direction=AB", "'data.direction' = 'AB'", "AtoB, BtoA"),
    # --- models (the network is built after the data set is read)
    case("models", "train-teacher {cfg} model.name=nosuchnet", "'nosuchnet'", "lenet"),
    case("models", "train-teacher {cfg} model.kwargs.bogus=1", "['bogus']", "accepted: hidden"),
    # --- weights and checkpoints
    case("checkpoints", "evaluate {f}/nothing.safetensors", "nothing.safetensors", "does not exist"),
    case("checkpoints", "evaluate {f}/trunc.safetensors", "trunc.safetensors", "is truncated"),
    case("checkpoints", "evaluate {f}/zero.safetensors", "zero.safetensors", "empty (0 bytes)"),
    case("checkpoints", "evaluate {f}/rand.safetensors", "rand.safetensors", "not a safetensors file"),
    case("checkpoints", "evaluate {f}/edited.safetensors", "edited.safetensors", "hash mismatch"),
    case("checkpoints", "evaluate {f}/nan.safetensors", "nan.safetensors", "contains NaN"),
    case("checkpoints", "evaluate {f}/shape.ckpt", "shape.ckpt", "has shape (3, 784), expected (16, 784)"),
    case("checkpoints", "evaluate {f}/hash.ckpt", "hash.ckpt", "hash mismatch"),
    case("checkpoints", "evaluate {f}/trunc.ckpt", "trunc.ckpt", "truncated"),
    case("checkpoints", "evaluate {f}/zero.ckpt", "zero.ckpt", "empty (0 bytes)"),
    case("checkpoints", "evaluate {f}/rand.ckpt", "rand.ckpt", "not a kdlab checkpoint"),
    case("checkpoints", "evaluate {f}/pickle.ckpt", "pickle.ckpt", "Python pickle, not a kdlab checkpoint"),
    case("checkpoints", "evaluate {f}/foreign.ckpt", "foreign.ckpt", "without an exported model"),
    case("checkpoints", "evaluate {f}/gen.safetensors", "gen.safetensors", "holds a generator (dcgan)"),
    case("checkpoints", "export {f}/trunc.safetensors", "trunc.safetensors", "is truncated"),
    case("checkpoints", "export {f}/pickle.ckpt", "pickle.ckpt", "Python pickle"),
    case("checkpoints", "export {f}/edited.safetensors", "edited.safetensors", "hash mismatch"),
    case("checkpoints", "distill {cfg} teacher.checkpoint={f}/nan.safetensors", "teacher", "nan.safetensors", "contains NaN"),
    case("checkpoints", "distill {cfg} teacher.checkpoint={f}/trunc.ckpt", "teacher", "trunc.ckpt", "truncated"),
    case("checkpoints", "distill {cfg} teacher.checkpoint={f}/gen.safetensors", "gen.safetensors", "holds a generator"),
    case("checkpoints", "train-teacher {cfg} model.checkpoint={f}/edited.safetensors", "model.checkpoint",
         "edited.safetensors", "hash mismatch"),
    case("checkpoints", "train-teacher {cfg} model.checkpoint={f}/good.safetensors model.kwargs.hidden=[32]",
         "model.checkpoint", "'hidden': [16]", "the config builds ('mlp', {'hidden': [32]"),
    # --- GAN
    case("gan", "evaluate-gan {f}/good.safetensors", "good.safetensors", "holds a classifier (mlp)"),
    case("gan", "evaluate-gan {f}/gen_trunc.safetensors", "gen_trunc.safetensors", "is truncated"),
    case("gan", "compress-gan {gan} teacher.checkpoint={f}/gen_edited.safetensors", "gen_edited.safetensors",
         "hash mismatch"),
    case("gan", "compress-gan {gan} teacher.checkpoint={f}/good.safetensors", "good.safetensors", "holds a classifier"),
    case("gan", "compress-gan {gan} optim.betas=[0.5,0.999,0.1]", "'optim.betas'", "exactly 2"),
    case("gan", "compress-gan {gan} model.name=mlp", "'mlp'", "dcgan"),
    case("gan", "compress-gan {gan} model.name=unet", "'unet' is an image-to-image generator", "accepted: dcgan"),
    case("gan", "compress-gan {gan} data.transfer=train objective.student.gan.weight=0.5 players.disc=patchgan", "'patchgan'",
         "accepted: dcgan, wdcgan"),
    # --- image-to-image students (i2i-distill and the appendix-A.2 terms)
    case("i2i", "compress-gan {gan} method=i2i-distill model.name=unet",
         "method 'i2i-distill' needs an image-to-image translation data set", "'fashion-mnist' is not one"),
    case("i2i", "compress-gan {gan} objective.student.cagc.saliency=nope", "unknown saliency function 'nope'", "foreground, ones"),
    case("i2i", "compress-gan {gan} objective.student.channel_distill.layers=[[nope,nope]]", "unknown feature 'nope'",
         "known features"),
    case("i2i", "compress-gan {gan} objective.student.gcc.weight=1", "term 'gcc' needs teacher_critic",
         "is no GAN run directory; set players.teacher_disc=", "drop objective.student.gcc"),
    case("i2i", "compress-gan {gan} players.disc_gates=0.1", "players.disc_gates = 0.1",
         "objective.student has no gan term, so there is none"),
    case("gan", "compress-gan {gan} players.disc_init={out}", "players.disc_init",
         "objective.student has no gan term, so there is none", "set objective.student.gan.weight > 0"),
    case("i2i", "compress-gan {gan} objective.student.l1_image.target=ground_truth", "needs targets",
         "use objective.student.l1_image.target=teacher"),
    # --- experiments
    case("experiments", "reproduce no-such-exp", "'no-such-exp'", "known experiments"),
    case("experiments", f"reproduce {EXP} --scale huge", "'huge'", "accepted: small"),
    case("experiments", f"reproduce {EXP} --seeds a,b", "'a' is not a number", "comma-separated integers >= 0"),
    case("experiments", f"reproduce {EXP} --seeds -1", "-1 is out of range", "integers >= 0"),
    case("experiments", f"reproduce {EXP} --scale small stray", "stray", "key=value overrides"),
    # --- run directories (those that behave before run-directory ownership lands)
    case("rundir", "report {out}/no-such-run", "no-such-run", "does not exist"),
    case("rundir", "evaluate {out}", "holds no teacher.safetensors", "train it first"),
    # the run directory is checked before anything is written: a refused resume or rerun changes no file
    case("rundir", "train-teacher {cfg} --resume", "last.ckpt", "truncated",
         id="rundir: --resume from a truncated last.ckpt"),
    case("rundir", "train-teacher {cfg} --resume", "last.ckpt", "does not exist",
         id="rundir: --resume of a run that never started"),
    case("rundir", "train-teacher {cfg}", "--resume", "--overwrite",
         id="rundir: the same run again without --resume or --overwrite"),
]


@pytest.mark.parametrize("argv,expect", CASES + SWEEP_CASES)
def test_bad_input_is_refused_cleanly(argv: str, expect: Sequence[str], files: Path, gen_teacher: Path, tmp_path: Path,
                                      capsys, request) -> None:
    out = tmp_path / "out"
    out.mkdir()
    values = {"cfg": cfg_file(tmp_path), "gan": gan_cfg_file(tmp_path, gen_teacher), "f": files, "out": out}
    args: List[str] = [a.format(**values) for a in argv.split(" ")]
    run = tmp_path / "runs" / "t"  # the run of {cfg}: an interrupted run with a torn checkpoint
    if "truncated last.ckpt" in request.node.name or "same run again" in request.node.name:
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text("name: t  # an earlier run's record\n")
        good = (files / "good.ckpt").read_bytes()
        (run / "checkpoints" / "last.ckpt").write_bytes(good[: len(good) // 2])
    before = snapshot(tmp_path, files)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    for text in expect:
        assert text in err, f"{text!r} not in message:\n{err}"
    assert "Traceback" not in err
    after = snapshot(tmp_path, files)
    assert after == before, "files were written or changed by a refused command"


@pytest.mark.parametrize("name,expect", API_CASES)
def test_python_api_refuses_bad_input(name: str, expect: Sequence[str], files: Path, tmp_path: Path) -> None:
    """The same refusals from ``kdlab.api``: an exception whose message names the value (no TypeError or
    other accident of the code), and nothing written."""
    from kdlab.config import ConfigError
    from kdlab.registry import UnknownNameError

    call = dict((i, c) for i, c, _ in _api_cases())[name]
    before = snapshot(tmp_path, files)
    with pytest.raises((ConfigError, UnknownNameError, ValueError)) as err:
        call(files, tmp_path)
    for text in expect:
        assert text in str(err.value), f"{text!r} not in {err.value}"
    assert snapshot(tmp_path, files) == before


def test_catalogue_is_large_and_covers_every_area() -> None:
    areas = {p.id.split(":")[0] for p in CASES + SWEEP_CASES}
    assert len(CASES + SWEEP_CASES) >= 200
    assert areas >= {"cli", "config", "yaml", "data", "models", "checkpoints", "rundir", "gan", "experiments"}


def test_markup_in_messages_is_printed_verbatim(capsys) -> None:
    # rich would read "[student feature, teacher feature]" as a style tag and drop it
    from kdlab.cli import report_error

    report_error("error", ValueError("layers: give [student feature, teacher feature] pairs"))
    assert "[student feature, teacher feature]" in capsys.readouterr().err


def test_a_bug_prints_its_traceback_and_says_so(monkeypatch, capsys) -> None:
    import kdlab.cli as cli

    def broken(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "cmd_list", broken)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: boom" in err and "this is a bug in kdlab" in err


@pytest.mark.parametrize("argv,expect", [
    (["train-teacher", "{f}/tab.yaml"], "line 2, column 1"),
    (["evaluate", "{f}/pickle.ckpt"], "Python pickle"),
])
def test_console_script_exits_2_with_the_message(argv, expect, files: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "kdlab.cli", *[a.format(f=files) for a in argv]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_docs_table_lists_every_case() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md").read_text()
    shown = {p.values[0].replace("{cfg}", "cfg.yaml").replace("{gan}", "gan.yaml").replace("{f}/", "F/")
             .replace("{out}", "out") for p in CASES + SWEEP_CASES if not any(m.name == "xfail" for m in p.marks)}
    missing = sorted(s for s in shown if f"`{s}`" not in doc)
    assert not missing, f"docs/bad_inputs.md lacks: {missing}"
