"""One run end to end: config -> data + method -> engine loop -> metrics -> run directory.

Writes the run-directory contract of DESIGN.md: ``config.yaml``, ``metrics.jsonl``,
``summary.json``, ``checkpoints/{last,best}.ckpt``, ``<teacher|student>.safetensors`` (the
best-on-validation weights), ``report.md`` + ``plots/``, and TensorBoard events in ``tb/``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from kdlab.config import ConfigError, load_config, to_yaml
from kdlab.data import TRANSFER_LABELLED, TRANSFER_NONE, TRANSFER_SYNTH, build_datasets, make_loader, transfer_info
from kdlab.data.transfer import EpochPasses, NoData
from kdlab.engine import Trainer, atomic_write_text, make_fabric
from kdlab.engine.env import git_commit, versions
from kdlab.methods import METHODS
from kdlab.games.evaluation import model_profile, heldout_metrics
from kdlab.games.synthesizer import epoch_passes


def load_run_config(sources: Sequence[Any], overrides: Sequence[str] = (), imports: Sequence[Any] = ()):
    """:func:`kdlab.config.load_config` with each method's ``players`` and ``eval`` schemas; ``objective``
    expanded to each player's full term configs (defaults filled in, keys checked); the old ``loss``
    section refused with each key's new place.

    First the installed ``kdlab.plugins`` entry points and the plugins of the config's ``imports`` key, then
    ``imports`` (the CLI's ``--import``), are imported (:mod:`kdlab.plugins`), so their models, terms, methods
    and data sets are known to every check; the resolved ``imports`` holds each one's ``{module, file, sha256}``.

    Raises:
        PluginImportError: an import that is missing or raised (the user's traceback under one line).
        ConfigError: as :func:`kdlab.config.load_config`; a ``loss`` key (gives its new place); an
            ``objective`` player the method does not have (names its players); an unknown term or term
            key, or a term that cannot serve that player (lists the accepted ones).
    """
    from kdlab.games.objectives import players_schema
    from kdlab.plugins import import_plugins, load_entry_points

    load_entry_points()
    records = import_plugins(list(_raw_imports(sources, overrides)) + list(imports))
    sources = [*sources, {"imports": records}]  # the records replace the entries, overrides included
    overrides = [o for o in overrides if o.partition("=")[0].strip() != "imports"]
    return load_config(sources, overrides, schemas=lambda m, raw: (players_schema(method_class(m), raw), method_class(m).Eval),
                       prepare=_prepare)


def _raw_imports(sources: Sequence[Any], overrides: Sequence[str]) -> List[Any]:
    """The ``imports`` entries of the config files, mappings and overrides, before any schema (their plugins
    may define the names the schema checks); a later layer's list replaces an earlier one's, as in the merge.
    A relative ``.py`` path in a YAML file is taken from that file's folder when the file is there."""
    from omegaconf import OmegaConf

    from kdlab.config import load_yaml, parse_overrides
    from kdlab.plugins import is_path

    found: List[Any] = []
    layers = [(load_yaml(Path(s)), Path(s).parent) if isinstance(s, (str, Path)) else (OmegaConf.create(s), None)
              for s in sources if not isinstance(s, (str, Path)) or Path(s).is_file()]
    for layer, folder in [*layers, (parse_overrides(overrides), None)]:
        value = layer.get("imports")
        if value is None:
            continue
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if not isinstance(value, list):
            raise ConfigError(f"config key 'imports' = {value!r}; accepted: a list of dotted module names or .py files")
        found = [str(folder / e) if folder is not None and isinstance(e, str) and is_path(e) and not Path(e).is_absolute()
                 and (folder / e).is_file() else e for e in value]
    return found


#: methods that became recipes of others: name -> what to use instead
RETIRED_METHODS = {
    name: (f"the recipe {name} (method distill with data.transfer=synth: a generator whose objective.generator terms "
           f"make the student's images): kdlab distill {name} [key=value ...]; kdlab list recipes")
    for name in ("mosaickd", "dfad", "dafl", "deepinversion")}


def method_class(name: str) -> type:
    """The registered method class ``name``.

    Raises:
        ConfigError: a method that became a recipe (names the recipe).
        UnknownNameError: an unknown name (lists the registered ones).
    """
    if name in RETIRED_METHODS and name not in METHODS:
        raise ConfigError(f"method {name!r} is now {RETIRED_METHODS[name]}")
    return METHODS.get(name)


def _prepare(method: str, raw: Any) -> None:
    """Refuse the old ``loss`` section with each key's new place; fill each player's objective."""
    from kdlab.games.objectives import (check_transfer_source, expand_objective, objective_roles, refuse_loss_section,
                                         refuse_moved_players_keys)

    cls = method_class(method)
    if raw.get("loss") is not None:
        refuse_loss_section(cls, method, raw.loss)
    check_transfer_source(cls, raw)
    check_data_kind(cls, method, raw)
    refuse_moved_players_keys(cls, method, raw)
    raw["objective"] = expand_objective(cls, method, raw.get("objective"), objective_roles(cls, raw))


def check_data_kind(cls: Any, method: str, raw: Any) -> None:
    """A classifier method needs a classification data set: an image-to-image task (``edges2fashion``,
    ``paired-folder:...``) is refused before anything is written.

    Raises:
        ConfigError: naming the data set, the method and what to use instead.
    """
    from kdlab.data import DATASETS
    from kdlab.data.translation import is_translation

    name = (raw.get("data") or {}).get("name") if raw is not None else None
    if cls.kind == "classifier" and is_translation(name):
        raise ConfigError(f"data.name = {name!r} is an image-to-image task; method {method!r} trains a classifier "
                          f"on a labelled classification set: accepted: {', '.join(DATASETS.names())} "
                          f"(or imagefolder:<path> with one folder per class); translation teachers: kdlab train-gan")


def datasets_for(cfg: Any):
    """The train/val/test splits and the transfer source a config's ``data`` section asks for."""
    import inspect

    from omegaconf import OmegaConf

    accepted = inspect.signature(build_datasets).parameters
    return build_datasets(**{k: v for k, v in OmegaConf.to_container(cfg.data).items() if k in accepted})


def check_transfer(cfg: Any, method: Any) -> None:
    """Data-free runs (``data.transfer=none``) need a method that synthesises its batches; ``method`` is
    the method class (checked before building: a plain ``False``) or the built method. Privileged
    views exist only for the labelled training set.

    Raises:
        ConfigError: naming the method and the methods that can run data-free; privileged + another transfer set.
    """
    check_selection(cfg)
    if cfg.data.privileged and cfg.data.transfer not in (None, TRANSFER_LABELLED):
        raise ConfigError(f"data.privileged = {cfg.data.privileged!r} gives the teacher a view of the labelled training "
                          f"images; data.transfer = {cfg.data.transfer!r} has none: drop one of them")
    if cfg.data.transfer != TRANSFER_NONE or getattr(method, "synthesizes", False) is not False:
        check_budget_source(cfg.data)
        return
    able = [n for n in METHODS.names() if getattr(METHODS.get(n), "synthesizes", False) is not False]
    synth = [n for n in METHODS.names() if not METHODS.get(n).synth_unsupported]
    raise ConfigError(f"data.transfer = 'none' (data-free): method {cfg.method!r} trains on transfer data and does not "
                      f"synthesise its batches here; methods that can run data-free: {', '.join(able) or '(none)'}; "
                      f"a classifier student ({', '.join(synth)}) learns data-free from a generator with "
                      "data.transfer=synth (recipes dfad, dafl, deepinversion)")


def check_budget_source(data: Any, where: str = "") -> None:
    """``data.n_per_class`` sizes the labelled training subset; beside a transfer data set (a name or an
    image folder) the student never sees that subset, so the budget would be silently ignored. (With
    ``synth`` or ``none`` the transfer batches are generated; the refusal is for data sources.)

    Raises:
        ConfigError: naming both values and the key that sizes the transfer set (``where`` prefixes it).
    """
    if data.n_per_class is not None and data.transfer not in (None, TRANSFER_LABELLED, TRANSFER_NONE, TRANSFER_SYNTH):
        raise ConfigError(f"{where}data.n_per_class = {data.n_per_class} is ignored with data.transfer = "
                          f"{data.transfer!r} (the student learns from the transfer set, sized by data.transfer_n): "
                          f"drop one of them")


def check_selection(cfg: Any) -> None:
    """``data.transfer_select`` needs ``data.transfer_k``, an unlabelled out-of-domain transfer source and a
    teacher; ``data.transfer_k`` alone is refused (the size check against the set comes with the data).

    Raises:
        ConfigError: naming the key, its value and what it needs.
    """
    select, k, source = cfg.data.transfer_select, cfg.data.transfer_k, cfg.data.transfer
    if select == "none":
        if k is not None:
            raise ConfigError(f"data.transfer_k = {k} is only used with data.transfer_select (entropy | balanced); "
                              f"set one, or use data.transfer_n for a random subset")
        return
    if k is None:
        raise ConfigError(f"data.transfer_select = {select!r} needs data.transfer_k, the number of images to keep "
                          f"(an int > 0)")
    if source in (None, TRANSFER_LABELLED, TRANSFER_NONE):
        raise ConfigError(f"data.transfer_select = {select!r} needs an unlabelled out-of-domain transfer source "
                          f"(data.transfer = a data set name or imagefolder:<path>); data.transfer = "
                          f"{source or TRANSFER_LABELLED!r} is "
                          f"{'data-free' if source == TRANSFER_NONE else 'the labelled training subset'}")
    if not cfg.teacher.checkpoint:
        raise ConfigError(f"data.transfer_select = {select!r} ranks the transfer images by the teacher: set "
                          f"teacher.checkpoint=runs/<teacher run>")


def select_transfer_for(cfg: Any, data: Any, fabric: Any) -> Dict[str, Any]:
    """Replace ``data.transfer`` by the ``data.transfer_k`` images that ``data.transfer_select`` keeps,
    ranked by the teacher (:func:`kdlab.data.selection.select_transfer`), cached under
    ``<out_dir>/.cache/selection/``; rank 0 selects first, the other ranks then read its cache.

    Returns:
        what ``summary.json`` records: rule, k, the source size and the cache file.

    Raises:
        ConfigError: ``data.transfer_k`` larger than the transfer set (checked before the teacher loads).
        ValueError / FileNotFoundError: the teacher is missing or does not fit the data set (:func:`load_network`).
    """
    from kdlab.data.selection import select_transfer, selection_cache_path
    from kdlab.engine import file_sha256, load_network

    d = cfg.data
    n_source = len(data.transfer)
    if d.transfer_k > n_source:  # before loading the teacher
        raise ConfigError(f"data.transfer_k = {d.transfer_k} is larger than the transfer set's {n_source} images "
                          f"(data.transfer = {d.transfer!r}); accepted: 1..{n_source}")
    teacher, path = load_network(cfg.teacher.checkpoint, data.spec, what="teacher (for data.transfer_select)",
                                 hint="teacher.checkpoint=runs/<teacher run>")
    teacher = teacher.to(fabric.device).eval()

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(teacher(x.to(fabric.device)).float(), dim=1)

    # everything that changes the images or their normalisation, and the teacher's exact weights
    key = {"teacher_sha256": file_sha256(path), "data": d.name, "image_size": d.image_size, "transfer": d.transfer,
           "transfer_n": d.transfer_n, "subset_seed": d.subset_seed if d.transfer_n else None,
           "transfer_channels": d.transfer_channels, "transfer_size": d.transfer_size,
           **({"synth_real": d.synth_real} if d.synth_real else {})}  # the OOD set of data.transfer=synth
    cache_dir = Path(cfg.out_dir) / ".cache" / "selection"
    for turn in (True, False):  # rank 0 runs the teacher, then the others reuse its cache file
        if fabric.is_global_zero == turn:
            subset = select_transfer(data.transfer, predict, d.transfer_k, d.transfer_select, cache_dir, key,
                                     batch_size=d.eval_batch_size, log=print if fabric.is_global_zero else None)
        if fabric.world_size > 1 and turn:
            fabric.barrier()
    data.transfer = subset
    return {"rule": d.transfer_select, "k": d.transfer_k, "n_source": n_source,
            "cache": str(selection_cache_path(cache_dir, key, d.transfer_select, d.transfer_k))}


def train(cfg: Any, resume: bool = False, overwrite: bool = False, callbacks: Sequence[Any] = ()) -> Path:
    """Run ``cfg`` and write its run directory; returns ``runs/<name>``.

    ``callbacks``: :class:`kdlab.engine.callbacks.Callback` s run inside the engine loop with a read-only
    view of the players (per step, per epoch; see :mod:`kdlab.engine.callbacks` for which hook runs on
    which rank). They are Python objects, not config: they do not enter ``config.yaml``.

    The run directory belongs to this run while it lasts (``<out_dir>/<name>.lock``, taken by rank 0,
    released at the end, also on errors). A directory that already holds a run needs ``resume``
    (continue from ``checkpoints/last.ckpt``; the config may change only in the keys
    :data:`kdlab.engine.rundir.SAFE_ON_RESUME` lists) or ``overwrite`` (the old run is moved to
    ``<name>.old-<timestamp>``). Nothing is written in the run directory before every check has
    passed (run directory, data, method).

    Raises:
        kdlab.engine.runlock.RunDirError: the run name leaves ``out_dir``; another live process holds the
            lock (names its pid); an existing run without ``resume``/``overwrite`` (says which to use); a
            config change that ``resume`` may not make (names the key).
        FileNotFoundError: ``resume`` without ``checkpoints/last.ckpt``.
        kdlab.engine.NonFiniteLossError: a loss became NaN/inf (``last.ckpt`` is kept).
        kdlab.engine.callbacks.CallbackError: a callback raised (names it; ``last.ckpt`` is kept).
        kdlab.data.DataNotFoundError: the data set is missing offline.
    """
    from kdlab.engine import rundir, runlock

    t0 = time.perf_counter()
    run_dir = rundir.run_directory(cfg.out_dir, cfg.name)
    config_yaml = to_yaml(cfg)
    fabric = make_fabric(cfg.trainer, run_dir)
    lock = runlock.RunLock(run_dir)
    try:
        plan, error = None, None
        if fabric.is_global_zero:  # only rank 0 owns and checks the run directory; the others follow its verdict
            try:
                lock.acquire()
                plan = rundir.check_run_dir(run_dir, config_yaml, resume=resume, overwrite=overwrite)
            except Exception as exc:
                error = exc
        if fabric.world_size > 1:  # a message, not the exception: every rank stops, rank 0 with the original
            message = fabric.broadcast(None if error is None else str(error), src=0)
            if message is not None and error is None:
                raise runlock.RunDirError(message)
        if error is not None:
            raise error
        finished = plan is not None and plan.finished
        if fabric.world_size > 1:
            finished = bool(fabric.broadcast(finished, src=0))
        if finished:  # --resume of a finished run, same config: keep its summary (a rerun of its end lost data)
            if fabric.is_global_zero:
                if not (run_dir / "report.md").is_file():  # stopped between summary.json and report.md
                    from kdlab.report import write_run_report

                    write_run_report(run_dir)
                print(f"--resume: {str(run_dir)!r} already finished its {cfg.trainer.epochs} epochs (summary.json); "
                      f"nothing to resume: raise trainer.epochs to train it on", file=sys.stderr)
            return run_dir
        method_cls = METHODS.get(cfg.method)
        fabric.seed_everything(cfg.seed)
        check_transfer(cfg, method_cls)
        data = datasets_for(cfg)
        if fabric.world_size > 1 and isinstance(data.transfer, NoData):
            # data.steps_per_epoch counts each rank's batches: the global batch's rows, as one process's NoData
            data.transfer = NoData(len(data.transfer) * fabric.world_size)
        selection = select_transfer_for(cfg, data, fabric) if cfg.data.transfer_select != "none" else None
        # an epoch as the published code counts it (MosaicKD: synth_every student steps per OOD batch)
        passes = epoch_passes(cfg)
        train_set = EpochPasses(data.transfer, passes, int(cfg.data.batch_size)) if passes > 1 else data.transfer
        method = method_cls(cfg, data.spec, transfer_info(train_set))
        check_transfer(cfg, method)
        if plan is not None:
            plan.commit(config_yaml)
        if fabric.world_size > 1:  # the directory is in place (an old run moved aside) before any rank writes
            fabric.barrier()
        result = Trainer(cfg, run_dir, fabric, config_yaml).fit(
            method, train_set, data.val, resume=resume, resume_state=plan.state if plan is not None else None,
            callbacks=callbacks)
        if fabric.is_global_zero:
            _finish(cfg, run_dir, data, selection, method, result, fabric, t0)
        return run_dir
    finally:
        lock.release()


def _finish(cfg: Any, run_dir: Path, data: Any, selection: Any, method: Any, result: Any, fabric: Any, t0: float) -> None:
    """Rank 0 after training: ``summary.json`` and ``report.md``."""
    from kdlab.plugins import load_entry_points

    summary: Dict[str, Any] = {
        "name": cfg.name,
        "label": cfg.label or cfg.name,
        "method": cfg.method,
        "seed": cfg.seed,
        "data": {
            "name": cfg.data.name,
            "n_train": len(data.train),
            "transfer": cfg.data.transfer or TRANSFER_LABELLED,
            "n_transfer": len(data.transfer),
            "n_val": len(data.val) if data.val is not None else 0,
            "n_test": len(data.test),
            "n_per_class": cfg.data.n_per_class,
            "max_test": cfg.data.max_test,
            **({"selection": selection} if selection else {}),
        },
        "epochs": cfg.trainer.epochs,
        "best_epoch": result.best_epoch,
        "selection": f"best {result.selection_key}" if result.val_best is not None else "last epoch (no validation split)",
        "final_losses": result.final_losses,
        "stopped_early": False,
        "train_time_s": result.wall_time_s,  # a resumed run's earlier segments included
        **({"resumed_from_epoch": result.resumed_from_epoch} if result.resumed_from_epoch else {}),
        "versions": versions(),
        "git_commit": git_commit(),
        # installed kdlab.plugins entry points (their package versions); the config's ``imports`` has the rest
        "plugins": load_entry_points(),
    }
    summary.update(method.finalize(run_dir, data, result, fabric.device))
    summary["wall_time_s"] = time.perf_counter() - t0 + result.earlier_time_s  # + a resumed run's earlier training
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    from kdlab.report import write_run_report

    write_run_report(run_dir)


def evaluate(weights: str, data_overrides: Optional[Dict[str, Any]] = None, sigmas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4), seed: int = 0) -> Dict[str, Any]:
    """Evaluate a kdlab classifier file (or run directory) on a data set's test split.

    Returns:
        ``{"model": profile, "data": name, "test_acc": %, "noise_acc": {sigma: %}}``.

    Raises:
        ConfigError: ``data_overrides`` that is no mapping, a bad data override (``data.val_size`` is refused:
            there is no validation set here).
    """
    from kdlab.engine import load_classifier, resolve_weights
    from kdlab.engine.checkpoint import read_safetensors_metadata

    if data_overrides is not None and not isinstance(data_overrides, Mapping):
        raise ConfigError(f"data = {data_overrides!r}; accepted: a mapping of data.* keys, e.g. {{'name': 'mnist'}}")
    data_cfg = dict(data_overrides or {})
    if "val_size" in data_cfg:  # it would be replaced by 0 below without a word
        raise ConfigError(f"data.val_size = {data_cfg['val_size']!r}: evaluate measures the test split and holds no "
                          f"validation set; drop data.val_size")
    path = resolve_weights(weights)
    model = load_classifier(path)
    if "name" not in data_cfg and path.suffix == ".safetensors":
        data_cfg["name"] = read_safetensors_metadata(path).get("data", "fashion-mnist")
    cfg = load_run_config([{"data": {**data_cfg, "val_size": 0}}])
    data = datasets_for(cfg)
    spec = data.spec
    got, want = (model.num_classes, model.in_channels, model.image_size), (spec.num_classes, spec.in_channels, spec.image_size)
    if got != want:
        raise ValueError(f"model {str(path)!r} expects (classes, channels, image size) = {got}; data set {spec.name!r} gives {want}")
    loader = make_loader(data.test, cfg.data.eval_batch_size, shuffle=False, seed=seed)
    device = torch.device("cpu")
    out = {"weights": str(path), "data": spec.name, "model": model_profile(model, (spec.in_channels, spec.image_size, spec.image_size))}
    out.update(heldout_metrics(model, loader, device, sigmas, seed))
    return out
