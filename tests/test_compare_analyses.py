"""A spec's ``callbacks`` (:mod:`kdlab.compare.analyses`): registered engine callbacks attached to its runs, whose
metrics reach the report's results.json and its comparisons like any run metric (on a stand-in trainer that
calls the cell's callbacks as the engine would); a run without its analysis file is trained again; bad names,
settings and metrics are refused before anything trains, naming what is accepted."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict

import pytest
import yaml
from scipy import stats

from kdlab.compare import load_spec, run_compare
from kdlab.compare.analyses import CALLBACKS, AnalysisCallback, Registered
from kdlab.config import ConfigError
from kdlab.engine.callbacks import PlayersView
from kdlab.experiments import grid
from kdlab.experiments.specs import run_spec_experiment

from fake_runs import write_finished_run

NOISE = [0.3, -0.2, 0.5, 0.1, -0.4]  # per seed, row "boosted" only


def score(seed: int, bonus: float) -> float:
    """What the stand-in analysis measures in a run of ``seed`` (``bonus``: its setting)."""
    return 10.0 + seed + bonus + (NOISE[seed] if bonus else 0.0)


class Score(AnalysisCallback):
    """A stand-in analysis: a trace of two records, metric ``score`` (the last record's value)."""

    def __init__(self, bonus: float = 0.0) -> None:
        super().__init__()
        self.bonus = float(bonus)

    def on_fit_start(self, view: PlayersView) -> None:
        self.trace.append({"step": 0, "score": 0.0})

    def on_fit_end(self, view: PlayersView) -> None:
        self.trace.append({"step": 1, "score": score(int(view.cfg.seed), self.bonus)})
        super().on_fit_end(view)

    def metrics(self) -> Dict[str, float]:
        return {"score": self.trace[-1]["score"]}


class FakeTrain:
    """Stands in for kdlab.runner.train: a finished run, its callbacks called at its start and end."""

    def __init__(self) -> None:
        self.names = []

    def __call__(self, cfg: Any, **kw: Any) -> Path:
        self.names.append(cfg.name)
        run = write_finished_run(cfg, 80.0 + cfg.seed, [{"epoch": 0, "step": 4, "train/loss": 1.0}], {"0.0": 80.0})
        view = PlayersView(SimpleNamespace(players={}), cfg, run)
        for hook in ("on_fit_start", "on_fit_end"):
            for cb in kw.get("callbacks", ()):
                getattr(cb, hook)(view)
        return run


@pytest.fixture
def fake(monkeypatch):
    f = FakeTrain()
    monkeypatch.setattr(grid, "train", f)
    monkeypatch.setitem(CALLBACKS._entries, "test-score", Registered(Score, ("score",), ("step", ("score",))))
    return f


def spec_dict(**over: Any) -> Dict[str, Any]:
    spec = {"name": "an", "teacher": "demo_teacher", "budget": {"n_per_class": 30}, "seeds": [0, 1, 2, 3, 4],
            "student": {"model": {"name": "mlp", "kwargs": {"hidden": [32]}}},
            "common": ["trainer.epochs=2", "trainer.progress=false"],
            "callbacks": ["test-score"],
            "methods": [{"label": "plain", "name": "plain", "recipe": "demo_ce"},
                        {"label": "boosted", "name": "boosted", "recipe": "demo_kd",
                         "callbacks": [{"name": "test-score", "bonus": 2.0}]}],
            "primary": [{"a": "boosted", "b": "plain", "metric": "score", "direction": "greater",
                         "label": "the bonus raises the score", "paper": "none"}]}
    spec.update(over)
    return spec


def test_an_analysis_metric_reaches_the_results_and_its_comparison(fake, tmp_path):
    res = run_compare(load_spec(spec_dict()), tmp_path)
    results = json.loads((res.report.parent / "results.json").read_text())
    rows = {e["slug"]: e for e in results["rows"]}
    for slug, bonus in (("plain", 0.0), ("boosted", 2.0)):
        got = {r["seed"]: r["analysis"]["score"] for r in rows[slug]["runs"]}
        assert got == {s: score(s, bonus) for s in range(5)}, slug
        assert rows[slug]["analysis"]["score"]["mean"] == pytest.approx(sum(got.values()) / 5)
        run = tmp_path / f"an-{slug}-s0"
        body = json.loads((run / f"analysis/test-score{'-bonus2.0' if bonus else ''}.json").read_text())
        assert body["settings"] == ({"bonus": 2.0} if bonus else {}) and [r["step"] for r in body["trace"]] == [0, 1]
    (comp,) = results["comparisons"]
    a, b = [score(s, 2.0) for s in range(5)], [score(s, 0.0) for s in range(5)]
    assert comp["metric"] == "score" and comp["values_a"] == a and comp["values_b"] == b
    assert comp["diff"] == pytest.approx(2.0 + sum(NOISE) / 5) and comp["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert comp["verdict"] == "holds"
    report = res.report.read_text()
    assert "## Analyses" in report and "| Row | Seeds | score |" in report
    assert "| the bonus raises the score |" in report and "plots/test-score-score.png" in report
    assert (res.report.parent / "plots" / "test-score-score.png").is_file()
    # a second run reuses every run; a run without its analysis file is trained again (alone)
    trained = len(fake.names)
    run_compare(load_spec(spec_dict()), tmp_path)
    assert len(fake.names) == trained
    (tmp_path / "an-boosted-s3" / "analysis" / "test-score-bonus2.0.json").unlink()
    run_compare(load_spec(spec_dict()), tmp_path)
    assert fake.names[trained:] == ["an-boosted-s3"]


def test_an_init_run_gets_its_callbacks_and_inits_may_refer_to_inits(fake, tmp_path):
    spec = spec_dict(init={"base": {"seed": 0, "set": ["method=teacher"]},
                           "warm": {"set": ["method=teacher", "model.checkpoint=@init:base"],
                                    "callbacks": [{"name": "test-score", "bonus": 1.0}]}},
                     methods=[{"label": "plain", "name": "plain", "recipe": "demo_ce", "set": ["model.checkpoint=@init:warm"]},
                              {"label": "boosted", "name": "boosted", "recipe": "demo_kd"}])
    run_compare(load_spec(spec), tmp_path)
    assert fake.names.index("an-init-base-s0") < fake.names.index("an-init-warm-s0")
    assert (tmp_path / "an-init-warm-s0" / "analysis" / "test-score-bonus1.0.json").is_file()
    cfg = yaml.safe_load((tmp_path / "an-init-warm-s0" / "config.yaml").read_text())
    assert cfg["model"]["checkpoint"] == str(tmp_path / "an-init-base-s0")
    cyc = spec_dict(init={"x": {"set": ["method=teacher", "model.checkpoint=@init:y"]},
                          "y": {"set": ["method=teacher", "model.checkpoint=@init:x"]}},
                    methods=[{"label": "plain", "recipe": "demo_ce", "set": ["model.checkpoint=@init:x"]}], primary=None)
    with pytest.raises(ConfigError, match=r"init 'x' refers to itself through its sets: @init:x -> @init:y -> @init:x"):
        run_compare(load_spec(cyc), tmp_path / "cyc")


ACCEPTED = "accepted: kdgan-grad-variance, kdgan-teacher-trace, save-player, test-score"


@pytest.mark.parametrize("where, over, match", [
    ("the spec", {"callbacks": ["kdgan-grad-varience"]}, r"callbacks\[0\]: unknown callback 'kdgan-grad-varience'; " + ACCEPTED),
    ("a row", {"methods": [{"label": "plain", "recipe": "demo_ce", "callbacks": ["nope"]},
                           {"label": "b", "recipe": "demo_kd"}]},
     r"methods\[0\].callbacks\[0\]: unknown callback 'nope'; " + ACCEPTED),
    ("an init", {"init": {"w": {"set": ["method=teacher"], "callbacks": [{"name": "nope"}]}}},
     r"init.w.callbacks\[0\]: unknown callback 'nope'; " + ACCEPTED),
    ("a scale", {"scales": {"small": {"callbacks": ["nope"]}}}, r"callbacks\[0\]: unknown callback 'nope'"),
    ("a setting", {"callbacks": [{"name": "kdgan-teacher-trace", "evry": 5}]},
     r"callback 'kdgan-teacher-trace' has no setting 'evry'; accepted: every, offset, probe"),
    ("a missing setting", {"callbacks": ["kdgan-teacher-trace"]},
     r"callback 'kdgan-teacher-trace': .*missing .*'every'.*settings: every, offset, probe"),
    ("a bad value", {"callbacks": [{"name": "kdgan-grad-variance", "draws": 1}]}, r"draws = 1: a variance needs at least 2"),
    ("a list value", {"callbacks": [{"name": "test-score", "bonus": [1]}]}, r"callbacks\[0\].bonus = \[1\]: accepted: a number"),
    ("twice", {"callbacks": ["test-score", "test-score"]}, r"callback 'test-score' is listed twice"),
    ("not a list", {"callbacks": "test-score"}, r"callbacks = 'test-score': accepted: a list"),
    ("a metric", {"callbacks": []}, r"metric 'score' is not produced by row 'plain'.*accepted: test_acc_best"),
    ("a clash", {"callbacks": ["test-score"], "methods": [
        {"label": "plain", "recipe": "demo_ce", "callbacks": ["clash"]}, {"label": "boosted", "recipe": "demo_kd"}]},
     r"callbacks 'test-score' and 'clash' both write metric 'score'"),
])
def test_bad_callbacks_are_refused_before_anything_trains(where, over, match, fake, tmp_path, monkeypatch):
    if where == "a clash":
        monkeypatch.setitem(CALLBACKS._entries, "clash", Registered(Score, ("score",)))
    spec = {**spec_dict(**over), "scales": {"small": {"seeds": [0, 1]}, **over.get("scales", {})}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=match):
        run_spec_experiment(path, tmp_path / "runs", "small")
    assert fake.names == [] and not (tmp_path / "runs").exists()
