"""Fault injection for kdlab runs: SIGKILL a real ``kdlab`` run at chosen moments, resume until done.

Two halves:

- **The launcher** (this file run as a script): ``python faults.py [--kill-at-write N] [--nan-rank R
  --nan-step S] -- <kdlab arguments>`` installs the requested fault in this process, then runs
  ``kdlab.cli.main``. Under DDP, Fabric starts the other ranks by re-running this same command line, so
  every rank carries the same fault. The faults are patches of this process only; kdlab itself has no
  test hooks.

  - ``--kill-at-write N``: the N-th atomic file write of the run SIGKILLs the process after the temp
    file is written and synced but before ``os.replace`` renames it (the moment an atomic write exists to
    survive); ``--kill-after-replace`` kills just after that rename instead.
  - ``--nan-rank R --nan-step S``: from global step S on, rank R reports a NaN loss (after its real
    step), as a rank whose batch blew up would; the other ranks see finite losses.
  - ``--dump-state DIR``: after training each rank writes hashes of its players and optimizers.
  - ``--audit-writes ROOT OUT``: each rank records the writes it makes under ROOT.

- **The harness** (:func:`run_until_done`): runs the launcher in a subprocess, kills it (SIGKILL, at a
  seeded random time or inside a chosen checkpoint write), checks that every checkpoint left behind
  loads, and restarts with ``--resume`` (or fresh, after deleting the run directory, when no
  ``last.ckpt`` exists yet) until the run exits 0.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

HERE = Path(__file__).resolve()


# ----------------------------------------------------------------------------- the launcher


def _install_write_kill(n: int, after: bool) -> None:
    """SIGKILL this process at the ``n``-th ``os.replace`` made by :func:`kdlab.engine.checkpoint.atomic_write`."""
    import kdlab.engine.checkpoint as ck

    real_replace = os.replace
    count = {"n": 0}

    class _Os:  # the checkpoint module's view of ``os``: everything real but ``replace``
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst, *a, **kw):
            count["n"] += 1
            if count["n"] == n and not after:
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst, *a, **kw)
            if count["n"] == n and after:
                os.kill(os.getpid(), signal.SIGKILL)

    ck.os = _Os()


def _install_nan(rank: int, from_step: int) -> None:
    """Rank ``rank`` reports ``loss = NaN`` from global step ``from_step`` (1-based, as logged) on."""
    import torch

    import kdlab.engine.loop as loop

    real_fit = loop.Trainer.fit

    def fit(self, method, *args, **kwargs):
        real_step = method.training_step

        def training_step(batch, step):
            out = real_step(batch, step)
            if self.fabric.global_rank == rank and step + 1 >= from_step:
                out = {**out, "loss": torch.full_like(out["loss"], float("nan"))}
            return out

        method.training_step = training_step
        return real_fit(self, method, *args, **kwargs)

    loop.Trainer.fit = fit


def _install_state_dump(out_dir: str) -> None:
    """After training, every rank writes ``out_dir/state-rank<r>.json``: a SHA-256 per player's parameters
    (``players/<name>``), per player's buffers (``buffers/<name>``) and per optimizer (its state), so ranks
    can be compared bit for bit. Buffers are apart because BatchNorm's running statistics are each rank's
    own under DDP (PyTorch's DDP broadcasts rank 0's buffers before each forward, which then updates
    them from the local batch; rank 0's are the ones exported)."""
    import hashlib
    import json

    import torch

    import kdlab.engine.loop as loop

    def digest(obj, h) -> None:
        if isinstance(obj, torch.Tensor):
            h.update(str((obj.dtype, tuple(obj.shape))).encode())
            h.update(obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if obj.numel() else b"")
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                h.update(str(k).encode())
                digest(obj[k], h)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                digest(v, h)
        else:
            h.update(repr(obj).encode())

    real_fit = loop.Trainer.fit

    def fit(self, method, *args, **kwargs):
        result = real_fit(self, method, *args, **kwargs)
        state = method.state_dict()
        hashes = {}

        def put(key, obj):
            h = hashlib.sha256()
            digest(obj, h)
            hashes[key] = h.hexdigest()

        for name, sub in state["players"].items():
            params = {k for k, _ in loop.unwrap(method.players[name]).named_parameters()}
            put(f"players/{name}", {k: v for k, v in sub.items() if k in params})
            put(f"buffers/{name}", {k: v for k, v in sub.items() if k not in params})
        for name, sub in state["optimizers"].items():
            put(f"optimizers/{name}", sub)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"state-rank{self.fabric.global_rank}.json").write_text(json.dumps(hashes, indent=1))
        return result

    loop.Trainer.fit = fit


def _install_write_audit(root: str, out_dir: str) -> None:
    """Record every write this process makes under ``root`` (files opened for writing, directories
    made, renames, deletions) and write the list to ``out_dir/writes-rank<r>.txt`` at exit. ``r`` is
    the rank Fabric's launcher gives the process in ``LOCAL_RANK`` (unset: rank 0, the launching one)."""
    import atexit

    rank = int(os.environ.get("LOCAL_RANK", "0"))
    root = os.path.realpath(root)
    seen: List[str] = []
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def inside(p) -> bool:
        if not isinstance(p, (str, bytes, os.PathLike)):
            return False
        return os.path.realpath(os.fsdecode(p)).startswith(root + os.sep) or os.path.realpath(os.fsdecode(p)) == root

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (mode is None and flags & write_flags)
            if writing and inside(path):
                seen.append(f"open {path}")
        elif event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree") and args and inside(args[0]):
            seen.append(f"{event} {args[0]}")

    sys.addaudithook(hook)

    def dump() -> None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"writes-rank{rank}.txt").write_text("".join(x + "\n" for x in seen))

    atexit.register(dump)


def launcher_main(argv: Sequence[str]) -> int:
    """``faults.py [fault options] -- <kdlab arguments>``: install the faults, then run ``kdlab``."""
    import argparse

    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(prog="faults.py")
    p.add_argument("--kill-at-write", type=int, default=0)
    p.add_argument("--kill-after-replace", action="store_true")
    p.add_argument("--nan-rank", type=int, default=None)
    p.add_argument("--nan-step", type=int, default=1)
    p.add_argument("--dump-state", default=None, help="directory for each rank's player/optimizer hashes")
    p.add_argument("--audit-writes", nargs=2, default=None, metavar=("ROOT", "OUT"),
                   help="record this process's writes under ROOT into OUT/writes-rank<r>.txt")
    opts = p.parse_args(argv[:split])
    if opts.audit_writes:
        _install_write_audit(*opts.audit_writes)
    if opts.dump_state:
        _install_state_dump(opts.dump_state)
    if opts.kill_at_write:
        _install_write_kill(opts.kill_at_write, opts.kill_after_replace)
    if opts.nan_rank is not None:
        _install_nan(opts.nan_rank, opts.nan_step)
    from kdlab.cli import main

    return main(argv[split + 1:])


# ----------------------------------------------------------------------------- the harness


def launcher_cmd(kdlab_args: Sequence[str], faults: Sequence[str] = ()) -> List[str]:
    """The command line that runs ``kdlab kdlab_args`` with ``faults`` installed."""
    return [sys.executable, str(HERE), *faults, "--", *kdlab_args]


def child_env() -> dict:
    """The environment for a launched run: ``src`` importable, one thread (the machines here are small)."""
    env = dict(os.environ)
    src = str(HERE.parent.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@dataclass
class Attempt:
    """One start of the run: how it was started, the fault and how it ended."""

    resumed: bool
    from_epoch: int
    fault: str
    returncode: Optional[int]
    killed: bool
    checkpoints: List[str] = field(default_factory=list)


def check_checkpoints(run_dir: Path) -> List[str]:
    """Load every checkpoint and weights file under ``run_dir`` (temp files aside); returns their names.

    Raises:
        AssertionError: one does not load (naming it and why).
    """
    from safetensors.torch import load_file

    from kdlab.engine.checkpoint import load_checkpoint

    names = []
    for path in sorted(run_dir.rglob("*")):
        if path.name.endswith(".tmp") or path.suffix not in (".ckpt", ".safetensors"):
            continue
        try:
            load_checkpoint(path) if path.suffix == ".ckpt" else load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            raise AssertionError(f"{path} left behind by a killed run does not load: {exc!r}") from exc
        names.append(str(path.relative_to(run_dir)))
    return names


def run_once(kdlab_args: Sequence[str], faults: Sequence[str] = (), kill_after_s: Optional[float] = None,
             cwd: Optional[Path] = None, timeout: float = 600) -> tuple:
    """Run the launcher once; SIGKILL it after ``kill_after_s`` seconds if it is still running.

    Returns:
        ``(returncode, killed, output)``; ``killed`` is True when this process or the fault killed it.
    """
    proc = subprocess.Popen(launcher_cmd(kdlab_args, faults), cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=kill_after_s if kill_after_s is not None else timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: DDP ranks die with their launcher
        out, _ = proc.communicate()
        return proc.returncode, True, out
    return proc.returncode, proc.returncode == -signal.SIGKILL, out


def run_until_done(kdlab_args: Sequence[str], run_dir: Path, *, seed: int, kills: int, run_time_s: float,
                   epochs: int, writes: int, cwd: Optional[Path] = None, max_starts: int = 30) -> List[Attempt]:
    """Start ``kdlab kdlab_args`` (a run of ``epochs`` epochs), kill it up to ``kills`` times, resume until
    it exits 0.

    Each start until ``kills`` of them were killed gets one fault, drawn from ``random.Random(seed)``: half
    SIGKILL inside a random one of the first ``writes`` atomic writes (before or after the rename), the
    others at a random time in ``(0, t)``, ``t`` being ``run_time_s`` (how long an uninterrupted start
    takes, start-up included) times the share of epochs still to run (at least a third: start-up does
    not shrink), so that timed kills land while it trains. After every start all checkpoints left behind
    must load. A start finds ``last.ckpt`` -> ``--resume``; none -> the run directory is deleted and the
    run starts fresh.

    The first fault is always a kill before the rename of write 4..``epochs + 1`` (writes 1-3 are
    config.yaml and epoch 1's best.ckpt and last.ckpt; every epoch writes at least last.ckpt), so at
    least one start resumes from an epoch strictly inside the run, whatever the machine's speed.

    Returns:
        the attempts, the last one the start that finished.

    Raises:
        AssertionError: a start failed without being killed (its output in the message), a checkpoint
            does not load, or the run did not finish within ``max_starts`` starts.
    """
    rng = random.Random(seed)
    attempts: List[Attempt] = []
    from kdlab.engine.checkpoint import load_checkpoint

    for i in range(max_starts):
        last = run_dir / "checkpoints" / "last.ckpt"
        resume = last.is_file()
        done = int(load_checkpoint(last)["epoch"]) if resume else 0
        if not resume and run_dir.exists():
            shutil.rmtree(run_dir)
        args = list(kdlab_args) + (["--resume"] if resume else [])
        faults: List[str] = []
        kill_after = None
        if sum(a.killed for a in attempts) < kills:
            if not attempts:  # one kill for sure inside training: write 4..epochs+1 (see above), before its rename
                faults = [f"--kill-at-write={rng.randint(4, epochs + 1)}"]
                fault = faults[0]
            elif rng.random() < 0.5:
                faults = [f"--kill-at-write={rng.randint(1, writes)}"] + (["--kill-after-replace"] if rng.random() < 0.5 else [])
                fault = " ".join(faults)
            else:
                kill_after = rng.uniform(0.0, run_time_s * max(1 / 3, (epochs - done) / epochs))
                fault = f"SIGKILL after {kill_after:.2f}s"
        else:
            fault = "none"
        rc, killed, out = run_once(args, faults, kill_after_s=kill_after, cwd=cwd)
        if not killed and rc != 0:
            raise AssertionError(f"start {i} ({fault}, resume={resume}) failed with exit code {rc}:\n{out[-4000:]}")
        left = check_checkpoints(run_dir) if run_dir.exists() else []
        attempts.append(Attempt(resume, done, fault, rc, killed, left))
        if rc == 0 and not killed:
            return attempts
    raise AssertionError(f"the run did not finish in {max_starts} starts: {attempts}")


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of ``fn(*args, **kwargs)``."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(launcher_main(sys.argv[1:]))
