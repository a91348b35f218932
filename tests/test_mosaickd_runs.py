"""MosaicKD end to end: a generator that turns NaN stops the run and keeps the last good checkpoint; on a
real teacher, MosaicKD with MNIST digits as out-of-domain data ends far above KD on the same digits at
the same number of student updates and seeds (slow)."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import small_config
from kdlab.engine import NonFiniteLossError, load_checkpoint
from kdlab.methods import METHODS
from kdlab.runner import load_run_config, train

TINY_GEN = {"generator": "mosaic", "generator_kwargs": {"ngf": 8}, "latent_dim": 16, "disc_kwargs": {"ndf": 8}}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mk_teacher")
    return train(load_run_config([small_config(tmp, name="teacher", trainer={"epochs": 1})]))


@pytest.mark.parametrize("recipe", ["mosaickd", "dfad"])
def test_nan_generator_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, teacher, monkeypatch, recipe):
    from kdlab.cli import resolve_config

    cls = METHODS.get("distill")
    original = cls.step

    # 3 batches per epoch; MosaicKD's epoch runs synth_every (5) student steps per OOD batch (kd_mosaic.py)
    per_epoch = 15 if recipe == "mosaickd" else 3

    def poisoned(self, batch, step):
        if step == per_epoch + 1:  # second epoch: the generator's weights turn NaN
            with torch.no_grad():
                next(self.players["generator"].parameters()).fill_(float("nan"))
        return original(self, batch, step)

    monkeypatch.setattr(cls, "step", poisoned)
    data = ({"synth_real": "mnist-digits", "transfer_n": 48} if recipe == "mosaickd" else {"steps_per_epoch": 3})
    players = {k: v for k, v in TINY_GEN.items() if recipe == "mosaickd" or not k.startswith("disc")}
    cfg = load_run_config([resolve_config(recipe), small_config(
        tmp_path, name="nan", method="distill", teacher={"checkpoint": str(teacher)},
        model={"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 16}},
        data={**data, "batch_size": 16, "val_size": 200}, players=players, trainer={"epochs": 3})])
    with pytest.raises(NonFiniteLossError, match="epoch 2"):
        train(cfg)
    last = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1  # epochs completed
    for name in ("student", "generator"):
        assert all(bool(torch.isfinite(v).all()) for v in last["method"]["players"][name].values()
                   if v.is_floating_point()), name


@pytest.mark.slow
def test_mosaickd_beats_kd_on_the_same_ood_digits(tmp_path):
    """LeNet-style teacher on Fashion-MNIST (1 epoch on 1,000 per class), small student, 2,000 MNIST digits;
    4 epochs of 16 updates each for both students: MosaicKD's best test accuracy, averaged over 2 seeds, is far
    above KD's."""
    common = {"data": {"val_size": 500, "max_test": 1000, "batch_size": 128, "eval_batch_size": 500},
              "eval": {"latency": False, "noise_sigmas": [0.0]}}
    teacher = train(load_run_config([small_config(
        tmp_path, name="t", model={"name": "lenet", "kwargs": {"channels": [16, 32], "fc": 256}},
        data={**common["data"], "n_per_class": 1000}, trainer={"epochs": 1}, eval=common["eval"])]))
    student = {"model": {"name": "lenet", "kwargs": {"channels": [8, 16], "fc": 64}},
               "optim": {"name": "adam", "lr": 0.001, "weight_decay": 0.0, "scheduler": "cosine"},
               "trainer": {"epochs": 4}, "eval": common["eval"], "teacher": {"checkpoint": str(teacher)}}
    ood = {**common["data"], "transfer": "mnist-digits", "transfer_n": 2000}
    from kdlab.cli import resolve_config

    kl = {"ce": {"weight": 0.0}, "kd": {"weight": 1.0, "temperature": 1.0}}
    acc = {}
    for method in ("distill", "mosaickd"):  # KD on the digits, and the mosaickd recipe on the same digits
        acc[method] = []
        for seed in (0, 1):
            recipe = [resolve_config("mosaickd")] if method == "mosaickd" else []
            data = {**ood, "transfer": "synth", "synth_real": "mnist-digits"} if method == "mosaickd" else ood
            # the same student updates: an epoch = one student pass over the digits for both
            extra = {"players": {"epoch_pass": "student"}} if method == "mosaickd" else {}
            run = train(load_run_config(recipe + [small_config(tmp_path, name=f"{method}-{seed}", method="distill",
                                                               seed=seed, data=data, objective={"student": kl},
                                                               **student, **extra)]))
            acc[method].append(json.loads((run / "summary.json").read_text())["test_acc_best"])
    mean = {k: sum(v) / len(v) for k, v in acc.items()}
    assert mean["mosaickd"] > mean["distill"] + 10, acc
