"""Every ordering a `kdlab reproduce` report states carries a paired test across seeds (issue 10 part 5):
:func:`kdlab.report.claim_text` names the p-value and the number of seeds and says "not significant" where
the paired t-test (checked against scipy) says so (the spec experiments' comparisons: tests/test_compare_claims.py)."""
from __future__ import annotations

from scipy import stats

from kdlab.report import claim_text

A_HI = [80.0, 81.0, 82.5, 79.5]  # clearly above B_LO seed by seed
B_LO = [70.0, 70.5, 72.0, 69.0]
NOISY = [75.0, 70.0, 78.0, 69.0]  # no consistent difference from B_LO


def test_claim_text_verdicts_and_p_value_match_scipy():
    held = claim_text("A", "B", A_HI, B_LO)
    p = stats.ttest_rel(A_HI, B_LO).pvalue
    assert held.startswith("claim A > B: holds") and f"p = {p:.3g}" in held and "not significant" not in held
    assert claim_text("A", "B", B_LO, A_HI).startswith("claim A > B: does NOT hold")
    undecided = claim_text("A", "B", NOISY, B_LO)
    assert undecided.startswith("claim A > B: undecided") and "not significant" in undecided
    assert "untested" in claim_text("A", "B", [1.0], [0.0])
