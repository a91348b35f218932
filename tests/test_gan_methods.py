"""The gan and gan-compression methods on real Fashion-MNIST: the game's updates, a short real
distillation run, the run directory and report, the CLI, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdlab.cli import main
from kdlab.data import Batch, build_datasets, dataset_spec
from kdlab.engine import NonFiniteLossError, load_checkpoint
from kdlab.engine.generators import load_generator, save_generator
from kdlab.methods import METHODS
from kdlab.methods import GeneratorMismatchError
from kdlab.games.gan_eval import evaluate_generator
from kdlab.metrics.generative import generate_images
from kdlab.models import build_generator
from kdlab.runner import load_run_config, train

from conftest import ready

SPEC = dataset_spec("fashion-mnist")
QUICK_EVAL = {"n_samples": 400, "kid_subset_size": 100, "kid_subsets": 10, "is_splits": 2, "grid_n": 16}


def game(mode: str, generator: str = "generator", gen_weight: float = 1.0, gp: float = 0.0, **gen_terms):
    """``objective`` of one game: the ``gan`` term in ``mode`` on ``generator`` (the generator or a generator student)
    and on the discriminator, with WGAN-GP's ``gradient_penalty`` of weight ``gp`` (0 = none)."""
    d = {"gan": {"weight": 1.0, "mode": mode}}
    if gp:
        d["gradient_penalty"] = {"weight": gp}
    return {generator: {**gen_terms, "gan": {"weight": gen_weight, "mode": mode}}, "discriminator": d}


def gan_config(tmp_path: Path, **sections):
    cfg = {
        "name": "g", "method": "gan", "seed": 0, "out_dir": str(tmp_path),
        "data": {"name": "fashion-mnist", "val_size": 0, "n_per_class": 100, "batch_size": 50, "eval_batch_size": 400,
                 "max_test": 400},
        "model": {"name": "dcgan", "kwargs": {"d": 8, "latent_dim": 16}},
        "players": {"disc_d": 4},
        "optim": {"name": "adam", "lr": 0.0005, "betas": [0.5, 0.999], "weight_decay": 0.0, "scheduler": "none"},
        "trainer": {"epochs": 1, "progress": False, "tensorboard": False, "log_every_n_steps": 5, "threads": 1},
        "eval": {"latency": False, **QUICK_EVAL},
    }
    for k, v in sections.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    """The runs here use trainer.threads=1 (tiny models; faster on a busy machine); restore the count after."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A metric classifier and a teacher GAN (d=8) trained briefly on real Fashion-MNIST."""
    tmp = tmp_path_factory.mktemp("gan")
    clf_cfg = load_run_config([{
        "name": "clf", "method": "teacher", "out_dir": str(tmp),
        "data": {"val_size": 0, "n_per_class": 100, "batch_size": 100, "max_test": 400},
        "model": {"name": "lenet", "kwargs": {"channels": [8, 16], "fc": 64}},
        "optim": {"name": "adam", "lr": 0.002, "weight_decay": 0.0},
        "trainer": {"epochs": 2, "progress": False, "tensorboard": False, "threads": 1},
        "eval": {"latency": False, "noise_sigmas": [0.0]},
    }])
    clf = train(clf_cfg) / "teacher.safetensors"
    cfg = load_run_config([gan_config(tmp, name="teacher", data={"n_per_class": 300},
                                      eval={"extractor": str(clf)}, trainer={"epochs": 2})])
    return tmp, clf, train(cfg)


def test_teacher_run_directory_and_report(trained):
    tmp, clf, teacher = trained
    s = json.loads((teacher / "summary.json").read_text())
    assert s["kind"] == "generator" and s["model"]["d"] == 8 and s["extractor"]["kind"] == "classifier"
    g = s["generative"]
    # the teacher's samples are far closer to the real images than an untrained generator's
    untrained = save_generator(build_generator("dcgan", 1, 28, d=8, latent_dim=16), tmp / "untrained.safetensors")
    data = build_datasets("fashion-mnist", val_size=0, max_test=400)
    base = evaluate_generator(untrained, data, extractor=str(clf), n_samples=400, kid_subset_size=100)
    assert g["fid"] < 0.7 * base["generative"]["fid"]
    assert (teacher / "samples" / "epoch_002.png").is_file() and (teacher / "samples" / "generated.png").is_file()
    report = (teacher / "report.md").read_text()
    assert "FID" in report and s["extractor"]["sha256"] in report
    gen = load_generator(teacher)  # rebuilt from the safetensors metadata alone
    assert gen.d == 8 and gen.latent_dim == 16


def test_mse_student_gets_closer_to_the_teacher_and_to_real_data(trained):
    """A short real run: 200 steps of the MSE student lower its MSE to the teacher and its FID."""
    tmp, clf, teacher = trained
    cfg = load_run_config([gan_config(tmp, name="student", method="gan-compression",
                                      teacher={"checkpoint": str(teacher)}, model={"name": "dcgan", "kwargs": {"d": 4}},
                                      data={"n_per_class": 1000}, objective={"student": {"mse": {"weight": 1.0}}},
                                      eval={"extractor": str(clf)},
                                      optim={"lr": 0.002}, trainer={"epochs": 1, "limit_train_batches": 200})])
    run = train(cfg)
    s = json.loads((run / "summary.json").read_text())
    t = load_generator(teacher)
    torch.manual_seed(123)
    untrained = build_generator("dcgan", 1, 28, d=4, latent_dim=16)
    p = save_generator(untrained, tmp / "untrained_student.safetensors")
    student = load_generator(run)
    # independent MSE on fresh latents (images in [-1, 1] -> x2 scale from [0, 1])
    ts, ss, us = (generate_images(g, 500, 16, seed=7) * 2 - 1 for g in (t, student, untrained.eval()))
    mse_trained, mse_untrained = float(((ss - ts) ** 2).mean()), float(((us - ts) ** 2).mean())
    assert mse_trained < 0.5 * mse_untrained
    assert s["generative"]["mse_to_teacher"] == pytest.approx(
        float(((generate_images(student, 400, 16, 0) - generate_images(t, 400, 16, 0)) ** 2).mean()) * 4, rel=1e-4)
    data = build_datasets("fashion-mnist", val_size=0, max_test=400)
    base = evaluate_generator(p, data, extractor=str(clf), n_samples=400, kid_subset_size=100, teacher=str(teacher))
    assert s["generative"]["fid"] < base["generative"]["fid"]
    assert s["generative"]["fidelity_fid"] < base["generative"]["fidelity_fid"]
    assert s["teacher"]["params"] / s["model"]["params"] == pytest.approx(s["compression_ratio"])
    report = (run / "report.md").read_text()
    assert "fidelity to the teacher" in report and (run / "samples" / "side_by_side.png").is_file()


def _method(tmp_path, **sections):
    cfg = load_run_config([gan_config(tmp_path, **sections)])
    return ready(METHODS.get(cfg.method)(cfg, SPEC))


def _batch():
    x = torch.randn(10, 1, 28, 28)
    return Batch(x=x, y=torch.zeros(10, dtype=torch.long))


def test_wgan_clips_critic_and_n_critic_spaces_generator_steps(tmp_path):
    m = _method(tmp_path, objective=game("wgan"), players={"disc": "wdcgan", "clip": 0.003, "n_critic": 3})
    g0 = [p.detach().clone() for p in m.players["generator"].parameters()]
    for step in range(2):
        m.training_step(_batch(), step)
    assert all(torch.equal(a, b) for a, b in zip(g0, m.players["generator"].parameters()))  # no G step yet
    assert all(float(p.detach().abs().max()) <= 0.003 + 1e-9 for p in m.players["discriminator"].parameters())
    m.training_step(_batch(), 2)
    assert any(not torch.equal(a, b) for a, b in zip(g0, m.players["generator"].parameters()))


def test_ema_generator_follows_the_formula(tmp_path):
    m = _method(tmp_path, players={"ema": 0.9})
    before = [p.detach().clone() for p in m.ema.model.parameters()]
    m.training_step(_batch(), 0)
    for e, b, p in zip(m.ema.model.parameters(), before, m.players["generator"].parameters()):
        assert torch.allclose(e, 0.9 * b + 0.1 * p.detach(), atol=1e-7)
    assert m.eval_model() is m.ema.model


def test_compression_teacher_is_frozen_and_joint_loss_trains_a_critic(tmp_path):
    teacher = save_generator(build_generator("dcgan", 1, 28, d=6, latent_dim=16), tmp_path / "t.safetensors")
    m = _method(tmp_path, method="gan-compression", teacher={"checkpoint": str(teacher)},
                model={"name": "dcgan", "kwargs": {"d": 2}},
                objective=game("wgan", "student", gen_weight=0.7, gp=10.0, mse={"weight": 0.3}),
                players={"disc": "wdcgan", "n_critic": 1})
    d0 = [p.detach().clone() for p in m.players["discriminator"].parameters()]
    images = {}  # the last images of each generator (the student's and teacher's of the student step)
    m.eval_model().register_forward_hook(lambda mod, i, o: images.__setitem__("s", o.detach().clone()))
    m.frozen["teacher"].register_forward_hook(lambda mod, i, o: images.__setitem__("t", o.detach().clone()))
    out = m.training_step(_batch(), 0)
    assert {"mse", "gan", "d_gan", "d_gradient_penalty", "loss_d", "loss_g"} <= set(out)
    mse = float(((images["s"] - images["t"]) ** 2).mean())  # the unweighted pixel MSE of the student step
    assert float(out["mse"]) == pytest.approx(0.3 * mse, rel=1e-5)  # terms are logged weighted
    with torch.no_grad():  # the WGAN generator loss -E D(G_s(z)) through the critic of the student step (D's step came first)
        adv = -float(m.players["discriminator"](images["s"]).mean())
    assert float(out["gan"]) == pytest.approx(0.7 * adv, rel=1e-4, abs=1e-6)
    assert float(out["loss_g"]) == pytest.approx(0.3 * mse + float(out["gan"]), rel=1e-5)
    assert float(out["loss_d"]) == pytest.approx(float(out["d_gan"]) + float(out["d_gradient_penalty"]), rel=1e-5)
    assert all(p.grad is None for p in m.frozen["teacher"].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(d0, m.players["discriminator"].parameters()))


def test_nan_generator_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    teacher = save_generator(build_generator("dcgan", 1, 28, d=4, latent_dim=16), tmp_path / "t.safetensors")
    cls = METHODS.get("gan-compression")
    original = cls.training_step

    def poisoned(self, batch, step):
        if step == 6:  # second epoch (5 steps per epoch)
            with torch.no_grad():
                next(self.players["student"].parameters()).fill_(float("nan"))
        return original(self, batch, step)

    monkeypatch.setattr(cls, "training_step", poisoned)
    cfg = load_run_config([gan_config(tmp_path, method="gan-compression", teacher={"checkpoint": str(teacher)},
                                      model={"name": "dcgan", "kwargs": {"d": 2}},
                                      trainer={"epochs": 3, "limit_train_batches": 5})])
    with pytest.raises(NonFiniteLossError, match="epoch 2"):
        train(cfg)
    last = load_checkpoint(tmp_path / "g" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1 and all(bool(torch.isfinite(v).all()) for v in last["model"].values())
    assert load_generator(tmp_path / "g" / "checkpoints" / "last.ckpt").d == 2


def test_bad_input(tmp_path):
    rgb = save_generator(build_generator("dcgan", 3, 32, d=2, latent_dim=16), tmp_path / "rgb.safetensors")
    with pytest.raises(GeneratorMismatchError, match=r"\(3, 32, 32\).*\(1, 28, 28\)"):
        _method(tmp_path, method="gan-compression", teacher={"checkpoint": str(rgb)})
    data = build_datasets("fashion-mnist", val_size=0, max_test=100)
    with pytest.raises(GeneratorMismatchError, match=r"\(3, 32, 32\).*\(1, 28, 28\)"):
        evaluate_generator(rgb, data, n_samples=50, kid_subset_size=10)
    for kwargs, msg in ((dict(model={"name": "dcgan", "kwargs": {"d": 0, "latent_dim": 16}}), "d .*> 0, got 0"),
                        (dict(model={"name": "dcgan", "kwargs": {"d": 4, "latent_dim": -1}}), "latent_dim must be"),
                        (dict(eval={"n_samples": 50, "kid_subset_size": 100}), "too few samples for KID"),
                        (dict(objective=game("wgan", gp=10.0), players={"disc": "dcgan"}), "without BatchNorm"),
                        (dict(eval={"extractor": str(rgb), "kid_subset_size": 401, "n_samples": 1000}), "data.max_test = 400"),
                        (dict(objective={"generator": {"gan": {"mode": "lsgan"}}}),
                         "objective.generator.gan.mode = 'lsgan' and objective.discriminator.gan.mode = 'vanilla' are two games"),
                        (dict(objective={"generator": {"gan": {"mode": "minimax"}}}), "accepted: vanilla, lsgan, hinge, wgan"),
                        (dict(data={"val_size": 100}), "data.val_size = 100.*eval.extractor"),
                        (dict(model={"name": "lenet", "kwargs": {}}), "not a generator; accepted: dcgan, mosaic, resnet_gen, sagan, unet, unet_deep, wdcgan")):
        with pytest.raises(ValueError, match=msg):
            _method(tmp_path, **kwargs)
    with pytest.raises(FileNotFoundError, match="nope"):
        _method(tmp_path, eval={"extractor": str(tmp_path / "nope")})
    teacher = save_generator(build_generator("dcgan", 1, 28, d=2, latent_dim=16), tmp_path / "t.safetensors")
    with pytest.raises(ValueError, match=r"objective\.student has no term with a weight > 0: nothing to train"):
        _method(tmp_path, method="gan-compression", teacher={"checkpoint": str(teacher)},
                objective=game("vanilla", "student", gen_weight=0.0, mse={"weight": 0.0}))
    with pytest.raises(ValueError, match="differs from the teacher's latent_dim 16"):
        _method(tmp_path, method="gan-compression", teacher={"checkpoint": str(teacher)},
                model={"name": "dcgan", "kwargs": {"d": 2, "latent_dim": 8}})


def test_cli_evaluate_gan_and_errors(trained, tmp_path, capsys):
    _, clf, teacher = trained
    out = tmp_path / "e.json"
    assert main(["evaluate-gan", str(teacher), "data.max_test=300", "--extractor", str(clf), "--n-samples", "300",
                 "--kid-subset-size", "100", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    s = json.loads((teacher / "summary.json").read_text())
    assert res["model"]["params"] == s["model"]["params"] and res["generative"]["fid"] > 0
    assert main(["evaluate-gan", str(teacher), "data.max_test=300", "--extractor", str(clf), "--n-samples", "50",
                 "--kid-subset-size", "100"]) == 2
    assert "kid_subset_size" in capsys.readouterr().err.replace("\n", "")
    assert main(["compress-gan", "gan_student_mse", f"out_dir={tmp_path}", "method=gan"]) == 2


def test_resumed_gan_run_ends_with_the_same_weights(tmp_path):
    """Two epochs in one go vs one epoch + --resume: same generator, discriminator and EMA weights."""
    base = dict(objective=game("wgan", gp=10.0), players={"ema": 0.9, "disc": "wdcgan", "n_critic": 2},
                trainer={"epochs": 2, "limit_train_batches": 3})
    full = train(load_run_config([gan_config(tmp_path, name="full", **base)]))
    load = lambda n: load_checkpoint(tmp_path / n / "checkpoints" / "last.ckpt")  # noqa: E731
    cut = gan_config(tmp_path, name="cut", **base)
    train(load_run_config([{**cut, "trainer": {**cut["trainer"], "epochs": 1}}]))
    resumed = train(load_run_config([cut]), resume=True)
    a, b = load("full"), load("cut")
    assert b["epoch"] == 2
    for key in ("generator", "discriminator"):
        for k, v in a["method"]["players"][key].items():
            assert torch.equal(v, b["method"]["players"][key][k]), (key, k)
    assert all(torch.equal(v, b["method"]["ema"][k]) for k, v in a["method"]["ema"].items())
    assert (full / "teacher.safetensors").is_file() and (resumed / "teacher.safetensors").is_file()


def test_cli_compress_gan_writes_student_and_report(trained, tmp_path, capsys):
    _, clf, teacher = trained
    args = ["compress-gan", "gan_student_mse", f"out_dir={tmp_path}", "name=cli-student", f"teacher.checkpoint={teacher}",
            "model.kwargs.d=2", "trainer.epochs=1", "trainer.limit_train_batches=5", "trainer.progress=false",
            "trainer.tensorboard=false", "data.n_per_class=50", "data.max_test=300", f"eval.extractor={clf}",
            "eval.n_samples=300", "eval.kid_subset_size=100", "eval.kid_subsets=5", "trainer.threads=1"]
    assert main(args) == 0
    run = tmp_path / "cli-student"
    s = json.loads((run / "summary.json").read_text())
    assert s["method"] == "gan-compression" and s["model"]["d"] == 2 and s["teacher"]["d"] == 8
    assert load_generator(run).d == 2
    report = (run / "report.md").read_text()
    assert "Fidelity to the teacher" in report and s["teacher"]["sha256"] in report


@pytest.mark.slow
def test_gan_runs_under_ddp_on_two_cpu_processes(tmp_path):
    """train-gan and a joint-loss compress-gan (WGAN-GP) with DDP through Fabric on CPU (gloo), 2 ranks."""
    import subprocess
    import sys

    import yaml

    cfg = gan_config(tmp_path, name="ddp-teacher", players={"ema": 0.9},
                     trainer={"epochs": 2, "devices": 2, "strategy": "ddp", "limit_train_batches": 3})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    env_cmd = [sys.executable, "-m", "kdlab.cli"]
    proc = subprocess.run(env_cmd + ["train-gan", str(tmp_path / "t.yaml")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = gan_config(tmp_path, name="ddp-student", method="gan-compression",
                     teacher={"checkpoint": str(tmp_path / "ddp-teacher")}, model={"name": "dcgan", "kwargs": {"d": 2}},
                     objective=game("wgan", "student", gen_weight=0.7, gp=10.0, mse={"weight": 0.3}),
                     players={"disc": "wdcgan"},
                     trainer={"epochs": 2, "devices": 2, "strategy": "ddp", "limit_train_batches": 3})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(env_cmd + ["compress-gan", str(tmp_path / "s.yaml")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads((tmp_path / "ddp-student" / "summary.json").read_text())
    assert s["model"]["d"] == 2 and s["teacher"]["d"] == 8
    steps = [json.loads(line)["step"] for line in (tmp_path / "ddp-student" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6  # 2 epochs x 3 steps, logged once (rank 0)
