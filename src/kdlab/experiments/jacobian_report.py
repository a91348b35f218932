"""The ordering sentences of the Jacobian-matching reports (Srinivas & Fleuret, ICML 2018, Tables 2-3):
each claim the paper draws from a table, tested across seeds (:func:`kdlab.report.claim_text`: paired
t-test p-value, number of seeds, "not significant" where it is not). Pure functions of per-seed result
lists, tested on fabricated tables (``tests/test_report_orderings.py``)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from kdlab.report import claim_text

#: Table 3: "matching Jacobians as well helps" (row with Jacobians, row without); Table 1's claims are
#: declared in its spec (recipes/experiments/jacobian-table1.yaml)
T3_CLAIMS: Tuple[Tuple[str, str], ...] = (("lwf_jac", "lwf"), ("lwf_at_jac", "lwf_at"))
#: Table 2: "the Jacobian-norm penalty makes the network more robust to input noise" than no penalty,
#: L2 and dropout (compared under noise, sigma > 0)
T2_CLAIMS: Tuple[Tuple[str, str], ...] = (("lam1", "lam0"), ("lam10", "lam0"), ("lam10", "l2"), ("lam10", "dropout"),
                                         ("ce_lam1", "lam0"), ("ce_lam10", "lam0"), ("ce_lam10", "l2"),
                                         ("ce_lam10", "dropout"))
#: the paper's clean-accuracy cost of the strongest penalty: 64.78 - 61.37 points (Table 2, sigma = 0)
PAPER_CLEAN_COST = 3.41


def _claims(acc: Dict[str, Dict[str, List[float]]], claims: Sequence[Tuple[str, str]], cols: Sequence[str],
            labels: Dict[str, str], col_name: str) -> List[str]:
    return [f"- {col_name} {c}: {claim_text(labels[a], labels[b], acc[a][c], acc[b][c])}"
            for c in cols for a, b in claims if a in acc and b in acc and c in acc[a] and c in acc[b]]


def table2_orderings(acc: Dict[str, Dict[str, List[float]]], sigmas: Sequence[float], labels: Dict[str, str]) -> List[str]:
    """Table 2 (``acc[row][str(sigma)]``): the penalty is more robust under noise than no penalty, L2, dropout."""
    cols = [str(s) for s in sigmas if float(s) > 0]
    return (["Paper: under input noise the Jacobian-norm penalty beats no penalty, L2 and dropout. Ours, paired over "
             "seeds:", ""] + _claims(acc, T2_CLAIMS, cols, labels, "noise std"))


def table3_orderings(acc: Dict[str, Dict[str, List[float]]], cols: Sequence[str], labels: Dict[str, str]) -> List[str]:
    """Table 3 (``acc[row][target images per class]``): Jacobians help on top of LwF (and attention)."""
    return (["Paper: matching Jacobians as well raises transfer accuracy. Ours, paired over seeds:", ""]
            + _claims(acc, T3_CLAIMS, cols, labels, "per class"))


def clean_cost_lines(acc: Dict[str, Dict[str, List[float]]], labels: Dict[str, str]) -> List[str]:
    """Table 2 at sigma = 0: what each penalty costs in clean accuracy against no penalty (the paper's
    lambda = 10 costs 3.41 points), each difference paired over seeds."""
    base = acc.get("lam0", {}).get("0.0")
    if not base:
        return []
    out = [f"Clean-accuracy cost of the penalty (sigma = 0; the paper's lambda = 10 costs {PAPER_CLEAN_COST:.2f} points). "
           "Ours, paired over seeds:", ""]
    for row in ("lam0.1", "lam1", "lam10", "ce_lam0.1", "ce_lam1", "ce_lam10"):
        if row in acc and acc[row].get("0.0"):
            out.append(f"- {claim_text(labels['lam0'], labels[row], base, acc[row]['0.0'])}")
    return out
