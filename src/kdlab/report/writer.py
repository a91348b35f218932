"""Markdown reports: one run (:func:`write_run_report`) and several runs side by side
(:func:`compare_runs`).

Which checkpoint each number uses is stated in every report:
- "test acc, best-val ckpt": the checkpoint with the highest validation accuracy (``best_epoch``);
- "test acc, last epoch": the weights after the final epoch;
- noise columns (sigma = std of Gaussian noise added to normalised inputs, Jacobian paper
  Table 2 protocol): the best-on-val checkpoint;
- "kept vs teacher": 100 * student test acc (best-on-val ckpt) / teacher test acc, per run.
Spread over seeds is mean ± SAMPLE std (ddof=1, as ``statistics.stdev``).
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .plots import plot_noise, plot_run_curves, plot_val_curves
from .runs import RunData, epoch_series, load_run, noise_series
from .tables import MISSING, format_count, format_mean_std, markdown_table, mean_std

PathLike = Union[str, Path]

__all__ = ["write_run_report", "compare_runs", "kept_vs_teacher"]

CHECKPOINT_NOTE = (
    "Checkpoints: *test acc, best-val ckpt* = the checkpoint with the highest validation accuracy; "
    "*test acc, last epoch* = the weights after the final epoch; the noise columns (σ = std of Gaussian "
    "noise added to the normalised inputs, Jacobian paper Table 2 protocol) use the best-on-val checkpoint; "
    "*kept vs teacher* = 100 × student test acc (best-on-val ckpt) / teacher test acc."
)


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader never sees half a report
    return path


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None


def _fmt(v: Any, digits: int = 2) -> str:
    x = _num(v)
    return MISSING if x is None else f"{x:.{digits}f}"


def _sigma_label(s: float) -> str:
    return f"σ={s:g}"


def kept_vs_teacher(summary: Dict[str, Any]) -> Optional[float]:
    """100 * ``test_acc_best`` / ``teacher.test_acc`` in percent, or None when the run has no
    teacher or either accuracy is missing/zero."""
    teacher = summary.get("teacher") or {}
    t = _num(teacher.get("test_acc")) if isinstance(teacher, dict) else None
    s = _num(summary.get("test_acc_best"))
    if t is None or s is None or t == 0:
        return None
    return 100.0 * s / t


def _sub(summary: Dict[str, Any], key: str) -> Dict[str, Any]:
    v = summary.get(key)
    return v if isinstance(v, dict) else {}


def _data_text(summary: Dict[str, Any]) -> str:
    d = _sub(summary, "data")
    npc = d.get("n_per_class")
    return f"{d.get('name', MISSING)}, {'all' if npc in (None, 0) else npc}/class"


def _loss_series(records: List[Dict[str, Any]]) -> Dict[str, Tuple[List[int], List[float]]]:
    keys: List[str] = []
    for rec in records:
        for k in rec:
            if k.startswith("train/") and k not in keys:
                keys.append(k)
    return {k: epoch_series(records, k) for k in keys}


def write_run_report(run_dir: PathLike) -> Path:
    """Write ``<run_dir>/report.md`` with ``plots/curves.png`` (training losses and validation
    accuracy vs epoch) and ``plots/noise.png`` (test accuracy vs noise sigma, best-on-val ckpt).

    Reads summary.json and metrics.jsonl (required) and config.yaml (shown when present).

    Returns:
        The path of report.md.

    Raises:
        kdlab.report.RunFileError (a FileNotFoundError): summary.json or metrics.jsonl missing
            (the message names the path).
        ValueError: a file that cannot be parsed.
    """
    run = load_run(run_dir)
    s = run.summary
    if s.get("kind") == "generator" and "translation" in s:  # image-to-image runs
        from .translation import write_translation_run_report

        return write_translation_run_report(run)
    if s.get("kind") == "generator":  # GAN runs (kdlab train-gan / compress-gan) have their own report
        from .gan import write_gan_run_report

        return write_gan_run_report(run)
    plots = run.path / "plots"
    plot_run_curves(_loss_series(run.metrics), epoch_series(run.metrics, "val/acc"), plots / "curves.png", title=run.name)
    sig, acc = noise_series(s)
    plot_noise([(run.label, sig, acc, None)], plots / "noise.png")

    model = _sub(s, "model")
    teacher = _sub(s, "teacher")
    out: List[str] = [f"# Run report: {run.name}", ""]
    overview = [
        ("label", run.label),
        ("method", s.get("method", MISSING)),
        ("seed", s.get("seed", MISSING)),
        ("data", _data_text(s)),
        ("train / val / test images",
         " / ".join(str(_sub(s, "data").get(k, MISSING)) for k in ("n_train", "n_val", "n_test"))),
        ("epochs run", s.get("epochs", MISSING)),
        ("best epoch (highest val acc)", s.get("best_epoch", MISSING)),
        ("stopped early (NaN)", s.get("stopped_early", MISSING)),
        ("wall time (s)", _fmt(s.get("wall_time_s"), 1)),
        ("git commit", s.get("git_commit") or MISSING),
    ]
    out += [markdown_table(["", "value"], overview, align=["l", "l"])]

    out += ["## Results", "", CHECKPOINT_NOTE, ""]
    best_ep = s.get("best_epoch", MISSING)
    results = [
        ("validation accuracy (%)", _fmt(s.get("val_acc_best")), f"best-on-val (epoch {best_ep})"),
        ("test accuracy (%)", _fmt(s.get("test_acc_best")), f"best-on-val (epoch {best_ep})"),
        ("test accuracy (%)", _fmt(s.get("test_acc_last")), "last epoch"),
    ]
    kept = kept_vs_teacher(s)
    if kept is not None:
        results.append(("accuracy kept vs teacher (%)", _fmt(kept), "best-on-val / teacher"))
    out += [markdown_table(["metric", "value", "checkpoint"], results, align=["l", "r", "l"])]

    out += ["## Model", ""]
    rows = [["model" if not teacher else "student", model.get("name", MISSING), format_count(model.get("params")),
             format_count(model.get("macs")), _fmt(model.get("latency_ms"), 3), MISSING]]
    if teacher:
        rows.append(["teacher", teacher.get("name", MISSING), format_count(teacher.get("params")),
                     format_count(teacher.get("macs")), MISSING, _fmt(teacher.get("test_acc"))])
    out += [markdown_table(["role", "architecture", "params", "MACs / image", "CPU latency (ms / image)", "test acc (%)"],
                           rows, align=["l", "l", "r", "r", "r", "r"])]
    if teacher:
        sha = teacher.get("sha256")
        out += [f"Teacher checkpoint: `{teacher.get('checkpoint', MISSING)}`"
                + (f" (sha256 `{sha}`)" if sha else ""), ""]

    out += ["## Accuracy under Gaussian input noise", "",
            "Best-on-val checkpoint; σ is the std of the noise added to the normalised inputs.", ""]
    if sig:
        out += [markdown_table(["σ", "test accuracy (%)"], [[f"{x:g}", _fmt(a)] for x, a in zip(sig, acc)])]
    else:
        out += ["No noise accuracies recorded.", ""]

    losses = s.get("final_losses")
    if isinstance(losses, dict) and losses:
        out += ["## Final losses", "",
                markdown_table(["loss", "value"], [[k, _fmt(v, 4)] for k, v in losses.items()])]

    out += ["## Curves", "", "![training curves](plots/curves.png)", "",
            "![accuracy under noise](plots/noise.png)", ""]

    versions = s.get("versions")
    if isinstance(versions, dict) and versions:
        out += ["## Environment", "", markdown_table(["package", "version"], sorted(versions.items()), align=["l", "l"])]
    if run.config_text is not None:
        out += ["## Config", "", "```yaml", run.config_text.rstrip("\n"), "```", ""]
    return _write_text(run.path / "report.md", "\n".join(out))


def _same_or_list(values: Sequence[Any], fmt) -> str:
    distinct: List[Any] = []
    for v in values:
        if v not in distinct:
            distinct.append(v)
    return " / ".join(fmt(v) for v in distinct) if distinct else MISSING


def compare_runs(run_dirs: Sequence[PathLike], out_dir: PathLike, title: str = "Comparison") -> Path:
    """Side-by-side report of several runs: ``out_dir/report.md``, ``out_dir/plots/curves.png``
    (validation accuracy vs epoch, every run) and ``out_dir/plots/noise.png`` (test accuracy vs
    noise sigma, one line per row with sample-std error bars).

    Rows group runs that differ only by seed: same ``label``, model, data set and n_per_class (so
    one label shows as several rows only if its runs used different models or data). Each row
    shows mean ± sample std (ddof=1) over its runs (the Seeds column lists them); a single run
    shows its value. Columns: model, params, MACs per image, CPU latency, data (n_per_class),
    test acc of the best-on-val checkpoint, test acc at the last epoch, accuracy under each noise
    sigma (best-on-val ckpt) and, for distilled students, the accuracy kept relative to the teacher.
    A per-run table follows, then the teachers used.

    Returns:
        The path of out_dir/report.md.

    Raises:
        ValueError: empty ``run_dirs`` or the same directory given twice.
        kdlab.report.RunFileError (a FileNotFoundError): a run lacks summary.json or metrics.jsonl
            (the message names the path).
    Warns:
        UserWarning: two runs of one row share a seed (they would be counted as two seeds).
    """
    if not run_dirs:
        raise ValueError("compare_runs needs at least one run directory, got none")
    resolved = [Path(p).resolve() for p in run_dirs]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise ValueError(f"run directory {str(run_dirs[i])!r} is given twice; each run must appear once")
    runs = [load_run(p) for p in run_dirs]
    out_dir = Path(out_dir)

    groups: Dict[Tuple[Any, ...], List[RunData]] = {}
    for r in runs:
        d = _sub(r.summary, "data")
        key = (r.label, _sub(r.summary, "model").get("name"), d.get("name"), d.get("n_per_class"))
        groups.setdefault(key, []).append(r)
    label_count: Dict[str, int] = {}
    for key in groups:
        label_count[key[0]] = label_count.get(key[0], 0) + 1

    def row_name(key: Tuple[Any, ...]) -> str:
        if label_count[key[0]] == 1:
            return str(key[0])
        return f"{key[0]} [{key[1]}, {'all' if key[3] in (None, 0) else key[3]}/class]"

    sigmas = sorted({x for r in runs for x in noise_series(r.summary)[0]})
    headers = ["Label", "Method", "Model", "Params", "MACs / image", "CPU latency (ms)", "Data (n/class)", "Seeds",
               "Test acc, best-val ckpt (%)", "Test acc, last epoch (%)"]
    headers += [f"{_sigma_label(x)} (%)" for x in sigmas] + ["Kept vs teacher (%)"]
    rows = []
    noise_plot = []
    for key, members in groups.items():
        seeds = [m.summary.get("seed") for m in members]
        dup = sorted({str(x) for x in seeds if seeds.count(x) > 1})
        if dup:
            warnings.warn(f"row {row_name(key)!r}: seed(s) {', '.join(dup)} appear in several runs "
                          f"({', '.join(str(m.path) for m in members)}); each is counted as a seed", stacklevel=2)
        noise = [dict(zip(*noise_series(m.summary))) for m in members]
        kept = [kept_vs_teacher(m.summary) for m in members]
        rows.append([
            row_name(key),
            _same_or_list([m.summary.get("method", MISSING) for m in members], str),
            str(key[1] if key[1] is not None else MISSING),
            _same_or_list([_sub(m.summary, "model").get("params") for m in members], format_count),
            _same_or_list([_sub(m.summary, "model").get("macs") for m in members], format_count),
            format_mean_std([_sub(m.summary, "model").get("latency_ms") for m in members], digits=3),
            _data_text(members[0].summary),
            ", ".join(str(x) for x in seeds),
            format_mean_std([m.summary.get("test_acc_best") for m in members]),
            format_mean_std([m.summary.get("test_acc_last") for m in members]),
            *[format_mean_std([n.get(x) for n in noise]) for x in sigmas],
            format_mean_std(kept) if any(k is not None for k in kept) else MISSING,
        ])
        xs, means, stds = [], [], []
        for x in sigmas:
            m_, s_, n_ = mean_std([n.get(x) for n in noise])
            if n_:
                xs.append(x)
                means.append(m_)
                stds.append(s_)
        noise_plot.append((row_name(key), xs, means, stds))

    plots = out_dir / "plots"
    curves, curve_groups = [], []
    for key, members in groups.items():
        for m in members:
            curves.append((f"{row_name(key)} (seed {m.summary.get('seed', MISSING)})", *epoch_series(m.metrics, "val/acc")))
            curve_groups.append(row_name(key))
    plot_val_curves(curves, plots / "curves.png", title=f"{title}: validation accuracy", groups=curve_groups)
    plot_noise(noise_plot, plots / "noise.png", title=f"{title}: accuracy under Gaussian input noise")

    out = [f"# {title}", "", f"{len(runs)} runs in {len(groups)} rows. Values are mean ± sample std (ddof=1) "
           "over the runs listed under Seeds; a single run shows its value.", "", CHECKPOINT_NOTE, "",
           markdown_table(headers, rows, align=["l"] * 3 + ["r"] * 3 + ["l"] * 2 + ["r"] * (len(headers) - 8)), "",
           "![validation accuracy vs epoch](plots/curves.png)", "",
           "![accuracy under noise](plots/noise.png)", "", "## Runs", ""]
    run_rows = []
    for key, members in groups.items():
        for m in members:
            s = m.summary
            try:
                where = os.path.relpath(m.path, out_dir)
            except ValueError:  # another drive on Windows
                where = str(m.path)
            run_rows.append([m.name, row_name(key), s.get("seed", MISSING),
                             f"{s.get('best_epoch', MISSING)} / {s.get('epochs', MISSING)}",
                             _fmt(s.get("val_acc_best")), _fmt(s.get("test_acc_best")), _fmt(s.get("test_acc_last")),
                             s.get("stopped_early", MISSING), _fmt(s.get("wall_time_s"), 1), f"`{where}`"])
    out += [markdown_table(["Run", "Row", "Seed", "Best epoch / epochs", "Val acc best (%)", "Test acc, best-val ckpt (%)",
                            "Test acc, last epoch (%)", "Stopped early", "Wall time (s)", "Directory"], run_rows,
                            align=["l", "l"] + ["r"] * 7 + ["l"])]
    teachers: Dict[Tuple[Any, ...], Dict[str, Any]] = {}
    for r in runs:
        t = _sub(r.summary, "teacher")
        if t:
            teachers.setdefault((t.get("name"), t.get("checkpoint"), t.get("sha256")), t)
    if teachers:
        out += ["", "## Teachers", "", markdown_table(
            ["Teacher", "Params", "MACs / image", "Test acc (%)", "Checkpoint", "sha256"],
            [[t.get("name", MISSING), format_count(t.get("params")), format_count(t.get("macs")), _fmt(t.get("test_acc")),
              f"`{t.get('checkpoint', MISSING)}`", (str(t.get("sha256"))[:16] if t.get("sha256") else MISSING)]
             for t in teachers.values()], align=["l"] + ["r"] * 3 + ["l", "l"])]
    return _write_text(out_dir / "report.md", "\n".join(out) + "\n")
