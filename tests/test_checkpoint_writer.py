"""The background checkpoint writer (``kdlab.engine.writer``): what it writes is the state as it was when
submitted, shared tensors stay shared, and a failed write is not lost."""
from __future__ import annotations

import errno
import io

import pytest
import torch

from kdlab.engine import writer as writer_mod
from kdlab.engine.checkpoint import load_checkpoint
from kdlab.engine.writer import CheckpointWriter, snapshot


def test_the_file_holds_the_state_as_submitted_not_as_it_became(tmp_path):
    w = torch.arange(6.0).reshape(2, 3)
    with CheckpointWriter() as writer:
        writer.submit({"model": {"w": w}, "epoch": 1}, tmp_path / "last.ckpt")
        w.add_(100.0)  # training goes on at once
    loaded = load_checkpoint(tmp_path / "last.ckpt")
    assert torch.equal(loaded["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert loaded["epoch"] == 1


def test_a_tensor_held_twice_is_copied_once_and_saved_once():
    w = torch.randn(256, 256)
    state = {"model": {"w": w.detach()}, "method": {"players": {"student": {"w": w}}}}
    copied = snapshot(state)
    assert copied["model"]["w"] is copied["method"]["players"]["student"]["w"]
    assert copied["model"]["w"].data_ptr() != w.data_ptr()
    # torch.save writes one storage: the file is the size of one copy of w (plus a small header)
    buf = io.BytesIO()
    torch.save(copied, buf)
    assert len(buf.getvalue()) < 1.2 * w.numel() * 4
    # a view of other elements of the same storage is another tensor
    other = snapshot({"a": w[0], "b": w[1]})
    assert torch.equal(other["a"], w[0]) and torch.equal(other["b"], w[1])


def test_a_failed_write_is_raised_by_wait_and_names_the_file(tmp_path, monkeypatch):
    def full_disk(path, data):
        raise OSError(errno.ENOSPC, f"could not write {str(path)!r}: No space left on device")

    monkeypatch.setattr("kdlab.engine.checkpoint.atomic_write", full_disk)
    writer = CheckpointWriter()
    writer.submit({"x": torch.zeros(2)}, tmp_path / "last.ckpt")
    with pytest.raises(OSError, match="last.ckpt"):
        writer.wait()
    writer.close()


def test_leaving_with_an_exception_keeps_it_and_warns_of_the_write_error(tmp_path, monkeypatch):
    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "no space")

    monkeypatch.setattr("kdlab.engine.checkpoint.atomic_write", full_disk)
    with pytest.warns(RuntimeWarning, match="could not be written"):
        with pytest.raises(KeyError):
            with CheckpointWriter() as writer:
                writer.submit({"x": torch.zeros(2)}, tmp_path / "last.ckpt")
                raise KeyError("the run's own error")


def test_files_are_written_in_submission_order(tmp_path, monkeypatch):
    order = []
    real = writer_mod.save_checkpoint

    def noted(state, path):
        order.append(state["n"])
        return real(state, path)

    monkeypatch.setattr(writer_mod, "save_checkpoint", noted)
    with CheckpointWriter() as writer:
        for n in range(5):
            writer.submit({"n": n}, tmp_path / "last.ckpt")
    assert order == [0, 1, 2, 3, 4]
    assert load_checkpoint(tmp_path / "last.ckpt")["n"] == 4


def test_a_run_whose_epoch_end_write_fails_stops_with_that_error(make_config, monkeypatch):
    """The write runs while the next epoch trains; its failure stops the run at the next epoch end, naming
    the file, which holds the epoch before."""
    from kdlab.engine import checkpoint
    from kdlab.runner import load_run_config, train

    real, calls = checkpoint.atomic_write, []

    def fails_second_last(path, data):
        if path.name == "last.ckpt":
            calls.append(path)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, f"could not write {str(path)!r}: No space left on device")
        return real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", fails_second_last)
    cfg = load_run_config([make_config(name="full")])
    with pytest.raises(OSError, match="last.ckpt"):
        train(cfg)
    assert load_checkpoint(f"{cfg.out_dir}/full/checkpoints/last.ckpt")["epoch"] == 1
