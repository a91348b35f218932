"""Every ordering a `kdlab reproduce` report states carries a paired test across seeds (issue 10 part 5):
each report's ordering sentences, built from fabricated small result tables, name the p-value and the
number of seeds, and say "not significant" where the paired t-test (checked against scipy) says so."""
from __future__ import annotations

import re

from scipy import stats

from kdlab.experiments import kdgan_report
from kdlab.report import claim_text

P = re.compile(r"paired t-test p = ([0-9.e-]+), n = (\d+) seeds")
A_HI = [80.0, 81.0, 82.5, 79.5]  # clearly above B_LO seed by seed
B_LO = [70.0, 70.5, 72.0, 69.0]
NOISY = [75.0, 70.0, 78.0, 69.0]  # no consistent difference from B_LO


def _check(lines, n_seeds=4):
    """Every sentence that states an ordering ("A > B" / "A < B") carries a p-value and the seed count."""
    ordering = [ln for ln in lines if re.search(r" [<>] .* by ", ln)]
    assert ordering, lines
    for ln in ordering:
        m = P.search(ln)
        assert m and int(m.group(2)) == n_seeds, ln
    return ordering


def test_claim_text_verdicts_and_p_value_match_scipy():
    held = claim_text("A", "B", A_HI, B_LO)
    p = stats.ttest_rel(A_HI, B_LO).pvalue
    assert held.startswith("claim A > B: holds") and f"p = {p:.3g}" in held and "not significant" not in held
    assert claim_text("A", "B", B_LO, A_HI).startswith("claim A > B: does NOT hold")
    undecided = claim_text("A", "B", NOISY, B_LO)
    assert undecided.startswith("claim A > B: undecided") and "not significant" in undecided
    assert "untested" in claim_text("A", "B", [1.0], [0.0])


def test_kdgan_fig6_fig7_orderings_carry_p_values():
    lines = _check(kdgan_report.fig6_orderings([(0.0, B_LO), (0.1, A_HI)], t0=75.0))
    assert "does NOT hold" in lines[0] and "holds" in lines[1]
    assert len(lines) == 3 and "gamma = 0.1 vs 0" in lines[2] and "holds" in lines[2]  # what distillation adds
    per_seed = {"without": [1e-3, 2e-3, 1.5e-3, 1.2e-3], "with": [1e-4, 3e-4, 2e-4, 1e-4]}
    assert "holds" in _check(kdgan_report.fig7_orderings(per_seed))[0]
