"""A spec's ``init`` runs (:mod:`kdlab.compare.inits`), its fixed ``subset_seed`` and a scale's per-row sets:
what each planned run's config holds, checked against the spec written here (nothing trains), and the
bad input refused before anything runs."""
from __future__ import annotations

import pytest

from kdlab.compare import load_spec
from kdlab.compare.plan import plan_compare
from kdlab.config import ConfigError

START = "model.checkpoint=@init:start"


def _spec(**more):
    spec = {
        "name": "t", "subset_seed": 7, "seeds": [0, 1],
        "common": ["data.val_size=1000", "trainer.epochs=2"],
        "student": {"model": {"name": "mlp", "kwargs": {"hidden": [16, 16]}}},
        "methods": [{"label": "KD", "name": "kd", "recipe": "demo_kd", "set": [START, "teacher.checkpoint=@init:tch"]},
                    {"label": "CE", "name": "ce", "recipe": "demo_ce", "set": [START]}],
        "primary": [{"a": "kd", "b": "ce", "metric": "test_acc_best", "direction": "greater", "label": "KD > CE"}],
        "init": {"start": {"set": ["method=teacher", "model.name=mlp", "model.kwargs.hidden=[16, 16]", "trainer.epochs=1"]},
                 "tch": {"seed": 5, "per_column": False, "set": ["method=teacher", "model.name=lenet", "data.n_per_class=30"]},
                 "unused": ["method=teacher"]},
        "columns": {"a": ["data.n_per_class=10"], "b": ["data.n_per_class=20"]},
        "scales": {"small": {"rows": {"ce": ["trainer.epochs=3"]}}, "big": {"init": {"start": ["method=teacher", "trainer.epochs=4"],
                                                                          "tch": ["method=teacher"]}}},
    }
    spec.update(more)
    return spec


def test_init_runs_are_planned_once_per_column_and_seed_and_rows_point_to_them(tmp_path):
    plan = plan_compare(load_spec(_spec(), scale="small"), tmp_path)
    inits = {c.cfg.name: c.cfg for c in plan.inits}
    # used inits only: start per column x seed, the teacher once (fixed seed, every column)
    assert sorted(inits) == sorted([f"t-init-start-{c}-s{s}" for c in "ab" for s in (0, 1)] + ["t-init-tch-s5"])
    for name, cfg in inits.items():
        assert cfg.data.subset_seed == 7 and cfg.method == "teacher" and cfg.data.val_size == 1000
    assert inits["t-init-start-b-s1"].data.n_per_class == 20 and inits["t-init-start-b-s1"].seed == 1
    assert inits["t-init-start-a-s0"].trainer.epochs == 1 and inits["t-init-start-a-s0"].model.kwargs.hidden == [16, 16]
    tch = inits["t-init-tch-s5"]
    assert tch.seed == 5 and tch.data.n_per_class == 30 and tch.model.name == "lenet"
    assert len(plan.cells) == 2 * 2 * 2
    for cell in plan.cells:
        col = cell.row.column
        assert cell.cfg.model.checkpoint == str(tmp_path / f"t-init-start-{col}-s{cell.seed}")
        assert cell.cfg.data.subset_seed == 7 and cell.cfg.seed == cell.seed
        if cell.row.slug.startswith("kd-"):
            assert cell.cfg.teacher.checkpoint == str(tmp_path / "t-init-tch-s5")
        # the scale's per-row sets reach that row only
        assert cell.cfg.trainer.epochs == (3 if cell.row.slug.startswith("ce-") else 2)


def test_without_subset_seed_each_seed_draws_its_subset(tmp_path):
    spec = _spec(subset_seed=None)
    plan = plan_compare(load_spec(spec, scale="big"), tmp_path)
    assert [c.cfg.data.subset_seed for c in plan.cells] == [c.seed for c in plan.cells]
    # a scale's init replaces the top-level one
    assert sorted(plan.spec.inits) == ["start", "tch"]
    assert {c.cfg.trainer.epochs for c in plan.inits if "-init-start-" in c.cfg.name} == {4}
    assert {c.cfg.name for c in plan.inits if "-init-tch-" in c.cfg.name} == {"t-init-tch-a-s0", "t-init-tch-a-s1",
                                                                                "t-init-tch-b-s0", "t-init-tch-b-s1"}


@pytest.mark.parametrize("change,words", [
    ({"methods": [{"label": "KD", "name": "kd", "recipe": "demo_kd"},
                  {"label": "CE", "name": "ce", "recipe": "demo_ce", "set": ["model.checkpoint=@init:nope"]}]},
     ["'nope'", "@init:start", "@init:tch"]),
    ({"init": {"start": {"sets": ["method=teacher"]}}}, ["'sets'", "per_column"]),
    ({"init": {"start": {"seed": "one", "set": ["method=teacher"]}}}, ["seed", "'one'", "integer"]),
    ({"init": {"start": {"per_column": 1, "set": ["method=teacher"]}}}, ["per_column", "true or false"]),
    ({"init": {"start": {"seed": 1}}}, ["needs a recipe or key=value sets"]),
    ({"init": {"bad name": ["method=teacher"]}}, ["'bad name'"]),
    ({"init": ["method=teacher"]}, ["'init'", "mapping"]),
    ({"scales": {"small": {"rows": {"kdd": ["trainer.epochs=3"]}}}}, ["'kdd'", "kd, ce"]),
    ({"subset_seed": "x"}, ["subset_seed"]),
])
def test_bad_init_rows_and_subset_seed_are_refused_before_anything_runs(change, words, tmp_path):
    with pytest.raises(ConfigError) as err:
        plan_compare(load_spec(_spec(**change), scale="small"), tmp_path)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_the_report_gives_each_init_runs_accuracy_per_column(tmp_path):
    """results.json's init_runs: per init and column, the mean and sample std over the seeds' summary.json
    (numpy on the same numbers); a run that has not finished counts as missing."""
    import json

    import numpy as np

    from kdlab.compare.report import _init_runs

    plan = plan_compare(load_spec(_spec(), scale="small"), tmp_path)
    acc = {"t-init-start-a-s0": 70.0, "t-init-start-a-s1": 73.5, "t-init-start-b-s0": 80.25, "t-init-tch-s5": 88.0}
    for name, a in acc.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"test_acc_best": a}))
    got = {(i["label"], i["column"]): i["test_acc_best"] for i in _init_runs(plan)}
    assert got[("init start", "a")]["mean"] == pytest.approx(np.mean([70.0, 73.5]))
    assert got[("init start", "a")]["std"] == pytest.approx(np.std([70.0, 73.5], ddof=1))
    assert got[("init start", "b")]["n"] == 1 and got[("init start", "b")]["mean"] == 80.25  # s1 not finished
    assert got[("init tch", None)]["mean"] == 88.0
