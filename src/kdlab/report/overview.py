"""The docs' results overview: one line per experiment and committed scale, rendered from
``results/<experiment>/<scale>/results.json`` where a page holds ``<!-- kdlab:results-overview -->``
(``docs/hooks.py``).

Per line: the paper page that shows the experiment, its runs (and how many failed), seeds, the runs reused
from an earlier invocation, the wall time of the ``kdlab reproduce`` invocation that wrote the file plus
that of the earlier invocations it continued after an interruption, and the verdicts of its declared
primary claims (on the Holm-adjusted p: holds / does not hold / undecided, ``docs/statistics.md``). Then
the totals per scale, and the experiments with nothing committed yet, each with the command that makes its
results.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

from kdlab.report.pages import VERDICTS, load_results, scale_files
from kdlab.report.tables import markdown_table

__all__ = ["OVERVIEW_MARKER", "experiment_summary", "render_overview"]

#: the marker a docs page holds where the overview goes
OVERVIEW_MARKER = "<!-- kdlab:results-overview -->"
_HEAD = ["Experiment", "Scale", "Page", "Runs", "Failed", "Seeds", "Reused", "Wall time (min)", "Primary claims",
         *VERDICTS]
_PLURAL = {"holds": "hold", "does not hold": "do not hold", "undecided": "undecided"}


def experiment_summary(results: Mapping[str, Any]) -> Dict[str, Any]:
    """What one ``results.json`` (the compare report's layout) says in a line.

    Returns:
        ``{"runs", "failed", "seeds", "reused", "wall_time_s", "primary", "holds", "does not hold",
        "undecided"}``: runs over every row (the teacher and init runs not counted), distinct seeds,
        runs reused from earlier invocations, the wall time in seconds of the invocation that wrote the file
        plus that of the earlier, interrupted ones it continued (``earlier_wall_time_s``, see
        :mod:`kdlab.compare.clock`; None when the file gives none), and the count of declared primary
        comparisons per verdict.
    """
    runs = [run for row in results.get("rows", []) for run in row.get("runs", [])]
    primary = [c for c in results.get("comparisons", []) if c.get("kind") == "primary"]
    wall, earlier = results.get("wall_time_s"), results.get("earlier_wall_time_s") or 0.0
    return {"runs": len(runs), "failed": sum(run.get("status") == "failed" for run in runs),
            "seeds": len({run.get("seed") for run in runs if run.get("seed") is not None}),
            "reused": int(results.get("reused") or 0),
            "wall_time_s": float(wall) + float(earlier) if isinstance(wall, (int, float)) else None,
            "primary": len(primary), **{v: sum(c.get("verdict") == v for c in primary) for v in VERDICTS}}


def render_overview(results_root: Path, experiments: Mapping[str, str], pages: Mapping[str, str]) -> str:
    """The overview in markdown.

    Args:
        results_root: the folder of ``<experiment>/<scale>/results.json`` (the repository's ``results/``).
        experiments: every experiment to list, name -> one-line description (``EXPERIMENTS.describe()``).
        pages: experiment -> the link of the page that shows it (relative to the overview's page).

    Raises:
        ValueError: a results file that is not JSON or has no ``rows`` list (names the file).
    """
    lines: List[List[Any]] = []
    totals: Dict[str, Dict[str, float]] = {}
    missing = []
    for name in sorted(experiments):
        files = scale_files(results_root, name)
        if not files:
            missing.append(name)
        for f in files:
            s, scale = experiment_summary(load_results(f)), f.parent.name
            page = f"[{pages[name].split('/')[-1].removesuffix('.md')}]({pages[name]})" if name in pages else "—"
            wall = "—" if s["wall_time_s"] is None else f"{s['wall_time_s'] / 60:.0f}"
            lines.append([f"`{name}`", scale, page, s["runs"], s["failed"], s["seeds"], s["reused"], wall,
                          s["primary"], *(s[v] for v in VERDICTS)])
            t = totals.setdefault(scale, {"experiments": 0, "runs": 0, "wall": 0.0, **{v: 0 for v in VERDICTS}})
            t["experiments"] += 1
            t["runs"] += s["runs"]
            t["wall"] += s["wall_time_s"] or 0.0
            for v in VERDICTS:
                t[v] += s[v]
    align = ["l", "l", "l"] + ["r"] * (len(_HEAD) - 3)
    out = [markdown_table(_HEAD, lines, align) if lines else "*No committed results yet.*", ""]
    for scale, t in sorted(totals.items(), key=lambda kv: (kv[0] != "small", kv[0])):
        out.append(f"- **Scale `{scale}`**: {t['experiments']} of {len(experiments)} experiments, {t['runs']} runs, "
                   f"{t['wall'] / 3600:.1f} h of wall time in all; primary claims: "
                   + ", ".join(f"{t[v]} {_PLURAL[v]}" for v in VERDICTS) + ".")
    if missing:
        out.append("- **Not yet committed**: " + ", ".join(
            f"`{name}` (`kdlab reproduce {name} --scale small --out results/`)" for name in missing) + ".")
    return "\n".join(out) + "\n"
