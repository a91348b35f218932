"""Every row of ``docs/fidelity.md`` (each component of each host algorithm's objectives, beside the
official code) names the test that pins it, and that test exists: a row cannot be added, or a pinning test
renamed or deleted, without this failing."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "fidelity.md"
REF = re.compile(r"(?:tests/)?(test_[\w]+\.py)::(test_\w+)")
BARE = re.compile(r"\b(test_\w+)\b(?!\.py)")


def _rows():
    """(section, row cells) of every table body row of the document."""
    section, out = None, []
    for line in TABLE.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("|") and not re.match(r"^\|[\s\-:|]+\|$", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells and cells[0].lower() != "player":
                out.append((section, cells))
    return out


def _test_names(file: Path) -> set:
    tree = ast.parse(file.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_fidelity_row_is_pinned_by_an_existing_test():
    rows = _rows()
    assert len(rows) >= 20, f"the fidelity table has only {len(rows)} rows"
    defined = set().union(*(_test_names(f) for f in (ROOT / "tests").glob("test_*.py")))
    missing = []
    for section, cells in rows:
        refs = REF.findall(cells[-1])
        bare = [n for n in BARE.findall(REF.sub("", cells[-1]))]
        if not refs and not bare:
            missing.append(f"{section}: row {cells[:2]} names no test (want `test_name` or `test_file.py::test_name`)")
        for file, name in refs:
            path = ROOT / "tests" / file
            if not path.exists() or name not in _test_names(path):
                missing.append(f"{section}: row {cells[:2]} names {file}::{name}, which does not exist")
        missing += [f"{section}: row {cells[:2]} names {n}, which no test file defines" for n in bare if n not in defined]
    assert not missing, "\n".join(missing)


def test_every_section_has_rows():
    sections = {s for s, _ in _rows()}
    headings = {l[3:].strip() for l in TABLE.read_text().splitlines() if l.startswith("## ")}
    assert headings <= sections, f"sections without rows: {sorted(headings - sections)}"
