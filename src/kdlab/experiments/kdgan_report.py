"""The ordering sentences of the KDGAN figure reports (Wang et al., NeurIPS 2018, Figs. 6-7; Tables 3-4 are specs
whose claims :mod:`kdlab.compare.claims` tests), each a
paired test across seeds (:func:`kdlab.report.claim_text`: paired t-test p-value, number of seeds,
"not significant" where it is not). Pure functions of per-seed result lists, so they are tested on
fabricated tables (``tests/test_report_orderings.py``)."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

from kdlab.report import claim_text


def fig6_orderings(rows: Sequence[tuple], t0: float) -> List[str]:
    """Fig. 6: "the teacher learns from the classifier": its last-epoch accuracy after the game at each
    gamma (``rows``: ``(gamma, per-seed accuracies, ...)``) against the one pre-trained teacher ``t0``
    (a one-sample t-test of the per-seed differences, the paired test against a constant), then each
    gamma > 0 against gamma = 0 (paired by seed: what the classifier's distillation adds), if a row
    has gamma = 0."""
    lines = [f"- gamma = {g:g}: {claim_text('teacher after the game', 'pre-trained teacher', a, [t0] * len(a))}"
             for g, a, *_ in rows]
    zero = [a for g, a, *_ in rows if g == 0]
    if zero:
        lines += [f"- gamma = {g:g} vs 0: {claim_text(f'teacher at gamma = {g:g}', 'teacher at gamma = 0', a, zero[0])}"
                  for g, a, *_ in rows if g > 0]
    return lines


def fig7_orderings(per_seed: Dict[str, List[float]]) -> List[str]:
    """Fig. 7: "the Gumbel trick lowers the variance of the adversarial gradient". ``per_seed``: variant ->
    per-seed mean adversarial-gradient variance, the first variant being 'without'; tested on log10
    variance (a ratio per seed), claim "variance without > variance with"."""
    names = list(per_seed)
    logs = {k: [math.log10(v) if v > 0 else float("nan") for v in vs] for k, vs in per_seed.items()}
    return [f"- {claim_text('log10 variance without Gumbel', f'log10 variance {k}', logs[names[0]], logs[k], unit='log10 units')}"
            for k in names[1:]]
