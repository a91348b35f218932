"""The report of ``kdlab compare``: ``<out>/<name>/report.md``, ``results.json``, ``plots/`` and
``configs/``.

Per row (mean ± sample std over its finished seeds): test accuracy of the best-on-validation
checkpoint and of the last epoch, each with a two-sided paired t-test against the first row over the
seeds both finished (:func:`kdlab.report.paired_test`); accuracy under each Gaussian-noise sigma;
params, MACs per image, CPU latency; wall time per run, training steps per second
(``steps / train_time_s``: optimizer steps over the training loop's time, per-epoch validation
included) and training images per second (the loop's logged ``throughput``). A failed run is shown
in its row (``failed: <message>``) and left out of the statistics. Figures: accuracy per row with
error bars, validation accuracy vs epoch of every run (one colour per row, a line style per seed),
accuracy vs noise. ``configs/<row>.yaml`` is the exact resolved config of each row's first seed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kdlab.compare.execute import Outcome
from kdlab.compare.plan import Cell, Plan
from kdlab.config import to_yaml
from kdlab.experiments import grid
from kdlab.report import (diff_text, epoch_series, format_count, kept_vs_teacher, load_run, markdown_table, mean_std,
                          noise_series, ordering_text, paired_test, plot_bars, plot_noise, plot_val_curves)
from kdlab.report.tables import MISSING

__all__ = ["write_compare_report", "collect"]


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
    model = s.get("model") or {}
    steps, train_s = _steps(run.metrics), s.get("train_time_s")
    thr = [r["throughput"] for r in run.metrics if isinstance(r.get("throughput"), (int, float))]
    rec.update({
        "method": s.get("method"), "best_epoch": s.get("best_epoch"), "epochs": s.get("epochs"),
        "val_acc_best": s.get("val_acc_best"), "test_acc_best": s.get("test_acc_best"),
        "test_acc_last": s.get("test_acc_last"), "noise_acc": dict(zip(*noise_series(s))),
        "model": model.get("name"), "params": model.get("params"), "macs": model.get("macs"),
        "latency_ms": model.get("latency_ms"), "wall_time_s": s.get("wall_time_s"), "train_time_s": train_s,
        "steps": steps, "steps_per_s": steps / train_s if steps and train_s else None,
        "images_per_s": sum(thr) / len(thr) if thr else None, "teacher": s.get("teacher"),
        "kept_vs_teacher": kept_vs_teacher(s),
        "val_curve": epoch_series(run.metrics, "val/acc"),
    })
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
        entry = {"label": row.label, "slug": row.slug, "method": plan.row_cells(row)[0].cfg.method, "runs": runs,
                 "n_ok": len(ok), "failed": [r for r in runs if r["status"] == "failed"]}
        for key in ("test_acc_best", "test_acc_last", "kept_vs_teacher", "params", "macs", "latency_ms", "wall_time_s",
                    "train_time_s", "steps_per_s", "images_per_s"):
            entry[key] = _stat([r.get(key) for r in ok])
        sigmas = sorted({x for r in ok for x in r["noise_acc"]})
        entry["noise_acc"] = {x: _stat([r["noise_acc"].get(x) for r in ok]) for x in sigmas}
        rows.append(entry)
    ref = rows[0]
    for entry in rows:
        entry["vs_first"] = {}
        for key in ("test_acc_best", "test_acc_last"):
            mine = {r["seed"]: r[key] for r in entry["runs"] if r["status"] != "failed"}
            theirs = {r["seed"]: r[key] for r in ref["runs"] if r["status"] != "failed"}
            seeds = [s for s in mine if s in theirs]
            entry["vs_first"][key] = (None if entry is ref else
                                      {**paired_test([mine[s] for s in seeds], [theirs[s] for s in seeds]),
                                       "seeds": seeds})
    return rows


def _ms(stat: Dict[str, Any], digits: int = 2) -> str:
    if not stat["n"]:
        return MISSING
    return f"{stat['mean']:.{digits}f}" + (f" ± {stat['std']:.{digits}f}" if stat["std"] is not None else "")


def _status(entry: Dict[str, Any]) -> str:
    n = len(entry["runs"])
    if not entry["failed"]:
        return f"{n}/{n} ok"
    first = entry["failed"][0]
    seeds = ", ".join(f"s{r['seed']}" for r in entry["failed"])
    return f"{entry['n_ok']}/{n} ok; failed ({seeds}): {first['error']}"


def _rel(path: Any, base: Path) -> str:
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
    if not t:
        return "no teacher"
    return (f"{t.get('name', MISSING)} ({format_count(t.get('params'))} params), test acc "
            f"{t['test_acc']:.2f}%, `{t.get('checkpoint', plan.teacher_path)}`" if isinstance(t.get("test_acc"), float)
            else f"{t.get('name', MISSING)}, `{t.get('checkpoint', plan.teacher_path)}`")


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
    """``configs/<row>.yaml`` (and ``configs/teacher.yaml``): the exact resolved config of each row's first
    seed, written from the plan (so a row that failed early has one too). Returns row label -> path."""
    from kdlab.engine import atomic_write_text

    out: Dict[str, str] = {}
    todo = [("teacher", plan.teacher)] if plan.teacher else []
    todo += [(row.slug, plan.row_cells(row)[0]) for row in plan.spec.rows]
    for slug, cell in todo:
        path = plan.out / "configs" / f"{slug}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, to_yaml(cell.cfg))
        out[cell.row.label] = str(path)
    return out


def write_compare_report(plan: Plan, outcomes: Dict[str, Outcome], info: Dict[str, Any]) -> Path:
    """Write the report of a finished comparison; returns ``<out>/<name>/report.md``.

    Args:
        plan: the plan that ran.
        outcomes: run name -> :class:`Outcome` (:func:`kdlab.compare.execute.run_cells`).
        info: extra facts for the header and ``results.json`` (``jobs``, ``threads``, ``wall_time_s``...).
    """
    out, spec = plan.out, plan.spec
    rows = collect(plan, outcomes)
    configs = write_configs(plan)
    ref = rows[0]["label"]
    labels = [e["label"] for e in rows]

    plot_bars(labels, [e["test_acc_best"]["mean"] for e in rows], [e["test_acc_best"]["std"] for e in rows],
              out / "plots" / "accuracy.png", title="test accuracy, best-on-validation checkpoint (mean ± std over seeds)",
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

    teacher = _teacher_summary(plan)
    t_label = str(teacher.get("label") or "teacher") if teacher else ""
    t_label += "" if "teacher" in t_label.lower() else " (teacher)"
    teacher_rows = [[t_label, teacher.get("method", MISSING), "1 run",
                     _fmt(teacher.get("test_acc_best")), _fmt(teacher.get("test_acc_last")), MISSING, MISSING,
                     MISSING]] if teacher else []
    tm = (teacher or {}).get("model") or {}
    n_runs = sum(len(e["runs"]) for e in rows)
    n_failed = sum(len(e["failed"]) for e in rows)
    lines = [
        f"Teacher: {_teacher_text(plan, rows)}. Seeds {spec.seeds} (seed s also draws data subset s, the same for "
        f"every row: paired comparisons). Student data: {_data_text(plan)}.",
        f"{n_runs} runs in {len(rows)} rows ({n_failed} failed); jobs {info.get('jobs', 1)}, CPU threads per run "
        f"{info.get('threads') or 'default'}; wall time of this comparison {info.get('wall_time_s', 0):.1f} s "
        f"({sum(o.status == 'reused' for o in outcomes.values())} runs reused).",
        "",
        "## Accuracy",
        "",
        "Test accuracy % (mean ± sample std over the row's finished seeds) of the checkpoint with the best "
        f"validation accuracy and of the last epoch; *vs {ref}*: mean paired difference in points and the "
        "two-sided paired t-test p over the seeds both rows finished.",
        "",
        markdown_table(["Row", "Method", "Runs", "Test acc, best-val ckpt (%)", "Test acc, last epoch (%)",
                        f"vs {ref} (best)", f"vs {ref} (last)", "Kept vs teacher (%)"],
                       teacher_rows + [[e["label"], e["method"], _status(e), _ms(e["test_acc_best"]),
                                        _ms(e["test_acc_last"]),
                                        MISSING if e["vs_first"]["test_acc_best"] is None
                                        else diff_text(e["vs_first"]["test_acc_best"]),
                                        MISSING if e["vs_first"]["test_acc_last"] is None
                                        else diff_text(e["vs_first"]["test_acc_last"]), _ms(e["kept_vs_teacher"])]
                                       for e in rows], align=["l", "l", "l", "r", "r", "r", "r", "r"]),
        "![accuracy per row](plots/accuracy.png)",
        "",
        "Orderings against the first row (best-on-validation checkpoint):",
        "",
    ]
    lines += [f"- {ordering_text(e['label'], ref, e['vs_first']['test_acc_best'])}" for e in rows[1:]] + [""]
    sigmas = sorted({x for e in rows for x in e["noise_acc"]})
    lines += ["## Robustness", "",
              "Test accuracy % under Gaussian noise of std σ added to the normalised inputs (best-on-val checkpoint).", ""]
    t_noise = dict(zip(*noise_series(teacher))) if teacher else {}
    lines += [markdown_table(["Row"] + [f"σ={x:g}" for x in sigmas],
                             ([[teacher_rows[0][0]] + [_fmt(t_noise.get(x)) for x in sigmas]] if t_noise else [])
                             + [[e["label"]] + [_ms(e["noise_acc"][x]) if x in e["noise_acc"] else MISSING
                                                for x in sigmas] for e in rows]) if sigmas else
              "No noise accuracies recorded.", "",
              "![accuracy under noise](plots/noise.png)", ""]
    lines += ["## Cost", "",
              "Params and MACs per image of the student; CPU latency in ms per image at batch 1 (measured while "
              "other runs may share the machine under --jobs); wall time per run (data, training, evaluation); "
              "steps/s = optimizer steps / training-loop time (validation included); images/s = the loop's logged "
              "training throughput.", "",
              markdown_table(["Row", "Model", "Params", "MACs / image", "Latency (ms)", "Wall time / run (s)",
                              "Steps / s", "Images / s"],
                             ([[teacher_rows[0][0], tm.get("name", MISSING), format_count(tm.get("params")),
                                format_count(tm.get("macs")), _fmt(tm.get("latency_ms"), 3),
                                _fmt(teacher.get("wall_time_s"), 1), MISSING, MISSING]] if teacher else []) +
                             [[e["label"], next((r["model"] for r in e["runs"] if r.get("model")), MISSING),
                               format_count(e["params"]["mean"]), format_count(e["macs"]["mean"]),
                               _ms(e["latency_ms"], 3), _ms(e["wall_time_s"], 1), _ms(e["steps_per_s"], 1),
                               _ms(e["images_per_s"], 0)] for e in rows])]
    lines += ["## Validation curves", "", "![validation accuracy vs epoch](plots/curves.png)", "", "## Runs", ""]
    lines += [markdown_table(["Run", "Row", "Seed", "Status", "Best epoch / epochs", "Test acc best-val (%)",
                              "Test acc last (%)", "Wall time (s)", "Directory / log"],
                             [[r["name"], e["label"], r["seed"],
                               r["status"] + (f": {r['error']}" if r["error"] else ""),
                               f"{r.get('best_epoch', MISSING)} / {r.get('epochs', MISSING)}",
                               _fmt(r.get("test_acc_best")), _fmt(r.get("test_acc_last")),
                               _fmt(r.get("wall_time_s"), 1),
                               f"`{_rel(r['dir'], out)}`" + (f" (log `{_rel(r['log'], out)}`)" if r["log"] else "")]
                              for e in rows for r in e["runs"]], align=["l", "l", "r", "l", "r", "r", "r", "r", "l"])]
    lines += ["## Configs", "", "The exact resolved config of each row (its first seed; the other seeds differ only in "
              "`seed`, `data.subset_seed` and `name`):", ""]
    lines += [f"- {label}: [{_rel(p, out)}]({_rel(p, out)})" for label, p in configs.items()] + [""]
    for e in rows:
        for r in e["runs"]:
            r.pop("val_curve", None)  # in the runs' metrics.jsonl already
    results = {"name": spec.name, "title": spec.title, "seeds": spec.seeds, "budget": spec.budget,
               "teacher": plan.teacher_path, "configs": configs, **info, "rows": rows}
    return grid.write_report(out, spec.title, lines, results)


def _fmt(v: Any, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else MISSING
