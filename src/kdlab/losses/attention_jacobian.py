"""Attention-map Jacobian matching (Srinivas & Fleuret, ICML 2018, section 5.2.1, eq. 10; pooling of
section 6.3.2).

Conventions are those of :mod:`kdlab.losses.jacobian`: both feature maps carry a graph to one input
leaf ``x``; a train-mode student's features must come from its Jacobian pass
(:func:`kdlab.models.batch_stats.jacobian_forward`, BatchNorm statistics held constant), so that the
input gradient of the batch sum is the per-sample gradient; the frozen teacher is in eval mode.
"""
from __future__ import annotations

import numbers
from typing import Union

import torch
import torch.nn.functional as F

from kdlab.losses.attention import check_feature_pair
from kdlab.losses.jacobian import check_input_leaf, unit_rows


def attention_pool_window(size: int, pool: Union[int, str, None]) -> int:
    """Average-pool window for an attention map of side ``size`` (Table 5).

    ``pool`` = k > 0: window ``max(1, round(size / k))`` (``k = 5`` is the paper's s/5; ``k = 1`` is
    "Full", global pooling); ``'none'``, ``0`` or ``None``: window 1 (no pooling); ``'full'``:
    window ``size``.

    Raises:
        ValueError: anything else (names the accepted values).
    """
    if pool is None or pool == 0 or (isinstance(pool, str) and pool.lower() == "none"):
        return 1
    if isinstance(pool, str) and pool.lower() == "full":
        return int(size)
    if isinstance(pool, bool) or not isinstance(pool, numbers.Integral) or pool < 0:
        raise ValueError(f"attention pool must be an integer k > 0 (window = size/k), 'full' or 'none'; got {pool!r}")
    return max(1, int(round(size / int(pool))))


def attention_jacobian_loss(
    student_feature: torch.Tensor,
    teacher_feature: torch.Tensor,
    x: torch.Tensor,
    pool: Union[int, str, None] = 5,
) -> torch.Tensor:
    """Attention-map Jacobian matching (section 5.2.1, eq. 10; pooling of section 6.3.2).

    1. ``A = sum_c |Z_c|^2`` per sample (eq. 8) for teacher and student feature maps.
    2. Average-pool both maps with window ``w = attention_pool_window(H, pool)``, stride 1
       (no padding); ``pool=5`` is the paper's (feature size)/5.
    3. ``(i, j) = argmax`` of the teacher's pooled map per sample; the same index on the student.
    4. ``g_t = grad_x A_t^pool[i, j]`` (no graph), ``g_s = grad_x A_s^pool[i, j]`` (create_graph).
    5. ``(1/B) sum_b || g_s/||g_s|| - g_t/||g_t|| ||_2^2`` (eq. 10, squared; norms clamped at 1e-12).

    Both features must have been computed from the same input leaf ``x`` (requires grad), the
    teacher's with grad enabled (its parameters frozen). The loss is 0 for identical networks,
    invariant to positive rescaling of either Jacobian, and in ``[0, 4]``.

    Raises:
        ValueError: features not 4-D, different batch sizes, or different spatial sizes (names both),
            ``x`` not requiring grad, a bad ``pool``.
    """
    check_input_leaf(x)
    check_feature_pair(student_feature, teacher_feature, "attention-Jacobian matching: attention maps")
    h, w = student_feature.shape[2], student_feature.shape[3]
    win = (min(attention_pool_window(h, pool), h), min(attention_pool_window(w, pool), w))
    a_t = F.avg_pool2d(teacher_feature.pow(2).sum(1, keepdim=True), win, stride=1)
    a_s = F.avg_pool2d(student_feature.pow(2).sum(1, keepdim=True), win, stride=1)
    idx = a_t.detach().flatten(1).argmax(dim=1, keepdim=True)
    (g_t,) = torch.autograd.grad(a_t.flatten(1).gather(1, idx).sum(), x, retain_graph=True)
    (g_s,) = torch.autograd.grad(a_s.flatten(1).gather(1, idx).sum(), x, create_graph=True)
    g_t = unit_rows(g_t.detach().flatten(1))
    g_s = unit_rows(g_s.flatten(1))
    return (g_s - g_t).pow(2).sum(dim=1).mean()


__all__ = ["attention_pool_window", "attention_jacobian_loss"]
