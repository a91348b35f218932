"""The README quickstart and the docs site: size, links, the generated config reference, the paper pages'
result tables (rendered from ``results/<experiment>/<scale>/results.json``) and the strict site build."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.I)


def _pages():
    return [ROOT / "README.md"] + sorted(DOCS.rglob("*.md"))


def test_readme_is_a_quickstart_under_12_kb() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size < 12 * 1024, f"README.md is {size} bytes"
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text  # .ci/run runs the README's test command


def test_every_relative_link_points_at_a_file() -> None:
    broken = []
    for page in _pages():
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_every_docs_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if str(p.relative_to(DOCS)) not in nav]
    assert not missing, missing


def _rows(text: str, key: str) -> list:
    return [line for line in text.splitlines() if line.startswith(f"| {key} |")]


def test_config_reference_lists_every_key_with_its_default_and_choices() -> None:
    from kdlab.config import DataConfig, TrainerConfig
    from kdlab.reference import config_reference
    from kdlab.terms import TERMS

    text = config_reference()
    for schema, section in ((TrainerConfig, "trainer"), (DataConfig, "data")):
        for f in dataclasses.fields(schema):
            rows = _rows(text, f"{section}.{f.name}")
            assert len(rows) == 1, f"{section}.{f.name}: {rows}"
            for c in f.metadata.get("choices", ()):
                shown = "null" if c is None else str(c)
                assert re.search(rf"one of: .*\b{re.escape(shown)}\b", rows[0]), (f.name, c, rows[0])
            if f.default is not dataclasses.MISSING:
                d = f.default  # YAML spelling; `is`, since 1 == True
                want = "null" if d is None else "true" if d is True else "false" if d is False else str(d)
                assert f"`{want}`" in rows[0], (f.name, want, rows[0])
    assert "| trainer.epochs | `int` | `10` | > 0 and <= 100000 |" in text  # bounded(10, gt=0, le=100000)
    kd = TERMS.get("kd").Config
    for f in dataclasses.fields(kd):
        assert len(_rows(text, f"objective.<player>.kd.{f.name}")) == 1, f.name
    # the comment beside a field is its help, also where it continues on the comment line below
    assert "resize transfer images to S x S" in _rows(text, "data.transfer_size")[0]
    assert any("collapses without the ce anchor" in r for r in _rows(text, "players.teacher_lr"))


def _sample() -> dict:
    values = {"CE": [43.12, 44.01, 43.57], "CE + Jacobians": [45.23, 46.11, 47.96]}
    fid = {"CE": [101.5, 99.25, 104.75], "CE + Jacobians": [0.0123, 0.0456, 0.0789]}
    rows = [{"label": k, "seeds": [0, 1, 2], "values": {"acc": v, "fid": fid[k]},
             "mean": {"acc": statistics.mean(v), "fid": statistics.mean(fid[k])},
             "std": {"acc": statistics.stdev(v), "fid": statistics.stdev(fid[k])}} for k, v in values.items()]
    comps = [{"a": "CE + Jacobians", "b": "CE", "metric": "acc", "diff": 2.8667, "ci_low": -0.4521, "ci_high": 6.1854,
              "p": 0.0312, "p_holm": 0.0624, "verdict": "undecided", "primary": True, "claim": "Jacobians help"},
             {"a": "CE + Jacobians", "b": "CE", "metric": "fid", "diff": -101.8, "ci_low": -108.3, "ci_high": -95.27,
              "p": 1.234e-05, "p_holm": None, "verdict": "holds", "primary": False}]
    return {"experiment": "toy", "scale": "small", "rows": rows, "comparisons": comps}


def _numbers(results: dict) -> list:
    out = []
    for r in results["rows"]:
        for m in r["values"]:
            out += r["values"][m] + [r["mean"][m], r["std"][m]]
    for c in results["comparisons"]:
        out += [c[k] for k in ("diff", "ci_low", "ci_high", "p", "p_holm") if c[k] is not None]
    return out


def _page(tmp_path: Path, results: dict) -> str:
    from kdlab.report.pages import render_page

    (tmp_path / "toy" / "small").mkdir(parents=True, exist_ok=True)
    (tmp_path / "toy" / "small" / "results.json").write_text(json.dumps(results))
    return render_page("# Toy\n\nWhat it tests.\n\n<!-- kdlab:results toy -->\n", tmp_path)


def test_the_rendered_page_shows_every_number_of_the_results_file(tmp_path: Path) -> None:
    results = _sample()
    page = _page(tmp_path, results)
    shown = [float(x) for x in NUMBER.findall(page)]
    for v in _numbers(results):  # to the shown precision: 4 significant digits
        assert any(math.isclose(s, v, rel_tol=5e-4, abs_tol=0) for s in shown), v
    assert "undecided" in page and "holds" in page and "primary" in page and "secondary" in page
    assert "**" not in page.split("(`results/toy/small/results.json`)")[1]  # no comparison in bold


def test_an_edited_number_on_the_page_is_detected(tmp_path: Path) -> None:
    from kdlab.report.pages import check_page_numbers

    results = _sample()
    page = _page(tmp_path, results)
    assert check_page_numbers(page, {"toy/small": results}) == []
    for old, new in (("43.57", "43.75"), ("46.43", "46.53"), ("0.0624", "0.0264"), ("1.234e-05", "1.234e-04"),
                     ("undecided |", "holds |")):
        assert old in page, old
        edited = page.replace(old, new, 1)
        bad = check_page_numbers(edited, {"toy/small": results})
        assert bad, f"editing {old} -> {new} went unnoticed"
    # a table typed by hand outside the rendered block
    bad = check_page_numbers(page + "\n| row | 88.5 |\n|---|---|\n", {"toy/small": results})
    assert any("by hand" in b for b in bad)


def test_a_number_deleted_from_the_results_file_is_detected(tmp_path: Path) -> None:
    from kdlab.report.pages import check_page_numbers, check_results

    results = _sample()
    page = _page(tmp_path, results)
    for edit in (lambda r: r["rows"][0]["values"]["acc"].pop(),      # one seed's value
                 lambda r: r["rows"][1]["mean"].pop("fid"),           # a mean
                 lambda r: r["comparisons"][0].pop("p_holm"),         # a primary comparison's adjusted p
                 lambda r: r["rows"].pop()):                          # a whole row
        cut = copy.deepcopy(results)
        edit(cut)
        assert check_page_numbers(page, {"toy/small": cut}), "a deletion went unnoticed"
    cut = copy.deepcopy(results)
    cut["rows"][0]["values"]["acc"].pop()
    assert any("not the mean" in b for b in check_results(cut))  # even with the page rendered afresh


def test_a_page_without_committed_results_says_how_to_make_them(tmp_path: Path) -> None:
    from kdlab.report.pages import render_page

    page = render_page("<!-- kdlab:results jacobian-table1 -->", tmp_path)
    assert "No committed results yet" in page
    assert "kdlab reproduce jacobian-table1 --scale small --out results/" in page


def test_every_paper_page_equals_its_committed_results() -> None:
    """Vacuous for the tables until ``results/`` holds results files: then every number of every paper
    page is checked against them. The check for numbers typed by hand on a paper page applies now."""
    from kdlab.report.pages import check_page_numbers, render_page, results_for

    pages = sorted((DOCS / "papers").glob("*.md"))
    assert pages
    for page in pages:
        source = page.read_text()
        bad = check_page_numbers(render_page(source, ROOT / "results"), results_for(ROOT / "results", source))
        assert not bad, f"{page.name}: {bad}"


def test_every_experiment_has_a_paper_page() -> None:
    from kdlab.experiments import EXPERIMENTS
    from kdlab.report.pages import MARKER

    shown = {m for p in (DOCS / "papers").glob("*.md") for m in MARKER.findall(p.read_text())}
    assert set(EXPERIMENTS.names()) <= shown, sorted(set(EXPERIMENTS.names()) - shown)
    assert shown <= set(EXPERIMENTS.names()), sorted(shown - set(EXPERIMENTS.names()))


@pytest.mark.slow
def test_mkdocs_build_is_strict_and_clean(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (the docs extra)")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (the docs extra)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING" not in out.stderr, out.stderr
    page = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    assert "trainer.teacher_cache_memory_mb" in page
    overview = (tmp_path / "site" / "results" / "index.html").read_text()
    assert "Primary claims" in overview and "kdlab:results-overview" not in overview


def test_the_compare_reports_spelling_renders_and_checks_too(tmp_path: Path) -> None:
    """Rows with per-seed ``runs`` and per-metric ``{mean, std}``, comparisons with ``label_a``, ``ci``, ``kind``."""
    from kdlab.report.pages import check_page_numbers

    acc = {"ce": [80.1, 81.3, 79.9], "kd": [82.4, 83.0, 82.2]}
    rows = [{"label": k.upper(), "slug": k, "runs": [{"seed": s, "status": "ok", "test_acc_best": v}
                                                     for s, v in enumerate(vals)],
             "test_acc_best": {"mean": statistics.mean(vals), "std": statistics.stdev(vals), "n": 3}}
            for k, vals in acc.items()]
    comps = [{"label": "KD beats CE", "a": "kd", "b": "ce", "label_a": "KD", "label_b": "CE", "metric": "test_acc_best",
              "kind": "primary", "diff": 1.7667, "ci": [0.6134, 2.92], "p": 0.0213, "p_holm": 0.0213, "verdict": "holds"}]
    results = {"rows": rows, "comparisons": comps}
    page = _page(tmp_path, results)
    assert "KD beats CE" in page and "0.6134" in page and "2.92" in page and "81.3" in page
    assert check_page_numbers(page, {"toy/small": results}) == []
    assert check_page_numbers(page.replace("0.6134", "0.6143"), {"toy/small": results})


def test_committed_results_stay_under_20_mb() -> None:
    """results/ is committed: every experiment's small-scale report, results.json, plots, configs and logs
    together stay under 20 MB (issue budget), so the repository stays light to clone."""
    files = [p for p in (ROOT / "results").rglob("*") if p.is_file()] if (ROOT / "results").is_dir() else []
    total = sum(p.stat().st_size for p in files)
    assert total < 20 * 2 ** 20, f"results/ holds {total / 2 ** 20:.1f} MB in {len(files)} files"


def _overview_results(runs, reused=0, wall=None, verdicts=()):
    """A results.json in the compare report's layout: ``runs`` = [(row, seed, status)], primary comparisons
    with the given verdicts and one secondary one (which the overview must not count)."""
    rows = {}
    for row, seed, status in runs:
        rows.setdefault(row, []).append({"seed": seed, "status": status, "test_acc_best": 50.0})
    comps = [{"kind": "primary", "verdict": v, "label": f"claim {i}"} for i, v in enumerate(verdicts)]
    comps.append({"kind": "secondary", "verdict": "holds", "label": "a secondary one"})
    return {"rows": [{"label": r, "runs": v} for r, v in rows.items()], "comparisons": comps, "reused": reused,
            **({} if wall is None else {"wall_time_s": wall})}


def test_the_overview_counts_runs_seeds_verdicts_and_wall_time(tmp_path: Path) -> None:
    from kdlab.report.overview import render_overview

    files = {
        "exp-a/small": _overview_results([("ce", 0, "ok"), ("ce", 1, "ok"), ("ce", 2, "ok"), ("kd", 0, "ok"),
                                          ("kd", 1, "failed"), ("kd", 2, "ok")], reused=2, wall=1800.0,
                                         verdicts=("holds", "undecided", "undecided")),
        "exp-a/full": {**_overview_results([("ce", 0, "ok"), ("kd", 0, "ok")], wall=4800.0, verdicts=("does not hold",)),
                       "earlier_wall_time_s": 2400.0, "earlier_invocations": 1},  # 80 + 40 min
        "exp-b/small": _overview_results([("x", s, "ok") for s in range(10)], wall=5400.0,
                                         verdicts=("does not hold", "holds")),
    }
    for key, res in files.items():
        (tmp_path / key).mkdir(parents=True)
        (tmp_path / key / "results.json").write_text(json.dumps(res))
    text = render_overview(tmp_path, {"exp-a": "A", "exp-b": "B", "exp-c": "C"}, {"exp-a": "papers/a.md"})
    table = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
             if line.startswith("| `")]
    # experiment, scale, page, runs, failed, seeds, reused, minutes, primary, holds, does not hold, undecided
    assert table == [
        ["`exp-a`", "small", "[a](papers/a.md)", "6", "1", "3", "2", "30", "3", "1", "0", "2"],
        ["`exp-a`", "full", "[a](papers/a.md)", "2", "0", "1", "0", "120", "1", "0", "1", "0"],
        ["`exp-b`", "small", "—", "10", "0", "10", "0", "90", "2", "1", "1", "0"],
    ]
    assert ("**Scale `small`**: 2 of 3 experiments, 16 runs, 2.0 h of wall time in all; primary claims: 2 hold, "
            "1 do not hold, 2 undecided.") in text
    assert "**Scale `full`**: 1 of 3 experiments, 2 runs, 2.0 h" in text
    assert "**Not yet committed**: `exp-c` (`kdlab reproduce exp-c --scale small --out results/`)." in text


def test_the_overview_of_the_committed_results_matches_their_files() -> None:
    """Each committed results.json, counted here with plain json, is one line of the docs' overview."""
    sys.path.insert(0, str(DOCS))
    try:
        import hooks
    finally:
        sys.path.remove(str(DOCS))
    text = hooks.results_overview()
    for f in sorted((ROOT / "results").glob("*/*/results.json")):
        res = json.loads(f.read_text())
        runs = [run for row in res["rows"] for run in row["runs"]]
        primary = [c["verdict"] for c in res["comparisons"] if c["kind"] == "primary"]
        cells = [str(len(runs)), str(sum(r["status"] == "failed" for r in runs)), str(len({r["seed"] for r in runs})),
                 str(res.get("reused", 0)), f"{(res['wall_time_s'] + res.get('earlier_wall_time_s', 0)) / 60:.0f}",
                 str(len(primary)),
                 *(str(primary.count(v)) for v in ("holds", "does not hold", "undecided"))]
        line = f"| `{f.parent.parent.name}` | {f.parent.name} |"
        assert any(ln.startswith(line) and ln.endswith(" | ".join(cells) + " |") for ln in text.splitlines()), (f, cells)
