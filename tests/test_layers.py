"""The layers of DESIGN.md, read from the source's import statements (``ast``, independent of import order):
methods never import each other, and the layer of shared game parts (``kdlab.games``) and the layers below it
never import a layer above them at module level."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import List, Tuple

SRC = Path(__file__).resolve().parents[1] / "src" / "kdlab"
#: packages above ``kdlab.games`` (what it and the layers below must not import at module level)
ABOVE_GAMES = ("kdlab.methods", "kdlab.runner", "kdlab.compare", "kdlab.experiments", "kdlab.cli", "kdlab.api",
               "kdlab.commands")
#: the layers below the games (engine, terms, losses, models, data, metrics)
BELOW = ("terms", "engine", "losses", "models", "data", "metrics")


def _imports(path: Path, top_level_only: bool) -> List[Tuple[int, str]]:
    """(line, module) of every import in ``path`` (``top_level_only``: not those inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # module level includes imports under `if` / `try` at the top
        nodes = [n for top in tree.body if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 for n in ast.walk(top)]
    out = []
    for n in nodes:
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            out += [(n.lineno, n.module)] + [(n.lineno, f"{n.module}.{a.name}") for a in n.names]
        elif isinstance(n, ast.Import):
            out += [(n.lineno, a.name) for a in n.names]
    return out


def test_no_method_imports_another_method():
    methods = SRC / "methods"
    names = {p.stem for p in methods.glob("*.py") if p.stem != "__init__"}
    bad = [f"methods/{p.name}:{line} imports {mod}" for p in sorted(methods.glob("*.py")) if p.stem != "__init__"
           for line, mod in _imports(p, top_level_only=False)
           if mod.startswith("kdlab.methods") and mod.split(".")[2:3] and mod.split(".")[2] in names - {p.stem}]
    assert not bad, bad


def test_every_module_of_methods_registers_a_method():
    # a shared base in methods/ would invite methods to import each other: it belongs in kdlab.games
    unregistered = [p.name for p in sorted((SRC / "methods").glob("*.py"))
                    if p.stem != "__init__" and "@METHODS.register(" not in p.read_text(encoding="utf-8")]
    assert not unregistered, f"not methods, move them to kdlab/games/: {unregistered}"


def test_games_and_the_layers_below_import_nothing_above_them_at_module_level():
    files = sorted((SRC / "games").glob("*.py")) + [p for d in BELOW for p in sorted((SRC / d).rglob("*.py"))]
    bad = [f"{p.relative_to(SRC)}:{line} imports {mod}" for p in files for line, mod in _imports(p, True)
           if any(mod == a or mod.startswith(a + ".") for a in ABOVE_GAMES)]
    assert not bad, bad
    below = [f"{p.relative_to(SRC)}:{line} imports {mod}" for d in BELOW for p in sorted((SRC / d).rglob("*.py"))
             for line, mod in _imports(p, True) if mod == "kdlab.games" or mod.startswith("kdlab.games.")]
    assert not below, below


def test_the_checks_see_a_violation(tmp_path):
    # the detector itself: a method file importing another method, written to a temporary file
    f = tmp_path / "m.py"
    f.write_text("from kdlab.methods.distill import Distill\n\ndef g():\n    from kdlab.compare import x\n")
    assert (1, "kdlab.methods.distill") in _imports(f, True)
    assert all(mod != "kdlab.compare" for _, mod in _imports(f, True))
    assert (4, "kdlab.compare") in _imports(f, False)
