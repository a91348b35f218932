"""Translation metrics (kdlab.metrics.translation) against independent computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdlab.data.translation_set import TranslationDataset
from kdlab.metrics.translation import compression_table, domain_accuracy, paired_errors, translate

torch.set_num_threads(1)


def _images(n, c=1, s=16, seed=0):
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_mae_against_numpy_streamed_over_uneven_batches():
    fake, real = _images(10, 3, seed=1), _images(10, 3, seed=2)
    batches = [(fake[:3], real[:3]), (fake[3:4], real[3:4]), (fake[4:], real[4:])]
    out = paired_errors(iter(batches))
    f, r = (fake.numpy().astype(np.float64) + 1) / 2, (real.numpy().astype(np.float64) + 1) / 2
    assert out["n"] == 10
    assert out["mae"] == pytest.approx(np.abs(f - r).mean(), rel=1e-9)
    assert abs(out["ssim"]) < 0.1  # independent noise images are structurally unrelated
    # streaming = one pass over all images (the mean of per-image SSIMs)
    whole = paired_errors([(fake, real)])
    per_image = [paired_errors([(fake[i:i + 1], real[i:i + 1])])["ssim"] for i in range(10)]
    assert whole["ssim"] == pytest.approx(out["ssim"], abs=1e-12) == pytest.approx(np.mean(per_image), abs=1e-12)


def test_ssim_of_an_image_with_itself_is_one_and_drops_with_noise():
    x = _images(4, 1, 24, seed=3)
    same = paired_errors([(x, x.clone())])
    assert same["ssim"] == pytest.approx(1.0, abs=1e-9) and same["mae"] == 0.0
    noisy = (x + 0.3 * _images(4, 1, 24, seed=4)).clamp(-1, 1)
    assert paired_errors([(noisy, x)])["ssim"] < 0.99


def test_paired_errors_bad_input():
    with pytest.raises(ValueError, match="no batches"):
        paired_errors([])
    with pytest.raises(ValueError, match="differ in shape"):
        paired_errors([(_images(2), _images(3))])


class MeanBinClassifier(nn.Module):
    """Predicts class floor(mean pixel in [0, 1] * K) (clipped): a transparent stand-in classifier."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        assert x.min() >= 0 and x.max() <= 1  # domain_accuracy hands over [0, 1] images
        c = (x.mean(dim=(1, 2, 3)) * self.k).floor().clamp(0, self.k - 1).long()
        return nn.functional.one_hot(c, self.k).float()


def test_domain_accuracy_against_a_hand_count():
    k = 4
    levels = torch.tensor([0.1, 0.3, 0.6, 0.9, 0.1, 0.6, 0.6])  # [0,1] means -> classes 0,1,2,3,0,2,2
    imgs = (levels.reshape(-1, 1, 1, 1).expand(-1, 1, 5, 5) * 2 - 1).contiguous()
    labels = torch.tensor([0, 1, 1, 3, 0, 2, 0])  # wrong: row 2 (says 2) and row 6 (says 2) -> 5 of 7 right
    out = domain_accuracy(MeanBinClassifier(k), imgs, labels, k, batch_size=3)
    assert out["accuracy"] == pytest.approx(5 / 7) and out["n"] == 7
    # class 0: rows 0, 4, 6 -> 2 of 3; class 1: rows 1, 2 -> 1 of 2; class 2: row 5 -> 1; class 3: row 3 -> 1
    assert out["per_class"][:4] == pytest.approx([2 / 3, 1 / 2, 1.0, 1.0])
    out5 = domain_accuracy(MeanBinClassifier(5), imgs * 0 - 1, torch.zeros(7, dtype=torch.long), 5)
    assert out5["accuracy"] == 1.0 and all(math.isnan(v) for v in out5["per_class"][1:])
    assert out5["mean_class_accuracy"] == 1.0
    with pytest.raises(ValueError, match="labels must lie"):
        domain_accuracy(MeanBinClassifier(k), imgs, labels + 4, k)


def test_domain_accuracy_with_a_kdlab_classifier_normalisation():
    from kdlab.metrics import ClassifierFeatures

    lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        lin[1].weight.copy_(torch.tensor([[1.0, 1, 1, 1], [-1.0, -1, -1, -1]]))
    # normalised input (x - 0.5) / 0.5 is back in [-1, 1]: bright images -> class 0, dark -> class 1
    fn = ClassifierFeatures(lin, (0.5,), (0.5,), mode="logits")
    imgs = torch.tensor([0.8, -0.8, 0.2]).reshape(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    assert domain_accuracy(fn, imgs, torch.tensor([0, 1, 0]), 2)["accuracy"] == 1.0


def test_compression_ratios_against_hand_counts():
    teacher = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    student = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1))
    out = compression_table(teacher, student, (1, 10, 10))
    t_params = (8 * 9 + 8) + (8 * 9 + 1)
    s_params = (2 * 9 + 2) + (2 * 9 + 1)
    t_macs = 8 * 9 * 100 + 8 * 9 * 100
    s_macs = 2 * 9 * 100 + 2 * 9 * 100
    assert out["teacher"] == {"params": t_params, "macs": t_macs}
    assert out["student"] == {"params": s_params, "macs": s_macs}
    assert out["params_ratio"] == pytest.approx(t_params / s_params) and out["macs_ratio"] == pytest.approx(4.0)


def test_translate_runs_in_eval_mode_without_grad_and_restores_the_mode():
    src = torch.randint(0, 256, (7, 1, 8, 8), dtype=torch.uint8)
    ds = TranslationDataset(src, 255 - src, "paired", labels=torch.arange(7) % 3)

    class Neg(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(1)
            self.seen = []

        def forward(self, x):
            self.seen.append((self.training, torch.is_grad_enabled()))
            return -x

    g = Neg().train()
    out = list(translate(g, ds, batch_size=3))
    assert [o[0].shape[0] for o in out] == [3, 3, 1] and g.training
    assert all(s == (False, False) for s in g.seen)
    fake = torch.cat([o[1] for o in out])
    target = torch.cat([o[2] for o in out])
    assert torch.allclose(fake, target, atol=1e-6)  # -(src/127.5 - 1) == (255 - src)/127.5 - 1
    assert torch.equal(torch.cat([o[3] for o in out]), torch.arange(7) % 3)
    assert paired_errors((f, t) for _, f, t, _ in translate(g, ds))["mae"] < 1e-6
