"""The gan-compression-sweep spec end to end on real runs, cut short (slow: a few minutes on 2 CPU cores).

Its configs against the former hand-written grid, and generator rows on a stand-in trainer, are in
tests/test_spec_gan.py."""
from __future__ import annotations

import json

import pytest
import yaml

from kdlab.experiments.specs import SPEC_DIR, run_spec_experiment

#: every run (the metric classifier's config has no generator eval keys: those go to the GAN runs only)
CUT = ["trainer.limit_train_batches=15", "trainer.epochs=1", "data.max_test=400", "trainer.progress=false",
       "trainer.tensorboard=false", "trainer.threads=1"]
GAN_EVAL = ["eval.n_samples=400", "eval.kid_subset_size=100", "eval.kid_subsets=5"]


@pytest.mark.slow
def test_sweep_small_scale_cut_short(tmp_path):
    raw = yaml.safe_load((SPEC_DIR / "gan-compression-sweep.yaml").read_text())
    small = raw["scales"]["small"]
    small["init"]["teacher"]["set"] += GAN_EVAL
    for row in small["methods"]:
        row["set"] += GAN_EVAL
    spec = tmp_path / "gan-compression-sweep.yaml"
    spec.write_text(yaml.safe_dump(raw))
    run_spec_experiment(spec, tmp_path, "small", seeds=[0, 1], overrides=CUT)
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
