"""The second part of the bad-input catalogue (``tests/test_bad_inputs.py`` runs both parts with one test):
inputs a hostile user tries on every command (wrong types in every section, huge and negative sizes,
files that are directories, binary or empty, output paths below a file, compare specs of every wrong
shape, data folders of one class or of non-images), and :func:`make_sweep_files`, the files they use
(under ``{f}/sweep``)."""
from __future__ import annotations

from pathlib import Path

import pytest

CLAIM = {"a": "demo_kd", "b": "demo_ce", "metric": "test_acc_best", "label": "KD beats CE"}
GOOD = "teacher.checkpoint={f}/good.safetensors"  # an mlp [16] teacher of fashion-mnist (10 classes)
S = "{f}/sweep"


def make_sweep_files(d: Path) -> None:
    """Specs, configs and image folders of the cases below, in ``d / "sweep"`` (``d``: the catalogue's files)."""
    import yaml
    from PIL import Image

    s = d / "sweep"
    s.mkdir()
    (s / "bin.yaml").write_bytes(bytes(range(128, 256)) * 8)  # not UTF-8
    (s / "empty.yaml").write_text("")
    teacher = str(d / "good.safetensors")
    specs = {
        "dup": {"methods": [{"label": "A", "recipe": "demo_ce"}, {"label": "a", "recipe": "demo_kd"}]},
        "norows": {"methods": []},
        "unknown": {"bogus": 1, "methods": ["demo_ce"]},
        "noseeds": {"seeds": [], "methods": ["demo_ce"]},
        "dupseeds": {"seeds": [1, 1], "methods": ["demo_ce"]},
        "negseed": {"seeds": [-1, 2], "methods": ["demo_ce"]},
        "strseeds": {"seeds": "a,b", "methods": ["demo_ce"]},
        "ganrow": {"methods": [{"label": "G", "recipe": "cyclegan_fashion2digits"}]},
        "clfteacher-genrow": {"teacher": "demo_teacher", "methods": [{"label": "G", "recipe": "gan_student_mse"}]},
        "listrow": {"methods": [[1, 2]]},
        "maprows": {"methods": {"a": "demo_ce"}},
        "badcommon": {"common": ["trainer.epochs=0"], "methods": ["demo_ce"]},
        "badset": {"methods": [{"label": "X", "set": ["objective.student.kd.weight=abc"]}]},
        "badbudget": {"budget": {"n_per_class": 0}, "methods": ["demo_ce"]},
        "budgetkey": {"budget": {"epochs": 3}, "methods": ["demo_ce"]},
        "norecipe": {"methods": [{"label": "X"}]},
        "badcallback": {"callbacks": ["nope"], "methods": ["demo_ce"]},
        # declared comparisons (an experiment's primary claims): a missing row, a metric no row writes, one seed
        "missingrow": {"methods": ["demo_ce", "demo_kd"], "primary": [CLAIM | {"a": "demo_lm"}]},
        "nometric": {"methods": ["demo_ce", "demo_kd"], "primary": [CLAIM | {"metric": "fid"}]},
        "oneseed": {"seeds": [0], "methods": ["demo_ce", "demo_kd"], "primary": [CLAIM]},
    }
    for name, spec in specs.items():
        (s / f"{name}.yaml").write_text(yaml.safe_dump({"name": "x", "teacher": teacher, **spec}))
    other = s / "results" / "jacobian-table1" / "small"  # another experiment's committed results
    other.mkdir(parents=True)
    (other / "results.json").write_text('{"experiment": "jacobian-table1"}')
    (s / "one_class" / "cat").mkdir(parents=True)  # a labelled folder of one class
    (s / "mixed" / "a").mkdir(parents=True)  # grey 28x28 and RGB 32x32 images
    (s / "mixed" / "b").mkdir(parents=True)
    (s / "texts" / "a").mkdir(parents=True)  # class folders of text files
    (s / "texts" / "b").mkdir(parents=True)
    for i in range(6):
        Image.new("L", (28, 28), i * 10).save(s / "one_class" / "cat" / f"{i}.png")
        Image.new("L", (28, 28), i * 10).save(s / "mixed" / "a" / f"{i}.png")
        Image.new("RGB", (32, 32), (i, 0, 0)).save(s / "mixed" / "b" / f"{i}.png")
    (s / "texts" / "a" / "x.txt").write_text("not an image")
    (s / "texts" / "b" / "y.txt").write_text("not an image")


def case(area: str, argv: str, *expect: str, id: str = None):
    """One entry: ``argv`` (placeholders as in test_bad_inputs) must exit 2 with every ``expect`` substring."""
    return pytest.param(argv, expect, id=id or f"{area}: {argv}")


TT = "train-teacher {cfg}"
DS = f"distill {{cfg}} {GOOD}"
SWEEP_CASES = [
    # --- wrong types: the key, the value and the type it takes
    case("types", f"{TT} trainer.epochs=[1,2]", "'trainer.epochs' = [1, 2]", "accepted: an integer"),
    case("types", f"{TT} name=", "'name' = empty (null)", "accepted: a non-empty string"),
    case("types", f"{TT} name=[a,b]", "'name' = ['a', 'b']", "accepted: a string"),
    case("types", f"{TT} data.classes=abc", "'data.classes' = 'abc'", "accepted: a list"),
    case("types", f"{TT} model.kwargs=5", "'model.kwargs' = 5", "accepted: a mapping of keys"),
    case("types", f"{TT} seed=1.5", "'seed' = 1.5", "accepted: an integer"),
    case("types", f"{TT} optim.lr=abc", "'optim.lr' = 'abc'", "accepted: a number"),
    case("types", f"{TT} optim.lr=[0.1]", "'optim.lr' = [0.1]", "accepted: a number"),
    case("types", f"{TT} trainer.progress=maybe", "'trainer.progress' = 'maybe'", "accepted: true or false"),
    case("types", f"{TT} data.name=[1]", "'data.name' = [1]", "accepted: a string"),
    case("types", f"{TT} data.name=", "'data.name' = empty (null)", "a non-empty string"),
    case("types", f"{TT} out_dir=", "'out_dir' = empty (null)", "a non-empty string"),
    case("types", f"{TT} eval.noise_sigmas=5", "'eval.noise_sigmas' = 5", "accepted: a list"),
    case("types", f"{TT} data.batch_size=1e12", "'data.batch_size' = 1000000000000.0", "accepted: an integer"),
    case("types", f"{TT} data.batch_size=2.5", "'data.batch_size' = 2.5", "accepted: an integer"),
    case("types", f"{TT} optim=[1,2]", "section 'optim' = [1, 2]", "a mapping of its keys"),
    case("types", f"{DS} objective=[1]", "section 'objective' = [1]", "a mapping of its keys"),
    case("types", f"{DS} players=5", "section 'players' = 5", "a mapping of its keys"),
    case("types", f"{DS} objective.student=5", "objective.student = 5", "a mapping term -> its keys"),
    case("types", f"{DS} objective.student.kd=5", "objective.student.kd must be a mapping", "got 5"),
    case("types", f"{DS} objective.student.kd.weight=abc", "'objective.student.kd.weight' = 'abc'", "accepted: a number"),
    # --- out-of-range numbers: huge, negative, zero
    case("ranges", f"{TT} seed=99999999999999999999", "'seed' = 99999999999999999999", "<= 4294967295"),
    case("ranges", f"{TT} data.subset_seed=-1", "'data.subset_seed' = -1", ">= 0"),
    case("ranges", f"{TT} eval.noise_seed=5000000000", "'eval.noise_seed' = 5000000000", "<= 4294967295"),
    case("ranges", f"{TT} optim.lr=1e300", "'optim.lr' = 1e+300", "<= 1000"),
    case("ranges", f"{TT} trainer.epochs=100000000000", "'trainer.epochs' = 100000000000", "<= 100000"),
    case("ranges", f"{TT} trainer.epochs=-3", "'trainer.epochs' = -3", "> 0"),
    case("ranges", f"{TT} trainer.precision=7", "'trainer.precision' = '7'", "accepted: 32-true"),
    case("ranges", f"{TT} trainer.devices=100", "'trainer.devices' = 100 CPU processes", "CPU core(s)", "accepted"),
    case("ranges", f"{TT} trainer.devices=abc", "'trainer.devices' = 'abc'", "a count >= 1"),
    case("ranges", f"{TT} trainer.devices=[]", "'trainer.devices' = []", "a count >= 1"),
    case("ranges", f"{TT} data.eval_batch_size=0", "'data.eval_batch_size' = 0", "> 0"),
    case("ranges", f"{TT} data.max_test=-5", "'data.max_test' = -5", "> 0 (or null)"),
    case("ranges", f"{TT} data.classes=[]", "'data.classes' = []", "at least 2"),
    case("ranges", f"{DS} objective.student.kd.weight=-1", "'objective.student.kd.weight' = -1.0", ">= 0"),
    case("ranges", f"{DS} objective.student.kd.reduction=sum2", "'sum2'", "accepted: batchmean"),
    case("ranges", f"{DS} players.input_noise=-1", "'players.input_noise' = -1.0", ">= 0"),
    case("ranges", f"{TT} model.kwargs.hidden=[-5]", "model.kwargs of 'mlp': hidden[0] must be an integer >= 1", "-5"),
    case("ranges", f"{TT} model.kwargs.hidden=abc", "hidden must be a list of positive integers", "'abc'"),
    case("ranges", f"{TT} model.kwargs.dropout=1.5", "dropout must be a probability in [0, 1)", "1.5"),
    case("ranges", f"{TT} data.num_workers=1000", "'data.num_workers' = 1000", "CPU core(s)", "accepted: 0.."),
    case("ranges", f"{TT} data.image_size=100000", "'data.image_size' = 100000", "<= 2048"),
    case("ranges", f"{DS} data.transfer=mnist-digits data.n_per_class=null data.transfer_size=100000",
         "'data.transfer_size' = 100000", "<= 2048"),
    case("ranges", f"{TT} data.privileged=downsample data.privileged_factor=1000000", "privileged_factor = 1000000",
         "less than one pixel", "accepted with data.privileged=downsample: 1..27"),
    case("ranges", f"{TT} model.kwargs.hidden=[100000000000]", "out of memory", "use a smaller model"),
    # --- data: sizes against the set, classes, transfer sources, image folders
    case("data", f"{TT} data.val_size=100000", "data.val_size=100000", "[0, 59999]"),
    case("data", f"{TT} data.n_per_class=100000", "fewer than data.n_per_class=100000"),
    case("data", f"{TT} data.classes=[0,99]", "[0, 99]", "distinct labels in [0, 10)"),
    case("data", f"{DS} data.classes=[0,1,2]", "good.safetensors", "(10, 1, 28)", "(3, 1, 28)"),
    case("data", f"{DS} data.transfer=mnist-digits data.transfer_n=0 data.n_per_class=null",
         "'data.transfer_n' = 0", "> 0 (or null)"),
    case("data", f"{DS} data.transfer=mnist-digits data.transfer_n=100000000 data.n_per_class=null",
         "data.transfer_n = 100000000", "accepted: 1..4000"),
    case("data", f"{DS} data.transfer=nosuch data.n_per_class=null", "'nosuch' is not a transfer source", "accepted:"),
    case("data", f"{DS} data.transfer=imagefolder:{S}/mixed data.n_per_class=null", "(3, 32, 32)",
         "set data.transfer_channels=1 and data.transfer_size=28"),
    case("data", f"{TT} data.name=imagefolder:{S}/one_class data.val_size=0 data.n_per_class=null",
         "has 1 class (cat)", "at least 2 classes"),
    case("data", f"{TT} data.name=imagefolder:{S}/texts data.n_per_class=null", "no images", "texts"),
    case("data", f"{TT} data.name=imagefolder:{{f}}/empty_images data.n_per_class=null", "no images", "empty_images"),
    case("data", f"{TT} data.name=imagefolder:{S}/nowhere", "image folder", "not found", "one subfolder per class"),
    case("data", f"{TT} data.name=imagefolder:{S}/empty.yaml", "empty.yaml' is a file", "accepted: a folder"),
    case("data", "train-gan pix2pix_edges2fashion data.name=paired-folder:{f}/sweep/nowhere", "not found",
         "A|B side-by-side images"),
    case("data", "train-gan pix2pix_edges2fashion data.name=paired-folder:{cfg}", "is a file",
         "train/ and test/ folders of A|B"),
    case("data", "train-gan cyclegan_fashion2digits data.name=unpaired-folder:{f}/sweep/empty.yaml", "is a file",
         "trainA/, trainB/"),
    case("data", f"{DS} data.name=imagefolder:{S}/mixed data.val_size=2 data.n_per_class=null",
         "(10, 1, 28)", "(2, 3, 32)"),
    # --- config files and teachers that are not what they should be
    case("files", f"distill {S}/bin.yaml", "bin.yaml' is not UTF-8 text", "accepted: a YAML file"),
    case("files", f"distill {S}/empty.yaml", "needs a teacher", "teacher.checkpoint="),
    case("files", "distill {cfg}", "needs a teacher", "teacher.checkpoint="),
    case("files", "distill {cfg} teacher.checkpoint=", "needs a teacher"),
    case("files", "distill {cfg} teacher.checkpoint={f}/sweep", "holds no teacher.safetensors", "train it first"),
    case("files", "distill {cfg} teacher.checkpoint={cfg}", "cfg.yaml' is not a kdlab checkpoint"),
    case("files", "distill {cfg} teacher.checkpoint={f}/missing.safetensors", "missing.safetensors", "does not exist"),
    case("files", f"{DS} method=teacher", "method 'teacher'", "`kdlab train-teacher`"),
    case("files", "train-gan {cfg}", "'mlp' is not a generator", "accepted: dcgan"),
    case("files", "compress-gan {cfg}", "needs a teacher", "train-gan run"),
    case("files", "train-gan cyclegan_fashion2digits data.name=fashion-mnist", "is a classification data set",
         "needs an image-to-image task"),
    # --- output places: a file where a folder must be, a folder where a file must be
    case("outputs", f"{TT} out_dir={{cfg}}/sub", "is a file, so nothing can be created below it", "accepted: a directory"),
    case("outputs", f"{TT} out_dir=/proc/kdlab-nope", "cannot create the folder '/proc/kdlab-nope'", "accepted: out_dir"),
    case("outputs", "evaluate {f}/good.safetensors --json {f}/sweep", "--json", "is a directory", "accepted: a file name"),
    case("outputs", "evaluate {f}/good.safetensors --json {cfg}/x.json", "its folder", "is a file"),
    case("outputs", "evaluate-gan {f}/gen.safetensors --json {f}/sweep", "--json", "is a directory"),
    case("outputs", "export {f}/good.safetensors --out {out}", "--out", "is a directory", "give a file name"),
    case("outputs", "export {f}/good.safetensors --format torchscript --out {cfg}/x.pt", "its folder", "is a file"),
    case("outputs", "report {out}/x --out {cfg}", "--out", "is a file", "accepted: a directory"),
    case("outputs", "reproduce jacobian-table1 --out-dir {cfg}", "'out_dir'", "is a file"),
    case("outputs", "demo --out-dir {cfg}", "'out_dir'", "is a file"),
    case("outputs", "compare demo --out-dir {cfg}", "'out_dir'", "is a file"),
    # --- evaluate, export, report, list
    case("evaluate", "evaluate {f}/good.safetensors data.val_size=abc", "data.val_size = 'abc'", "drop data.val_size"),
    case("evaluate", "evaluate {f}/good.safetensors data.classes=[0,1]", "(10, 1, 28)", "(2, 1, 28)"),
    case("evaluate", "evaluate {f}/good.safetensors data.name=imagefolder:{f}/sweep/mixed", "(10, 1, 28)", "(2, 3, 32)"),
    case("evaluate", "evaluate {cfg}", "cfg.yaml' is not a kdlab checkpoint"),
    case("evaluate", "evaluate {f}/good.safetensors --sigmas 1,,2", "'' is not a number", "comma-separated"),
    case("evaluate", "evaluate {f}/good.safetensors --threads abc", "--threads", "invalid int value: 'abc'"),
    case("evaluate", "evaluate-gan {f}/missing.safetensors", "missing.safetensors' does not exist"),
    case("export", "export {f}/good.safetensors --atol -1", "--atol = -1.0", "finite number > 0"),
    case("export", "export {f}/good.safetensors --atol nan", "--atol = nan", "finite number > 0"),
    case("export", "export {f}/good.safetensors --threads 0", "--threads = 0", ">= 1"),
    case("export", "export {cfg}", "cfg.yaml' is not a kdlab checkpoint"),
    case("export", "export {f}/sweep", "holds no teacher.safetensors"),
    case("report", "report {f}/sweep", "run summary not found", "did the run finish?"),
    case("list", "list terms extra", "unrecognized argument(s) extra"),
    case("list", "list --json nothing", "unknown list 'nothing'", "accepted: models"),
    # --- compare specs and options
    case("compare", f"compare {S}/dup.yaml --out-dir {{out}}/c", "same label 'a'"),
    case("compare", f"compare {S}/norows.yaml --out-dir {{out}}/c", "at least one method row"),
    case("compare", f"compare {S}/unknown.yaml --out-dir {{out}}/c", "unknown key 'bogus'", "accepted: name"),
    case("compare", f"compare {S}/noseeds.yaml --out-dir {{out}}/c", "'seeds' must be a non-empty list", "[]"),
    case("compare", f"compare {S}/dupseeds.yaml --out-dir {{out}}/c", "[1, 1] repeats a seed"),
    case("compare", f"compare {S}/negseed.yaml --out-dir {{out}}/c", "seed -1", "'seed' = -1", ">= 0"),
    case("compare", f"compare {S}/strseeds.yaml --out-dir {{out}}/c", "seeds = 'a,b'", "comma-separated integers"),
    case("compare", f"compare {S}/ganrow.yaml --out-dir {{out}}/c", "'cyclegan' trains a generator", "accepted methods"),
    case("compare", f"compare {S}/clfteacher-genrow.yaml --out-dir {{out}}/c", "holds no generator but a classifier",
         "kdlab train-gan"),
    case("compare", f"compare {S}/listrow.yaml --out-dir {{out}}/c", "methods[0] must be a mapping", "[1, 2]"),
    case("compare", f"compare {S}/maprows.yaml --out-dir {{out}}/c", "'methods' = {'a': 'demo_ce'}", "a list of rows"),
    case("compare", f"compare {S}/badcommon.yaml --out-dir {{out}}/c", "'trainer.epochs' = 0", "> 0"),
    case("compare", f"compare {S}/badset.yaml --out-dir {{out}}/c", "row 'X'", "'objective.student.kd.weight' = 'abc'", "a number"),
    case("compare", f"compare {S}/badbudget.yaml --out-dir {{out}}/c", "'data.n_per_class' = 0", "> 0"),
    case("compare", f"compare {S}/budgetkey.yaml --out-dir {{out}}/c", "'epochs'", "n_per_class"),
    case("compare", f"compare {S}/norecipe.yaml --out-dir {{out}}/c", "methods[0] needs a recipe or key=value sets"),
    case("compare", f"compare {S}/badcallback.yaml --out-dir {{out}}/c", "unknown callback 'nope'",
         "accepted: kdgan-grad-variance, kdgan-teacher-trace, save-player"),
    case("compare", f"compare {S}/bin.yaml --out-dir {{out}}/c", "bin.yaml' is not UTF-8 text"),
    case("compare", f"compare {S}/empty.yaml --out-dir {{out}}/c", "must hold a mapping"),
    case("compare", f"compare {S}/dup.yaml {S}/unknown.yaml", "compare takes one spec"),
    case("compare", "compare demo --jobs 0 --out-dir {out}/c", "--jobs = 0", ">= 1"),
    case("compare", "compare demo --jobs 100000 --out-dir {out}/c", "--jobs = 100000", "this machine has"),
    case("compare", "compare demo --seeds 1,1 --out-dir {out}/c", "repeats a seed"),
    case("compare", "compare demo --method noequals --out-dir {out}/c", "'noequals'", "LABEL=SOURCE"),
    case("compare", "compare demo --method =demo_kd --out-dir {out}/c", "'=demo_kd'", "LABEL=SOURCE"),
    case("compare", "compare demo --name a/b --out-dir {out}/c", "compare name 'a/b'", "letters, digits"),
    case("compare", "compare demo --teacher {out}/nope --out-dir {out}/c", "nope': no such run directory, weights or YAML file"),
    case("compare", "compare demo trainer.epochs=0 --out-dir {out}/c", "'trainer.epochs' = 0"),
    case("compare", f"compare {S}/missingrow.yaml --out-dir {{out}}/c", "primary[0].a", "'demo_lm'", "'demo_ce'"),
    case("compare", f"compare {S}/nometric.yaml --out-dir {{out}}/c", "metric 'fid' is not produced", "test_acc_best"),
    case("compare", f"compare {S}/oneseed.yaml --out-dir {{out}}/c", "seeds = [0]", "at least 2 seeds"),
    case("experiments", f"reproduce jacobian-table2 --out {S}/results/jacobian-table1/small --out-dir {{out}}/r",
         "holds the results of experiment 'jacobian-table1'"),
    # --- reproduce and demo
    case("experiments", "reproduce jacobian-table1 --seeds 1,1", "--seeds '1,1' repeats 1", "distinct integers"),
    case("experiments", "reproduce jacobian-table1 --seeds ,", "'' is not a number"),
    case("experiments", "reproduce jacobian-table1 trainer.epochs=0 --out-dir {out}/r", "'trainer.epochs' = 0"),
    case("experiments", "reproduce jacobian-table1 nonsense=1 --out-dir {out}/r", "'nonsense'", "accepted: name"),
    case("experiments", "demo --jobs 0 --out-dir {out}/d", "--jobs = 0"),
    case("experiments", "demo trainer.epochs=-1 --out-dir {out}/d", "'trainer.epochs' = -1"),
    case("experiments", "demo bogus=1 --out-dir {out}/d", "'bogus'", "accepted: name"),
    # --- run directories
    case("rundir", f"{TT} --resume --overwrite", "--resume", "--overwrite", "give one of them"),
]


def _api_cases():
    """Bad inputs of the Python API (``kdlab.api``): ``(id, call(files, out), expected substrings)``."""
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from kdlab import api

    def images(value):
        return TensorDataset(torch.full((8, 1, 28, 28), value), torch.zeros(8, dtype=torch.long))

    return [
        ("api: evaluate(data=5)", lambda f, o: api.evaluate(f / "good.safetensors", data=5),
         ("data = 5", "accepted: a mapping")),
        ("api: overrides given as one string", lambda f, o: api.train_teacher(
            model="mlp", train="fashion-mnist", out=o / "a", overrides="trainer.epochs=1"),
         ("overrides = 'trainer.epochs=1'", "accepted: a list")),
        ("api: imports given as one string", lambda f, o: api.train_teacher(
            model="mlp", train="fashion-mnist", out=o / "a", imports="my_plugin"), ("imports = 'my_plugin'", "a list")),
        ("api: a teacher module of 3 classes for a 10-class set", lambda f, o: api.distill(
            teacher=nn.Sequential(nn.Flatten(), nn.Linear(784, 3)), student="mlp", train="fashion-mnist", out=o / "a"),
         ("outputs shape (2, 3)", "accepted output [2, 10]")),
        ("api: items that are strings", lambda f, o: api.train_teacher(
            model="mlp", train=[("a", 1)] * 4, test=[("a", 1)] * 4, out=o / "a"), ("train[0] is a str", "(image, label)")),
        ("api: float images outside [0, 1]", lambda f, o: api.train_teacher(
            model="mlp", train=images(3.0), test=images(3.0), out=o / "a"), ("values in [3, 3]", "accepted: [0, 1]")),
        ("api: a generator teacher given as a module", lambda f, o: api.compress_gan(teacher=nn.Linear(2, 2)),
         ("is a module", "a GAN run directory")),
        ("api: student=5", lambda f, o: api.distill(teacher=f / "good.safetensors", student=5, train="fashion-mnist",
                                                   out=o / "a"), ("unknown model '5'", "known models")),
        ("api: trainer=5", lambda f, o: api.train_teacher(model="mlp", train="fashion-mnist", out=o / "a", trainer=5),
         ("section 'trainer' = 5", "a mapping")),
    ]


API_CASES = [pytest.param(i, expect, id=i) for i, _, expect in _api_cases()]
