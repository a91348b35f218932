"""Tests of kdlab.losses against independent computations (numpy, closed forms, autograd)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from kdlab.losses import (
    HintLoss,
    attention_loss,
    attention_losses,
    attention_map,
    cross_entropy,
    kd_loss,
    logit_matching,
)

FIXTURE = Path(__file__).parent / "fixtures" / "losses.json"


def _rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# ---------------------------------------------------------------------------------------------
# numpy reference implementations (written from the formulas, not from kdlab)
def np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_kd(zs, zt, t):
    ps, pt = np_softmax(zs / t), np_softmax(zt / t)
    return t * t * np.sum(pt * np.log(pt / ps)) / zs.shape[0]


def np_att_paper(fs, ft, p=2):
    def att(f):
        a = (np.abs(f) ** p).sum(axis=1).reshape(f.shape[0], -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return np.mean(np.linalg.norm(att(ft) - att(fs), axis=1))


def np_att_zagoruyko(fs, ft, p=2):
    # szagoruyko/attention-transfer: at(x) = F.normalize(x.pow(2).mean(1).view(B, -1))
    def at(f):
        a = (f**p).mean(axis=1).reshape(f.shape[0], -1)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return np.mean((at(fs) - at(ft)) ** 2)


# ---------------------------------------------------------------------------------------------
# cross-entropy
def test_cross_entropy_matches_numpy():
    z, y = _rand(5, 7, seed=1), torch.tensor([0, 6, 3, 3, 1])
    expected = -np.mean(np.log(np_softmax(z.numpy())[np.arange(5), y.numpy()]))
    assert cross_entropy(z, y).item() == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_errors_name_values():
    z = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"\[0, 4\).*max 4"):
        cross_entropy(z, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        cross_entropy(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="float"):
        cross_entropy(z, torch.tensor([0.0, 1.0, 2.0]))


# ---------------------------------------------------------------------------------------------
# KD
@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_matches_numpy_kl_with_t_squared(t):
    zs, zt = _rand(6, 10, seed=2, scale=3.0), _rand(6, 10, seed=3, scale=3.0)
    expected = np_kd(zs.numpy(), zt.numpy(), t)
    assert kd_loss(zs, zt, temperature=t).item() == pytest.approx(expected, rel=1e-10)


def test_kd_float32_inputs_close_to_float64_reference():
    zs, zt = _rand(8, 10, seed=4, scale=5.0), _rand(8, 10, seed=5, scale=5.0)
    out = kd_loss(zs.float(), zt.float(), temperature=4.0)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(np_kd(zs.numpy(), zt.numpy(), 4.0), rel=1e-5)


@pytest.mark.parametrize("t", [1.0, 3.0])
def test_kd_two_class_closed_form(t):
    # With 2 classes softmax(z/T) is Bernoulli(sigmoid((z1 - z0)/T)); KL of two Bernoullis.
    s, tt = (0.3, 1.7), (-0.4, 2.2)
    p = 1.0 / (1.0 + math.exp(-(s[1] - s[0]) / t))
    q = 1.0 / (1.0 + math.exp(-(tt[1] - tt[0]) / t))
    kl = q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
    out = kd_loss(torch.tensor([s], dtype=torch.float64), torch.tensor([tt], dtype=torch.float64), t)
    assert out.item() == pytest.approx(t * t * kl, rel=1e-12)


def test_kd_zero_for_identical_and_shifted_logits():
    z = _rand(4, 5, seed=6, scale=4.0)
    assert kd_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-12)
    # softmax is shift-invariant per row, so the KD loss is too
    assert kd_loss(z, z + torch.tensor([[1.0], [-3.0], [7.0], [0.5]], dtype=z.dtype)).item() == pytest.approx(
        0.0, abs=1e-12
    )
    assert kd_loss(z, _rand(4, 5, seed=7)).item() > 0


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_gradient_is_t_times_prob_difference_over_batch(t):
    b = 5
    zs = _rand(b, 6, seed=8, scale=2.0).requires_grad_(True)
    zt = _rand(b, 6, seed=9, scale=2.0)
    kd_loss(zs, zt, temperature=t).backward()
    ps = torch.softmax(zs.detach() / t, dim=1)
    pt = torch.softmax(zt / t, dim=1)
    torch.testing.assert_close(zs.grad, t * (ps - pt) / b, rtol=1e-10, atol=1e-12)


def test_kd_gradient_against_autograd_functional_jacobian():
    zs, zt = _rand(3, 4, seed=10), _rand(3, 4, seed=11)
    (grad,) = torch.autograd.functional.jacobian(lambda s: kd_loss(s, zt, 2.0), (zs,))
    p = lambda z: np_softmax(z.numpy() / 2.0)  # noqa: E731
    np.testing.assert_allclose(grad.numpy(), 2.0 * (p(zs) - p(zt)) / 3, rtol=1e-10, atol=1e-12)


def test_teacher_gets_no_gradient_from_any_loss():
    s = _rand(4, 5, seed=12).requires_grad_(True)
    t = _rand(4, 5, seed=13).requires_grad_(True)
    (kd_loss(s, t) + logit_matching(s, t) + logit_matching(s, t, mode="mse")).backward()
    assert t.grad is None and s.grad is not None
    fs = _rand(2, 3, 4, 4, seed=14).requires_grad_(True)
    ft = _rand(2, 5, 4, 4, seed=15).requires_grad_(True)
    hint = HintLoss(3, 5).double()
    (attention_loss(fs, ft) + attention_loss(fs, ft, mode="zagoruyko") + hint(fs, ft)).backward()
    assert ft.grad is None and fs.grad is not None


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), "warm", None, True])
def test_kd_bad_temperature_names_the_value(bad):
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        kd_loss(z, z, temperature=bad)


def test_logit_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(2, 3\)"):
        logit_matching(torch.zeros(3, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\(6,\)"):
        kd_loss(torch.zeros(6), torch.zeros(6))


# ---------------------------------------------------------------------------------------------
# logit matching
def test_logit_matching_matches_numpy_both_modes():
    zs, zt = _rand(7, 10, seed=16, scale=3.0), _rand(7, 10, seed=17, scale=3.0)
    d = zs.numpy() - zt.numpy()
    assert logit_matching(zs, zt).item() == pytest.approx(np.mean(np.sum(d**2, axis=1)), rel=1e-12)
    assert logit_matching(zs, zt, mode="paper").item() == pytest.approx(np.mean(np.sum(d**2, axis=1)), rel=1e-12)
    assert logit_matching(zs, zt, mode="mse").item() == pytest.approx(np.mean(d**2), rel=1e-12)
    assert logit_matching(zs, zs.clone()).item() == 0.0


def test_logit_matching_bad_mode_lists_accepted():
    with pytest.raises(ValueError, match=r"'l2'.*'paper'.*'mse'"):
        logit_matching(torch.zeros(2, 3), torch.zeros(2, 3), mode="l2")


# ---------------------------------------------------------------------------------------------
# hints
def test_hint_regressor_shapes_4d_and_2d():
    h4 = HintLoss(3, 8)
    fs, ft = torch.randn(2, 3, 5, 5), torch.randn(2, 8, 5, 5)
    assert h4.regressor(fs).shape == (2, 8, 5, 5)
    assert h4(fs, ft).shape == ()
    assert isinstance(h4.regressor[0], nn.Conv2d) and h4.regressor[0].kernel_size == (1, 1)
    assert isinstance(h4.regressor[1], nn.BatchNorm2d)
    h2 = HintLoss(16, 32, ndim=2)
    vs, vt = torch.randn(4, 16), torch.randn(4, 32)
    assert h2.regressor(vs).shape == (4, 32)
    assert h2(vs, vt).shape == ()
    assert isinstance(h2.regressor, nn.Linear)


def test_hint_from_shapes_picks_the_regressor():
    assert HintLoss.from_shapes((3, 7, 7), (6, 7, 7)).ndim == 4
    h = HintLoss.from_shapes((100,), (200,))
    assert h.ndim == 2 and h.regressor.in_features == 100 and h.regressor.out_features == 200
    with pytest.raises(ValueError, match=r"\(3, 7, 7\).*\(6, 4, 4\)"):
        HintLoss.from_shapes((3, 7, 7), (6, 4, 4))


def test_hint_spatial_mismatch_names_both_shapes():
    h = HintLoss(3, 8)
    with pytest.raises(ValueError, match=r"\(2, 3, 5, 5\).*\(2, 8, 4, 4\)"):
        h(torch.randn(2, 3, 5, 5), torch.randn(2, 8, 4, 4))


def test_hint_other_errors():
    with pytest.raises(ValueError, match=r"built for 3 student and 8 teacher.*\(2, 4, 5, 5\)"):
        HintLoss(3, 8)(torch.randn(2, 4, 5, 5), torch.randn(2, 8, 5, 5))
    with pytest.raises(ValueError, match=r"ndim=4.*\(2, 3\)"):
        HintLoss(3, 8)(torch.randn(2, 3), torch.randn(2, 8))
    with pytest.raises(ValueError, match="0"):
        HintLoss(0, 8)
    with pytest.raises(ValueError, match="3"):
        HintLoss(3, 8, ndim=3)


def test_hint_values_against_numpy():
    # 2-D: linear regressor with set weights; 4-D: 1x1 conv + BatchNorm (training-mode batch stats).
    h2 = HintLoss(3, 2, ndim=2).double()
    w, b = _rand(2, 3, seed=18), _rand(2, seed=19)
    with torch.no_grad():
        h2.regressor.weight.copy_(w)
        h2.regressor.bias.copy_(b)
    xs, xt = _rand(5, 3, seed=20), _rand(5, 2, seed=21)
    expected = np.mean((xs.numpy() @ w.numpy().T + b.numpy() - xt.numpy()) ** 2)
    assert h2(xs, xt).item() == pytest.approx(expected, rel=1e-12)

    h4 = HintLoss(3, 2).double()
    wc = _rand(2, 3, seed=22)
    with torch.no_grad():
        h4.regressor[0].weight.copy_(wc.view(2, 3, 1, 1))
    fs, ft = _rand(4, 3, 3, 3, seed=23), _rand(4, 2, 3, 3, seed=24)
    r = np.einsum("oc,bchw->bohw", wc.numpy(), fs.numpy())
    r = (r - r.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(r.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    assert h4(fs, ft).item() == pytest.approx(np.mean((r - ft.numpy()) ** 2), rel=1e-10)


# ---------------------------------------------------------------------------------------------
# attention transfer
def test_attention_map_unit_norm_and_formula():
    f = _rand(3, 4, 5, 6, seed=25)
    a = attention_map(f)
    assert a.shape == (3, 30)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3, dtype=a.dtype))
    raw = (f.numpy() ** 2).sum(axis=1).reshape(3, -1)
    np.testing.assert_allclose(a.numpy(), raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-12)
    a3 = attention_map(f, p=3)
    raw3 = (np.abs(f.numpy()) ** 3).sum(axis=1).reshape(3, -1)
    np.testing.assert_allclose(a3.numpy(), raw3 / np.linalg.norm(raw3, axis=1, keepdims=True), rtol=1e-12)


def test_attention_map_zero_feature_is_finite():
    a = attention_map(torch.zeros(2, 3, 4, 4))
    assert torch.all(a == 0)


def test_attention_map_half_precision_upcast():
    f = torch.full((1, 512, 2, 2), 300.0, dtype=torch.float16)  # 512 * 300^2 overflows float16
    a = attention_map(f)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, torch.full((1, 4), 0.5))


@pytest.mark.parametrize("mode", ["paper", "zagoruyko"])
def test_attention_loss_zero_for_identical_maps_with_finite_gradient(mode):
    f = _rand(2, 4, 5, 5, seed=26)
    fs = f.clone().requires_grad_(True)
    loss = attention_loss(fs, f, mode=mode)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(fs.grad).all()


@pytest.mark.parametrize("mode", ["paper", "zagoruyko"])
@pytest.mark.parametrize("c", [0.01, 3.0, 250.0])
def test_attention_loss_invariant_to_positive_scaling(mode, c):
    fs, ft = _rand(3, 4, 6, 6, seed=27), _rand(3, 8, 6, 6, seed=28)
    base = attention_loss(fs, ft, mode=mode).item()
    assert attention_loss(c * fs, ft, mode=mode).item() == pytest.approx(base, rel=1e-9)
    assert attention_loss(fs, c * ft, mode=mode).item() == pytest.approx(base, rel=1e-9)
    # sign flips do not matter either: the map uses |Z|^p
    assert attention_loss(-fs, ft, mode=mode).item() == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("p", [2, 4])
def test_attention_loss_matches_numpy_eq9_and_zagoruyko_code(p):
    # channels differ (5 vs 12) on purpose
    fs, ft = _rand(4, 5, 7, 7, seed=29), _rand(4, 12, 7, 7, seed=30)
    assert attention_loss(fs, ft, p=p).item() == pytest.approx(np_att_paper(fs.numpy(), ft.numpy(), p), rel=1e-10)
    assert attention_loss(fs, ft, p=p, mode="zagoruyko").item() == pytest.approx(
        np_att_zagoruyko(fs.numpy(), ft.numpy(), p), rel=1e-10
    )


def test_attention_paper_is_unsquared_norm_of_zagoruyko_difference():
    # relation between the two modes for a batch of one: paper^2 == zagoruyko * H * W
    fs, ft = _rand(1, 3, 4, 5, seed=31), _rand(1, 6, 4, 5, seed=32)
    paper = attention_loss(fs, ft).item()
    zag = attention_loss(fs, ft, mode="zagoruyko").item()
    assert paper**2 == pytest.approx(zag * 20, rel=1e-10)


def test_attention_spatial_mismatch_names_both_sizes():
    with pytest.raises(ValueError, match=r"8x8.*4x4"):
        attention_loss(torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4))


def test_attention_other_errors():
    f = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"'l1'.*'paper'.*'zagoruyko'"):
        attention_loss(f, f, mode="l1")
    with pytest.raises(ValueError, match=r"-1"):
        attention_map(f, p=-1)
    with pytest.raises(ValueError, match=r"\(2, 3, 16\)"):
        attention_map(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match=r"\(3, 3, 4, 4\).*\(2, 3, 4, 4\)"):
        attention_loss(torch.randn(3, 3, 4, 4), f)


def test_attention_losses_sums_pairs():
    pairs = [
        (_rand(2, 3, 8, 8, seed=33), _rand(2, 6, 8, 8, seed=34)),
        (_rand(2, 5, 4, 4, seed=35), _rand(2, 9, 4, 4, seed=36)),
    ]
    expected = sum(np_att_paper(s.numpy(), t.numpy()) for s, t in pairs)
    assert attention_losses(pairs).item() == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="pair 1.*4x4.*2x2"):
        attention_losses([pairs[0], (pairs[1][0], torch.randn(2, 9, 2, 2, dtype=torch.float64))])
    with pytest.raises(ValueError, match="at least one"):
        attention_losses([])


# ---------------------------------------------------------------------------------------------
# regression fixture (expected values from tests/fixtures/make_losses_fixture.py, numpy only)
@pytest.fixture(scope="module")
def fx():
    data = json.loads(FIXTURE.read_text())
    t = lambda k: torch.tensor(data["inputs"][k], dtype=torch.float64)  # noqa: E731
    return data, t


def test_fixture_logit_losses(fx):
    data, t = fx
    e = data["expected"]
    zs, zt = t("student_logits"), t("teacher_logits")
    labels = torch.tensor(data["inputs"]["labels"])
    assert cross_entropy(zs, labels).item() == pytest.approx(e["ce"], rel=1e-10)
    for temp in data["inputs"]["temperatures"]:
        assert kd_loss(zs, zt, temperature=temp).item() == pytest.approx(e["kd"][str(temp)], rel=1e-10)
    assert logit_matching(zs, zt, mode="paper").item() == pytest.approx(e["logits_paper"], rel=1e-10)
    assert logit_matching(zs, zt, mode="mse").item() == pytest.approx(e["logits_mse"], rel=1e-10)
    # float32 path agrees to float32 precision
    assert kd_loss(zs.float(), zt.float(), 4.0).item() == pytest.approx(e["kd"]["4.0"], rel=1e-5)


def test_fixture_attention(fx):
    data, t = fx
    e = data["expected"]
    fs, ft = t("student_feature"), t("teacher_feature")
    np.testing.assert_allclose(attention_map(fs).numpy(), e["attention_map_student_p2"], rtol=1e-10)
    np.testing.assert_allclose(attention_map(ft).numpy(), e["attention_map_teacher_p2"], rtol=1e-10)
    for p in (2, 4):
        assert attention_loss(fs, ft, p=p).item() == pytest.approx(e[f"attention_paper_p{p}"], rel=1e-10)
        assert attention_loss(fs, ft, p=p, mode="zagoruyko").item() == pytest.approx(
            e[f"attention_zagoruyko_p{p}"], rel=1e-10
        )


def test_fixture_hints(fx):
    data, t = fx
    e = data["expected"]
    fs, ft = t("student_feature"), t("teacher_feature")
    h4 = HintLoss(fs.shape[1], ft.shape[1]).double().train()
    assert h4.regressor[1].eps == data["inputs"]["hint_bn_eps"]
    with torch.no_grad():
        h4.regressor[0].weight.copy_(t("hint_conv_weight")[:, :, None, None])
    assert h4(fs, ft).item() == pytest.approx(e["hint_conv_train"], rel=1e-9)
    xs, xt = t("hint_student_vec"), t("hint_teacher_vec")
    h2 = HintLoss(xs.shape[1], xt.shape[1], ndim=2).double()
    with torch.no_grad():
        h2.regressor.weight.copy_(t("hint_linear_weight"))
        h2.regressor.bias.copy_(t("hint_linear_bias"))
    assert h2(xs, xt).item() == pytest.approx(e["hint_linear"], rel=1e-10)
