"""Every registered method runs under DDP (2 CPU processes, gloo) and keeps every player, and its
optimizer, identical on every rank (``tests/test_ddp.py`` covers distill, kdgan and gan-compression
with their loss curves and the NaN agreement; this file covers the remaining methods).

Each run is one or two short epochs; every rank dumps a SHA-256 of each player's and optimizer's
state at the end of ``fit`` (``tests/faults.py --dump-state``), and the two ranks' dumps must be equal.
"""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import small_config
from ddp_cases import DDP, cases, teachers, trained  # noqa: F401 (teachers: a fixture)
from faults import run_once

pytestmark = pytest.mark.slow  # 2-process DDP runs, 15-40 s each on 2 cores

@pytest.mark.parametrize("method", ["teacher", "jacobian", "codistill", "lwf", "mosaickd", "dfad", "dafl",
                                    "deepinversion", "gan"])
def test_every_method_runs_under_ddp_with_identical_players_on_every_rank(tmp_path, teachers, method):
    command, sections = cases(teachers)[method]
    sections = dict(sections)
    cfg = small_config(tmp_path, name=method, method=sections.pop("method", method), **sections)
    cfg["trainer"] = {**cfg["trainer"], **DDP}
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    dump = tmp_path / "hashes"
    rc, _, out = run_once([command, str(path)], ["--dump-state", str(dump)], timeout=400)
    assert rc == 0, out[-3000:]
    assert "MEMBER: 2/2" in out
    h0, h1 = (json.loads((dump / f"state-rank{r}.json").read_text()) for r in (0, 1))
    assert any(k.startswith("players/") for k in h0), h0
    assert trained(h0) == trained(h1)
    assert (tmp_path / method / "summary.json").is_file()


def test_every_rank_keeps_the_one_process_stream_in_last_ckpt(tmp_path, teachers):
    """A data-free student samples its generator's z on each rank as rows r::2 of the global batch's draw
    (:func:`kdlab.ranks.rank_rows`; tests/test_ddp_equivalence.py proves the rows are the 1-process ones),
    so no rank re-seeds: both ranks' streams in last.ckpt are equal (one state per rank is still kept). This
    replaces the earlier scheme of one stream per rank, under which 2 ranks could not draw what 1 process draws."""
    from kdlab.engine.checkpoint import load_checkpoint

    command, sections = cases(teachers)["dfad"]
    cfg = small_config(tmp_path, name="streams", **sections)
    cfg["trainer"] = {**cfg["trainer"], **DDP}
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc, _, out = run_once([command, str(path)], timeout=400)
    assert rc == 0, out[-3000:]
    ranks = load_checkpoint(tmp_path / "streams" / "checkpoints" / "last.ckpt")["rng_ranks"]
    assert ranks.shape[0] == 2 and torch.equal(ranks[0], ranks[1])


def test_a_resumed_ddp_run_continues_each_ranks_stream(tmp_path, teachers):
    """the dfad recipe on 2 ranks for 2 epochs, once straight through and once stopped after epoch 1 and resumed:
    the same generator and student after epoch 2 (rank r restores its own generator state from last.ckpt)."""
    from kdlab.engine.checkpoint import load_checkpoint

    command, sections = cases(teachers)["dfad"]
    runs = {}
    for name, plan in (("straight", [2]), ("resumed", [1, 2])):
        for i, epochs in enumerate(plan):
            cfg = small_config(tmp_path, name=name, **sections)
            cfg["trainer"] = {**cfg["trainer"], **DDP, "epochs": epochs}
            path = tmp_path / f"{name}-{i}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            rc, _, out = run_once([command, str(path)] + (["--resume"] if i else []), timeout=400)
            assert rc == 0, out[-3000:]
        last = load_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt")
        assert last["epoch"] == 2
        runs[name] = last["method"]["players"]
    a, b = runs["straight"], runs["resumed"]
    assert set(a) == set(b) >= {"student", "generator"}
    for player in a:
        assert all(torch.equal(a[player][k], b[player][k]) for k in a[player]), player
