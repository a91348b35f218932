"""The comparisons a spec declares before anything runs, and their statistics after.

A spec's ``primary:`` list holds the claims it tests (the paper's headline orderings), ``secondary:``
other comparisons of interest, in the same form::

    primary:
      - {a: "CE + match Jacobians", b: "CE", metric: test_acc_best, direction: greater,
         label: "matching Jacobians as well raises accuracy", paper: "Srinivas & Fleuret 2018, Table 1",
         columns: ["1", "5"]}          # only with a spec's ``columns``; default: every column
      - {a: mosaickd, b: dfad, b_column: no-ood, columns: [ood], ...}  # b from one column (its 'only' rows)

``a`` and ``b`` name rows by label or by name (slug), ``metric`` is a per-seed number the rows produce
(:data:`METRICS`, by the rows' method kind; a classifier row also produces ``noise_acc@SIGMA``, its test
accuracy under Gaussian input noise of std SIGMA, for each SIGMA of its ``eval.noise_sigmas``; any row the
metrics its callbacks write, :mod:`kdlab.compare.analyses`), or a list of them (one comparison per metric),
``direction`` says which way the paper claims ``a - b`` goes (default: ``a`` better than ``b``: ``less`` for
the metrics of :data:`LOWER_IS_BETTER` such as FID, ``greater`` otherwise). A spec without declared comparisons gets every row against the first row on ``test_acc_best``,
labelled post hoc (``kdlab compare``'s default); a spec run by ``kdlab reproduce`` must declare a
primary comparison.

:func:`evaluate` gives each comparison its paired differences over the seeds both rows finished, their
mean and 95% t interval, the two-sided paired t-test p (:func:`kdlab.report.paired_test`), the Holm
adjustment over the primary comparisons (:func:`kdlab.report.holm`) and the verdict
(:func:`kdlab.report.verdict`: on the Holm p for primary comparisons, on the unadjusted p otherwise).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

from kdlab.config import ConfigError
from kdlab.report import holm, paired_test, verdict
from kdlab.report.pages import NOISE_METRIC, metric_value, noise_sigma  # noqa: F401  (re-exported)

__all__ = ["Comparison", "METRICS", "LOWER_IS_BETTER", "HEADLINE", "better", "NOISE_METRIC", "KINDS", "find_row", "noise_sigma", "metric_value", "parse_comparisons", "default_comparisons", "check_metrics", "evaluate"]

#: the per-seed numbers a row produces, by its method's kind (keys of the runs' summary.json)
METRICS: Dict[str, tuple] = {
    "classifier": ("test_acc_best", "test_acc_last", "val_acc_best", "kept_vs_teacher"),
    # summary.json's generative section (kdlab.games.gan_eval): vs real test images through the metric
    # classifier (fid, kid, is), sharpness (vol), fidelity to the teacher (fidelity_fid, mse_to_teacher)
    "generator": ("fid", "kid", "is", "vol", "fidelity_fid", "mse_to_teacher"),
    # summary.json's translation and fidelity sections (kdlab.games.i2i_eval): vs the output domain's test
    # images (fid, kid), on a paired task vs the real outputs (mae, ssim, domain_acc: the classifier's accuracy
    # on the translations, %), fidelity to the teacher (fidelity_fid, fidelity_mae)
    "image-to-image": ("fid", "kid", "mae", "ssim", "domain_acc", "fidelity_fid", "fidelity_mae"),
}
#: metrics whose better value is the lower one; a comparison without ``direction`` claims ``a`` better than ``b``
LOWER_IS_BETTER = frozenset({"fid", "kid", "fidelity_fid", "mse_to_teacher", "mae", "fidelity_mae"})
#: the headline metric of each kind (the post-hoc default comparisons)
HEADLINE = {"classifier": "test_acc_best", "generator": "fid", "image-to-image": "fid"}
#: what a comparison is: declared primary (Holm-adjusted), declared secondary, or the post-hoc default
KINDS = ("primary", "secondary", "post hoc")
_KEYS = ("a", "b", "metric", "direction", "label", "paper", "columns", "b_column")


@dataclass
class Comparison:
    """One comparison ``a`` vs ``b`` (row names after column expansion) on ``metric``.

    Attributes:
        a, b: the rows' names (slugs); the claim is about ``a - b``.
        metric: a key of :data:`METRICS`, ``noise_acc@SIGMA`` or a metric of the rows' callbacks.
        direction: ``"greater"`` (the paper claims a > b) or ``"less"``.
        label: the claim in words; paper: where it is made (paper and table).
        kind: one of :data:`KINDS`.
        column: the spec column the rows belong to (None without columns).
    """

    a: str
    b: str
    metric: str
    direction: str
    label: str
    paper: str
    kind: str
    column: Optional[str] = None


def find_row(name: Any, rows: Sequence[Any], where: str) -> Any:
    """The row of ``rows`` (each with ``label`` and ``slug``) whose label or name is ``name`` (any case).

    Raises:
        ConfigError: no such row; names ``where`` and lists the rows.
    """
    want = str(name).lower()
    for row in rows:
        if want in (row.label.lower(), row.slug.lower()):
            return row
    raise ConfigError(f"{where}: no row {name!r}; accepted (label or name): "
                      + ", ".join(f"{r.label!r} ({r.slug})" for r in rows))


def parse_comparisons(raw: Any, key: str, rows: Sequence[Any], columns: Sequence[str],
                      expand: Any) -> List[Comparison]:
    """The spec's ``primary`` / ``secondary`` list as :class:`Comparison` s, one per column.

    Args:
        raw: the list from the spec (None = no comparisons).
        key: ``"primary"`` or ``"secondary"`` (the kind, and the key named in errors).
        rows: the spec's method rows before column expansion (each with ``label`` and ``slug``).
        columns: the spec's column names (empty: no columns).
        expand: ``expand(slug, column) -> slug`` of the expanded row.

    Raises:
        ConfigError: not a list of mappings, an unknown key, a missing ``a``/``b``/``metric``/``label``,
            a row that does not exist, the same row on both sides, a bad direction, an unknown column or
            ``b_column`` (the column ``b`` is taken from, for every column of ``a``).
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"compare spec key {key!r} must be a list of comparisons "
                          f"{{a, b, metric, direction, label, paper}}; got {raw!r}")
    out: List[Comparison] = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a mapping with keys {', '.join(_KEYS)}; got {item!r}")
        unknown = sorted(set(item) - set(_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; accepted: {', '.join(_KEYS)}")
        missing = [k for k in ("a", "b", "metric", "label") if not item.get(k)]
        if missing:
            raise ConfigError(f"{where}: missing {missing[0]!r} (a comparison needs a, b, metric and label)")
        a, b = find_row(item["a"], rows, f"{where}.a"), find_row(item["b"], rows, f"{where}.b")
        if a is b:
            raise ConfigError(f"{where}: a and b are the same row {a.label!r}; compare two different rows")
        metrics = item["metric"] if isinstance(item["metric"], list) else [item["metric"]]
        if not all(isinstance(m, str) and m for m in metrics):
            raise ConfigError(f"{where}.metric = {item['metric']!r}; accepted: a metric name, e.g. test_acc_best, "
                              "or a list of them")
        direction = item.get("direction")
        if direction is not None and str(direction) not in ("greater", "less"):
            raise ConfigError(f"{where}.direction = {direction!r}; accepted: greater, less")
        cols = [str(c) for c in item.get("columns") or []] or list(columns) or [None]
        if item.get("columns") and not columns:
            raise ConfigError(f"{where}.columns: this spec has no 'columns:' section; remove 'columns' from {where}")
        bad = [c for c in cols if c is not None and c not in columns]
        if bad:
            raise ConfigError(f"{where}.columns: no column {bad[0]!r}; accepted: {', '.join(columns)}")
        b_col = item.get("b_column")
        if b_col is not None and str(b_col) not in columns:
            raise ConfigError(f"{where}.b_column: no column {b_col!r}; accepted: {', '.join(columns) or 'none'}")
        for col, metric in [(c, m) for c in cols for m in metrics]:
            out.append(Comparison(a=expand(a.slug, col), b=expand(b.slug, col if b_col is None else str(b_col)),
                                  metric=metric, direction=str(direction or better(metric)),
                                  label=str(item["label"]), paper=str(item.get("paper") or ""),
                                  kind=key, column=col))
    return out


def better(metric: str) -> str:
    """The direction of ``a - b`` when ``a`` is better on ``metric``: ``less`` for :data:`LOWER_IS_BETTER`."""
    return "less" if metric in LOWER_IS_BETTER else "greater"


def default_comparisons(rows: Sequence[Any], kind: str = "classifier") -> List[Comparison]:
    """Every row against the first on the kind's headline metric (:data:`HEADLINE`: ``test_acc_best``,
    generators ``fid``), ``a`` better than ``b`` claimed, labelled post hoc."""
    metric = HEADLINE[kind]
    return [Comparison(a=r.slug, b=rows[0].slug, metric=metric, direction=better(metric),
                       label=f"{r.label} vs {rows[0].label}", paper="", kind="post hoc") for r in rows[1:]]


def check_metrics(comparisons: Sequence[Comparison], kinds: Dict[str, str],
                  sigmas: Optional[Dict[str, Sequence[float]]] = None,
                  analyses: Optional[Dict[str, Sequence[str]]] = None) -> None:
    """Every comparison's metric is produced by both of its rows.

    Args:
        kinds: row name (slug) -> the kind of its rows (``"classifier"``, ``"generator"``, ``"image-to-image"``).
        sigmas: row name -> its ``eval.noise_sigmas`` (the ``noise_acc@SIGMA`` metrics a classifier row
            produces; None: no row produces any).
        analyses: row name -> the metrics its callbacks write (:mod:`kdlab.compare.analyses`).

    Raises:
        ConfigError: names the comparison, the metric and the metrics the row's kind produces.
    """
    for c in comparisons:
        for side in (c.a, c.b):
            have = METRICS.get(kinds[side], ())
            if kinds[side] == "classifier":
                have = have + tuple(f"{NOISE_METRIC}{float(x)}" for x in (sigmas or {}).get(side, ()))
            have = have + tuple((analyses or {}).get(side, ()))
            sigma = noise_sigma(c.metric)
            if (f"{NOISE_METRIC}{sigma}" if sigma is not None else c.metric) not in have:
                raise ConfigError(f"{c.kind} comparison {c.label!r}: metric {c.metric!r} is not produced by row "
                                  f"{side!r} (a {kinds[side]} row); accepted: {', '.join(have)} (or a metric of a "
                                  "callback the row names: kdlab.compare.analyses)")


def evaluate(comparisons: Sequence[Comparison], rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The statistics of each comparison, from the rows' per-seed records (``rows[i]["runs"]``, as
    :func:`kdlab.compare.report.collect` gives them).

    Returns:
        One dict per comparison: its fields (:class:`Comparison`), the row labels ``label_a``/``label_b``,
        ``seeds`` both rows finished with a value, ``a``/``b`` values per seed, and the keys of
        :func:`kdlab.report.paired_test` (``diffs``, ``diff``, ``ci``, ``t``, ``p``...), ``p_holm``
        (primary comparisons only, adjusted over all of them) and ``verdict``.
    """
    by_slug = {e["slug"]: e for e in rows}
    out: List[Dict[str, Any]] = []
    for c in comparisons:
        vals = []
        for slug in (c.a, c.b):
            vals.append({r["seed"]: metric_value(r, c.metric) for r in by_slug[slug]["runs"]
                         if r["status"] != "failed" and isinstance(metric_value(r, c.metric), (int, float))})
        seeds = [s for s in vals[0] if s in vals[1]]
        a, b = [float(vals[0][s]) for s in seeds], [float(vals[1][s]) for s in seeds]
        out.append({**asdict(c), "rows": [c.a, c.b], "label_a": by_slug[c.a]["label"],
                    "label_b": by_slug[c.b]["label"], "seeds": seeds, "values_a": a, "values_b": b,
                    **paired_test(a, b)})
    primary = [e for e in out if e["kind"] == "primary"]
    for e, adj in zip(primary, holm([e["p"] for e in primary])):
        e["p_holm"] = adj
    for e in out:
        e.setdefault("p_holm", None)
        e["verdict"] = verdict(e["diff"], e["p_holm"] if e["kind"] == "primary" else e["p"], e["direction"])
    return out
