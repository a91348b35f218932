"""The gan-compression-sweep spec end to end on real runs, cut short (slow: a few minutes on 2 CPU cores).

Its configs against the former hand-written grid, and generator rows on a stand-in trainer, are in
tests/test_spec_gan.py."""
from __future__ import annotations

import json

import pytest

from kdlab.cli import main

#: every run; the metric classifier takes the trainer.* and data.* ones only (the spec's init takes:)
CUT = ["trainer.limit_train_batches=15", "trainer.epochs=1", "eval.n_samples=400", "data.max_test=400",
       "eval.kid_subset_size=100", "eval.kid_subsets=5", "trainer.progress=false", "trainer.tensorboard=false",
       "trainer.threads=1"]


@pytest.mark.slow
def test_sweep_small_scale_cut_short(tmp_path):
    assert main(["reproduce", "--scale", "small", "--seeds", "0,1", "--out-dir", str(tmp_path),
                 "gan-compression-sweep", *CUT]) == 0
    out = tmp_path / "gan-compression-sweep" / "small"
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "generator" and (out / "report.md").is_file()
    rows = {e["slug"]: e for e in results["rows"]}
    assert list(rows) == ["mse-d16", "mse-d8", "mse-d4", "mse-d2", "joint-d4"]
    teacher_params = {r["teacher_params"] for e in rows.values() for r in e["runs"]}
    assert len(teacher_params) == 1  # one teacher for every student and seed
    params = [rows[f"mse-d{d}"]["params"]["mean"] for d in (16, 8, 4, 2)]
    assert params == sorted(params, reverse=True) and params[0] < teacher_params.pop()  # smaller d, fewer params
    for e in rows.values():
        assert e["n_ok"] == 2 and all(r["fid"] >= 0 and r["vol"] > 0 for r in e["runs"])
    primary = [c for c in results["comparisons"] if c["kind"] == "primary"]
    assert [(c["metric"], c["direction"], c["n"]) for c in primary] == [("fid", "greater", 2)] * 2
    for key in ("fid", "vol", "fidelity_fid"):
        assert (out / "plots" / f"gen_{key}_vs_params.png").is_file()
    assert "## Generator quality" in (out / "report.md").read_text()
