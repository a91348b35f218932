"""Image-to-image rows in a comparison's report: their per-seed numbers and report sections.

An image-to-image row's run (``i2i-distill`` and its recipes: OMGD, CAT, GAN-Compression, CAGC students of a
frozen pix2pix / CycleGAN teacher; Kang et al. 2022 Tables 1, 2 and 4) ends with
:func:`kdlab.games.i2i_eval.translation_finalize`; its summary.json's ``translation`` section gives, per
seed, on the test split: ``fid`` / ``kid`` of the translations against the output domain's test images through
the output domain's classifier (``eval.extractor``, identified by sha256); on a paired task also ``mae`` and
``ssim`` to the ground-truth output and ``domain_acc``, the classifier's accuracy (%) on the translations (the
stand-in for Cityscapes' mIoU); its ``fidelity`` section the student-to-teacher distances on the same inputs
(``fidelity_fid``, ``fidelity_mae``). The teacher's own numbers, measured in the same run, come with each
record (``teacher_fid``...). Lower is better for FID, KID, MAE and both fidelities
(:data:`kdlab.compare.claims.LOWER_IS_BETTER`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from kdlab.compare.claims import LOWER_IS_BETTER, METRICS
from kdlab.compare.generators import beats_teacher_lines, first_value as _first, stat_text as _ms
from kdlab.report import format_count, markdown_table
from kdlab.report.tables import MISSING

__all__ = ["TRANSLATION_KEYS", "translation_record", "translation_sections", "translation_runs_table"]

#: the numbers of an image-to-image row's record: the comparable metrics, then the compression ratio
TRANSLATION_KEYS = METRICS["image-to-image"] + ("compression_ratio",)
#: the teacher's numbers each record carries (as measured in that run)
TEACHER_KEYS = ("fid", "kid", "mae", "ssim", "domain_acc")
_HEAD = {"fid": ("FID", 2), "kid": ("KID", 4), "mae": ("MAE", 4), "ssim": ("SSIM", 4), "domain_acc": ("domain acc. %", 2),
         "fidelity_fid": ("FID to teacher", 2), "fidelity_mae": ("MAE to teacher", 4)}


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _scores(section: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """fid, kid, mae, ssim and domain_acc (accuracy in %) of one ``translation`` section."""
    acc = (section.get("domain_accuracy") or {}).get("accuracy")
    return {"fid": _num(section.get("fid")), "kid": _num(section.get("kid")), "mae": _num(section.get("mae")),
            "ssim": _num(section.get("ssim")), "domain_acc": None if _num(acc) is None else 100.0 * float(acc)}


def translation_record(summary: Dict[str, Any]) -> Dict[str, Any]:
    """One image-to-image run's numbers from its summary.json (None where absent: an unpaired task has no MAE,
    SSIM or domain accuracy; no extractor, no FID): the :data:`TRANSLATION_KEYS`, the student's ``ngf``,
    ``teacher_<key>`` for the :data:`TEACHER_KEYS` and ``teacher_params``."""
    rec: Dict[str, Any] = _scores(summary.get("translation") or {})
    fid = summary.get("fidelity") or {}
    rec["fidelity_fid"], rec["fidelity_mae"] = _num(fid.get("fid")), _num(fid.get("mae"))
    rec["compression_ratio"] = _num(summary.get("compression_ratio"))
    rec["ngf"] = ((summary.get("model") or {}).get("kwargs") or {}).get("ngf")
    t = summary.get("teacher") or {}
    rec.update({f"teacher_{k}": v for k, v in _scores(t.get("translation") or {}).items()})
    rec["teacher_params"] = t.get("params")
    return rec


def translation_sections(results: Dict[str, Any]) -> List[str]:
    """The report lines of image-to-image rows (from ``results.json`` alone): quality, fidelity to the teacher,
    size and compression per row, the teacher's numbers above them. Columns no row has (an unpaired task's MAE,
    SSIM and domain accuracy) are left out."""
    rows = results["rows"]
    keys = [k for k in METRICS["image-to-image"] if any(e[k]["n"] for e in rows)]
    t_row = [["teacher (as measured in the students' runs)", MISSING, format_count(_first(rows, "teacher_params")),
              MISSING, "1:1"] + [MISSING if _first(rows, f"teacher_{k}") is None
                                 else f"{_first(rows, f'teacher_{k}'):.{_HEAD[k][1]}f}" for k in keys]]
    paper = any(e.get("paper") is not None for e in rows)
    body = [[e["label"], str(_first([e], "ngf") or MISSING), format_count(e["params"]["mean"]),
             format_count(e["macs"]["mean"]),
             MISSING if e["compression_ratio"]["mean"] is None else f"{e['compression_ratio']['mean']:.1f}:1"]
            + [_ms(e[k], _HEAD[k][1]) for k in keys]
            + ([MISSING if e.get("paper") is None else str(e["paper"])] if paper else []) for e in rows]
    t_row[0] += [MISSING] if paper else []
    plots = [line for name in results.get("generator_plots") or [] for line in (f"![{name}](plots/{name})", "")]
    return ["## Translation quality", "",
            "Per row, mean ± sample std over its finished seeds, on the test split: FID and KID of the translations "
            "against the output domain's test images, through the output domain's classifier (`eval.extractor`; its "
            "sha256 is in each run's summary.json); on a paired task MAE and SSIM to the real output image and the "
            "classifier's accuracy on the translations (domain acc.); FID and MAE to the teacher's translations of "
            "the same inputs (fidelity, not quality). ↓: lower is better. The teacher's numbers are those its "
            "students' runs measured." + (" *Paper FID*: the paper's value for the row, on its own data, models and "
                                          "Inception extractor (context, not compared)." if paper else ""), "",
            markdown_table(["Row", "ngf", "Params", "MACs / image", "Compression"]
                           + [_HEAD[k][0] + (" ↓" if k in LOWER_IS_BETTER else " ↑") for k in keys]
                           + (["Paper FID"] if paper else []), t_row + body,
                           align=["l"] + ["r"] * (4 + len(keys) + paper)), ""] + beats_teacher_lines(rows) + plots


def translation_runs_table(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The runs of image-to-image rows: status, FID, MAE to the teacher, wall time, directory."""
    def f(v: Any, d: int) -> str:
        return MISSING if v is None else f"{v:.{d}f}"

    body = [[r["name"], e["label"], r["seed"], r["status"] + (f": {r['error']}" if r["error"] else ""),
             f(r.get("fid"), 2), f(r.get("fidelity_mae"), 4), f(r.get("wall_time_s"), 1),
             f"`{r['path']}`" + (f" (log `{r['log_path']}`)" if r.get("log_path") else "")]
            for e in rows for r in e["runs"]]
    return [markdown_table(["Run", "Row", "Seed", "Status", "FID", "MAE to teacher", "Wall time (s)", "Directory / log"],
                           body, align=["l", "l", "r", "l", "r", "r", "r", "l"])]
