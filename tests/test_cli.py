"""End to end through the CLI on a small real Fashion-MNIST subset."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from kdlab.cli import main


def test_cli_trains_teacher_then_student_far_above_chance(make_config, tmp_path, capsys):
    teacher_cfg = make_config(name="teacher", data={"n_per_class": 100}, model={"name": "lenet", "kwargs": {}},
                              trainer={"epochs": 2, "progress": False, "tensorboard": True, "log_every_n_steps": 5})
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher_cfg))
    assert main(["train-teacher", str(tmp_path / "teacher.yaml")]) == 0
    teacher_dir = tmp_path / "teacher"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "report.md", "teacher.safetensors",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt", "plots/curves.png"):
        assert (teacher_dir / name).is_file(), name
    assert any((teacher_dir / "tb").rglob("events.out.tfevents*"))

    student_cfg = make_config(name="student", method="distill", teacher={"checkpoint": str(teacher_dir)},
                              trainer={"epochs": 8, "progress": False, "tensorboard": False, "log_every_n_steps": 5})
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(student_cfg))
    assert main(["distill", str(tmp_path / "student.yaml"), "objective.student.kd.weight=1.0",
                 "objective.student.kd.temperature=4"]) == 0
    summary = json.loads((tmp_path / "student" / "summary.json").read_text())
    assert summary["teacher"]["name"] == "lenet"
    assert summary["data"]["n_train"] == 300 and summary["data"]["n_per_class"] == 30
    assert summary["test_acc_best"] > 55.0  # 10 classes: chance is 10%

    capsys.readouterr()  # drop the training summaries
    assert main(["evaluate", str(tmp_path / "student"), "data.max_test=500", "--sigmas", "0,0.3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["test_acc"] - summary["test_acc_best"]) < 1e-9  # same weights, same 500 test images
    assert set(out["noise_acc"]) == {"0.0", "0.3"}

    assert main(["report", str(teacher_dir), str(tmp_path / "student"), "--out", str(tmp_path / "cmp")]) == 0
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "lenet" in report and "mlp" in report


def test_cli_bad_input_exit_code_and_message(make_config, tmp_path, capsys):
    assert main(["distill", "no-such-recipe"]) == 2
    assert "recipes:" in capsys.readouterr().err
    cfg = make_config(name="x", method="distill", teacher={"checkpoint": str(tmp_path / "missing")})
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["distill", str(tmp_path / "x.yaml")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["train-teacher", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert "method 'distill'" in err and "`kdlab distill`" in err  # names the method and the command that runs it
    assert main(["train-teacher", str(tmp_path / "x.yaml"), "method=teacher", "model.name=nosuchnet"]) == 2
    err = capsys.readouterr().err
    assert "nosuchnet" in err and "lenet" in err  # names the bad model and the known ones


@pytest.mark.slow
def test_cli_ddp_two_cpu_processes(make_config, tmp_path):
    """DDP through Lightning Fabric on CPU (gloo): two ranks, each on its shard of every epoch."""
    cfg = make_config(name="ddp", trainer={"epochs": 2, "devices": 2, "strategy": "ddp", "progress": False,
                                           "tensorboard": False, "log_every_n_steps": 2})
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "kdlab.cli", "train-teacher", str(tmp_path / "ddp.yaml")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["test_acc_best"] > 40.0
    # 300 training images, batch 50 per rank: 3 steps per epoch per rank
    steps = [json.loads(l)["step"] for l in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6


def test_overrides_may_follow_options(tmp_path, monkeypatch):
    seen = {}
    from kdlab.experiments import EXPERIMENTS

    def fake(out_dir, scale, seeds, overrides):
        seen.update(out_dir=out_dir, scale=scale, seeds=seeds, overrides=overrides)
        return out_dir / "report.md"

    monkeypatch.setitem(EXPERIMENTS._entries, "fake-exp", fake)
    assert main(["reproduce", "fake-exp", "a.b=1", "--scale", "full", "--seeds", "0,1", "c=2", "--out-dir", str(tmp_path)]) == 0
    assert seen == {"out_dir": tmp_path, "scale": "full", "seeds": [0, 1], "overrides": ["a.b=1", "c=2"]}
    assert main(["reproduce", "fake-exp", "--scale", "full", "stray"]) == 2  # a bad argument is exit 2, not SystemExit
