"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018)."""
from __future__ import annotations

import torch

from kdlab.losses._common import check_positive
from kdlab.losses._relational import check_relation_pair, no_relation

#: The reference code's epsilon (passalis/probabilistic_kt ``cosine_similarity_loss``, kept by
#: RepDistiller ``PKT`` and torchdistill ``PKTLoss``): added to the norms and inside the log ratio.
PKT_EPS = 1e-7


def pkt_conditionals(x: torch.Tensor, eps: float = PKT_EPS) -> torch.Tensor:
    """Conditional probabilities of a batch under the cosine kernel.

    ``K_ij = (cos(x_i, x_j) + 1) / 2`` in [0, 1] with ``cos = <x_i, x_j> / ((||x_i|| + eps)(||x_j|| + eps))``,
    then ``P_ij = K_ij / sum_k K_ik`` (each row a distribution over the batch, the diagonal included
    as in the reference code; the paper leaves ``k = i`` out).

    Args:
        x: [B, D] embeddings. eps: > 0.

    Returns:
        [B, B] row-stochastic matrix (a zero row of ``x`` gives K = 1/2 there, no NaN).
    """
    # vector_norm's gradient at a zero vector is 0 (torch.sqrt's would be inf * 0 = NaN)
    x = x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)
    k = (x @ x.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = PKT_EPS) -> torch.Tensor:
    """PKT: ``mean_{i,j} P^t_ij log((P^t_ij + eps) / (P^s_ij + eps))``, KL(teacher || student).

    Source: Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer",
    ECCV 2018, section 3: the teacher's and the student's conditional distributions over the batch
    from the cosine-similarity kernel ``K(a, b) = (a^T b / (||a|| ||b||) + 1) / 2``, and the loss
    ``sum_i sum_j p_{j|i} log(p_{j|i} / q_{j|i})`` (teacher p, student q), minimised by the student.

    Conventions: those of the authors' reference code (and RepDistiller ``PKT``, torchdistill
    ``PKTLoss``) so that their weights carry over (RepDistiller uses 3e4):

    * ``P = pkt_conditionals``: rows normalised with the diagonal ``K_ii`` included;
    * ``eps = 1e-7`` added to the norms and to both probabilities inside the log;
    * averaged over all B^2 entries (``torch.mean``): the paper's sum over i, j divided by B^2
      (PyTorch's ``batchmean`` KL would be B times this value);
    * teacher detached; a batch of one example gives 0.

    Args:
        student: [B, D_s] embeddings (maps: ``kdlab.losses.adapters.to_vector`` first).
        teacher: [B, D_t] embeddings (D_t may differ from D_s).
        eps: > 0 (default :data:`PKT_EPS`).

    Returns:
        Scalar (nats / B^2); 0 for identical embeddings, and invariant to positive rescaling of
        each example's embedding (the kernel only sees directions).

    Raises:
        ValueError: embeddings not [B, D], different batch sizes, non-float tensors, bad ``eps``.
    """
    eps = check_positive(eps, "eps")
    dtype = check_relation_pair(student, teacher, vectors=True)
    if student.shape[0] < 2:
        return no_relation(student)
    p_s = pkt_conditionals(student.to(dtype), eps)
    with torch.no_grad():
        p_t = pkt_conditionals(teacher.detach().to(dtype), eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()
