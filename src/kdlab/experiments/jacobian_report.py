"""The ordering sentences of the Jacobian-matching reports (Srinivas & Fleuret, ICML 2018, Tables 1-3):
each claim the paper draws from a table, tested across seeds (:func:`kdlab.report.claim_text`: paired
t-test p-value, number of seeds, "not significant" where it is not). Pure functions of per-seed result
lists, tested on fabricated tables (``tests/test_report_orderings.py``)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from kdlab.report import claim_text

#: Table 1 / Table 3: "matching Jacobians as well helps" (row with Jacobians, row without)
T1_CLAIMS: Tuple[Tuple[str, str], ...] = (("ce_jac", "ce"), ("ce_act_jac", "ce_act"), ("act_jac", "act"))
T3_CLAIMS: Tuple[Tuple[str, str], ...] = (("lwf_jac", "lwf"), ("lwf_at_jac", "lwf_at"))
#: Table 2: "the Jacobian-norm penalty makes the network more robust to input noise" than no penalty,
#: L2 and dropout (compared under noise, sigma > 0)
T2_CLAIMS: Tuple[Tuple[str, str], ...] = (("lam1", "lam0"), ("lam10", "lam0"), ("lam10", "l2"), ("lam10", "dropout"))


def _claims(acc: Dict[str, Dict[str, List[float]]], claims: Sequence[Tuple[str, str]], cols: Sequence[str],
            labels: Dict[str, str], col_name: str) -> List[str]:
    return [f"- {col_name} {c}: {claim_text(labels[a], labels[b], acc[a][c], acc[b][c])}"
            for c in cols for a, b in claims if a in acc and b in acc and c in acc[a] and c in acc[b]]


def table1_orderings(acc: Dict[str, Dict[str, List[float]]], cols: Sequence[str], labels: Dict[str, str]) -> List[str]:
    """Table 1 (``acc[row][data points per class]``: per-seed accuracies): adding Jacobian matching helps."""
    return (["Paper: adding Jacobian matching raises accuracy in the limited-data columns. Ours, paired over seeds:", ""]
            + _claims(acc, T1_CLAIMS, cols, labels, "per class"))


def table2_orderings(acc: Dict[str, Dict[str, List[float]]], sigmas: Sequence[float], labels: Dict[str, str]) -> List[str]:
    """Table 2 (``acc[row][str(sigma)]``): the penalty is more robust under noise than no penalty, L2, dropout."""
    cols = [str(s) for s in sigmas if float(s) > 0]
    return (["Paper: under input noise the Jacobian-norm penalty beats no penalty, L2 and dropout. Ours, paired over "
             "seeds:", ""] + _claims(acc, T2_CLAIMS, cols, labels, "noise std"))


def table3_orderings(acc: Dict[str, Dict[str, List[float]]], cols: Sequence[str], labels: Dict[str, str]) -> List[str]:
    """Table 3 (``acc[row][target images per class]``): Jacobians help on top of LwF (and attention)."""
    return (["Paper: matching Jacobians as well raises transfer accuracy. Ours, paired over seeds:", ""]
            + _claims(acc, T3_CLAIMS, cols, labels, "per class"))
