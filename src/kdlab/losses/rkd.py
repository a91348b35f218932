"""Relational knowledge distillation, distance and angle terms (Park, Kim, Lu & Cho, CVPR 2019)."""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

from kdlab.losses._relational import check_relation_pair, no_relation

#: RepDistiller's ``RKDLoss(w_d=25, w_a=50)``: the weights users compare with (the paper uses 1 and 2).
RKD_DISTANCE_WEIGHT = 25.0
RKD_ANGLE_WEIGHT = 50.0
_EPS = 1e-12  # floor of squared distances: coincident points get a finite, tiny distance (no NaN gradient)


def rkd_potentials(e: torch.Tensor, angles: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """RKD's relational potentials of one batch of embeddings.

    * distance (Park et al. 2019, eqs. 3-4): ``psi_D(i, j) = ||e_i - e_j||_2 / mu`` with
      ``mu = mean_{i != j} ||e_i - e_j||_2`` (the B(B-1) off-diagonal pairs); diagonal 0.
    * angle (eq. 7): ``psi_A(i, j, k) = <u(e_j - e_i), u(e_k - e_i)>`` with ``u(v) = v / ||v||``:
      the cosine of the angle at vertex ``e_i`` (the paper writes the vertex in the middle, same
      set of values); entries with ``j = i`` or ``k = i`` are 0.

    Args:
        e: [B, D] embeddings, B >= 2.
        angles: also compute the [B, B, B] angle tensor (else an empty tensor is returned for it).

    Returns:
        ``(psi_D [B, B], psi_A [B, B, B])`` in ``e``'s dtype. Both are invariant to rotations,
        translations and uniform scalings of ``e``.
    """
    b = e.shape[0]
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # diff[i, j] = e_j - e_i
    dist = diff.pow(2).sum(-1).clamp_min(_EPS).sqrt()
    off = 1.0 - torch.eye(b, dtype=e.dtype, device=e.device)
    d = dist * off
    d = d / (d.sum() / (b * (b - 1)))
    if not angles:
        return d, e.new_zeros(0)
    unit = diff / dist.unsqueeze(-1)  # the diagonal diff is 0, so its unit vector is 0
    return d, unit @ unit.transpose(1, 2)


def _weights(distance_weight: float, angle_weight: float) -> Tuple[float, float]:
    out = []
    for name, w in (("distance_weight", distance_weight), ("angle_weight", angle_weight)):
        try:
            v = float(w)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a finite number >= 0, got {w!r}") from None
        if isinstance(w, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
        out.append(v)
    if out[0] == 0 and out[1] == 0:
        raise ValueError("distance_weight and angle_weight are both 0: at least one must be > 0")
    return out[0], out[1]


def rkd_loss(student: torch.Tensor, teacher: torch.Tensor, distance_weight: float = RKD_DISTANCE_WEIGHT,
             angle_weight: float = RKD_ANGLE_WEIGHT) -> torch.Tensor:
    """Relational KD: ``w_D * L_D + w_A * L_A`` with Huber losses between relational potentials.

    Source: Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019: distance-wise loss
    ``L_D = l_H(psi_D(t_i, t_j), psi_D(s_i, s_j))`` (eq. 5) and angle-wise loss
    ``L_A = l_H(psi_A(t_i, t_j, t_k), psi_A(s_i, s_j, s_k))`` (eq. 8), where ``l_H`` is the Huber
    loss with delta = 1 (eq. 6; PyTorch's ``smooth_l1_loss``, beta = 1) and the potentials are those
    of :func:`rkd_potentials` (distances normalised by their mean over the off-diagonal pairs).

    Conventions (those of RepDistiller ``RKDLoss``, so that its weights mean the same here):

    * ``L_D`` is averaged over all B^2 entries of the B x B matrices (the diagonal is 0 on both
      sides), ``L_A`` over all B^3 entries of the angle tensors; the paper sums over pairs/triplets.
    * Default weights ``w_D = 25``, ``w_A = 50`` are RepDistiller's (what users compare with); the
      paper's are ``w_D = 1``, ``w_A = 2`` (section 4, "RKD-DA").
    * The teacher is detached. A weight of 0 skips its part (and its B^3 memory for the angles).
    * A batch of one example has no relation: the loss is 0 (in the student's graph).
    * Memory: the pairwise differences take B^2 D values and the angles B^3 (as in RepDistiller);
      prefer ``pool: avg`` or an embedding layer for large maps.

    Args:
        student: [B, D_s] student embeddings (maps: ``kdlab.losses.adapters.to_vector`` first).
        teacher: [B, D_t] teacher embeddings (D_t may differ from D_s).
        distance_weight: w_D >= 0. angle_weight: w_A >= 0 (not both 0).

    Returns:
        Scalar >= 0 (dimensionless); 0 when the teacher embeddings are a rotation, translation or
        uniform scaling of the student's.

    Raises:
        ValueError: embeddings not [B, D], different batch sizes, non-float tensors, negative or
            non-finite weights, or both weights 0 (names the values/shapes).
    """
    w_d, w_a = _weights(distance_weight, angle_weight)
    dtype = check_relation_pair(student, teacher, vectors=True)
    if student.shape[0] < 2:
        return no_relation(student)
    d_s, a_s = rkd_potentials(student.to(dtype), angles=w_a > 0)
    with torch.no_grad():
        d_t, a_t = rkd_potentials(teacher.detach().to(dtype), angles=w_a > 0)
    loss = student.new_zeros((), dtype=dtype)
    if w_d > 0:
        loss = loss + w_d * F.smooth_l1_loss(d_s, d_t, beta=1.0)
    if w_a > 0:
        loss = loss + w_a * F.smooth_l1_loss(a_s, a_t, beta=1.0)
    return loss
