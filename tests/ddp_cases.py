"""The 2-process (gloo) cases shared by tests/test_ddp_methods.py (every player identical on every rank) and
tests/test_ddp_equivalence.py (2 ranks equal 1 process with the same global batch): one small config per
method or recipe, and the random teachers they distil."""
from __future__ import annotations

import pytest
import torch

DDP = {"devices": 2, "strategy": "ddp", "threads": 1, "epochs": 2}
GEN = {"generator": "mosaic", "generator_kwargs": {"ngf": 8}, "latent_dim": 16}
DATAFREE = {"transfer": "synth", "steps_per_epoch": 3, "batch_size": 8}
KL = {"ce": {"weight": 0.0}, "kd": {"weight": 1.0, "temperature": 1.0}}
PATCH = {"weight": 1.0, "reduction": "patch_sum"}
SMALL_VGG = {"name": "vgg4", "kwargs": {"width": 0.125}}


def trained(hashes: dict) -> dict:
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


def cases(t: dict) -> dict:
    """method -> (CLI command, config sections); ``data.batch_size`` is the per-rank batch of a 2-rank run."""
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


