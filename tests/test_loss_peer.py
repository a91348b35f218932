"""The peer losses of the reference frameworks against their official code's formulas, transcribed in numpy:

* logit standardisation (Sun et al., CVPR 2024): sunshangquan/logit-standardization-KD
  ``mdistiller/distillers/KD.py`` ``normalize`` + ``kd_loss`` (``logit_stand=True``);
* channel similarity: torchdistill ``torchdistill/losses/mid_level.py`` ``ChSimLoss.batch_loss`` and
  ADLab-AutoDrive/ICKD ``Cifar100/distiller_zoo/ICKD.py`` ``ICKDLoss.batch_loss`` (its ``Embed`` aside);
* SKD (Streamlined KD, CVPR 2026): torchdistill ``SKDInstanceLoss`` / ``SKDDirectionLoss`` (the paper's
  formulas) and the authors' ``distillers/SKD.py`` ``kd_loss``, ``SKD_loss``, ``SKD.forward_train`` (code form).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.config import ConfigError
from kdlab.data.batch import Batch
from kdlab.losses import chsim_loss, kd_loss, skd_direction_loss, skd_instance_loss, standardize_logits
from kdlab.models import build_model
from kdlab.terms import Outputs, term_config
from kdlab.terms.chsim import ChSimTerm
from kdlab.terms.kd import KDTerm
from test_loss_logit import _ctx, _rand, np_kl_rows, np_softmax


# ------------------------------------------------------------------ numpy transcriptions of the official code
def np_standardize(z):  # logit-standardization-KD normalize: (z - mean) / (1e-7 + std), torch's std is unbiased
    return (z - z.mean(-1, keepdims=True)) / (1e-7 + z.std(-1, ddof=1, keepdims=True))


def np_ls_kd(zs, zt, t):  # logit-standardization-KD kd_loss: kl_div(...).sum(1).mean() * T^2
    ps, pt = np_softmax(np_standardize(zs) / t), np_softmax(np_standardize(zt) / t)
    return np_kl_rows(pt, ps).mean() * t * t


def np_chsim(fs, ft, divisor):  # ChSimLoss.batch_loss / ICKDLoss.batch_loss
    b, c = fs.shape[:2]
    def emb(f):
        f = f.reshape(b, c, -1)
        g = np.einsum("bcn,bdn->bcd", f, f)
        return g / np.maximum(np.linalg.norm(g, axis=2, keepdims=True), 1e-12)
    d = emb(fs) - emb(ft)
    return (d * d).sum() / (c * b * b if divisor == "torchdistill" else c * b)


def np_skd_instance(zs, zt, t, code):
    kl = np_kl_rows(np_softmax(zt / t), np_softmax(zs / t)).mean()
    if not code:
        return kl
    conf = np_softmax(zt).max(1)
    mask = conf <= np.percentile(conf, 50)
    return (kl * t * t * mask).mean()  # the authors' (kd_loss(...) * mask).mean(): kd_loss is a batch scalar


def np_skd_direction(zs, zt, lam, code):
    c = zs.shape[1]
    ns, nt = zs / np.linalg.norm(zs, axis=1, keepdims=True), zt / np.linalg.norm(zt, axis=1, keepdims=True)
    d = ns @ ns.T - nt @ nt.T
    if code:
        d = d / c
    cov = np.cov(d.T) + lam * np.eye(d.shape[1])  # torch.cov(diff.T): rows of diff.T are the variables
    m = np.einsum("bi,ij,bj->b", d, np.linalg.inv(cov), d)
    loss = np.sqrt(m).mean()
    if not code:
        return loss
    mass = np_softmax(zt).sum(0)
    return (loss * (mass <= np.percentile(mass, 50))).mean()


# ------------------------------------------------------------------ logit standardisation
@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_logit_standardised_kd_matches_official_code(t):
    zs, zt = _rand(6, 10, seed=1, scale=3.0), _rand(6, 10, seed=2, scale=5.0)
    got = kd_loss(zs, zt, t, standardize=True).item()
    assert got == pytest.approx(np_ls_kd(zs.numpy(), zt.numpy(), t), rel=1e-9)
    # invariant to a shift and a positive scale of either row (the point of the z-score); plain KD is not
    assert kd_loss(zs * 7 + 3, zt, t, standardize=True).item() == pytest.approx(got, rel=1e-6)
    assert abs(kd_loss(zs * 7 + 3, zt, t).item() - kd_loss(zs, zt, t).item()) > 1e-3


def test_standardize_logits_rows_and_errors():
    z = standardize_logits(_rand(4, 5, seed=3))
    assert torch.allclose(z.mean(1), torch.zeros(4, dtype=z.dtype), atol=1e-12)
    assert torch.allclose(z.std(1), torch.ones(4, dtype=z.dtype), atol=1e-6)
    assert torch.equal(standardize_logits(torch.ones(2, 3)), torch.zeros(2, 3))  # eps: no NaN on a constant row
    with pytest.raises(ValueError, match="K >= 2"):
        standardize_logits(torch.randn(3, 1))


def test_kd_term_standardize_option():
    zs, zt = _rand(5, 10, seed=4), _rand(5, 10, seed=5, scale=4.0)
    term = KDTerm(term_config("kd", {"temperature": 2.0, "standardize": True}), _ctx())
    assert term(Outputs(out=zs), Outputs(out=zt), Batch(size=5)).item() == pytest.approx(
        np_ls_kd(zs.numpy(), zt.numpy(), 2.0), rel=1e-9)
    assert KDTerm.Config().standardize is False  # off by default: plain Hinton KD unchanged


# ------------------------------------------------------------------ channel similarity
@pytest.mark.parametrize("norm", ["torchdistill", "ickd"])
def test_chsim_matches_torchdistill_and_ickd(norm):
    fs, ft = _rand(4, 6, 5, 3, seed=6), _rand(4, 6, 5, 3, seed=7, scale=2.0)
    got = chsim_loss(fs, ft, norm).item()
    assert got == pytest.approx(np_chsim(fs.numpy(), ft.numpy(), norm), rel=1e-9)
    assert got > 0
    assert chsim_loss(ft * 2.5, ft, norm).item() == pytest.approx(0.0, abs=1e-12)  # row-normalised: scale-free


def test_chsim_term_embed_and_errors():
    student, teacher = build_model("lenet", 10, 1, 28, channels=[4, 8], fc=16), build_model("lenet", 10, 1, 28)
    names = ["conv1"]  # [4 | 32, 28, 28] after ReLU
    pair = [[names[0], names[0]]]
    term = ChSimTerm(term_config("chsim", {"layers": pair}), _ctx(student, teacher))
    assert len(list(term.parameters())) > 0  # the student's 1x1 conv + BN embed (trained with the student)
    with pytest.raises(ConfigError, match="equal channel counts"):
        ChSimTerm(term_config("chsim", {"layers": pair, "embed": False}), _ctx(student, teacher))
    # embed off with equal channels: the loss of the two maps as they are
    term = ChSimTerm(term_config("chsim", {"layers": pair, "embed": False, "norm": "ickd"}), _ctx(teacher, teacher))
    fs, ft = _rand(3, 32, 28, 28, seed=8).float(), _rand(3, 32, 28, 28, seed=9).float()
    value = term(Outputs(out=None, features={names[0]: fs}), Outputs(out=None, features={names[0]: ft}), Batch(size=3))
    assert value.item() == pytest.approx(np_chsim(fs.double().numpy(), ft.double().numpy(), "ickd"), rel=1e-4)


# ------------------------------------------------------------------ SKD
@pytest.mark.parametrize("mode", ["paper", "code"])
@pytest.mark.parametrize("t", [1.0, 4.0])
def test_skd_instance_matches_paper_and_code(mode, t):
    zs, zt = _rand(7, 10, seed=10, scale=2.0), _rand(7, 10, seed=11, scale=3.0)
    expected = np_skd_instance(zs.numpy(), zt.numpy(), t, mode == "code")
    assert skd_instance_loss(zs, zt, t, mode).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("mode", ["paper", "code"])
@pytest.mark.parametrize("b", [6, 9])
def test_skd_direction_matches_paper_and_code(mode, b):
    zs, zt = _rand(b, 10, seed=12, scale=2.0), _rand(b, 10, seed=13, scale=3.0)
    expected = np_skd_direction(zs.numpy(), zt.numpy(), 0.1, mode == "code")
    got = skd_direction_loss(zs.requires_grad_(), zt, 0.1, mode)
    assert got.item() == pytest.approx(expected, rel=1e-7)
    got.backward()
    assert torch.isfinite(zs.grad).all() and zs.grad.abs().sum() > 0


def test_skd_direction_zero_at_agreement_with_finite_gradient_and_errors():
    zt = _rand(5, 10, seed=14)
    zs = (zt * 3.0).clone().requires_grad_()  # positive multiple: same normalised logits
    loss = skd_direction_loss(zs, zt)
    assert loss.item() < 1e-11
    loss.backward()
    assert torch.isfinite(zs.grad).all()
    with pytest.raises(ValueError, match=">= 2 examples"):
        skd_direction_loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="tikhonov"):
        skd_direction_loss(torch.randn(3, 4), torch.randn(3, 4), tikhonov=0.0)
    with pytest.raises(ValueError, match="unknown mode"):
        skd_instance_loss(torch.randn(3, 4), torch.randn(3, 4), mode="nope")


def test_peer_terms_train_in_a_distill_run(make_config):
    """Smoke test (finishes, finite, logs each term): a LeNet 4-8 student distilled from a LeNet 8-16 teacher with
    CE, logit-standardised KD, channel similarity on conv2 (embedded 8 -> 16 channels) and both SKD losses."""
    import json

    from kdlab.runner import load_run_config, train

    lenet = lambda c: {"name": "lenet", "kwargs": {"channels": c, "fc": 32}}  # noqa: E731
    teacher = train(load_run_config([make_config(name="pt", model=lenet([8, 16]), trainer={"epochs": 1})]))
    run = train(load_run_config([make_config(
        method="distill", name="peer", teacher={"checkpoint": str(teacher)}, model=lenet([4, 8]), trainer={"epochs": 1},
        objective={"student": {"ce": {"weight": 0.5}, "kd": {"weight": 1.0, "temperature": 2.0, "standardize": True},
                               "chsim": {"weight": 1.0, "layers": [["conv2", "conv2"]]},
                               "skd_instance": {"weight": 0.5, "mode": "code"},
                               "skd_direction": {"weight": 0.5, "mode": "code"}}})]))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in rows for k in r}
    for term in ("kd", "chsim", "skd_instance", "skd_direction"):
        key = next(k for k in logged if k.startswith("train/") and term in k)
        assert all(np.isfinite(r[key]) for r in rows if key in r), key
