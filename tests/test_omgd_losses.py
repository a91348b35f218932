"""Unit tests of OMGD's losses (style, SSIM form omgd, feature L1, TV batch_sum) and of its deeper teacher
``unet_deep``, against the transcriptions of bytedance/OMGD in tests/omgd_official.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models import build_generator

from omgd_official import _official_deepest, omgd_gram, omgd_ssim, omgd_tv


def test_style_loss_equals_omgd_gram_l1():
    """kdlab's style loss = OMGD's sum over layers of ``F.l1_loss(gram(S), gram(T))`` (transcribed above)."""
    from kdlab.losses import style_loss

    torch.manual_seed(1)
    c1, c2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 5, 3, stride=2, padding=1)
    feats = lambda img: [F.relu(c1(img)), F.relu(c2(F.relu(c1(img))))]  # noqa: E731
    s, t = torch.rand(2, 1, 8, 8) * 2 - 1, torch.rand(2, 1, 8, 8) * 2 - 1
    want = sum(F.l1_loss(omgd_gram(a), omgd_gram(b)) for a, b in zip(feats(s), feats(t)))
    with torch.no_grad():
        assert float(style_loss(s, t, feats)) == pytest.approx(float(want), rel=1e-6)
        assert float(style_loss(s, s.clone(), feats)) == 0.0


def test_ssim_omgd_form_equals_pytorch_ssim():
    """``ssim`` with ``form: omgd`` = 1 - OMGD's pytorch_ssim on the raw [-1, 1] images (transcribed above); the
    default form (torchmetrics on [0, 1]) is another number, so the form matters."""
    from kdlab.losses import ssim_loss

    torch.manual_seed(3)
    s, t = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    t = 0.5 * s + 0.5 * t
    want = 1 - omgd_ssim(s, t)
    assert float(ssim_loss(s, t, form="omgd")) == pytest.approx(float(want), rel=1e-5)
    assert abs(float(ssim_loss(s, t)) - float(want)) > 1e-3
    assert float(ssim_loss(s, s.clone(), form="omgd")) == pytest.approx(0.0, abs=1e-6)


def test_feature_l1_and_tv_equal_omgd():
    """``perceptual`` with ``distance: l1`` = OMGD's ``F.l1_loss(Sfeatures[1], Tfeatures[1])``; ``tv`` with
    ``reduction: batch_sum`` = OMGD's diff_i + diff_j summed over the batch."""
    from kdlab.losses import perceptual_loss, total_variation

    torch.manual_seed(2)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    s, t = torch.rand(3, 1, 6, 6) * 2 - 1, torch.rand(3, 1, 6, 6) * 2 - 1
    want = F.l1_loss(F.relu(conv(s)), F.relu(conv(t)))
    got = perceptual_loss(s, t, lambda img: [F.relu(conv(img))], distance="l1")
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    assert float(total_variation(s, "l1", "batch_sum")) == pytest.approx(float(omgd_tv(s)), rel=1e-6)
    with pytest.raises(ValueError, match="distance"):
        perceptual_loss(s, t, lambda img: [img], distance="huber")


@pytest.mark.parametrize("size,ngf", [(256, 4), (32, 4)])
def test_unet_deep_has_the_official_deeper_teachers_parameters(size, ngf):
    """``unet_deep`` = OMGD's ``unet_deepest_256`` (num_downs 8 at 256 px): the same multiset of parameter shapes."""
    ours = build_generator("unet_deep", 3, size, in_channels=3, ngf=ngf)
    theirs = _official_deepest(3, 3, ours.num_downs, ngf)
    shapes = lambda net: sorted(tuple(p.shape) for p in net.parameters())  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    x = torch.rand(1, 3, size, size) * 2 - 1
    assert ours(x).shape == x.shape and float(ours(x).abs().max()) <= 1.0
