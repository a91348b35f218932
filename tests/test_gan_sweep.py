"""The gan-compression-sweep experiment end to end, cut short (slow: about 2-4 minutes on 2 CPU cores)."""
from __future__ import annotations

import json

import pytest

from kdlab.cli import main
from kdlab.experiments import EXPERIMENTS
from kdlab.experiments.gan_sweep import SCALES

CUT = ["trainer.limit_train_batches=15", "trainer.epochs=1", "eval.n_samples=400", "data.max_test=400",
       "eval.kid_subset_size=100", "eval.kid_subsets=5", "trainer.progress=false", "trainer.tensorboard=false",
       "trainer.threads=1"]


def test_sweep_is_registered_with_both_scales():
    assert "gan-compression-sweep" in EXPERIMENTS
    assert set(SCALES) == {"small", "full"}
    small = SCALES["small"]
    assert all(d < small["teacher_d"] for d in small["student_ds"] + small["joint_ds"])


@pytest.mark.slow
def test_sweep_small_scale_cut_short(tmp_path):
    assert main(["reproduce", "--scale", "small", "--out-dir", str(tmp_path), "gan-compression-sweep", *CUT]) == 0
    out = tmp_path / "gan-compression-sweep"
    report = (out / "report.md").read_text()
    plan = SCALES["small"]
    students = [f"gan-sweep-mse-d{d}" for d in plan["student_ds"]] + [f"gan-sweep-joint-d{d}" for d in plan["joint_ds"]]
    params = []
    for name in ["gan-sweep-teacher"] + students:
        s = json.loads((tmp_path / name / "summary.json").read_text())
        assert f"`../{name}`" in report
        params.append(s["model"]["params"])
        assert s["generative"]["fid"] >= 0
    assert params[0] > max(params[1:])  # every student is smaller than the teacher
    mse = params[1:1 + len(plan["student_ds"])]
    assert mse == sorted(mse, reverse=True)  # smaller d, fewer parameters
    for metric in ("fid", "kid", "is", "vol", "fidelity_fid"):
        assert (out / "plots" / f"{metric}_vs_params.png").is_file()
    assert (out / "samples" / "side_by_side.png").is_file() and "sha256" in report
