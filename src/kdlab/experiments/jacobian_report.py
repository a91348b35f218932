"""The ordering sentences of the Jacobian-matching transfer report (Srinivas & Fleuret, ICML 2018, Table 3):
each claim the paper draws from a table, tested across seeds (:func:`kdlab.report.claim_text`: paired
t-test p-value, number of seeds, "not significant" where it is not). Pure functions of per-seed result
lists, tested on fabricated tables (``tests/test_report_orderings.py``)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from kdlab.report import claim_text

#: Table 3: "matching Jacobians as well helps" (row with Jacobians, row without); Tables 1 and 2 declare
#: their claims in their specs (recipes/experiments/jacobian-table1.yaml, jacobian-table2.yaml)
T3_CLAIMS: Tuple[Tuple[str, str], ...] = (("lwf_jac", "lwf"), ("lwf_at_jac", "lwf_at"))


def _claims(acc: Dict[str, Dict[str, List[float]]], claims: Sequence[Tuple[str, str]], cols: Sequence[str],
            labels: Dict[str, str], col_name: str) -> List[str]:
    return [f"- {col_name} {c}: {claim_text(labels[a], labels[b], acc[a][c], acc[b][c])}"
            for c in cols for a, b in claims if a in acc and b in acc and c in acc[a] and c in acc[b]]


def table3_orderings(acc: Dict[str, Dict[str, List[float]]], cols: Sequence[str], labels: Dict[str, str]) -> List[str]:
    """Table 3 (``acc[row][target images per class]``): Jacobians help on top of LwF (and attention)."""
    return (["Paper: matching Jacobians as well raises transfer accuracy. Ours, paired over seeds:", ""]
            + _claims(acc, T3_CLAIMS, cols, labels, "per class"))
