"""Report figures, drawn with matplotlib's Agg backend.

Figures are built with ``matplotlib.figure.Figure`` and ``FigureCanvasAgg`` directly (no pyplot),
so no global backend is switched, nothing needs a display, and no figure stays open.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PathLike = Union[str, Path]

__all__ = ["plot_run_curves", "plot_val_curves", "plot_noise", "plot_bars", "plot_intervals", "save_figure",
           "palette_png"]


def palette_png(png: bytes) -> bytes:
    """The same image as a 256-colour palette PNG (Pillow's median cut, then its optimised encoder): a plot
    has few colours, so the file is about a third of the RGBA one with no visible change; committed
    reports (``results/``) stay light."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def save_figure(fig: Figure, path: PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` as a palette PNG (:func:`palette_png`) at ``path`` (parents created; temp file + rename,
    so a reader never sees half a file). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    from kdlab.engine.checkpoint import atomic_write  # a unique temp name: concurrent writers never collide

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write(path, palette_png(buf.getvalue()))


def _empty(ax, text: str = "no data logged") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def _epoch_axis(ax, ylabel: str) -> None:
    """Integer epochs on x, ``ylabel`` on y, a light grid."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_run_curves(
    loss_series: Dict[str, Tuple[Sequence[float], Sequence[float]]],
    val_acc: Tuple[Sequence[float], Sequence[float]],
    path: PathLike,
    title: Optional[str] = None,
) -> Path:
    """Two panels for one run: training losses vs epoch (left) and validation accuracy (%) vs
    epoch (right).

    Args:
        loss_series: loss name -> (epochs, per-epoch values), e.g. {"train/loss": ([0, 1], [2.3, 1.1])}.
        val_acc: (epochs, accuracies in percent).
        path: PNG file to write.
    """
    fig = Figure(figsize=(10, 4))
    ax_l, ax_a = fig.subplots(1, 2)
    if any(len(x) for x, _ in loss_series.values()):
        for name, (x, y) in loss_series.items():
            if len(x):
                ax_l.plot(x, y, marker="o", markersize=3, label=name)
        ax_l.legend(fontsize=8)
    else:
        _empty(ax_l)
    _epoch_axis(ax_l, "training loss (mean over the epoch's log steps)")
    x, y = val_acc
    if len(x):
        ax_a.plot(x, y, marker="o", markersize=3, color="C2")
    else:
        _empty(ax_a)
    _epoch_axis(ax_a, "validation accuracy (%)")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_val_curves(
    curves: List[Tuple[str, Sequence[float], Sequence[float]]],
    path: PathLike,
    title: Optional[str] = None,
    groups: Optional[List[str]] = None,
    max_lines: int = 4,
) -> Path:
    """Validation accuracy (%) vs epoch, one line per run; a group of more than ``max_lines`` runs on the same
    epochs (the seeds of one row) is drawn as its mean with a min-max band instead, so that a figure of many
    seeds stays readable (and small: it is committed with the results).

    Args:
        curves: ``(legend label, epochs, accuracies)`` per run.
        groups: optional group name per run; runs of one group share a colour (seeds of one label).
        max_lines: the most runs of one group drawn one by one.
    """
    import numpy as np

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    members: Dict[str, List[Tuple[str, Sequence[float], Sequence[float]]]] = {}
    for i, (label, x, y) in enumerate(curves):
        if len(x):
            members.setdefault(groups[i] if groups else label, []).append((label, x, y))
    for k, (g, runs) in enumerate(members.items()):
        colour = f"C{k % 10}"
        if len(runs) > max_lines and all(list(x) == list(runs[0][1]) for _, x, _ in runs):
            ys = np.array([list(y) for _, _, y in runs], dtype=float)
            ax.plot(runs[0][1], ys.mean(axis=0), color=colour, label=f"{g} (mean of {len(runs)} runs; band: min-max)")
            ax.fill_between(runs[0][1], ys.min(axis=0), ys.max(axis=0), color=colour, alpha=0.2, linewidth=0)
            continue
        for j, (label, x, y) in enumerate(runs):
            ax.plot(x, y, color=colour, linestyle=styles[j % len(styles)], label=label)
    if members:
        ax.legend(fontsize=8)
    else:
        _empty(ax)
    _epoch_axis(ax, "validation accuracy (%)")
    ax.set_title(title or "Validation accuracy")
    return save_figure(fig, path)


def plot_noise(
    series: List[Tuple[str, Sequence[float], Sequence[float], Optional[Sequence[Optional[float]]]]],
    path: PathLike,
    title: Optional[str] = None,
) -> Path:
    """Test accuracy (%) vs Gaussian-noise sigma (normalised units), one line per label.

    Args:
        series: ``(label, sigmas, mean accuracies, stds or None)``; stds (sample std over seeds)
            are drawn as error bars where given.
    """
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    drawn = False
    for label, sig, acc, std in series:
        if not len(sig):
            continue
        err = None
        if std is not None and any(s is not None for s in std):
            err = [0.0 if s is None else s for s in std]
        ax.errorbar(sig, acc, yerr=err, marker="o", markersize=4, capsize=3, label=label)
        drawn = True
    if drawn:
        ax.legend(fontsize=8)
    else:
        _empty(ax, "no noise accuracies recorded")
    ax.set_xlabel("noise sigma (normalised units)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "Accuracy under Gaussian input noise (best-on-val checkpoint)")
    return save_figure(fig, path)


def plot_bars(labels: Sequence[str], means: Sequence[Optional[float]], stds: Sequence[Optional[float]], path: PathLike,
              ylabel: str = "test accuracy (%)", title: str = "", reference: Optional[float] = None) -> Path:
    """One bar per row with its seed std as an error bar (None values drawn empty), an optional
    horizontal ``reference`` line (e.g. the KD row), saved to ``path``."""
    fig = Figure(figsize=(max(6.0, 0.45 * len(labels) + 2), 4.2))
    ax = fig.subplots()
    pos = list(range(len(labels)))
    ax.bar(pos, [m if m is not None else 0.0 for m in means], yerr=[s or 0.0 for s in stds], capsize=3,
           color="#4C72B0", alpha=0.85)
    finite = [m for m in means if m is not None]
    if finite:
        lo = min(finite) - 2 * max([s or 0.0 for s in stds] + [1.0])
        ax.set_ylim(bottom=max(0.0, lo))
    if reference is not None:
        ax.axhline(reference, color="#C44E52", linestyle="--", linewidth=1)
    ax.set_xticks(pos)
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_intervals(labels: Sequence[str], diffs: Sequence[Optional[float]],
                   cis: Sequence[Optional[Sequence[float]]], path: PathLike, title: str = "",
                   xlabel: str = "mean paired difference a - b (95% CI)") -> Path:
    """One horizontal line per comparison: its mean paired difference (dot) and confidence interval
    (bar), top to bottom in the given order, a vertical line at 0; None values are left out. Saved to ``path``."""
    fig = Figure(figsize=(7.5, max(2.5, 0.32 * len(labels) + 1.2)))
    ax = fig.subplots()
    for y, (d, ci) in enumerate(zip(diffs, cis)):
        if d is None:
            continue
        if ci is not None:
            ax.plot(list(ci), [y, y], color="#4C72B0", linewidth=2)
        ax.plot([d], [y], "o", color="#C44E52", markersize=4)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(list(range(len(labels))))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)
