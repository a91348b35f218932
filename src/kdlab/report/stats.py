"""Paired significance tests for the orderings a report states (scipy.stats).

Rows of a grid share seeds (and, per seed, the data subset and initialisation), so two rows are
compared seed by seed: :func:`paired_test` runs a two-sided paired t-test (``scipy.stats.ttest_rel``)
on the per-seed differences, and :func:`ordering_text` turns it into the sentence a report prints
("A > B by 1.2 points, paired t-test p = 0.03, n = 3 seeds" or "... not significant ...").
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

__all__ = ["paired_test", "ordering_text", "claim_text", "diff_text", "ALPHA"]

#: significance level of the sentences of :func:`ordering_text`
ALPHA = 0.05


def paired_test(a: Sequence[float], b: Sequence[float]) -> Dict[str, Any]:
    """Two-sided paired t-test of ``a`` vs ``b`` (the same seeds, in the same order).

    Returns:
        ``{"n": pairs, "diff": mean(a - b), "t": statistic or None, "p": p-value or None}``; ``p`` is
        None with fewer than 2 pairs, and 1.0 when every difference is 0 (no evidence of a difference).

    Raises:
        ValueError: ``a`` and ``b`` of different lengths (names both).
    """
    if len(a) != len(b):
        raise ValueError(f"a paired test needs one value per seed on both sides; got {len(a)} and {len(b)} values")
    pairs = [(float(x), float(y)) for x, y in zip(a, b) if math.isfinite(float(x)) and math.isfinite(float(y))]
    n = len(pairs)
    diffs = [x - y for x, y in pairs]
    out: Dict[str, Any] = {"n": n, "diff": sum(diffs) / n if n else None, "t": None, "p": None}
    if n < 2:
        return out
    if all(d == diffs[0] for d in diffs):  # zero variance: the t statistic is undefined
        out["p"] = 1.0 if diffs[0] == 0 else 0.0
        return out
    from scipy import stats

    res = stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
    out["t"], out["p"] = float(res.statistic), float(res.pvalue)
    return out


def ordering_text(name_a: str, name_b: str, test: Dict[str, Any], unit: str = "points",
                  alpha: float = ALPHA) -> str:
    """The ordering of ``name_a`` vs ``name_b`` as a report sentence, from :func:`paired_test`'s result:
    ``"A > B by 1.20 points (paired t-test p = 0.031, n = 3 seeds)"``, with ``"not significant"`` when
    ``p >= alpha`` and ``"untested"`` with fewer than 2 seeds."""
    d: Optional[float] = test.get("diff")
    if d is None:
        return f"{name_a} vs {name_b}: no paired values"
    sign = ">" if d > 0 else "<" if d < 0 else "="
    head = f"{name_a} {sign} {name_b} by {abs(d):.2f} {unit}"
    p = test.get("p")
    if p is None:
        return f"{head} (untested: {test['n']} seed)"
    verdict = "" if p < alpha else ", not significant"
    return f"{head} (paired t-test p = {p:.3g}, n = {test['n']} seeds{verdict})"


def diff_text(test: Dict[str, Any]) -> str:
    """A table cell from :func:`paired_test`'s result: the mean paired difference in points and its
    p-value, ``"+1.20 (p = 0.031)"`` (``"p n/a"`` below 2 pairs, ``"—"`` without pairs)."""
    if test.get("diff") is None:
        return "—"
    p = "p n/a" if test.get("p") is None else f"p = {test['p']:.3g}"
    return f"{test['diff']:+.2f} ({p})"


def claim_text(name_a: str, name_b: str, a: Sequence[float], b: Sequence[float], unit: str = "points",
               alpha: float = ALPHA) -> str:
    """A paper's claim "``name_a`` > ``name_b``" checked on per-seed values ``a``, ``b`` (same seeds, same
    order; higher is better, negate both for lower-is-better metrics): the :func:`ordering_text`
    sentence of :func:`paired_test`, then the verdict ``holds`` (a > b, p < alpha), ``does NOT hold``
    (a < b, p < alpha), or ``undecided`` (not significant, or fewer than 2 seeds).

    Raises:
        ValueError: ``a`` and ``b`` of different lengths.
    """
    test = paired_test(a, b)
    p, d = test.get("p"), test.get("diff")
    if p is not None and p < alpha and d:
        verdict = "holds" if d > 0 else "does NOT hold"
    else:
        verdict = "undecided"
    return f"claim {name_a} > {name_b}: {verdict}; {ordering_text(name_a, name_b, test, unit, alpha)}"
