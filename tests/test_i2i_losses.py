"""The algorithm-specific losses of the VEM paper's appendix A.2 (OMGD, GCC, GAN-Compression, CAT, CAGC) and
the image distances they share, each against an independent numpy computation of its equation or a closed
form, their defining properties, and bad input."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from kdlab.losses import (
    Conv1x1Adapters,
    FeatureDistillLoss,
    channel_attention,
    channel_distillation_loss,
    channel_distillation_losses,
    content_mask,
    foreground_saliency,
    gcc_distance,
    gcc_kd_loss,
    gram_matrix,
    gram_style_loss,
    kernel_alignment,
    kernel_alignment_loss,
    l1_reconstruction,
    lpips_distance,
    masked_distillation_loss,
    masked_perceptual_loss,
    masked_reconstruction_loss,
    perceptual_loss,
    ssim_loss,
    total_variation,
)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _np(x):
    return x.detach().numpy()


def _features(x):
    """A feature network numpy can recompute: the image and its squared channel mean pooled 2x2."""
    m = x.mean(1, keepdim=True) ** 2
    return [x, torch.nn.functional.avg_pool2d(m, 2)]


def np_features(x):
    m = x.mean(1, keepdims=True) ** 2
    b, c, h, w = m.shape
    return [x, m.reshape(b, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))]


# --------------------------------------------------------------------------- image distances
def test_l1_reconstruction_is_the_11_norm_per_example():
    s, t = _rand(3, 2, 5, 4), _rand(3, 2, 5, 4, seed=1)
    want = np.mean([np.abs(a - b).sum() for a, b in zip(_np(s), _np(t))])
    assert l1_reconstruction(s, t).item() == pytest.approx(want, rel=1e-12)
    assert l1_reconstruction(s, t, reduction="mean").item() == pytest.approx(want / 40, rel=1e-12)
    assert l1_reconstruction(s, s).item() == 0


def np_ssim(x, y, data_range, k=11, sigma=1.5):
    """Wang et al. 2004 eq. 13 with an 11x11 Gaussian window, averaged over every pixel: the images are
    reflection-padded by 5 first (torchmetrics' convention; skimage crops those borders instead)."""
    p = (k - 1) // 2
    x, y = (np.pad(a, [(0, 0)] * (a.ndim - 2) + [(p, p), (p, p)], mode="reflect") for a in (x, y))
    g = np.exp(-0.5 * ((np.arange(k) - (k - 1) / 2) / sigma) ** 2)
    g /= g.sum()

    def blur(a):  # separable valid correlation over the last two axes
        h, w = a.shape[-2:]
        rows = sum(g[i] * a[..., i:h - k + 1 + i, :] for i in range(k))
        return sum(g[j] * rows[..., j:w - k + 1 + j] for j in range(k))

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    return np.mean((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))


def test_ssim_of_an_image_with_itself_is_one_and_matches_the_formula():
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = (x + 0.2 * noise).clamp(0, 1)
    unit = (0.0, 1.0)
    assert ssim_loss(x, x, value_range=unit).item() == pytest.approx(0.0, abs=1e-9)
    assert 1 - ssim_loss(y, x, value_range=unit).item() == pytest.approx(np_ssim(_np(y), _np(x), 1.0), abs=1e-9)
    assert 0 < ssim_loss(y, x, value_range=unit).item() < 1
    # the default: [-1, 1] images are compared as their [0, 1] versions
    assert ssim_loss(2 * x - 1, 2 * x - 1).item() == pytest.approx(0.0, abs=1e-9)
    assert 1 - ssim_loss(2 * y - 1, 2 * x - 1).item() == pytest.approx(np_ssim(_np(y), _np(x), 1.0), abs=1e-9)
    with pytest.raises(ValueError, match="value_range"):
        ssim_loss(x, y, value_range=(1.0, 1.0))


def test_total_variation_of_constants_and_ramps():
    assert total_variation(torch.full((2, 3, 6, 5), 0.7)).item() == 0
    a, b, h, w, c = 0.5, -2.0, 6, 5, 3
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = (a * i + b * j).expand(2, c, h, w)
    assert total_variation(ramp).item() == pytest.approx(c * ((h - 1) * w * abs(a) + h * (w - 1) * abs(b)))
    assert total_variation(ramp, norm="l2").item() == pytest.approx(c * ((h - 1) * w * a * a + h * (w - 1) * b * b))
    assert total_variation(ramp, reduction="mean").item() == pytest.approx(
        ((h - 1) * w * abs(a) + h * (w - 1) * abs(b)) / (h * w))
    x = _rand(2, 2, 4, 3)
    xn = _np(x)
    want = np.mean([np.abs(np.diff(e, axis=1)).sum() + np.abs(np.diff(e, axis=2)).sum() for e in xn])
    assert total_variation(x).item() == pytest.approx(want, rel=1e-12)


def test_perceptual_loss_is_the_mean_squared_feature_difference():
    s, t = _rand(2, 3, 4, 4), _rand(2, 3, 4, 4, seed=1)
    fs, ft = np_features(_np(s)), np_features(_np(t))
    want = sum(np.mean((a - b) ** 2) for a, b in zip(fs, ft))
    assert perceptual_loss(s, t, _features).item() == pytest.approx(want, rel=1e-12)
    weighted = 2 * np.mean((fs[0] - ft[0]) ** 2) + 0.5 * np.mean((fs[1] - ft[1]) ** 2)
    assert perceptual_loss(s, t, _features, layer_weights=[2, 0.5]).item() == pytest.approx(weighted, rel=1e-12)
    assert perceptual_loss(s, s, _features).item() == 0


def test_lpips_form_normalises_channels_and_averages_positions():
    s, t = _rand(2, 3, 4, 4), _rand(2, 3, 4, 4, seed=1)
    want = 0.0
    for a, b in zip(np_features(_np(s)), np_features(_np(t))):
        ua = a / (np.sqrt((a ** 2).sum(1, keepdims=True)) + 1e-10)
        ub = b / (np.sqrt((b ** 2).sum(1, keepdims=True)) + 1e-10)
        want += ((ua - ub) ** 2).sum(1).mean(axis=(1, 2)).mean()
    assert lpips_distance(s, t, _features).item() == pytest.approx(want, rel=1e-10)
    assert lpips_distance(s, 3 * s, _features).item() == pytest.approx(0, abs=1e-12)  # positive scale


def test_student_gets_gradients_and_the_teacher_none():
    s = _rand(2, 3, 16, 16).requires_grad_()
    t = _rand(2, 3, 16, 16, seed=1).requires_grad_()
    loss = (l1_reconstruction(s, t) + ssim_loss(s, t) + perceptual_loss(s, t, _features)
            + lpips_distance(s, t, _features) + gram_style_loss(s, t) + channel_distillation_loss(s, t))
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


# --------------------------------------------------------------------------- OMGD, eqs. 13-14
def test_channel_distillation_is_eq14():
    s, t = _rand(3, 4, 5, 5), _rand(3, 4, 2, 3, seed=1)  # spatial sizes may differ: only GAP is compared
    gs, gt = _np(s).mean(axis=(2, 3)), _np(t).mean(axis=(2, 3))
    want = np.mean(((gs - gt) ** 2).sum(1) / 4)
    np.testing.assert_allclose(_np(channel_attention(s)), gs)
    assert channel_distillation_loss(s, t).item() == pytest.approx(want, rel=1e-12)
    assert channel_distillation_losses([s, s], [t, t]).item() == pytest.approx(2 * want, rel=1e-12)
    # only the channel means matter: a map with the teacher's means but other values gives 0
    other = _rand(3, 4, 6, 6, seed=9)
    same_means = other - other.mean(dim=(2, 3), keepdim=True) + t.mean(dim=(2, 3), keepdim=True)
    assert channel_distillation_loss(same_means, t).item() == pytest.approx(0, abs=1e-12)


# --------------------------------------------------------------------------- GCC, eqs. 17-18
def np_gram(x, normalize="chw"):
    b, c = x.shape[:2]
    f = x.reshape(b, c, -1)
    g = np.einsum("bin,bjn->bij", f, f)
    return g / (c * f.shape[2]) if normalize == "chw" else g


def test_gram_matrix_and_style_loss_against_numpy():
    s, t = _rand(2, 3, 4, 5), _rand(2, 3, 4, 5, seed=1)
    for norm in ("chw", "none"):
        np.testing.assert_allclose(_np(gram_matrix(s, norm)), np_gram(_np(s), norm), rtol=1e-12)
        want = np.mean(((np_gram(_np(s), norm) - np_gram(_np(t), norm)) ** 2).sum(axis=(1, 2)))
        assert gram_style_loss(s, t, norm).item() == pytest.approx(want, rel=1e-12)
    assert gram_style_loss(s, s).item() == 0
    # a channel-wise sign flip keeps Gram's diagonal but not the off-diagonal entries
    assert gram_style_loss(s, -s).item() == 0
    assert gram_style_loss(s, s * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)[:, None, None]).item() > 0


def test_gcc_distance_and_kd_loss_are_eqs_17_18():
    x, y = _rand(2, 3, 4, 4), _rand(2, 3, 4, 4, seed=1)

    def d(a, b, lm=0.3, ls=2.0):
        return np.mean(lm * ((a - b) ** 2).sum(axis=(1, 2, 3))
                       + ls * ((np_gram(a) - np_gram(b)) ** 2).sum(axis=(1, 2)))

    assert gcc_distance(x, y, 0.3, 2.0).item() == pytest.approx(d(_np(x), _np(y)), rel=1e-12)
    assert gcc_distance(x, x, 0.3, 2.0).item() == 0
    g_s, g_t = _rand(2, 5, 8, 8, seed=2), _rand(2, 5, 8, 8, seed=3)
    img_s, img_t = _rand(2, 3, 8, 8, seed=4), _rand(2, 3, 8, 8, seed=5)
    got = gcc_kd_loss([x, x], [y, x], [g_s], [g_t], img_s, img_t, lambda_recon=10, lambda_mse=0.3, lambda_style=2.0)
    want = (d(_np(x), _np(y)) + 0 + d(_np(g_s), _np(g_t))
            + 10 * np.mean(np.abs(_np(img_s) - _np(img_t)).sum(axis=(1, 2, 3))))
    assert got.item() == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------- GAN-Compression, eq. 21
def test_feature_distillation_is_zero_when_the_adapter_maps_student_to_teacher():
    loss = FeatureDistillLoss([3, 2], [5, 4]).double()
    s1, s2 = _rand(2, 3, 6, 6), _rand(2, 2, 3, 3, seed=1)
    with torch.no_grad():
        t1, t2 = loss.adapt([s1, s2])
    assert loss([s1, s2], [t1, t2]).item() == pytest.approx(0, abs=1e-20)


def test_feature_distillation_against_numpy():
    loss = FeatureDistillLoss([3], [4]).double()
    s, t = _rand(2, 3, 5, 5), _rand(2, 4, 5, 5, seed=1)
    w = _np(loss.adapters[0].weight)[:, :, 0, 0]
    b = _np(loss.adapters[0].bias)
    f = np.einsum("oc,bchw->bohw", w, _np(s)) + b[None, :, None, None]
    want = np.mean(((f - _np(t)) ** 2).sum(axis=(1, 2, 3)))
    assert loss([s], [t]).item() == pytest.approx(want, rel=1e-10)
    mean_loss = FeatureDistillLoss([3], [4], reduction="mean").double()
    mean_loss.load_state_dict(loss.state_dict())
    assert mean_loss([s], [t]).item() == pytest.approx(want / (4 * 25), rel=1e-10)
    loss([s], [t]).backward()
    assert loss.adapters[0].weight.grad is not None


# --------------------------------------------------------------------------- CAT, eq. 23
def np_ka(s, t):
    """Eq. 23's ratio literally, with the D_s x D_t and D x D matrices rho^T rho."""
    s, t = s.reshape(len(s), -1), t.reshape(len(t), -1)
    return np.linalg.norm(s.T @ t) ** 2 / (np.linalg.norm(s.T @ s) * np.linalg.norm(t.T @ t))


def test_kernel_alignment_is_eq23():
    s, t = _rand(4, 2, 3, 3), _rand(4, 5, 2, 2, seed=1)  # different c, h, w: only n must agree
    assert kernel_alignment(s, t).item() == pytest.approx(np_ka(_np(s), _np(t)), rel=1e-10)
    assert kernel_alignment_loss([s, t], [t, t]).item() == pytest.approx(-np_ka(_np(s), _np(t)) - 1, rel=1e-10)
    sc, tc = (x.flatten(1) - x.flatten(1).mean(0) for x in (s, t))
    assert kernel_alignment(s, t, center=True).item() == pytest.approx(np_ka(_np(sc), _np(tc)), rel=1e-10)


def test_kernel_alignment_of_zero_features_is_zero_without_nan_gradients():
    s = torch.zeros(4, 3, requires_grad=True)
    k = kernel_alignment(s, _rand(4, 5).float())
    k.backward()
    assert k.item() == 0 and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("seed", range(4))
def test_kernel_alignment_self_one_and_invariances(seed):
    x = _rand(6, 2, 3, 3, seed=seed)
    assert kernel_alignment(x, x).item() == pytest.approx(1, rel=1e-12)
    q, _ = torch.linalg.qr(_rand(18, 18, seed=100 + seed))
    rotated = (x.flatten(1) @ q).reshape(x.shape)
    scale = float(torch.rand((), generator=torch.Generator().manual_seed(seed))) * 10 + 0.1
    y = _rand(6, 4, 2, 2, seed=50 + seed)
    base = kernel_alignment(x, y).item()
    assert kernel_alignment(x, rotated).item() == pytest.approx(1, rel=1e-10)
    assert kernel_alignment(rotated, y).item() == pytest.approx(base, rel=1e-10)
    assert kernel_alignment(scale * x, y).item() == pytest.approx(base, rel=1e-10)
    assert kernel_alignment(x, -scale * y).item() == pytest.approx(base, rel=1e-10)
    assert 0 <= base <= 1


# --------------------------------------------------------------------------- CAGC, eqs. 25-27
def test_masked_losses_with_all_ones_and_all_zeros_masks():
    s, t = _rand(2, 3, 8, 8), _rand(2, 3, 8, 8, seed=1)
    fs, ft = [_rand(2, 4, 4, 4, seed=2)], [_rand(2, 4, 4, 4, seed=3)]
    ones, zeros = torch.ones(2, 1, 8, 8, dtype=torch.float64), torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    assert masked_reconstruction_loss(s, t, ones).item() == pytest.approx(l1_reconstruction(s, t).item(), rel=1e-12)
    assert masked_perceptual_loss(s, t, ones, _features).item() == pytest.approx(
        lpips_distance(s, t, _features).item(), rel=1e-12)
    assert masked_distillation_loss(fs, ft, ones).item() == pytest.approx(
        np.mean(np.abs(_np(fs[0]) - _np(ft[0])).sum(axis=(1, 2, 3))), rel=1e-12)
    assert masked_reconstruction_loss(s, t, zeros).item() == 0
    assert masked_distillation_loss(fs, ft, zeros).item() == 0
    assert masked_perceptual_loss(s, t, zeros, _features).item() == 0


def test_masked_losses_against_numpy_with_a_random_mask():
    s, t = _rand(2, 3, 8, 8), _rand(2, 3, 8, 8, seed=1)
    m = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(7)) > 0.5).double()
    mn = _np(m)
    want = np.mean(np.abs(mn * (_np(s) - _np(t))).sum(axis=(1, 2, 3)))
    assert masked_reconstruction_loss(s, t, m).item() == pytest.approx(want, rel=1e-12)
    assert masked_reconstruction_loss(s, t, m, "mean").item() == pytest.approx(want / (3 * 64), rel=1e-12)
    # eq. 26 on maps at half resolution: the mask is taken at every other pixel (nearest neighbour)
    fs, ft = _rand(2, 4, 4, 4, seed=2), _rand(2, 4, 4, 4, seed=3)
    want = np.mean(np.abs(mn[:, :, ::2, ::2] * (_np(fs) - _np(ft))).sum(axis=(1, 2, 3)))
    assert masked_distillation_loss([fs], [ft], m).item() == pytest.approx(want, rel=1e-12)
    assert masked_perceptual_loss(s, t, m, _features).item() == pytest.approx(
        lpips_distance(m * s, m * t, _features).item(), rel=1e-12)


def test_default_saliency_finds_an_object_on_a_plain_background():
    img = torch.full((2, 3, 10, 10), -1.0)
    img[0, :, 2:6, 3:8] = 0.8
    img[1, 1, 4:9, 1:3] = 0.0
    mask = content_mask(img)
    want = torch.zeros(2, 1, 10, 10)
    want[0, :, 2:6, 3:8] = 1
    want[1, :, 4:9, 1:3] = 1
    assert torch.equal(mask, want)
    assert foreground_saliency(torch.full((1, 1, 5, 5), 0.3)).sum().item() == 0


def test_a_saliency_function_of_the_wrong_shape_is_a_clear_error():
    img = _rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=re.escape("[2, 1, 8, 8]") + ".*" + re.escape("(2, 1, 4, 4)")):
        content_mask(img, saliency=lambda x: torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        content_mask(img, saliency=lambda x: 2 * torch.ones(2, 1, 8, 8))
    custom = content_mask(img, saliency=lambda x: (x.mean(1, keepdim=True) > 0).float())
    assert custom.shape == (2, 1, 8, 8)


# --------------------------------------------------------------------------- bad input and registry
A, B = _rand(2, 3, 8, 8), _rand(2, 3, 6, 6)
MISMATCHES = {
    "l1": lambda: l1_reconstruction(A, B),
    "ssim": lambda: ssim_loss(A, B),
    "perceptual": lambda: perceptual_loss(A, B, _features),
    "lpips": lambda: lpips_distance(A, B, _features),
    "gram": lambda: gram_style_loss(A, B),
    "gcc": lambda: gcc_distance(A, B),
    "channel": lambda: channel_distillation_loss(A, _rand(2, 4, 8, 8)),
    "ka": lambda: kernel_alignment(A, _rand(3, 3, 8, 8)),
    "masked_recon": lambda: masked_reconstruction_loss(A, B, torch.ones(2, 1, 8, 8, dtype=torch.float64)),
    "masked_distill": lambda: masked_distillation_loss([A], [B], torch.ones(2, 1, 8, 8, dtype=torch.float64)),
}


@pytest.mark.parametrize("name", sorted(MISMATCHES))
def test_shape_mismatch_names_both_shapes(name):
    with pytest.raises(ValueError) as err:
        MISMATCHES[name]()
    msg = str(err.value)
    assert "(2, 3, 8, 8)" in msg and re.search(r"\((2, 3, 6, 6|2, 4, 8, 8|3, 3, 8, 8)\)", msg), msg


def test_feature_distillation_bad_shapes():
    loss = FeatureDistillLoss([3], [4]).double()
    with pytest.raises(ValueError, match=re.escape("(2, 5, 4, 4)")):
        loss([_rand(2, 5, 4, 4)], [_rand(2, 4, 4, 4)])
    with pytest.raises(ValueError, match=re.escape("(2, 4, 4, 4)") + ".*" + re.escape("(2, 4, 3, 3)")):
        loss([_rand(2, 3, 4, 4)], [_rand(2, 4, 3, 3)])
    with pytest.raises(ValueError):
        Conv1x1Adapters([3, 2], [4])
    with pytest.raises(ValueError, match="reduction"):
        FeatureDistillLoss([3], [4], reduction="batchmean")
