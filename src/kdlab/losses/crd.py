"""Contrastive representation distillation (Tian et al. 2020, eqs. 10-19, the NCE form with memory banks)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from kdlab.losses._common import check_float_tensor, check_positive
from kdlab.losses.adapters import Embed
from kdlab.ranks import all_rows, global_mean, rank_rows

#: RepDistiller defaults (``train_student.py``: ``feat_dim 128, nce_k 16384, nce_t 0.07, nce_m 0.5``;
#: ``crd/criterion.py``: ``eps 1e-7`` inside the logs).
CRD_FEAT_DIM = 128
CRD_K = 16384
CRD_TEMPERATURE = 0.07
CRD_MOMENTUM = 0.5
CRD_EPS = 1e-7


def nce_contrast_loss(p: torch.Tensor, n_data: int) -> torch.Tensor:
    """The NCE loss of CRD (Tian et al. 2020, eqs. 18-19; RepDistiller ``ContrastLoss``).

    Column 0 of ``p`` scores each anchor's positive pair, columns 1..k its k negatives; each score is
    ``P = exp(v . v' / tau) / Z`` (the unnormalised critic over an estimated partition function). With
    the uniform noise distribution ``P_n = 1 / N``, the probability that a pair came from the data is
    ``h = P / (P + k / N)`` (eq. 19), and the loss is

        ``-(1/B) sum_b [ log h(pos_b) + sum_{j=1..k} log(1 - h(neg_bj)) ]``

    where ``1 - h = (k/N) / (P + k/N)``; both denominators get ``+ 1e-7`` as in RepDistiller. Summed
    over the k negatives, averaged over the batch.

    Args:
        p: [B, 1 + k] positive scores > 0 (column 0 positive, then k >= 1 negatives).
        n_data: N >= 1, the number of rows of the memory bank (the transfer set's size).

    Returns:
        Scalar tensor >= 0.

    Raises:
        ValueError: ``p`` not a float [B, 1 + k] tensor with k >= 1, or ``n_data`` not an int >= 1.
    """
    check_float_tensor(p, "p")
    if p.dim() != 2 or p.shape[1] < 2:
        raise ValueError(f"p must have shape [B, 1 + k] with k >= 1 negatives; got {tuple(p.shape)}")
    if isinstance(n_data, bool) or not isinstance(n_data, int) or n_data < 1:
        raise ValueError(f"n_data must be an int >= 1, got {n_data!r}")
    noise = (p.shape[1] - 1) / float(n_data)  # k * P_n
    log_d1 = torch.log(p[:, 0] / (p[:, 0] + noise + CRD_EPS))
    log_d0 = torch.log(noise / (p[:, 1:] + noise + CRD_EPS))
    return -(log_d1.sum() + log_d0.sum()) / p.shape[0]


def contrast_scores(anchor: torch.Tensor, memory: torch.Tensor, rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """``exp(memory[rows] . anchor / tau)``: [B, R] unnormalised critic scores of each anchor [B, d]
    against the memory rows ``rows`` [B, R] (the memory [N, d] is detached)."""
    weight = memory.detach()[rows.reshape(-1)].view(rows.shape[0], rows.shape[1], -1)
    return torch.exp(torch.bmm(weight, anchor.unsqueeze(2)).squeeze(2) / temperature)


class CRDLoss(nn.Module):
    """CRD for one (student, teacher) feature pair: embedding heads, two memory banks, NCE both ways.

    Tian et al., "Contrastive Representation Distillation", ICLR 2020, eqs. 10-19 (RepDistiller
    ``CRDLoss`` + ``ContrastMemory``). Features are embedded by linear heads to ``feat_dim`` and
    L2-normalised (:class:`kdlab.losses.adapters.Embed`; maps are flattened by default, as RepDistiller's
    ``x.view(B, -1)``): ``v_s = g_s(f_s)``, ``v_t = g_t(f_t)`` (teacher feature detached; the teacher
    HEAD is trained, as in RepDistiller). Each side has a memory bank of N rows (buffers ``memory_s``,
    ``memory_t`` [N, feat_dim], initialised uniformly in ``+-1/sqrt(feat_dim/3)`` as RepDistiller). For a
    batch with row indices ``index`` and k negative rows per example drawn uniformly from [0, N) (plain
    ``torch.randint``: the same distribution as RepDistiller's alias sampler over uniform weights; a
    negative may coincide with the positive row, as there):

    * teacher anchor vs the student memory: ``P_t = exp(memory_s[rows] . v_t / tau) / Z_t``;
    * student anchor vs the teacher memory: ``P_s = exp(memory_t[rows] . v_s / tau) / Z_s``;
    * loss = ``nce_contrast_loss(P_t, N) + nce_contrast_loss(P_s, N)`` (eq. 18 in both directions);

    ``Z_s, Z_t`` (buffers ``z_s``, ``z_t``, -1 until set) are estimated once, from the first batch, as
    ``N * mean(exp(. / tau))`` over all its scores (RepDistiller ``ContrastMemory``) and then kept. In
    training mode the memories are updated after the scores at ``index``:
    ``m[i] <- normalize(momentum * m[i] + (1 - momentum) v_i)`` with the new (detached) embeddings.
    Under several processes the mean for Z is over every rank's scores and every rank applies every
    rank's rows to its banks (gathered), so the banks stay equal and none of a rank's updates is lost.

    Args:
        student_shape, teacher_shape: per-sample feature shapes ((C, H, W) or (D,)).
        n_data: N, rows of the transfer set. k: negatives per anchor, 1 <= k <= N - 1 (RepDistiller 16384).
        feat_dim: embedding size (128); temperature: tau > 0 (0.07); momentum in [0, 1) (0.5);
        pool: ``flatten`` (default, RepDistiller) or ``avg`` (global average of maps).

    Raises:
        ValueError: bad sizes or hyper-parameters (names the value); see :meth:`forward` for inputs.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int], n_data: int, k: int = CRD_K,
                 feat_dim: int = CRD_FEAT_DIM, temperature: float = CRD_TEMPERATURE, momentum: float = CRD_MOMENTUM,
                 pool: str = "flatten") -> None:
        super().__init__()
        for name, v in (("n_data", n_data), ("k", k), ("feat_dim", feat_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if k > n_data - 1:
            raise ValueError(f"k = {k} negatives need a memory bank of at least k + 1 rows; n_data = {n_data}")
        if not 0 <= float(momentum) < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.n_data, self.k, self.feat_dim = n_data, k, feat_dim
        self.temperature = check_positive(temperature, "temperature")
        self.momentum = float(momentum)
        self.embed_s = Embed(student_shape, feat_dim, pool=pool)
        self.embed_t = Embed(teacher_shape, feat_dim, pool=pool)
        stdv = 1.0 / math.sqrt(feat_dim / 3.0)  # uniform entries of variance 1/feat_dim: rows of norm ~1
        self.register_buffer("memory_s", torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    def extra_repr(self) -> str:
        return f"n_data={self.n_data}, k={self.k}, feat_dim={self.feat_dim}, temperature={self.temperature}, momentum={self.momentum}"

    def _check(self, f_s: torch.Tensor, f_t: torch.Tensor, index: Optional[torch.Tensor],
               negatives: Optional[torch.Tensor]) -> torch.Tensor:
        check_float_tensor(f_s, "student_feature")
        check_float_tensor(f_t, "teacher_feature")
        b = f_s.shape[0]
        if f_t.shape[0] != b:
            raise ValueError(f"batch sizes differ: student {tuple(f_s.shape)} and teacher {tuple(f_t.shape)}")
        if index is None:
            raise ValueError("CRD needs each example's row index in the transfer set (batch.index); got None")
        if index.dtype not in (torch.int64, torch.int32) or tuple(index.shape) != (b,):
            raise ValueError(f"index must be an integer tensor of shape [B] = [{b}]; got {index.dtype} {tuple(index.shape)}")
        if negatives is not None and (negatives.dtype not in (torch.int64, torch.int32)
                                      or tuple(negatives.shape) != (b, self.k)):
            raise ValueError(f"negatives must be an integer tensor [B, k] = [{b}, {self.k}]; "
                             f"got {negatives.dtype} {tuple(negatives.shape)}")
        dev = self.memory_s.device
        given = index.to(dev).long().view(b, 1)
        if negatives is not None:
            given = torch.cat([given, negatives.to(dev).long()], dim=1)
        if int(given.min()) < 0 or int(given.max()) >= self.n_data:
            raise ValueError(f"row indices must lie in [0, {self.n_data}); got [{int(given.min())}, {int(given.max())}]")
        if negatives is not None:
            return given
        return torch.cat([given, rank_rows(lambda m: torch.randint(0, self.n_data, (m, self.k), device=dev), b)], dim=1)

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor, index: Optional[torch.Tensor],
                negatives: Optional[torch.Tensor] = None) -> torch.Tensor:
        """CRD loss of one batch (and, in training mode, the memory update at ``index``).

        Args:
            student_feature: [B, *student_shape]; teacher_feature: [B, *teacher_shape] (detached inside).
            index: int64 [B], each example's row in [0, N) (``batch.index``).
            negatives: optional int64 [B, k] negative rows (default: drawn uniformly, ``torch.randint``).

        Raises:
            ValueError: non-float features, different batch sizes, ``index`` None or not [B], rows outside
                [0, N), ``negatives`` not [B, k].
        """
        rows = self._check(student_feature, teacher_feature, index, negatives)
        v_s = self.embed_s(student_feature).float()
        v_t = self.embed_t(teacher_feature.detach()).float()
        out_t = contrast_scores(v_t, self.memory_s, rows, self.temperature)  # teacher anchor, student memory
        out_s = contrast_scores(v_s, self.memory_t, rows, self.temperature)  # student anchor, teacher memory
        with torch.no_grad():
            if float(self.z_s) < 0:
                self.z_s.fill_(float(global_mean(out_s.detach().reshape(-1))) * self.n_data)
            if float(self.z_t) < 0:
                self.z_t.fill_(float(global_mean(out_t.detach().reshape(-1))) * self.n_data)
        loss = nce_contrast_loss(out_t / self.z_t, self.n_data) + nce_contrast_loss(out_s / self.z_s, self.n_data)
        if self.training:
            self.update_memory(index, v_s.detach(), v_t.detach())
        return loss

    @torch.no_grad()
    def update_memory(self, index: torch.Tensor, v_s: torch.Tensor, v_t: torch.Tensor) -> None:
        """``m[i] <- normalize(momentum * m[i] + (1 - momentum) v)`` for both banks at rows ``index`` [B].

        Under several processes every rank applies the rows of every rank (gathered in rank order), so the
        banks stay equal across ranks and hold what one process with the global batch would hold; without
        this, DDP's broadcast of rank 0's buffers at each forward would drop the other ranks' updates."""
        index, v_s, v_t = (all_rows(t) for t in (index, v_s, v_t))
        idx = index.to(self.memory_s.device).long()
        for memory, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            mixed = memory[idx] * self.momentum + v.to(memory.dtype) * (1 - self.momentum)
            memory.index_copy_(0, idx, mixed / mixed.norm(dim=1, keepdim=True))
