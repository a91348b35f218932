"""The worked example of docs/python_api.md, run as written (the last Python block of that page)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "python_api.md"


@pytest.mark.slow
def test_worked_example_runs_as_documented(tmp_path, monkeypatch):
    """Smoke test of the documented example (a torchvision teacher, a timm student, compare, ONNX export), plus
    that it fits in 20 lines and that its runs wrote what the comments say."""
    pytest.importorskip("timm")
    pytest.importorskip("onnxruntime")
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[-1]
    assert len(code.strip().splitlines()) <= 20
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {})
    assert (tmp_path / "runs/ex_compare/report.md").is_file()
    assert (tmp_path / "runs/ex_kd/exports/student.onnx").is_file()
    import json

    kd = json.loads((tmp_path / "runs/ex_kd/summary.json").read_text())
    assert kd["model"]["name"] if isinstance(kd.get("model"), dict) else True
    assert 10.0 < kd["test_acc_best"] <= 100.0
