"""``report.md`` of a comparison, rendered from its ``results.json`` alone (:func:`render_report`), so a
docs page can render the same tables from a committed results.json.

Sections: primary comparisons (the spec's declared claims: mean paired difference, 95% t interval,
paired t-test p, Holm-adjusted p over the primary comparisons, verdict), secondary and post-hoc
comparisons (labelled, unadjusted, never bold), accuracy, analyses (the metrics the rows' callbacks wrote,
:mod:`kdlab.compare.analyses`, and their trace plots), training budget and convergence (seeds,
student updates, wall time, MACs, last-quarter loss decrease), robustness, cost, curves, runs,
configs. The formulas are in ``docs/statistics.md``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from kdlab.compare.generators import generator_runs_table, generator_sections, stat_text as _ms
from kdlab.compare.translations import translation_runs_table, translation_sections
from kdlab.report import diff_text, format_count, markdown_table, ordering_text
from kdlab.report.stats import ALPHA, CONFIDENCE
from kdlab.report.tables import MISSING

__all__ = ["render_report", "comparison_rows"]


def _fmt(v: Any, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else MISSING


def _earlier(results: Dict[str, Any]) -> str:
    """The header's note on earlier, interrupted invocations whose finished runs this one reused."""
    n, secs = results.get("earlier_invocations") or 0, results.get("earlier_wall_time_s") or 0.0
    return (f", plus {secs:.1f} s in {n} earlier interrupted invocation{'s' if n > 1 else ''} "
            f"({(results.get('wall_time_s') or 0.0) + secs:.1f} s in all)") if n else ""


def _p(p: Optional[float]) -> str:
    return MISSING if p is None else f"{p:.3g}"


def _status(entry: Dict[str, Any]) -> str:
    n = len(entry["runs"])
    if not entry["failed"]:
        return f"{n}/{n} ok"
    seeds = ", ".join(f"s{r['seed']}" for r in entry["failed"])
    return f"{entry['n_ok']}/{n} ok; failed ({seeds}): {entry['failed'][0]['error']}"


def comparison_rows(comparisons: List[Dict[str, Any]], kind: str) -> List[List[str]]:
    """The table rows of the comparisons of one kind (``primary`` / ``secondary`` / ``post hoc``): claim,
    paper, rows, metric, seeds, mean difference a - b, 95% CI, p, Holm p (primary only), verdict. Only a
    primary verdict that is decided is bold."""
    out = []
    for c in comparisons:
        if c["kind"] != kind:
            continue
        sign = ">" if c["direction"] == "greater" else "<"
        ci = MISSING if c["ci"] is None else f"[{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]"
        said = c["verdict"]
        if kind == "primary" and said != "undecided":
            said = f"**{said}**"
        row = [c["label"], c["paper"] or MISSING, f"{c['label_a']} {sign} {c['label_b']}", c["metric"],
               str(c["n"]), MISSING if c["diff"] is None else f"{c['diff']:+.2f}", ci, _p(c["p"])]
        out.append(row + ([_p(c["p_holm"])] if kind == "primary" else []) + [said])
    return out


_ALIGN = ["l", "l", "l", "l", "r", "r", "r", "r"]  # claim, paper, rows, metric | seeds, diff, CI, p


def _comparison_lines(results: Dict[str, Any]) -> List[str]:
    comps = results.get("comparisons") or []
    ci = f"{100 * CONFIDENCE:g}% CI"
    head = ["Claim", "Paper", "Rows (claimed)", "Metric", "Seeds", "Mean diff (a − b)", ci, "p"]
    lines: List[str] = []
    primary = comparison_rows(comps, "primary")
    few = [c for c in comps if c["kind"] == "primary" and c["n"] < 5]
    if primary:
        lines += ["## Primary comparisons", "",
                  f"Declared in the spec before the runs. Per claim: the mean of the per-seed paired differences "
                  f"a − b, its {ci} (t interval), the two-sided paired t-test p, the p Holm-adjusted over the "
                  f"{len(primary)} primary comparison(s), and the verdict at α = {ALPHA:g} on the Holm p: holds "
                  "(difference in the claimed direction), does not hold (the opposite direction), undecided.", "",
                  markdown_table(head + ["Holm p", "Verdict"], primary, align=_ALIGN + ["r", "l"]), ""]
        if few:
            lines += [f"Note: {len(few)} of the {len(primary)} primary comparison(s) rest on fewer than 5 seeds.", ""]
    for kind, text in (("secondary", "Declared in the spec as secondary"),
                       ("post hoc", "Post hoc: every row against the first row (no comparison declared)")):
        rows = comparison_rows(comps, kind)
        if rows:
            lines += [f"## {kind.capitalize()} comparisons", "",
                      f"{text}; p unadjusted, verdict on the unadjusted p at α = {ALPHA:g} (not a tested claim).", "",
                      markdown_table(head + ["Verdict (unadjusted)"], rows, align=_ALIGN + ["l"]), ""]
    if comps:
        lines += ["![paired differences with 95% intervals](plots/comparisons.png)", ""]
    return lines


def _unequal_updates(rows: List[Dict[str, Any]]) -> List[str]:
    """A line per column (or for the whole table without columns) whose rows' runs differ in student updates by
    more than 1%."""
    groups: Dict[Any, List[Dict[str, Any]]] = {}
    for e in rows:
        groups.setdefault(e.get("column"), []).append(e)
    out = []
    for col, entries in groups.items():
        steps = {r.get("steps") for e in entries for r in e["runs"] if r["status"] != "failed"} - {None}
        # within 1%: e.g. a GAN student that also steps on the first of its critic's batches (1,501 vs 1,500);
        # the budget table shows each row's updates
        if len(steps) > 1 and max(steps) - min(steps) > 0.01 * max(steps):
            where = f"column {col}" if col is not None else "this comparison"
            out.append(f"Note: the runs of {where} differ in student updates ({', '.join(map(str, sorted(steps)))}): "
                       "their comparisons are not at equal budgets.")
    return out + ([""] if out else [])


def _budget_lines(rows: List[Dict[str, Any]]) -> List[str]:
    lines: List[str] = []
    lines += ["## Training budget and convergence", "",
              "Per row (mean ± std over seeds): student updates (optimizer steps); wall time per run; MACs per image of "
              "the student's forward pass; training MACs per update ≈ 3 × MACs per image × batch size (forward + "
              "backward of the student; the teacher's forward and the terms' own modules not counted); last-quarter "
              "loss decrease: 100 (m3 − m4) / m3 of the training loss's logged values, m3 and m4 the means of their "
              "third and last quarters (near 0: the loss had flattened).", "",
              markdown_table(["Row", "Seeds", "Student updates", "Wall time / run (s)", "MACs / image",
                              "Training MACs / update", "Last-quarter loss decrease (%)"],
                             [[e["label"], str(e["n_ok"]), _ms(e["steps"], 0), _ms(e["wall_time_s"], 1),
                               format_count(e["macs"]["mean"]), format_count(e["macs_per_update"]["mean"]),
                               _ms(e["loss_last_quarter"], 1)] for e in rows],
                             align=["l", "r", "r", "r", "r", "r", "r"]), ""]
    return lines


def _config_lines(results: Dict[str, Any]) -> List[str]:
    return ["## Configs", "", "The exact resolved config of each row (its first seed; the other seeds differ only in "
            "`seed`, `data.subset_seed` and `name`):", ""] + [
        f"- {label}: [{p}]({p})" for label, p in results["configs"].items()] + [""]


def _g(stat: Dict[str, Any]) -> str:
    """``mean ± std`` with 4 significant digits (analysis metrics span many scales)."""
    if not stat or not stat.get("n") or stat.get("mean") is None:
        return MISSING
    return f"{stat['mean']:.4g}" + (f" ± {stat['std']:.2g}" if stat["std"] is not None else "")


def _analysis_lines(results: Dict[str, Any]) -> List[str]:
    """The metrics the rows' callbacks wrote (kdlab.compare.analyses), per row, and the plots of their traces."""
    rows = [e for e in results["rows"] if e.get("analysis")]
    if not rows:
        return []
    names = list(dict.fromkeys(m for e in rows for m in e["analysis"]))
    used = dict.fromkeys(f"`{c['name']}`" + (f" ({', '.join(f'{k} {v}' for k, v in c['settings'].items())})"
                                               if c["settings"] else "")
                         for cs in (results.get("callbacks") or {}).values() for c in cs)
    text = "; ".join(used)
    return ["## Analyses", "",
            f"Metrics written inside each run by its callbacks ({text}; each run's `analysis/` folder holds them with "
            "their traces), mean ± sample std over the row's finished seeds; comparisons may name them.", "",
            markdown_table(["Row", "Seeds"] + names,
                           [[e["label"], str(e["n_ok"])] + [_g(e["analysis"].get(m)) for m in names] for e in rows],
                           align=["l", "r"] + ["r"] * len(names)), ""] + \
        [line for p in results.get("analysis_plots") or [] for line in (f"![{p}]({p})", "")]


def render_report(results: Dict[str, Any]) -> str:
    """The markdown of ``report.md`` from a comparison's ``results.json`` (parsed), and nothing else.

    Raises:
        KeyError: a results.json without a key the report needs (``rows``, ``title``, ...).
    """
    rows, teacher = results["rows"], results.get("teacher_run")
    ref = rows[0]["label"]
    paper = any(e.get("paper") is not None for e in rows)
    tm = (teacher or {}).get("model") or {}
    teacher_rows = [[teacher["label"], teacher.get("method") or MISSING, "1 run", _fmt(teacher.get("test_acc_best")),
                     _fmt(teacher.get("test_acc_last")), MISSING, MISSING, MISSING]] if teacher else []
    n_runs = sum(len(e["runs"]) for e in rows)
    n_failed = sum(len(e["failed"]) for e in rows)
    scale = f" Scale `{results['scale']}`." if results.get("scale") else ""
    lines = [
        f"Teacher: {results['teacher_text']}. Seeds {results['seeds']} (seed s also draws data subset s, the same for "
        f"every row: paired comparisons). Student data: {results['data_text']}.{scale}",
        f"{n_runs} runs in {len(rows)} rows ({n_failed} failed); jobs {results.get('jobs', 1)}, CPU threads per run "
        f"{results.get('threads') or 'default'}; wall time of this comparison {results.get('wall_time_s') or 0:.1f} s "
        f"({results.get('reused', 0)} runs reused){_earlier(results)}. Environment: `environment.json`.",
        "",
        *_comparison_lines(results),
    ]
    # FID/KID/IS... instead of accuracy (kdlab.compare.generators, kdlab.compare.translations)
    sections = {"generator": (generator_sections, generator_runs_table),
                "image-to-image": (translation_sections, translation_runs_table)}.get(results.get("kind"))
    if sections is not None:
        lines += sections[0](results) + _budget_lines(rows) + _unequal_updates(rows)
        lines += ["## Runs", ""] + sections[1](rows) + _config_lines(results)
        return f"# {results['title']}\n\n" + "\n".join(lines) + "\n"
    lines += [
        "## Accuracy",
        "",
        "Test accuracy % (mean ± sample std over the row's finished seeds) of the checkpoint with the best "
        f"validation accuracy and of the last epoch; *vs {ref}*: mean paired difference in points and the "
        "two-sided paired t-test p over the seeds both rows finished (unadjusted)."
        + (" *Paper*: the paper's value for the row, on its own data and models (context, not compared)."
           if paper else ""),
        "",
        markdown_table(["Row", "Method", "Runs", "Test acc, best-val ckpt (%)", "Test acc, last epoch (%)",
                        f"vs {ref} (best)", f"vs {ref} (last)", "Kept vs teacher (%)"] + (["Paper"] if paper else []),
                       [t + [MISSING] * bool(paper) for t in teacher_rows]
                       + [[e["label"], e["method"], _status(e), _ms(e["test_acc_best"]),
                           _ms(e["test_acc_last"]),
                           MISSING if e["vs_first"]["test_acc_best"] is None
                           else diff_text(e["vs_first"]["test_acc_best"]),
                           MISSING if e["vs_first"]["test_acc_last"] is None
                           else diff_text(e["vs_first"]["test_acc_last"]), _ms(e["kept_vs_teacher"])]
                          + ([_fmt(e.get("paper"))] if paper else []) for e in rows],
                       align=["l", "l", "l", "r", "r", "r", "r", "r"] + ["r"] * bool(paper)),
        "![accuracy per row](plots/accuracy.png)",
        "",
        "Orderings against the first row (best-on-validation checkpoint, unadjusted):",
        "",
    ]
    lines += [f"- {ordering_text(e['label'], ref, e['vs_first']['test_acc_best'])}" for e in rows[1:]] + [""]
    if results.get("init_runs"):  # what the rows start from (kdlab.compare.inits)
        lines += ["Runs trained before the rows (the spec's `init`), test accuracy % of the best-on-validation "
                  "checkpoint (mean ± std over their seeds):", "",
                  markdown_table(["Init run", "Column", "Seeds", "Test acc, best-val ckpt (%)"],
                                 [[i["label"], i["column"] or "every column", str(i["test_acc_best"]["n"]),
                                   _ms(i["test_acc_best"])] for i in results["init_runs"]],
                                 align=["l", "l", "r", "r"]), ""]
    lines += _analysis_lines(results)
    lines += _budget_lines(rows)
    lines += _unequal_updates(rows)
    sigmas = sorted({float(x) for e in rows for x in e["noise_acc"]})
    lines += ["## Robustness", "",
              "Test accuracy % under Gaussian noise of std σ added to the normalised inputs (best-on-val checkpoint).", ""]
    t_noise = {float(k): v for k, v in ((teacher or {}).get("noise_acc") or {}).items()}
    lines += [markdown_table(["Row"] + [f"σ={x:g}" for x in sigmas],
                             ([[teacher_rows[0][0]] + [_fmt(t_noise.get(x)) for x in sigmas]] if t_noise else [])
                             + [[e["label"]] + [_ms(e["noise_acc"][str(x)]) if str(x) in e["noise_acc"] else MISSING
                                                for x in sigmas] for e in rows]) if sigmas else
              "No noise accuracies recorded.", "",
              "![accuracy under noise](plots/noise.png)", ""]
    lines += ["## Cost", "",
              "Params and MACs per image of the student; CPU latency in ms per image at batch 1 (measured while "
              "other runs may share the machine under --jobs); wall time per run (data, training, evaluation); "
              "steps/s = optimizer steps / training-loop time (validation included); images/s = the loop's logged "
              "training throughput.", "",
              markdown_table(["Row", "Model", "Params", "MACs / image", "Latency (ms)", "Wall time / run (s)",
                              "Steps / s", "Images / s"],
                             ([[teacher_rows[0][0], tm.get("name", MISSING), format_count(tm.get("params")),
                                format_count(tm.get("macs")), _fmt(tm.get("latency_ms"), 3),
                                _fmt(teacher.get("wall_time_s"), 1), MISSING, MISSING]] if teacher else []) +
                             [[e["label"], next((r["model"] for r in e["runs"] if r.get("model")), MISSING),
                               format_count(e["params"]["mean"]), format_count(e["macs"]["mean"]),
                               _ms(e["latency_ms"], 3), _ms(e["wall_time_s"], 1), _ms(e["steps_per_s"], 1),
                               _ms(e["images_per_s"], 0)] for e in rows])]
    lines += ["## Validation curves", "", "![validation accuracy vs epoch](plots/curves.png)", "", "## Runs", ""]
    lines += [markdown_table(["Run", "Row", "Seed", "Status", "Best epoch / epochs", "Test acc best-val (%)",
                              "Test acc last (%)", "Wall time (s)", "Directory / log"],
                             [[r["name"], e["label"], r["seed"],
                               r["status"] + (f": {r['error']}" if r["error"] else ""),
                               f"{r.get('best_epoch', MISSING)} / {r.get('epochs', MISSING)}",
                               _fmt(r.get("test_acc_best")), _fmt(r.get("test_acc_last")),
                               _fmt(r.get("wall_time_s"), 1),
                               f"`{r['path']}`" + (f" (log `{r['log_path']}`)" if r.get("log_path") else "")]
                              for e in rows for r in e["runs"]], align=["l", "l", "r", "l", "r", "r", "r", "r", "l"])]
    lines += _config_lines(results)
    return f"# {results['title']}\n\n" + "\n".join(lines) + "\n"
