"""The same numbers before and after a refactor: six tiny two-epoch runs (and their teacher) end with
weights bit-identical to those stored in ``fixtures/identity_before.json``.

The fixture was computed once, before the per-player objective refactor, by the command and on the
commit it names (``fixtures/make_identity_fixture.py``, the configs there in that commit's format); the
configs below are the same runs in the current format. Every tensor of every player's state in
``last.ckpt`` is compared by the sha256 of its bytes where the torch build and the CPU are the fixture's
(``torch``, ``cpu``). Elsewhere float kernels may differ in their last bits (the same torch 2.14.1 build gives
other bits on an AMD EPYC with AVX2 than on the machine that made the fixture, which records no CPU), so the
test compares each tensor's float64 sum and sum of squares instead: to a relative 1e-5 with the fixture's torch
build (the differences seen are below 4e-7), 1e-4 with another.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import small_config
from fixtures.make_identity_fixture import cpu_name, digest, make_gen_teacher
from kdlab.runner import load_run_config, train

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "identity_before.json").read_text())
# the fixture's settings, set explicitly where a default changed since (issue 25: MosaicKD's generator and patch
# discriminator now default to the published code's PyTorch init and bias-free last conv, and an epoch of a
# synthesizer with real images to synth_every student steps per OOD batch)
TINY_GEN = {"generator": "mosaic", "generator_kwargs": {"ngf": 8, "init": "dcgan"}, "latent_dim": 16}
KL = {"kd": {"weight": 1.0, "temperature": 1.0}}
PATCH_GAN = {"weight": 1.0, "mode": "vanilla", "reduction": "patch_sum"}


def current_configs(tmp: Path, teacher: Path, gen_teacher: Path) -> dict:
    """The fixture's runs in the current config format (MosaicKD, DFAD and DAFL were methods of their own
    then; now each is ``distill`` with ``data.transfer: synth`` and its generator's terms)."""
    t = {"checkpoint": str(teacher)}
    two = {"epochs": 2}
    return {
        "distill-kd": small_config(tmp, name="kd", method="distill", teacher=t, model={"name": "mlp", "kwargs": {"hidden": [32]}},
                                   objective={"student": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 4.0}}},
                                   trainer={**two, "teacher_cache_exact": True}),  # the per-batch-size tables (issue 29)
        "mosaickd": small_config(tmp, name="mosaickd", method="distill", teacher=t, model={"name": "mlp", "kwargs": {"hidden": [16]}},
                                 data={"transfer": "synth", "synth_real": "mnist-digits", "transfer_n": 48, "batch_size": 16},
                                 objective={"student": {"ce": {"weight": 0.0}, **KL},
                                            "generator": {"align": {"weight": 1.0},
                                                          "entropy_balance": {"weight": 10.0, "log_base": "2"},
                                                          "adversarial": {"weight": 1.0, "mode": "kl"}, "gan": PATCH_GAN},
                                            "discriminator": {"gan": PATCH_GAN}},
                                 players={**TINY_GEN, "discriminator": "patch", "epoch_pass": "student",
                                          "disc_kwargs": {"ndf": 8, "init": "dcgan", "final_bias": True}}, trainer=two),
        "dfad": small_config(tmp, name="dfad", method="distill", teacher=t, model={"name": "mlp", "kwargs": {"hidden": [16]}},
                             data={"transfer": "synth", "steps_per_epoch": 4, "batch_size": 16},
                             objective={"student": {"ce": {"weight": 0.0}, "l1": {"weight": 1.0}},
                                        "generator": {"adversarial": {"weight": 1.0, "mode": "l1", "reduction": "mean"}}},
                             players=dict(TINY_GEN), trainer=two),
        "dafl": small_config(tmp, name="dafl", method="distill", teacher=t, model={"name": "mlp", "kwargs": {"hidden": [16]}},
                             data={"transfer": "synth", "steps_per_epoch": 4, "batch_size": 16},
                             objective={"student": {"ce": {"weight": 0.0}, **KL},
                                        "generator": {"one_hot": {"weight": 1.0}, "activation": {"weight": 0.1},
                                                      "entropy_balance": {"weight": 5.0, "log_base": "10"}}},
                             players={**TINY_GEN, "synth_every": 1}, trainer=two),
        "kdgan": small_config(tmp, name="kdgan", method="kdgan", teacher=t, model={"name": "mlp", "kwargs": {"hidden": [32]}},
                              players={"disc_model": "mlp", "disc_kwargs": {"hidden": [64, 64]},
                                       "teacher_lr": 1e-5},  # the former default (the fixture's)
                              trainer=two),
        "gan-compression-mse": {
            "name": "gs", "method": "gan-compression", "out_dir": str(tmp), "teacher": {"checkpoint": str(gen_teacher)},
            "data": {"val_size": 0, "transfer": "none", "steps_per_epoch": 3, "batch_size": 16, "max_test": 200},
            "model": {"name": "dcgan", "kwargs": {"d": 4}},
            "optim": {"name": "adam", "lr": 0.001, "betas": [0.5, 0.999], "weight_decay": 0.0, "scheduler": "none"},
            "trainer": {"epochs": 2, "progress": False, "tensorboard": False, "log_every_n_steps": 1},
            "eval": {"latency": False, "n_samples": 200, "kid_subset_size": 50, "kid_subsets": 2, "is_splits": 1,
                     "grid_n": 4}},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(FIXTURE["threads"])  # float sums depend on the thread count
    try:
        tmp = tmp_path_factory.mktemp("identity")
        teacher = train(load_run_config([small_config(tmp, name="teacher", trainer={"epochs": 2})]))
        out = {"teacher": digest(teacher)}
        for name, cfg in current_configs(tmp, teacher, make_gen_teacher(tmp)).items():
            out[name] = digest(train(load_run_config([cfg])))
        return out
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("run", sorted(FIXTURE["runs"]))
def test_weights_are_those_of_before_the_refactor(runs, run):
    before, after = FIXTURE["runs"][run], runs[run]
    same_torch = torch.__version__ == FIXTURE["torch"]
    same_build = same_torch and FIXTURE.get("cpu") == cpu_name()
    rel = 1e-5 if same_torch else 1e-4
    for player, tensors in before.items():
        assert player in after, f"{run}: player {player!r} is gone (players now: {sorted(after)})"
        for key, want in tensors.items():
            assert key in after[player], f"{run}: {player}.{key} is gone"
            got = after[player][key]
            if same_build:
                assert got["sha256"] == want["sha256"], (
                    f"{run}: {player}.{key} differs (sum {got['sum']!r} vs {want['sum']!r})")
            else:
                assert got["sum"] == pytest.approx(want["sum"], rel=rel, abs=1e-6), f"{run}: {player}.{key}"
                assert got["sumsq"] == pytest.approx(want["sumsq"], rel=rel, abs=1e-6), f"{run}: {player}.{key}"
