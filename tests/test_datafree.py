"""Data-free baselines (dfad, dafl, deepinversion): their pure losses against numpy / closed forms, where
each generator loss sends its gradient (the generator, never the teacher or the student), short real runs
on Fashion-MNIST with data.transfer=none, and the errors/warnings a user gets before training."""
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


def _method(tmp_path, method, teacher, **players):
    cfg = load_run_config([small_config(tmp_path, name=method, method=method, teacher={"checkpoint": teacher},
                                        data={"transfer": "none", "steps_per_epoch": 2, "batch_size": 8},
                                        model={"name": "mlp", "kwargs": {"hidden": [16]}}, players={**GEN, **players})])
    return METHODS.get(method)(cfg, SPEC)


COMPONENTS = {
    "dfad": [("g_l1", {})],
    "dafl": [("g_oh", {"oh": 1.0, "act": 0.0, "ie": 0.0}), ("g_act", {"oh": 0.0, "act": 1.0, "ie": 0.0}),
             ("g_ie", {"oh": 0.0, "act": 0.0, "ie": 1.0})],
    "deepinversion": [(k, {w: float(w == on) for w in ("bn", "oh", "balance", "adv")})
                      for k, on in (("g_bn", "bn"), ("g_oh", "oh"), ("g_balance", "balance"), ("g_adv", "adv"))]
    + [("g_bn", {"bn": 1.0, "oh": 0.0, "balance": 0.0, "adv": 0.0, "bn_norm": "concat"}),
       ("g_oh", {"bn": 0.0, "oh": 1.0, "balance": 0.0, "adv": 0.0, "targets": "random"}),
       ("g_adv", {"bn": 0.0, "oh": 0.0, "balance": 0.0, "adv": 1.0, "adv_mode": "l1"})],
}


@pytest.mark.parametrize("method,key,weights", [(m, k, w) for m, c in COMPONENTS.items() for k, w in c])
def test_each_generator_loss_component_reaches_the_generator_only(tmp_path, nets, method, key, weights):
    m = _method(tmp_path, method, nets["vgg"], **weights)
    steps = []

    def backward_only(name, loss):  # in place of the optimizer step: keep the gradients to inspect them
        steps.append(name)
        loss.backward()

    m.step_optimizer = backward_only
    m.train()
    logs = m.synthesize(Batch(size=8), 0)
    assert steps == ["generator"] and math.isfinite(float(logs[key])) and float(logs[key]) != 0.0
    g = [p.grad for p in m.players["generator"].parameters()]
    assert all(x is not None and torch.isfinite(x).all() for x in g) and sum(float(x.abs().sum()) for x in g) > 0
    assert all(p.grad is None for p in m.teacher_net().parameters())
    assert all(p.grad is None for p in m.student_net().parameters())
    assert all(p.requires_grad for p in m.student_net().parameters())  # unfrozen again after the step


def test_deepinversion_random_targets_cost_more_than_the_teachers_own_argmax(tmp_path, nets):
    oh = {}
    for targets in ("argmax", "random"):
        torch.manual_seed(3)  # the same generator weights and latents
        m = _method(tmp_path, "deepinversion", nets["vgg"], bn=0.0, oh=1.0, balance=0.0, adv=0.0, targets=targets)
        m.step_optimizer = lambda name, loss: None
        m.train()
        oh[targets] = float(m.synthesize(Batch(size=8), 0)["g_oh"])
    assert oh["random"] > oh["argmax"] > 0  # the argmax label has the smallest CE of every row


def test_dafl_activation_is_the_input_of_the_teachers_classifier(tmp_path, nets):
    # VGG-4's fc reads dropout(gap(.)) = gap in eval mode: the pre-hook and the named feature agree
    out, x = [], torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for feature in ("", "gap"):
        m = _method(tmp_path, "dafl", nets["vgg"], feature=feature)
        t, f = m._teacher_forward(x)
        assert f.shape == (8, 128) and t.shape == (8, 10)  # width 0.25: the last block 512 -> 128 channels
        out.append(f)
    torch.testing.assert_close(out[0], out[1])
    with pytest.raises(ConfigError, match=r"players.feature = 'nope'.*known features: .*gap"):
        _method(tmp_path, "dafl", nets["vgg"], feature="nope")


def test_deepinversion_refuses_a_teacher_without_batchnorm(tmp_path, nets):
    with pytest.raises(ConfigError, match=r"'deepinversion'.*BatchNorm.*teacher 'mlp'.*no BatchNorm"):
        _method(tmp_path, "deepinversion", nets["mlp"])
    assert len(_method(tmp_path, "deepinversion", nets["vgg"])._bn) == 3  # vgg4: conv1_1, conv2_1, conv3_1


@pytest.mark.parametrize("method", sorted(COMPONENTS))
def test_a_transfer_set_given_to_a_data_free_method_is_ignored_with_a_warning(tmp_path, nets, method):
    cfg = load_run_config([small_config(tmp_path, method=method, teacher={"checkpoint": nets["vgg"]},
                                        model={"name": "mlp", "kwargs": {"hidden": [16]}}, players=GEN)])
    with pytest.warns(UserWarning, match=rf"method '{method}' is data-free: it ignores the images of data.transfer"):
        m = METHODS.get(method)(cfg, SPEC)
    assert m.uses_transfer is False


def test_published_defaults():
    d = {n: METHODS.get(n).Config() for n in COMPONENTS}
    assert d["dfad"].synth_every == 5 and METHODS.get("dfad").default_objective == {"student": {"l1": {"weight": 1.0}}}
    assert (d["dafl"].oh, d["dafl"].act, d["dafl"].ie, d["dafl"].log_base) == (1.0, 0.1, 5.0, "10")
    c = d["deepinversion"]
    assert (c.bn, c.oh, c.adv, c.balance, c.log_base, c.synth_every) == (1.0, 1.0, 1.0, 20.0, "e", 10)


# ------------------------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def bn_teacher(tmp_path_factory):
    """A VGG-4 (width 0.25, BatchNorm) teacher trained one epoch on 300 real Fashion-MNIST images."""
    tmp = tmp_path_factory.mktemp("datafree_teacher")
    return train(load_run_config([small_config(tmp, name="teacher", model={"name": "vgg4", "kwargs": {"width": 0.25}},
                                               trainer={"epochs": 1}, eval={"latency": False, "noise_sigmas": [0.0]})]))


EXPECTED = {"dfad": {"g_l1", "l1"}, "dafl": {"g_oh", "g_act", "g_ie", "kd"},
            "deepinversion": {"g_bn", "g_oh", "g_balance", "g_adv", "kd"}}


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_short_data_free_run_finishes_with_finite_losses(tmp_path, bn_teacher, method):
    cfg = load_run_config([small_config(tmp_path, name=method, method=method, teacher={"checkpoint": str(bn_teacher)},
                                        data={"transfer": "none", "steps_per_epoch": 3, "batch_size": 16},
                                        model={"name": "mlp", "kwargs": {"hidden": [32]}}, players=GEN,
                                        trainer={"epochs": 1, "log_every_n_steps": 1},
                                        eval={"latency": False, "noise_sigmas": [0.0]})])
    run = train(cfg)
    rows = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r]
    assert len(rows) == 3
    for key in EXPECTED[method] | {"g_loss", "loss"}:
        assert all(math.isfinite(r[f"train/{key}"]) for r in rows), key
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["n_transfer"] == 3 * 16 and 0 <= summary["test_acc_best"] <= 100
    assert (run / "samples" / "epoch_001.png").exists()
