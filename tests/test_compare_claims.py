"""Declared comparisons of compare specs and experiment specs: parsing, the refusals before anything
trains, the statistics in results.json and report.md (on a stand-in trainer, then on real tiny runs,
against scipy on the per-seed numbers read back from the runs' summary.json), the results folder
layout of ``kdlab reproduce`` and its marker.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml
from scipy import stats

from kdlab.cli import main
from kdlab.compare import load_spec, plan_compare, run_compare
from kdlab.compare.render import render_report
from kdlab.config import ConfigError, to_yaml
from kdlab.experiments import EXPERIMENTS, grid
from kdlab.experiments.specs import run_spec_experiment

from fake_runs import write_finished_run

#: made-up per-seed test accuracy (best-on-val; last = best - 0.5) per row name and seed 0..4
ACC = {"ce": [80.0, 81.5, 79.0, 80.2, 80.9], "kd": [82.0, 82.5, 81.9, 81.0, 82.6],
       "t8": [81.0, 83.0, 78.5, 80.0, 81.4]}
#: made-up training loss per logged step (8 values: quarters of 2) per row
LOSS = {"ce": [2.0, 1.6, 1.3, 1.1, 1.0, 0.9, 0.85, 0.85], "kd": [2.0, 1.5, 1.2, 1.0, 0.8, 0.8, 0.8, 0.8],
        "t8": [2.0, 1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]}
MACS, PARAMS = 89_400, 89_610


class FakeTrain:
    """Stands in for kdlab.runner.train: a finished run directory (config.yaml, metrics.jsonl with a
    training loss per logged step, summary.json) from the resolved config; records the runs it makes."""

    def __init__(self) -> None:
        self.names = []

    def __call__(self, cfg: Any, **kw: Any) -> Path:
        self.names.append(cfg.name)
        row = cfg.name.split("-")[1] if cfg.name.count("-") >= 2 else "teacher"
        acc = ACC.get(row, [90.0] * 5)[cfg.seed % 5]
        loss = LOSS.get(row, LOSS["ce"])
        metrics = [{"epoch": i // 4, "step": 5 * (i + 1), "train/loss": v, "throughput": 500.0} for i, v in enumerate(loss)]
        return write_finished_run(cfg, acc, metrics + [{"epoch": 1, "step": 40, "val/acc": acc}], {"0.0": acc},
                                  params=PARAMS, macs=MACS)


@pytest.fixture
def fake(monkeypatch):
    f = FakeTrain()
    monkeypatch.setattr(grid, "train", f)
    return f


def spec_dict(**over: Any) -> Dict[str, Any]:
    spec = {"name": "cmp", "teacher": "demo_teacher", "budget": {"n_per_class": 30}, "seeds": [0, 1, 2, 3, 4],
            "student": {"model": {"name": "mlp", "kwargs": {"hidden": [32]}}, "data": {"batch_size": 25}},
            "common": ["trainer.epochs=2", "trainer.progress=false"],
            "methods": [{"label": "CE only", "name": "ce", "recipe": "demo_ce"},
                        {"label": "KD", "name": "kd", "recipe": "demo_kd"},
                        {"label": "KD T=8", "name": "t8", "recipe": "demo_kd", "set": ["objective.student.kd.temperature=8"]}],
            "primary": [{"a": "KD", "b": "ce", "metric": "test_acc_best", "direction": "greater",
                         "label": "KD beats CE", "paper": "Hinton et al. 2015"},
                        {"a": "t8", "b": "CE only", "metric": "test_acc_best", "direction": "greater",
                         "label": "KD at T=8 beats CE", "paper": "Hinton et al. 2015"}],
            "secondary": [{"a": "t8", "b": "kd", "metric": "test_acc_last", "direction": "less",
                           "label": "T=8 is worse than T=4", "paper": "none"}]}
    spec.update(over)
    return spec


# ------------------------------------------------------------------------------------- parsing
def test_comparisons_are_parsed_by_label_or_name_and_expanded_per_column():
    spec = load_spec(spec_dict())
    assert spec.declared and [(c.a, c.b, c.kind) for c in spec.comparisons] == [
        ("kd", "ce", "primary"), ("t8", "ce", "primary"), ("t8", "kd", "secondary")]
    cols = load_spec(spec_dict(columns={"n5": ["data.n_per_class=5"], "n50": ["data.n_per_class=50", "trainer.epochs=3"]},
                               primary=[{"a": "kd", "b": "ce", "metric": "test_acc_best", "label": "x", "columns": ["n5"]}],
                               secondary=[{"a": "kd", "b": "ce", "metric": "test_acc_last", "label": "y"}]))
    assert [r.slug for r in cols.rows] == ["ce-n5", "kd-n5", "t8-n5", "ce-n50", "kd-n50", "t8-n50"]
    assert cols.rows[4].label == "KD [n50]" and cols.rows[4].set == ["data.n_per_class=50", "trainer.epochs=3"]
    assert [(c.a, c.b, c.kind, c.column) for c in cols.comparisons] == [
        ("kd-n5", "ce-n5", "primary", "n5"), ("kd-n5", "ce-n5", "secondary", "n5"),
        ("kd-n50", "ce-n50", "secondary", "n50")]
    plain = load_spec(spec_dict(primary=None, secondary=None, seeds=[0]))  # kdlab compare's default: post hoc
    assert not plain.declared and [(c.a, c.kind) for c in plain.comparisons] == [("kd", "post hoc"), ("t8", "post hoc")]


def test_scales_append_lists_merge_the_student_and_replace_seeds():
    spec = spec_dict(scales={"small": {"seeds": [0, 1], "common": ["data.max_test=100"]},
                             "full": {"student": {"trainer": {"epochs": 9}}, "columns": {"all": ["data.n_per_class=null"]}}})
    small = load_spec(spec)
    assert small.scale == "small" and small.seeds == [0, 1] and small.common[-1] == "data.max_test=100"
    full = load_spec(spec, scale="full")
    assert full.seeds == [0, 1, 2, 3, 4] and full.student["trainer"] == {"epochs": 9}
    assert full.student["model"]["name"] == "mlp" and [r.slug for r in full.rows] == ["ce-all", "kd-all", "t8-all"]


def test_a_column_may_set_some_rows_keys_after_their_own_sets(tmp_path):
    """``columns: {NAME: {set: [...], rows: {ROW: [...]}}}``: the column's sets, then the row's, then the
    column's sets of that row (a value that depends on the budget, e.g. CRD's negatives); other rows and
    other columns are untouched."""
    spec = load_spec(spec_dict(columns={
        "n5": {"set": ["data.n_per_class=5", "trainer.epochs=3"],
               "rows": {"KD T=8": ["objective.student.kd.temperature=16"], "ce": ["trainer.epochs=7"]}},
        "n50": ["data.n_per_class=50"]}))
    sets = {r.slug: r.set for r in spec.rows}
    assert sets["t8-n5"] == ["data.n_per_class=5", "trainer.epochs=3", "objective.student.kd.temperature=8",
                             "objective.student.kd.temperature=16"]
    assert sets["kd-n5"] == ["data.n_per_class=5", "trainer.epochs=3"]
    assert sets["t8-n50"] == ["data.n_per_class=50", "objective.student.kd.temperature=8"]
    cfg = {c.row.slug: c.cfg for c in plan_compare(spec, tmp_path).cells if c.seed == 0}
    temps = {slug: c.objective.student.kd.temperature for slug, c in cfg.items() if "kd" in c.objective.student}
    assert temps == {"kd-n5": 4.0, "t8-n5": 16.0, "kd-n50": 4.0, "t8-n50": 8.0}  # demo_kd: T = 4
    epochs = {slug: c.trainer.epochs for slug, c in cfg.items()}
    assert epochs == {"ce-n5": 7, "kd-n5": 3, "t8-n5": 3, "ce-n50": 2, "kd-n50": 2, "t8-n50": 2}


BAD = [
    ({"columns": {"n5": {"set": ["data.n_per_class=5"], "rows": {"nope": ["trainer.epochs=3"]}}}}, {},
     ["columns.n5.rows", "'nope'", "'KD T=8' (t8)"]),
    ({"columns": {"n5": {"sets": ["data.n_per_class=5"]}}}, {}, ["columns.n5", "'sets'", "set, rows"]),
    ({"columns": {"n5": {"rows": {"kd": "trainer.epochs"}}}}, {}, ["columns.n5.rows.kd", "key=value"]),
    ({"primary": [{"a": "nope", "b": "ce", "metric": "test_acc_best", "label": "x"}]}, {},
     ["primary[0].a", "'nope'", "'CE only' (ce)"]),
    ({"secondary": [{"a": "kd", "b": "kd", "metric": "test_acc_best", "label": "x"}]}, {}, ["same row"]),
    ({"primary": [{"a": "kd", "b": "ce", "metric": "test_acc_best", "label": "x", "direction": "up"}]}, {},
     ["'up'", "greater, less"]),
    ({"primary": [{"a": "kd", "b": "ce", "label": "x"}]}, {}, ["missing 'metric'"]),
    ({"primary": [{"a": "kd", "b": "ce", "metric": "test_acc_best", "label": "x", "why": 1}]}, {}, ["'why'", "paper"]),
    ({"primary": None}, {"require_primary": True}, ["no primary comparison", "primary:"]),
    ({"primary": None, "secondary": None}, {"require_primary": True}, ["no primary comparison"]),
    ({"seeds": [0]}, {}, ["seeds = [0]", "at least 2 seeds"]),
    ({"methods": [{"label": "CE", "recipe": "demo_ce", "paper": "high"}]}, {}, ["methods[0].paper = 'high'"]),
    ({}, {"seeds": "3"}, ["seeds = [3]", "at least 2 seeds"]),
    ({"scales": {"small": {}}}, {"scale": "huge"}, ["'huge'", "accepted: small"]),
    ({"scales": {"small": {"epochs": 3}}}, {}, ["scales.small", "'epochs'"]),
    ({"columns": {"n5": ["data.n_per_class=5"]},
      "primary": [{"a": "kd", "b": "ce", "metric": "test_acc_best", "label": "x", "columns": ["n7"]}]}, {},
     ["'n7'", "accepted: n5"]),
]


@pytest.mark.parametrize("over,kw,words", BAD)
def test_bad_comparisons_are_refused_with_the_reason(over, kw, words):
    with pytest.raises(ConfigError) as err:
        load_spec(spec_dict(**over), **kw)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_a_metric_no_row_produces_is_refused_before_any_training(fake, tmp_path):
    spec = load_spec(spec_dict(primary=[{"a": "kd", "b": "ce", "metric": "fid", "label": "x"}]))
    with pytest.raises(ConfigError, match="metric 'fid' is not produced by row 'kd'.*accepted: test_acc_best"):
        run_compare(spec, tmp_path)
    assert fake.names == [] and not any(tmp_path.iterdir())


def test_a_missing_row_is_refused_on_the_command_line_before_any_training(fake, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec_dict(primary=[{"a": "KD T=4", "b": "ce", "metric": "test_acc_best",
                                                       "label": "x"}])))
    assert main(["compare", str(path), "--out", str(tmp_path / "runs")]) == 2
    assert "no row 'KD T=4'" in capsys.readouterr().err and fake.names == []


def test_writing_into_another_experiments_results_is_refused(fake, tmp_path):
    other = tmp_path / "results" / "jacobian-table1" / "small"
    other.mkdir(parents=True)
    (other / "results.json").write_text(json.dumps({"experiment": "jacobian-table1"}))
    for report_dir in (other, other / "sub" / "cmp"):
        with pytest.raises(ConfigError, match="holds the results of experiment 'jacobian-table1'.*'cmp'"):
            plan_compare(load_spec(spec_dict()), tmp_path / "runs", report_dir=report_dir)
    with pytest.raises(ConfigError, match="holds the results of experiment 'jacobian-table1'"):  # nor the runs
        plan_compare(load_spec(spec_dict()), other / "runs", report_dir=tmp_path / "results" / "cmp" / "small")
    assert fake.names == []
    plan_compare(load_spec(spec_dict(name="jacobian-table1")), tmp_path / "runs", report_dir=other)  # its own: fine


# ------------------------------------------------------------------------------- the report (stand-in runs)
def test_comparisons_statistics_and_report_from_results_json(fake, tmp_path):
    res = run_compare(load_spec(spec_dict()), tmp_path)
    out = tmp_path / "cmp"
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == "cmp" and results["declared"]
    comps = {(c["a"], c["b"], c["kind"]): c for c in results["comparisons"]}
    raw = {}
    for row in ("kd", "t8"):
        ref = stats.ttest_rel(ACC[row], ACC["ce"])
        ci = ref.confidence_interval()
        c = comps[(row, "ce", "primary")]
        assert c["values_a"] == ACC[row] and c["values_b"] == ACC["ce"] and c["seeds"] == [0, 1, 2, 3, 4]
        assert c["p"] == pytest.approx(ref.pvalue, rel=1e-9) and c["ci"] == pytest.approx([ci.low, ci.high], rel=1e-9)
        raw[row] = ref.pvalue
    small, large = sorted(raw, key=raw.get)  # Holm over the 2 primary comparisons, written out
    assert comps[(small, "ce", "primary")]["p_holm"] == pytest.approx(min(1, 2 * raw[small]))
    assert comps[(large, "ce", "primary")]["p_holm"] == pytest.approx(max(min(1, 2 * raw[small]), raw[large]))
    assert comps[("kd", "ce", "primary")]["verdict"] == "holds"  # KD > CE on every seed
    assert comps[("t8", "ce", "primary")]["verdict"] == "undecided"
    sec = comps[("t8", "kd", "secondary")]
    assert sec["p_holm"] is None
    assert sec["p"] == pytest.approx(stats.ttest_rel([a - 0.5 for a in ACC["t8"]], [a - 0.5 for a in ACC["kd"]]).pvalue)
    # per row: updates, training MACs per update, last-quarter loss decrease (closed form on LOSS)
    rows = {e["slug"]: e for e in results["rows"]}
    assert rows["ce"]["steps"]["mean"] == 40 and rows["ce"]["macs_per_update"]["mean"] == 3 * MACS * 25
    assert rows["ce"]["loss_last_quarter"]["mean"] == pytest.approx(100 * (0.95 - 0.85) / 0.95)
    assert rows["kd"]["loss_last_quarter"]["mean"] == pytest.approx(0.0)
    # report.md is rendered from results.json alone
    text = res.report.read_text()
    assert text == render_report(results)
    prim = text[text.index("## Primary comparisons"):text.index("## Secondary comparisons")]
    kd = comps[("kd", "ce", "primary")]
    assert (f"| KD beats CE | Hinton et al. 2015 | KD > CE only | test_acc_best | 5 | {kd['diff']:+.2f} | "
            f"[{kd['ci'][0]:+.2f}, {kd['ci'][1]:+.2f}] | {kd['p']:.3g} | {kd['p_holm']:.3g} | **holds** |") in prim
    second = text[text.index("## Secondary comparisons"):text.index("## Accuracy")]
    assert "T=8 is worse than T=4" in second and "**" not in second and "unadjusted" in second
    assert "Last-quarter loss decrease" in text and "## Post hoc" not in text
    assert "differ in student updates" not in text and "fewer than 5 seeds" not in text
    results["rows"][1]["runs"][0]["steps"] = 41  # one run of another length: the report says so
    assert "this comparison differ in student updates (40, 41)" in render_report(results)
    env = json.loads((out / "environment.json").read_text())
    assert set(env) == {"versions", "git_commit", "hardware", "wall_time_s"} and env["hardware"]["cores"] >= 1
    assert "torch" in env["versions"] and env["wall_time_s"] == pytest.approx(results["wall_time_s"])


def test_a_plain_compare_spec_gets_post_hoc_comparisons_never_bold(fake, tmp_path):
    methods = spec_dict()["methods"]
    methods[1] = {**methods[1], "paper": 72.98}  # the paper's value of a row, beside ours
    res = run_compare(load_spec(spec_dict(primary=None, secondary=None, methods=methods)), tmp_path)
    text = res.report.read_text()
    assert "| Kept vs teacher (%) | Paper |" in text and "| 72.98 |" in text
    assert "## Primary comparisons" not in text and "## Post hoc comparisons" in text
    post = text[text.index("## Post hoc comparisons"):text.index("## Accuracy")]
    assert "KD vs CE only" in post and "**" not in post


# ------------------------------------------------------------------------------- kdlab reproduce layout
def test_spec_experiment_writes_results_experiment_scale(fake, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec_dict(name="exp", seeds=[0, 1], scales={"small": {}, "full": {}})))
    report = run_spec_experiment(path, tmp_path / "runs", "small", results=tmp_path / "results")
    out = tmp_path / "results" / "exp" / "small"
    assert report == out / "report.md"
    for f in ("results.json", "environment.json", "plots/accuracy.png", "plots/comparisons.png", "configs/ce.yaml", "configs/t8.yaml",
              "configs/teacher.yaml"):
        assert (out / f).is_file(), f
    assert json.loads((out / "results.json").read_text())["scale"] == "small"
    assert (tmp_path / "runs" / "exp-small" / "exp-kd-s1" / "summary.json").is_file()
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(spec_dict(name="other", seeds=[0, 1])))
    with pytest.raises(ConfigError, match="results of experiment 'exp'"):
        run_spec_experiment(other, tmp_path / "runs", "small", results=out)


def test_packaged_experiment_specs_declare_primary_claims_with_5_seeds():
    from kdlab.experiments.specs import SPEC_DIR

    paths = sorted(SPEC_DIR.glob("*.yaml"))
    assert "jacobian-table1" in [p.stem for p in paths]
    for path in paths:
        assert path.stem in EXPERIMENTS
        for scale in ("small", "full"):
            spec = load_spec(path, scale=scale, require_primary=True)
            assert len(spec.seeds) >= 5 and sum(c.kind == "primary" for c in spec.comparisons) >= 1


def test_reproduce_refuses_one_seed_for_a_spec_experiment(capsys):
    assert main(["reproduce", "jacobian-table1", "--seeds", "0"]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- real runs
def test_real_tiny_runs_report_scipy_statistics_of_their_summaries(tmp_path):
    """Two rows x 3 seeds of a tiny real classifier (1 epoch): the report's p-values and intervals are
    scipy's on the per-seed numbers read back from the runs' summary.json."""
    small = {"model": {"name": "mlp", "kwargs": {"hidden": [16]}},
             "data": {"val_size": 200, "batch_size": 50, "eval_batch_size": 500, "max_test": 300},
             "trainer": {"epochs": 1, "progress": False, "tensorboard": False, "log_every_n_steps": 1, "threads": 1},
             "eval": {"latency": False, "noise_sigmas": [0.0]}, "optim": {"name": "adam", "lr": 0.002}}
    spec = {"name": "real", "student": small, "budget": {"n_per_class": 20}, "seeds": [0, 1, 2],
            "methods": [{"label": "CE", "set": ["method=teacher"]},
                        {"label": "CE lr", "set": ["method=teacher", "optim.lr=0.02"]}],
            "primary": [{"a": "CE lr", "b": "CE", "metric": "test_acc_best", "label": "a larger step helps"}],
            "secondary": [{"a": "CE lr", "b": "CE", "metric": "test_acc_last", "direction": "less", "label": "y"}]}
    res = run_compare(load_spec(spec), tmp_path)
    assert res.failed == 0
    summ = {(row, s): json.loads((tmp_path / f"real-{row}-s{s}" / "summary.json").read_text())
            for row in ("ce", "ce-lr") for s in (0, 1, 2)}
    results = json.loads((tmp_path / "real" / "results.json").read_text())
    text = res.report.read_text()
    checked = 0
    for c in results["comparisons"]:
        a = [summ[("ce-lr", s)][c["metric"]] for s in (0, 1, 2)]
        b = [summ[("ce", s)][c["metric"]] for s in (0, 1, 2)]
        ref = stats.ttest_rel(a, b)
        ci = ref.confidence_interval()
        assert c["values_a"] == a and c["values_b"] == b
        if c["ci"][0] == c["ci"][1]:  # every difference equal (possible on 300 test images): no t interval
            continue
        assert c["p"] == pytest.approx(ref.pvalue, rel=1e-9) and c["ci"] == pytest.approx([ci.low, ci.high], rel=1e-9)
        assert f"[{ci.low:+.2f}, {ci.high:+.2f}] | {ref.pvalue:.3g} |" in text
        checked += 1
    assert checked >= 1
    prim = results["comparisons"][0]
    assert prim["p_holm"] == pytest.approx(prim["p"])  # one primary comparison: Holm changes nothing
    assert "Note: 1 of the 1 primary comparison(s) rest on fewer than 5 seeds." in text
    rows = {e["slug"]: e for e in results["rows"]}
    steps = -(-200 // 50)  # 20 images x 10 classes, batch 50, 1 epoch
    assert rows["ce"]["steps"]["mean"] == steps and rows["ce"]["loss_last_quarter"]["n"] == 3


# ------------------------------------------------------------------------------------- the converted experiment
#: the former Python grid of jacobian-table1 at small scale (its overrides, written out): column ->
#: (images per class, epochs, log every); row -> (recipe row, normalised Jacobian form). The spec's small scale
#: keeps the paper's six rows and its four limited-data columns (the primary claims; the whole grid would take
#: ~8 h on 2 cores): :data:`T1_SMALL_DROPPED` are on the GPU scale only.
OLD_T1_COMMON = ["data.val_size=500", "data.max_test=2000", "data.batch_size=64", "eval.latency=false",
                 "trainer.progress=false", "trainer.tensorboard=false", "optim.scheduler=cosine", "optim.milestones=[]",
                 "model.kwargs.width=0.25"]
OLD_T1_COLUMNS = {"n1": (1, 300, 5), "n5": (5, 200, 13), "n10": (10, 200, 23), "n50": (50, 64, 34), "n500": (500, 8, 41)}
OLD_T1_ROWS = {"ce": ("ce", False), "ce-act": ("ce_act", False), "ce-jac": ("ce_jac", False),
               "ce-act-jac": ("ce_act_jac", False), "act": ("act", False), "act-jac": ("act_jac", False),
               "ce-jac-norm": ("ce_jac", True), "ce-act-jac-norm": ("ce_act_jac", True), "act-jac-norm": ("act_jac", True)}
T1_SMALL_DROPPED = {"columns": ["n500"], "rows": ["ce-jac-norm", "ce-act-jac-norm", "act-jac-norm"]}


def test_jacobian_table1_spec_resolves_to_the_former_grid_configs(tmp_path):
    """The spec keeps the rows of the Python grid it replaced: every cell's resolved config equals the
    former one (up to name, label and where the teacher is), and so does the teacher's."""
    from kdlab.experiments.specs import SPEC_DIR

    plan = plan_compare(load_spec(SPEC_DIR / "jacobian-table1.yaml", scale="small", seeds="0,3"), tmp_path)
    old_teacher = grid.resolve([grid.recipe("jacobian_teacher")], [f"out_dir={tmp_path}", *OLD_T1_COMMON,
                                                                     "data.n_per_class=1000", "trainer.epochs=4",
                                                                     f"name={plan.teacher.cfg.name}"])
    assert to_yaml(plan.teacher.cfg) == to_yaml(old_teacher)
    kept_rows = [r for r in OLD_T1_ROWS if r not in T1_SMALL_DROPPED["rows"]]
    kept_cols = [c for c in OLD_T1_COLUMNS if c not in T1_SMALL_DROPPED["columns"]]
    assert sorted({c.row.slug for c in plan.cells}) == sorted(f"{r}-{c}" for r in kept_rows for c in kept_cols)
    assert len(plan.cells) == 6 * 4 * 2 and load_spec(SPEC_DIR / "jacobian-table1.yaml").seeds == [0, 1, 2, 3, 4]
    full = plan_compare(load_spec(SPEC_DIR / "jacobian-table1.yaml", scale="full", seeds="0,1"), tmp_path / "full")
    assert {c.row.slug.rsplit("-", 1)[0] for c in full.cells} == set(OLD_T1_ROWS)  # the normalised rows on a GPU
    assert {c.kind for c in full.spec.comparisons} == {"primary", "secondary"}
    for cell in plan.cells[1::2]:  # seed 3 of every cell (seed 0 differs only in seed= and data.subset_seed=)
        row, col = cell.row.slug.rsplit("-", 1)
        n, epochs, every = OLD_T1_COLUMNS[col]
        recipe_row, norm = OLD_T1_ROWS[row]
        old = grid.resolve([grid.recipe(f"jacobian_t1_{recipe_row}")], [
            f"out_dir={tmp_path}", *OLD_T1_COMMON, f"teacher.checkpoint={plan.teacher_path}", f"data.n_per_class={n}",
            f"trainer.epochs={epochs}", "data.batch_size=16", f"seed={cell.seed}", f"data.subset_seed={cell.seed}",
            f"name={cell.cfg.name}", f"label={cell.cfg.label}", f"trainer.log_every_n_steps={every}",
            *(["objective.student.jacobian.normalize=true", f"objective.student.jacobian.weight={20.0 / 784:.6g}"]
              if norm else [])])
        assert to_yaml(cell.cfg) == to_yaml(old), cell.cfg.name
