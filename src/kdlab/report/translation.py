"""Reports of image-to-image runs (Pix2Pix / CycleGAN teachers, image-to-image students).

Their ``summary.json`` has ``kind: generator`` and a ``translation`` section (see
:func:`kdlab.games.i2i_eval.translation_finalize`); :func:`kdlab.report.write_run_report` hands such runs
to :func:`write_translation_run_report`.

Imports only matplotlib and the standard library.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Union

from .gan import _f, _pm, _plot_losses, _write, extractor_text
from .runs import RunData, load_run
from .tables import MISSING, format_count, markdown_table

PathLike = Union[str, Path]

__all__ = ["write_translation_run_report", "TRANSLATION_NOTE", "TRANSLATION_HEADERS", "translation_row"]

TRANSLATION_NOTE = (
    "Scores on the **test** split. FID and KID compare the translations with the test split's output-domain "
    "images in the feature space of the output domain's classifier named below (comparable only for the same "
    "extractor). MAE (in [0, 1] pixel units) and SSIM compare each translation with its ground truth (paired "
    "tasks only). Domain accuracy is that classifier's accuracy on the translations against the source "
    "image's class (paired, labelled tasks): kdlab's stand-in for the FCN-score / mIoU of Cityscapes. "
    "**Fidelity to the teacher** compares the student's and the teacher's translations of the same inputs."
)

TRANSLATION_HEADERS = ["role", "generator", "params", "MACs / image", "FID ↓", "KID ↓", "MAE ↓", "SSIM ↑",
                       "domain acc. ↑"]


def translation_row(role: str, prof: Dict[str, Any], t: Dict[str, Any]) -> List[str]:
    """One table row: a generator's size and its translation scores (``summary.json`` entries)."""
    acc = (t.get("domain_accuracy") or {}).get("accuracy")
    return [role, f"{prof.get('name', MISSING)} {prof.get('kwargs', {}).get('ngf', '')}".strip(),
            format_count(prof.get("params")), format_count(prof.get("macs")), _f(t.get("fid")),
            _pm(t.get("kid"), t.get("kid_std"), 4), _f(t.get("mae"), 4), _f(t.get("ssim"), 4),
            _f(100 * acc if isinstance(acc, (int, float)) else None, 2)]


def write_translation_run_report(run: Union[RunData, PathLike]) -> Path:
    """Write ``<run>/report.md`` for an image-to-image run: the task, the scores of the generator (and its
    teacher), fidelity and compression, the translation grid, loss curves and the config.

    Raises: RunFileError: summary.json or metrics.jsonl missing.
    """
    if not isinstance(run, RunData):
        run = load_run(run)
    s = run.summary
    task, d = s.get("task") or {}, s.get("data") or {}
    teacher = s.get("teacher") or {}
    out = [f"# Run report: {run.name} (image-to-image)", ""]
    overview = [
        ("label", run.label), ("method", s.get("method", MISSING)), ("seed", s.get("seed", MISSING)),
        ("task", f"{task.get('name', MISSING)} ({task.get('pairing', MISSING)}; output domain "
                 f"{task.get('target_domain') or MISSING})"),
        ("train / val / test rows", f"{d.get('n_train', MISSING)} / {d.get('n_val', MISSING)} / {d.get('n_test', MISSING)}"),
        ("epochs", s.get("epochs", MISSING)),
        ("exported epoch", f"{s.get('best_epoch', MISSING)} ({s.get('selection', MISSING)})"),
        ("wall time (s)", _f(s.get("wall_time_s"), 1)), ("git commit", s.get("git_commit") or MISSING),
    ]
    out += [markdown_table(["", "value"], overview, align=["l", "l"]), "## Translation metrics", "",
            TRANSLATION_NOTE, "", f"Extractor: {extractor_text(s.get('extractor'))}", ""]
    rows = [translation_row("student" if teacher else "generator", s.get("model") or {}, s.get("translation") or {})]
    if teacher:
        rows.append(translation_row("teacher", teacher, teacher.get("translation") or {}))
    out += [markdown_table(TRANSLATION_HEADERS, rows, align=["l", "l"] + ["r"] * 7), ""]
    per_class = ((s.get("translation") or {}).get("domain_accuracy") or {}).get("per_class")
    if per_class:
        out += ["Domain accuracy per class (%): " + ", ".join(_f(100 * v, 1) for v in per_class), ""]
    if teacher:
        fid, comp = s.get("fidelity") or {}, s.get("compression") or {}
        out += ["## Fidelity to the teacher", "",
                markdown_table(["measure", "value"], [
                    ["MAE student vs teacher translations ([0, 1] units)", _f(fid.get("mae"), 4)],
                    ["SSIM student vs teacher translations", _f(fid.get("ssim"), 4)],
                    ["FID student vs teacher translations", _f(fid.get("fid"))],
                    ["compression: teacher / student params", _f(comp.get("params_ratio"), 1) + "x"],
                    ["compression: teacher / student MACs", _f(comp.get("macs_ratio"), 1) + "x"],
                ], align=["l", "r"]),
                f"Teacher checkpoint: `{teacher.get('checkpoint', MISSING)}` (sha256 `{teacher.get('sha256', MISSING)}`)", ""]
    if (run.path / "samples" / "translations.png").is_file():
        rows_text = "input, teacher, output, target" if teacher else "input, output, target"
        out += ["## Samples", "", "![translations](samples/translations.png)",
                f"*test examples, one per column; rows: {rows_text}*", ""]
    if _plot_losses(run, run.path / "plots" / "losses.png"):
        out += ["## Training losses", "", "![losses](plots/losses.png)", ""]
    if run.config_text is not None:
        out += ["## Config", "", "```yaml", run.config_text.rstrip("\n"), "```", ""]
    return _write(run.path / "report.md", "\n".join(out))
