"""Generator (and student) losses of the data-free baselines: DFAD, DAFL and DFQ/DeepInversion-style
BatchNorm-statistics matching, as pure functions.

Sources:
  * DFAD: Fang et al. 2019, "Data-free adversarial distillation" (arXiv:1912.11006), eq. 4: the
    mean absolute error between teacher and student logits, minimised by the student and
    maximised by the generator.
  * DAFL: Chen et al. 2019, "Data-free learning of student networks" (ICCV), eqs. 5-7 (one-hot,
    activation, information entropy), combined in eq. 9 as ``L_oh + alpha L_a + beta L_ie``.
  * DeepInversion: Yin et al. 2020, "Dreaming to distill" (CVPR), eq. 4 (``R_feature``: per-layer L2
    distances between the batch statistics at each BatchNorm input and its running statistics);
    used with a generator by DFQ (Choi et al. 2020, "Data-free network quantization with adversarial
    knowledge distillation") and by Fast-Datafree's / CMI's ``GenerativeSynthesizer``.

Conventions (stated once for the whole file): ``B`` batch, ``K`` classes; logs are natural unless a
``base`` is given; NOTHING is detached here. In a generator step every tensor carries the graph
back to the generator (the networks' parameters are frozen by the caller), and a student term
passes detached teacher logits itself.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor, check_logit_pair, check_mode, check_positive
from kdlab.losses.mosaic import BALANCE_LOG_BASES, balance_loss
from kdlab.models.sync_bn import global_batch_stats
from kdlab.ranks import distributed

#: reductions of :func:`logit_l1` and :func:`activation_loss`
L1_REDUCTIONS = ("mean", "batchmean")
#: divergences of :func:`adversarial_loss`
ADV_MODES = ("kl", "l1")
#: log bases of :func:`information_entropy_loss` (names as they appear in configs)
LOG_BASES = BALANCE_LOG_BASES
#: forms of :func:`bn_statistics_loss`
BN_NORMS = ("layer", "concat")


def _check_logits(x: torch.Tensor, name: str) -> None:
    check_float_tensor(x, name)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [B, K], got {tuple(x.shape)}")


def logit_l1(student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean absolute error between logits, DFAD eq. 4: ``L_MAE = (1/n) ||z_t - z_s||_1``.

    * ``reduction='mean'`` (default): ``n = B * K``, the elementwise mean (``F.l1_loss``, DFAD's code);
    * ``'batchmean'``: ``n = B``, the L1 norm over the K classes averaged over the batch (= mean * K).

    Nothing is detached (see the module docstring): the DFAD generator minimises ``-logit_l1(s, t)``
    with both sides carrying its graph; the student term passes ``t.detach()``.

    Args: student_logits, teacher_logits: [B, K] float. reduction: one of :data:`L1_REDUCTIONS`.
    Returns: scalar >= 0 (logit units). Raises: ValueError: shapes differ / not [B, K]; unknown reduction.
    """
    check_mode(reduction, L1_REDUCTIONS, "reduction")
    check_logit_pair(student_logits, teacher_logits)
    diff = (student_logits - teacher_logits.to(student_logits.dtype)).abs()
    return diff.mean() if reduction == "mean" else diff.sum(1).mean()


def kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """``T^2 KL(softmax(z_t/T) || softmax(z_s/T))``, summed over classes, averaged over the batch
    (batchmean, nats), WITHOUT detaching the teacher (unlike :func:`kdlab.losses.kd_loss`): the
    disagreement a generator maximises (DFQ, Fast-Datafree's ``kldiv``).

    Args: [B, K] logits each; temperature T > 0. Returns: scalar >= 0.
    Raises: ValueError: shapes; T not a finite number > 0.
    """
    t = check_positive(temperature, "temperature")
    check_logit_pair(student_logits, teacher_logits)
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.to(student_logits.dtype) / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def adversarial_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mode: str = "kl",
                     temperature: float = 1.0) -> torch.Tensor:
    """The generator's adversarial term: minus a teacher-student disagreement, so that minimising it
    makes images on which the student is still wrong (DFAD eq. 5's max over G; DFQ's ``-adv * KL``).

    * ``mode='kl'``: ``-T^2 KL(p_t || p_s)`` (:func:`kl_teacher_student`; DFQ, Fast-Datafree);
    * ``mode='l1'``: ``-logit_l1(z_s, z_t)`` with the elementwise mean (DFAD).

    Returns: scalar <= 0. Raises: ValueError: unknown mode, shapes, bad temperature.
    """
    check_mode(mode, ADV_MODES)
    if mode == "l1":
        return -logit_l1(student_logits, teacher_logits)
    return -kl_teacher_student(student_logits, teacher_logits, temperature)


def one_hot_loss(teacher_logits: torch.Tensor, targets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """DAFL eq. 5: ``L_oh = (1/B) sum_i CE(z_t^i, t^i)`` with ``t^i = argmax_k z_t^i_k`` (the teacher's own
    prediction, a constant: argmax has no gradient), or given ``targets`` (DeepInversion's sampled labels).

    Args: teacher_logits: [B, K] float. targets: None or [B] int64 in [0, K).
    Returns: scalar >= 0 (nats). Raises: ValueError: bad shapes, or CPU targets out of range.
    """
    _check_logits(teacher_logits, "teacher_logits")
    if targets is None:
        targets = teacher_logits.detach().argmax(1)
    elif targets.shape != teacher_logits.shape[:1] or targets.dtype != torch.long:
        raise ValueError(f"targets must be int64 of shape [{teacher_logits.shape[0]}], got {targets.dtype} "
                         f"{tuple(targets.shape)}")
    elif targets.device.type == "cpu" and targets.numel() and (int(targets.min()) < 0
                                                                or int(targets.max()) >= teacher_logits.shape[1]):
        # checked on the CPU only: on an accelerator this would be a host sync per step (cross_entropy asserts there)
        lo, hi = int(targets.min()), int(targets.max())
        raise ValueError(f"targets must lie in [0, {teacher_logits.shape[1]}), got [{lo}, {hi}]")
    return F.cross_entropy(teacher_logits, targets)


def activation_loss(features: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """DAFL eq. 6: ``L_a = -(1/n) sum |f_t|`` over the teacher's penultimate features (the input of its
    classifier), rewarding images that excite them.

    * ``reduction='mean'`` (default): ``n = B * D``, DAFL's code (``-features_T.abs().mean()``), the
      scale its published weight ``a = 0.1`` was set for;
    * ``'batchmean'``: ``n = B``, eq. 6 as printed (``-(1/n) sum_i ||f_T^i||_1``) (= mean * D).

    Args: features: [B, ...] float (flattened per example). Returns: scalar <= 0.
    Raises: ValueError: not float / fewer than 2 dims; unknown reduction.
    """
    check_mode(reduction, L1_REDUCTIONS, "reduction")
    check_float_tensor(features, "features")
    if features.dim() < 2:
        raise ValueError(f"features must have shape [B, ...], got {tuple(features.shape)}")
    a = features.flatten(1).abs()
    return -(a.mean() if reduction == "mean" else a.sum(1).mean())


def information_entropy_loss(teacher_logits: torch.Tensor, base: str = "e") -> torch.Tensor:
    """DAFL eq. 7: ``L_ie = -H(pbar) = sum_k pbar_k log pbar_k`` with ``pbar = (1/B) sum_i softmax(z_t^i)``,
    the batch-mean teacher prediction; minimising it balances the classes of a batch. The same quantity
    as MosaicKD's balance loss (:func:`kdlab.losses.mosaic.balance_loss`, which computes it).

    Range: ``[-log K, 0]``: ``-log K`` when ``pbar`` is uniform, 0 when every image is one class.
    ``base``: ``'e'`` (nats; Fast-Datafree's ``balance``), ``'2'`` (bits; MosaicKD's balance) or ``'10'``
    (DAFL's and MosaicKD's data-free code use ``log10``).

    Args: teacher_logits: [B, K] float. Returns: scalar in [-log_base K, 0].
    Raises: ValueError: not [B, K]; unknown base.
    """
    _check_logits(teacher_logits, "teacher_logits")
    return balance_loss(teacher_logits, log_base=str(base))


def batch_statistics(x: torch.Tensor):
    """Per-channel (dim 1) mean and BIASED variance of ``x`` [B, C, ...] over every other dim, as a
    BatchNorm layer normalises with in training: ``(mean [C], var [C])``. Under DDP, over every rank's
    rows (differentiable; :func:`kdlab.models.sync_bn.global_batch_stats`), as one process with the
    global batch computes them."""
    check_float_tensor(x, "BatchNorm input")
    if x.dim() < 2:
        raise ValueError(f"a BatchNorm input must have shape [B, C, ...], got {tuple(x.shape)}")
    if distributed():
        return global_batch_stats(x)[:2]
    dims = [0] + list(range(2, x.dim()))
    return x.mean(dims), x.var(dims, unbiased=False)


def bn_statistics_loss(inputs: Sequence[torch.Tensor], running_means: Sequence[torch.Tensor],
                       running_vars: Sequence[torch.Tensor], norm: str = "layer") -> torch.Tensor:
    """BatchNorm-statistics matching (DeepInversion eq. 4, ``R_feature``), over the L BatchNorm layers
    of the teacher with ``mu_l, var_l`` the batch statistics of layer l's INPUT (:func:`batch_statistics`)
    and ``m_l, v_l`` its running statistics (constants):

    * ``norm='layer'`` (default): ``sum_l ||mu_l - m_l||_2 + ||var_l - v_l||_2`` (DeepInversion, and
      Fast-Datafree's / CMI's ``DeepInversionHook`` summed over layers);
    * ``norm='concat'``: ``||cat_l mu_l - cat_l m_l||_2 + ||cat_l var_l - cat_l v_l||_2`` (MosaicKD's
      data-free baseline code, one norm over all channels of all layers).

    Args:
        inputs: L tensors [B, C_l, ...] (each layer's input in one forward pass).
        running_means, running_vars: L tensors [C_l] (detached inside).
        norm: one of :data:`BN_NORMS`.

    Returns: scalar >= 0; 0 iff every batch statistic equals its running one.
    Raises: ValueError: no layers, mismatched lengths or channel counts; unknown norm.
    """
    check_mode(norm, BN_NORMS, "norm")
    if not len(inputs) or not len(inputs) == len(running_means) == len(running_vars):
        raise ValueError(f"bn_statistics_loss needs one input, running mean and running var per BatchNorm layer; got "
                         f"{len(inputs)}, {len(running_means)}, {len(running_vars)}")
    d_mean, d_var = [], []
    for i, (x, m, v) in enumerate(zip(inputs, running_means, running_vars)):
        mu, var = batch_statistics(x)
        if mu.shape != m.shape or var.shape != v.shape:
            raise ValueError(f"BatchNorm layer {i}: input has {mu.numel()} channels, running statistics {m.numel()}")
        d_mean.append(mu - m.detach().to(mu.dtype))
        d_var.append(var - v.detach().to(var.dtype))
    if norm == "concat":
        return torch.linalg.vector_norm(torch.cat(d_mean)) + torch.linalg.vector_norm(torch.cat(d_var))
    return sum(torch.linalg.vector_norm(a) + torch.linalg.vector_norm(b) for a, b in zip(d_mean, d_var))


__all__ = ["L1_REDUCTIONS", "ADV_MODES", "LOG_BASES", "BN_NORMS", "logit_l1", "kl_teacher_student",
           "adversarial_loss", "one_hot_loss", "activation_loss", "information_entropy_loss", "batch_statistics",
           "bn_statistics_loss"]
