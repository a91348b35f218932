"""Every registered method runs under DDP (2 CPU processes, gloo) and keeps every player, and its
optimizer, identical on every rank (``tests/test_ddp.py`` covers distill, kdgan and gan-compression
with their loss curves and the NaN agreement; this file covers the remaining methods).

Each run is one or two short epochs; every rank dumps a SHA-256 of each player's and optimizer's
state at the end of ``fit`` (``tests/faults.py --dump-state``), and the two ranks' dumps must be equal.
"""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import small_config
from faults import run_once

pytestmark = pytest.mark.slow  # 2-process DDP runs, 15-40 s each on 2 cores

DDP = {"devices": 2, "strategy": "ddp", "threads": 1, "epochs": 2}
GEN = {"generator": "mosaic", "generator_kwargs": {"ngf": 8}, "latent_dim": 16}
DATAFREE = {"transfer": "synth", "steps_per_epoch": 3, "batch_size": 8}
KL = {"ce": {"weight": 0.0}, "kd": {"weight": 1.0, "temperature": 1.0}}
PATCH = {"weight": 1.0, "reduction": "patch_sum"}
SMALL_VGG = {"name": "vgg4", "kwargs": {"width": 0.125}}


def _trained(hashes: dict) -> dict:
    """The parameters and optimizer states (BatchNorm running statistics are each rank's own under DDP)."""
    return {k: v for k, v in hashes.items() if not k.startswith("buffers/")}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict:
    """Random saved classifiers: a LeNet, a VGG-4 with BatchNorm (DeepInversion) and a 5-class VGG-4 (LwF)."""
    from kdlab.engine import save_classifier
    from kdlab.models import build_model

    tmp = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(0)
    return {
        "lenet": str(save_classifier(build_model("lenet", 10, 1, 28, channels=[4, 8], fc=32), tmp / "lenet.safetensors",
                                     data="fashion-mnist")),
        "vgg": str(save_classifier(build_model("vgg4", 10, 1, 28, width=0.125), tmp / "vgg.safetensors",
                                   data="fashion-mnist")),
        "vgg5": str(save_classifier(build_model("vgg4", 5, 1, 28, width=0.125), tmp / "vgg5.safetensors",
                                    data="fashion-mnist")),
    }


def _cases(t: dict) -> dict:
    """method -> (CLI command, config sections)."""
    student = {"model": {"name": "mlp", "kwargs": {"hidden": [16]}}}
    return {
        "teacher": ("train-teacher", {"data": {"batch_size": 25}}),
        "jacobian": ("distill", {"teacher": {"checkpoint": t["lenet"]}, "data": {"batch_size": 25},
                                 "objective": {"student": {"ce": {"weight": 1.0}, "jacobian": {"weight": 1.0}}}}),
        "codistill": ("distill", {"data": {"batch_size": 25}, "players": {"peer": "copy"},
                                  "objective": {p: {"codistill": {"temperature": 2.0}} for p in ("student", "peer")}}),
        "lwf": ("distill", {"teacher": {"checkpoint": t["vgg5"]}, "model": SMALL_VGG,
                            "data": {"classes": [5, 6, 7, 8, 9], "batch_size": 25},
                            "objective": {"student": {"ce": {"weight": 1.0}, "logits": {"weight": 1.0}}}}),
        # the synthesizer's recipes (method distill, data.transfer: synth)
        "mosaickd": ("distill", {**student, "method": "distill", "teacher": {"checkpoint": t["lenet"]},
                                 "data": {"transfer": "synth", "synth_real": "mnist-digits", "transfer_n": 48, "batch_size": 8},
                                 "players": {**GEN, "discriminator": "patch", "disc_kwargs": {"ndf": 8}},
                                 "objective": {"student": KL, "generator": {"align": {}, "adversarial": {}, "gan": PATCH,
                                                                            "entropy_balance": {"weight": 10.0, "log_base": "2"}},
                                               "discriminator": {"gan": PATCH}}}),
        "dfad": ("distill", {**student, "method": "distill", "teacher": {"checkpoint": t["lenet"]}, "data": DATAFREE,
                             "players": dict(GEN), "objective": {"student": {"ce": {"weight": 0.0}, "l1": {"weight": 1.0}},
                                                                 "generator": {"adversarial": {"mode": "l1"}}}}),
        "dafl": ("distill", {**student, "method": "distill", "teacher": {"checkpoint": t["lenet"]}, "data": DATAFREE,
                             "players": {**GEN, "synth_every": 1},
                             "objective": {"student": KL, "generator": {"one_hot": {}, "activation": {"weight": 0.1},
                                                                        "entropy_balance": {"weight": 5.0, "log_base": "10"}}}}),
        "deepinversion": ("distill", {**student, "method": "distill", "teacher": {"checkpoint": t["vgg"]}, "data": DATAFREE,
                                      "players": dict(GEN),
                                      "objective": {"student": KL, "generator": {"bn_prior": {}, "one_hot": {}, "adversarial": {},
                                                                                 "entropy_balance": {"weight": 20.0}}}}),
        "gan": ("train-gan", {"model": {"name": "dcgan", "kwargs": {"d": 8, "latent_dim": 16}},
                              "data": {"val_size": 0, "n_per_class": 8, "batch_size": 16},
                              "players": {"disc": "dcgan", "disc_d": 8}, "eval": {"n_samples": 64, "kid_subset_size": 32},
                              "optim": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999], "weight_decay": 0.0,
                                        "scheduler": "none"}}),
    }


@pytest.mark.parametrize("method", ["teacher", "jacobian", "codistill", "lwf", "mosaickd", "dfad", "dafl",
                                    "deepinversion", "gan"])
def test_every_method_runs_under_ddp_with_identical_players_on_every_rank(tmp_path, teachers, method):
    command, sections = _cases(teachers)[method]
    sections = dict(sections)
    cfg = small_config(tmp_path, name=method, method=sections.pop("method", method), **sections)
    cfg["trainer"] = {**cfg["trainer"], **DDP}
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    dump = tmp_path / "hashes"
    rc, _, out = run_once([command, str(path)], ["--dump-state", str(dump)], timeout=400)
    assert rc == 0, out[-3000:]
    assert "MEMBER: 2/2" in out
    h0, h1 = (json.loads((dump / f"state-rank{r}.json").read_text()) for r in (0, 1))
    assert any(k.startswith("players/") for k in h0), h0
    assert _trained(h0) == _trained(h1)
    assert (tmp_path / method / "summary.json").is_file()


def test_each_rank_draws_its_own_random_numbers_and_keeps_them_in_last_ckpt(tmp_path, teachers):
    """A data-free student samples its generator's z on each rank: the ranks' generator states differ
    (else half of every DDP batch would repeat the other half), and last.ckpt keeps one state per rank."""
    from kdlab.engine.checkpoint import load_checkpoint

    command, sections = _cases(teachers)["dfad"]
    cfg = small_config(tmp_path, name="streams", **sections)
    cfg["trainer"] = {**cfg["trainer"], **DDP}
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc, _, out = run_once([command, str(path)], timeout=400)
    assert rc == 0, out[-3000:]
    ranks = load_checkpoint(tmp_path / "streams" / "checkpoints" / "last.ckpt")["rng_ranks"]
    assert ranks.shape[0] == 2 and not torch.equal(ranks[0], ranks[1])


def test_a_resumed_ddp_run_continues_each_ranks_stream(tmp_path, teachers):
    """the dfad recipe on 2 ranks for 2 epochs, once straight through and once stopped after epoch 1 and resumed:
    the same generator and student after epoch 2 (rank r restores its own generator state from last.ckpt)."""
    from kdlab.engine.checkpoint import load_checkpoint

    command, sections = _cases(teachers)["dfad"]
    runs = {}
    for name, plan in (("straight", [2]), ("resumed", [1, 2])):
        for i, epochs in enumerate(plan):
            cfg = small_config(tmp_path, name=name, **sections)
            cfg["trainer"] = {**cfg["trainer"], **DDP, "epochs": epochs}
            path = tmp_path / f"{name}-{i}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            rc, _, out = run_once([command, str(path)] + (["--resume"] if i else []), timeout=400)
            assert rc == 0, out[-3000:]
        last = load_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt")
        assert last["epoch"] == 2
        runs[name] = last["method"]["players"]
    a, b = runs["straight"], runs["resumed"]
    assert set(a) == set(b) >= {"student", "generator"}
    for player in a:
        assert all(torch.equal(a[player][k], b[player][k]) for k in a[player]), player
