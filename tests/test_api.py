"""The Python API (kdlab.api): in-memory modules and Datasets through the CLI's runner; its refusals."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset

import pytest

import kdlab
from conftest import small_config
from kdlab.config import ConfigError
from kdlab.engine.digest import file_sha256

QUICK = {"trainer": {"epochs": 1, "progress": False, "tensorboard": False, "log_every_n_steps": 1},
         "eval": {"latency": False, "noise_sigmas": [0.0]}, "data": {"batch_size": 32, "eval_batch_size": 64},
         "optim": {"name": "adam", "lr": 0.01, "weight_decay": 0.0}}


class Blobs(Dataset):
    """Three classes of 8x8 grey images, each a bright square at its own place plus noise: (float [1, 8, 8] in
    [0, 1], label)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 3
        self.x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
        for i, c in enumerate(self.y.tolist()):
            self.x[i, 0, 2 * c:2 * c + 3, 2 * c:2 * c + 3] += 0.6

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class Net(nn.Module):
    def __init__(self, hidden: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    torch.manual_seed(0)
    return kdlab.train_teacher(Net(32), Blobs(120, 1), test=DataLoader(Blobs(60, 2)), out=out / "teacher",
                               **{**QUICK, "trainer": {**QUICK["trainer"], "epochs": 3}})


def test_in_memory_teacher_and_student(teacher_run, tmp_path):
    """The summary's test accuracy is the trained student's accuracy on the Dataset, recomputed here with the
    training images' mean/std; the data and the in-memory teacher are recorded by hash."""
    test = Blobs(60, 2)
    torch.manual_seed(1)
    teacher = Net(32)
    teacher.load_state_dict(teacher_run.student.state_dict())
    run = kdlab.distill(teacher, Net(8), Blobs(120, 1), test=test, out=tmp_path / "s", **QUICK,
                        objective={"student": {"kd": {"weight": 1.0}, "hints": {"weight": 1.0, "layers": [["body", "body"]]}}})
    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    assert cfg["data"]["name"].startswith("memory:blobs-") and cfg["model"]["name"].startswith("module:net-")
    ckpt = cfg["teacher"]["checkpoint"]
    assert run.summary["teacher"]["sha256"] == file_sha256(ckpt)
    # independent accuracy: normalise with the training set's own statistics (population std)
    x = torch.stack([Blobs(120, 1)[i][0] for i in range(120)])
    x = (x * 255).round() / 255
    mean, std = x.mean(), x.std(unbiased=False)
    xt = ((test.x * 255).round() / 255 - mean) / std
    student = run.student
    assert type(student) is Net
    with torch.no_grad():
        acc = 100.0 * int((student(xt).argmax(1) == test.y).sum()) / len(test)
    assert run.summary["test_acc_best"] == pytest.approx(acc, abs=1e-6)
    assert "hints" in run.report() or run.report()


def test_api_and_cli_same_resolved_config_and_weights(tmp_path, teacher_run):
    """The API builds the config a YAML file would hold and runs the CLI's runner: same config.yaml, same weights."""
    from safetensors.torch import load_file

    from kdlab.cli import main

    base = small_config(tmp_path, name="cli", method="distill", teacher={"checkpoint": str(teacher_run.path)},
                        model={"name": "mlp", "kwargs": {"hidden": [16]}}, trainer={"epochs": 1},
                        objective={"student": {"kd": {"weight": 1.0, "temperature": 2.0}}})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(base))
    # a teacher for fashion-mnist
    t = kdlab.train_teacher(**{k: v for k, v in small_config(tmp_path, trainer={"epochs": 1}).items()
                               if k not in ("name", "out_dir", "method")}, out=tmp_path / "ft")
    base["teacher"]["checkpoint"] = str(t.path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(base))
    assert main(["distill", str(tmp_path / "c.yaml")]) == 0
    sections = {k: v for k, v in base.items() if k not in ("name", "out_dir", "method", "teacher", "objective")}
    run = kdlab.distill(t, "mlp", objective=base["objective"], out=tmp_path / "api", **{**sections, "model": {"kwargs": {"hidden": [16]}}})
    a, b = (tmp_path / "cli" / "config.yaml").read_text(), (run.path / "config.yaml").read_text()
    assert a.replace("name: cli\n", "") == b.replace("name: api\n", "")
    sa, sb = load_file(str(tmp_path / "cli" / "student.safetensors")), load_file(str(run.path / "student.safetensors"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_evaluate_export_and_compare_wrap_the_cli_functions(teacher_run, tmp_path):
    """evaluate gives the run's own test accuracy again; compare and export (smoke) write their files."""
    out = kdlab.evaluate(teacher_run, sigmas=[0.0])
    assert out["test_acc"] == pytest.approx(teacher_run.summary["test_acc_best"])
    student = kdlab.distill(teacher_run, Net(8), Blobs(120, 1), test=Blobs(60, 2), out=tmp_path / "s", **QUICK)
    report = kdlab.compare(teacher_run, student, out=tmp_path / "cmp")
    assert report.is_file()
    pytest.importorskip("onnxruntime")
    rep = kdlab.export(student, "onnx", max_test=20)
    assert rep["check"]["max_abs_diff"] <= rep["atol"]


@pytest.mark.parametrize("kwargs, words", [
    (dict(teacher=Net(32, classes=5), student=Net(8)), r"teacher Net outputs shape \(2, 5\).*3 classes"),
    (dict(teacher=None, student=Net(8), model={"name": "mlp"}), r"given twice: as a module \(Net\) and as model name 'mlp'"),
    (dict(teacher=None, student=Net(8), train=[(torch.zeros(1, 8, 8), 0, 1)]), r"train\[0\] is a tuple of 3 entries.*\(image, label\) or image"),
    (dict(teacher=None, student=Net(8), train=[(torch.full((1, 8, 8), 2.0), 0)]), r"float image values in \[2, 2\]; accepted: \[0, 1\]"),
    (dict(teacher=None, student=Net(8), test=None), r"give test= too"),
    (dict(teacher=None, student=Net(8), train=[{"image": torch.zeros(1, 8, 8), "label": 0}]),
     r"train\[0\] is a dict; accepted items: \(image, label\) or image"),
])
def test_bad_input_is_refused_before_training(kwargs, words, tmp_path):
    args = {"train": Blobs(30, 1), "test": Blobs(9, 2), **kwargs}
    with pytest.raises((ConfigError, ValueError), match=words):
        kdlab.distill(out=tmp_path / "x", **args, **QUICK)
    assert not (tmp_path / "x").exists()


def test_unknown_feature_path_lists_the_paths_near_it(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown feature 'body.7'.*module paths near 'body.7': .*body.0, body.1, body.2"):
        kdlab.distill(Net(32), Net(8), Blobs(30, 1), test=Blobs(9, 2), out=tmp_path / "f", **QUICK,
                      objective={"student": {"hints": {"weight": 1.0, "layers": [["body.7", "body"]]}}})


def test_compress_gan_through_the_api_equals_the_runner(tmp_path):
    """``kdlab.compress_gan`` builds the config of the identity test's GAN-compression run: same weights as
    :func:`kdlab.runner.train` on that config."""
    from safetensors.torch import load_file

    from fixtures.make_identity_fixture import make_gen_teacher
    from kdlab.runner import load_run_config, train

    gen = make_gen_teacher(tmp_path)
    sections = {"data": {"val_size": 0, "transfer": "none", "steps_per_epoch": 2, "batch_size": 16, "max_test": 100},
                "optim": {"name": "adam", "lr": 0.001, "betas": [0.5, 0.999], "weight_decay": 0.0, "scheduler": "none"},
                "trainer": {"epochs": 1, "progress": False, "tensorboard": False},
                "eval": {"latency": False, "n_samples": 100, "kid_subset_size": 50, "kid_subsets": 2, "is_splits": 1,
                         "grid_n": 4}}
    ref = train(load_run_config([{"name": "ref", "method": "gan-compression", "out_dir": str(tmp_path),
                                  "teacher": {"checkpoint": str(gen)}, "model": {"name": "dcgan", "kwargs": {"d": 4}},
                                  **sections}]))
    run = kdlab.compress_gan(gen, {"name": "dcgan", "kwargs": {"d": 4}}, out=tmp_path / "api", **sections)
    a = {p.name for p in ref.glob("*.safetensors")}
    assert a and a == {p.name for p in run.path.glob("*.safetensors")}
    for name in a:
        sa, sb = load_file(str(ref / name)), load_file(str(run.path / name))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert run.student(torch.zeros(2, 16)).shape == (2, 1, 28, 28)  # the generator, reloaded


def test_a_given_validation_set_is_the_validation_split(tmp_path):
    """``val=`` rows are the validation split as given: the logged validation accuracy of the best epoch equals
    the reloaded student's accuracy on exactly those images (recomputed here)."""
    train_set, val_set, test_set = Blobs(90, 1), Blobs(30, 7), Blobs(30, 2)
    torch.manual_seed(0)
    run = kdlab.train_teacher(Net(16), train_set, val=val_set, test=test_set, out=tmp_path / "v",
                              **{**QUICK, "trainer": {**QUICK["trainer"], "epochs": 2}})
    assert yaml.safe_load((run.path / "config.yaml").read_text())["data"]["val_size"] == 30
    x = (train_set.x * 255).round() / 255
    xv = ((val_set.x * 255).round() / 255 - x.mean()) / x.std(unbiased=False)
    with torch.no_grad():
        acc = 100.0 * int((run.student(xv).argmax(1) == val_set.y).sum()) / len(val_set)
    assert run.summary["val_acc_best"] == pytest.approx(acc, abs=1e-6)
    assert run.summary["data"]["n_train"] == 90 and run.summary["data"]["n_val"] == 30
    with pytest.raises(ConfigError, match="give one of them"):
        kdlab.train_teacher(Net(16), train_set, val=val_set, test=test_set, out=tmp_path / "w", data={"val_size": 5})


def test_unlabelled_images_are_a_transfer_set(teacher_run, tmp_path):
    """Bare images (no labels) are refused as ``train`` with the way to use them, and taken as ``transfer``:
    the student trains on exactly those rows (summary's n_transfer), labels never read (KD only)."""
    images = [Blobs(50, 9)[i][0] for i in range(50)]
    with pytest.raises(ValueError, match="bare images.*transfer="):
        kdlab.distill(teacher_run, Net(8), images, test=Blobs(30, 2), out=tmp_path / "bad", **QUICK)
    run = kdlab.distill(teacher_run, Net(8), Blobs(120, 1), test=Blobs(60, 2), transfer=images, out=tmp_path / "t",
                        objective={"student": {"ce": {"weight": 0.0}, "kd": {"weight": 1.0}}}, **QUICK)
    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    assert cfg["data"]["transfer"].startswith("memory:list-")
    assert run.summary["data"]["n_transfer"] == 50


def test_compare_with_a_spec_runs_kdlab_compare(monkeypatch, tmp_path):
    """``kdlab.compare(spec=...)`` is ``kdlab compare``: the same runs (training faked as in test_compare) and
    the report under ``out``."""
    from kdlab.compare import load_spec, run_compare
    from kdlab.experiments import grid
    from test_compare import FakeTrain, spec_dict

    fake = FakeTrain()
    monkeypatch.setattr(grid, "train", fake)
    report = kdlab.compare(spec=spec_dict(), out=tmp_path / "api" / "cmp")
    api_names = list(fake.names)
    fake.names.clear()
    ref = run_compare(load_spec(spec_dict()), tmp_path / "cli")
    assert api_names == fake.names and len(api_names) == 10
    assert report == tmp_path / "api" / "cmp" / "report.md" and report.is_file()
    assert Path(ref.report).name == report.name


def test_compare_and_export_stay_callable_after_their_modules_are_imported():
    """``kdlab.compare`` / ``kdlab.export`` are also a package and a module: importing them must not hide the API."""
    import kdlab.compare
    import kdlab.export

    # (no importlib.reload here: it would redefine kdlab.export's exception classes for every later test)
    assert callable(kdlab.compare) and callable(kdlab.export)
    assert kdlab.compare.run_compare and kdlab.export.export_run  # still the modules
