"""Fault injection: real ``kdlab distill`` runs SIGKILLed at random moments (inside checkpoint writes
too) and resumed until done end with weights bit-identical to an uninterrupted run, and every
checkpoint a killed run leaves behind loads. ``distill`` and the KDGAN game (Gumbel-softmax noise drawn
every step, three players with their own optimizers) are both checked."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import small_config
from faults import check_checkpoints, run_once, run_until_done, timed


@pytest.fixture(scope="module")
def random_teacher(tmp_path_factory) -> Path:
    """A small randomly initialised LeNet teacher (training it would only cost time: the weights only
    have to be fixed)."""
    from kdlab.engine import save_classifier
    from kdlab.models import build_model

    torch.manual_seed(0)
    net = build_model("lenet", num_classes=10, in_channels=1, image_size=28, channels=[4, 8], fc=32)
    return save_classifier(net, tmp_path_factory.mktemp("teacher") / "teacher.safetensors", data="fashion-mnist")


def assert_same_weights(got: Path, want: Path) -> None:
    """Every tensor bit-identical and the same metadata. (The files' bytes are not compared: safetensors
    writes its metadata map in a per-process hash order.)"""
    from safetensors import safe_open

    with safe_open(str(got), "pt") as g, safe_open(str(want), "pt") as w:
        assert g.metadata() == w.metadata()
        assert sorted(g.keys()) == sorted(w.keys())
        for k in w.keys():
            a, b = g.get_tensor(k), w.get_tensor(k)
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f"{got}: tensor {k} differs"


def _config(tmp_path: Path, teacher: Path, method: str, epochs: int) -> Path:
    """A run of a few short epochs (6 steps each), written as YAML; returns its path."""
    extra = {}
    if method == "kdgan":
        extra["players"] = {"disc_model": "mlp", "disc_kwargs": {"hidden": [32]}, "disc_init": "scratch"}
    cfg = small_config(tmp_path, name=method, method=method, teacher={"checkpoint": str(teacher)},
                       trainer={"epochs": epochs, "threads": 1}, eval={"latency": False, "noise_sigmas": [0.0]},
                       **extra)
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _killed_and_resumed(tmp_path: Path, teacher: Path, method: str, epochs: int, kills: int, seed: int):
    """(reference weights, resumed weights, attempts) of ``method`` run once without faults
    (in ``ref/``) and once with ``kills`` faults (in ``faulty/``)."""
    ref_dir, faulty_dir = tmp_path / "ref", tmp_path / "faulty"
    ref_dir.mkdir(), faulty_dir.mkdir()
    (rc, killed, out), secs = timed(run_once, ["distill", str(_config(ref_dir, teacher, method, epochs))])
    assert rc == 0 and not killed, out[-3000:]
    cfg = _config(faulty_dir, teacher, method, epochs)
    run = faulty_dir / method
    # writes: config.yaml, then per epoch best.ckpt (when better) and last.ckpt, then the exports
    attempts = run_until_done(["distill", str(cfg)], run, seed=seed, kills=kills, run_time_s=secs, epochs=epochs,
                              writes=2 * epochs + 2)
    # the faults did interrupt the training, not only the exports after it
    assert any(a.resumed and 0 < a.from_epoch < epochs for a in attempts), attempts
    return ref_dir / method / "student.safetensors", run / "student.safetensors", attempts


@pytest.mark.slow  # three starts of a real run: about 20-30 s on 2 cores
def test_kill_inside_a_checkpoint_write_then_resume_is_bit_identical(tmp_path, random_teacher):
    """The smallest case: killed between the temp write and the rename of the 4th
    atomic write (config.yaml, best.ckpt and last.ckpt of epoch 1, then epoch 2's first checkpoint),
    resumed from epoch 1's ``last.ckpt``, ends with the uninterrupted run's weights."""
    from kdlab.engine.checkpoint import load_checkpoint

    ref_dir, run_root = tmp_path / "ref", tmp_path / "faulty"
    ref_dir.mkdir(), run_root.mkdir()
    rc, _, out = run_once(["distill", str(_config(ref_dir, random_teacher, "distill", 3))])
    assert rc == 0, out[-3000:]
    cfg, run = _config(run_root, random_teacher, "distill", 3), run_root / "distill"
    rc, killed, _ = run_once(["distill", str(cfg)], ["--kill-at-write=4"])
    assert killed
    assert list((run / "checkpoints").glob(".*.ckpt.*.tmp"))  # the temp file was written, never renamed
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1
    check_checkpoints(run)
    rc, killed, out = run_once(["distill", str(cfg), "--resume"])
    assert rc == 0 and not killed, out[-3000:]
    assert_same_weights(run / "student.safetensors", ref_dir / "distill" / "student.safetensors")


@pytest.mark.slow
def test_distill_killed_at_random_moments_resumes_bit_identical(tmp_path, random_teacher):
    ref, got, attempts = _killed_and_resumed(tmp_path, random_teacher, "distill", epochs=5, kills=6, seed=11)
    print(*attempts, sep="\n")  # the faults this seed drew, shown with -s
    assert_same_weights(got, ref)


@pytest.mark.slow
def test_kdgan_killed_at_random_moments_resumes_bit_identical(tmp_path, random_teacher):
    """KDGAN draws Gumbel noise every step from the global RNG: a resume must restore that stream (and
    the three players' optimizers and the temperature schedule) exactly."""
    ref, got, attempts = _killed_and_resumed(tmp_path, random_teacher, "kdgan", epochs=5, kills=5, seed=5)
    print(*attempts, sep="\n")  # the faults this seed drew, shown with -s
    assert_same_weights(got, ref)
