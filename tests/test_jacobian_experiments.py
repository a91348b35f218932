"""The Jacobian paper's experiment commands (slow: each trains real models end to end)."""
from __future__ import annotations

import json

import pytest

from kdlab.cli import main
from kdlab.experiments import EXPERIMENTS

QUICK = ["trainer.epochs=2", "trainer.limit_train_batches=2", "data.max_test=200", "data.val_size=100"]


def test_all_tables_are_registered():
    assert {f"jacobian-table{i}" for i in range(1, 6)} <= set(EXPERIMENTS.names())


@pytest.mark.slow
@pytest.mark.parametrize("table", [2, 5])
def test_reproduce_writes_a_report_beside_the_paper(tmp_path, table):
    """SMOKE TEST: ``kdlab reproduce jacobian-table{2,5}`` cut short (2 seeds: the paired tests' minimum) writes
    ``<out>/<name>/small/`` with the report (the paper's numbers beside ours), results.json and plots."""
    rc = main(["reproduce", f"jacobian-table{table}", *QUICK, "--scale", "small", "--seeds", "0,1",
               "--out", str(tmp_path)])
    assert rc == 0
    out = tmp_path / f"jacobian-table{table}" / "small"
    report = (out / "report.md").read_text()
    res = json.loads((out / "results.json").read_text())
    assert "61.37" in report or "21.87" in report  # the paper's numbers are beside ours
    runs = [r for row in res["rows"] for r in row["runs"]]
    assert runs and all(r["status"] != "failed" and 0 <= r["test_acc_best"] <= 100 for r in runs)
    assert {r["seed"] for r in runs} == {0, 1}
    assert list(out.glob("**/*.png"))
