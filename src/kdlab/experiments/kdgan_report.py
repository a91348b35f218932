"""The ordering sentences of the KDGAN reports (Wang et al., NeurIPS 2018, Tables 3-4, Figs. 6-7), each a
paired test across seeds (:func:`kdlab.report.claim_text`: paired t-test p-value, number of seeds,
"not significant" where it is not). Pure functions of per-seed result lists, so they are tested on
fabricated tables (``tests/test_report_orderings.py``)."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

from kdlab.report import claim_text

#: the paper's ordering at every n (Table 4, MNIST)
TABLE4_ORDER = ("KDGAN", "CODIS", "DISTN", "MIMIC")


def table4_orderings(res: Dict[str, Dict[int, Dict[str, List[float]]]], ns: Sequence[int]) -> List[str]:
    """Table 4: every pair of the paper's ordering KDGAN > CODIS > DISTN > MIMIC, at every n, on the
    best-on-validation test accuracy (``res[method][n]["best"]``: one value per seed, same seeds)."""
    lines = ["The paper's MNIST ordering at every n is KDGAN > CODIS > DISTN > MIMIC. On Fashion-MNIST, each pair "
             "tested across seeds (best-on-validation test accuracy; paired t-test):", ""]
    order = list(TABLE4_ORDER)
    for n in ns:
        means = {m: sum(res[m][n]["best"]) / max(1, len(res[m][n]["best"])) for m in order}
        lines.append(f"- n = {n}: ours, ranked by mean (each pair tested below): "
                     f"{', '.join(sorted(order, key=lambda m: -means[m]))}")
        lines += [f"  - {claim_text(a, b, res[a][n]['best'], res[b][n]['best'])}"
                  for i, a in enumerate(order) for b in order[i + 1:]]
    return lines


def table3_orderings(acc: Dict[int, Dict[int, List[float]]], ns: Sequence[int]) -> List[str]:
    """Table 3: the paper's "accuracy grows with the classifier's size at every n" and "grows with n at
    every size", as paired claims between neighbours (``acc[hidden width][n]``: one value per seed)."""
    hs = sorted(acc)
    lines = ["- Paper: accuracy grows with the classifier's size at every n. Ours:"]
    lines += [f"  - n = {n}: {claim_text(f'width {b}', f'width {a}', acc[b][n], acc[a][n])}"
              for n in ns for a, b in zip(hs, hs[1:])]
    lines.append("- Paper: accuracy grows with n at every size. Ours (seeds paired by index):")
    lines += [f"  - width {h}: {claim_text(f'n = {b}', f'n = {a}', acc[h][b], acc[h][a])}"
              for h in hs for a, b in zip(ns, ns[1:])]
    return lines


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
