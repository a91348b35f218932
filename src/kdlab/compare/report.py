"""The report of ``kdlab compare`` (and of a spec experiment of ``kdlab reproduce``): ``report.md``,
``results.json``, ``environment.json``, ``plots/`` and ``configs/`` in the report directory.

Everything the report states is first gathered in ``results.json`` (per row, per seed: every number
read back from the runs' summary.json and metrics.jsonl; per comparison: the statistics of
:func:`kdlab.compare.claims.evaluate`); ``report.md`` is then rendered from that file alone by
:func:`kdlab.compare.render.render_report`, so another page can render the same tables from a
committed results.json.

Per row (mean ± sample std over its finished seeds): test accuracy of the best-on-validation
checkpoint and of the last epoch, each with a two-sided paired t-test against the first row over the
seeds both finished (:func:`kdlab.report.paired_test`); accuracy under each Gaussian-noise sigma;
params, MACs per image, CPU latency; student updates, training MACs per update (3 x forward MACs
per image x batch size: forward + backward, the teacher's forward and the terms not counted); the
last-quarter decrease of the training loss (:func:`kdlab.report.last_quarter_decrease`); wall time per
run, training steps per second (``steps / train_time_s``: optimizer steps over the training loop's
time, per-epoch validation included) and training images per second (the loop's logged
``throughput``). A failed run is shown in its row (``failed: <message>``) and left out of the
statistics. Figures: accuracy per row with error bars, validation accuracy vs epoch of every run (one
colour per row, a line style per seed), accuracy vs noise, and each registered trace of the rows' callbacks
(:func:`plot_traces`); per run and per row the metrics those callbacks wrote (``analysis``).
``configs/<row>.yaml`` is the exact resolved config of each row's first seed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kdlab.compare.claims import evaluate
from kdlab.compare.execute import Outcome, keep_log
from kdlab.compare.generators import GENERATOR_KEYS, generator_plots, generator_record, student_updates
from kdlab.compare.translations import TRANSLATION_KEYS, translation_record
from kdlab.compare.plan import Cell, Plan
from kdlab.compare.render import render_report
from kdlab.config import to_yaml
from kdlab.experiments import grid
from kdlab.report import (epoch_series, format_count, kept_vs_teacher, last_quarter_decrease, load_run, mean_std,
                          noise_series, paired_test, plot_bars, plot_intervals, plot_noise, plot_val_curves)
from kdlab.report.tables import MISSING

__all__ = ["write_compare_report", "collect", "plot_traces", "BACKWARD_FACTOR"]

#: training MACs of one update per forward MAC per image: forward (1) + backward (~2: the gradients of
#: the activations and of the weights), the usual estimate (e.g. Kaplan et al. 2020)
BACKWARD_FACTOR = 3


def _steps(metrics: List[Dict[str, Any]]) -> Optional[int]:
    steps = [r["step"] for r in metrics if isinstance(r.get("step"), int)]
    return max(steps) if steps else None


def _run_record(cell: Cell, outcome: Outcome) -> Dict[str, Any]:
    """One seed's numbers (the run's summary.json and metrics.jsonl), or its failure."""
    rec: Dict[str, Any] = {"name": cell.cfg.name, "seed": cell.seed, "status": outcome.status,
                           "error": outcome.error, "dir": str(cell.run_dir),
                           "log": str(outcome.log) if outcome.log else None}
    if not outcome.ok:
        return rec
    try:
        run = load_run(cell.run_dir)
    except (OSError, ValueError) as exc:  # finished but unreadable: report it as this row's failure
        rec.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        return rec
    s = run.summary
    if s.get("resumed_from_epoch"):  # its wall time adds the earlier segments' training (kdlab.engine.loop.FitResult)
        rec["status"] += f" (resumed at epoch {s['resumed_from_epoch']})"
    model = s.get("model") or {}
    steps, train_s = _steps(run.metrics), s.get("train_time_s")
    thr = [r["throughput"] for r in run.metrics if isinstance(r.get("throughput"), (int, float))]
    by_step = {r["step"]: r["train/loss"] for r in run.metrics if isinstance(r.get("train/loss"), (int, float))
               and isinstance(r.get("step"), int)}  # a resumed run logs redone steps again: the later wins
    batch = cell.cfg.data.batch_size
    macs = model.get("macs")
    rec.update({
        "method": s.get("method"), "best_epoch": s.get("best_epoch"), "epochs": s.get("epochs"),
        "val_acc_best": s.get("val_acc_best"), "test_acc_best": s.get("test_acc_best"),
        "test_acc_last": s.get("test_acc_last"), "noise_acc": dict(zip(*noise_series(s))),
        "model": model.get("name"), "params": model.get("params"), "macs": macs, "batch_size": batch,
        "macs_per_update": BACKWARD_FACTOR * macs * batch if isinstance(macs, (int, float)) and batch else None,
        "loss_last_quarter": last_quarter_decrease([by_step[k] for k in sorted(by_step)]),
        "latency_ms": model.get("latency_ms"), "wall_time_s": s.get("wall_time_s"), "train_time_s": train_s,
        "steps": steps, "steps_per_s": steps / train_s if steps and train_s else None,
        "images_per_s": sum(thr) / len(thr) if thr else None, "teacher": s.get("teacher"),
        "kept_vs_teacher": kept_vs_teacher(s),
        "val_curve": epoch_series(run.metrics, "val/acc"),
    })
    if "translation" in s:  # an image-to-image run: FID/KID, MAE/SSIM, fidelity (kdlab.compare.translations)
        rec.update(translation_record(s))
    elif s.get("kind") == "generator":  # FID/KID/IS, VoL, fidelity to the teacher (kdlab.compare.generators)
        rec.update(generator_record(s), steps=student_updates(steps, cell.cfg))
    if cell.callbacks:  # the metrics the run's analyses wrote (kdlab.compare.analyses)
        from kdlab.compare.analyses import read_analysis

        rec["analysis"] = read_analysis(cell.run_dir, cell.callbacks)
    return rec


def _stat(values: Sequence[Any]) -> Dict[str, Any]:
    m, s, n = mean_std(values)
    return {"mean": m, "std": s, "n": n}


def collect(plan: Plan, outcomes: Dict[str, Outcome]) -> List[Dict[str, Any]]:
    """Per row: its runs (:func:`_run_record`), mean/std/n of every number, and the paired tests
    (best-val and last-epoch test accuracy) against the first row over the seeds both finished."""
    rows: List[Dict[str, Any]] = []
    for row in plan.spec.rows:
        runs = [_run_record(c, outcomes[c.cfg.name]) for c in plan.row_cells(row)]
        ok = [r for r in runs if r["status"] != "failed"]
        entry = {"label": row.label, "slug": row.slug, "column": row.column, "paper": row.paper, "method": plan.row_cells(row)[0].cfg.method, "runs": runs,
                 "n_ok": len(ok), "failed": [r for r in runs if r["status"] == "failed"]}
        for key in ("test_acc_best", "test_acc_last", "kept_vs_teacher", "params", "macs", "latency_ms", "wall_time_s",
                    "train_time_s", "steps_per_s", "images_per_s", "steps", "macs_per_update", "loss_last_quarter"):
            entry[key] = _stat([r.get(key) for r in ok])
        for key in {"generator": GENERATOR_KEYS, "image-to-image": TRANSLATION_KEYS}.get(plan.kind, ()):
            entry[key] = _stat([r.get(key) for r in ok])
        sigmas = sorted({x for r in ok for x in r["noise_acc"]})
        entry["noise_acc"] = {x: _stat([r["noise_acc"].get(x) for r in ok]) for x in sigmas}
        names = [m for u in row.callbacks for m in u.metrics]
        entry["analysis"] = {m: _stat([(r.get("analysis") or {}).get(m) for r in ok]) for m in names}
        rows.append(entry)
    ref = rows[0]
    for entry in rows:
        entry["vs_first"] = {}
        for key in ("test_acc_best", "test_acc_last"):
            # runs with the number only (a generator run has no accuracy)
            mine = {r["seed"]: r[key] for r in entry["runs"] if r["status"] != "failed" and r.get(key) is not None}
            theirs = {r["seed"]: r[key] for r in ref["runs"] if r["status"] != "failed" and r.get(key) is not None}
            seeds = [s for s in mine if s in theirs]
            entry["vs_first"][key] = (None if entry is ref else
                                      {**paired_test([mine[s] for s in seeds], [theirs[s] for s in seeds]),
                                       "seeds": seeds})
    return rows


def _rel(path: Any, base: Path) -> str:
    if path is None:
        return MISSING
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive (Windows)
        return str(path)


def _teacher_summary(plan: Plan) -> Optional[Dict[str, Any]]:
    """The teacher run's summary.json (a trained or given run directory), else None."""
    if plan.teacher_path is None or not (Path(plan.teacher_path) / "summary.json").is_file():
        return None
    try:
        return grid.read_summary(Path(plan.teacher_path))
    except (OSError, ValueError):
        return None


def _teacher_text(plan: Plan, rows: List[Dict[str, Any]]) -> str:
    t = next((r["teacher"] for e in rows for r in e["runs"] if r.get("teacher")), None)
    if not t:  # e.g. LwF's transfer rows, whose summaries name no teacher although the spec trains one
        return "no teacher" if not plan.teacher_path else f"the spec's teacher, `{_rel(plan.teacher_path, plan.out)}`"
    where = _rel(t.get("checkpoint") or plan.teacher_path, plan.out)  # relative: results.json is committed
    return (f"{t.get('name', MISSING)} ({format_count(t.get('params'))} params), test acc "
            f"{t['test_acc']:.2f}%, `{where}`" if isinstance(t.get("test_acc"), float)
            else f"{t.get('name', MISSING)}, `{where}`")


def _data_text(plan: Plan) -> str:
    """The rows' data set and budget, e.g. ``fashion-mnist, 100 images per class`` (distinct values joined)."""
    texts: List[str] = []
    for cell in plan.cells:
        d = cell.cfg.data
        if d.transfer not in (None, "train"):
            size = f", {d.transfer_n} images" if d.transfer_n else ""
            text = f"{d.name} (transfer set {d.transfer}{size})"
        else:
            text = f"{d.name}, {'all' if d.n_per_class is None else d.n_per_class} images per class"
        if text not in texts:
            texts.append(text)
    return " / ".join(texts)


def write_configs(plan: Plan) -> Dict[str, str]:
    """``configs/<row>.yaml`` (and ``configs/teacher*.yaml``, the init runs'): the exact resolved config of each row's first
    seed, written from the plan (so a row that failed early has one too). Returns row label -> path."""
    from kdlab.engine import atomic_write_text

    out: Dict[str, str] = {}
    todo = [(cell.row.slug, cell) for cell in plan.teacher_cells]
    todo += [(row.slug, plan.row_cells(row)[0]) for row in plan.spec.rows]
    fixed = {f"init {n}" for n, i in plan.spec.inits.items() if i.seed is not None}  # init runs: the first seed's
    todo += [(c.row.slug, c) for c in plan.inits if c.row.label in fixed or c.seed == plan.spec.seeds[0]]
    for slug, cell in todo:
        path = plan.out / "configs" / f"{slug}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, to_yaml(cell.cfg))
        out[cell.row.label] = str(path)
    return out


def _init_runs(plan: Plan) -> List[Dict[str, Any]]:
    """Each init run's test accuracy (best-on-validation checkpoint), per init and column over its seeds
    (e.g. the rows' common start beside the teacher); a run without summary.json counts as missing."""
    groups: Dict[Any, List[Any]] = {}
    for c in plan.inits:
        done = (c.run_dir / "summary.json").is_file()
        groups.setdefault((c.row.label, c.row.column), []).append(
            grid.read_summary(c.run_dir).get("test_acc_best") if done else None)
    return [{"label": label, "column": col, "test_acc_best": _stat(v)} for (label, col), v in groups.items()]


def _teacher_run(plan: Plan) -> Optional[Dict[str, Any]]:
    """The facts of the teacher run the report shows (from its summary.json), else None."""
    t = _teacher_summary(plan)
    if t is None:
        return None
    label = str(t.get("label") or "teacher")
    return {"label": label + ("" if "teacher" in label.lower() else " (teacher)"), "method": t.get("method"),
            "test_acc_best": t.get("test_acc_best"), "test_acc_last": t.get("test_acc_last"),
            "noise_acc": {str(k): v for k, v in zip(*noise_series(t))}, "model": t.get("model") or {},
            "wall_time_s": t.get("wall_time_s")}


def plot_traces(plan: Plan, outcomes: Dict[str, Outcome], folder: Path) -> List[Path]:
    """``plots/<callback>-<key>.png`` for each registered trace of the rows' callbacks
    (:class:`kdlab.compare.analyses.Registered` ``trace``): one line per row, the mean over its finished
    seeds at each x the seeds share; a log scale when every value is positive and they span over 2 decades."""
    from matplotlib.figure import Figure

    from kdlab.compare.analyses import CALLBACKS, read_trace
    from kdlab.report.plots import save_figure

    names = list(dict.fromkeys(u.name for r in plan.spec.rows for u in r.callbacks))
    paths = []
    for name in names:
        trace = CALLBACKS.get(name).trace
        if trace is None:
            continue
        x_key, keys = trace
        lines: Dict[str, Dict[Any, List[Dict[str, Any]]]] = {}
        for row in plan.spec.rows:
            use = next((u for u in row.callbacks if u.name == name), None)
            runs = [read_trace(c.run_dir, use) for c in plan.row_cells(row) if use and outcomes[c.cfg.name].ok]
            runs = [{r[x_key]: r for r in t} for t in runs if t]
            if runs:
                lines[row.label] = {x: [t[x] for t in runs] for x in sorted(set.intersection(*map(set, runs)))}
        for key in keys:
            fig = Figure(figsize=(7, 4))
            ax = fig.subplots()
            values = []
            for label, at in lines.items():
                ys = [sum(r[key] for r in rs) / len(rs) for rs in at.values()]
                values += ys
                ax.plot(list(at), ys, marker="o", ms=3, label=label)
            if values and min(values) > 0 and max(values) > 100 * min(values):
                ax.set_yscale("log")
            ax.set_xlabel(x_key)
            ax.set_ylabel(key)
            ax.set_title(f"{name}: {key} (mean over seeds)")
            ax.grid(alpha=0.3)
            if lines:
                ax.legend(fontsize=6)
            paths.append(save_figure(fig, folder / f"{name}-{key}.png"))
    return paths


def write_compare_report(plan: Plan, outcomes: Dict[str, Outcome], info: Dict[str, Any]) -> Path:
    """Write the report of a finished comparison; returns ``<report dir>/report.md``.

    Writes ``results.json`` (every number of the report; ``experiment`` names the spec: the marker of
    :func:`kdlab.compare.plan.check_results_dir`), ``environment.json`` (:func:`kdlab.engine.env.environment`),
    the plots and configs, then ``report.md`` rendered from results.json (:func:`render_report`).

    Args:
        plan: the plan that ran.
        outcomes: run name -> :class:`Outcome` (:func:`kdlab.compare.execute.run_cells`).
        info: extra facts for the header and ``results.json`` (``jobs``, ``threads``, ``wall_time_s``...).
    """
    from kdlab.engine import atomic_write_text
    from kdlab.engine.env import environment

    out, spec = plan.out, plan.spec
    rows = collect(plan, outcomes)
    configs = write_configs(plan)
    labels = [e["label"] for e in rows]
    if plan.kind == "classifier":  # accuracy, validation curves, noise (a generator row has none of them)
        plot_bars(labels, [e["test_acc_best"]["mean"] for e in rows], [e["test_acc_best"]["std"] for e in rows],
                  out / "plots" / "accuracy.png",
                  title="test accuracy, best-on-validation checkpoint (mean ± std over seeds)",
                  reference=rows[0]["test_acc_best"]["mean"])
        curves, groups = [], []
        for e in rows:
            for r in e["runs"]:
                if r["status"] != "failed":
                    curves.append((f"{e['label']} (seed {r['seed']})", *r["val_curve"]))
                    groups.append(e["label"])
        plot_val_curves(curves, out / "plots" / "curves.png", title=f"{spec.name}: validation accuracy", groups=groups)
        plot_noise([(e["label"], list(e["noise_acc"]), [v["mean"] for v in e["noise_acc"].values()],
                     [v["std"] for v in e["noise_acc"].values()]) for e in rows if e["noise_acc"]],
                   out / "plots" / "noise.png", title=f"{spec.name}: accuracy under Gaussian input noise")
    for e in rows:
        e["noise_acc"] = {str(k): v for k, v in e["noise_acc"].items()}  # JSON keys: what results.json reads back
        for r in e["runs"]:
            r.pop("val_curve", None)  # in the runs' metrics.jsonl already
            if "noise_acc" in r:
                r["noise_acc"] = {str(k): v for k, v in r["noise_acc"].items()}
            # paths relative to the report directory: a committed results.json names no machine's folders
            run_dir = r.pop("dir")
            r["path"] = _rel(run_dir, out)
            log = keep_log(r.pop("log"), run_dir, r["status"])
            r["log_path"] = _rel(log, out) if log else None
    if plan.kind != "classifier":  # FID and fidelity bars and their curve against params
        info = {**info, "generator_plots": generator_plots(rows, out, spec.name)}
    traces = [_rel(p, out) for p in plot_traces(plan, outcomes, out / "plots")]
    comparisons = evaluate(spec.comparisons, rows)
    plot_intervals([f"{c['kind']}: {c['label_a']} vs {c['label_b']} ({c['metric']})" for c in comparisons],
                   [c["diff"] for c in comparisons], [c["ci"] for c in comparisons], out / "plots" / "comparisons.png",
                   title=f"{spec.name}: paired differences a - b over seeds (95% CI)")
    results = {"experiment": spec.name, "name": spec.name, "title": spec.title, "scale": spec.scale, "kind": plan.kind,
               "seeds": spec.seeds, "budget": spec.budget, "columns": spec.columns,
               "teacher": _rel(plan.teacher_path, out) if plan.teacher_path else None,
               "teacher_text": _teacher_text(plan, rows), "teacher_run": _teacher_run(plan),
               "init_runs": _init_runs(plan),
               "data_text": _data_text(plan), "configs": {k: _rel(v, out) for k, v in configs.items()},
               "reused": sum(o.status == "reused" for o in outcomes.values()), **info,
               "declared": spec.declared, "comparisons": comparisons, "rows": rows, "analysis_plots": traces,
               "callbacks": {r.label: [{"name": u.name, "settings": u.settings, "file": u.file} for u in r.callbacks]
                             for r in spec.rows if r.callbacks}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "environment.json", json.dumps(environment(info.get("wall_time_s")), indent=2) + "\n")
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    report = out / "report.md"
    atomic_write_text(report, render_report(json.loads((out / "results.json").read_text(encoding="utf-8"))))
    return report
