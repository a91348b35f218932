"""Distributed runs proven on 2 CPU processes (gloo): a ``distill`` run over 2 ranks equals one process
with the same global batch, the multi-player games keep every player identical on every rank, a NaN on
one rank stops all of them, and only rank 0 writes the run directory.

``data.batch_size`` is per rank (each rank's :class:`kdlab.data.SeededSampler` shard is cut into batches
of that size), so a global batch B is ``batch_size = B / 2`` on 2 ranks. Rank r takes positions
r, r + 2, ... of the epoch's one permutation, so the two rank batches of step k together are exactly the
single process's batch k, and DDP's gradient average of two batch means equals the mean over the
global batch: the runs differ only by floating-point summation order.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import gan_student_config, small_config
from faults import run_once

pytestmark = pytest.mark.slow  # every test starts 2-process DDP runs: 15-40 s each on 2 cores

DDP = {"devices": 2, "strategy": "ddp"}


@pytest.fixture(scope="module")
def random_teacher(tmp_path_factory) -> Path:
    """A small randomly initialised LeNet teacher (only its weights have to be fixed)."""
    from kdlab.engine import save_classifier
    from kdlab.models import build_model

    torch.manual_seed(0)
    net = build_model("lenet", num_classes=10, in_channels=1, image_size=28, channels=[4, 8], fc=32)
    return save_classifier(net, tmp_path_factory.mktemp("teacher") / "teacher.safetensors", data="fashion-mnist")


def _trained(hashes: dict) -> dict:
    """The parameters and optimizer states (BatchNorm running statistics are each rank's own under DDP)."""
    return {k: v for k, v in hashes.items() if not k.startswith("buffers/")}


def _write(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _rows(run: Path) -> list:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _distill(tmp_path: Path, teacher: Path, name: str, batch: int, **trainer) -> dict:
    # 300 images: 6 global batches of 50 per epoch, the same count as 2 ranks x 6 batches of 25
    return small_config(tmp_path, name=name, method="distill", teacher={"checkpoint": str(teacher)},
                        data={"batch_size": batch}, trainer={"epochs": 3, "threads": 1, "log_every_n_steps": 1, **trainer},
                        eval={"latency": False, "noise_sigmas": [0.0]})


def test_distill_on_two_ranks_equals_one_process_with_the_same_global_batch(tmp_path, random_teacher):
    """Tolerances: every logged training loss (mean over ranks) within 1e-4 absolute of the single
    process's, validation accuracy per epoch and the final test accuracy within 0.5 points (1 of 200
    validation images is 0.5 points; in practice they agree exactly); and rank 1 wrote nothing in the run
    directory."""
    one = _distill(tmp_path, random_teacher, "one", batch=50)
    two = _distill(tmp_path, random_teacher, "two", batch=25, **DDP)
    rc, _, out = run_once(["distill", _write(tmp_path, one)])
    assert rc == 0, out[-3000:]
    audit = tmp_path / "audit"
    rc, _, out = run_once(["distill", _write(tmp_path, two)], ["--audit-writes", str(tmp_path / "two"), str(audit)])
    assert rc == 0, out[-3000:]
    assert "MEMBER: 2/2" in out

    r1, r2 = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    loss1 = [(r["step"], r["train/loss"]) for r in r1 if "train/loss" in r]
    loss2 = [(r["step"], r["train/loss"]) for r in r2 if "train/loss" in r]
    assert [s for s, _ in loss1] == [s for s, _ in loss2] == list(range(1, 19))  # 3 epochs x 6 steps, both
    worst = max(abs(a - b) for (_, a), (_, b) in zip(loss1, loss2))
    assert worst < 1e-4, (worst, loss1, loss2)
    assert loss1[-1][1] < loss1[0][1] - 0.1  # the curve being compared does move
    acc1 = [r["val/acc"] for r in r1 if "val/acc" in r]
    acc2 = [r["val/acc"] for r in r2 if "val/acc" in r]
    assert len(acc1) == len(acc2) == 3 and max(abs(a - b) for a, b in zip(acc1, acc2)) <= 0.5, (acc1, acc2)
    s1, s2 = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("one", "two"))
    assert abs(s1["test_acc_best"] - s2["test_acc_best"]) <= 0.5, (s1["test_acc_best"], s2["test_acc_best"])

    writes0 = (audit / "writes-rank0.txt").read_text().splitlines()
    writes1 = (audit / "writes-rank1.txt").read_text().splitlines()
    assert any("last.ckpt" in w for w in writes0)  # the audit sees the run's writes
    assert writes1 == [], writes1[:10]


def _players_hashes(tmp_path: Path, args: list) -> tuple:
    dump = tmp_path / "hashes"
    rc, _, out = run_once(args, ["--dump-state", str(dump)])
    assert rc == 0, out[-3000:]
    return tuple(json.loads((dump / f"state-rank{r}.json").read_text()) for r in (0, 1))


def test_kdgan_players_identical_on_every_rank(tmp_path, random_teacher):
    """Classifier, teacher and discriminator (each with its own optimizer) step identically on both ranks."""
    cfg = small_config(tmp_path, name="kdgan", method="kdgan", teacher={"checkpoint": str(random_teacher)},
                       players={"disc_model": "mlp", "disc_kwargs": {"hidden": [32]}, "disc_init": "scratch"},
                       data={"batch_size": 25}, trainer={"epochs": 2, "threads": 1, **DDP},
                       eval={"latency": False, "noise_sigmas": [0.0]})
    h0, h1 = _players_hashes(tmp_path, ["distill", _write(tmp_path, cfg)])
    assert {"players/classifier", "players/teacher", "players/discriminator"} <= set(h0)
    assert {k for k in h0 if k.startswith("optimizers/")} >= {"optimizers/classifier", "optimizers/discriminator"}
    assert _trained(h0) == _trained(h1)


def test_gan_compression_players_identical_on_every_rank(tmp_path, gen_teacher):
    """Student generator and discriminator of a joint-loss (MSE + adversarial) compression, on both ranks."""
    cfg = gan_student_config(tmp_path, gen_teacher, name="gc",
                             data={"transfer": "train", "n_per_class": 10},  # the discriminator's real images
                             objective={"student": {"mse": {"weight": 0.5}, "gan": {"weight": 0.5}}},
                             trainer={"epochs": 2, "threads": 1, "limit_train_batches": 3, **DDP})
    h0, h1 = _players_hashes(tmp_path, ["compress-gan", _write(tmp_path, cfg)])
    assert len([k for k in h0 if k.startswith("players/")]) >= 2, h0  # the student and a discriminator
    assert _trained(h0) == _trained(h1)


def test_nan_on_one_rank_stops_every_rank_and_keeps_last_checkpoint(tmp_path, random_teacher):
    """Rank 1 alone reports a NaN loss at step 8 (epoch 2): both ranks stop there with the NaN message
    (none hangs in the next all-reduce or dies of a broken connection), exit 1, and ``last.ckpt`` holds
    epoch 1, finite."""
    from kdlab.engine.checkpoint import load_checkpoint

    cfg = _distill(tmp_path, random_teacher, "nan", batch=25, **DDP)
    rc, killed, out = run_once(["distill", _write(tmp_path, cfg)], ["--nan-rank=1", "--nan-step=8"], timeout=300)
    assert not killed and rc == 1, out[-3000:]
    assert out.count("non-finite loss at epoch 2, step 8") == 2, out[-3000:]  # printed by each rank
    last = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert not (tmp_path / "nan" / "student.safetensors").exists()
