"""Terms compose with every method: a term defined here (not in the package) is registered and used by
distill, codistill, kdgan and gan-compression; a term with its own player is updated, checkpointed
and resumed; bad term configs are clear errors before training."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdlab.config import ConfigError, bounded
from kdlab.engine import load_checkpoint
from kdlab.engine.generators import save_generator
from kdlab.models import build_generator
from kdlab.runner import load_run_config, train
from kdlab.terms import TERMS, Term, TermConfig
from conftest import gan_student_config


@TERMS.register("toy_match")
class ToyMatch(Term):
    """Toy term (test only): mean squared difference of the student's and the teacher's main outputs."""

    requires = frozenset({"teacher"})
    calls: list = []

    def forward(self, s, t, batch):
        value = ((s.out - t.out.detach()) ** 2).mean()
        ToyMatch.calls.append((s.out.detach().double().numpy().copy(), t.out.detach().double().numpy().copy()))
        return value


@TERMS.register("toy_critic")
class ToyCritic(Term):
    """Toy term (test only) with a player of its own: a linear critic of the logits, stepped by its own
    optimizer after the student's step; the student's term is the critic's mean score."""

    @dataclass
    class Config(TermConfig):
        lr: float = bounded(0.1, gt=0)

    requires = frozenset({"logits"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        torch.manual_seed(123)
        self.critic = nn.Linear(ctx.num_classes, 1)

    def players(self):
        from omegaconf import OmegaConf

        return {"critic": (self.critic, OmegaConf.create({"name": "sgd", "lr": float(self.cfg.lr), "momentum": 0.0,
                                                          "nesterov": False, "weight_decay": 0.0, "scheduler": "none"}))}

    def forward(self, s, t, batch):
        return self.critic(s.out).mean()

    def update(self, s, t, batch, step):
        loss = -self.critic(s.out.detach()).mean()
        step("critic", loss)
        return {"critic_loss": loss.detach()}


def _teacher(tmp_path: Path, make_config) -> Path:
    cfg = load_run_config([make_config(name="teacher", out_dir=str(tmp_path), trainer={"epochs": 1})])
    return train(cfg)


def _last_log(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if any(k.startswith("train/") for k in r)][-1]


def _ms(pair) -> float:  # numpy, separately from the term's torch code
    s, t = pair
    return float(np.mean((s - t) ** 2))


CLASSIFIER_RUNS = {
    "distill": ({"method": "distill"}, ["toy_match"]),
    # each peer has its own objective: the toy term on both (objective.student is the classifier's)
    "codistill": ({"method": "codistill", "objective": {"peer": {"toy_match": {"weight": 0.5}}}}, ["c_toy_match", "p_toy_match"]),
    "kdgan": ({"method": "kdgan", "players": {"disc_model": "mlp", "disc_init": "scratch", "disc_kwargs": {"hidden": [16]}}},
              ["c_toy_match"]),
}


@pytest.mark.parametrize("method", sorted(CLASSIFIER_RUNS))
def test_toy_term_composes_with_classifier_methods(tmp_path, make_config, method):
    teacher = _teacher(tmp_path, make_config)
    extra, keys = CLASSIFIER_RUNS[method]
    cfg = load_run_config([make_config(name=f"s-{method}", method=extra["method"], teacher={"checkpoint": str(teacher)},
                                       objective={"student": {"toy_match": {"weight": 0.5}}, **extra.get("objective", {})},
                                       players=extra.get("players", {}), trainer={"epochs": 1, "log_every_n_steps": 1})])
    ToyMatch.calls.clear()
    run = train(cfg)
    log = _last_log(run)
    calls = ToyMatch.calls[-len(keys):]
    for key, pair in zip(keys, calls):
        assert log[f"train/{key}"] == pytest.approx(0.5 * _ms(pair), rel=1e-5)
    assert json.loads((run / "summary.json").read_text())["test_acc_best"] > 0


def test_toy_term_composes_with_gan_compression(tmp_path):
    torch.manual_seed(0)
    teacher = save_generator(build_generator("dcgan", 1, 28, d=8, latent_dim=16), tmp_path / "tg.safetensors",
                             data="fashion-mnist")
    cfg = load_run_config([gan_student_config(tmp_path, teacher, objective={
        "student": {"mse": {"weight": 1.0}, "toy_match": {"weight": 2.0}}})])
    ToyMatch.calls.clear()
    run = train(cfg)
    log = _last_log(run)
    # on images the toy term is the pixel MSE: twice the mse term, and the value numpy computes
    assert log["train/toy_match"] == pytest.approx(2.0 * _ms(ToyMatch.calls[-1]), rel=1e-5)
    assert log["train/toy_match"] == pytest.approx(2.0 * log["train/mse"], rel=1e-5)
    s = json.loads((run / "summary.json").read_text())
    assert s["data"]["transfer"] == "none" and s["data"]["n_transfer"] == 48  # data-free: 3 steps of 16


def test_term_with_own_player_is_stepped_checkpointed_and_resumed(tmp_path, make_config):
    teacher = _teacher(tmp_path, make_config)
    # no schedule: a run stopped after epoch 1 has the same learning rates as the full run
    base = dict(method="distill", teacher={"checkpoint": str(teacher)}, optim={"scheduler": "none"},
                objective={"student": {"kd": {"weight": 1.0}, "toy_critic": {"weight": 0.1, "lr": 0.05}}})
    full = train(load_run_config([make_config(name="full", **base, trainer={"epochs": 2})]))
    state = load_checkpoint(full / "checkpoints" / "last.ckpt")["method"]
    critic = state["players"]["student.toy_critic.critic"]
    torch.manual_seed(123)
    init = nn.Linear(10, 1).state_dict()
    assert not torch.equal(critic["weight"], init["weight"])  # its own optimizer moved it
    assert "student.toy_critic.critic" in state["optimizers"]
    # the student's copy of the term module is the same object as the player: one set of weights
    assert torch.equal(state["players"]["student"]["objective.terms.toy_critic.critic.weight"], critic["weight"])
    # interrupted after epoch 1, resumed to 2: the same weights as the uninterrupted run
    train(load_run_config([make_config(name="part", **base, trainer={"epochs": 1})]))
    resumed = train(load_run_config([make_config(name="part", **base, trainer={"epochs": 2})]), resume=True)
    a = load_checkpoint(resumed / "checkpoints" / "last.ckpt")["method"]["players"]
    for name in ("student", "student.toy_critic.critic"):
        for k, v in state["players"][name].items():
            assert torch.equal(a[name][k], v), (name, k)


@pytest.mark.slow
def test_distill_with_trainable_term_modules_under_ddp(tmp_path, make_config):
    """Two CPU ranks (gloo): the student player holds the hint regressors; DDP keeps both ranks' copies equal."""
    import yaml

    # LeNet teacher and student: both expose pool2 for the hint
    t_cfg = make_config(name="lenet-teacher", model={"name": "lenet", "kwargs": {"channels": [8, 16], "fc": 64}},
                        trainer={"epochs": 1})
    teacher = train(load_run_config([t_cfg]))
    cfg = make_config(name="ddp-s", method="distill", teacher={"checkpoint": str(teacher)},
                      model={"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 32}},
                      objective={"student": {"kd": {"weight": 1.0}, "hints": {"weight": 1.0, "layers": [["pool2", "pool2"]]}}},
                      trainer={"epochs": 2, "devices": 2, "strategy": "ddp", "progress": False, "tensorboard": False})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "kdlab.cli", "distill", str(tmp_path / "s.yaml")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr
    state = load_checkpoint(tmp_path / "ddp-s" / "checkpoints" / "last.ckpt")["method"]["players"]["student"]
    assert any(k.startswith("objective.terms.hints.regressors.0.") for k in state)
    assert json.loads((tmp_path / "ddp-s" / "summary.json").read_text())["test_acc_best"] > 10  # above chance


@pytest.mark.slow
def test_crd_and_ft_with_paraphraser_pretraining_run_under_ddp(tmp_path, make_config):
    """Two CPU ranks (gloo): CRD (memory banks gathered across ranks) and FT with paraphraser pre-training (its
    own player; the translators inside the student's DDP wrapper) train through both phases without DDP's
    unused-parameter error (a smoke test of the wiring; the bank gather itself: test_loss_mi.py)."""
    import yaml

    t_cfg = make_config(name="lenet-teacher", model={"name": "lenet", "kwargs": {"channels": [8, 16], "fc": 64}},
                        trainer={"epochs": 1})
    teacher = train(load_run_config([t_cfg]))
    cfg = make_config(name="ddp-crd-ft", method="distill", teacher={"checkpoint": str(teacher)},
                      model={"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 32}},
                      objective={"student": {"kd": {"weight": 1.0},
                                             "crd": {"weight": 0.5, "layers": [["pool2", "pool2"]], "k": 64},
                                             "ft": {"weight": 0.5, "layers": [["conv2", "conv2"]], "paraphraser_steps": 3}}},
                      trainer={"epochs": 2, "devices": 2, "strategy": "ddp", "progress": False, "tensorboard": False})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "kdlab.cli", "distill", str(tmp_path / "s.yaml")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "ddp-crd-ft" / "metrics.jsonl").read_text().splitlines()]
    assert any("train/ft/paraphraser_rec" in r for r in rows) and any(r.get("train/ft", 0) > 0 for r in rows)


# ----------------------------------------------------------------------------------- bad input


def _cfg(make_config, **kw):
    return load_run_config([make_config(**kw)])


def test_unknown_term_and_misspelt_key_are_config_errors(make_config):
    with pytest.raises(ConfigError, match=r"unknown term 'kdd'.*known terms: .*\bkd\b"):
        _cfg(make_config, method="distill", objective={"student": {"kdd": {"weight": 1}}})
    with pytest.raises(ConfigError, match=r"objective.student.kd: unknown key 'temprature' \(did you mean 'temperature'\?\); term 'kd' accepts: weight, temperature"):
        _cfg(make_config, method="distill", objective={"student": {"kd": {"temprature": 2}}})
    with pytest.raises(ConfigError, match=r"objective.student.kd.temperature.*must be >= 0.001"):
        _cfg(make_config, method="distill", objective={"student": {"kd": {"temperature": 0}}})
    with pytest.raises(ConfigError, match=r"objective.student.logits.mode.*accepted: paper, mse"):
        _cfg(make_config, method="distill", objective={"student": {"logits": {"mode": "l1"}}})


def test_old_flat_keys_give_the_new_spelling(make_config):
    for old, new in (("kd", "objective.student.kd.weight"), ("temperature", "objective.student.kd.temperature"),
                     ("hint_layers", "objective.student.hints.layers"), ("jacobian_select", "objective.student.jacobian.select")):
        with pytest.raises(ConfigError, match=f"loss.{old} is now {new}"):
            load_run_config([make_config(method="distill")], [f"loss.{old}=1"])
    with pytest.raises(ConfigError, match="loss.mse_weight is now objective.student.mse.weight"):
        load_run_config([{"method": "gan-compression", "loss": {"mse_weight": 1.0}}])
    with pytest.raises(ConfigError, match="loss.ce is now objective.student.ce.weight"):
        load_run_config([{"method": "kdgan", "loss": {"ce": 1.0}}])


def test_term_where_its_inputs_do_not_exist_is_refused_before_training(tmp_path, make_config):
    from kdlab.data import dataset_spec
    from kdlab.methods import METHODS

    spec = dataset_spec("fashion-mnist")
    teacher = _teacher(tmp_path, make_config) / "teacher.safetensors"
    torch.manual_seed(0)
    gen = save_generator(build_generator("dcgan", 1, 28, d=4, latent_dim=8), tmp_path / "g.safetensors")

    def build(cfg):
        c = load_run_config([cfg])
        return METHODS.get(c.method)(c, spec)

    # a classifier term on a generator student
    with pytest.raises(ConfigError, match=r"term 'kd' needs logits, which method 'gan-compression' \(generator student\)"):
        build({"method": "gan-compression", "teacher": {"checkpoint": str(gen)}, "model": {"name": "dcgan", "kwargs": {"d": 2}},
               "objective": {"student": {"kd": {"weight": 1}}}})
    # a feature the generator does not have
    with pytest.raises(ConfigError, match=r"term 'hints' in method 'gan-compression': the student unknown feature 'pool1'"):
        build({"method": "gan-compression", "teacher": {"checkpoint": str(gen)}, "model": {"name": "dcgan", "kwargs": {"d": 2}},
               "objective": {"student": {"hints": {"layers": [["pool1", "pool1"]]}}}})
    # labels on an unlabelled (out-of-domain) transfer set
    with pytest.raises(ConfigError, match=r"term 'ce' needs labels.*data.transfer = 'mnist-digits' has no labels"):
        build(make_config(method="distill", teacher={"checkpoint": str(teacher)}, data={"transfer": "mnist-digits"},
                          objective={"student": {"ce": {"weight": 1}, "kd": {"weight": 1}}}))
    # input gradients with a privileged teacher view
    with pytest.raises(ConfigError, match=r"term 'jacobian' needs input_grad.*data.privileged = 'downsample'"):
        build(make_config(method="kdgan", teacher={"checkpoint": str(teacher)}, data={"privileged": "downsample"},
                          objective={"student": {"jacobian": {"weight": 1}}}, players=CLASSIFIER_RUNS["kdgan"][0]["players"]))
    # no term at all
    with pytest.raises(ConfigError, match="no term with a weight > 0"):
        build(make_config(method="distill", teacher={"checkpoint": str(teacher)}, objective={"student": {"ce": {"weight": 0}}}))
