"""KDGAN: the three-player game of Wang et al. (NeurIPS 2018), appendix A-B, as pure functions.

Players: a classifier c (the student, ``p_c(y|x)``), a teacher t (``p_t(y|x)``) and a
discriminator d that scores a pair (x, y) with ``p_d(x, y) = sigmoid(l_d(x)_y)``, ``l_d(x)`` the
discriminator's K logits (the published code's choice: one output per label). The value function
(appendix A, proof of Lemma 4.1) is, per input x,

    U(c, t, d) = E_{y~p_u}[log p_d(x,y)] + alpha E_{y~p_c}[log(1 - p_d(x,y))]
                 + (1 - alpha) E_{y~p_t}[log(1 - p_d(x,y))] + beta L_DS^c(p_c, p_t) + gamma L_DS^t(p_t, p_c)

d ascends U; c and t descend it. Notation: ``B`` batch, ``K`` classes, ``k`` samples per input.
All log(1 - sigmoid(a)) are computed as ``logsigmoid(-a)`` (finite for any finite logit).
Nothing here knows about models or trainers; the method is :mod:`kdlab.methods.kdgan`.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from kdlab.ranks import global_rows, rank_rows, world

from kdlab.losses._common import check_float_tensor, check_mode, check_positive

DISTILL_MODES = ("l2", "kl")
BASELINES = ("exact", "loo", "mean", "none")
SCORES = ("discrete", "concrete")

__all__ = [
    "DISTILL_MODES", "BASELINES", "SCORES",
    "check_alpha", "check_k", "check_tau",
    "gumbel_softmax_sample", "sample_labels", "concrete_log_density",
    "mixture", "optimal_discriminator", "value_function",
    "discriminator_objective", "adversarial_rewards", "expected_reward",
    "reinforce_surrogate", "code_surrogate", "kdgan_distill_loss",
]


# ----------------------------------------------------------------------------- argument checks


def check_alpha(alpha: float) -> float:
    """``alpha`` in [0, 1] (the mixture weight of the classifier's pseudo labels), else ValueError."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
    if isinstance(alpha, bool) or not math.isfinite(a) or not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (the mixture weight of p_c vs p_t), got {alpha!r}")
    return a


def check_tau(tau: float) -> float:
    """``tau`` > 0 (the Gumbel-softmax temperature), else ValueError naming it."""
    return check_positive(tau, "tau (the Gumbel-softmax temperature)")


def check_k(k: int) -> int:
    """``k`` an integer >= 1 (samples per input), else ValueError naming it."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (samples per input) must be an integer >= 1, got {k!r}")
    return k


# ----------------------------------------------------------------------------- sampling


def gumbel_softmax_sample(
    logits: torch.Tensor, tau: float, k: int = 1, generator: Optional[torch.Generator] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """k concrete (Gumbel-softmax) samples per row and their pseudo labels.

    Appendix B (and eq. 9 of the paper): ``q(y|x) = softmax((log p(y|x) + g) / tau)``,
    ``g ~ Gumbel(0, 1)`` i.i.d.; the pseudo label is ``z = onehot(argmax y)`` (returned as the
    index). ``log p = log_softmax(logits)``, so unnormalised logits may be passed. By the Gumbel-max
    trick ``argmax y = argmax(log p + g)`` is an EXACT sample of ``p`` for every tau; as tau -> 0
    the continuous sample ``y`` tends to the one-hot ``z``.

    Args:
        logits: [B, K] (detached inside: sampling carries no gradient; the estimators of appendix B
            put the gradient on the score instead).
        tau: temperature > 0.
        k: samples per row >= 1.
        generator: optional ``torch.Generator`` (on the logits' device) for reproducible draws.

    Returns:
        ``(log_y [k, B, K], z [k, B] int64)``: the LOG of the continuous samples (finite even when
        entries of y underflow at small tau; ``y = log_y.exp()``) and the argmax labels.

    Raises:
        ValueError: tau <= 0, k < 1, logits not a float [B, K] tensor.
    """
    tau = check_tau(tau)
    k = check_k(k)
    check_float_tensor(logits, "logits")
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [B, K], got {tuple(logits.shape)}")
    logp = F.log_softmax(logits.detach(), dim=-1)
    perturbed = logp.unsqueeze(0) + _gumbel(k, logp, generator)
    log_y = F.log_softmax(perturbed / tau, dim=-1)
    return log_y, perturbed.argmax(dim=-1)


def _gumbel(k: int, like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """k i.i.d. Gumbel(0, 1) draws of ``like``'s shape, [k, *like.shape] (``-log(-log u)``, u clamped away from 0)."""
    u = rank_rows(lambda n: torch.rand((k, n, *like.shape[1:]), generator=generator, device=like.device, dtype=like.dtype),
                  like.shape[0], dim=1)  # the global batch's draws, this rank's rows
    tiny = torch.finfo(like.dtype).tiny
    e = -torch.log(u.clamp_min(tiny))  # Exp(1) draws
    return -torch.log(e.clamp_min(tiny))


def sample_labels(logits: torch.Tensor, k: int = 1, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """k labels per row drawn directly from ``p = softmax(logits)`` (no Gumbel trick; Fig. 7 "without").

    Returns int64 [k, B]. Raises ValueError for k < 1 or logits not [B, K].
    """
    k = check_k(k)
    check_float_tensor(logits, "logits")
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [B, K], got {tuple(logits.shape)}")
    p = F.softmax(logits.detach().float(), dim=-1)
    w, r = world()  # under DDP: the global batch's rows (drawn alike on every rank), then this rank's r::W
    return torch.multinomial(global_rows(p), k, replacement=True, generator=generator)[r::w].t().contiguous()


def concrete_log_density(logits: torch.Tensor, log_y: torch.Tensor, tau: float) -> torch.Tensor:
    """Log density of the concrete distribution ``q(y|x)`` at the continuous samples ``y``.

    Maddison, Mnih & Teh 2017 (eq. of the Concrete density), with ``l = log_softmax(logits)``:

        log q(y) = log (K-1)! + (K-1) log tau + sum_i (l_i - (tau+1) log y_i)
                   - K logsumexp_i (l_i - tau log y_i)

    Gradients flow into ``logits`` only (``log_y`` is detached): this is the score
    ``grad log q_c(y^c_i|x)`` written in appendix B. Used by ``score='concrete'``.

    Args:
        logits: [B, K]. log_y: [k, B, K] from :func:`gumbel_softmax_sample`. tau > 0.

    Returns:
        [k, B] log densities (w.r.t. Lebesgue measure on the first K-1 coordinates of the simplex).
    """
    tau = check_tau(tau)
    kk = logits.shape[-1]
    l = F.log_softmax(logits, dim=-1).unsqueeze(0)
    ly = log_y.detach()
    return (
        math.lgamma(kk) + (kk - 1) * math.log(tau)
        + (l - (tau + 1.0) * ly).sum(-1)
        - kk * torch.logsumexp(l - tau * ly, dim=-1)
    )


# ----------------------------------------------------------------------------- the value function


def mixture(p_c: torch.Tensor, p_t: torch.Tensor, alpha: float) -> torch.Tensor:
    """``p_alpha = alpha p_c + (1 - alpha) p_t`` (appendix A), any matching shapes."""
    a = check_alpha(alpha)
    return a * p_c + (1.0 - a) * p_t


def optimal_discriminator(p_u: torch.Tensor, p_c: torch.Tensor, p_t: torch.Tensor, alpha: float) -> torch.Tensor:
    """Lemma 4.1: ``p_d*(x, y) = p_u(y|x) / (p_u(y|x) + p_alpha(y|x))`` ([B, K] -> [B, K]).

    Where ``p_u + p_alpha = 0`` the label never occurs and any value is optimal; 0.5 is returned.
    """
    pa = mixture(p_c, p_t, alpha)
    den = p_u + pa
    return torch.where(den > 0, p_u / den.clamp_min(1e-300), torch.full_like(den, 0.5))


def value_function(
    p_u: torch.Tensor, p_c: torch.Tensor, p_t: torch.Tensor, d_logits: torch.Tensor, alpha: float
) -> torch.Tensor:
    """The adversarial part of U(c, t, d) computed EXACTLY for discrete labels (appendix A).

    ``U_adv(x) = sum_y p_u(y|x) log p_d(x,y) + sum_y p_alpha(y|x) log(1 - p_d(x,y))`` with
    ``p_d = sigmoid(d_logits)`` (the line ``= F(p_d)`` in the proof of Lemma 4.1). Terms with zero
    probability contribute 0. Add ``beta L_DS^c + gamma L_DS^t`` for the full U.

    Args:
        p_u, p_c, p_t: [B, K] distributions (rows sum to 1). d_logits: [B, K]. alpha in [0, 1].

    Returns:
        [B] values (mean over B is U for a data set of inputs).
    """
    pa = mixture(p_c, p_t, alpha)
    pos = torch.where(p_u > 0, p_u * F.logsigmoid(d_logits), torch.zeros_like(p_u))
    neg = torch.where(pa > 0, pa * F.logsigmoid(-d_logits), torch.zeros_like(pa))
    return (pos + neg).sum(-1)


# ----------------------------------------------------------------------------- the discriminator


def discriminator_objective(
    d_logits: torch.Tensor, y: torch.Tensor, z_c: torch.Tensor, z_t: torch.Tensor, alpha: float
) -> torch.Tensor:
    """The k-sample estimate of U that the discriminator ASCENDS (appendix B, first display).

    ``(1/B) sum_b (1/k) sum_i [ log p_d(x_b, y_b) + alpha log(1 - p_d(x_b, z^c_ib))
                                 + (1 - alpha) log(1 - p_d(x_b, z^t_ib)) ]``

    The true label is the same for all k samples (one label per image), so its term is
    ``log p_d(x_b, y_b)`` once. Its gradient w.r.t. d is the appendix's estimator; the method
    minimises the negative. The pseudo labels carry no gradient (they are indices).

    Args:
        d_logits: [B, K] discriminator logits. y: int [B] true labels.
        z_c, z_t: int [k, B] pseudo labels of the classifier and the teacher (k may differ).
        alpha: in [0, 1].

    Returns:
        A scalar (<= 0; -log 4 at p_d = 1/2 everywhere).
    """
    a = check_alpha(alpha)
    pos = F.logsigmoid(d_logits.gather(1, y.view(-1, 1)).squeeze(1))
    neg_c = F.logsigmoid(-d_logits.gather(1, z_c.t())).mean(1)
    neg_t = F.logsigmoid(-d_logits.gather(1, z_t.t())).mean(1)
    return (pos + a * neg_c + (1.0 - a) * neg_t).mean()


def adversarial_rewards(d_logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``r_i = log(1 - p_d(x, z_i))`` for int labels z [k, B] -> [k, B] (detached): the "reward"
    that c (or t) minimises in expectation."""
    return F.logsigmoid(-d_logits.detach().gather(1, z.t())).t()


def expected_reward(logits: torch.Tensor, d_logits: torch.Tensor) -> torch.Tensor:
    """``E_{y~p}[log(1 - p_d(x,y))] = sum_y p(y|x) log(1 - p_d(x,y))`` exactly, [B].

    Differentiable in ``logits`` (d is detached). It is appendix B's second line
    ``sum_y p_c(y|x) log(1 - p_d(x,y))`` (whose gradient is the exact gradient that the REINFORCE
    estimators approximate) and the control variate ``b_c`` (``b_t``) when detached.
    """
    return (F.softmax(logits, dim=-1) * F.logsigmoid(-d_logits.detach())).sum(-1)


def reinforce_surrogate(
    logits: torch.Tensor,
    z: torch.Tensor,
    rewards: torch.Tensor,
    baseline: str = "exact",
    d_logits: Optional[torch.Tensor] = None,
    score_logp: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """A scalar whose gradient is appendix B's REINFORCE estimate of ``grad E_{y~p}[log(1 - p_d(x,y))]``.

    ``surrogate = (1/B) sum_b (1/k) sum_i s_ib (r_ib - b_ib)``, with ``s_ib`` the score (by default
    ``log p(z_ib|x_b)``, differentiable) and ``r`` and ``b`` detached, so
    ``grad surrogate = (1/B) sum_b (1/k) sum_i grad log p(z_ib|x_b) (r_ib - b_ib)``.
    The caller multiplies by alpha (classifier) or 1 - alpha (teacher).

    Control variates ``b`` (``baseline``):

    * ``'exact'`` (default): ``b = E_{y~p}[log(1 - p_d(x,y))] = sum_y p(y|x) r(y)``, the paper's
      definition of b_c / b_t computed exactly (d scores every label in one pass). It does not
      depend on the samples, so the estimator stays unbiased.
    * ``'loo'``: leave-one-out sample mean ``b_i = (1/(k-1)) sum_{j != i} r_j`` (unbiased, k >= 2).
    * ``'mean'``: the appendix's sample estimate ``(1/k) sum_i r_i`` (the appendix writes a sum
      without 1/k; read as a mean). It uses the sample's own reward, so the estimate is scaled by
      ``(k-1)/k`` in expectation (biased; zero for k = 1). Offered for fidelity, not as a default.
    * ``'none'``: ``b = 0`` (plain REINFORCE, the high-variance reference).

    Args:
        logits: [B, K] the player's logits (gradients flow here).
        z: int [k, B] sampled labels. rewards: [k, B] (detached inside), e.g. :func:`adversarial_rewards`.
        baseline: one of :data:`BASELINES`.
        d_logits: [B, K] discriminator logits, needed for ``'exact'``.
        score_logp: optional [k, B] score to use instead of ``log p(z|x)`` (e.g.
            :func:`concrete_log_density` for ``score='concrete'``).

    Raises:
        ValueError: unknown baseline; ``'exact'`` without d_logits; ``'loo'`` with k < 2.
    """
    check_mode(baseline, BASELINES, "baseline")
    r = rewards.detach()
    k = r.shape[0]
    if baseline == "exact":
        if d_logits is None:
            raise ValueError("baseline='exact' needs d_logits (the discriminator's logits for every label)")
        b = expected_reward(logits.detach(), d_logits).unsqueeze(0)
    elif baseline == "loo":
        if k < 2:
            raise ValueError(f"baseline='loo' needs k >= 2 samples per input, got k={k}")
        b = (r.sum(0, keepdim=True) - r) / (k - 1)
    elif baseline == "mean":
        b = r.mean(0, keepdim=True)
    else:
        b = torch.zeros_like(r)
    if score_logp is None:
        score_logp = F.log_softmax(logits, dim=-1).gather(1, z.t()).t()
    return (score_logp * (r - b)).mean()


def code_surrogate(logits: torch.Tensor, z: torch.Tensor, d_logits: torch.Tensor) -> torch.Tensor:
    """The published code's adversarial loss (``estimator: code``): the discriminator's reward
    ``p_d(x, z)`` as a soft BCE target for the player's own logit of the sampled label.

    ``(1/(kB)) sum_{i,b} BCEWithLogits(l_{b, z_ib}, target = sigmoid(l^d_{b, z_ib}))`` -- no control
    variate, and not the gradient of U (it pushes sigmoid of the player's logit towards the
    discriminator's score). Args as :func:`reinforce_surrogate`; returns a scalar.
    """
    target = torch.sigmoid(d_logits.detach().gather(1, z.t()))
    own = logits.gather(1, z.t())
    return F.binary_cross_entropy_with_logits(own, target)


def pathwise_surrogate(logits: torch.Tensor, d_logits: torch.Tensor, tau: float, k: int = 1,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The pathwise (reparameterised Gumbel-softmax) estimate of ``grad E_{y~p}[log(1 - p_d(x, y))]``: a scalar
    whose gradient flows through the continuous samples (``estimator: pathwise``; Fig. 7's Gumbel trick read as
    the reparameterisation of Jang et al. 2017 / Maddison et al. 2017, eq. 9 of the paper's ``q_c``).

    ``y_ib = softmax((log p(.|x_b) + g_ib) / tau)`` with ``g ~ Gumbel(0, 1)`` (differentiable in ``logits``), and
    ``surrogate = (1/(kB)) sum_{i,b} log(1 - sigmoid(<l_d(x_b), y_ib>))``: d scores a soft label through its
    label-linear logit (``l_d(x)_y = <l_d(x), onehot(y)>``), so at a one-hot y it is exactly
    ``log(1 - p_d(x, y))``. Biased for tau > 0 (the relaxation), low variance; tau -> 0 gives the discrete game.

    Args:
        logits: [B, K] the player's logits. d_logits: [B, K] (detached inside). tau: > 0. k: samples per row.
        generator: optional ``torch.Generator`` for the Gumbel draws.

    Raises:
        ValueError: tau <= 0, k < 1, logits not [B, K] or of another shape than d_logits.
    """
    tau, k = check_tau(tau), check_k(k)
    check_float_tensor(logits, "logits")
    if logits.dim() != 2 or d_logits.shape != logits.shape:
        raise ValueError(f"logits and d_logits must both be [B, K]; got {tuple(logits.shape)} and {tuple(d_logits.shape)}")
    logp = F.log_softmax(logits, dim=-1)
    y = F.softmax((logp.unsqueeze(0) + _gumbel(k, logp.detach(), generator)) / tau, dim=-1)  # [k, B, K]
    return F.logsigmoid(-(y * d_logits.detach().unsqueeze(0)).sum(-1)).mean()


# ----------------------------------------------------------------------------- distillation


def kdgan_distill_loss(
    learner_logits: torch.Tensor, target_logits: torch.Tensor, mode: str = "l2", temperature: float = 1.0
) -> torch.Tensor:
    """KDGAN's distillation losses ``L_DS^c(p_c, p_t)`` (learner c, target t) and ``L_DS^t(p_t, p_c)``.

    * ``mode='l2'`` (appendix B's example): ``(1/B) sum_b 1/2 || log p_l(.|x_b) - log p_tgt(.|x_b) ||_2^2``
      on log-probabilities (``log_softmax``), summed over the K classes, mean over the batch. The
      appendix calls it "the L2 loss on logits [7]" but writes log-probabilities; we follow the
      formula. (MIMIC's L2 on raw logits is ``kdlab.losses.logit_matching``.)
    * ``mode='kl'``: ``T^2 KL(p_tgt^T || p_l^T)`` with ``p^T = softmax(logits / T)``, batchmean
      (Hinton's KD; :func:`kdlab.losses.kd_loss`).

    The target is detached: the gradient reaches the learner only (appendix B computes
    ``grad_c L_DS^c`` and ``grad_t L_DS^t`` separately). Both are 0 iff the two distributions are equal.

    Args:
        learner_logits, target_logits: [B, K]. mode: ``'l2'`` | ``'kl'``. temperature: T > 0 (kl only).

    Returns:
        A scalar >= 0.

    Raises:
        ValueError: unknown mode (lists them), bad shapes, temperature <= 0.
    """
    from kdlab.losses._common import check_logit_pair
    from kdlab.losses.kd import kd_loss

    check_mode(mode, DISTILL_MODES)
    check_logit_pair(learner_logits, target_logits)
    if mode == "kl":
        return kd_loss(learner_logits, target_logits, temperature)
    diff = F.log_softmax(learner_logits, dim=-1) - F.log_softmax(target_logits.detach(), dim=-1)
    return 0.5 * diff.pow(2).sum(-1).mean()
