"""Cross entropy with the hard labels: ``CE(z_s, y) = -(1/B) sum_b log softmax(z_s)_{b, y_b}``."""
from __future__ import annotations

from dataclasses import dataclass

from kdlab.config import bounded
from kdlab.losses import cross_entropy
from kdlab.terms.base import TERMS, Term, TermConfig


@TERMS.register("ce")
class CrossEntropyTerm(Term):
    """Cross entropy of the student's logits with the labels (mean over the batch).

    Needs labelled transfer data. With a two-headed student (LwF) it scores the head that belongs to
    the labels (:attr:`Outputs.label_logits`).
    """

    @dataclass
    class Config(TermConfig):
        label_smoothing: float = bounded(0.0, ge=0, lt=1)

    requires = frozenset({"logits", "labels"})
    roles = frozenset({"student", "teacher"})
    legacy = {"ce": "weight"}

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.label_smoothing = float(self.cfg.label_smoothing)
        self._range_checked = False

    def forward(self, s, t, batch):
        # The label range is checked on the first batch only: the check reads two values back to the
        # host, a device sync in every step on a GPU; later batches come from the same source.
        check = not self._range_checked
        if check:  # written once: an nn.Module attribute write costs ~2 us
            self._range_checked = True
        return cross_entropy(s.logits_for_labels, batch.y, self.label_smoothing, check_range=check)
