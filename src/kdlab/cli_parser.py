"""The ``kdlab`` command line: the argument parser and the parsing of option values.

:func:`build_parser` declares every subcommand and option (``kdlab.cli`` dispatches them);
:func:`parse_numbers` / :func:`check_at_least` turn option strings into checked numbers with messages
that name the option and what is accepted; :func:`apply_threads` applies ``--threads`` (or the run's own).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional



def parse_numbers(text: str, option: str, kind: type = float, least: float = 0, unique: bool = False) -> List:
    """``"0,0.1,0.2"`` -> ``[0.0, 0.1, 0.2]`` for a comma-separated option.

    Raises:
        kdlab.config.ConfigError: an item that is not a finite number of ``kind``, one below ``least``, or
            (``unique``) a repeated item (names the option, the item and what is accepted).
    """
    import math

    from kdlab.config import ConfigError

    what = "integers" if kind is int else "finite numbers"
    accepted = f"accepted: comma-separated {what} >= {least:g} (e.g. {'0,1,2' if kind is int else '0,0.1,0.2'})"
    out = []
    for item in text.split(","):
        try:
            value = kind(item.strip())
        except ValueError:
            raise ConfigError(f"{option} {text!r}: {item.strip()!r} is not a number; {accepted}") from None
        if not math.isfinite(value) or value < least:
            raise ConfigError(f"{option} {text!r}: {item.strip()} is out of range; {accepted}")
        if unique and value in out:
            raise ConfigError(f"{option} {text!r} repeats {item.strip()}; {accepted.replace('comma-separated', 'distinct')}")
        out.append(value)
    return out


def check_at_least(option: str, value: Optional[float], least: float) -> None:
    """Raise :class:`kdlab.config.ConfigError` if a numeric option ``value`` (None: unset) is below ``least``."""
    from kdlab.config import ConfigError

    if value is not None and not value >= least:
        raise ConfigError(f"{option} = {value}; accepted: a number >= {least:g}")



def _run_dir_flags(p: argparse.ArgumentParser) -> None:
    """``--resume`` / ``--overwrite``: what a training command does with an existing ``runs/<name>``."""
    p.add_argument("--resume", action="store_true",
                   help="continue runs/<name> from checkpoints/last.ckpt (may change optim.lr, trainer.epochs, "
                        "logging, threads, devices: kdlab.engine.rundir.SAFE_ON_RESUME)")
    p.add_argument("--overwrite", action="store_true",
                   help="move an existing runs/<name> aside (to runs/<name>.old-<timestamp>) and start again")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a plugin first (a dotted module name or a .py file; repeatable; after the config's "
                        "imports: list): its models, terms, methods and data sets can then be named")


#: the launcher flags (dest -> type, help); their dests are the keys of a compare spec's ``launcher:`` section
LAUNCHER_FLAGS = {
    "executor": (str, "submitit executor: slurm, local (jobs are processes here) or auto (slurm where srun exists)"),
    "partition": (str, "SLURM partition of the jobs (default: the cluster's)"),
    "time": (int, "minutes each job may run (default 60); a job timed out or preempted is resubmitted and resumes"),
    "gpus_per_run": (int, "GPUs of each job (default 0)"),
    "cpus_per_run": (int, "CPU cores of each job (default 1; a CPU run gets trainer.threads = this)"),
    "mem_gb": (float, "memory of each job in GB (default: the cluster's)"),
    "max_parallel": (int, "jobs submitted at once (default: all on SLURM, cores // cpus-per-run locally)"),
}


def _launcher_flags(p: argparse.ArgumentParser) -> None:
    """``--launcher`` and the submitit settings (``kdlab.compare.launch``; docs/launchers.md)."""
    p.add_argument("--launcher", default="local",
                   help="local (this machine, default) or submitit (each run one job of a scheduler, e.g. SLURM; "
                        "pip install submitit); its settings: the spec's launcher: section and the flags below")
    for dest, (kind, help_) in LAUNCHER_FLAGS.items():
        p.add_argument("--" + dest.replace("_", "-"), dest=dest, type=kind, default=None, help=help_)


def launcher_options(args: argparse.Namespace) -> dict:
    """The launcher flags given on the command line, by spec key (None: not given)."""
    return {dest: getattr(args, dest) for dest in LAUNCHER_FLAGS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdlab", description="Knowledge distillation of classifiers and GAN generators.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("train-teacher", "train a teacher (supervised)"), ("distill", "distill a student from a teacher")):
        p = sub.add_parser(name, help=help_, description=f"{help_}. ITEMS: config YAML paths or recipe names, then key=value overrides.")
        p.add_argument("items", nargs="*", help="config.yaml / recipe name, then key=value overrides")
        _run_dir_flags(p)
    for name, help_ in (("train-gan", "train a teacher GAN (DCGAN/WDCGAN: gan | wgan | wgan-gp; image-to-image: "
                                      "pix2pix on paired, cyclegan on unpaired tasks, chosen by the data when "
                                      "method is not set)"),
                        ("compress-gan", "distill a small student generator from a teacher generator (MSE or joint loss)")):
        p = sub.add_parser(name, help=help_, description=f"{help_}. ITEMS: config YAML paths or recipe names, then key=value overrides.")
        p.add_argument("items", nargs="*", help="config.yaml / recipe name, then key=value overrides")
        _run_dir_flags(p)
    p = sub.add_parser("evaluate-gan", help="FID/KID/IS/variance of Laplacian of any generator checkpoint vs a data set")
    p.add_argument("weights", help="GAN run directory or generator .safetensors / .ckpt")
    p.add_argument("overrides", nargs="*", help="data.* overrides, e.g. data.name=fashion-mnist data.max_test=2000")
    p.add_argument("--extractor", default=None, help="classifier run dir / .safetensors on the same data set, or 'inception'")
    p.add_argument("--teacher", default=None, help="a teacher generator: adds the fidelity FID (student vs teacher samples)")
    p.add_argument("--n-samples", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed latents")
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the run's trainer.threads, else torch's default)")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p = sub.add_parser("evaluate", help="test accuracy, noise robustness, params, MACs, latency of a classifier")
    p.add_argument("weights", help="run directory or .safetensors / .ckpt file")
    p.add_argument("overrides", nargs="*", help="data.* overrides, e.g. data.name=fashion-mnist")
    p.add_argument("--sigmas", default=None, help="comma-separated noise std values (normalised units)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the run's trainer.threads, else torch's default)")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p = sub.add_parser("export", help="write a run's network as ONNX or TorchScript, check its outputs, time it")
    p.add_argument("weights", help="run directory or kdlab .safetensors / .ckpt (classifier or generator)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--out", default=None, help="output file (default: <run>/exports/<weights name>.onnx|.pt)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file (never a run's own files)")
    p.add_argument("--atol", type=float, default=1e-3, help="largest accepted |difference| to PyTorch's outputs")
    p.add_argument("--max-test", type=int, default=None, help="check on this many test images (default: all)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the run's trainer.threads, else torch's default)")
    p = sub.add_parser("report", help="report.md for one run, or a side-by-side comparison of several")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", default=None, help="output directory of a comparison report")
    p.add_argument("--title", default="kdlab comparison")
    p = sub.add_parser("list", help="list models, generators, methods, terms, data sets, experiments, recipes, compare-specs")
    p.add_argument("what", nargs="?", default=None)
    p.add_argument("--json", action="store_true", help="print the entries as JSON (full names and descriptions)")
    p = sub.add_parser("reproduce", help="rerun a paper's table or figure (kdlab list experiments)")
    p.add_argument("experiment")
    p.add_argument("--scale", default="small", help="small (2 CPU cores) or full (the paper's protocol)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the experiment's)")
    p.add_argument("--out-dir", default="runs", help="parent of the run directories")
    p.add_argument("--out", default=None, help="results root of a spec experiment: its report, results.json, plots, "
                                                "configs and environment.json go to <out>/<experiment>/<scale>/ "
                                                "(default: --out-dir)")
    p.add_argument("--jobs", type=int, default=None, help="parallel runs of a spec experiment (see kdlab compare --help)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every run")
    _launcher_flags(p)
    p = sub.add_parser("demo", help="teacher + three students on real Fashion-MNIST, with a report (kdlab compare demo)")
    p.add_argument("--out-dir", default="runs")
    p.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    p.add_argument("--jobs", type=int, default=None, help="parallel student runs (see kdlab compare --help)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every demo run")
    _launcher_flags(p)
    p = sub.add_parser("compare", help="methods x seeds on one teacher, student and data budget: one report",
                       description="Run every method row with every seed (finished runs of the same config are "
                                   "reused) and write <out-dir>/<name>/report.md. ITEMS: a compare spec (YAML path or "
                                   "packaged name, e.g. demo), then key=value overrides of every run.")
    p.add_argument("items", nargs="*", help="[SPEC.yaml] then key=value overrides of every run")
    p.add_argument("--method", action="append", metavar="LABEL=SOURCE",
                   help="add a row: a recipe / YAML and/or key=value sets, e.g. 'kd-t8=demo_kd "
                        "objective.student.kd.temperature=8' (repeatable; after the spec's rows)")
    p.add_argument("--teacher", default=None, help="a teacher run dir / weights file, or a recipe to train once")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the spec's, else 0,1,2)")
    p.add_argument("--jobs", type=int, default=None,
                   help="parallel student runs (processes); CPU threads are split between them "
                        "(trainer.threads = cores // jobs). Default: one per CUDA device when the runs use CUDA, else 1")
    p.add_argument("--out-dir", "--out", dest="out_dir", default="runs", help="parent of the runs and of <name>/")
    p.add_argument("--name", default=None, help="the comparison's name (run names <name>-<row>-s<seed>)")
    p.add_argument("--quick", action="store_true", help="the spec's quick variant (one seed, short runs)")
    _launcher_flags(p)
    p.add_argument("--scale", default=None, help="the entry of the spec's 'scales:' to apply (default: its first)")
    return parser


def run_threads(weights: str) -> Optional[int]:
    """``trainer.threads`` of the run that ``weights`` belongs to (its ``config.yaml``: in the run directory
    itself, beside the weights file, or above ``checkpoints/``); None when there is none.

    Raises:
        kdlab.config.ConfigError: that ``config.yaml`` is not valid YAML (file, line, column), or its
            ``trainer.threads`` is no integer >= 1.
    """
    from omegaconf import OmegaConf

    from kdlab.config import ConfigError, load_yaml

    path = Path(weights)
    for d in ([path] if path.is_dir() else [path.parent, path.parent.parent]):
        if (d / "config.yaml").is_file():
            threads = OmegaConf.select(load_yaml(d / "config.yaml"), "trainer.threads")
            if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
                raise ConfigError(f"{d / 'config.yaml'}: trainer.threads = {threads!r}; accepted: an integer >= 1 "
                                  f"(or pass --threads N)")
            return threads or None
    return None


def apply_threads(threads: Optional[int], weights: str) -> None:
    """``torch.set_num_threads``: ``--threads`` if given, else the run's ``trainer.threads`` (see
    :func:`run_threads`); unchanged when neither is set.

    Raises:
        kdlab.config.ConfigError: ``threads`` < 1.
    """
    import torch

    check_at_least("--threads", threads, 1)
    threads = threads or run_threads(weights)
    if threads:
        torch.set_num_threads(int(threads))
