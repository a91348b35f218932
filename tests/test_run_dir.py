"""The run directory belongs to one process, is never overwritten without --overwrite, and --resume
accepts the changes that are safe mid-run (and only those), as the NaN stop message advises."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from kdlab.config import ConfigError
import torch
import yaml

from kdlab.cli import build_parser, main
from kdlab.engine import load_checkpoint
from kdlab.engine.rundir import RunDirError
from kdlab.engine.runlock import RunDirWarning, RunLock, _proc_start
from kdlab.experiments import grid
from kdlab.methods import TeacherTraining
from kdlab.runner import load_run_config, train

QUIET = {"progress": False, "tensorboard": False, "log_every_n_steps": 2}


def tree(root: Path) -> dict:
    """Every file under ``root`` with its bytes (directories as None): what must not change."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def config(make_config, epochs=1, **sections):
    trainer = {**QUIET, "epochs": epochs, **sections.pop("trainer", {})}
    return load_run_config([make_config(trainer=trainer, **sections)])


def interrupted(make_config, monkeypatch, epochs=3, after=1, **sections):
    """A run killed after ``after`` epochs (``last.ckpt`` holds epoch ``after``); returns its config."""
    cfg = config(make_config, epochs=epochs, **sections)
    original = TeacherTraining.on_epoch_end

    def crash(self, epoch):
        original(self, epoch)
        if epoch == after:
            raise KeyboardInterrupt  # the machine stops before this epoch's checkpoint is written

    with monkeypatch.context() as m:
        m.setattr(TeacherTraining, "on_epoch_end", crash)
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    assert load_checkpoint(Path(cfg.out_dir) / cfg.name / "checkpoints" / "last.ckpt")["epoch"] == after
    return cfg


def write_lock(path: Path, pid: int, host: str = None, proc_start: str = None) -> bytes:
    data = json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2024-01-01T00:00:00",
                       "proc_start": proc_start, "token": "other"}).encode()
    path.write_bytes(data)
    return data


# -- the lock ------------------------------------------------------------------------------------
def test_a_live_holder_refuses_a_second_run_naming_its_pid(make_config, tmp_path):
    cfg = config(make_config)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = write_lock(tmp_path / "t.lock", child.pid, proc_start=_proc_start(child.pid))
        with pytest.raises(RunDirError, match=f"in use by process {child.pid} ") as info:
            train(cfg)
        assert "another name=" in str(info.value)
        assert (tmp_path / "t.lock").read_bytes() == lock  # the holder's lock is left alone
        assert not (tmp_path / "t").exists()  # nothing written
    finally:
        child.kill()
        child.wait()


def test_this_process_as_holder_is_refused_too(make_config, tmp_path):
    cfg = config(make_config)
    with RunLock(tmp_path / "t"):
        with pytest.raises(RunDirError, match=f"process {os.getpid()} "):
            train(cfg)
    assert not (tmp_path / "t.lock").exists()  # released by its owner


def test_a_dead_holders_lock_is_taken_over_with_a_warning(make_config, tmp_path):
    cfg = config(make_config)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that no process holds now
    write_lock(tmp_path / "t.lock", child.pid)
    with pytest.warns(RunDirWarning, match=f"process {child.pid} .*no longer running"):
        run = train(cfg)
    assert (run / "summary.json").is_file()
    assert not (tmp_path / "t.lock").exists()  # released at the end


def test_a_reused_pid_does_not_keep_a_stale_lock(make_config, tmp_path):
    # this process's pid, but another start time: the process that wrote the lock is gone
    write_lock(tmp_path / "t.lock", os.getpid(), proc_start="1")
    if _proc_start(os.getpid()) is None:
        pytest.skip("no /proc: process start times unknown")
    with pytest.warns(RunDirWarning, match="no longer running"):
        train(config(make_config))


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(make_config, tmp_path):
    lock = write_lock(tmp_path / "t.lock", 1, host="elsewhere.example")
    with pytest.raises(RunDirError, match=r"host 'elsewhere.example'.*rm .*t\.lock"):
        train(config(make_config))
    assert (tmp_path / "t.lock").read_bytes() == lock


def test_the_lock_is_released_when_the_run_fails(make_config, tmp_path, monkeypatch):
    cfg = interrupted(make_config, monkeypatch)
    assert not (tmp_path / "t.lock").exists()
    with pytest.raises(RunDirError):
        train(cfg)  # refused: an existing run
    assert not (tmp_path / "t.lock").exists()


# -- existing runs --------------------------------------------------------------------------------
def test_a_finished_run_is_not_overwritten_without_a_flag(make_config, tmp_path):
    cfg = config(make_config)
    train(cfg)
    before = tree(tmp_path)
    with pytest.raises(RunDirError, match="finished run") as info:
        train(config(make_config, optim={"lr": 0.01}))
    assert "--overwrite" in str(info.value) and "--resume" in str(info.value)
    assert tree(tmp_path) == before  # every file byte-identical, no lock left


def test_an_interrupted_run_is_refused_naming_resume(make_config, tmp_path, monkeypatch):
    cfg = interrupted(make_config, monkeypatch)
    before = tree(tmp_path)
    with pytest.raises(RunDirError, match="interrupted run.*use --resume to continue it, or --overwrite"):
        train(cfg)
    assert tree(tmp_path) == before


def test_overwrite_moves_the_old_run_aside(make_config, tmp_path, capsys):
    train(config(make_config))
    old = tree(tmp_path / "t")
    run = train(config(make_config, optim={"lr": 0.01}), overwrite=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("t.old-")]
    assert len(aside) == 1 and tree(aside[0]) == old  # the old run, intact
    assert f"moved the existing run {str(tmp_path / 't')!r} to {str(aside[0])!r}" in capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.01
    assert (run / "summary.json").is_file()


def test_a_refused_new_run_leaves_no_directory(make_config, tmp_path):
    cfg = config(make_config, method="distill", teacher={"checkpoint": str(tmp_path / "missing")})
    with pytest.raises(FileNotFoundError):
        train(cfg)
    assert list(tmp_path.iterdir()) == []  # no runs/<name>/, no lock


def test_resume_and_overwrite_together_are_refused(make_config, tmp_path):
    train(config(make_config))
    with pytest.raises(RunDirError, match="give one of them"):
        train(config(make_config), resume=True, overwrite=True)


@pytest.mark.parametrize("name", ["..", "."])
def test_a_run_name_outside_out_dir_is_refused(make_config, tmp_path, name):
    out = tmp_path / "runs"
    out.mkdir()
    # refused by the config check (before anything else), else by the run-directory check
    with pytest.raises((ConfigError, RunDirError), match=f"'name' = {name!r}"):
        train(config(make_config, name=name, out_dir=str(out)))
    assert list(tmp_path.rglob("*")) == [out]


def test_every_training_command_takes_overwrite():
    parser = build_parser()
    for command in ("train-teacher", "distill", "train-gan", "compress-gan"):
        args = parser.parse_args([command, "--overwrite"])
        assert args.overwrite and not args.resume


def test_grid_cells_of_a_changed_config_are_trained_again(make_config, tmp_path):
    cell = make_config(trainer={**QUIET, "epochs": 1})
    first = grid.run_cell([cell])
    assert grid.run_cell([cell]) == first  # reused
    again = grid.run_cell([cell], ["optim.lr=0.01"])
    assert again == first and yaml.safe_load((again / "config.yaml").read_text())["optim"]["lr"] == 0.01
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("t.old-")]) == 1


# -- resume -------------------------------------------------------------------------------------------
def test_a_forbidden_change_on_resume_is_refused_naming_the_key(make_config, tmp_path, monkeypatch):
    interrupted(make_config, monkeypatch)
    before = tree(tmp_path)
    with pytest.raises(RunDirError, match=r"model\.name = 'lenet' \(was 'mlp'\)") as info:
        train(config(make_config, epochs=3, model={"name": "lenet", "kwargs": {}}), resume=True)
    assert "optim.lr" in str(info.value)  # says what may change
    assert tree(tmp_path) == before  # config.yaml (and everything else) unchanged


def test_epochs_below_those_done_are_refused(make_config, tmp_path, monkeypatch):
    interrupted(make_config, monkeypatch, epochs=3, after=2)
    with pytest.raises(RunDirError, match="trainer.epochs = 1 is below the 2 epochs"):
        train(config(make_config, epochs=1), resume=True)


def test_a_new_learning_rate_takes_effect_on_resume_and_is_recorded(make_config, tmp_path):
    train(config(make_config, epochs=1))  # cosine over 1 epoch, lr 0.002
    run = train(config(make_config, epochs=3, optim={"lr": 0.0005}), resume=True)
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    # the lr the optimizer used in each resumed epoch: the new cosine schedule (base 0.0005, 3 epochs)
    for epoch in (1, 2):
        lrs = {r["lr/model"] for r in rows if r["epoch"] == epoch and "lr/model" in r}
        want = 0.0005 * (1 + math.cos(math.pi * epoch / 3)) / 2
        assert lrs and all(lr == pytest.approx(want, rel=1e-9) for lr in lrs), (epoch, lrs)
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["method"]["schedulers"]["model"]["base_lrs"] == [0.0005]
    assert ckpt["method"]["optimizers"]["model"]["param_groups"][0]["initial_lr"] == 0.0005
    assert ckpt["epoch"] == 3
    event = [r for r in rows if r.get("event") == "resume"]
    changed = {"optim.lr": {"from": 0.002, "to": 0.0005}, "trainer.epochs": {"from": 1, "to": 3}}
    assert event == [{**event[0], "epoch": 1, "changed": changed}]
    history = yaml.safe_load((run / "config_history.yaml").read_text())
    assert [h["changed"] for h in history] == [changed] and history[0]["resumed_at_epoch"] == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.0005


def test_a_resume_without_changes_changes_no_rate(make_config, tmp_path, monkeypatch):
    cfg = interrupted(make_config, monkeypatch, epochs=3, after=1)
    run = train(cfg, resume=True)
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any("event" in r for r in rows) and not (run / "config_history.yaml").exists()
    lrs = {r["lr/model"] for r in rows if r["epoch"] == 2 and "lr/model" in r}
    assert len(lrs) == 1 and lrs.pop() == pytest.approx(0.002 * (1 + math.cos(2 * math.pi / 3)) / 2)


def test_the_nan_stop_advice_works(make_config, tmp_path, monkeypatch, capsys):
    """"resume with --resume after lowering the learning rate", taken literally: a loss that blows up
    above lr 1e-3 stops the run; resumed with a lower optim.lr it finishes."""
    original = TeacherTraining.training_step

    def unstable(self, batch, step):
        if self.learning_rates()["model"] > 1e-3 and step >= 7:  # in epoch 2 (6 steps per epoch)
            with torch.no_grad():
                for p in self.eval_model().parameters():
                    p.fill_(float("nan"))
        return original(self, batch, step)

    monkeypatch.setattr(TeacherTraining, "training_step", unstable)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(make_config(trainer={**QUIET, "epochs": 3})))
    assert main(["train-teacher", str(tmp_path / "c.yaml")]) == 1
    err = capsys.readouterr().err
    assert "resume with --resume after lowering the learning rate, e.g. --resume optim.lr=0.0002" in err
    assert main(["train-teacher", str(tmp_path / "c.yaml"), "--resume", "optim.lr=0.0002"]) == 0
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["epochs"] == 3
    ckpt = load_checkpoint(tmp_path / "t" / "checkpoints" / "last.ckpt")
    assert ckpt["epoch"] == 3 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_cli_refusals_exit_2_naming_what_to_do(make_config, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(make_config(trainer={**QUIET, "epochs": 1})))
    assert main(["train-teacher", str(tmp_path / "c.yaml")]) == 0
    before = tree(tmp_path)
    capsys.readouterr()
    assert main(["train-teacher", str(tmp_path / "c.yaml")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train-teacher", str(tmp_path / "c.yaml"), "--resume", "model.name=lenet"]) == 2
    assert "model.name" in capsys.readouterr().err
    assert main(["train-teacher", str(tmp_path / "c.yaml"), "name=.."]) == 2
    assert "'..'" in capsys.readouterr().err
    assert tree(tmp_path) == before


# -- what a killed run leaves behind --------------------------------------------------------------
def test_a_torn_last_metrics_line_is_dropped_with_a_warning(make_config, tmp_path, monkeypatch):
    cfg = interrupted(make_config, monkeypatch)
    metrics = tmp_path / "t" / "metrics.jsonl"
    with open(metrics, "a") as fh:
        fh.write('{"epoch": 1, "step": 8, "train/lo')  # the process died mid-write
    with pytest.warns(RunDirWarning, match=r"metrics\.jsonl.*torn last line"):
        train(cfg, resume=True)
    rows = [json.loads(l) for l in metrics.read_text().splitlines()]  # every line parses
    assert max(r["epoch"] for r in rows) == 2


def test_a_bad_metrics_line_before_the_last_names_the_file_and_line(make_config, tmp_path, monkeypatch):
    cfg = interrupted(make_config, monkeypatch)
    metrics = tmp_path / "t" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(["{broken"] + lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl' line 1 is not a JSON object"):
        train(cfg, resume=True)


def test_stale_temporaries_are_removed_on_the_next_start(make_config, tmp_path, monkeypatch):
    cfg = interrupted(make_config, monkeypatch)
    run = tmp_path / "t"
    stale = [run / "checkpoints" / ".last.ckpt.k2j3h4.tmp", run / ".config.yaml.x8y9.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    (run / "notes.tmp").write_text("mine")  # not an atomic-write temporary: kept
    with warnings.catch_warnings():
        warnings.simplefilter("error", RunDirWarning)
        train(cfg, resume=True)
    assert not any(p.exists() for p in stale)
    assert (run / "notes.tmp").read_text() == "mine"


# -- DDP -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_under_ddp_rank_0_owns_the_directory_and_every_rank_follows_its_verdict(make_config, tmp_path):
    """Two CPU ranks (gloo): an existing run refuses both ranks (exit 2, no hang, files unchanged); a
    resume that changes trainer.devices from 1 to 2 runs on both, and one lock is taken and released."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(make_config(trainer={**QUIET, "epochs": 1})))
    assert main(["train-teacher", str(tmp_path / "c.yaml")]) == 0
    before = tree(tmp_path)
    cli = [sys.executable, "-m", "kdlab.cli", "train-teacher", str(tmp_path / "c.yaml"), "trainer.devices=2",
           "trainer.strategy=ddp"]
    refused = subprocess.run(cli, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "already holds a finished run" in refused.stderr
    assert tree(tmp_path) == before
    # where it runs may change on resume: one process before, two now
    resumed = subprocess.run(cli + ["--resume", "trainer.epochs=2"], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "t.lock").exists()
    rows = [json.loads(l) for l in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    events = [r for r in rows if r.get("event") == "resume"]  # written once: by rank 0 only
    assert len(events) == 1 and events[0]["changed"]["trainer.devices"] == {"from": 1, "to": 2}
    assert load_checkpoint(tmp_path / "t" / "checkpoints" / "last.ckpt")["epoch"] == 2


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno
    import os

    from kdlab.engine import checkpoint
    from kdlab.engine.checkpoint import atomic_write

    target = atomic_write(tmp_path / "last.ckpt", b"previous")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write(target, b"x" * 1000)
    msg = str(info.value)
    assert str(target) in msg and "1,000 bytes" in msg and "free some space" in msg
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_resume_of_a_finished_run_keeps_its_summary(tmp_path, capsys):
    """``--resume`` of a finished run with the same config has nothing to train: summary.json stays as the
    training wrote it (re-finishing it wrote a 0 s training time and no last validation accuracy), a
    missing report.md is written again, and a larger trainer.epochs still trains on."""
    from conftest import small_config
    from kdlab.runner import load_run_config, train

    def cfg(epochs):
        return load_run_config([small_config(tmp_path, name="fin", trainer={"epochs": epochs, "threads": 1})])

    run = train(cfg(1))
    summary = (run / "summary.json").read_bytes()
    (run / "report.md").unlink()  # as if stopped between summary.json and report.md
    assert train(cfg(1), resume=True) == run
    assert (run / "summary.json").read_bytes() == summary and (run / "report.md").is_file()
    assert "nothing to resume" in capsys.readouterr().err
    train(cfg(2), resume=True)
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2
