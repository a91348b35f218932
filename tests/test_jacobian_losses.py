"""Jacobian-paper losses against independent computations (torch.autograd.functional.jacobian,
Monte-Carlo noise, closed forms) and their bad-input errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import jacobian as full_jacobian

from kdlab.losses import (
    attention_jacobian_loss,
    attention_pool_window,
    input_gradients,
    noise_equivalence,
    jacobian_matching,
    jacobian_norm_penalty,
    noisy_expectation,
    output_jacobian_loss,
    output_jacobian_term,
    select_classes,
)



def _mlp(seed, d=12, h=16, k=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, k)).double()


def _conv(seed, c=3, k=5):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.Tanh(), nn.Conv2d(c, c, 3, padding=1), nn.Tanh(),
        nn.Flatten(), nn.Linear(c * 36, k),
    ).double()


def _per_sample_jac(net, x):
    """[B, K, D] by torch.autograd.functional.jacobian, one sample at a time."""
    out = []
    for b in range(x.shape[0]):
        j = full_jacobian(lambda v: net(v.unsqueeze(0)).squeeze(0), x[b])  # [K, *x.shape[1:]]
        out.append(j.reshape(j.shape[0], -1))
    return torch.stack(out)


@pytest.fixture(autouse=True)
def _dtype():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("make,shape", [(_mlp, (6, 12)), (_conv, (6, 1, 6, 6))])
@pytest.mark.parametrize("select", ["full", "label", "top"])
def test_output_jacobian_loss_equals_autograd_functional_jacobian(make, shape, select):
    s_net, t_net = make(0), make(1)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    got, s_logits, t_logits = output_jacobian_loss(s_net, t_net, x, select=select, labels=y)
    js, jt = _per_sample_jac(s_net, x), _per_sample_jac(t_net, x)
    if select == "full":
        want = (js - jt).pow(2).sum(dim=(1, 2)).mean()
    else:
        c = y if select == "label" else t_net(x).argmax(1)
        idx = torch.arange(x.shape[0])
        want = (js[idx, c] - jt[idx, c]).pow(2).sum(1).mean()
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
    assert torch.allclose(s_logits, s_net(x)) and torch.allclose(t_logits, t_net(x))
    # double backprop: the loss reaches every student weight (biases of the last layer do not change
    # the Jacobian), no teacher parameter
    got.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in s_net.parameters() if p.dim() > 1)
    assert all(p.grad is None for p in t_net.parameters())


def test_normalized_and_ce_forms_match_direct_computation():
    s_net, t_net = _mlp(0), _mlp(1)
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    js, jt = _per_sample_jac(s_net, x), _per_sample_jac(t_net, x)
    got, *_ = output_jacobian_loss(s_net, t_net, x, select="full", normalize=True)
    want = (F.normalize(js, dim=2) - F.normalize(jt, dim=2)).pow(2).sum(dim=(1, 2)).mean()
    assert torch.allclose(got, want)
    # eq. 2: -sum_i grad T_s^i . grad S_s^i / S_s^i with softmax(./T)
    T = 2.0
    ps = _per_sample_jac(lambda v: F.softmax(s_net(v) / T, 1), x)
    pt = _per_sample_jac(lambda v: F.softmax(t_net(v) / T, 1), x)
    probs = F.softmax(s_net(x) / T, 1)
    want = -((ps * pt).sum(2) / probs).sum(1).mean()
    got, *_ = output_jacobian_loss(s_net, t_net, x, select="full", loss="ce", temperature=T)
    assert torch.allclose(got, want)


def test_prop1_noisy_squared_error_equals_squared_error_plus_sigma2_jacobian_term():
    """Prop. 1 for piecewise-linear (ReLU) nets: E||T(x+xi)-S(x+xi)||^2 = ||T-S||^2 + sigma^2 sum_i ||dT_i-dS_i||^2.

    Antithetic draws (xi, -xi) cancel the zero-mean linear term exactly, so the MC error is only that
    of the quadratic term (~2% with 4000 x 8 draws)."""
    s_net, t_net = _mlp(0), _mlp(1)
    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(5))
    sigma = 1e-5  # small enough that no ReLU changes state for (almost) any draw

    def se(v):
        return (t_net(v) - s_net(v)).pow(2).sum(1).mean()

    with torch.no_grad():
        noisy = noisy_expectation(lambda v: 0.5 * (se(v) + se(2 * x - v)), x, sigma, n_samples=4000,
                                  generator=torch.Generator().manual_seed(0))
        clean = se(x)
    jac_term, *_ = output_jacobian_loss(s_net, t_net, x, select="full")
    excess = (noisy - clean) / sigma**2
    assert abs(excess.item() - jac_term.item()) < 0.05 * jac_term.item(), (excess.item(), jac_term.item())


def test_prop2_noisy_label_error_matches_jacobian_norm_penalty():
    """Prop. 2: E||y - S(x+xi)||^2 = ||y - S(x)||^2 + sigma^2 sum_i ||grad S^i||^2 (ReLU net)."""
    net = _mlp(2)
    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(1))
    target = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    sigma = 1e-5  # small enough that no ReLU changes state for (almost) any draw

    def se(v):
        return (target - net(v)).pow(2).sum(1).mean()

    with torch.no_grad():
        noisy = noisy_expectation(lambda v: 0.5 * (se(v) + se(2 * x - v)), x, sigma, n_samples=4000,
                                  generator=torch.Generator().manual_seed(0))
    xg = x.clone().requires_grad_(True)
    pen = jacobian_norm_penalty(net(xg), xg, select="full")
    excess = (noisy - se(x).detach()) / sigma**2
    assert abs(excess.item() - pen.item()) < 0.05 * pen.item(), (excess.item(), pen.item())


def test_penalty_forms_equal_direct_jacobians():
    net = _mlp(4)
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 3, 2, 1, 3])
    j = _per_sample_jac(net, x)
    jl = _per_sample_jac(lambda v: F.log_softmax(net(v), 1), x)
    idx = torch.arange(5)
    xg = x.clone().requires_grad_(True)
    assert torch.allclose(jacobian_norm_penalty(net(xg), xg, y, form="se", select="label"), j[idx, y].pow(2).sum(1).mean())
    assert torch.allclose(jacobian_norm_penalty(net(xg), xg, y, form="se", select="full"), j.pow(2).sum((1, 2)).mean())
    # eq. 3 with one-hot y: ||grad S_s^c||^2 / S_s^c^2 = ||grad log S_s^c||^2
    ps = _per_sample_jac(lambda v: F.softmax(net(v), 1), x)
    p = F.softmax(net(x), 1)
    want = (ps[idx, y].pow(2).sum(1) / p[idx, y] ** 2).mean()
    got = jacobian_norm_penalty(net(xg), xg, y, form="ce")
    assert torch.allclose(got, want) and torch.allclose(got, jl[idx, y].pow(2).sum(1).mean())


class _FeatNet(nn.Module):
    """conv -> feature [B, C, 8, 8] -> logits; ``scale`` multiplies the feature (scales its Jacobian)."""

    def __init__(self, seed, c=4, scale=1.0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.scale = scale

    def forward(self, x):
        return self.scale * self.conv2(torch.relu(self.conv1(x)))


def _att_loss_direct(s_net, t_net, x, window):
    """Eq. 10 per sample with torch.autograd.functional.jacobian (independent of the batch code)."""
    total = 0.0
    for b in range(x.shape[0]):
        def pooled(net, v):
            a = net(v.unsqueeze(0)).pow(2).sum(1, keepdim=True)
            return F.avg_pool2d(a, window, stride=1).flatten()

        i = int(pooled(t_net, x[b]).argmax())
        gt = full_jacobian(lambda v: pooled(t_net, v)[i], x[b]).flatten()
        gs = full_jacobian(lambda v: pooled(s_net, v)[i], x[b]).flatten()
        total = total + (gs / gs.norm() - gt / gt.norm()).pow(2).sum()
    return total / x.shape[0]


@pytest.mark.parametrize("pool", [5, 1, 0, 3])
def test_attention_jacobian_loss_matches_per_sample_autograd(pool):
    s_net, t_net = _FeatNet(0), _FeatNet(1, c=6)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    got = attention_jacobian_loss(s_net(x), t_net(x), x, pool=pool)
    want = _att_loss_direct(s_net, t_net, x.detach(), attention_pool_window(8, pool))
    assert torch.allclose(got, want, rtol=1e-8), (got, want)


def test_attention_jacobian_loss_zero_for_identical_nets_scale_invariant_and_gradients():
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    t_net = _FeatNet(1)
    same = attention_jacobian_loss(_FeatNet(1)(x), t_net(x), x)
    assert same.item() < 1e-20
    s_net = _FeatNet(0)
    base = attention_jacobian_loss(s_net(x), t_net(x), x)
    assert base.item() > 1e-3
    scaled_s = attention_jacobian_loss(_FeatNet(0, scale=7.0)(x), t_net(x), x)
    scaled_t = attention_jacobian_loss(s_net(x), _FeatNet(1, scale=0.1)(x), x)
    assert torch.allclose(base, scaled_s) and torch.allclose(base, scaled_t)
    for p in t_net.parameters():
        p.requires_grad_(False)
    loss = attention_jacobian_loss(s_net(x), t_net(x), x)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in s_net.parameters())
    assert all(p.grad is None for p in t_net.parameters())


def test_bad_inputs_name_the_problem():
    s_net, t_net = _mlp(0), _mlp(1)
    x = torch.randn(3, 12)
    with pytest.raises(ValueError, match=r"'diag'.*'full', 'label', 'top'"):
        output_jacobian_loss(s_net, t_net, x, select="diag")
    with pytest.raises(ValueError, match=r"'label' needs the ground-truth labels"):
        select_classes("label", 4)
    with pytest.raises(ValueError, match=r"sigma must be >= 0.*-0.1"):
        noisy_expectation(lambda v: v.sum(), x, -0.1)
    with pytest.raises(ValueError, match="requires_grad_"):
        input_gradients(s_net(x), x)
    xi = torch.randn(2, 1, 8, 8).requires_grad_(True)
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2))
    with pytest.raises(ValueError, match=r"student 4x4 .* and teacher 8x8"):
        attention_jacobian_loss(pooled(xi), _FeatNet(1)(xi), xi)
    with pytest.raises(ValueError, match=r"Jacobians must both be \[B, m, D\]"):
        jacobian_matching(torch.zeros(2, 1, 5), torch.zeros(2, 2, 5))
    with pytest.raises(ValueError, match="attention pool"):
        attention_pool_window(8, -2)


def test_output_jacobian_term_uses_given_logits():
    s_net, t_net = _mlp(0), _mlp(1)
    x = torch.randn(4, 12).requires_grad_(True)
    a = output_jacobian_term(s_net(x), t_net(x), x, select="top")
    b, *_ = output_jacobian_loss(s_net, t_net, x.detach(), select="top")
    assert torch.allclose(a, b)


def test_noise_equivalence_report_on_relu_nets_and_on_smooth_nets():
    """ReLU nets at small sigma: the gap (relative to the sigma^2 term) is MC error only; at sigma = 1
    activation patterns change and the first-order prediction is visibly off."""
    s_net, t_net = _mlp(0), _mlp(1)
    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(5))
    r = noise_equivalence(s_net, t_net, x, 1e-5, n_samples=2000, generator=torch.Generator().manual_seed(0))
    assert abs(r["relative_gap"]) < 0.05 and r["predicted"] == pytest.approx(r["clean"] + 1e-10 * r["jacobian"])
    far = noise_equivalence(s_net, t_net, x, 1.0, n_samples=2000, generator=torch.Generator().manual_seed(0))
    assert abs(far["relative_gap"]) > 0.1, far
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        noise_equivalence(s_net, t_net, x, -1.0)
