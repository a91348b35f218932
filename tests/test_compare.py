"""``kdlab compare``: spec parsing, checks before training, reuse, failed rows, paired tests, --jobs.

Most tests replace the grid runner's ``train`` with a stand-in that writes a finished run directory
(config.yaml, metrics.jsonl, summary.json with seed-dependent accuracies) without training; the
``--jobs`` test trains two tiny real runs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from kdlab.cli import main
from kdlab.compare import load_spec, parse_method_arg, plan_compare, run_compare
from kdlab.compare.spec import slugify
from kdlab.config import ConfigError, to_yaml
from kdlab.experiments import grid

from fake_runs import write_finished_run

#: made-up test accuracy (best-on-val) per (row name part, seed): row "kd" beats "ce" on every seed
ACC = {"ce": [80.0, 81.5, 79.0], "kd": [82.0, 82.5, 81.9], "t8": [81.0, 83.0, 78.5]}


class FakeTrain:
    """Stands in for kdlab.runner.train: a finished run directory from the resolved config."""

    def __init__(self, fail: str = "", error: type = RuntimeError) -> None:
        self.names = []
        self.fail, self.error = fail, error

    def __call__(self, cfg: Any, **kw: Any) -> Path:
        self.names.append(cfg.name)
        if self.fail and self.fail == cfg.name:
            raise self.error("loss exploded at step 7")
        row = cfg.name.split("-")[1] if cfg.name.count("-") >= 2 else "teacher"
        acc = ACC.get(row, [90.0, 90.0, 90.0])[cfg.seed % 3]
        metrics = [{"epoch": e, "step": 10 * (e + 1), "throughput": 500.0, "val/acc": acc - 2 + e} for e in range(2)]
        return write_finished_run(cfg, acc, metrics, {"0.0": acc, "0.2": acc - 10})


@pytest.fixture
def fake(monkeypatch):
    f = FakeTrain()
    monkeypatch.setattr(grid, "train", f)
    return f


def spec_dict(**over: Any) -> Dict[str, Any]:
    spec = {"name": "cmp", "teacher": "demo_teacher", "budget": {"n_per_class": 30}, "seeds": [0, 1, 2],
            "student": {"model": {"name": "mlp", "kwargs": {"hidden": [32]}}},
            "common": ["trainer.epochs=2", "trainer.progress=false"],
            "methods": [{"label": "CE only", "name": "ce", "recipe": "demo_ce"},
                        {"label": "KD", "name": "kd", "recipe": "demo_kd"},
                        {"label": "KD T=8", "name": "t8", "recipe": "demo_kd", "set": ["objective.student.kd.temperature=8"]}]}
    spec.update(over)
    return spec


# ----------------------------------------------------------------------------------- spec parsing
def test_spec_rows_and_cli_methods():
    spec = load_spec(spec_dict(), methods=["inline=method=distill objective.student.kd.weight=1", "KD T2=demo_kd "
                                           "objective.student.kd.temperature=2"], seeds="0,1")
    assert [r.slug for r in spec.rows] == ["ce", "kd", "t8", "inline", "kd-t2"]
    assert spec.rows[2].set == ["objective.student.kd.temperature=8"] and spec.rows[2].recipe.name == "demo_kd.yaml"
    assert spec.rows[3].recipe is None and spec.rows[3].set == ["method=distill", "objective.student.kd.weight=1"]
    assert spec.seeds == [0, 1] and spec.teacher == "demo_teacher"
    assert slugify("Student CE + KD (T=4)") == "student-ce-kd-t-4"
    row = parse_method_arg("KD T8=demo_kd objective.student.kd.temperature=8")
    assert (row.label, row.slug, row.recipe.stem, row.set) == ("KD T8", "kd-t8", "demo_kd", ["objective.student.kd.temperature=8"])
    with pytest.raises(ConfigError, match="several recipes"):
        parse_method_arg("x=demo_kd demo_ce")
    quick = load_spec("demo", quick=True)
    assert quick.seeds == [0] and "data.n_per_class=300" in quick.teacher_set
    assert quick.student["trainer"] == {"epochs": 5} and quick.student["model"]["name"] == "mlp"


@pytest.mark.parametrize("spec, kw, words", [
    (spec_dict(methods=[{"label": "a", "recipe": "demo_ce"}, {"label": "A", "recipe": "demo_kd"}]), {},
     ["same label", "'A'"]),
    (spec_dict(methods=[{"label": "a", "recipe": "no_such_recipe"}]), {}, ["'no_such_recipe'", "demo_kd"]),
    (spec_dict(methods=[{"label": "a", "recip": "demo_ce"}]), {}, ["'recip'", "recipe"]),
    (spec_dict(budget={"n_per_klass": 3}), {}, ["'n_per_klass'", "n_per_class"]),
    (spec_dict(colour="red"), {}, ["'colour'", "methods"]),
    (spec_dict(), {"methods": ["no label here"]}, ["LABEL=SOURCE"]),
    (spec_dict(), {"seeds": "0,x"}, ["'0,x'"]),
])
def test_bad_specs_name_the_value(spec, kw, words):
    with pytest.raises(ConfigError) as err:
        load_spec(spec, **kw)
    for w in words:
        assert w in str(err.value)


# ------------------------------------------------------------------------- checks before training
@pytest.mark.parametrize("row, words", [
    ({"label": "x", "set": ["method=no-such-method"]}, ["'x'", "no-such-method", "distill"]),
    ({"label": "x", "recipe": "demo_kd", "set": ["objective.student.kdd.weight=1"]}, ["'x'", "kdd", "kd"]),
    ({"label": "x", "recipe": "demo_kd", "set": ["objective.student.kd.temprature=2"]}, ["temprature", "temperature"]),
    ({"label": "x", "set": ["method=gan"]}, ["'gan'", "generator", "distill"]),
])
def test_unknown_method_or_term_fails_before_any_training(fake, tmp_path, row, words):
    spec = load_spec(spec_dict(methods=[{"label": "CE", "recipe": "demo_ce"}, row]))
    with pytest.raises(ConfigError) as err:
        run_compare(spec, tmp_path)
    for w in words:
        assert w in str(err.value)
    assert fake.names == [], "something trained before the config error"


@pytest.mark.parametrize("budget, words", [
    ({"n_per_class": 100_000}, ["data.n_per_class = 100000", "smallest class", "accepted: 1.."]),
    ({"n_per_class": 50, "transfer": "mnist-digits"}, ["data.n_per_class = 50", "'mnist-digits'", "transfer_n"]),
])
def test_inconsistent_budget_is_named(fake, tmp_path, budget, words):
    with pytest.raises(ConfigError) as err:
        run_compare(load_spec(spec_dict(budget=budget)), tmp_path)
    for w in words:
        assert w in str(err.value)
    assert fake.names == []


def test_cli_prints_config_errors_cleanly(fake, tmp_path, capsys):
    code = main(["compare", "--teacher", "demo_teacher", "--method", "ce=demo_ce", "--method", "x=method=nope",
                 "--out-dir", str(tmp_path)])
    assert code == 2 and "nope" in capsys.readouterr().err and fake.names == []


# ------------------------------------------------------------------------------ reuse and failures
def test_finished_runs_are_reused_and_a_changed_config_reruns(fake, tmp_path):
    spec = load_spec(spec_dict())
    first = run_compare(spec, tmp_path)
    assert first.failed == 0 and len(fake.names) == 1 + 9 and fake.names[0] == "cmp-teacher"
    fake.names.clear()
    again = run_compare(spec, tmp_path)
    assert fake.names == [] and {o.status for o in again.outcomes.values()} == {"reused"}
    changed = load_spec(spec_dict(methods=spec_dict()["methods"][:2] + [
        {"label": "KD T=8", "name": "t8", "recipe": "demo_kd", "set": ["objective.student.kd.temperature=6"]}]))
    run_compare(changed, tmp_path)
    assert sorted(fake.names) == ["cmp-t8-s0", "cmp-t8-s1", "cmp-t8-s2"]  # only the changed row


def test_reuse_does_not_depend_on_how_the_run_folder_is_spelled(fake, tmp_path, monkeypatch):
    """A comparison run with an absolute ``--out-dir`` is reused from a relative one naming the same folder
    (the teacher's checkpoint path inside every student config included); a changed key still reruns."""
    spec = load_spec(spec_dict(seeds=[0, 1]))
    run_compare(spec, tmp_path / "runs")
    saved = (tmp_path / "runs" / "cmp-kd-s0" / "config.yaml").read_text()
    assert str(tmp_path / "runs") in saved.split("teacher:")[1]  # the check below covers a path inside the config
    fake.names.clear()
    monkeypatch.chdir(tmp_path)
    again = run_compare(spec, Path("runs"))
    assert fake.names == [] and {o.status for o in again.outcomes.values()} == {"reused"}
    cfg = next(c.cfg for c in plan_compare(spec, Path("runs")).cells if c.cfg.name == "cmp-kd-s0")
    assert cfg.out_dir == "runs" and grid.same_config(saved.replace(str(tmp_path / "runs"), "runs"), cfg)
    assert not grid.same_config(saved.replace("seed: 0", "seed: 5"), cfg)
    monkeypatch.chdir(tmp_path / "runs")  # "runs" now names another folder: the saved absolute path no longer matches
    assert not grid.same_config(saved, cfg)


def test_a_resumed_run_is_named_in_the_runs_table(fake, tmp_path):
    """A run that summary.json says was resumed (its wall time then adds the earlier segments) says so in its status."""
    import json

    spec = load_spec(spec_dict(seeds=[0, 1]))
    run_compare(spec, tmp_path)
    summary = tmp_path / "cmp-kd-s1" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "resumed_from_epoch": 1}))
    report = run_compare(spec, tmp_path).report.read_text()
    assert "| cmp-kd-s1 | KD | 1 | reused (resumed at epoch 1) |" in report
    assert "| cmp-kd-s0 | KD | 0 | reused |" in report


def test_a_failing_run_is_one_failed_row(monkeypatch, tmp_path, capsys):
    fake = FakeTrain(fail="cmp-kd-s1")
    monkeypatch.setattr(grid, "train", fake)
    code = main(["compare", "--out-dir", str(tmp_path), "--name", "cmp", "--teacher", "demo_teacher",
                 "--method", "CE only=demo_ce", "--method", "KD=demo_kd", "--method", "KD T8=demo_kd objective.student.kd.temperature=8",
                 "data.n_per_class=30", "trainer.progress=false"])
    assert code == 1
    assert len(fake.names) == 10, "the runs after the failure still ran"
    report = (tmp_path / "cmp" / "report.md").read_text()
    kd_row = next(line for line in report.splitlines() if line.startswith("| KD |"))
    assert "2/3 ok; failed (s1): RuntimeError: loss exploded at step 7" in kd_row
    assert "| CE only | distill | 3/3 ok |" in report and "| KD T8 | distill | 3/3 ok |" in report
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    kd = results["rows"][1]
    assert kd["n_ok"] == 2 and kd["test_acc_best"]["n"] == 2 and kd["vs_first"]["test_acc_best"]["seeds"] == [0, 2]
    err = capsys.readouterr().err
    assert "1 of 9 runs failed" in err.replace("\n", " ")
    assert "Traceback" in err  # a RuntimeError is a bug: its traceback is shown


def test_a_diverged_row_is_one_line_without_traceback(monkeypatch, tmp_path, capsys):
    from kdlab.engine import NonFiniteLossError

    monkeypatch.setattr(grid, "train", FakeTrain(fail="cmp-kd-s1", error=NonFiniteLossError))
    code = main(["compare", "--out-dir", str(tmp_path), "--name", "cmp", "--teacher", "demo_teacher",
                 "--method", "KD=demo_kd", "--seeds", "0,1", "data.n_per_class=30", "trainer.progress=false"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "cmp-kd-s1: failed" in err and "NonFiniteLossError: loss exploded at step 7" in err


def test_report_paired_tests_match_scipy(fake, tmp_path):
    from scipy import stats

    res = run_compare(load_spec(spec_dict()), tmp_path)
    out = tmp_path / "cmp"
    results = json.loads((out / "results.json").read_text())
    report = res.report.read_text()
    for i, row in ((1, "kd"), (2, "t8")):
        want = stats.ttest_rel(ACC[row], ACC["ce"])
        got = results["rows"][i]["vs_first"]["test_acc_best"]
        assert got["p"] == pytest.approx(want.pvalue, rel=1e-9) and got["t"] == pytest.approx(want.statistic)
        diff = sum(a - b for a, b in zip(ACC[row], ACC["ce"])) / 3
        assert f"{diff:+.2f} (p = {want.pvalue:.3g})" in report
    assert results["rows"][0]["test_acc_best"]["mean"] == pytest.approx(sum(ACC["ce"]) / 3)
    for f in ("plots/accuracy.png", "plots/curves.png", "plots/noise.png", "configs/ce.yaml", "configs/teacher.yaml"):
        assert (out / f).is_file(), f
    assert (out / "configs" / "t8.yaml").read_text() == (tmp_path / "cmp-t8-s0" / "config.yaml").read_text()
    assert "temperature: 8.0" in (out / "configs" / "t8.yaml").read_text()


def test_demo_spec_reproduces_the_demo_configs(tmp_path):
    """The packaged demo spec resolves to exactly the configs the recipe-based demo trained (same numbers,
    and earlier demo runs are reused)."""
    plan = plan_compare(load_spec("demo"), tmp_path)
    common = [f"out_dir={tmp_path}"]
    assert to_yaml(plan.teacher.cfg) == to_yaml(grid.resolve([grid.recipe("demo_teacher")], common))
    for cell in plan.cells:
        s, slug = cell.seed, cell.row.slug
        old = grid.resolve([grid.recipe(f"demo_{slug}")], common + [
            f"teacher.checkpoint={tmp_path / 'demo-teacher'}", f"seed={s}", f"data.subset_seed={s}",
            f"name=demo-{slug}-s{s}"])
        assert to_yaml(cell.cfg) == to_yaml(old), cell.cfg.name
    quick = plan_compare(load_spec("demo", quick=True), tmp_path)
    assert [c.cfg.name for c in quick.cells] == ["demo-ce-s0", "demo-kd-s0", "demo-logits-s0"]
    assert quick.teacher.cfg.data.n_per_class == 300 and quick.teacher.cfg.trainer.epochs == 1
    assert {c.cfg.trainer.epochs for c in quick.cells} == {5} and {c.cfg.data.max_test for c in quick.cells} == {2000}


def test_jobs_split_the_cpu_threads(tmp_path):
    plan = plan_compare(load_spec(spec_dict()), tmp_path, jobs=2)
    assert plan.threads >= 1 and {c.cfg.trainer.threads for c in plan.cells} == {plan.threads}
    assert plan.teacher.cfg.trainer.threads is None  # the teacher trains alone, on every core
    for cell in plan.cells:  # set in place: the same config as resolving the cell's recorded overrides
        assert to_yaml(cell.cfg) == to_yaml(grid.resolve(cell.sources, cell.overrides)), cell.cfg.name
        assert cell.overrides.count(f"trainer.threads={plan.threads}") == 1
    pinned = plan_compare(load_spec(spec_dict()), tmp_path, ["trainer.threads=1"], jobs=2)
    assert {c.cfg.trainer.threads for c in pinned.cells} == {1}
    odd = plan_compare(load_spec(spec_dict(methods=[{"label": "1e3 [x]: y", "recipe": "demo_ce"}])), tmp_path)
    assert odd.cells[0].cfg.label == "1e3 [x]: y" and odd.cells[0].cfg.name == "cmp-1e3-x-y-s0"


# ------------------------------------------------------------------------------------- real runs
def test_jobs_2_gives_the_summary_of_jobs_1(tmp_path):
    """Two tiny real runs on a pool of two processes give the numbers of the same runs trained here."""
    small = {"model": {"name": "mlp", "kwargs": {"hidden": [32]}},
             "data": {"val_size": 200, "batch_size": 50, "eval_batch_size": 500, "max_test": 300},
             "trainer": {"epochs": 1, "progress": False, "tensorboard": False, "log_every_n_steps": 2},
             "eval": {"latency": False, "noise_sigmas": [0.0, 0.2]}, "optim": {"name": "adam", "lr": 0.002}}
    spec = {"name": "j", "student": small, "budget": {"n_per_class": 20}, "seeds": [0],
            "methods": [{"label": "CE", "set": ["method=teacher"]}, {"label": "CE lr", "set": ["method=teacher", "optim.lr=0.005"]}]}
    keys = ("test_acc_best", "test_acc_last", "val_acc_best", "noise_acc", "best_epoch")
    got = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        res = run_compare(load_spec(spec), out, ["trainer.threads=1"], jobs=jobs)
        assert res.failed == 0
        got[jobs] = {n: {k: grid.read_summary(o.run_dir)[k] for k in keys} for n, o in res.outcomes.items()}
    # a finished run's worker log moves into its run directory: the report directory keeps failed runs' logs only
    log = tmp_path / "jobs2" / "j-ce-s0" / "compare.log"
    assert log.is_file() and "j-ce-s0" in log.read_text() and not (tmp_path / "jobs2" / "j" / "logs" / "j-ce-s0.log").exists()
    results = json.loads((tmp_path / "jobs2" / "j" / "results.json").read_text())
    assert {r["log_path"] for e in results["rows"] for r in e["runs"] if r["name"] == "j-ce-s0"} == {"../j-ce-s0/compare.log"}
    assert got[1] == got[2]


# ------------------------------------------------------------------------------- no duplicate work
def test_heldout_metrics_reuses_the_sigma_0_pass_with_the_same_numbers():
    import torch
    from torch import nn

    from kdlab.games import evaluation
    from kdlab.metrics import evaluate_accuracy

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    loader = [(torch.randn(20, 1, 4, 4), torch.randint(0, 3, (20,))) for _ in range(3)]
    with_zero = evaluation.heldout_metrics(model, loader, "cpu", [0.0, 0.5], seed=0)
    without = evaluation.heldout_metrics(model, loader, "cpu", [0.5], seed=0)
    assert with_zero["test_acc"] == without["test_acc"] == evaluate_accuracy(model, loader)
    assert with_zero["noise_acc"]["0.5"] == without["noise_acc"]["0.5"]
    import copy

    twin, other = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        other[1].bias.add_(1)
    assert evaluation.same_weights(model, twin) and not evaluation.same_weights(model, other)


def test_more_jobs_than_cores_is_refused_before_any_training(fake, tmp_path):
    import os

    too_many = (os.cpu_count() or 1) + 1
    with pytest.raises(ConfigError, match=f"--jobs = {too_many}: accepted: an integer from 1 to {too_many - 1}"):
        run_compare(load_spec(spec_dict()), tmp_path, jobs=too_many)
    assert fake.names == [] and not any(tmp_path.iterdir())


def test_a_generator_teacher_is_refused_before_any_training(fake, tmp_path):
    from kdlab.engine.generators import save_generator
    from kdlab.models import build_generator

    with pytest.raises(ConfigError, match="method 'gan' trains a generator teacher.*train-teacher"):
        run_compare(load_spec(spec_dict(teacher="gan_teacher")), tmp_path / "a")
    gen = save_generator(build_generator("dcgan", 1, 28, latent_dim=8, d=4), tmp_path / "gen.safetensors")
    with pytest.raises(ConfigError, match="holds no classifier"):
        run_compare(load_spec(spec_dict(teacher=str(gen))), tmp_path / "b")
    assert fake.names == []


def test_a_worker_logs_each_runs_records_to_its_own_log(monkeypatch, tmp_path):
    """A pool worker runs several cells; a logging handler made during the first (as Lightning's is, on import,
    with the sys.stderr of that moment) must write the later cells' records to their logs, not to the first
    cell's closed file ("--- Logging error --- I/O operation on closed file")."""
    import logging
    import sys

    from kdlab.compare import execute

    logger = logging.getLogger("kdlab-test-worker")
    calls = []

    def fake_run_cell(sources, overrides, console, **kw):
        if not logger.handlers:  # made during the first cell only, on the redirected stderr
            logger.addHandler(logging.StreamHandler(sys.stderr))
            logger.setLevel(logging.INFO)
            logger.propagate = False
        calls.append(overrides[0])
        logger.info("seed set to %s", overrides[0])
        return tmp_path

    monkeypatch.setattr(execute.grid, "run_cell", fake_run_cell)
    try:
        for k in (1, 2, 3):
            assert execute.work([], [str(k)], str(tmp_path / f"cell{k}.log"))["ok"]
        for k in (1, 2, 3):
            text = (tmp_path / f"cell{k}.log").read_text()
            assert f"seed set to {k}" in text and "Logging error" not in text, text
        assert logger.handlers[0].stream is sys.__stderr__  # after the cells: the process's own stderr again
    finally:
        logger.handlers.clear()


def test_an_interrupted_invocation_counts_in_the_wall_time_of_the_one_that_finishes(fake, tmp_path, monkeypatch):
    """The first invocation sleeps 0.15 s per run and is stopped (Ctrl-C) at its 4th student run; the next one
    reuses the 3 finished runs and reports the first's recorded time beside its own; a third starts from zero."""
    import time

    def slow(cfg: Any, **kw: Any) -> Path:
        time.sleep(0.15)
        if cfg.name == "cmp-kd-s1":
            raise KeyboardInterrupt
        return FakeTrain()(cfg, **kw)

    spec = load_spec(spec_dict(seeds=[0, 1]))
    monkeypatch.setattr(grid, "train", slow)
    with pytest.raises(KeyboardInterrupt):
        run_compare(spec, tmp_path)
    files = list((tmp_path / ".compare-time" / "cmp").glob("*.json"))
    assert len(files) == 1
    recorded = json.loads(files[0].read_text())["elapsed_s"]
    assert recorded >= 5 * 0.15  # the teacher and 4 student runs slept before the interrupt
    monkeypatch.setattr(grid, "train", FakeTrain())
    t0 = time.perf_counter()
    result = run_compare(spec, tmp_path)
    took = time.perf_counter() - t0
    res = json.loads((result.report.parent / "results.json").read_text())
    assert res["reused"] == 3 and res["earlier_invocations"] == 1
    assert res["earlier_wall_time_s"] == pytest.approx(recorded) and 0 < res["wall_time_s"] <= took
    assert f"plus {recorded:.1f} s in 1 earlier interrupted invocation ({res['wall_time_s'] + recorded:.1f} s in all)" \
        in result.report.read_text()
    assert not (tmp_path / ".compare-time").exists()
    res = json.loads((run_compare(spec, tmp_path).report.parent / "results.json").read_text())
    assert res["earlier_invocations"] == 0 and res["earlier_wall_time_s"] == 0.0
