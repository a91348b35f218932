"""Paired significance tests for the orderings a report states (scipy.stats).

Rows of a grid share seeds (and, per seed, the data subset and initialisation), so two rows are
compared seed by seed: :func:`paired_test` runs a two-sided paired t-test (``scipy.stats.ttest_rel``)
on the per-seed differences and gives their 95% t interval, and :func:`ordering_text` turns it into
the sentence a report prints ("A > B by 1.2 points, paired t-test p = 0.03, n = 3 seeds" or "... not
significant ..."). :func:`holm` adjusts the p-values of a report's declared primary comparisons
(Holm 1979), :func:`verdict` states whether a directional claim holds, and
:func:`last_quarter_decrease` says whether a training-loss curve had flattened.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["paired_test", "ordering_text", "claim_text", "diff_text", "holm", "verdict", "last_quarter_decrease",
           "ALPHA", "CONFIDENCE", "VERDICTS"]

#: significance level of the sentences of :func:`ordering_text`
ALPHA = 0.05
#: level of the confidence intervals of :func:`paired_test`
CONFIDENCE = 0.95
#: the verdicts of :func:`verdict`
VERDICTS = ("holds", "does not hold", "undecided")


def paired_test(a: Sequence[float], b: Sequence[float]) -> Dict[str, Any]:
    """Two-sided paired t-test of ``a`` vs ``b`` (the same seeds, in the same order).

    Pairs with a non-finite value on either side are dropped.

    Returns:
        ``{"n": pairs, "diffs": [a_i - b_i], "diff": mean(a - b), "sd": sample std of the differences,
        "t": statistic, "p": two-sided p-value, "ci": [low, high]}``: the 95% t interval
        ``diff ± t_{0.975, n-1} sd / sqrt(n)`` (as ``scipy.stats.ttest_rel(a, b).confidence_interval()``).
        ``sd``, ``t``, ``p`` and ``ci`` are None with fewer than 2 pairs; with zero variance (every
        difference equal) ``t`` is None, ``ci`` is ``[diff, diff]`` and ``p`` is 1.0 when the differences
        are 0, else 0.0.

    Raises:
        ValueError: ``a`` and ``b`` of different lengths (names both).
    """
    if len(a) != len(b):
        raise ValueError(f"a paired test needs one value per seed on both sides; got {len(a)} and {len(b)} values")
    pairs = [(float(x), float(y)) for x, y in zip(a, b) if math.isfinite(float(x)) and math.isfinite(float(y))]
    n = len(pairs)
    diffs = [x - y for x, y in pairs]
    out: Dict[str, Any] = {"n": n, "diffs": diffs, "diff": sum(diffs) / n if n else None, "sd": None, "t": None,
                           "p": None, "ci": None}
    if n < 2:
        return out
    if all(d == diffs[0] for d in diffs):  # zero variance: the t statistic is undefined
        out.update(sd=0.0, p=1.0 if diffs[0] == 0 else 0.0, ci=[diffs[0], diffs[0]])
        return out
    from scipy import stats

    res = stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
    sd = math.sqrt(sum((d - out["diff"]) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    out.update(sd=sd, t=float(res.statistic), p=float(res.pvalue), ci=[out["diff"] - half, out["diff"] + half])
    return out


def holm(pvalues: Sequence[Optional[float]]) -> List[Optional[float]]:
    """Holm's (1979) step-down adjustment of ``m`` p-values (the family: a report's primary comparisons).

    With the p-values sorted, ``p_(1) <= ... <= p_(m)``: ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``
    (the running maximum keeps the adjusted values in the order of the raw ones). Rejecting where
    ``adj < alpha`` controls the family-wise error rate at ``alpha`` under any dependence.

    Args:
        pvalues: raw p-values in ``[0, 1]``; None (an untested comparison) is left out of the family
            (``m`` counts the others) and stays None.

    Returns:
        The adjusted p-values, in the input order.

    Raises:
        ValueError: a p-value outside ``[0, 1]`` (names it).
    """
    bad = [p for p in pvalues if p is not None and not 0.0 <= p <= 1.0]
    if bad:
        raise ValueError(f"holm: p-value {bad[0]!r} is not in [0, 1]")
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out: List[Optional[float]] = [None] * len(pvalues)
    running = 0.0
    for j, i in enumerate(idx):  # j = 0 is the smallest p: factor m
        running = max(running, min(1.0, (m - j) * float(pvalues[i])))
        out[i] = running
    return out


def verdict(diff: Optional[float], p: Optional[float], direction: str = "greater", alpha: float = ALPHA) -> str:
    """The verdict on a directional claim from its mean paired difference (a - b) and (adjusted) p-value:
    ``"holds"`` (difference in the claimed direction, ``p < alpha``), ``"does not hold"`` (opposite
    direction, ``p < alpha``) or ``"undecided"`` (``p >= alpha``, untested or no difference).

    Raises:
        ValueError: ``direction`` not ``"greater"`` or ``"less"``.
    """
    if direction not in ("greater", "less"):
        raise ValueError(f"direction {direction!r}; accepted: greater, less")
    if p is None or diff is None or diff == 0 or p >= alpha:
        return "undecided"
    return "holds" if (diff > 0) == (direction == "greater") else "does not hold"


def last_quarter_decrease(losses: Sequence[float]) -> Optional[float]:
    """How much a training loss still fell at the end: the relative decrease (%) from the mean of the
    third quarter of the logged values to the mean of the last quarter, ``100 (m3 - m4) / |m3|``
    (quarters of ``n // 4`` values, the last ones ending at the last value). Near 0 (or negative):
    the curve had flattened; large: training was still improving when it stopped.

    Returns:
        The percentage, or None with fewer than 4 finite values or ``m3 == 0``.
    """
    v = [float(x) for x in losses if x is not None and math.isfinite(float(x))]
    q = len(v) // 4
    if q < 1:
        return None
    m3 = sum(v[-2 * q:-q]) / q
    m4 = sum(v[-q:]) / q
    return 100.0 * (m3 - m4) / abs(m3) if m3 else None


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
    said = verdict(test.get("diff"), test.get("p"), "greater", alpha).replace("not", "NOT")
    return f"claim {name_a} > {name_b}: {said}; {ordering_text(name_a, name_b, test, unit, alpha)}"
