"""Tests of kdlab.metrics against hand counts and closed forms."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdlab.metrics import (
    accuracy_under_noise,
    count_macs,
    count_parameters,
    cpu_latency_ms,
    evaluate_accuracy,
)


class FirstK(nn.Module):
    """logits = the first K input features; records its mode and inputs at each forward."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.drop = nn.Dropout(0.5)  # a submodule whose mode must be switched and restored
        self.dummy = nn.Parameter(torch.zeros(()))
        self.modes: list[bool] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training or self.drop.training)
        self.inputs.append(x.detach().clone())
        return x.flatten(1)[:, : self.k] + 0 * self.dummy


def _toy_loader(batch_size: int = 4) -> DataLoader:
    # 10 samples, 3 classes; the predicted class is the position of the 1 in x[:, 0, 0, :3]
    preds = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    labels = [0, 1, 2, 1, 1, 0, 0, 2, 2, 1]  # correct at indices 0,1,2,4,6,8 -> 6 of 10
    x = torch.zeros(10, 1, 2, 3)
    for i, p in enumerate(preds):
        x[i, 0, 0, p] = 1.0
    return DataLoader(TensorDataset(x, torch.tensor(labels)), batch_size=batch_size, shuffle=False)


def test_accuracy_equals_hand_count_and_restores_mode():
    model = FirstK()
    model.train()
    acc = evaluate_accuracy(model, _toy_loader())
    assert acc == pytest.approx(60.0)
    assert model.modes == [False, False, False]  # 3 batches (4+4+2), all evaluated in eval mode
    assert model.training and model.drop.training  # restored


def test_mixed_modes_are_restored_per_submodule():
    model = FirstK()
    model.train()
    model.drop.eval()  # e.g. a frozen part inside a training model
    evaluate_accuracy(model, _toy_loader())
    assert model.training is True and model.drop.training is False
    model.eval()
    evaluate_accuracy(model, _toy_loader())
    assert model.training is False


def test_mode_restored_on_exception():
    class Boom(FirstK):
        def forward(self, x):
            raise RuntimeError("boom")

    model = Boom()
    model.train()
    with pytest.raises(RuntimeError):
        evaluate_accuracy(model, _toy_loader())
    assert model.training and model.drop.training


def test_bad_inputs():
    with pytest.raises(ValueError, match="sigma"):
        evaluate_accuracy(FirstK(), _toy_loader(), noise_sigma=-0.1)
    with pytest.raises(ValueError, match="no samples"):
        evaluate_accuracy(FirstK(), [])
    with pytest.raises(ValueError, match="pairs"):
        evaluate_accuracy(FirstK(), [torch.zeros(2, 3)])


def _linear_setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    x = torch.randn(64, 1, 3, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:16] = (y[:16] + 1) % 4  # 48 of 64 correct on clean inputs
    return model, DataLoader(TensorDataset(x, y), batch_size=10)


def test_sigma_zero_is_clean_accuracy():
    model, loader = _linear_setup()
    assert evaluate_accuracy(model, loader, noise_sigma=0.0, seed=5) == pytest.approx(75.0)
    res = accuracy_under_noise(model, loader, sigmas=(0, 0.5, 3.0), seed=1)
    assert list(res) == [0.0, 0.5, 3.0] and all(isinstance(k, float) for k in res)
    assert res[0.0] == pytest.approx(75.0)
    assert res[3.0] == evaluate_accuracy(model, loader, noise_sigma=3.0, seed=1)


def test_noise_reproducible_and_has_std_sigma():
    sigma = 0.3
    x = torch.zeros(200, 1, 10, 10)  # zero images: what the model sees is the noise itself
    loader = DataLoader(TensorDataset(x, torch.zeros(200, dtype=torch.long)), batch_size=64)

    def seen(seed):
        model = FirstK()
        evaluate_accuracy(model, loader, noise_sigma=sigma, seed=seed)
        return torch.cat(model.inputs)

    a, b, c = seen(7), seen(7), seen(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    n = a.numel()  # 20000 draws: std of the sample std ~ sigma / sqrt(2n) = 0.5%
    assert a.double().std().item() == pytest.approx(sigma, rel=0.03)
    assert abs(a.double().mean().item()) < 4 * sigma / math.sqrt(n)
    # independent draws, not one value repeated across images
    assert not torch.equal(a[0], a[1])


def test_count_parameters_by_hand():
    model = nn.Sequential(nn.Linear(5, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2, bias=False))
    # 5*3 + 3 (linear) + 3 + 3 (BN affine; running stats are buffers) + 3*2
    assert count_parameters(model) == 15 + 3 + 6 + 6
    for p in model[0].parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 6 + 6
    shared = nn.Linear(4, 4)
    assert count_parameters(nn.Sequential(shared, shared)) == 20  # counted once


def test_count_macs_linear_and_conv():
    assert count_macs(nn.Linear(784, 10), (784,)) == 7840
    assert count_macs(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 28, 28)) == 7840

    cin, cout, k, s, p, h, w = 3, 8, 3, 2, 1, 17, 12
    hout = (h + 2 * p - k) // s + 1
    wout = (w + 2 * p - k) // s + 1
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p)
    assert count_macs(conv, (cin, h, w)) == cout * cin * k * k * hout * wout

    net = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    net.train()
    assert count_macs(net, (1, 28, 28)) == 4 * 1 * 25 * 28 * 28 + 4 * 14 * 14 * 10
    assert net.training  # mode restored
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(net, (1, -28, 28))
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(net, (1, 28.5, 28))


def test_lenet_from_models_matches_closed_form():
    models = pytest.importorskip("kdlab.models")
    if not hasattr(models, "build_model"):
        pytest.skip("kdlab.models.build_model not available yet")
    lenet = models.build_model("lenet", num_classes=10, in_channels=1, image_size=28)
    assert count_parameters(lenet) == 3_274_634  # KDGAN Table 3 teacher
    # conv32 5x5 same on 28x28, conv64 5x5 same on 14x14, fc 7*7*64 -> 1024, fc 1024 -> 10
    assert count_macs(lenet, (1, 28, 28)) == 32 * 25 * 28 * 28 + 64 * 32 * 25 * 14 * 14 + 7 * 7 * 64 * 1024 + 1024 * 10


def test_latency_positive_finite():
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    net.train()
    ms = cpu_latency_ms(net, (1, 28, 28), batch_size=4, warmup=1, iters=5)
    assert math.isfinite(ms) and ms > 0
    assert net.training
    with pytest.raises(ValueError, match="iters"):
        cpu_latency_ms(net, (1, 28, 28), iters=0)
