"""What ``kdlab train-* / compress-gan / evaluate-gan`` print at the end (one rich table per run), and ``kdlab list``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from rich.console import Console
from rich.table import Table


def print_summary(run_dir: Path) -> None:
    """A classifier run: model, params, test accuracy (best on validation, last), report path."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return
    s = json.loads(path.read_text())
    table = Table(title=f"{s['label']} ({s['method']})")
    for col in ("model", "params", "test acc (best val)", "test acc (last)", "report"):
        table.add_column(col)
    table.add_row(
        s["model"]["name"],
        f"{s['model']['params']:,}",
        f"{s['test_acc_best']:.2f}",
        f"{s['test_acc_last']:.2f}",
        str(run_dir / "report.md"),
    )
    Console().print(table)


def print_translation(s: dict, where: str) -> None:
    """An image-to-image run's ``summary.json`` ``s``: its translation scores (and its teacher's)."""
    from kdlab.report.translation import TRANSLATION_HEADERS, translation_row

    table = Table(title=f"{s.get('label', '')} ({s.get('method', 'generator')}, {(s.get('task') or {}).get('name')})")
    for col in TRANSLATION_HEADERS + ["report"]:
        table.add_column(col)
    teacher = s.get("teacher") or {}
    table.add_row(*translation_row("student" if teacher else "generator", s.get("model") or {}, s.get("translation") or {}),
                  where)
    if teacher:
        table.add_row(*translation_row("teacher", teacher, teacher.get("translation") or {}), "")
    Console().print(table)


def print_gan(s: dict, where: str) -> None:
    """A generator run's ``summary.json`` ``s`` (or ``evaluate-gan``'s result): FID/KID/IS/VoL, fidelity."""
    if "translation" in s:
        return print_translation(s, where)
    g = s.get("generative") or {}
    table = Table(title=f"{s.get('label', s.get('weights', ''))} ({s.get('method', 'generator')})")
    for col in ("generator", "d", "params", "FID", "KID", "IS", "VoL", "fidelity FID (vs teacher)", "report"):
        table.add_column(col)

    def f(v, d=2):
        return f"{v:.{d}f}" if isinstance(v, (int, float)) else "-"

    m = s.get("model") or {}
    table.add_row(str(m.get("name")), str(m.get("d")), f"{m.get('params', 0):,}", f(g.get("fid")), f(g.get("kid"), 4),
                  f(g.get("is")), f(g.get("vol"), 1), f(g.get("fidelity_fid")), where)
    Console().print(table)


#: the extra columns of a ``kdlab list`` group (besides name and description)
LIST_COLUMNS = {"terms": ("keys (defaults)", "players", "needs")}


def print_list(groups: Dict[str, Dict[str, Any]], as_json: bool = False) -> None:
    """``kdlab list``: each group's entries (name -> description, or a tuple of the group's columns) as a
    table on a terminal, as tab-separated ``group, name, columns...`` lines when piped (names never cut to
    the terminal's width), or as JSON ``{group: {name: {column: value}}}``."""
    if as_json:
        print(json.dumps({g: {k: dict(zip(("description",) + LIST_COLUMNS.get(g, ()), v if isinstance(v, tuple) else (v,)))
                              for k, v in e.items()} for g, e in groups.items()}, indent=1))
        return
    out = Console()
    for name, entries in groups.items():
        if not out.is_terminal:
            for k, v in entries.items():
                print("\t".join((name, k, *(v if isinstance(v, tuple) else (v,)))))
            continue
        table = Table(title=name)
        for col in ("name", "description") + LIST_COLUMNS.get(name, ()):
            table.add_column(col)
        for k, v in entries.items():
            table.add_row(k, *(v if isinstance(v, tuple) else (v,)))
        out.print(table)
