"""KDGAN (Wang et al. 2018) on paper: Gumbel-softmax samples, Lemma 4.1 and Theorem 4.2 against their closed
forms, the gradient estimators of appendix B (unbiasedness, the control variate's variance) and the CODE
surrogate (the method on real data: test_kdgan.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlab.losses import kdgan as K


# ----------------------------------------------------------------------------- Gumbel-softmax


def test_gumbel_softmax_one_hot_as_tau_to_zero_and_argmax_frequencies_match_p():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    p = torch.softmax(logits, -1)
    n = 20000
    log_y, z = K.gumbel_softmax_sample(logits, tau=0.01, k=n)
    y = log_y.exp()
    assert torch.allclose(y.sum(-1), torch.ones_like(y.sum(-1)), atol=1e-5)
    assert y.max(-1).values.mean() > 0.99  # one-hot in the limit
    assert torch.equal(y.argmax(-1), z)
    freq = torch.stack([(z == c).double().mean(0) for c in range(4)], 1)
    tol = 4 * torch.sqrt(p * (1 - p) / n).double() + 1e-4
    assert ((freq - p.double()).abs() < tol).all(), (freq, p)
    # high temperature: far from one-hot; the argmax law does not depend on tau (Gumbel-max)
    log_y_hot, z_hot = K.gumbel_softmax_sample(logits, tau=10.0, k=n)
    assert log_y_hot.exp().max(-1).values.mean() < 0.5
    freq_hot = torch.stack([(z_hot == c).double().mean(0) for c in range(4)], 1)
    assert ((freq_hot - p.double()).abs() < tol).all()
    maxes = [K.gumbel_softmax_sample(logits, tau=t, k=2000)[0].exp().max(-1).values.mean() for t in (5.0, 1.0, 0.2)]
    assert maxes[0] < maxes[1] < maxes[2]


def test_direct_sampling_matches_p():
    torch.manual_seed(1)
    logits = torch.tensor([[1.0, -1.0, 0.3]])
    z = K.sample_labels(logits, k=20000)
    freq = torch.stack([(z == c).double().mean() for c in range(3)])
    assert torch.allclose(freq, torch.softmax(logits, -1)[0].double(), atol=0.015)


# ----------------------------------------------------------------------------- Lemma 4.1 / Theorem 4.2


def _dists(seed=0, b=3, k=4):
    g = torch.Generator().manual_seed(seed)
    mk = lambda: torch.softmax(torch.randn(b, k, generator=g, dtype=torch.float64) * 1.5, -1)  # noqa: E731
    return mk(), mk(), mk()


def test_lemma_4_1_trained_discriminator_matches_closed_form():
    p_u, p_c, p_t = _dists()
    alpha = 0.3
    d = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([d], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = -K.value_function(p_u, p_c, p_t, d, alpha).sum()
        loss.backward()
        return loss

    opt.step(closure)
    p_alpha = alpha * p_c.numpy() + (1 - alpha) * p_t.numpy()
    expected = p_u.numpy() / (p_u.numpy() + p_alpha)  # Lemma 4.1, computed here independently
    np.testing.assert_allclose(torch.sigmoid(d).detach().numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(K.optimal_discriminator(p_u, p_c, p_t, alpha).numpy(), expected, atol=1e-12)


def test_theorem_4_2_value_is_minus_log4_plus_2js_and_minimal_at_pu():
    p_u, p_c, p_t = _dists(seed=3)
    alpha = 0.2

    def u_at_optimum(pc, pt):
        d_opt = K.optimal_discriminator(p_u, pc, pt, alpha)
        return K.value_function(p_u, pc, pt, torch.logit(d_opt), alpha)

    # at p_c = p_t = p_u: U = -log 4 and both distillation losses are 0
    u_eq = u_at_optimum(p_u, p_u)
    np.testing.assert_allclose(u_eq.numpy(), -math.log(4), atol=1e-10)
    lp = p_u.log()
    assert float(K.kdgan_distill_loss(lp, lp, "l2")) == pytest.approx(0.0, abs=1e-12)
    assert float(K.kdgan_distill_loss(lp, lp, "kl")) == pytest.approx(0.0, abs=1e-12)
    # elsewhere: U = -log 4 + 2 JS(p_u || p_alpha) > -log 4 (JS computed independently with numpy)
    pu, pa = p_u.numpy(), alpha * p_c.numpy() + (1 - alpha) * p_t.numpy()
    m = (pu + pa) / 2
    js = 0.5 * (pu * np.log(pu / m)).sum(-1) + 0.5 * (pa * np.log(pa / m)).sum(-1)
    u = u_at_optimum(p_c, p_t).numpy()
    np.testing.assert_allclose(u, -math.log(4) + 2 * js, atol=1e-10)
    assert (u > -math.log(4) + 1e-6).all()


def test_discriminator_k_sample_objective_estimates_u():
    torch.manual_seed(0)
    p_u = F.one_hot(torch.tensor([2, 0, 1]), 4).double()
    _, p_c, p_t = _dists(seed=5)
    d = torch.randn(3, 4, dtype=torch.float64)
    alpha = 0.4
    z_c = torch.multinomial(p_c, 40000, replacement=True).t()
    z_t = torch.multinomial(p_t, 40000, replacement=True).t()
    est = K.discriminator_objective(d, torch.tensor([2, 0, 1]), z_c, z_t, alpha)
    exact = K.value_function(p_u, p_c, p_t, d, alpha).mean()
    assert float(est) == pytest.approx(float(exact), abs=0.02)


# ----------------------------------------------------------------------------- appendix B estimators


def _grads(baseline, k, reps, score="discrete", seed=0):
    torch.manual_seed(seed)
    theta = torch.tensor([[0.5, -0.3, 1.0, 0.0], [0.0, 1.5, -1.0, 0.2]], dtype=torch.float64)
    d_logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [-0.5, 1.0, 3.0, -2.0]], dtype=torch.float64)
    t = theta.clone().requires_grad_(True)
    K.expected_reward(t, d_logits).mean().backward()
    exact = t.grad.clone()
    # reps independent replicates at once: tile theta; each copy's gradient is one replicate's estimate
    t = theta.repeat(reps, 1).requires_grad_(True)
    dl = d_logits.repeat(reps, 1)
    log_y, z = K.gumbel_softmax_sample(t, tau=0.5, k=k)
    s = K.concrete_log_density(t, log_y, 0.5) if score == "concrete" else None
    (reps * K.reinforce_surrogate(t, z, K.adversarial_rewards(dl, z), baseline, dl, score_logp=s)).backward()
    return exact, t.grad.view(reps, *theta.shape)


@pytest.mark.parametrize("baseline,k", [("exact", 1), ("loo", 2), ("none", 1)])
def test_reinforce_estimator_is_unbiased(baseline, k):
    exact, g = _grads(baseline, k, 20000)
    se = g.std(0) / math.sqrt(g.shape[0])
    assert ((g.mean(0) - exact).abs() <= 4.5 * se + 1e-3).all(), (g.mean(0), exact)


def test_control_variate_lowers_variance_and_sample_mean_baseline_is_biased_by_k_minus_1_over_k():
    exact, g_cv = _grads("exact", 1, 20000, seed=1)
    _, g_none = _grads("none", 1, 20000, seed=1)
    assert g_cv.var(0).sum() < 0.5 * g_none.var(0).sum()
    _, g_mean = _grads("mean", 4, 20000, seed=2)
    se = g_mean.std(0) / math.sqrt(g_mean.shape[0])
    assert ((g_mean.mean(0) - 0.75 * exact).abs() <= 4.5 * se + 1e-3).all()


def test_concrete_score_estimator_is_unbiased_too():
    exact, g = _grads("exact", 1, 20000, score="concrete", seed=3)
    se = g.std(0) / math.sqrt(g.shape[0])
    assert ((g.mean(0) - exact).abs() <= 4.5 * se + 1e-3).all()


def test_concrete_log_density_integrates_to_one_for_two_classes():
    # K = 2: y = (s, 1-s); integrate q over s in (0, 1) numerically
    logits = torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    s = torch.linspace(1e-6, 1 - 1e-6, 200001, dtype=torch.float64)
    log_y = torch.stack([s.log(), (1 - s).log()], -1).unsqueeze(1)  # [n, 1, 2]
    dens = K.concrete_log_density(logits, log_y, tau=0.8).exp().squeeze(1)
    assert float(torch.trapezoid(dens, s)) == pytest.approx(1.0, abs=1e-3)


def test_distill_l2_matches_closed_form_and_only_learner_gets_gradient():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, generator=g, requires_grad=True)
    b = torch.randn(5, 4, generator=g, requires_grad=True)
    la, lb = np.log(np.exp(a.detach().numpy()) / np.exp(a.detach().numpy()).sum(1, keepdims=True)), None
    lb = np.log(np.exp(b.detach().numpy()) / np.exp(b.detach().numpy()).sum(1, keepdims=True))
    loss = K.kdgan_distill_loss(a, b, "l2")
    assert float(loss.detach()) == pytest.approx(0.5 * ((la - lb) ** 2).sum(1).mean(), rel=1e-5)
    loss.backward()
    assert a.grad is not None and b.grad is None


def test_code_estimator_is_bce_of_own_logit_towards_discriminator_score():
    logits = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    d_logits = torch.tensor([[0.0, 3.0, -1.0]], dtype=torch.float64)
    z = torch.tensor([[1], [2]])  # k = 2 samples for one input
    got = float(K.code_surrogate(logits, z, d_logits))
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want = 0.0
    for lab in (1, 2):
        q, t = sig(float(logits[0, lab])), sig(float(d_logits[0, lab]))
        want += -(t * math.log(q) + (1 - t) * math.log(1 - q)) / 2
    assert got == pytest.approx(want, rel=1e-10)
