"""Cross-entropy with ground-truth labels (the 'CE' term of every distillation objective)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._common import check_float_tensor


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                  check_range: bool = True) -> torch.Tensor:
    """Cross-entropy with hard labels, averaged over the batch.

    ``CE = -(1/B) sum_b log softmax(z_b)[y_b]`` (the 'CE' term of the Jacobian paper,
    section 10.2, and the hard-label term of Hinton et al. 2015).

    Args:
        logits: [B, K] pre-softmax scores (any real values).
        labels: [B] integer class indices in ``[0, K)``.
        label_smoothing: in [0, 1), passed to ``F.cross_entropy`` (0 = plain CE).
        check_range: check that every label lies in ``[0, K)`` (two reductions read back to the host:
            a device sync on a GPU). A training loop passes False after its first batch; then an
            out-of-range label is left to ``F.cross_entropy`` (an ``IndexError`` on the CPU, a
            device-side assert on CUDA; a label of -100 is its ``ignore_index``).

    Returns:
        A scalar tensor (nats per example), >= 0.

    Raises:
        ValueError: if ``logits`` is not a float [B, K] tensor, ``labels`` is not an integer
            [B] tensor, or (``check_range``) a label lies outside ``[0, K)`` (the message names the
            shapes/values).
    """
    check_float_tensor(logits, "logits")
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [B, K], got {tuple(logits.shape)}")
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        got = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer (int64) tensor of class indices, got {got}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"labels must have shape [B] = [{logits.shape[0]}] to match logits {tuple(logits.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    k = logits.shape[1]
    # Checked here because an out-of-range index on CUDA is an opaque device-side assert.
    if check_range and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(
            f"labels must lie in [0, {k}) for {k} classes; got min {int(labels.min())}, max {int(labels.max())}"
        )
    return F.cross_entropy(logits, labels.long(), label_smoothing=float(label_smoothing))
