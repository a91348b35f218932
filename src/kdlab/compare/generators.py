"""Generator rows in a comparison's report: their per-seed numbers, plots and report sections.

A generator row's run (``gan-compression``: a student generator of a frozen teacher generator) ends with
the generative evaluation of :func:`kdlab.games.gan_eval.gan_finalize`; its summary.json's
``generative`` section gives, per seed: ``fid`` / ``kid`` against the real test images and ``is``
through the metric classifier (``eval.extractor``: a kdlab classifier, identified by sha256; Inception-v3
weights are not available offline), ``vol`` (mean variance of the Laplacian: higher = sharper; the blur
claim of Aguinaldo et al. 2019), ``fidelity_fid`` (FID between student and teacher samples for the same
z: fidelity to the teacher, not quality) and ``mse_to_teacher`` (the MSE to the teacher's images on the
evaluation latents, in the generators' [-1, 1] units); ``compression_ratio`` is teacher params / student
params. The teacher's own numbers, measured in the same run on the same latents and extractor, come
with each record (``teacher_fid``, ``teacher_vol``...), so the report shows them beside the students'.
Lower is better for FID, KID, fidelity FID and MSE (:data:`kdlab.compare.claims.LOWER_IS_BETTER`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kdlab.compare.claims import LOWER_IS_BETTER, METRICS
from kdlab.report import format_count, markdown_table, plot_bars
from kdlab.report.tables import MISSING

__all__ = ["GENERATOR_KEYS", "TEACHER_KEYS", "generator_record", "student_updates", "generator_plots", "generator_sections",
           "generator_runs_table", "beats_teacher_lines", "stat_text", "first_value"]

#: the numbers of a generator row's record: the comparable metrics, then the compression ratio
GENERATOR_KEYS = METRICS["generator"] + ("compression_ratio",)
#: the teacher's numbers each record carries (as measured in that run)
TEACHER_KEYS = ("fid", "kid", "is", "vol")
#: the metrics plotted: quality (FID), sharpness (VoL), fidelity to the teacher (the others are in the table)
PLOTTED = ("fid", "vol", "fidelity_fid")
_HEAD = {"fid": ("FID", 2), "kid": ("KID", 4), "is": ("IS", 3), "vol": ("VoL", 1), "fidelity_fid": ("FID to teacher", 2),
         "mse_to_teacher": ("MSE to teacher", 4)}


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def generator_record(summary: Dict[str, Any]) -> Dict[str, Any]:
    """One generator run's numbers from its summary.json (None where absent, e.g. no extractor): the
    :data:`GENERATOR_KEYS`, ``d`` (the student's depth scale factor), ``teacher_<key>`` for the
    :data:`TEACHER_KEYS`, ``teacher_params``, and the real test images' ``real_vol`` / ``real_is``."""
    g = summary.get("generative") or {}
    t = summary.get("teacher") or {}
    tg = t.get("generative") or {}
    real = g.get("real") or {}
    rec: Dict[str, Any] = {k: _num(g.get(k)) for k in METRICS["generator"]}
    rec["compression_ratio"] = _num(summary.get("compression_ratio"))
    rec["d"] = (summary.get("model") or {}).get("d")
    rec.update({f"teacher_{k}": _num(tg.get(k)) for k in TEACHER_KEYS})
    rec["teacher_params"] = t.get("params")
    rec["real_vol"], rec["real_is"] = _num(real.get("vol")), _num(real.get("is"))
    return rec


def student_updates(batches: Optional[int], cfg: Any) -> Optional[int]:
    """The student's optimizer steps in a ``gan-compression`` run of ``batches`` training batches: one per batch,
    or with the adversarial term (``objective.student.gan.weight > 0``) one per ``players.n_critic`` batches
    (the critic steps on every batch) plus the first batch's (:meth:`kdlab.methods.gan_compression.GANCompression.
    training_step` updates the student at batch s when ``(s + 1) % n_critic == 0``, and on the first batch)."""
    gan = (cfg.objective.get("student") or {}).get("gan")
    k = int(cfg.players.get("n_critic", 1) or 1)
    if batches is None or gan is None or float(gan.weight) <= 0 or k <= 1:
        return batches
    return batches // k + 1


def generator_plots(rows: Sequence[Dict[str, Any]], out: Path, name: str) -> List[str]:
    """``plots/gen_<metric>.png`` for each of :data:`PLOTTED`: one bar per row (mean ± std over seeds), the
    teacher's value as a dashed line; and ``plots/gen_<metric>_vs_params.png``
    (:func:`kdlab.report.gan.plot_metric_vs_params`, the compression curve). Returns the file names written."""
    from kdlab.report.gan import plot_metric_vs_params

    written = []
    labels = [e["label"] for e in rows]
    for key in PLOTTED:
        means = [(e.get(key) or {}).get("mean") for e in rows]  # an image-to-image row has no VoL
        if not any(m is not None for m in means):
            continue
        teacher = next((r.get(f"teacher_{key}") for e in rows for r in e["runs"] if r.get(f"teacher_{key}") is not None),
                       None)
        title, _ = _HEAD[key]
        arrow = "lower is better" if key in LOWER_IS_BETTER else "higher is better"
        plot_bars(labels, means, [e[key]["std"] for e in rows], out / "plots" / f"gen_{key}.png", ylabel=title,
                  title=f"{name}: {title} ({arrow}; mean ± std over seeds; dashed: the teacher)", reference=teacher)
        points = [{"label": e["label"], "params": e["params"]["mean"], key: e[key]["mean"], "series": "students"}
                  for e in rows]
        if teacher is not None:
            points.append({"label": "teacher", "params": next((r.get("teacher_params") for e in rows for r in e["runs"]
                                                               if r.get("teacher_params")), None),
                           key: teacher, "role": "teacher"})
        plot_metric_vs_params(points, key, out / "plots" / f"gen_{key}_vs_params.png", title=f"{title} ({arrow})")
        written += [f"gen_{key}.png", f"gen_{key}_vs_params.png"]
    return written


def stat_text(stat: Dict[str, Any], digits: int = 2) -> str:
    """``mean ± std`` of a row's ``{mean, std, n}`` with ``digits`` decimals (``—`` for none)."""
    if not stat or not stat.get("n") or stat.get("mean") is None:
        return MISSING
    return f"{stat['mean']:.{digits}f}" + (f" ± {stat['std']:.{digits}f}" if stat["std"] is not None else "")


def first_value(rows: Sequence[Dict[str, Any]], key: str) -> Any:
    """The first run record's ``key`` over ``rows`` (e.g. the teacher's FID, the same in every run)."""
    return next((r.get(key) for e in rows for r in e["runs"] if r.get(key) is not None), None)


def beats_teacher_lines(rows: Sequence[Dict[str, Any]], key: str = "fid") -> List[str]:
    """A note naming the rows whose mean FID is below their teacher's (as measured in their own runs): a student
    better than its teacher on the headline metric is scored more for its own game against the real images than
    for what it distilled, so its FID says little about the distillation."""
    better = []
    for e in rows:
        mean, teacher = (e.get(key) or {}).get("mean"), first_value([e], f"teacher_{key}")
        if mean is not None and teacher is not None and mean < teacher:
            better.append(f"{e['label']} ({mean:.2f} vs {teacher:.2f})")
    if not better:
        return []
    return [f"Students below their teacher's FID: {', '.join(better)}. A student that beats its teacher on "
            "FID is scored for its own game against the real images more than for what it distilled; read its "
            "FID differences as such, and the fidelity to the teacher beside them.", ""]


def generator_sections(results: Dict[str, Any]) -> List[str]:
    """The report lines of generator rows (from ``results.json`` alone): quality and fidelity per row with
    the teacher's and the real images' values, size and compression, and the plots."""
    rows = results["rows"]
    keys = list(METRICS["generator"])
    teacher = [first_value(rows, f"teacher_{k}") for k in keys]
    t_row = [["teacher (as measured in the students' runs)", MISSING, format_count(first_value(rows, "teacher_params")),
              MISSING, "1:1"] + [MISSING if v is None else f"{v:.{_HEAD[k][1]}f}" for k, v in zip(keys, teacher)]]
    real_vol, real_is = first_value(rows, "real_vol"), first_value(rows, "real_is")
    lines = ["## Generator quality", "",
             "Per row, mean ± sample std over its finished seeds: FID and KID against the real test images and IS, "
             "through the metric classifier (`eval.extractor`; its sha256 is in each run's summary.json); VoL, the "
             "mean variance of the Laplacian of the samples (higher = sharper); FID to the teacher's samples for "
             "the same z and MSE to the teacher's images (fidelity, not quality). ↓: lower is better. The teacher's "
             "numbers are those its students' runs measured on the same latents."
             + (f" Real test images: VoL {real_vol:.1f}" if real_vol is not None else "")
             + (f", IS {real_is:.3f}." if real_is is not None else "."), "",
             markdown_table(["Row", "d", "Params", "MACs / image", "Compression"]
                            + [_HEAD[k][0] + (" ↓" if k in LOWER_IS_BETTER else " ↑") for k in keys],
                            t_row + [[e["label"], str(first_value([e], "d") or MISSING), format_count(e["params"]["mean"]),
                                      format_count(e["macs"]["mean"]),
                                      MISSING if e["compression_ratio"]["mean"] is None
                                      else f"{e['compression_ratio']['mean']:.1f}:1"]
                                     + [stat_text(e[k], _HEAD[k][1]) for k in keys] for e in rows],
                            align=["l"] + ["r"] * (4 + len(keys))), ""] + beats_teacher_lines(rows)
    for name in results.get("generator_plots") or []:
        lines += [f"![{name}](plots/{name})", ""]
    return lines


def generator_runs_table(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The runs of generator rows: status, FID, fidelity FID, wall time, directory."""
    body = [[r["name"], e["label"], r["seed"], r["status"] + (f": {r['error']}" if r["error"] else ""),
             MISSING if r.get("fid") is None else f"{r['fid']:.2f}",
             MISSING if r.get("fidelity_fid") is None else f"{r['fidelity_fid']:.2f}",
             MISSING if r.get("wall_time_s") is None else f"{r['wall_time_s']:.1f}",
             f"`{r['path']}`" + (f" (log `{r['log_path']}`)" if r.get("log_path") else "")]
            for e in rows for r in e["runs"]]
    return [markdown_table(["Run", "Row", "Seed", "Status", "FID", "FID to teacher", "Wall time (s)", "Directory / log"],
                           body, align=["l", "l", "r", "l", "r", "r", "r", "l"])]
