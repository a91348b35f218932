"""Data-free baselines (the recipes dfad, dafl, deepinversion: ``distill`` with ``data.transfer: synth``): their
pure losses against numpy / closed forms, where each generator term sends its gradient (the generator, never
the teacher or the student), short real runs on Fashion-MNIST, and the errors a user gets before training."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import small_config
from kdlab.config import ConfigError
from kdlab.data import dataset_spec
from kdlab.data.batch import Batch
from kdlab.engine.checkpoint import save_classifier
from kdlab.losses.datafree import (activation_loss, adversarial_loss, bn_statistics_loss, information_entropy_loss,
                                   kl_teacher_student, logit_l1, one_hot_loss)
from kdlab.methods import METHODS
from kdlab.models import build_model
from kdlab.runner import load_run_config, train
from kdlab.terms import Outputs, TERMS, term_config

SPEC = dataset_spec("fashion-mnist")
GEN = {"generator": "dcgan", "generator_kwargs": {"d": 8}}  # small and fast; the default is `mosaic`


def _rand(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape) * 2.0)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ------------------------------------------------------------------------------------------ pure losses
def test_logit_l1_and_adversarial_terms_match_numpy():
    zs, zt = _rand(5, 7, seed=1), _rand(5, 7, seed=2)
    d = np.abs(zs.numpy() - zt.numpy())
    assert logit_l1(zs, zt).item() == pytest.approx(d.mean(), rel=1e-12)
    assert logit_l1(zs, zt, reduction="batchmean").item() == pytest.approx(d.sum(1).mean(), rel=1e-12)
    assert adversarial_loss(zs, zt, mode="l1").item() == pytest.approx(-d.mean(), rel=1e-12)
    ps, pt = _softmax(zs.numpy() / 3), _softmax(zt.numpy() / 3)
    kl = 9 * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), 1))
    assert kl_teacher_student(zs, zt, 3.0).item() == pytest.approx(kl, rel=1e-9)
    assert adversarial_loss(zs, zt, temperature=3.0).item() == pytest.approx(-kl, rel=1e-9)
    # the l1 student term detaches the teacher: gradient only to the student logits
    s, t = zs.clone().requires_grad_(), zt.clone().requires_grad_()
    term = TERMS.get("l1")(term_config("l1", {}), None)
    term(Outputs(out=s), Outputs(out=t), Batch(size=5)).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reduction"):
        logit_l1(zs, zt, reduction="sum")


def test_one_hot_cross_entropy_matches_numpy():
    z = _rand(6, 4, seed=3)
    p = _softmax(z.numpy())
    own = z.numpy().argmax(1)
    assert one_hot_loss(z).item() == pytest.approx(-np.mean(np.log(p[np.arange(6), own])), rel=1e-9)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    assert one_hot_loss(z, y).item() == pytest.approx(-np.mean(np.log(p[np.arange(6), y.numpy()])), rel=1e-9)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        one_hot_loss(z, torch.tensor([0, 1, 2, 4, 0, 1]))


def test_activation_loss_matches_numpy():
    f = _rand(3, 2, 4, 4, seed=4)
    a = np.abs(f.numpy()).reshape(3, -1)
    assert activation_loss(f).item() == pytest.approx(-a.mean(), rel=1e-12)
    assert activation_loss(f, reduction="batchmean").item() == pytest.approx(-a.sum(1).mean(), rel=1e-12)


@pytest.mark.parametrize("base,log", [("e", np.log), ("2", np.log2), ("10", np.log10)])
def test_information_entropy_closed_forms(base, log):
    k = 10
    # a uniform batch mean, from confident predictions of distinct classes: -log K
    z = torch.full((k, k), -30.0, dtype=torch.float64)
    z[torch.arange(k), torch.arange(k)] = 30.0
    assert information_entropy_loss(z, base).item() == pytest.approx(-log(k), rel=1e-9)
    # every image the same class: 0
    one = torch.zeros(8, k, dtype=torch.float64)
    one[:, 3] = 60.0
    assert information_entropy_loss(one, base).item() == pytest.approx(0.0, abs=1e-12)
    r = _rand(7, k, seed=5)
    pbar = _softmax(r.numpy()).mean(0)
    assert information_entropy_loss(r, base).item() == pytest.approx(np.sum(pbar * log(pbar)), rel=1e-9)


def test_bn_statistics_loss_against_a_manual_mean_and_variance():
    xs = [_rand(6, 3, 5, 5, seed=6), _rand(6, 4, 2, 2, seed=7) + 1.0, _rand(6, 2, seed=8)]  # conv maps and a BN1d input
    means = [_rand(c, seed=10 + i) for i, c in enumerate((3, 4, 2))]
    vars_ = [_rand(c, seed=20 + i).abs() for i, c in enumerate((3, 4, 2))]
    dm, dv = [], []
    for x, m, v in zip(xs, means, vars_):
        a = np.moveaxis(x.numpy(), 1, 0).reshape(x.shape[1], -1)  # [C, everything else]
        mu = a.sum(1) / a.shape[1]
        var = ((a - mu[:, None]) ** 2).sum(1) / a.shape[1]  # biased, as BatchNorm normalises
        dm.append(mu - m.numpy())
        dv.append(var - v.numpy())
    layer = sum(np.sqrt((a ** 2).sum()) + np.sqrt((b ** 2).sum()) for a, b in zip(dm, dv))
    concat = np.sqrt((np.concatenate(dm) ** 2).sum()) + np.sqrt((np.concatenate(dv) ** 2).sum())
    assert bn_statistics_loss(xs, means, vars_).item() == pytest.approx(layer, rel=1e-9)
    assert bn_statistics_loss(xs, means, vars_, norm="concat").item() == pytest.approx(concat, rel=1e-9)
    # a BatchNorm layer whose running statistics are those of the batch (momentum None, one step): 0
    bn = nn.BatchNorm2d(3, momentum=None).double().train()
    bn.running_var.zero_()
    bn(xs[0])
    unbiased_to_biased = (xs[0].numel() / 3 - 1) / (xs[0].numel() / 3)  # BN stores the unbiased variance
    assert bn_statistics_loss([xs[0]], [bn.running_mean], [bn.running_var * unbiased_to_biased]).item() < 1e-10
    with pytest.raises(ValueError, match="channels"):
        bn_statistics_loss([xs[0]], [means[1]], [vars_[1]])


# --------------------------------------------------------------------------------- methods, no training
@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Untrained saved classifiers: a VGG-4 (BatchNorm) and an MLP (none)."""
    tmp = tmp_path_factory.mktemp("datafree_nets")
    torch.manual_seed(0)
    vgg = save_classifier(build_model("vgg4", 10, 1, 28, width=0.25), tmp / "vgg.safetensors", data="fashion-mnist")
    mlp = save_classifier(build_model("mlp", 10, 1, 28, hidden=[32]), tmp / "mlp.safetensors", data="fashion-mnist")
    return {"vgg": str(vgg), "mlp": str(mlp)}


def _method(tmp_path, recipe, teacher, generator=None, **sections):
    """The recipe (``distill`` with ``data.transfer: synth``) with a small student and generator, built without
    training; ``generator`` merges over the recipe's ``objective.generator``."""
    from kdlab.cli import resolve_config

    cfg = load_run_config([resolve_config(recipe), small_config(
        tmp_path, name=recipe, method="distill", teacher={"checkpoint": teacher},
        data={"transfer": "synth", "steps_per_epoch": 2, "batch_size": 8, "val_size": 200},
        model={"name": "mlp", "kwargs": {"hidden": [16]}}, players=GEN,
        objective={"generator": generator or {}}, **sections)])
    return METHODS.get("distill")(cfg, SPEC)


def _only(recipe, term, **keys):
    """``objective.generator`` of ``recipe`` with every term but ``term`` at weight 0 (``keys`` set on ``term``)."""
    from kdlab.cli import resolve_config
    from omegaconf import OmegaConf

    names = list(OmegaConf.load(resolve_config(recipe)).objective.generator)
    return {n: ({"weight": 1.0, **keys} if n == term else {"weight": 0.0}) for n in names}


COMPONENTS = {
    "dfad": [("g_adversarial", {})],
    "dafl": [(f"g_{t}", _only("dafl", t)) for t in ("one_hot", "activation", "entropy_balance")],
    "deepinversion": [(f"g_{t}", _only("deepinversion", t)) for t in ("bn_prior", "one_hot", "entropy_balance", "adversarial")]
    + [("g_bn_prior", _only("deepinversion", "bn_prior", norm="concat")),
       ("g_one_hot", _only("deepinversion", "one_hot", targets="random")),
       ("g_adversarial", _only("deepinversion", "adversarial", mode="l1"))],
}


@pytest.mark.parametrize("recipe,key,generator", [(m, k, w) for m, c in COMPONENTS.items() for k, w in c])
def test_each_generator_loss_component_reaches_the_generator_only(tmp_path, nets, recipe, key, generator):
    m = _method(tmp_path, recipe, nets["vgg"], generator)
    steps = []

    def backward_only(name, loss):  # in place of the optimizer step: keep the gradients to inspect them
        steps.append(name)
        loss.backward()

    m.step_optimizer = backward_only
    m.train()
    logs = m.synthesizer.synthesize(Batch(size=8))
    assert steps == ["generator"] and math.isfinite(float(logs[key])) and float(logs[key]) != 0.0
    g = [p.grad for p in m.players["generator"].parameters()]
    assert all(x is not None and torch.isfinite(x).all() for x in g) and sum(float(x.abs().sum()) for x in g) > 0
    student = m.players["student"].net
    assert all(p.grad is None for p in m.frozen["teacher"].parameters())
    assert all(p.grad is None for p in student.parameters())
    assert all(p.requires_grad for p in student.parameters())  # unfrozen again after the step


def test_deepinversion_random_targets_cost_more_than_the_teachers_own_argmax(tmp_path, nets):
    oh = {}
    for targets in ("argmax", "random"):
        torch.manual_seed(3)  # the same generator weights and latents
        m = _method(tmp_path, "deepinversion", nets["vgg"], _only("deepinversion", "one_hot", targets=targets))
        m.step_optimizer = lambda name, loss: None
        m.train()
        oh[targets] = float(m.synthesizer.synthesize(Batch(size=8))["g_one_hot"])
    assert oh["random"] > oh["argmax"] > 0  # the argmax label has the smallest CE of every row


def test_dafl_activation_is_the_input_of_the_teachers_classifier(tmp_path, nets):
    # VGG-4's fc reads dropout(gap(.)) = gap in eval mode: the input of fc and the named feature agree
    from kdlab.terms.objective import forward_features

    out, x = [], torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for feature in ("", "gap"):
        m = _method(tmp_path, "dafl", nets["vgg"], {"activation": {"feature": feature}})
        term = m.synthesizer.g_objective.terms["activation"]
        t, feats = forward_features(m.frozen["teacher"], x, term.teacher_features)
        f = feats[term.name]
        assert term.teacher_features == (["fc:in"] if not feature else ["gap"])
        assert f.shape == (8, 128) and t.shape == (8, 10)  # width 0.25: the last block 512 -> 128 channels
        out.append(f)
    torch.testing.assert_close(out[0], out[1])
    with pytest.raises(ConfigError, match=r"term 'activation'.*unknown feature 'nope'.*known features: .*gap"):
        _method(tmp_path, "dafl", nets["vgg"], {"activation": {"feature": "nope"}})


def test_deepinversion_refuses_a_teacher_without_batchnorm(tmp_path, nets):
    with pytest.raises(ConfigError, match=r"term 'bn_prior'.*BatchNorm.*teacher 'mlp' has no BatchNorm"):
        _method(tmp_path, "deepinversion", nets["mlp"])
    bn = _method(tmp_path, "deepinversion", nets["vgg"]).synthesizer.g_objective.terms["bn_prior"]
    assert len(bn.teacher_features) == 3 and all(n.endswith(":in") for n in bn.teacher_features)  # vgg4: 3 BN layers


def test_data_free_classifier_students_are_pointed_to_synth(tmp_path, nets):
    with pytest.raises(ConfigError, match=r"data.transfer = 'none'.*method 'distill'.*data.transfer=synth"):
        train(load_run_config([small_config(tmp_path, method="distill", teacher={"checkpoint": nets["vgg"]},
                                            data={"transfer": "none", "steps_per_epoch": 2})]))


def test_published_defaults():
    from kdlab.cli import resolve_config

    r = {n: load_run_config([resolve_config(n)]) for n in COMPONENTS}
    g = {n: {k: dict(v) for k, v in r[n].objective.generator.items()} for n in r}
    assert r["dfad"].players.synth_every == 5 and dict(r["dfad"].objective.student.l1)["weight"] == 1.0
    assert g["dfad"]["adversarial"]["mode"] == "l1" and g["dfad"]["adversarial"]["reduction"] == "mean"
    assert (g["dafl"]["one_hot"]["weight"], g["dafl"]["activation"]["weight"], g["dafl"]["entropy_balance"]["weight"],
            g["dafl"]["entropy_balance"]["log_base"]) == (1.0, 0.1, 5.0, "10")
    d = g["deepinversion"]
    assert (d["bn_prior"]["weight"], d["one_hot"]["weight"], d["adversarial"]["weight"], d["entropy_balance"]["weight"],
            d["entropy_balance"]["log_base"], r["deepinversion"].players.synth_every) == (1.0, 1.0, 1.0, 20.0, "e", 10)
    for n in r:
        assert r[n].method == "distill" and r[n].data.transfer == "synth"


# ------------------------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def bn_teacher(tmp_path_factory):
    """A VGG-4 (width 0.25, BatchNorm) teacher trained one epoch on 300 real Fashion-MNIST images."""
    tmp = tmp_path_factory.mktemp("datafree_teacher")
    return train(load_run_config([small_config(tmp, name="teacher", model={"name": "vgg4", "kwargs": {"width": 0.25}},
                                               trainer={"epochs": 1}, eval={"latency": False, "noise_sigmas": [0.0]})]))


EXPECTED = {"dfad": {"g_adversarial", "l1"}, "dafl": {"g_one_hot", "g_activation", "g_entropy_balance", "kd"},
            "deepinversion": {"g_bn_prior", "g_one_hot", "g_entropy_balance", "g_adversarial", "kd"}}


@pytest.mark.parametrize("recipe", sorted(EXPECTED))
def test_short_data_free_run_finishes_with_finite_losses(tmp_path, bn_teacher, recipe):
    from kdlab.cli import resolve_config

    cfg = load_run_config([resolve_config(recipe), small_config(
        tmp_path, name=recipe, method="distill", teacher={"checkpoint": str(bn_teacher)},
        data={"transfer": "synth", "steps_per_epoch": 3, "batch_size": 16, "val_size": 200},
        model={"name": "mlp", "kwargs": {"hidden": [32]}}, players={**GEN, "synth_every": 5},
        trainer={"epochs": 1, "log_every_n_steps": 1}, eval={"latency": False, "noise_sigmas": [0.0]})])
    run = train(cfg)
    rows = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r]
    assert len(rows) == 3
    for key in EXPECTED[recipe] | {"g_loss", "loss"}:
        assert all(math.isfinite(r[f"train/{key}"]) for r in rows), key
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["n_transfer"] == 3 * 16 and 0 <= summary["test_acc_best"] <= 100
    assert (run / "samples" / "epoch_001.png").exists()
