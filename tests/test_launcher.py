"""``--launcher submitit``: each run one submitit job (here submitit's local executor: jobs are processes
on this machine), the same results.json as the process pool, a preempted job resubmitted and resumed to
the weights of an uninterrupted run, and every bad launcher setting refused before anything is written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from kdlab.cli import main
from kdlab.compare import launch, load_spec, run_compare
from kdlab.compare.launch import CellJob, SubmititSettings, check_cells, launcher_settings, submit_cells
from kdlab.config import ConfigError, to_yaml
from kdlab.engine import Callback
from kdlab.experiments import grid

pytest.importorskip("submitit")

#: a tiny student set-up: 1 epoch of an MLP on 20 images per class (as tests/test_compare.py's --jobs test)
SMALL = {"model": {"name": "mlp", "kwargs": {"hidden": [32]}},
         "data": {"val_size": 200, "batch_size": 50, "eval_batch_size": 500, "max_test": 300},
         "trainer": {"epochs": 1, "progress": False, "tensorboard": False, "log_every_n_steps": 2},
         "eval": {"latency": False, "noise_sigmas": [0.0, 0.2]}, "optim": {"name": "adam", "lr": 0.002}}
#: results.json fields measured with a clock: the only ones allowed to differ between launchers
TIME_KEYS = {"wall_time_s", "train_time_s", "steps_per_s", "images_per_s", "latency_ms"}


def _spec(**launcher: Any) -> dict:
    return {"name": "j", "student": SMALL, "budget": {"n_per_class": 20}, "seeds": [0, 1], "launcher": launcher,
            "methods": [{"label": "CE", "set": ["method=teacher"]},
                        {"label": "CE lr", "set": ["method=teacher", "optim.lr=0.005"]}]}


def _untimed(x: Any) -> Any:
    """``x`` without the clock-measured fields (and the launcher's own description)."""
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in TIME_KEYS and k != "launcher"}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x


# ------------------------------------------------------------------------------ the same report
@pytest.mark.slow  # 8 tiny runs, each a fresh process: ~80 s on 2 busy cores
@pytest.mark.timeout(900)
def test_submitit_local_executor_gives_the_results_json_of_the_process_pool(tmp_path):
    """2 rows x 2 seeds: on a pool of 2 processes, then (in the same directory, the pool's moved away) as
    4 submitit jobs, 2 at a time: results.json equal in everything but wall times and the launcher."""
    out = tmp_path / "runs"
    extra = ["trainer.threads=1"]
    pool = run_compare(load_spec(_spec()), out, extra, jobs=2)
    assert pool.failed == 0
    out.rename(tmp_path / "pool")
    sub = run_compare(load_spec(_spec(executor="local", max_parallel=2, time=10)), out, extra, launcher="submitit")
    assert sub.failed == 0 and {o.status for o in sub.outcomes.values()} == {"trained"}
    a = json.loads((tmp_path / "pool" / "j" / "results.json").read_text())
    b = json.loads((out / "j" / "results.json").read_text())
    assert a["launcher"] == {"name": "local"} and b["launcher"]["name"] == "submitit"
    assert _untimed(a) == _untimed(b)
    assert b["rows"][1]["runs"][0]["test_acc_best"] is not None  # numbers, not two empty reports
    assert (out / "j" / "logs" / "j-ce-lr-s1.log").is_file() and any((out / "j" / "submitit").iterdir())


# ------------------------------------------------------------------------------ preemption
class Preempt(Callback):
    """At the first step of epoch ``epoch``, once (a marker file), the scheduler's preemption signal to this job."""

    def __init__(self, marker: str, epoch: int = 1) -> None:
        self.marker, self.epoch = marker, epoch

    def on_step_end(self, view, batch, step, logs) -> None:
        if view.epoch == self.epoch and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), launch_signal())


def launch_signal() -> int:
    from submitit.core.job_environment import JobEnvironment

    return JobEnvironment._usr_sig()  # what SLURM / the local executor send before a kill (USR2)


@pytest.mark.slow  # 1 run in-process, 1 job started twice: ~35 s on 2 busy cores
@pytest.mark.timeout(900)
def test_a_preempted_job_is_resubmitted_and_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    """A job signalled in epoch 2 of 3 (after epoch 1's last.ckpt) is checkpointed and requeued by submitit;
    the requeued job resumes the run (``--resume``) and ends with the weights of an uninterrupted run."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    cell = {**SMALL, "method": "teacher", "data": {**SMALL["data"], "n_per_class": 20},
            "trainer": {**SMALL["trainer"], "epochs": 3, "threads": 1}}
    ref = grid.run_cell([cell], [f"out_dir={tmp_path / 'ref'}", "name=r"])
    overrides = [f"out_dir={tmp_path / 'cut'}", "name=r"]
    cfg = grid.resolve([cell], overrides)
    marker, log = tmp_path / "preempted", tmp_path / "logs" / "r.log"
    job = CellJob([cell], overrides, str(log), to_yaml(cfg), callbacks=[Preempt(str(marker))])
    results = []
    settings = SubmititSettings(executor="local", time=10)
    submit_cells([job], ["r"], settings, tmp_path / "submitit", console=None,
                 on_done=lambda name, res, job_id: results.append(res))
    assert marker.is_file(), "the job was never signalled"
    assert results[0]["ok"], results[0]
    text = log.read_text()
    assert "resumed from its last checkpoint" in text  # the requeued job continued the run
    run = Path(results[0]["run"])
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
    a, b = load_file(str(next(ref.glob("*.safetensors")))), load_file(str(next(run.glob("*.safetensors"))))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Recorder:
    """Stands in for kdlab.runner.train: records (name, resume) and writes a finished run."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, cfg: Any, resume: bool = False, **kw: Any) -> Path:
        self.calls.append((cfg.name, resume))
        run = Path(cfg.out_dir) / cfg.name
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(to_yaml(cfg))
        (run / "metrics.jsonl").write_text("")
        (run / "summary.json").write_text(json.dumps({"name": cfg.name, "test_acc_best": 50.0}))
        return run


def test_a_rerun_resumes_interrupted_runs_of_the_same_config_and_restarts_others(tmp_path, monkeypatch):
    """What a resubmitted job (or a rerun of the command) does with a run directory: last.ckpt and no
    summary.json with the same config -> resume; another config -> trained anew (moved aside)."""
    rec = Recorder()
    monkeypatch.setattr(grid, "train", rec)
    cell = [{**SMALL, "method": "teacher", "data": {**SMALL["data"], "n_per_class": 20}}]
    for name, saved in (("same", None), ("other", "optim.lr=0.1")):
        cfg = grid.resolve(cell, [f"out_dir={tmp_path}", f"name={name}"] + ([saved] if saved else []))
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
        (tmp_path / name / "config.yaml").write_text(to_yaml(cfg))
        grid.run_cell(cell, [f"out_dir={tmp_path}", f"name={name}"])
    assert rec.calls == [("same", True), ("other", False)]
    grid.run_cell(cell, [f"out_dir={tmp_path}", "name=same"])  # finished now: reused, not resumed again
    assert len(rec.calls) == 2


# ------------------------------------------------------------------------------ bad settings
@pytest.mark.parametrize("launcher, section, options, words", [
    ("slurmm", None, None, ["'slurmm'", "local, submitit"]),
    ("submitit", {"partiton": "gpu"}, None, ["'partiton'", "partition"]),
    ("submitit", ["gpu"], None, ["'launcher' must be a mapping"]),
    ("submitit", {"time": 0}, None, ["launcher.time = 0", "integer >= 1 (minutes)"]),
    ("submitit", {"time": "1h"}, None, ["launcher.time = '1h'", "integer >= 1"]),
    ("submitit", {"time": True}, None, ["launcher.time = True"]),
    ("submitit", None, {"gpus_per_run": -1}, ["launcher.gpus_per_run = -1", ">= 0"]),
    ("submitit", {"cpus_per_run": 0}, None, ["launcher.cpus_per_run = 0", ">= 1"]),
    ("submitit", {"mem_gb": -2}, None, ["launcher.mem_gb = -2", "> 0"]),
    ("submitit", {"mem_gb": "lots"}, None, ["launcher.mem_gb = 'lots'"]),
    ("submitit", {"mem_gb": float("inf")}, None, ["launcher.mem_gb = inf"]),
    ("submitit", {"executor": "pbs"}, None, ["launcher.executor = 'pbs'", "auto, slurm, local"]),
    ("submitit", {"partition": ""}, None, ["launcher.partition = ''", "non-empty"]),
    ("submitit", {"max_parallel": 0}, None, ["launcher.max_parallel = 0", ">= 1"]),
    ("submitit", {"max_requeues": -1}, None, ["launcher.max_requeues = -1", ">= 0"]),
    ("local", None, {"partition": "gpu"}, ["--partition sets the submitit launcher", "--launcher submitit"]),
    ("local", {"time": -5}, None, ["launcher.time = -5"]),  # the spec's section is checked with either launcher
])
def test_bad_launcher_settings_name_the_value(launcher, section, options, words):
    with pytest.raises(ConfigError) as err:
        launcher_settings(launcher, section, options)
    for w in words:
        assert w in str(err.value)


def test_folder_that_is_a_file_and_slurm_without_srun_are_refused(tmp_path, monkeypatch):
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(ConfigError, match="launcher.folder = .* is a file"):
        launcher_settings("submitit", {"folder": str(f)})
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="executor = 'slurm' but srun/sbatch are not on the PATH.*local"):
        launcher_settings("submitit", {"executor": "slurm"})
    assert launch.cluster(launcher_settings("submitit", {"executor": "auto"})) == "local"


def test_submitit_not_installed_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(ConfigError, match="pip install submitit"):
        launcher_settings("submitit")
    assert launcher_settings("local") is None  # the local launcher does not need it


@pytest.mark.parametrize("trainer, gpus, words", [
    ({"accelerator": "cpu", "devices": 2}, 0, ["trainer.devices = 2", "trainer.devices=1"]),
    ({"accelerator": "cuda", "devices": 1}, 0, ["trainer.accelerator=cuda", "gpus_per_run >= 1"]),
    ({"accelerator": "cpu", "devices": 1}, 1, ["trainer.accelerator=cpu", "gpus_per_run = 1", "auto"]),
])
def test_runs_that_do_not_fit_their_jobs_are_refused(trainer, gpus, words):
    cfg = SimpleNamespace(name="x-s0", trainer=SimpleNamespace(**trainer))
    with pytest.raises(ConfigError) as err:
        check_cells([cfg], SubmititSettings(gpus_per_run=gpus))
    for w in words:
        assert w in str(err.value)
    check_cells([SimpleNamespace(name="ok", trainer=SimpleNamespace(accelerator="auto", devices=1))],
                SubmititSettings(gpus_per_run=gpus))


def test_cli_refuses_bad_launcher_input_before_anything_is_written(tmp_path, monkeypatch, capsys):
    rec = Recorder()
    monkeypatch.setattr(grid, "train", rec)
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(_spec(executor="local")))
    out = tmp_path / "out"
    cases = [(["--launcher", "submitit", "--time", "0"], "launcher.time = 0"),
             (["--launcher", "submitit", "--jobs", "2"], "--jobs = 2"),
             (["--launcher", "qsub"], "--launcher 'qsub': accepted: local, submitit"),
             (["--gpus-per-run", "1"], "--gpus-per-run sets the submitit launcher"),
             (["--launcher", "submitit", "--gpus-per-run", "1"], "trains on trainer.accelerator=cpu")]
    for flags, words in cases:
        assert main(["compare", str(spec), "--out-dir", str(out), *flags]) == 2, flags
        assert words in capsys.readouterr().err.replace("\n", " "), flags
    assert rec.calls == [] and not out.exists()
    code = main(["reproduce", "jacobian-table1", "--out-dir", str(out), "--launcher", "submitit", "--executor", "x"])
    assert code == 2 and "launcher.executor = 'x'" in capsys.readouterr().err and not out.exists()


def test_reproduce_hands_every_cell_it_does_not_reuse_to_the_launcher(tmp_path, monkeypatch):
    """Inside grid.launched_by, run_cell resolves and reuses as before and launches the rest (a
    stand-in launcher here; tests above run real jobs)."""
    rec = Recorder()
    monkeypatch.setattr(grid, "train", rec)
    launched = []

    def fake_launch(cfg, sources, overrides, callbacks, needs):
        launched.append(cfg.name)
        return rec(grid.resolve(sources, overrides))  # what the job would do: the same config

    cell = [{**SMALL, "method": "teacher", "data": {**SMALL["data"], "n_per_class": 20}}]
    grid.run_cell(cell, [f"out_dir={tmp_path}", "name=done"])
    with grid.launched_by(fake_launch):
        grid.run_cell(cell, [f"out_dir={tmp_path}", "name=done"])  # finished: reused here
        grid.run_cell(cell, [f"out_dir={tmp_path}", "name=new"])
    grid.run_cell(cell, [f"out_dir={tmp_path}", "name=after"])  # the block is over: trained here
    assert launched == ["new"] and [c[0] for c in rec.calls] == ["done", "new", "after"]


def test_a_job_that_dies_without_a_result_is_a_failed_outcome(tmp_path, monkeypatch):
    """A job process that exits without its result (killed, out of memory) is reported, not waited for
    forever: ``ok`` False, the job id and its output file named (submitit's local executor, no training)."""
    import functools

    from submitit.core.core import Job

    monkeypatch.setattr(Job, "_results_timeout_s", 0)  # submitit waits 15 s for a slow shared file system

    results = {}
    submit_cells([functools.partial(os._exit, 3), functools.partial(os._exit, 0)], ["a", "b"],
                 SubmititSettings(executor="local", time=5), tmp_path / "submitit", console=None,
                 on_done=lambda name, res, job_id: results.update({name: (res, job_id)}))
    assert sorted(results) == ["a", "b"]
    for name, (res, job_id) in results.items():
        assert not res["ok"] and f"submitit job {job_id} failed" in res["error"] and "_log.err" in res["error"]
