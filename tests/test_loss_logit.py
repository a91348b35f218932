"""Logit-family losses and terms: KD reductions, DKD (Zhao et al. 2022), DIST (Huang et al. 2022), SRD/SRRL
(Yang et al. 2021), each against numpy written from the papers' formulas, their defining properties, and
short real runs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdlab.config import ConfigError
from kdlab.data.batch import Batch
from kdlab.engine import load_checkpoint
from kdlab.losses.dist import dist_loss, pearson
from kdlab.losses.dkd import dkd_loss, dkd_parts
from kdlab.losses.kd import kd_loss
from kdlab.losses.srd import srd_loss
from kdlab.runner import load_run_config, train
from kdlab.terms import Outputs, TermContext, term_config
from kdlab.terms.dkd import DKDTerm


def _rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _labels(b, k, seed=0):
    return torch.randint(0, k, (b,), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ numpy references (from the formulas)
def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_kl_rows(p, q):
    return np.sum(p * np.log(p / q), axis=-1)


def np_dkd_parts(zs, zt, y, t):
    """Per-example (TCKD, NCKD) with explicit loops: b = [p_y, 1 - p_y], p_hat = p[others] / (1 - p_y)."""
    tckd, nckd = [], []
    for i in range(zs.shape[0]):
        ps, pt = np_softmax(zs[i] / t), np_softmax(zt[i] / t)
        others = [j for j in range(zs.shape[1]) if j != y[i]]
        bs = np.array([ps[y[i]], 1 - ps[y[i]]])
        bt = np.array([pt[y[i]], 1 - pt[y[i]]])
        tckd.append(np_kl_rows(bt, bs))
        nckd.append(np_kl_rows(pt[others] / pt[others].sum(), ps[others] / ps[others].sum()))
    return np.array(tckd), np.array(nckd)


def np_dist(zs, zt, beta, gamma, tau):
    ps, pt = np_softmax(zs / tau), np_softmax(zt / tau)
    inter = np.mean([1 - np.corrcoef(ps[i], pt[i])[0, 1] for i in range(ps.shape[0])])
    intra = np.mean([1 - np.corrcoef(ps[:, c], pt[:, c])[0, 1] for c in range(ps.shape[1])])
    return tau * tau * (beta * inter + gamma * intra)


# ------------------------------------------------------------------------------------ KD reductions
@pytest.mark.parametrize("t", [1.0, 4.0])
@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum"])
@pytest.mark.parametrize("t_squared", [True, False])
def test_kd_reductions_match_numpy(t, reduction, t_squared):
    zs, zt = _rand(5, 7, seed=1, scale=2), _rand(5, 7, seed=2, scale=2)
    ps, pt = np_softmax(zs.numpy() / t), np_softmax(zt.numpy() / t)
    pointwise = pt * (np.log(pt) - np.log(ps))  # [B, K]
    expected = {"batchmean": pointwise.sum() / 5, "mean": pointwise.mean(), "sum": pointwise.sum()}[reduction]
    expected *= t * t if t_squared else 1.0
    out = kd_loss(zs, zt, t, reduction=reduction, t_squared=t_squared)
    assert out.item() == pytest.approx(expected, rel=1e-10)


def test_kd_default_is_batchmean_with_t_squared_bit_for_bit():
    zs, zt = _rand(4, 6, seed=3).float(), _rand(4, 6, seed=4).float()
    assert torch.equal(kd_loss(zs, zt, 3.0), kd_loss(zs, zt, 3.0, reduction="batchmean", t_squared=True))


def test_kd_bad_reduction_and_term_keys():
    with pytest.raises(ValueError, match=r"unknown reduction 'avg'.*'batchmean', 'mean', 'sum'"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), reduction="avg")
    with pytest.raises(ConfigError, match=r"objective.student.kd.reduction.*accepted: batchmean, mean, sum"):
        term_config("kd", {"reduction": "none"})
    cfg = term_config("kd", {"reduction": "mean", "t_squared": False})
    assert cfg.reduction == "mean" and cfg.t_squared is False


# ---------------------------------------------------------------------------------------------- DKD
@pytest.mark.parametrize("t", [1.0, 4.0])
def test_dkd_matches_numpy(t):
    zs, zt, y = _rand(6, 5, seed=5, scale=3), _rand(6, 5, seed=6, scale=3), _labels(6, 5)
    tckd, nckd = np_dkd_parts(zs.numpy(), zt.numpy(), y.numpy(), t)
    expected = t * t * np.mean(0.7 * tckd + 3.0 * nckd)
    assert dkd_loss(zs, zt, y, alpha=0.7, beta=3.0, temperature=t).item() == pytest.approx(expected, rel=1e-10)
    a, b = dkd_parts(zs, zt, y, t)
    np.testing.assert_allclose(a.numpy(), tckd, rtol=1e-10)
    np.testing.assert_allclose(b.numpy(), nckd, rtol=1e-10)
    # float32 inputs (mdistiller's dtype) agree to float32 precision
    assert dkd_loss(zs.float(), zt.float(), y, temperature=t).item() == pytest.approx(
        t * t * np.mean(tckd + 8 * nckd), rel=1e-5)


@pytest.mark.parametrize("t", [1.0, 2.5, 4.0])
def test_dkd_decomposition_uses_the_teachers_target_probability(t):
    """Zhao et al. eq. 5: KL(p_t || p_s) = TCKD + (1 - p_y^teacher) NCKD (plain KLs; T^2 on neither side)."""
    zs, zt, y = _rand(8, 6, seed=7, scale=2), _rand(8, 6, seed=8, scale=2), _labels(8, 6, seed=1)
    ps, pt = np_softmax(zs.numpy() / t), np_softmax(zt.numpy() / t)
    kd = np_kl_rows(pt, ps)
    tckd, nckd = (v.numpy() for v in dkd_parts(zs, zt, y, t))
    p_y_teacher = pt[np.arange(8), y.numpy()]
    np.testing.assert_allclose(kd, tckd + (1 - p_y_teacher) * nckd, rtol=1e-10)
    # the student's probability does not make the identity hold
    p_y_student = ps[np.arange(8), y.numpy()]
    assert not np.allclose(kd, tckd + (1 - p_y_student) * nckd, rtol=1e-3)
    # batch level, with T^2 on both sides: kd_loss == T^2 mean(TCKD + (1 - p_y^T) NCKD)
    rhs = t * t * np.mean(tckd + (1 - p_y_teacher) * nckd)
    assert kd_loss(zs, zt, t).item() == pytest.approx(rhs, rel=1e-10)


def test_dkd_zero_for_equal_logits_and_extreme_logits_finite():
    z, y = _rand(4, 5, seed=9), _labels(4, 5)
    assert dkd_loss(z, z.clone(), y).item() == pytest.approx(0.0, abs=1e-12)
    big = torch.tensor([[80.0, -80.0, 0.0], [0.0, 90.0, -90.0]])
    out = dkd_loss(big, -big, torch.tensor([0, 1]))
    assert torch.isfinite(out) and out.item() > 0


def _ctx(student=None, teacher=None, steps_per_epoch=None, shape=(1, 28, 28)):
    return TermContext(method="distill", kind="classifier", student=student or nn.Linear(4, 3),
                       teacher=teacher or nn.Linear(4, 3), student_input=shape, teacher_input=shape,
                       provides=frozenset({"teacher", "logits", "labels", "features"}), num_classes=10,
                       steps_per_epoch=steps_per_epoch)


def test_dkd_warmup_factor_after_n_steps():
    """mdistiller: min(epoch / warmup, 1), epoch 1-based; here epoch = step // steps_per_epoch + 1."""
    term = DKDTerm(term_config("dkd", {"warmup": 4}), _ctx(steps_per_epoch=3))
    zs, zt, y = _rand(5, 6, seed=12), _rand(5, 6, seed=13), _labels(5, 6)
    s, t, batch = Outputs(out=zs), Outputs(out=zt), Batch(y=y, size=5)
    plain = dkd_loss(zs, zt, y).item()
    term.train()
    for n in range(16):  # n steps done before this forward
        assert term(s, t, batch).item() == pytest.approx(min((n // 3 + 1) / 4, 1.0) * plain, rel=1e-6)
    assert int(term.step) == 16 and "step" in term.state_dict()
    term.eval()  # evaluation forwards do not advance the schedule
    term(s, t, batch)
    assert int(term.step) == 16
    # no warm-up: the plain loss from the first step; warm-up without steps per epoch: refused
    assert DKDTerm(term_config("dkd", {"warmup": 0}), _ctx())(s, t, batch).item() == pytest.approx(plain, rel=1e-6)
    with pytest.raises(ConfigError, match=r"objective.student.dkd.warmup = 20 epochs needs the steps per epoch"):
        DKDTerm(term_config("dkd", {}), _ctx())


# --------------------------------------------------------------------------------------------- DIST
@pytest.mark.parametrize("beta,gamma,tau", [(1.0, 1.0, 1.0), (2.0, 2.0, 4.0), (0.5, 0.0, 2.0)])
def test_dist_matches_numpy_corrcoef(beta, gamma, tau):
    zs, zt = _rand(7, 5, seed=14, scale=3), _rand(7, 5, seed=15, scale=3)
    expected = np_dist(zs.numpy(), zt.numpy(), beta, gamma, tau)
    # the loss keeps the reference code's eps = 1e-8 in the denominator: agreement to ~1e-6
    assert dist_loss(zs, zt, beta, gamma, tau).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_pearson_matches_corrcoef_and_is_affine_invariant():
    x, y = _rand(6, 9, seed=16), _rand(6, 9, seed=17)
    ref = [np.corrcoef(x[i].numpy(), y[i].numpy())[0, 1] for i in range(6)]
    np.testing.assert_allclose(pearson(x, y, eps=0.0).numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(pearson(3.5 * x + 2.0, y, eps=0.0).numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(pearson(x, 0.2 * y - 7.0, eps=0.0).numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(pearson(-x, y, eps=0.0).numpy(), -np.array(ref), rtol=1e-10)  # a < 0 flips the sign
    np.testing.assert_allclose(pearson(x.T, y.T, dim=0, eps=0.0).numpy(), ref, rtol=1e-10)


def test_dist_invariant_to_per_sample_logit_shifts_and_zero_for_equal_logits():
    zs, zt = _rand(5, 4, seed=18, scale=2), _rand(5, 4, seed=19, scale=2)
    shift = _rand(5, 1, seed=20, scale=10)
    base = dist_loss(zs, zt, 2.0, 2.0, 4.0).item()
    assert dist_loss(zs + shift, zt - shift, 2.0, 2.0, 4.0).item() == pytest.approx(base, rel=1e-9)
    # zero up to the eps = 1e-8 of the Pearson denominator (flat tau = 4 probabilities: tiny variances)
    assert dist_loss(zt, zt.clone(), 2.0, 2.0, 4.0).item() == pytest.approx(0.0, abs=1e-4 * base)
    assert dist_loss(zt, zt.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < base <= 2 * 16 * (2 + 2)


# ------------------------------------------------------------------- teacher detached, bad input
_Z, _Y = torch.zeros(3, 4), torch.zeros(3, dtype=torch.long)
LOSSES_ON_LOGITS = {
    "dkd": lambda s, t: dkd_loss(s, t, torch.tensor([0, 2, 1, 4])),
    "dist": lambda s, t: dist_loss(s, t),
    "srd": lambda s, t: srd_loss(s[:, :3] * 2, t[:, :3], s, t),  # features and logits from the same tensors
}


@pytest.mark.parametrize("name", sorted(LOSSES_ON_LOGITS))
def test_teacher_gets_no_gradient(name):
    zs = _rand(4, 5, seed=10).requires_grad_(True)
    zt = _rand(4, 5, seed=11).requires_grad_(True)
    LOSSES_ON_LOGITS[name](zs, zt).backward()
    assert zt.grad is None and zs.grad is not None and zs.grad.abs().sum() > 0


BAD_INPUT = [
    (lambda: dkd_loss(_Z, _Z, torch.tensor([0, 1, 4])), r"labels must lie in \[0, 4\).*max 4"),
    (lambda: dkd_loss(_Z, _Z, torch.tensor([0, 1])), r"labels must have shape \[B\] = \(3,\).*got \(2,\)"),
    (lambda: dkd_loss(_Z, _Z, torch.zeros(3)), "labels must be an integer tensor"),
    (lambda: dkd_loss(torch.zeros(3, 1), torch.zeros(3, 1), _Y), r"K >= 2.*\(3, 1\)"),
    (lambda: dkd_loss(_Z, _Z, _Y, temperature=0), "temperature must be a finite number > 0, got 0"),
    (lambda: dkd_loss(_Z, _Z, _Y, beta=-1), "beta must be a number >= 0, got -1"),
    (lambda: dkd_loss(_Z, torch.zeros(3, 5), _Y), r"same shape.*\(3, 4\).*\(3, 5\)"),
    (lambda: dist_loss(_Z, _Z, tau=-1), "tau must be a finite number > 0, got -1"),
    (lambda: dist_loss(_Z, _Z, gamma=-0.5), "gamma must be a number >= 0"),
    (lambda: dist_loss(_Z, torch.zeros(3, 6)), r"same shape.*\(3, 4\).*\(3, 6\)"),
    (lambda: pearson(torch.zeros(2, 3), torch.zeros(3, 2)), r"equal shapes; got \(2, 3\) and \(3, 2\)"),
    (lambda: srd_loss(_Z, torch.zeros(3, 2), _Z, _Z), r"same shape \[B, \.\.\.\]; got student \(3, 4\) and teacher \(3, 2\)"),
    (lambda: srd_loss(_Z, _Z, torch.zeros(2, 5), torch.zeros(2, 5)), "different batch sizes"),
    (lambda: srd_loss(_Z, _Z, _Z, _Z, exponent=0), "exponent must be a finite number > 0, got 0"),
    (lambda: srd_loss(_Z, _Z, _Z, _Z, feature="l1"), "unknown feature mode 'l1'"),
]


@pytest.mark.parametrize("call,match", BAD_INPUT)
def test_bad_input_names_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------------- real runs
def _teacher(tmp_path: Path, make_config) -> Path:
    return train(load_run_config([make_config(name="teacher", out_dir=str(tmp_path), trainer={"epochs": 1})]))


def _last_log(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if any(k.startswith("train/") for k in r)][-1]


def test_distill_run_with_the_logit_terms(tmp_path, make_config):
    teacher = _teacher(tmp_path, make_config)
    terms = {"ce": {"weight": 1.0}, "kd": {"weight": 0.5, "reduction": "mean", "t_squared": False},
             "dkd": {"weight": 1.0, "warmup": 2}, "dist": {"weight": 1.0, "beta": 2, "gamma": 2, "tau": 4},
             "srd": {"weight": 1.0}}
    cfg = load_run_config([make_config(name="s", method="distill", teacher={"checkpoint": str(teacher)},
                                       objective={"student": terms}, trainer={"epochs": 1, "log_every_n_steps": 1})])
    run = train(cfg)
    log = _last_log(run)
    for name in terms:
        assert math.isfinite(log[f"train/{name}"]), name
    summary = json.loads((run / "summary.json").read_text())
    student = load_checkpoint(run / "checkpoints" / "last.ckpt")["method"]["players"]["student"]
    # the DKD schedule counted every training step of the epoch, and the checkpoint keeps it
    assert int(student["objective.terms.dkd.step"]) == -(-summary["data"]["n_transfer"] // 50)
    assert any(k.startswith("objective.terms.srd.connector.") for k in student)
    assert not any(k.startswith("objective.terms.srd._fc") or ".srd.fc." in k for k in student)


def test_logit_terms_are_refused_for_generator_students(tmp_path):
    from kdlab.data import dataset_spec
    from kdlab.engine.generators import save_generator
    from kdlab.methods import METHODS
    from kdlab.models import build_generator

    gen = save_generator(build_generator("dcgan", 1, 28, d=4, latent_dim=8), tmp_path / "g.safetensors")
    for name, missing in (("dkd", "labels, logits"), ("dist", "logits"), ("srd", "logits"), ("kd", "logits")):
        c = load_run_config([{"method": "gan-compression", "teacher": {"checkpoint": str(gen)},
                              "model": {"name": "dcgan", "kwargs": {"d": 2}}, "objective": {"student": {name: {"weight": 1}}}}])
        with pytest.raises(ConfigError, match=rf"term '{name}' needs {missing}, which method 'gan-compression'"):
            METHODS.get(c.method)(c, dataset_spec("fashion-mnist"))
