"""FSP matrices (Yim et al. 2017, eqs. 1-2): match the flow between pairs of layers of each network."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

from kdlab.config import ConfigError
from kdlab.losses.fsp import fsp_loss
from kdlab.terms._feature_maps import named_shapes
from kdlab.terms.base import OUTPUT, TERMS, Term, TermConfig, pick


def _pairs(items, key: str) -> List[Tuple[str, str]]:
    out = []
    for item in items:
        if len(item) != 2:
            raise ConfigError(f"objective.student.fsp.{key} entries are [first feature, second feature]; got {list(item)}")
        out.append((str(item[0]), str(item[1])))
    return out


@TERMS.register("fsp")
class FSPTerm(Term):
    """FSP loss (Yim et al. 2017, "A gift from knowledge distillation", eqs. 1-2), summed over pairs.

    Each ``student_pairs[i] = [a, b]`` of student maps gives ``G_s = sum_{h,w} F_a(h,w) F_b(h,w)^T / (h w)``
    [C_a, C_b] (eq. 1; the larger map of the pair is adaptive-average pooled to the smaller's H x W, as in
    RepDistiller), likewise ``teacher_pairs[i]`` gives ``G_t``; the term is ``sum_i mean_batch
    ||G_s - G_t||_F^2`` (eq. 2 with equal lambda_i: the weight is lambda; RepDistiller averages over the
    matrix entries instead). The FSP matrices of pair i must have one size; teacher detached."""

    @dataclass
    class Config(TermConfig):
        student_pairs: List[List[str]] = field(default_factory=list)  # [[first map, second map], ...] of the student
        teacher_pairs: List[List[str]] = field(default_factory=list)  # the same number of teacher pairs

    requires = frozenset({"teacher", "features"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.s_pairs = _pairs(cfg.student_pairs, "student_pairs")
        self.t_pairs = _pairs(cfg.teacher_pairs, "teacher_pairs")
        if not self.s_pairs or len(self.s_pairs) != len(self.t_pairs):
            raise ConfigError("term 'fsp' needs objective.student.fsp.student_pairs and teacher_pairs of one non-zero length "
                              f"([[first, second], ...]); got {len(self.s_pairs)} student and {len(self.t_pairs)} "
                              "teacher pairs")
        s_names = list(dict.fromkeys(n for p in self.s_pairs for n in p))
        t_names = list(dict.fromkeys(n for p in self.t_pairs for n in p))
        s_shapes = dict(zip(s_names, named_shapes(s_names, ctx.student_shapes(s_names, "fsp"), "student", "fsp")))
        t_shapes = dict(zip(t_names, named_shapes(t_names, ctx.teacher_shapes(t_names, "fsp"), "teacher", "fsp")))
        for (a, b), (c, d) in zip(self.s_pairs, self.t_pairs):
            gs, gt = (s_shapes[a][0], s_shapes[b][0]), (t_shapes[c][0], t_shapes[d][0])
            if gs != gt:
                raise ConfigError(
                    f"term 'fsp': the FSP matrices differ in size: student [{a!r}, {b!r}] gives {gs} from maps "
                    f"{s_shapes[a]} and {s_shapes[b]}, teacher [{c!r}, {d!r}] gives {gt} from maps {t_shapes[c]} "
                    f"and {t_shapes[d]}; pair maps with the same channel counts")
        self.student_features = [n for n in s_names if n != OUTPUT]  # OUTPUT (the main output) needs no hook
        self.teacher_features = [n for n in t_names if n != OUTPUT]

    def forward(self, s, t, batch):
        return sum(fsp_loss(pick(s, a), pick(s, b), pick(t, c).detach(), pick(t, d).detach())
                   for (a, b), (c, d) in zip(self.s_pairs, self.t_pairs))
