"""Reports from run directories: markdown tables (mean ± sample std over seeds) and matplotlib
(Agg) plots.

Imports only matplotlib, PyYAML (for config.yaml) and the standard library.
"""
from .plots import plot_bars, plot_intervals, plot_noise, plot_run_curves, plot_val_curves
from .stats import claim_text, diff_text, holm, last_quarter_decrease, ordering_text, paired_test, verdict
from .runs import (
    RunData,
    RunFileError,
    epoch_series,
    load_run,
    noise_series,
    read_config,
    read_metrics,
    read_summary,
)
from .tables import format_count, format_mean_std, markdown_table, mean_std
from .writer import compare_runs, kept_vs_teacher, write_run_report

__all__ = [
    "write_run_report",
    "compare_runs",
    "kept_vs_teacher",
    "RunData",
    "RunFileError",
    "load_run",
    "read_summary",
    "read_metrics",
    "read_config",
    "epoch_series",
    "noise_series",
    "format_mean_std",
    "format_count",
    "mean_std",
    "markdown_table",
    "plot_run_curves",
    "plot_val_curves",
    "plot_noise",
    "plot_bars",
    "plot_intervals",
    "claim_text",
    "paired_test",
    "diff_text",
    "ordering_text",
    "holm",
    "verdict",
    "last_quarter_decrease",
]

# Generator runs (GAN compression): their own run report and sweep comparison.
from .gan import compare_generator_runs, plot_metric_vs_params, write_gan_run_report  # noqa: E402

__all__ += ["write_gan_run_report", "compare_generator_runs", "plot_metric_vs_params"]
