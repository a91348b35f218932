"""``kdlab <command> [config.yaml] [key=value ...]``: the command-line interface.

Commands: ``train-teacher``, ``distill``, ``evaluate``, ``report``, ``list``, ``compare``, ``demo``, ``reproduce``;
for generators ``train-gan``, ``compress-gan``, ``evaluate-gan``.
A config argument is a YAML path or the name of a packaged recipe (``kdlab list recipes``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kdlab.cli_parser import apply_threads, build_parser, check_at_least, parse_numbers, run_threads  # noqa: F401  (public here too)
from kdlab.cli_parser import launcher_options
from kdlab.cli_print import print_gan, print_list, print_summary
from kdlab.config_fields import check_output_dir, check_output_file
from kdlab.commands import COMMANDS, command_for, run_command  # noqa: F401  (public here too)

RECIPES = Path(__file__).resolve().parent / "recipes"
console = Console(stderr=True, soft_wrap=True)


def resolve_config(arg: str) -> Path:
    """A YAML path, or a packaged recipe name (``demo_kd`` or ``demo_kd.yaml``).

    Raises:
        kdlab.config.ConfigError: neither exists (lists the packaged recipes).
    """
    from kdlab.config import ConfigError

    path = Path(arg)
    if path.is_file():
        return path
    recipe = RECIPES / (arg if arg.endswith(".yaml") else f"{arg}.yaml")
    if recipe.is_file():
        return recipe
    names = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    hint = "" if arg.endswith((".yaml", ".yml")) else " (an override is key=value, e.g. trainer.epochs=5)"
    raise ConfigError(f"config {arg!r} is neither a file nor a packaged recipe{hint}; recipes: {names}")


def _split(items: Sequence[str]):
    """Separate config paths from key=value overrides."""
    configs = [i for i in items if "=" not in i]
    overrides = [i for i in items if "=" in i]
    return configs, overrides


def _train(args: argparse.Namespace) -> int:
    """``kdlab train-teacher | distill | train-gan | compress-gan``: any method of the command's kind and role."""
    configs, overrides = _split(args.items)
    run_dir = run_command(args.command, [resolve_config(c) for c in configs], overrides, imports=args.imports,
                          resume=args.resume, overwrite=args.overwrite)
    summary = run_dir / "summary.json"
    if summary.is_file():  # rank 0 only under DDP
        if COMMANDS[args.command][0] == "generator":
            print_gan(json.loads(summary.read_text()), str(run_dir / "report.md"))
        else:
            print_summary(run_dir)
    return 0


def data_overrides(command: str, items: Sequence[str]) -> dict:
    """The ``data.*`` overrides of ``kdlab evaluate`` / ``evaluate-gan`` as typed values (YAML, as for
    training: ``data.classes=[0,1]`` is a list, not the text ``'[0,1]'``).

    Raises:
        kdlab.config.ConfigError: an item that is not ``data.<key>=<value>`` or not valid YAML.
    """
    from omegaconf import OmegaConf

    from kdlab.config import ConfigError, parse_overrides

    for item in items:
        if not item.partition("=")[0].startswith("data."):
            raise ConfigError(f"{command} takes data.* overrides only; got {item!r}")
    return dict(OmegaConf.to_container(parse_overrides(items)).get("data", {}))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from kdlab.runner import evaluate

    apply_threads(args.threads, args.weights)

    data = data_overrides("evaluate", args.overrides)
    sigmas = parse_numbers(args.sigmas, "--sigmas") if args.sigmas is not None else [0.0, 0.1, 0.2, 0.3, 0.4]
    if args.json:
        check_output_file(args.json, "--json")
    out = evaluate(args.weights, data, sigmas=sigmas)
    text = json.dumps(out, indent=2)
    if args.json:
        from kdlab.engine import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from kdlab.report import compare_runs, write_run_report

    runs = [Path(r) for r in args.runs]
    if args.out is not None:
        check_output_dir(args.out, "--out")
    if len(runs) == 1 and args.out is None:
        path = write_run_report(runs[0])
    else:
        path = compare_runs(runs, Path(args.out or "runs/report"), title=args.title)
    print(path)
    return 0


def cmd_evaluate_gan(args: argparse.Namespace) -> int:
    from kdlab.games.gan_eval import evaluate_generator
    from kdlab.runner import datasets_for, load_run_config

    check_at_least("--n-samples", args.n_samples, 2)
    check_at_least("--kid-subset-size", args.kid_subset_size, 1)
    check_at_least("--seed", args.seed, 0)
    apply_threads(args.threads, args.weights)
    if args.json:
        check_output_file(args.json, "--json")

    data = data_overrides("evaluate-gan", args.overrides)
    if "name" not in data:
        from kdlab.engine.checkpoint import read_safetensors_metadata
        from kdlab.engine.generators import resolve_generator

        path = resolve_generator(args.weights)
        if path.suffix == ".safetensors":
            data["name"] = read_safetensors_metadata(path).get("data", "fashion-mnist")
    cfg = load_run_config([{"data": {**data, "val_size": 0}}])
    out = evaluate_generator(args.weights, datasets_for(cfg), extractor=args.extractor, n_samples=args.n_samples,
                             seed=args.seed, kid_subset_size=args.kid_subset_size, teacher=args.teacher)
    text = json.dumps(out, indent=2, default=float)
    if args.json:
        from kdlab.engine import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from kdlab.data import DATASETS
    from kdlab.data.translation import TASKS
    from kdlab.experiments import EXPERIMENTS
    from kdlab.methods import METHODS
    from kdlab.models import GENERATORS, MODELS
    from kdlab.terms import TERMS, term_config

    def term_line(name: str) -> tuple:
        keys = ", ".join(f"{k}={v}" for k, v in term_config(name, None).items())
        cls = TERMS.get(name)
        return TERMS.describe()[name], keys, ", ".join(sorted(cls.roles)), ", ".join(sorted(cls.requires))

    def method_line(name: str) -> str:
        cls = METHODS.get(name)
        players = ", ".join(f"{p} ({r})" if p != r else p for p, r in cls.objectives.items())
        return (f"({cls.kind} {cls.role}: kdlab {command_for(cls.kind, cls.role)}; objective: {players}"
                f"{'' if cls.synth_unsupported else '; data.transfer=synth'}) " + METHODS.describe()[name])

    groups = {
        "models": {**MODELS.describe(), "torchvision:<name>": "any torchvision.models classifier (kdlab.models.hub)",
                   "timm:<name>": "any timm model (pip install 'kdlab[timm]'; kdlab.models.hub)"},
        "generators": GENERATORS.describe(),
        "methods": {n: method_line(n) for n in METHODS.names()},
        "terms": {n: term_line(n) for n in TERMS.names()},
        "data": {**DATASETS.describe(), **TASKS.describe()},
        "experiments": EXPERIMENTS.describe(),
        "recipes": {p.stem: p.read_text().split("\n", 1)[0].lstrip("# ") for p in sorted(RECIPES.glob("*.yaml"))},
        "compare-specs": {p.stem: p.read_text().split("\n", 1)[0].lstrip("# ")
                          for p in sorted((RECIPES / "compare").glob("*.yaml"))},
    }
    if args.what and args.what not in groups:
        raise ValueError(f"unknown list {args.what!r}; accepted: {', '.join(groups)}")
    print_list({n: e for n, e in groups.items() if not args.what or n == args.what}, as_json=args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kdlab.compare import load_spec, run_compare
    from kdlab.demo import SPEC

    result = run_compare(load_spec(SPEC, quick=args.quick), Path(args.out_dir), args.overrides, jobs=args.jobs,
                         launcher=args.launcher, launcher_options=launcher_options(args))
    Console().print(f"\n[bold green]Demo report:[/] {result.report}")
    return 1 if result.failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from kdlab.compare import load_spec, run_compare
    from kdlab.config import ConfigError

    specs, overrides = _split(args.items)
    if len(specs) > 1:
        raise ConfigError(f"compare takes one spec; got {', '.join(specs)} (other items must be key=value)")
    spec = load_spec(specs[0] if specs else None, methods=args.method or (), teacher=args.teacher, seeds=args.seeds,
                     name=args.name, quick=args.quick, scale=args.scale)
    result = run_compare(spec, Path(args.out_dir), overrides, jobs=args.jobs, launcher=args.launcher,
                         launcher_options=launcher_options(args))
    if result.failed:
        console.print(f"[bold red]{result.failed} of {len(result.outcomes)} runs failed[/] (see their rows)")
    Console().print(f"\n[bold green]Comparison report:[/] {result.report}")
    return 1 if result.failed else 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from kdlab.experiments import EXPERIMENTS, SCALES

    if args.scale not in SCALES:
        raise ValueError(f"unknown scale {args.scale!r}; accepted: {', '.join(SCALES)}")
    seeds = parse_numbers(args.seeds, "--seeds", kind=int, unique=True) if args.seeds is not None else None
    from kdlab.compare.launch import launcher_settings

    fn = EXPERIMENTS.get(args.experiment)
    if getattr(fn, "spec_path", None) is not None:  # a declarative spec (kdlab.experiments.specs)
        report = fn(Path(args.out_dir), args.scale, seeds, list(args.overrides),
                    results=Path(args.out) if args.out else None, jobs=args.jobs, launcher=args.launcher,
                    launcher_options=launcher_options(args))
    elif args.out is not None or args.jobs is not None:
        raise ValueError(f"--out / --jobs: experiment {args.experiment!r} is not a declarative spec (recipes/experiments/"
                         f"); it writes its report under --out-dir and runs one run at a time")
    else:
        settings = launcher_settings(args.launcher, None, launcher_options(args))
        if settings is None:
            report = fn(Path(args.out_dir), args.scale, seeds, list(args.overrides))
        else:  # each cell that is not reused: one submitted job, waited for (the grid's cells depend on each other)
            from kdlab.compare.launch import cell_launcher, job_folder
            from kdlab.experiments import grid

            out = Path(args.out_dir)
            with grid.launched_by(cell_launcher(settings, job_folder(settings, out), out / "logs")):
                report = fn(out, args.scale, seeds, list(args.overrides))
    Console().print(f"\n[bold green]Report:[/] {report}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from kdlab.export import ExportMismatchError, export_run

    check_at_least("--max-test", args.max_test, 1)
    apply_threads(args.threads, args.weights)

    try:
        rep = export_run(args.weights, args.format, Path(args.out) if args.out else None, atol=args.atol,
                         max_test=args.max_test, force=args.force)
    except ImportError as exc:
        report_error("error", exc)
        return 2
    except ExportMismatchError as exc:
        report_error("mismatch", exc)
        return 1
    check = rep["check"]
    table = Table(title=f"{rep['kind']} -> {rep['format']}: {rep['file']} ({rep['bytes']:,} bytes)")
    for col in ("check", "value"):
        table.add_column(col)
    what = "test images" if rep["kind"] == "classifier" else "fixed latents"
    table.add_row(f"max |difference| to PyTorch ({check['n']:,} {what})", f"{check['max_abs_diff']:.3g} (atol {rep['atol']:g})")
    if "top1_agreement" in check:
        table.add_row("top-1 agreement", f"{check['top1_agreement']:.2f}%")
    for b, lat in rep["latency_ms"].items():
        table.add_row(f"latency, batch {b} (ms, {rep['threads']} threads)",
                      f"PyTorch {lat['pytorch']:.3f} | {rep['format']} {lat[rep['format']]:.3f}")
    Console().print(table)
    return 0


def interrupted_line(exc: BaseException, command: str, argv: List[str]) -> str:
    """The one line printed on Ctrl-C: where the run stopped and the command that resumes it."""
    again = " ".join(["kdlab", *[a for a in argv if a != "--overwrite"]])
    last = getattr(exc, "last_checkpoint", None)
    if command in ("compare", "reproduce", "demo"):  # grids of runs: finished cells are reused on a rerun
        return (f"interrupted: kdlab {command} stopped; run `{again}` again to go on: its finished runs are reused "
                f"and the others train again")
    if command not in COMMANDS:
        return f"interrupted: kdlab {command} stopped"
    if last is None and hasattr(exc, "last_checkpoint"):
        return f"interrupted: {exc}; no epoch had completed, so nothing to resume: start again with `{again} --overwrite`"
    if last is None:
        return f"interrupted: kdlab {command} stopped; resume with `{again}{'' if '--resume' in argv else ' --resume'}`"
    return (f"interrupted: {exc}; resume from {last} (the last completed epoch) with "
            f"`{again}{'' if '--resume' in argv else ' --resume'}`")


def out_of_memory(exc: BaseException) -> str:
    """The message for an allocation larger than this machine (``MemoryError``, torch's "can't allocate
    memory" or CUDA's "out of memory"): the input asks too much, it is no bug. ``""`` for other exceptions."""
    text = str(exc)
    if not (isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()):
        return ""
    what = text.split("allocate memory:")[-1].strip().splitlines()[0] if text else type(exc).__name__
    return (f"out of memory ({what}): this command needs more memory than this machine has; use a smaller model "
            f"(model.kwargs), data.batch_size, data.image_size / data.transfer_size or data set")


def report_error(label: str, exc: BaseException) -> None:
    """Print ``label: message`` on stderr, the message verbatim (no rich markup: ``[a, b]`` stays)."""
    console.print(Text.assemble((f"{label}: ", "bold red"), str(exc)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``kdlab`` console script; returns the exit code.

    Exit codes: 0 done; 2 a bad input (argument, config, data, weights file...): the message is printed
    verbatim, without a traceback; 1 a run stopped on a non-finite loss, an export whose outputs differ,
    or a bug in kdlab (an unexpected exception: its traceback and a line saying it is a bug); 130 / 143
    Ctrl-C / SIGTERM (a training run stops at the next step boundary and says how to resume).
    """
    import traceback

    from kdlab.config import ConfigError
    from kdlab.engine import NonFiniteLossError
    from kdlab.registry import UnknownNameError

    parser = build_parser()
    try:
        # key=value items may come after options (``reproduce X --scale small a=b``): argparse leaves
        # positionals that follow an option unparsed, so they are appended to the command's list here.
        args, rest = parser.parse_known_args(argv)
    except SystemExit as exc:  # argparse printed its usage message; --help exits 0
        return exc.code if isinstance(exc.code, int) else 2
    bad = [r for r in rest if r.startswith("-") or "=" not in r]
    dest = "items" if hasattr(args, "items") else "overrides" if hasattr(args, "overrides") else None
    if bad or (rest and dest is None):
        report_error("error", ConfigError(
            f"kdlab {args.command}: unrecognized argument(s) {' '.join(bad or rest)}; accepted: the options of "
            f"`kdlab {args.command} --help`" + (" and key=value overrides" if dest else "")))
        return 2
    if rest:
        setattr(args, dest, list(getattr(args, dest)) + rest)
    handlers = {
        **{c: _train for c in COMMANDS},
        "evaluate": cmd_evaluate,
        "evaluate-gan": cmd_evaluate_gan,
        "export": cmd_export,
        "report": cmd_report,
        "list": cmd_list,
        "demo": cmd_demo,
        "compare": cmd_compare,
        "reproduce": cmd_reproduce,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM during training: one line, no traceback
        console.print(Text(interrupted_line(exc, args.command, list(sys.argv[1:] if argv is None else argv)),
                           style="bold yellow"))
        return 143 if getattr(exc, "signal_name", None) == "SIGTERM" else 130  # 128 + the signal's number
    except NonFiniteLossError as exc:
        report_error("stopped", exc)
        return 1
    # the user's input is wrong: config keys and values, names, files, weights (WeightsError), data
    except (ConfigError, UnknownNameError, ValueError, OSError) as exc:
        report_error("error", exc)
        return 2
    except Exception as exc:  # anything else is a bug (show where it happened), unless memory ran out
        if out_of_memory(exc):
            report_error("error", MemoryError(out_of_memory(exc)))
            return 2
        traceback.print_exc()
        console.print(Text("kdlab: this is a bug in kdlab, not a problem with your input (an unexpected exception, "
                           "traceback above); please report it with the command you ran", style="bold red"))
        return 1


if __name__ == "__main__":
    sys.exit(main())
