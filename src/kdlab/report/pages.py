"""Result tables of the docs' paper pages, rendered from ``results/<experiment>/<scale>/results.json``,
and the check that every number on a page equals its results file.

A paper page (``docs/papers/<paper>.md``) types no result by hand: it holds a marker
``<!-- kdlab:results <experiment> -->`` that :func:`render_page` (called by the docs build's hook,
``docs/hooks.py``) replaces with one block per committed scale, each made by :func:`render_results`
and fenced by ``<!-- kdlab:results-begin <experiment> <scale> -->`` / ``<!-- kdlab:results-end -->``.
:func:`check_page_numbers` reads such a page back and lists every number that differs from its
results file, every number of the file missing from the page, and result-like numbers typed outside
the blocks (a table row with a digit, ``±``, ``p = ...``).

The layout of ``results.json`` that this module reads (other keys are ignored)::

    {"experiment": "jacobian-table1", "scale": "small", "title": "...",      # all optional
     "metrics": ["test_acc_best", ...],         # optional: column order (default: as the rows give them)
     "rows": [{"label": "CE", "seeds": [0, 1, 2],                            # seeds optional
               "values": {"test_acc_best": [43.1, 44.0, 43.5]},              # per metric, one value per seed
               "mean": {"test_acc_best": 43.53}, "std": {"test_acc_best": 0.45}}],
     "comparisons": [{"a": "CE + Jacobians", "b": "CE", "metric": "test_acc_best", "diff": 1.2,
                      "ci_low": 0.1, "ci_high": 2.3, "p": 0.03, "p_holm": 0.06,
                      "verdict": "holds" | "does not hold" | "undecided", "primary": true,
                      "claim": "..."}]}                                      # claim optional

``std`` is the sample standard deviation (ddof=1, as :mod:`kdlab.report.tables`); a value of a seed
that did not finish is ``null``. The compare report's spellings are read too (:func:`normalise`).
"""
from __future__ import annotations

import json
import math
import re
import statistics
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from kdlab.report.tables import MISSING, markdown_table

__all__ = ["VERDICTS", "render_results", "render_page", "check_page_numbers", "check_results", "load_results",
           "fmt_number", "results_for", "scale_files", "normalise", "MARKER", "NOISE_METRIC", "noise_sigma", "metric_value"]

VERDICTS = ("holds", "does not hold", "undecided")
#: the marker a page holds where an experiment's results go
MARKER = re.compile(r"<!--\s*kdlab:results\s+([A-Za-z0-9_.-]+)\s*-->")
_BLOCK = re.compile(r"<!-- kdlab:results-begin (\S+) (\S+) -->\n(.*?)<!-- kdlab:results-end -->", re.S)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.I)
_COMPARISON_HEAD = ["Claim", "A", "B", "Metric", "Diff. A - B", "95% CI low", "95% CI high", "p", "p (Holm)",
                    "Verdict", "Kind"]
_VALUES_HEAD = ["Row", "Metric", "Seeds", "Values (seed order)"]


#: ``noise_acc@0.2``: a classifier's accuracy under input noise of std 0.2 (its summary.json's noise_acc)
NOISE_METRIC = "noise_acc@"


def noise_sigma(metric: str) -> Optional[float]:
    """The sigma of a ``noise_acc@SIGMA`` metric (``"noise_acc@0.2"`` -> 0.2); None for any other name
    or a SIGMA that is not a number."""
    if not metric.startswith(NOISE_METRIC):
        return None
    try:
        return float(metric[len(NOISE_METRIC):])
    except ValueError:
        return None


def metric_value(record: Mapping[str, Any], metric: str) -> Any:
    """A run record's (or a row's) value of ``metric``, None if it has none: a key of the record, one of its
    callbacks' metrics (``analysis``), or for ``noise_acc@SIGMA`` its ``noise_acc`` entry of that sigma (keys
    as ``str(float)``, as results.json). A row of a compare report holds ``{mean, std, n}`` there instead."""
    sigma = noise_sigma(metric)
    if sigma is None:
        return record[metric] if metric in record else (record.get("analysis") or {}).get(metric)
    return {float(k): v for k, v in (record.get("noise_acc") or {}).items()}.get(sigma)


def _mean_head(metrics: Sequence[str]) -> List[str]:
    return ["Row"] + [f"{m} (mean ± std)" for m in metrics]


def fmt_number(v: Any) -> str:
    """A result as text: 4 significant digits (``88.55``, ``0.02345``), scientific below 1e-3 or from
    1e5 on (``1.234e-05``); None/NaN/inf -> :data:`kdlab.report.tables.MISSING`."""
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return MISSING
    if v == 0:
        return "0"
    return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"


def _metrics(results: Mapping[str, Any]) -> List[str]:
    if results.get("metrics"):
        return [str(m) for m in results["metrics"]]
    seen: List[str] = []
    for row in results.get("rows", []):
        for m in list(row.get("mean", {})) + list(row.get("values", {})):
            if m not in seen:
                seen.append(m)
    return seen


def normalise(results: Mapping[str, Any]) -> Dict[str, Any]:
    """``results`` in the layout of the module docstring; also accepts the compare report's spellings: a
    row's per-seed ``runs`` records and per-metric ``{mean, std}`` (metrics: those the comparisons name),
    and a comparison's ``label_a``/``label_b``, ``ci: [low, high]``, ``kind: primary|secondary|post hoc``
    and ``label`` (its claim). Idempotent; the input is not changed."""
    out = dict(results)
    comps = []
    for c in results.get("comparisons", []):
        c = dict(c)
        c["a"], c["b"] = c.get("label_a", c.get("a")), c.get("label_b", c.get("b"))
        ci = c.get("ci")
        if "ci_low" not in c and isinstance(ci, (list, tuple)) and len(ci) == 2:
            c["ci_low"], c["ci_high"] = ci
        c.setdefault("primary", c.get("kind") == "primary")
        c.setdefault("claim", c.get("label", ""))
        comps.append(c)
    out["comparisons"] = comps
    if not results.get("metrics") and not any("mean" in r or "values" in r for r in results.get("rows", [])):
        out["metrics"] = list(dict.fromkeys(str(c.get("metric")) for c in comps))
    rows = []
    for r in results.get("rows", []):
        r = dict(r)
        if "values" not in r and "runs" in r:
            ok = [run for run in r["runs"] if run.get("status") != "failed"]
            r["values"] = {m: [metric_value(run, m) for run in ok] for m in _metrics(out)}
            r.setdefault("seeds", [run.get("seed") for run in ok])
        if "mean" not in r:
            stats = {m: metric_value(r, m) for m in _metrics(out)}
            r["mean"] = {m: v.get("mean") for m, v in stats.items() if isinstance(v, Mapping)}
            r["std"] = {m: v.get("std") for m, v in stats.items() if isinstance(v, Mapping)}
        rows.append(r)
    out["rows"] = rows
    return out


def _cell(text: Any) -> str:
    return str(text).replace("\n", " ")  # markdown_table escapes pipes


def render_results(results: Mapping[str, Any]) -> str:
    """Markdown tables of one ``results.json`` (layout: module docstring): per row the mean ± std of
    every metric, the per-seed values, and the comparisons with their difference, 95% interval, p,
    Holm-adjusted p, verdict and whether the spec declared them primary (none is in bold).

    Returns:
        Markdown text; every number of ``results`` appears in it, formatted by :func:`fmt_number`.
    """
    results = normalise(results)
    metrics, rows = _metrics(results), results.get("rows", [])
    out: List[str] = []
    if results.get("title"):
        out += [f"*{_cell(results['title'])}*", ""]
    head, body = _mean_head(metrics), []
    for row in rows:
        mean, std = row.get("mean", {}), row.get("std", {})
        body.append([_cell(row.get("label", MISSING))] + [f"{fmt_number(mean.get(m))} ± {fmt_number(std.get(m))}"
                                                          for m in metrics])
    out += [markdown_table(head, body), ""]
    seeds_rows = []
    for row in rows:
        seeds = row.get("seeds")
        for m in metrics:
            vals = row.get("values", {}).get(m)
            if vals is not None:
                seeds_rows.append([_cell(row.get("label", MISSING)), m, ", ".join(str(s) for s in seeds) if seeds else "",
                                   ", ".join(fmt_number(v) for v in vals)])
    if seeds_rows:
        out += ["Per-seed values:", "", markdown_table(_VALUES_HEAD, seeds_rows), ""]
    comps = results.get("comparisons", [])
    if comps:
        body = [[_cell(c.get("claim", "")), _cell(c.get("a", MISSING)), _cell(c.get("b", MISSING)), _cell(c.get("metric", MISSING)),
                 *(fmt_number(c.get(k)) for k in ("diff", "ci_low", "ci_high", "p", "p_holm")),
                 _cell(c.get("verdict", MISSING)), "primary" if c.get("primary") else "secondary"] for c in comps]
        out += ["Comparisons (p (Holm): adjusted over the primary comparisons; secondary ones are not claims):", "",
                markdown_table(_COMPARISON_HEAD, body), ""]
    return "\n".join(out)


def load_results(path: Path) -> Dict[str, Any]:
    """A ``results.json`` as a dict.

    Raises:
        ValueError: the file is not JSON or not an object with a ``rows`` list (names the file).
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"results file {str(path)!r} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"results file {str(path)!r}: accepted: a JSON object with a 'rows' list")
    return data


def scale_files(root: Path, experiment: str) -> List[Path]:
    """``<root>/<experiment>/<scale>/results.json`` of every committed scale, ``small`` first, then by name."""
    files = sorted((Path(root) / experiment).glob("*/results.json"))
    return sorted(files, key=lambda f: (f.parent.name != "small", f.parent.name))


def render_page(markdown: str, results_root: Path) -> str:
    """Replace every ``<!-- kdlab:results <experiment> -->`` marker of a page with one fenced block per
    ``<results_root>/<experiment>/<scale>/results.json`` (``small`` first), or with the command that
    makes them when none is committed.

    Raises:
        ValueError: a results file that is not JSON or has no ``rows`` list (:func:`load_results`).
    """

    def block(match: "re.Match[str]") -> str:
        exp = match.group(1)
        files = scale_files(results_root, exp)
        if not files:
            return (f"*No committed results yet: run `kdlab reproduce {exp} --scale small --out results/`.*")
        parts = []
        for f in files:
            scale = f.parent.name
            parts.append(f"<!-- kdlab:results-begin {exp} {scale} -->\n**Scale `{scale}`** "
                         f"(`results/{exp}/{scale}/results.json`)\n\n{render_results(load_results(f))}\n"
                         f"<!-- kdlab:results-end -->")
        return "\n\n".join(parts)

    return MARKER.sub(block, markdown)


def _close(shown: str, value: Any) -> bool:
    """Whether the text ``shown`` is ``value`` rounded as :func:`fmt_number` shows it."""
    if shown == MISSING:
        return value is None or (isinstance(value, float) and not math.isfinite(value))
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        exp = Decimal(shown).as_tuple().exponent
    except InvalidOperation:
        return False
    return abs(float(shown) - value) <= 0.5 * 10.0 ** int(exp) * (1 + 1e-9) + 1e-12 * abs(value)


def _tables(text: str) -> List[Tuple[List[str], List[List[str]]]]:
    """The Markdown tables of ``text``: ``(header cells, body rows)`` each."""
    tables: List[Tuple[List[str], List[List[str]]]] = []
    prev = False
    for line in text.splitlines():
        is_row = line.startswith("|")
        if is_row and not re.match(r"^\|[\s:|-]+\|$", line):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not prev:
                tables.append((cells, []))
            else:
                tables[-1][1].append(cells)
        prev = is_row
    return tables


def check_results(results: Mapping[str, Any], where: str = "results.json") -> List[str]:
    """Numbers missing from or inconsistent within one ``results.json``: every row needs every metric's
    values, mean and std (std null only with fewer than 2 values), the mean and std must be those of the
    values, and every comparison needs diff, ci_low, ci_high, p, a verdict of :data:`VERDICTS`, and p_holm
    when primary."""
    results, bad = normalise(results), []
    for row in results.get("rows", []):
        label = row.get("label")
        for m in _metrics(results):
            vals = [v for v in (row.get("values", {}).get(m) or []) if isinstance(v, (int, float)) and math.isfinite(v)]
            mean, std = row.get("mean", {}).get(m), row.get("std", {}).get(m)
            if not vals or mean is None or (std is None and len(vals) > 1):
                bad.append(f"{where}: row {label!r}, metric {m!r}: values, mean or std missing")
                continue
            if not math.isclose(mean, statistics.mean(vals), rel_tol=1e-9, abs_tol=1e-12):
                bad.append(f"{where}: row {label!r}, metric {m!r}: mean {mean!r} is not the mean of its values {vals!r}")
            if len(vals) > 1 and not math.isclose(std, statistics.stdev(vals), rel_tol=1e-9, abs_tol=1e-12):
                bad.append(f"{where}: row {label!r}, metric {m!r}: std {std!r} is not the sample std of its values")
    for i, c in enumerate(results.get("comparisons", [])):
        need = ["diff", "ci_low", "ci_high", "p"] + (["p_holm"] if c.get("primary") else [])
        missing = [k for k in need if not isinstance(c.get(k), (int, float))]
        if missing:
            bad.append(f"{where}: comparison {i} ({c.get('a')!r} vs {c.get('b')!r}): missing {', '.join(missing)}")
        if c.get("verdict") not in VERDICTS:
            bad.append(f"{where}: comparison {i}: verdict {c.get('verdict')!r}; accepted: {', '.join(VERDICTS)}")
    return bad


def _check_block(block: str, results: Mapping[str, Any], where: str) -> List[str]:
    bad: List[str] = []
    results = normalise(results)
    metrics, rows = _metrics(results), {str(r.get("label")): r for r in results.get("rows", [])}
    seen_mean, seen_vals, seen_comp = set(), set(), 0
    comps = list(results.get("comparisons", []))
    for head, body in _tables(block):
        for cells in body:
            if head == _COMPARISON_HEAD:
                if seen_comp >= len(comps):
                    bad.append(f"{where}: comparison row {cells!r} is not in the results file")
                    continue
                c = comps[seen_comp]
                seen_comp += 1
                for key, shown in zip(("diff", "ci_low", "ci_high", "p", "p_holm"), cells[4:9]):
                    if not _close(shown, c.get(key)):
                        bad.append(f"{where}: comparison {c.get('a')!r} vs {c.get('b')!r}: {key} shown {shown}, "
                                   f"results file {c.get(key)!r}")
                if cells[9:10] != [str(c.get("verdict"))]:
                    bad.append(f"{where}: comparison {c.get('a')!r} vs {c.get('b')!r}: verdict shown {cells[9:10]!r}, "
                               f"results file {c.get('verdict')!r}")
            elif head == _VALUES_HEAD:
                row = rows.get(cells[0])
                vals = (row or {}).get("values", {}).get(cells[1])
                shown = [s.strip() for s in cells[3].split(",")] if cells[3] else []
                seen_vals.add((cells[0], cells[1]))
                if vals is None or len(vals) != len(shown) or not all(_close(s, v) for s, v in zip(shown, vals)):
                    bad.append(f"{where}: row {cells[0]!r}, metric {cells[1]!r}: values shown {cells[3]!r}, "
                               f"results file {vals!r}")
            elif head == _mean_head(metrics):
                row = rows.get(cells[0])
                seen_mean.add(cells[0])
                for m, cell in zip(metrics, cells[1:]):
                    shown = [s.strip() for s in cell.split("±")]
                    want = [(row or {}).get(k, {}).get(m) for k in ("mean", "std")]
                    if row is None or len(shown) != 2 or not all(_close(s, w) for s, w in zip(shown, want)):
                        bad.append(f"{where}: row {cells[0]!r}, metric {m!r}: shown {cell!r}, results file mean/std {want!r}")
            else:
                bad.append(f"{where}: a table whose columns match no results table: {head!r}")
                break
    for label, row in rows.items():
        if label not in seen_mean:
            bad.append(f"{where}: row {label!r} of the results file is not on the page")
        for m in row.get("values", {}):
            if m in metrics and (label, m) not in seen_vals:
                bad.append(f"{where}: the values of row {label!r}, metric {m!r} are not on the page")
    if seen_comp < len(comps):
        bad.append(f"{where}: {len(comps) - seen_comp} comparison(s) of the results file are not on the page")
    return bad


def _hand_typed(text: str) -> List[str]:
    """Result-like numbers outside the rendered blocks: a table row holding a digit, ``±``, ``p = 0.x``."""
    bad = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("<!--"):
            continue
        if (line.lstrip().startswith("|") and _NUMBER.search(line)) or "±" in line or re.search(r"\bp\s*[=<>]\s*\d", line):
            bad.append(f"line {i} outside the rendered results holds a number typed by hand: {line.strip()[:100]!r}")
    return bad


def check_page_numbers(page_md: str, results: Mapping[str, Any]) -> List[str]:
    """Every mismatch between a rendered paper page and its results files.

    Args:
        page_md: the page as :func:`render_page` makes it (its blocks may have been edited since).
        results: ``{"<experiment>/<scale>": results dict}``, or one results dict (it then applies to
            every block of the page).

    Returns:
        One line per mismatch (empty when the page is faithful): a number shown that differs from the
        file, a number of the file missing from the page, a block with no results file, a result-like
        number typed outside the blocks, and the inconsistencies :func:`check_results` finds.
    """
    single = "rows" in results
    bad: List[str] = []
    for exp, scale, body in _BLOCK.findall(page_md):
        key = f"{exp}/{scale}"
        res = results if single else results.get(key)
        if res is None:
            bad.append(f"{key}: the page shows results but no results file was given for it")
            continue
        bad += check_results(res, key) + _check_block(body, res, key)
    return bad + _hand_typed(_BLOCK.sub("", page_md))


def results_for(root: Path, markdown: str) -> Dict[str, Dict[str, Any]]:
    """``{"<experiment>/<scale>": results}`` for every experiment a page's markers name.

    Raises:
        ValueError: as :func:`load_results`.
    """
    out: Dict[str, Dict[str, Any]] = {}
    for exp in MARKER.findall(markdown):
        for f in scale_files(root, exp):
            out[f"{exp}/{f.parent.name}"] = load_results(f)
    return out

