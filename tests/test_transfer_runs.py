"""Transfer sources end to end: a student distilled from out-of-domain data only (real MNIST digits for a
Fashion-MNIST teacher), a data-free run whose batches are produced inside the method, and the errors a
user gets before training for a bad transfer source or the wrong command."""
from __future__ import annotations

import json

import pytest
import torch

from kdlab.cli import main
from kdlab.config import ConfigError
from kdlab.engine.generators import save_generator
from kdlab.models import build_generator
from kdlab.runner import load_run_config, train
from conftest import gan_student_config

TEACHER = dict(name="teacher", data={"n_per_class": 200, "batch_size": 100, "max_test": 2000},
               model={"name": "mlp", "kwargs": {"hidden": [256]}}, trainer={"epochs": 4})
STUDENT = dict(method="distill", model={"name": "mlp", "kwargs": {"hidden": [64]}},
               optim={"name": "adam", "lr": 0.003, "weight_decay": 0.0, "scheduler": "none"},
               trainer={"epochs": 8}, eval={"latency": False, "noise_sigmas": [0.0]})


@pytest.mark.timeout(600)
def test_out_of_domain_student_sees_no_fashion_images_and_lands_far_below(tmp_path, make_config):
    teacher = train(load_run_config([make_config(**TEACHER)]))
    t_acc = json.loads((teacher / "summary.json").read_text())["test_acc_best"]
    kd = {"student": {"ce": {"weight": 0.0}, "kd": {"weight": 1.0, "temperature": 4.0}}}
    common = dict(STUDENT, teacher={"checkpoint": str(teacher)}, objective=kd)
    # the same budget: 1,000 transfer images, the same steps and schedule
    ind = train(load_run_config([make_config(name="in-domain", data={"n_per_class": 100, "max_test": 2000}, **common)]))
    ood = train(load_run_config([make_config(
        name="ood", data={"max_test": 2000, "transfer": "mnist-digits", "transfer_n": 1000},
        **common)]))
    s_ind, s_ood = (json.loads((r / "summary.json").read_text()) for r in (ind, ood))
    # the OOD student trained on digits only, and is tested on the Fashion-MNIST test split
    assert s_ood["data"]["transfer"] == "mnist-digits" and s_ood["data"]["n_transfer"] == 1000
    assert s_ood["data"]["name"] == "fashion-mnist" and s_ood["data"]["n_test"] == 2000
    assert t_acc > 70
    assert s_ind["test_acc_best"] > 60
    print("teacher", t_acc, "in-domain", s_ind["test_acc_best"], "ood", s_ood["test_acc_best"])
    assert 15 < s_ood["test_acc_best"] < s_ind["test_acc_best"] - 15, (s_ood["test_acc_best"], s_ind["test_acc_best"])


def test_transfer_set_never_holds_fashion_images(make_config):
    from kdlab.runner import datasets_for

    cfg = load_run_config([make_config(method="distill", data={"transfer": "mnist-digits"})])
    data = datasets_for(cfg)
    fashion = {bytes(img.numpy().tobytes()) for img in data.train.images}
    assert not any(bytes(img.numpy().tobytes()) in fashion for img in data.transfer.images)
    assert data.transfer.labelled is False and len(data.transfer) == 4000


def test_data_free_run_drives_a_method_that_makes_its_batches(tmp_path):
    torch.manual_seed(0)
    teacher = save_generator(build_generator("dcgan", 1, 28, d=8, latent_dim=16), tmp_path / "tg.safetensors",
                             data="fashion-mnist")
    cfg = load_run_config([gan_student_config(tmp_path, teacher, name="free", data={"steps_per_epoch": 25, "batch_size": 32},
                                              optim={"lr": 0.002}, trainer={"epochs": 2})])
    run = train(cfg)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "train/mse" in x]
    assert len(rows) == 50  # 25 steps per epoch from config, 2 epochs
    first, last = sum(r["train/mse"] for r in rows[:5]) / 5, sum(r["train/mse"] for r in rows[-5:]) / 5
    assert last < 0.7 * first  # the student learns from the teacher with no data at all
    assert json.loads((run / "summary.json").read_text())["data"]["n_transfer"] == 25 * 32


def test_bad_transfer_sources_are_clear_errors_before_training(tmp_path, make_config):
    with pytest.raises(ValueError, match=r"data.transfer = 'mnist-digit' is not a transfer source; accepted: 'train'.*'none'.*mnist-digits"):
        train(load_run_config([make_config(method="distill", data={"transfer": "mnist-digit"})]))
    # data-free with a method that needs transfer data
    with pytest.raises(ConfigError, match=r"data.transfer = 'none'.*'distill'.*data-free: .*gan-compression"):
        train(load_run_config([make_config(method="distill", data={"transfer": "none", "steps_per_epoch": 3})]))
    # a transfer set the teacher cannot take: RGB 32x32 patches for a 28x28 grey teacher
    with pytest.raises(ValueError, match=r"\(3, 32, 32\).*\(1, 28, 28\).*data.transfer_channels=1.*data.transfer_size=28"):
        train(load_run_config([make_config(method="distill", data={"transfer": "skimage-patches"})]))
    assert not (tmp_path / "t").exists()  # nothing was written


def test_commands_dispatch_on_the_methods_kind(tmp_path, capsys):
    assert main(["distill", "gan_student_mse", f"out_dir={tmp_path}"]) == 2
    assert "`kdlab compress-gan`" in capsys.readouterr().err
    assert main(["compress-gan", "demo_kd", f"out_dir={tmp_path}"]) == 2
    assert "`kdlab distill`" in capsys.readouterr().err
    assert main(["train-teacher", "demo_kd", f"out_dir={tmp_path}"]) == 2
    assert "`kdlab distill`" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
