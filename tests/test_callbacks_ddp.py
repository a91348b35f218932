"""Engine callbacks under DDP (2 CPU processes, gloo; slow): which hooks run on which rank, and a callback failing
on one rank stops both (the single-process contract: test_callbacks.py)."""
from __future__ import annotations

import json

import pytest

DDP_SCRIPT = r"""
import json, sys
from pathlib import Path
from kdlab.engine import Callback
from kdlab.runner import load_run_config, train

out, fail = Path(sys.argv[1]), sys.argv[2] == "fail"


class Trace(Callback):
    def __init__(self):
        self.seen, self.rank = [], None

    def on_fit_start(self, view):
        self.rank = view.rank
        self.seen.append("start")

    def on_step_end(self, view, batch, step, logs):
        self.seen.append(f"step{step}:{len(batch)}")
        if fail and view.rank == 1 and step == 3:
            raise ValueError("rank 1 fails")

    def on_epoch_end(self, view, epoch, metrics):
        self.seen.append(f"epoch{epoch}")

    def on_fit_end(self, view):
        self.seen.append("end")


cb = Trace()
cfg = load_run_config([{
    "name": "ddp", "method": "teacher", "out_dir": str(out), "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
    "data": {"name": "fashion-mnist", "val_size": 100, "n_per_class": 10, "batch_size": 25, "max_test": 100},
    "trainer": {"epochs": 2, "devices": 2, "strategy": "ddp", "accelerator": "cpu", "threads": 1, "progress": False,
                "tensorboard": False},
    "eval": {"latency": False, "noise_sigmas": [0.0]}}])
try:
    train(cfg, callbacks=[cb])
    status = "ok"
except Exception as exc:
    status = f"{type(exc).__name__}: {exc}"
(out / f"rank{cb.rank}.json").write_text(json.dumps({"seen": cb.seen, "status": status}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("fail", [False, True])
def test_ddp_hooks_run_on_their_ranks_and_a_failure_on_one_rank_stops_both(fail, tmp_path):
    """2 CPU ranks (gloo): ``on_fit_start``/``on_step_end`` run on both (each on its own batch shard),
    ``on_epoch_end``/``on_fit_end`` on rank 0 only; a callback failing on rank 1 stops both ranks, each with
    a CallbackError (rank 1 names the callback), instead of leaving rank 0 waiting."""
    import subprocess
    import sys

    from faults import child_env

    script = tmp_path / "ddp_callbacks.py"
    script.write_text(DDP_SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path), "fail" if fail else "ok"], env=child_env(), cwd=tmp_path,
                   check=True, timeout=300, capture_output=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    if not fail:
        steps = [f"step{s}:25" for s in (1, 2)]
        assert r0 == {"seen": ["start", *steps, "epoch0", "step3:25", "step4:25", "epoch1", "end"], "status": "ok"}
        assert r1 == {"seen": ["start", *steps, "step3:25", "step4:25"], "status": "ok"}
    else:
        assert r1["status"].startswith("CallbackError: callback Trace failed in on_step_end at epoch 2, step 3: "
                                       "ValueError: rank 1 fails")
        assert r0["status"].startswith("CallbackError: a callback failed in on_step_end on another rank")
        assert r0["seen"][-1] == "step3:25"
