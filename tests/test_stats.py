"""The statistics of the reports (kdlab.report.stats): paired differences with a 95% t interval, Holm's
adjustment, the verdict rule and the last-quarter loss decrease, each against an independent
computation (scipy, a worked example, the step-down procedure written out, closed forms)."""
from __future__ import annotations

import math
import random

import pytest
from scipy import stats

from kdlab.report import holm, last_quarter_decrease, paired_test, verdict


def test_paired_interval_and_p_equal_scipy_and_the_t_formula():
    a = [81.2, 79.5, 83.0, 80.1, 82.4]
    b = [79.9, 79.8, 80.2, 78.0, 81.1]
    got = paired_test(a, b)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(confidence_level=0.95)
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-12) and got["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert got["ci"] == pytest.approx([ci.low, ci.high], rel=1e-12)
    # the same interval written out: mean ± t_{0.975, n-1} s / sqrt(n) of the differences
    d = [x - y for x, y in zip(a, b)]
    m = sum(d) / 5
    s = math.sqrt(sum((x - m) ** 2 for x in d) / 4)
    half = 2.7764451051977987 * s / math.sqrt(5)  # t_{0.975, 4} from a printed t table (2.776)
    assert got["diffs"] == pytest.approx(d) and got["diff"] == pytest.approx(m) and got["sd"] == pytest.approx(s)
    assert got["ci"] == pytest.approx([m - half, m + half], rel=1e-9)


def test_paired_test_edge_cases():
    one = paired_test([1.0], [0.5])
    assert one["n"] == 1 and one["diff"] == 0.5 and one["p"] is None and one["ci"] is None
    same = paired_test([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])  # every difference 1: no variance
    assert same["ci"] == [1.0, 1.0] and same["p"] == 0.0 and same["t"] is None
    nan = paired_test([1.0, float("nan"), 3.0], [0.0, 1.0, 1.0])  # the NaN seed is dropped from both sides
    assert nan["n"] == 2 and nan["diffs"] == [1.0, 2.0]
    with pytest.raises(ValueError, match="2 and 1 values"):
        paired_test([1.0, 2.0], [1.0])


def test_holm_worked_example():
    """The worked example of the Holm–Bonferroni method (Wikipedia, "Holm–Bonferroni method", Example):
    p1 = 0.01, p2 = 0.04, p3 = 0.03, p4 = 0.005 at alpha = 0.05: H4 (0.005 < 0.05/4) and H1 (0.01 < 0.05/3)
    are rejected, H3 (0.03 > 0.05/2) is not, and the procedure stops. Adjusted: p4 4 x 0.005 = 0.02;
    p1 max(0.02, 3 x 0.01) = 0.03; p3 max(0.03, 2 x 0.03) = 0.06; p2 max(0.06, 1 x 0.04) = 0.06."""
    adj = holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adj] == [True, False, False, True]
    assert holm([0.02, 0.021]) == pytest.approx([0.04, 0.04])  # monotone: 1 x 0.021 is raised to 0.04
    assert holm([0.6, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([0.01, None, 0.02]) == pytest.approx([0.02, None, 0.02])  # None: not in the family (m = 2)
    assert holm([]) == []
    with pytest.raises(ValueError, match="1.5"):
        holm([0.1, 1.5])


def test_holm_rejects_exactly_what_the_step_down_procedure_rejects():
    """Holm's procedure as stated in Holm (1979): order the p-values, reject H_(j) while
    p_(j) < alpha / (m - j + 1), stop at the first that is not. adj < alpha must reject the same set."""
    rng = random.Random(0)
    for _ in range(200):
        m = rng.randint(1, 8)
        ps = [rng.choice([rng.random() * 0.05, rng.random()]) for _ in range(m)]
        order = sorted(range(m), key=lambda i: ps[i])
        rejected = set()
        for j, i in enumerate(order):
            if ps[i] < 0.05 / (m - j):
                rejected.add(i)
            else:
                break
        adj = holm(ps)
        assert {i for i in range(m) if adj[i] < 0.05} == rejected, ps
        assert all(adj[i] >= ps[i] for i in range(m))


@pytest.mark.parametrize("diff,p,direction,want", [
    (1.2, 0.01, "greater", "holds"), (-1.2, 0.01, "greater", "does not hold"), (1.2, 0.2, "greater", "undecided"),
    (-0.5, 0.001, "less", "holds"), (0.5, 0.001, "less", "does not hold"), (1.0, None, "greater", "undecided"),
    (0.0, 0.0, "greater", "undecided"), (1.0, 0.05, "greater", "undecided"),
])
def test_verdict_rule(diff, p, direction, want):
    assert verdict(diff, p, direction) == want


def test_verdict_refuses_an_unknown_direction():
    with pytest.raises(ValueError, match="'up'.*greater, less"):
        verdict(1.0, 0.01, "up")


def test_last_quarter_decrease_closed_forms():
    # quarters of 2: m3 = (3 + 3) / 2 = 3, m4 = (2 + 2) / 2 = 2: 100 (3 - 2) / 3
    assert last_quarter_decrease([4, 4, 4, 4, 3, 3, 2, 2]) == pytest.approx(100 / 3)
    assert last_quarter_decrease([5, 1, 1, 1, 1, 1, 1, 1]) == 0.0  # flat at the end
    # n = 9: q = 2, the last quarters end at the last value: m3 = (0.4 + 0.3) / 2, m4 = (0.3 + 0.6) / 2
    assert last_quarter_decrease([9, 9, 9, 9, 9, 0.4, 0.3, 0.3, 0.6]) == pytest.approx(100 * (0.35 - 0.45) / 0.35)
    assert last_quarter_decrease([3, 2, 1]) is None and last_quarter_decrease([0, 0, 0, 0]) is None
