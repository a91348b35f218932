"""``kdlab reproduce jacobian-table2`` as a spec keeps the Python grid it replaced, and a classifier row's
accuracy under input noise (``noise_acc@SIGMA``) is a metric its comparisons can test.

The former ``kdlab.experiments.jacobian.table2`` rows and scales are transcribed below as data; every
cell's resolved config, at both scales, must equal the one it built (up to the run's name and label),
apart from the one deliberate change the spec states: 10 epochs instead of 20 at small scale (5 seeds
instead of 3 within 90 minutes on 2 cores)."""
from __future__ import annotations

import json

import pytest
from scipy import stats

from kdlab.compare import load_spec
from kdlab.compare.claims import check_metrics, evaluate, metric_value, parse_comparisons
from kdlab.compare.plan import plan_compare
from kdlab.config import ConfigError, to_yaml
from kdlab.experiments import grid
from kdlab.experiments.specs import SPEC_DIR

SPEC = SPEC_DIR / "jacobian-table2.yaml"
SIGMAS = "eval.noise_sigmas=[0.0,0.1,0.2,0.3,0.4]"
#: the former T2_OVERRIDES: row -> its overrides of the jacobian_teacher recipe
OLD_ROWS = {
    "lam0": [],
    "lam0.1": ["objective.teacher.jacobian_penalty.weight=0.1"],
    "lam1": ["objective.teacher.jacobian_penalty.weight=1.0"],
    "lam10": ["objective.teacher.jacobian_penalty.weight=10.0"],
    "ce-lam0.1": ["objective.teacher.jacobian_penalty.weight=0.1", "objective.teacher.jacobian_penalty.form=ce"],
    "ce-lam1": ["objective.teacher.jacobian_penalty.weight=1.0", "objective.teacher.jacobian_penalty.form=ce"],
    "ce-lam10": ["objective.teacher.jacobian_penalty.weight=10.0", "objective.teacher.jacobian_penalty.form=ce"],
    "l2": ["optim.weight_decay=0.001"],
    "dropout": ["model.kwargs.dropout=0.25"],
}
#: the former SCALE / _common of table 2, and the spec's deliberate change (applied last)
OLD_SCALE = {
    "small": ["data.val_size=500", "data.max_test=2000", "data.batch_size=64", "eval.latency=false",
              "trainer.progress=false", "trainer.tensorboard=false", "optim.scheduler=cosine", "optim.milestones=[]",
              "model.kwargs.width=0.25", "data.n_per_class=500", "trainer.epochs=20"],
    "full": ["eval.latency=false", "trainer.progress=false", "trainer.epochs=100", "optim.milestones=[80]"],
}
CHANGED = {"small": ["trainer.epochs=10"], "full": []}


@pytest.mark.parametrize("scale", ["small", "full"])
def test_jacobian_table2_spec_resolves_to_the_former_grid_configs(scale, tmp_path):
    plan = plan_compare(load_spec(SPEC, scale=scale, seeds="0,3"), tmp_path)
    assert plan.teacher is None and len(plan.cells) == 9 * 2
    for cell in plan.cells:
        old = grid.resolve([grid.recipe("jacobian_teacher")], [
            f"out_dir={tmp_path}", *OLD_SCALE[scale], SIGMAS, f"seed={cell.seed}", f"data.subset_seed={cell.seed}",
            f"name={cell.cfg.name}", f"label={json.dumps(cell.cfg.label)}", *OLD_ROWS[cell.row.slug], *CHANGED[scale]])
        assert to_yaml(cell.cfg) == to_yaml(old), cell.cfg.name
    assert [c.row.slug for c in plan.cells[::2]] == list(OLD_ROWS)
    assert load_spec(SPEC, scale=scale).seeds == [0, 1, 2, 3, 4]


def test_jacobian_table2_declares_its_claims():
    """Primary: lambda = 1 and 10 above no penalty, lambda = 10 above L2 and dropout, under noise of std
    0.2, 0.3 and 0.4 (where the paper's Table 2 shows each ordering): 12, Holm-adjusted together. Sigma
    0.1, the cross-entropy form and the clean-accuracy cost are secondary."""
    spec = load_spec(SPEC, scale="small", require_primary=True)
    primary = sorted((c.a, c.b, c.metric, c.direction) for c in spec.comparisons if c.kind == "primary")
    assert primary == sorted((a, b, f"noise_acc@{s}", "greater") for a, b in
                             (("lam1", "lam0"), ("lam10", "lam0"), ("lam10", "l2"), ("lam10", "dropout"))
                             for s in ("0.2", "0.3", "0.4"))
    secondary = [(c.a, c.b, c.metric, c.direction) for c in spec.comparisons if c.kind == "secondary"]
    assert len(secondary) == 4 + 4 * 4 + 6
    assert ("lam10", "lam0", "noise_acc@0.0", "less") in secondary
    assert {c.metric for c in spec.comparisons} <= {f"noise_acc@{s}" for s in ("0.0", "0.1", "0.2", "0.3", "0.4")}


class _Row:
    def __init__(self, slug):
        self.label, self.slug = slug.upper(), slug


def test_a_metric_list_gives_one_comparison_per_metric():
    rows = [_Row("a"), _Row("b")]
    out = parse_comparisons([{"a": "a", "b": "b", "metric": ["noise_acc@0.1", "test_acc_best"], "label": "x"}],
                            "primary", rows, [], lambda s, c: s)
    assert [(c.a, c.b, c.metric) for c in out] == [("a", "b", "noise_acc@0.1"), ("a", "b", "test_acc_best")]
    with pytest.raises(ConfigError, match=r"primary\[0\]\.metric = \['noise_acc@0.1', 3\]"):
        parse_comparisons([{"a": "a", "b": "b", "metric": ["noise_acc@0.1", 3], "label": "x"}], "primary", rows, [],
                          lambda s, c: s)


def test_noise_metric_is_read_per_seed_and_tested_like_scipy():
    """``noise_acc@0.2`` reads each run's noise accuracy at sigma 0.2 (results.json keys "0.2"); the
    comparison's p equals scipy's paired t-test on the same numbers."""
    a, b = [60.0, 62.5, 59.0, 61.0, 63.0], [50.0, 55.0, 52.5, 49.0, 58.0]

    def runs(values):
        return [{"seed": s, "status": "ok", "test_acc_best": 99.0, "noise_acc": {"0.0": 99.0, "0.2": v}}
                for s, v in enumerate(values)]

    assert metric_value(runs(a)[1], "noise_acc@0.20") == 62.5 and metric_value(runs(a)[1], "noise_acc@0.3") is None
    comps = parse_comparisons([{"a": "a", "b": "b", "metric": "noise_acc@0.2", "label": "x"}], "primary",
                              [_Row("a"), _Row("b")], [], lambda s, c: s)
    (res,) = evaluate(comps, [{"slug": "a", "label": "A", "runs": runs(a)}, {"slug": "b", "label": "B", "runs": runs(b)}])
    assert res["values_a"] == a and res["values_b"] == b
    assert res["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert res["diff"] == pytest.approx(sum(x - y for x, y in zip(a, b)) / 5)


def test_noise_metric_needs_the_sigma_among_the_rows_noise_sigmas(tmp_path):
    comps = parse_comparisons([{"a": "a", "b": "b", "metric": "noise_acc@0.5", "label": "x"}], "primary",
                              [_Row("a"), _Row("b")], [], lambda s, c: s)
    kinds = {"a": "classifier", "b": "classifier"}
    check_metrics(comps, kinds, {"a": [0.0, 0.5], "b": [0.5]})
    with pytest.raises(ConfigError, match=r"metric 'noise_acc@0.5' is not produced by row 'b'.*noise_acc@0.2"):
        check_metrics(comps, kinds, {"a": [0.5], "b": [0.0, 0.2]})
    with pytest.raises(ConfigError, match="noise_acc@0.7"):  # before anything trains: the spec's rows lack 0.7
        raw = {"name": "t2", "methods": [{"name": "a", "label": "A", "recipe": "jacobian_teacher"},
                                         {"name": "b", "label": "B", "recipe": "jacobian_teacher", "set": ["optim.weight_decay=0.001"]}],
               "primary": [{"a": "a", "b": "b", "metric": "noise_acc@0.7", "label": "x"}]}
        plan_compare(load_spec(raw), tmp_path)
