"""A spec's ``init`` runs (:mod:`kdlab.compare.inits`), its fixed ``subset_seed`` and a scale's per-row sets:
what each planned run's config holds, checked against the spec written here (nothing trains), and the
bad input refused before anything runs."""
from __future__ import annotations

import pytest
import torch

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


# ------------------------------------------------------------------------- init runs on the pool, in waves
def _chained_spec():
    spec = _spec()
    spec["init"]["warm"] = {"set": ["method=teacher", "model.checkpoint=@init:start", "trainer.epochs=1"]}
    spec["methods"][1]["set"] = ["model.checkpoint=@init:warm"]
    return spec


def test_init_waves_put_each_run_after_the_runs_it_reads(tmp_path):
    from kdlab.compare.execute import first_waves

    plan = plan_compare(load_spec(_chained_spec(), scale="small"), tmp_path)
    waves = [sorted(c.cfg.name for c in w) for w in first_waves(plan.teacher_cells, plan.inits)]
    starts = [f"t-init-start-{c}-s{s}" for c in "ab" for s in (0, 1)]
    assert waves == [sorted(starts + ["t-init-tch-s5"]), sorted(f"t-init-warm-{c}-s{s}" for c in "ab" for s in (0, 1))]
    warm = {c.cfg.name: c.cfg for c in plan.inits}["t-init-warm-b-s1"]
    assert warm.model.checkpoint == str(tmp_path / "t-init-start-b-s1")


def test_init_waves_match_whole_run_directories_and_put_inits_after_the_teachers(tmp_path):
    from types import SimpleNamespace

    from kdlab.compare.execute import first_waves

    def cell(name, *overrides):
        c = SimpleNamespace(cfg=SimpleNamespace(name=name), overrides=list(overrides), sources=[{}],
                            run_dir=tmp_path / name)
        return c

    teacher = cell("tch")
    s1, s10 = cell("x-s1"), cell("x-s10")
    reads_s10 = cell("y", f"model.checkpoint={tmp_path / 'x-s10'}")  # names x-s10, not x-s1 (a prefix of it)
    reads_file = cell("z", f"players.disc_init={tmp_path / 'y' / 'discriminator.safetensors'}")
    in_source = cell("w")
    in_source.sources = [{"teacher": {"checkpoint": str(tmp_path / "z")}}]
    waves = first_waves([teacher], [s1, s10, reads_s10, reads_file, in_source])
    assert [[c.cfg.name for c in w] for w in waves] == [["tch"], ["x-s1", "x-s10"], ["y"], ["z"], ["w"]]
    # without teachers, independent inits share the first wave
    assert [[c.cfg.name for c in w] for w in first_waves([], [s1, s10, reads_s10])] == [["x-s1", "x-s10"], ["y"]]


def test_run_first_trains_wave_by_wave_moves_the_logs_and_stops_at_a_failed_run(tmp_path, monkeypatch):
    from kdlab.compare import execute

    plan = plan_compare(load_spec(_chained_spec(), scale="small"), tmp_path)
    seen, fail = [], {"name": None}

    def fake_run_cells(plan_, jobs, gpus, console, cells, threads):
        seen.append(([c.cfg.name for c in cells], jobs, threads))
        out = {}
        for c in cells:
            c.run_dir.mkdir(parents=True, exist_ok=True)
            log = plan_.out / "logs" / f"{c.cfg.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("worker output\n")
            bad = c.cfg.name == fail["name"]
            out[c.cfg.name] = execute.Outcome(c.cfg.name, "failed" if bad else "trained", c.run_dir,
                                              error="NonFiniteLossError: loss is nan" if bad else None, log=log)
        return out

    monkeypatch.setattr(execute, "run_cells", fake_run_cells)
    execute.run_first(plan, jobs=2, threads=1)
    assert [len(w) for w, _, _ in seen] == [5, 4] and all(j == 2 and t == 1 for _, j, t in seen)
    for c in plan.inits:  # each finished run's log is in its own directory, none left in the report's
        assert (c.run_dir / "compare.log").read_text() == "worker output\n"
    assert not list((plan.out / "logs").iterdir())

    seen.clear()
    fail["name"] = "t-init-start-a-s1"
    with pytest.raises(execute.InitRunError, match=r"'t-init-start-a-s1'.*NonFiniteLossError.*log: .*t-init-start-a-s1\.log"):
        execute.run_first(plan, jobs=2, threads=1)
    assert len(seen) == 1  # the later wave did not start
    assert [p.name for p in (plan.out / "logs").iterdir()] == ["t-init-start-a-s1.log"]  # the failed run's stays


@pytest.mark.slow  # 2 init runs and 2 student runs of 1 epoch on 200 images, in fresh worker processes: ~1 min
def test_init_runs_train_on_the_pool_and_equal_the_in_process_runs(tmp_path):
    """The same spec with --jobs 2 (inits on the pool, one wave) and --jobs 1 (in this process): the init runs'
    weights are equal, the pool's logs sit in their run directories, and the rows read them."""
    import json

    from safetensors.torch import load_file

    from kdlab.compare import run_compare

    # in `common`: the init runs get these too (the student section is the rows' only)
    common = ["method=teacher", "model.name=mlp", "model.kwargs.hidden=[32]", "data.val_size=200", "data.batch_size=50",
              "data.n_per_class=20", "data.max_test=300", "trainer.epochs=1", "trainer.progress=false",
              "trainer.tensorboard=false", "trainer.threads=1", "eval.latency=false", "eval.noise_sigmas=[0.0]"]
    spec = {"name": "p", "seeds": [0], "common": common,
            "init": {"a": ["method=teacher"], "b": ["method=teacher", "optim.lr=0.005"]},
            "methods": [{"label": "from a", "name": "fa", "set": ["model.checkpoint=@init:a"]},
                        {"label": "from b", "name": "fb", "set": ["model.checkpoint=@init:b"]}]}
    runs = {}
    for jobs in (2, 1):
        out = tmp_path / f"j{jobs}"
        res = run_compare(load_spec(spec), out, [], jobs=jobs)
        assert res.failed == 0
        runs[jobs] = out
    for init in ("p-init-a-s0", "p-init-b-s0"):
        w2, w1 = (load_file(runs[j] / init / "teacher.safetensors") for j in (2, 1))
        assert w2.keys() == w1.keys() and all(torch.equal(w2[k], w1[k]) for k in w2)
        assert "Seed set to 0" in (runs[2] / init / "compare.log").read_text()
        assert not (runs[1] / init / "compare.log").exists()  # trained in this process: no worker log
    assert not list((runs[2] / "p" / "logs").glob("p-init-*"))
    results = json.loads((runs[2] / "p" / "results.json").read_text())
    assert [r["status"] for e in results["rows"] for r in e["runs"]] == ["trained", "trained"]
