"""``kdlab export``: ONNX and TorchScript files of classifiers and generators, checked here against
PyTorch by loading them independently (onnxruntime / torch.jit.load), plus the checker and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdlab.cli import main
from kdlab.engine import load_classifier
from kdlab.engine.generators import load_generator
from kdlab.export import ExportMismatchError, compare_outputs, export_run
from kdlab.runner import load_run_config, train

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    from conftest import small_config

    tmp = tmp_path_factory.mktemp("export")
    return train(load_run_config([small_config(tmp, name="clf", trainer={"epochs": 1})]))


def _onnx_outputs(path, x: torch.Tensor) -> torch.Tensor:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_classifier_export_matches_pytorch(classifier_run, fmt):
    rep = export_run(classifier_run, fmt, max_test=300)
    path = classifier_run / "exports" / ("teacher.onnx" if fmt == "onnx" else "teacher.pt")
    assert rep["file"] == str(path) and path.is_file() and rep["ok"]
    assert rep["check"]["n"] == 300 and rep["check"]["max_abs_diff"] < 1e-4 and rep["check"]["top1_agreement"] == 100.0
    assert set(rep["latency_ms"]) == {"1", "64"} and all(v["pytorch"] > 0 and v[fmt] > 0 for v in rep["latency_ms"].values())
    assert json.loads(path.with_suffix(f".{fmt}.json").read_text())["check"] == rep["check"]
    # the file stands alone: no other file beside it (ONNX weights once went to a temporary-named .data file
    # that the .onnx pointed at), so a copy of it elsewhere runs
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".") or p.suffix == ".data"] == []
    # independently: the written file, at a batch size it was not traced with, against the PyTorch model
    model = load_classifier(classifier_run).eval()
    x = torch.randn(7, 1, 28, 28)
    got = _onnx_outputs(path, x) if fmt == "onnx" else torch.jit.load(str(path))(x)
    with torch.no_grad():
        assert torch.allclose(got, model(x), atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_generator_export_matches_pytorch(gen_teacher, tmp_path, fmt):
    out = tmp_path / f"g.{fmt}"
    rep = export_run(gen_teacher, fmt, out=out)
    assert rep["kind"] == "generator" and rep["check"]["n"] == 1000 and rep["check"]["max_abs_diff"] < 1e-4
    assert "top1_agreement" not in rep["check"]
    gen = load_generator(gen_teacher).eval()
    z = torch.randn(5, gen.latent_dim)
    got = _onnx_outputs(out, z) if fmt == "onnx" else torch.jit.load(str(out))(z)
    with torch.no_grad():
        assert got.shape == (5, 1, 28, 28) and torch.allclose(got, gen(z), atol=1e-4)


def test_the_checker_measures_differences_and_disagreement():
    model = torch.nn.Linear(4, 3)
    x = torch.randn(10, 4)
    with torch.no_grad():
        ref = model(x)
    flip = ref.clone()
    flip[:2] = -flip[:2] * 100  # two rows whose argmax moves (largest logit becomes the smallest)
    rep = compare_outputs(model, lambda _: flip, [x], classifier=True)
    want_diff = float((flip - ref).abs().max())
    want_agree = 100.0 * float(np.mean((flip.argmax(1) == ref.argmax(1)).numpy()))
    assert rep["max_abs_diff"] == pytest.approx(want_diff) and rep["top1_agreement"] == pytest.approx(want_agree)
    with pytest.raises(ExportMismatchError, match="shape"):
        compare_outputs(model, lambda _: ref[:, :2], [x], classifier=True)


def test_export_bad_input(classifier_run, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err
    (tmp_path / "unfinished").mkdir()  # a run directory without weights: names it and what is missing
    assert main(["export", str(tmp_path / "unfinished")]) == 2
    err = capsys.readouterr().err
    assert "unfinished" in err and "student.safetensors" in err
    assert main(["export", str(classifier_run), "--format", "tflite"]) == 2  # argparse's refusal, returned
    with pytest.raises(ValueError, match="atol"):
        export_run(classifier_run, "onnx", atol=0.0)
    with pytest.raises(ValueError, match="accepted: onnx, torchscript"):
        export_run(classifier_run, "tflite")
    assert main(["export", str(classifier_run), "--format", "torchscript", "--max-test", "100",
                 "--out", str(tmp_path / "m.pt")]) == 0
    assert (tmp_path / "m.pt").is_file() and not list(tmp_path.glob(".*.tmp"))


def test_export_out_never_replaces_a_runs_files_nor_an_existing_file(classifier_run, tmp_path, capsys):
    weights = next(classifier_run.glob("*.safetensors"))
    before = weights.read_bytes()
    for out in (weights, classifier_run / "config.yaml", classifier_run / "student.onnx"):
        assert main(["export", str(classifier_run), "--out", str(out), "--force"]) == 2
        assert "belong to the run" in capsys.readouterr().err
    assert weights.read_bytes() == before and not (classifier_run / "student.onnx").exists()
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"a user's file")
    assert main(["export", str(classifier_run), "--format", "torchscript", "--max-test", "50", "--out", str(mine)]) == 2
    assert "--force" in capsys.readouterr().err and mine.read_bytes() == b"a user's file"
    assert main(["export", str(classifier_run), "--format", "torchscript", "--max-test", "50", "--out", str(mine),
                 "--force"]) == 0
    assert mine.read_bytes() != b"a user's file"
    for atol in ("inf", "nan", "-1"):
        assert main(["export", str(classifier_run), "--atol", atol]) == 2
        assert "finite number > 0" in capsys.readouterr().err
