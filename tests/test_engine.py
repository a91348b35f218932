"""Engine: resume equals an uninterrupted run, NaN stop keeps the last good checkpoint,
atomic writes, config validation."""
from __future__ import annotations

import math
import os

import pytest
import torch

from kdlab.config import ConfigError
from kdlab.engine import NonFiniteLossError, atomic_write, load_checkpoint, load_classifier
from kdlab.methods import TeacherTraining
from kdlab.runner import load_run_config, train


def _weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["model"]


def test_resume_gives_the_same_final_weights(make_config, monkeypatch):
    # dropout exercises the RNG state that the checkpoint must carry across the stop
    common = dict(model={"name": "mlp", "kwargs": {"hidden": [64, 64], "dropout": 0.3}})
    straight = train(load_run_config([make_config(name="straight", **common)]))

    original = TeacherTraining.on_epoch_end

    def crash_after_second_epoch(self, epoch):
        original(self, epoch)
        if epoch == 1:
            raise KeyboardInterrupt  # the machine stops before epoch 2's checkpoint is written

    monkeypatch.setattr(TeacherTraining, "on_epoch_end", crash_after_second_epoch)
    cfg = load_run_config([make_config(name="resumed", **common)])
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert load_checkpoint(cfg.out_dir + "/resumed/checkpoints/last.ckpt")["epoch"] == 1
    monkeypatch.setattr(TeacherTraining, "on_epoch_end", original)
    resumed = train(cfg, resume=True)

    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the uninterrupted run's metrics log is reproduced, not duplicated
    lines = lambda d: [l for l in (d / "metrics.jsonl").read_text().splitlines() if '"val/acc"' in l]
    assert len(lines(resumed)) == len(lines(straight)) == 3
    sa = load_classifier(straight / "teacher.safetensors").state_dict()
    sb = load_classifier(resumed / "teacher.safetensors").state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_last_ckpt_holds_the_run_config_yaml_that_resume_compares(make_config):
    """The runner hands its serialised config to the Trainer (one to_yaml per run): last.ckpt's "config" must
    be config.yaml's text and OmegaConf's own resolved YAML of the config (what --resume compares)."""
    from omegaconf import OmegaConf

    cfg = load_run_config([make_config(name="yaml")])
    run = train(cfg)
    saved = load_checkpoint(run / "checkpoints" / "last.ckpt")["config"]
    assert saved == (run / "config.yaml").read_text() == OmegaConf.to_yaml(cfg, resolve=True)


def test_a_resumed_run_counts_the_training_time_of_its_earlier_segment(make_config, monkeypatch):
    """train_time_s / wall_time_s of a resumed run include the time trained before the stop (from last.ckpt):
    the first segment sleeps 1.5 s in its first epoch, the resumed one does not sleep."""
    import json
    import time

    original = TeacherTraining.on_epoch_end

    def slow_then_crash(self, epoch):
        original(self, epoch)
        if epoch == 0:
            time.sleep(1.5)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(TeacherTraining, "on_epoch_end", slow_then_crash)
    cfg = load_run_config([make_config(name="timed")])
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    saved = load_checkpoint(cfg.out_dir + "/timed/checkpoints/last.ckpt")
    assert saved["epoch"] == 1 and saved["train_time_s"] >= 1.5
    monkeypatch.setattr(TeacherTraining, "on_epoch_end", original)
    t0 = time.perf_counter()
    run = train(cfg, resume=True)
    segment = time.perf_counter() - t0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1
    assert saved["train_time_s"] < summary["train_time_s"] < saved["train_time_s"] + segment
    assert summary["train_time_s"] < summary["wall_time_s"] < saved["train_time_s"] + segment


def test_resume_refuses_a_changed_config(make_config):
    cfg = load_run_config([make_config(name="r", trainer={"epochs": 1, "progress": False, "tensorboard": False})])
    train(cfg)
    # what is trained may not change (optim.lr may: tests/test_run_dir.py)
    changed = load_run_config([make_config(name="r", optim={"weight_decay": 0.5})])
    with pytest.raises(ValueError, match="optim.weight_decay"):
        train(changed, resume=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(make_config, monkeypatch):
    original = TeacherTraining.training_step

    def poisoned(self, batch, step):
        if step >= 7:  # after the first epoch (6 steps of 50 images): weights turn NaN
            with torch.no_grad():
                for p in self.eval_model().parameters():
                    p.fill_(float("nan"))
        return original(self, batch, step)

    monkeypatch.setattr(TeacherTraining, "training_step", poisoned)
    cfg = load_run_config([make_config(name="nan")])
    with pytest.raises(NonFiniteLossError, match="last.ckpt") as info:
        train(cfg)
    assert "epoch 2" in str(info.value)
    ckpt = load_checkpoint(f"{cfg.out_dir}/nan/checkpoints/last.ckpt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    # the last good weights still load into a model
    model = load_classifier(f"{cfg.out_dir}/nan/checkpoints/last.ckpt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "x.ckpt"
    atomic_write(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]  # no temp file left behind


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.epochs=many", "trainer.epochs"),
        ("players.temprature=2", "players.temprature"),
        ("optim.scheduler=linearly", "optim.scheduler"),
        ("data.n_per_class=0", "data.n_per_class"),
        ("nonsense=1", "nonsense"),
    ],
)
def test_config_errors_name_the_key(make_config, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_run_config([make_config(method="distill")], [override])


def test_config_accepts_method_specific_keys(make_config):
    cfg = load_run_config([make_config(method="distill")], ["objective.student.kd.weight=0.5", "objective.student.kd.temperature=8"])
    assert cfg.objective.student.kd.weight == 0.5 and math.isclose(cfg.objective.student.kd.temperature, 8.0)
    # the old flat spelling is refused with the new one
    with pytest.raises(ConfigError, match=r"loss\.temperature is now objective\.student\.kd\.temperature"):
        load_run_config([make_config(method="distill")], ["loss.temperature=8"])
