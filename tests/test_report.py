"""Tests of kdlab.report on fake run directories (the run directory contract of DESIGN.md)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from kdlab.report import (
    RunFileError,
    compare_runs,
    epoch_series,
    format_mean_std,
    load_run,
    markdown_table,
    read_config,
    write_run_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TEACHER = {"name": "lenet", "checkpoint": "runs/teacher/checkpoints/best.ckpt", "sha256": "ab" * 32,
           "params": 3274634, "macs": 13883904, "test_acc": 90.0}


def make_run(root: Path, name: str, label: str, seed: int, test_best: float, test_last: float,
             noise: dict, method: str = "distill", teacher=TEACHER, epochs: int = 3, config: bool = True) -> Path:
    d = root / name
    d.mkdir(parents=True)
    summary = {
        "name": name, "label": label, "method": method, "seed": seed,
        "model": {"name": "mlp", "params": 1276810, "macs": 1275200, "latency_ms": 0.05 + seed * 0.01},
        "teacher": teacher,
        "data": {"name": "fashion-mnist", "n_train": 1000, "n_val": 500, "n_test": 1000, "n_per_class": 100},
        "val_acc_best": test_best + 1, "best_epoch": epochs - 1, "epochs": epochs,
        "test_acc_best": test_best, "test_acc_last": test_last,
        "noise_acc": {str(k): v for k, v in noise.items()},
        "wall_time_s": 12.5, "versions": {"torch": "2.x"}, "git_commit": "deadbeef",
        "stopped_early": False, "final_losses": {"train/loss": 0.5},
    }
    (d / "summary.json").write_text(json.dumps(summary))
    lines = []
    step = 0
    for e in range(epochs):
        for _ in range(2):
            step += 1
            lines.append({"epoch": e, "step": step, "time": step * 0.1, "train/loss": 2.0 / (step + seed), "lr": 0.1})
        lines.append({"epoch": e, "step": step, "time": step * 0.1, "val/acc": 50.0 + 10 * e + seed, "val/loss": 1.0})
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    if config:
        (d / "config.yaml").write_text(f"seed: {seed}\nmethod: {method}\nmodel:\n  name: mlp\n")
    return d


def table_row(report: str, first_cell: str) -> list[str]:
    for line in report.splitlines():
        if line.startswith("| ") and line.split("|")[1].strip() == first_cell:
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError(f"no table row for {first_cell!r} in:\n{report}")


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1000


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    kd0 = make_run(root, "kd_s0", "KD", 0, 85.0, 84.0, {0.0: 85.0, 0.1: 80.0, 0.2: 70.0})
    kd1 = make_run(root, "kd_s1", "KD", 1, 87.5, 86.0, {0.0: 87.5, 0.1: 81.0, 0.2: 73.0})
    t = make_run(root, "teacher", "Teacher", 0, 90.0, 89.5, {0.0: 90.0, 0.1: 88.0, 0.2: 85.0},
                 method="teacher", teacher=None, config=False)
    return [kd0, kd1, t]


def test_compare_runs_mean_std_and_plots(runs, tmp_path):
    out = tmp_path / "cmp"
    path = compare_runs(runs, out, title="KD vs teacher")
    assert path == out / "report.md"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# KD vs teacher")
    assert "sample std (ddof=1)" in text
    header = table_row(text, "Label")
    kd = table_row(text, "KD")
    col = {h: i for i, h in enumerate(header)}

    def ms(xs):  # independent mean ± sample std
        return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"

    assert kd[col["Test acc, best-val ckpt (%)"]] == ms([85.0, 87.5])
    assert kd[col["Test acc, last epoch (%)"]] == ms([84.0, 86.0])
    assert kd[col["σ=0.1 (%)"]] == ms([80.0, 81.0])
    assert kd[col["σ=0.2 (%)"]] == ms([70.0, 73.0])
    assert kd[col["Kept vs teacher (%)"]] == ms([100 * 85.0 / 90.0, 100 * 87.5 / 90.0])
    assert kd[col["Seeds"]] == "0, 1"
    assert kd[col["Model"]] == "mlp"
    assert kd[col["Params"]] == "1.28M"
    assert "100/class" in kd[col["Data (n/class)"]]
    teacher = table_row(text, "Teacher")
    assert teacher[col["Test acc, best-val ckpt (%)"]] == "90.00"  # single run: no ±
    assert teacher[col["Kept vs teacher (%)"]] == "—"
    # the checkpoint each column uses is stated
    assert "best-on-val checkpoint" in text and "last epoch" in text
    # per-run table lists every run
    for name in ("kd_s0", "kd_s1", "teacher"):
        assert table_row(text, name)
    assert_png(out / "plots" / "curves.png")
    assert_png(out / "plots" / "noise.png")
    assert "plots/curves.png" in text and "plots/noise.png" in text


def test_compare_runs_errors(runs, tmp_path):
    with pytest.raises(ValueError, match="twice"):
        compare_runs([runs[0], runs[0]], tmp_path / "x", "t")
    with pytest.raises(ValueError):
        compare_runs([], tmp_path / "x", "t")
    (runs[1] / "summary.json").unlink()
    with pytest.raises(FileNotFoundError) as e:
        compare_runs(runs, tmp_path / "x", "t")
    assert str(runs[1] / "summary.json") in str(e.value)


def test_duplicate_seed_warns(tmp_path):
    a = make_run(tmp_path, "a", "KD", 0, 80.0, 80.0, {0.0: 80.0})
    b = make_run(tmp_path, "b", "KD", 0, 82.0, 80.0, {0.0: 82.0})
    with pytest.warns(UserWarning, match="seed"):
        compare_runs([a, b], tmp_path / "cmp", "dup")


def test_write_run_report(runs):
    path = write_run_report(runs[0])
    assert path == runs[0] / "report.md"
    text = path.read_text(encoding="utf-8")
    assert "# Run report: kd_s0" in text
    assert table_row(text, "test accuracy (%)")[1] == "85.00"  # first such row = best-on-val
    assert "84.00" in text  # last epoch
    assert table_row(text, "accuracy kept vs teacher (%)")[1] == f"{100 * 85.0 / 90.0:.2f}"
    assert table_row(text, "0.2")[1] == "70.00"
    assert "```yaml" in text and "name: mlp" in text
    assert_png(runs[0] / "plots" / "curves.png")
    assert_png(runs[0] / "plots" / "noise.png")
    # a run without config.yaml still gets a report
    assert write_run_report(runs[2]).is_file()


def test_missing_files_name_the_path(tmp_path):
    d = make_run(tmp_path, "r", "KD", 0, 80.0, 79.0, {0.0: 80.0}, config=False)
    with pytest.raises(RunFileError) as e:
        read_config(d)
    assert str(d / "config.yaml") in str(e.value)
    (d / "metrics.jsonl").unlink()
    with pytest.raises(FileNotFoundError) as e:
        write_run_report(d)
    assert str(d / "metrics.jsonl") in str(e.value)
    (d / "summary.json").unlink()
    with pytest.raises(FileNotFoundError) as e:
        write_run_report(d)
    assert str(d / "summary.json") in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nope")


def test_metrics_jsonl_parsing(tmp_path):
    d = make_run(tmp_path, "r", "KD", 0, 80.0, 79.0, {0.0: 80.0})
    recs = [
        {"epoch": 0, "step": 1, "train/loss": 3.0},
        {"epoch": 0, "step": 2, "train/loss": 1.0},
        {"epoch": 1, "step": 3, "train/loss": 9.0},  # redone after a resume: overwritten below
        {"epoch": 1, "step": 3, "train/loss": 0.5},
        {"epoch": 1, "step": 4, "train/loss": 1.5, "val/acc": 70.0},
    ]
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n{\"epoch\": 2, \"st")
    with pytest.warns(UserWarning, match="truncated"):
        run = load_run(d)
    assert epoch_series(run.metrics, "train/loss") == ([0, 1], [2.0, 1.0])
    assert epoch_series(run.metrics, "val/acc") == ([1], [70.0])
    (d / "metrics.jsonl").write_text("{\"epoch\": 0}\nnot json\n{\"epoch\": 1}\n")
    with pytest.raises(ValueError, match="line 2"):
        load_run(d)


def test_tables_formatting():
    assert format_mean_std([90.0, 92.0]) == f"91.00 ± {statistics.stdev([90.0, 92.0]):.2f}"
    assert format_mean_std([90.0]) == "90.00"
    assert format_mean_std([None, float("nan")]) == "—"
    t = markdown_table(["a", "b"], [["x|y", 1]])
    assert t.splitlines() == ["| a | b |", "|:---|---:|", "| x\\|y | 1 |"]
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        markdown_table(["a", "b"], [["x"]])


def test_save_figure_from_concurrent_writers_leaves_one_whole_png(tmp_path):
    """Parallel cells of a grid write the same report plot: each write goes through its own temp file
    (a shared ``<name>.tmp`` made one writer's rename fail)."""
    import threading

    from matplotlib.figure import Figure

    from kdlab.report.plots import save_figure

    errors = []

    def write(i):
        fig = Figure()
        fig.subplots().plot([0, i])
        try:
            save_figure(fig, tmp_path / "p.png")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_figures_are_palette_pngs_that_look_the_same(tmp_path):
    """A report figure is stored as a palette PNG: smaller than matplotlib's RGBA file, and every pixel within a
    few levels of it (compared with numpy on the decoded images)."""
    import io

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    from kdlab.report.plots import save_figure

    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    for k in range(6):
        ax.plot(np.sin(np.linspace(0, 6, 200) + k), label=f"row {k}")
    ax.legend()
    FigureCanvasAgg(fig)
    plain = io.BytesIO()
    fig.savefig(plain, format="png", dpi=110, bbox_inches="tight")
    path = save_figure(fig, tmp_path / "f.png", dpi=110)
    saved = Image.open(path)
    assert saved.mode == "P" and path.stat().st_size < 0.7 * len(plain.getvalue())
    a = np.asarray(saved.convert("RGB"), dtype=float)
    b = np.asarray(Image.open(plain).convert("RGB"), dtype=float)
    assert a.shape == b.shape and np.abs(a - b).mean() < 1.0 and np.percentile(np.abs(a - b), 99) <= 24


def test_val_curves_of_many_seeds_draw_the_mean_and_band(tmp_path, monkeypatch):
    """A row of more than 4 seeds is drawn as its mean with a min-max band (numbers from numpy), fewer seeds
    one line each: a figure of 10 rows x 10 seeds stays readable and small."""
    import numpy as np

    from kdlab.report import plots

    figs = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi=110: figs.append(fig) or path)
    rng = np.random.default_rng(0)
    epochs = list(range(1, 7))
    many = [rng.uniform(50, 90, size=6) for _ in range(6)]
    curves = [(f"KD (seed {s})", epochs, list(y)) for s, y in enumerate(many)]
    curves += [(f"CE (seed {s})", epochs, [60.0 + s] * 6) for s in range(2)]
    plots.plot_val_curves(curves, tmp_path / "c.png", groups=["KD"] * 6 + ["CE"] * 2)
    ax = figs[0].axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["KD (mean of 6 runs; band: min-max)", "CE (seed 0)", "CE (seed 1)"]
    assert np.allclose(ax.get_lines()[0].get_ydata(), np.mean(many, axis=0))
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(band.max(), np.max(many, axis=0).max()) and np.isclose(band.min(), np.min(many, axis=0).min())
