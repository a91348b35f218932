"""Ctrl-C (SIGINT) during training: the run stops at the next step boundary (not inside a step), the
command prints one line naming the checkpoint and the resume command, and ``--resume`` then ends with
weights bit-identical to an uninterrupted run."""
from __future__ import annotations

import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from conftest import small_config
from kdlab.cli import interrupted_line
from kdlab.engine import Callback, TrainingInterrupted
from kdlab.runner import load_run_config, train


class CtrlC(Callback):
    """Sends SIGINT to this process at the end of the first step of epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.sent_at = epoch, None

    def on_step_end(self, view, batch, step, logs) -> None:
        if self.sent_at is None and view.epoch == self.epoch:
            self.sent_at = step
            os.kill(os.getpid(), signal.SIGINT)


def _cfg(tmp_path, out):
    return load_run_config([small_config(tmp_path / out, name="r", trainer={"epochs": 3, "threads": 1})])


def test_ctrl_c_stops_at_a_step_boundary_and_resume_is_bit_exact(tmp_path):
    ref = train(_cfg(tmp_path, "ref"))
    ctrl_c = CtrlC(epoch=1)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as info:
        train(_cfg(tmp_path, "cut"), callbacks=[ctrl_c])
    exc = info.value
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    assert exc.step == ctrl_c.sent_at and exc.epoch == 1  # stopped right after the step that saw the signal
    assert exc.last_checkpoint is not None and exc.last_checkpoint.name == "last.ckpt"
    line = interrupted_line(exc, "train-teacher", ["train-teacher", "cfg.yaml"])
    assert str(exc.last_checkpoint) in line and "`kdlab train-teacher cfg.yaml --resume`" in line
    got = train(_cfg(tmp_path, "cut"), resume=True)
    a, b = load_file(str(next(ref.glob("*.safetensors")))), load_file(str(next(got.glob("*.safetensors"))))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_in_the_first_epoch_says_there_is_nothing_to_resume(tmp_path):
    with pytest.raises(TrainingInterrupted) as info:
        train(_cfg(tmp_path, "first"), callbacks=[CtrlC(epoch=0)])
    assert info.value.last_checkpoint is None
    line = interrupted_line(info.value, "distill", ["distill", "c.yaml"])
    assert "nothing to resume" in line and "`kdlab distill c.yaml --overwrite`" in line


class Term(CtrlC):
    """Sends SIGTERM (what ``kill``, ``timeout`` and a scheduler's pre-emption send) instead of SIGINT."""

    def on_step_end(self, view, batch, step, logs) -> None:
        if self.sent_at is None and view.epoch == self.epoch:
            self.sent_at = step
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_stops_like_ctrl_c_and_resume_is_bit_exact(tmp_path, monkeypatch):
    from kdlab import cli

    ref = train(_cfg(tmp_path, "ref"))
    term = Term(epoch=1)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        train(_cfg(tmp_path, "cut"), callbacks=[term])
    exc = info.value
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    assert (exc.epoch, exc.step, exc.signal_name) == (1, term.sent_at, "SIGTERM")
    line = interrupted_line(exc, "train-teacher", ["train-teacher", "cfg.yaml"])
    assert "by SIGTERM" in line and "`kdlab train-teacher cfg.yaml --resume`" in line
    got = train(_cfg(tmp_path, "cut"), resume=True)
    a, b = load_file(str(next(ref.glob("*.safetensors")))), load_file(str(next(got.glob("*.safetensors"))))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the CLI's exit code is 128 + SIGTERM's number, as a shell reports a process that SIGTERM ended
    def stopped(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_list", stopped)
    assert cli.main(["list"]) == 143


@pytest.mark.parametrize("command,argv,says", [
    ("compare", ["compare", "demo", "--out-dir", "x"], "run `kdlab compare demo --out-dir x` again"),
    ("export", ["export", "runs/r"], "interrupted: kdlab export stopped"),
    ("evaluate", ["evaluate", "runs/r"], "interrupted: kdlab evaluate stopped"),
])
def test_ctrl_c_outside_training_is_one_line(command, argv, says, monkeypatch, capsys):
    """Ctrl-C in a command that does not train (or trains a grid of runs): exit 130, one line, no traceback."""
    from kdlab import cli

    def ctrl_c(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"cmd_{command}", ctrl_c)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert says in " ".join(err.split()) and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
