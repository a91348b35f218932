"""Reports of generator runs (``kdlab train-gan`` / ``kdlab compress-gan``) and of generator sweeps.

A generator run's ``summary.json`` has ``kind: generator`` and a ``generative`` section (FID, KID, IS,
variance of Laplacian, and for a student the teacher's numbers, the fidelity FID and the MSE to the
teacher); :func:`kdlab.report.write_run_report` hands such runs to :func:`write_gan_run_report`.

What each number is, stated in every report:
- FID / KID: generated images vs the real TEST images, features of the extractor named (with its
  sha256) in the report: numbers are comparable only for the same extractor;
- IS: exp(E KL(p(y|x) || p(y))) of the extractor's softmax, mean ± std over splits;
- VoL: mean over images of the variance of the Laplacian of the grayscale image in [0, 255] (higher =
  sharper); the real test images' value is given as the reference;
- fidelity FID: student samples vs TEACHER samples for the same latents: how close the student is
  to its teacher, not a quality measure against real data.

Imports only matplotlib and the standard library; figures are saved as :mod:`kdlab.report.plots` saves them
(no pyplot, no global backend switched, atomic palette PNGs).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .runs import RunData, epoch_series, load_run
from .tables import MISSING, format_count, markdown_table

PathLike = Union[str, Path]

__all__ = ["write_gan_run_report", "compare_generator_runs", "plot_metric_vs_params", "side_by_side_grid", "METRIC_NOTE"]

METRIC_NOTE = (
    "FID and KID compare generated images with the real **test** images in the feature space of the "
    "extractor named below (never compare them across extractors); IS is exp(E KL(p(y|x) || p(y))) of its "
    "softmax (mean ± std over splits); VoL is the mean variance of the Laplacian of the grayscale images in "
    "[0, 255] (blur: lower = blurrier; the real images' value is the reference). **Fidelity to the teacher** "
    "is the FID between student and teacher samples for the same latents z: closeness to the teacher, not "
    "quality against real data. MSE to teacher is in the generators' [-1, 1] pixel units."
)


def _f(v: Any, digits: int = 2) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return MISSING
    return f"{v:.{digits}f}" if abs(v) >= 10 ** (-digits) or v == 0 else f"{v:.2e}"


def _pm(m: Any, s: Any, digits: int = 2) -> str:
    if not isinstance(m, (int, float)):
        return MISSING
    return f"{_f(m, digits)} ± {_f(s, digits)}" if isinstance(s, (int, float)) else _f(m, digits)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def extractor_text(info: Optional[Dict[str, Any]]) -> str:
    """One line naming the metric extractor (kind, architecture, checkpoint, sha256)."""
    if not info or not info.get("kind"):
        return (info or {}).get("note", "no feature extractor: FID/KID/IS not computed")
    if info["kind"] == "classifier":
        return (f"kdlab classifier `{info.get('name')}` from `{info.get('checkpoint')}` (sha256 `{info.get('sha256')}`), "
                f"{info.get('num_features')} features: {info.get('layer')}")
    return str(info.get("name", info["kind"]))


def _metric_rows(role: str, prof: Dict[str, Any], g: Dict[str, Any]) -> List[Any]:
    return [role, prof.get("name", MISSING), str(prof.get("d", MISSING)), format_count(prof.get("params")),
            format_count(prof.get("macs")), _f(g.get("fid")), _pm(g.get("kid"), g.get("kid_std"), 4),
            _pm(g.get("is"), g.get("is_std")), _f(g.get("vol"), 1)]


METRIC_HEADERS = ["role", "generator", "d", "params", "MACs / image", "FID ↓", "KID ↓", "IS ↑", "VoL"]


def _plot_losses(run: RunData, path: Path) -> Optional[Path]:
    from matplotlib.figure import Figure

    from .plots import save_figure

    keys = sorted({k for rec in run.metrics for k in rec if k.startswith("train/")})
    if not keys:
        return None
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for k in keys:
        ep, v = epoch_series(run.metrics, k)
        if ep:
            ax.plot([e + 1 for e in ep], v, marker="o", label=k[6:])
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (mean over logged steps)")
    ax.legend(fontsize=8)
    ax.set_title(run.name)
    return save_figure(fig, path, dpi=100)


def write_gan_run_report(run: Union[RunData, PathLike]) -> Path:
    """Write ``<run>/report.md`` for a generator run: metrics table (student, teacher, real images),
    fidelity to the teacher, extractor identity, sample grids, loss curves, config.

    Raises: RunFileError: summary.json or metrics.jsonl missing.
    """
    if not isinstance(run, RunData):
        run = load_run(run)
    s = run.summary
    g = s.get("generative") or {}
    model = s.get("model") or {}
    teacher = s.get("teacher") or {}
    out = [f"# Run report: {run.name} (generator)", ""]
    d = s.get("data") or {}
    overview = [
        ("label", run.label), ("method", s.get("method", MISSING)), ("seed", s.get("seed", MISSING)),
        ("data", d.get("name", MISSING)), ("train / test images", f"{d.get('n_train', MISSING)} / {d.get('n_test', MISSING)}"),
        ("epochs", s.get("epochs", MISSING)),
        ("exported epoch", f"{s.get('best_epoch', MISSING)} ({s.get('selection', MISSING)})"),
        ("generated images per metric", g.get("n", MISSING)), ("latent seed", s.get("sample_seed", MISSING)),
        ("wall time (s)", _f(s.get("wall_time_s"), 1)), ("git commit", s.get("git_commit") or MISSING),
    ]
    out += [markdown_table(["", "value"], overview, align=["l", "l"]), "## Generative metrics", "", METRIC_NOTE, "",
            f"Extractor: {extractor_text(s.get('extractor'))}", ""]
    rows = [_metric_rows("student" if teacher else "generator", model, g)]
    if teacher:
        rows.append(_metric_rows("teacher", teacher, teacher.get("generative") or {}))
    real = g.get("real") or {}
    rows.append(["real test images", MISSING, MISSING, MISSING, MISSING, "0", "0", _pm(real.get("is"), real.get("is_std")),
                 _f(real.get("vol"), 1)])
    out += [markdown_table(METRIC_HEADERS, rows, align=["l", "l"] + ["r"] * 7)]
    if teacher:
        fid_t = g.get("fidelity_fid")
        out += ["## Fidelity to the teacher", "",
                markdown_table(["measure", "value"], [
                    ["FID student vs teacher samples (fidelity to the teacher, same z)", _f(fid_t)],
                    ["MSE student vs teacher images (same z, [-1, 1] units)", _f(g.get("mse_to_teacher"), 5)],
                    ["compression ratio (teacher params / student params)", _f(s.get("compression_ratio"), 1) + ":1"],
                ], align=["l", "r"]),
                f"Teacher checkpoint: `{teacher.get('checkpoint', MISSING)}` (sha256 `{teacher.get('sha256', MISSING)}`)", ""]
    out += ["## Samples", "", "Fixed latents (the same z for teacher and student).", ""]
    samples = run.path / "samples"
    for name, title in (("side_by_side.png", "teacher (odd rows) vs student (even rows), same z"),
                        ("generated.png", "generated"), ("teacher.png", "teacher"), ("real.png", "real test images")):
        if (samples / name).is_file():
            out += [f"![{title}](samples/{name})", f"*{title}*", ""]
    if _plot_losses(run, run.path / "plots" / "losses.png"):
        out += ["## Training losses", "", "![losses](plots/losses.png)", ""]
    if run.config_text is not None:
        out += ["## Config", "", "```yaml", run.config_text.rstrip("\n"), "```", ""]
    return _write(run.path / "report.md", "\n".join(out))


def plot_metric_vs_params(points: Sequence[Dict[str, Any]], metric: str, path: PathLike, title: str = "",
                          ylabel: Optional[str] = None, reference: Optional[float] = None) -> Optional[Path]:
    """Plot ``metric`` against parameter count (log x) for points ``{"label", "params", metric, "role", "series"}``:
    one line per series of students, teachers as stars, an optional horizontal reference line (e.g. real
    images' VoL)."""
    from matplotlib.figure import Figure

    from .plots import save_figure

    pts = [p for p in points if isinstance(p.get(metric), (int, float)) and isinstance(p.get("params"), (int, float))]
    if not pts:
        return None
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    series: Dict[str, List[Dict[str, Any]]] = {}
    for p in pts:
        if p.get("role") != "teacher":
            series.setdefault(str(p.get("series") or "students"), []).append(p)
    for name, members in series.items():
        members = sorted(members, key=lambda p: p["params"])
        ax.plot([p["params"] for p in members], [p[metric] for p in members], "o-", label=name)
        for p in members:
            ax.annotate(p["label"], (p["params"], p[metric]), fontsize=7, textcoords="offset points", xytext=(3, 3))
    for p in pts:
        if p.get("role") == "teacher":
            ax.plot([p["params"]], [p[metric]], "r*", markersize=12, label=f"teacher ({p['label']})")
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", label="real test images")
    ax.set_xscale("log")
    ax.set_xlabel("generator parameters")
    ax.set_ylabel(ylabel or metric)
    ax.set_title(title or f"{metric} vs parameters", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=100)


def compare_generator_runs(run_dirs: Sequence[PathLike], out_dir: PathLike, title: str = "Generator comparison",
                           grid: Optional[str] = None, intro: Sequence[str] = ()) -> Path:
    """Side-by-side report of generator runs (a teacher and its students): one row per generator with
    d, params, MACs, compression ratio, FID/KID/IS/VoL, fidelity FID and MSE to the teacher; plots of each
    metric against parameters (``plots/<metric>_vs_params.png``); ``grid`` (a PNG path relative to
    ``out_dir``) is shown as the side-by-side sample grid.

    Raises: ValueError: no runs; RunFileError: a run lacks summary.json/metrics.jsonl.
    """
    if not run_dirs:
        raise ValueError("compare_generator_runs needs at least one run directory, got none")
    runs = [load_run(p) for p in run_dirs]
    out_dir = Path(out_dir)
    rows, points, extractors = [], [], {}
    teachers: Dict[str, Dict[str, Any]] = {}
    real_vol = real_is = None
    for r in runs:
        s = r.summary
        g, m, t = s.get("generative") or {}, s.get("model") or {}, s.get("teacher") or {}
        role = "student" if t else "teacher"
        ex = s.get("extractor") or {}
        extractors[ex.get("sha256") or ex.get("kind") or "none"] = ex
        real = g.get("real") or {}
        real_vol, real_is = real.get("vol", real_vol), real.get("is", real_is)
        rows.append([r.label, role, str(m.get("d", MISSING)), format_count(m.get("params")), format_count(m.get("macs")),
                     (_f(s.get("compression_ratio"), 1) + ":1") if t else "1:1", _f(g.get("fid")),
                     _pm(g.get("kid"), g.get("kid_std"), 4), _pm(g.get("is"), g.get("is_std")), _f(g.get("vol"), 1),
                     _f(g.get("fidelity_fid")) if t else MISSING, _f(g.get("mse_to_teacher"), 5) if t else MISSING,
                     _f(s.get("wall_time_s"), 0), f"`{os.path.relpath(r.path, out_dir)}`"])
        gan = (((r.config or {}).get("objective") or {}).get("student") or {}).get("gan") or {}
        kind = "joint-loss students" if (gan.get("weight") or 0) > 0 else "MSE students"
        points.append({"label": f"d={m.get('d')}", "params": m.get("params"), "role": role, "series": kind,
                       **{k: g.get(k) for k in
                       ("fid", "kid", "is", "vol", "fidelity_fid", "mse_to_teacher")}})
        if t:
            teachers[t.get("sha256", "")] = t
    plots = out_dir / "plots"
    shown = []
    for metric, label, ref in (("fid", "FID vs real test images (lower is better)", None),
                               ("kid", "KID vs real test images (lower is better)", None),
                               ("is", "Inception Score (higher is better)", real_is),
                               ("vol", "variance of Laplacian (blur; higher = sharper)", real_vol),
                               ("fidelity_fid", "FID student vs teacher samples (fidelity to the teacher)", None)):
        p = plot_metric_vs_params(points, metric, plots / f"{metric}_vs_params.png", title=label, ylabel=metric, reference=ref)
        if p:
            shown.append((metric, label))
    out = [f"# {title}", "", *intro, METRIC_NOTE, ""]
    out += ["Extractor(s): " + "; ".join(extractor_text(e) for e in extractors.values()), ""]
    out += [markdown_table(["run", "role", "d", "params", "MACs / image", "compression", "FID ↓", "KID ↓", "IS ↑", "VoL",
                            "fidelity to teacher (FID) ↓", "MSE to teacher", "wall (s)", "directory"], rows,
                           align=["l", "l"] + ["r"] * 11 + ["l"])]
    out += [f"Real test images: IS {_f(real_is)}, VoL {_f(real_vol, 1)}.", ""]
    for t in teachers.values():
        out += [f"Teacher: `{t.get('checkpoint', MISSING)}` (sha256 `{t.get('sha256', MISSING)}`), {format_count(t.get('params'))} "
                "parameters.", ""]
    if grid:
        out += ["## Samples, same z", "", f"![side by side]({grid})", "", "Rows: real test images, the teacher, then the "
                "students in the order of the table; columns share the latent z.", ""]
    if shown:
        out += ["## Metrics against parameters", ""]
        for metric, label in shown:
            out += [f"![{label}](plots/{metric}_vs_params.png)", ""]
    return _write(out_dir / "report.md", "\n".join(out) + "\n")


def side_by_side_grid(real_images: Any, generators: Sequence[Any], path: PathLike, n: int = 10, seed: int = 0) -> Path:
    """One PNG: a row of ``n`` real images (uint8 ``[N, C, H, W]``), then one row per generator for the same
    ``n`` latents (``seed``): real, teacher and students side by side."""
    import torch

    from kdlab.metrics.generative import generate_images, save_grid

    rows = [real_images[:n].float() / 255.0]
    for g in generators:
        rows.append(generate_images(g, n, g.latent_dim, seed=seed))
    return save_grid(torch.cat(rows), Path(path), nrow=n)
