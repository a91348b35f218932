"""Run configuration: omegaconf structured configs from dataclasses + YAML + ``key=value`` overrides.

A run config is sectioned by role. Sections shared by every method: ``data``, ``model`` (the
student), ``teacher``, ``optim`` (the student's optimizer), ``trainer``. Sections whose schema the
method gives (see :mod:`kdlab.methods`): ``players`` (every other player's architecture, optimizer,
update ratio and schedule, and the game's own settings: the ``Config`` dataclass of the method class),
``eval`` (what is measured at the end: :class:`EvalConfig` or the method's subclass of it, e.g. FID's
extractor and sample counts) and ``objective`` (per player, the weighted terms of its loss:
``{student: {kd: {weight: 1, temperature: 4}}, generator: {...}}``, expanded and checked by the
runner's callback). So a new method adds its own keys without touching this file, and unknown keys or
wrong types are still errors that name the key. The old ``loss`` section is refused by the runner's
callback, which names each key's new place.

This module knows nothing about methods: :func:`load_config` takes the method's schemas from a callback.

Every check happens here, before a run touches data or disk: YAML syntax (file, line and column),
sections that must be mappings, types, declared choices and ranges (:func:`choice`, :func:`bounded`),
list lengths, finiteness of every number anywhere in the config (no NaN/inf), the run name, and the
devices of ``trainer.accelerator``. Every failure is a :class:`ConfigError` whose message names the key,
the value and what is accepted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

# the field rules live in config_fields; kdlab.config is where users import them from
from kdlab.config_fields import (  # noqa: F401
    TEMPERATURE_MIN, ConfigError, bounded, check_devices, check_finite, check_output_dir, check_output_file, check_processes,
    check_section, choice, friendly_error, temperature_field)


#: seeds are numpy's: 0 .. 2**32 - 1
SEED_MAX = 2**32 - 1
#: the largest learning rate: larger ones overflow float32 inside the optimizer's step (1e300 did)
LR_MAX = 1e3
#: the most epochs of one run (1e11 was accepted and ran for ever)
EPOCHS_MAX = 100_000
#: the largest resize side (``data.image_size``, ``data.transfer_size``): 100000 asked for terabytes
IMAGE_SIZE_MAX = 2048
#: accepted ``trainer.precision`` values (Lightning Fabric's)
PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true", "64-true", "64",
              "transformer-engine", "transformer-engine-float16")


@dataclass
class DataConfig:
    """Data set and loading. ``n_per_class`` draws a stratified subset (limited-data protocols)."""

    name: str = "fashion-mnist"
    root: Optional[str] = None  # None: $KDLAB_DATA, else ~/.cache/kdlab/data
    val_size: int = bounded(5000, ge=0)  # images carved from the training split for model selection
    n_per_class: Optional[int] = bounded(None, gt=0, optional=True)  # None: the whole remaining training split
    subset_seed: int = bounded(0, ge=0, le=SEED_MAX)
    augment: bool = False
    batch_size: int = bounded(128, gt=0)
    eval_batch_size: int = bounded(1000, gt=0)
    num_workers: int = bounded(0, ge=0)
    download: Optional[bool] = None  # None: try to download only when the files are missing
    # resize to S x S (image folders, skimage-patches tiles, both domains of a translation task)
    image_size: Optional[int] = bounded(None, gt=0, le=IMAGE_SIZE_MAX, optional=True)
    max_test: Optional[int] = bounded(None, gt=0, optional=True)  # evaluate on a stratified part of the test split (quick runs)
    privileged: Optional[str] = choice(None, (None, "downsample", "mask"))  # inputs degraded, clean view as privileged 3rd entry
    privileged_factor: int = bounded(4, ge=1)
    # keep these labels only (>= 2 distinct ones), relabelled 0..n-1 (transfer tasks)
    classes: Optional[List[int]] = bounded(None, ge=0, optional=True, min_length=2, unique=True)
    # What the student trains on (validation, model selection and test always use ``name``):
    # null/"train" = the labelled training subset above; "none" = data-free (the method synthesises
    # every batch); or any data set name / imagefolder:<path> = unlabelled (e.g. out-of-domain) images.
    transfer: Optional[str] = None  # also "synth": a generator makes the student's images (players.generator, objective.generator)
    synth_real: Optional[str] = None  # with transfer=synth: real (e.g. out-of-domain) images for the discriminator and the student
    transfer_n: Optional[int] = bounded(None, gt=0, optional=True)  # a seeded random subset of the transfer set
    transfer_channels: Optional[int] = choice(None, (None, 1, 3))  # convert: 1 = grayscale (luma), 3 = RGB
    transfer_size: Optional[int] = bounded(None, gt=0, le=IMAGE_SIZE_MAX, optional=True)  # resize transfer images to S x S
    steps_per_epoch: Optional[int] = bounded(None, gt=0, optional=True)  # data-free runs: batches per epoch
    # Keep transfer_k images of an unlabelled transfer set, ranked by the teacher (kdlab.data.selection):
    # entropy = the highest-entropy ones (MosaicKD Algorithm 1), balanced = ~k/K per predicted class.
    transfer_select: str = choice("none", ("none", "entropy", "balanced"))
    transfer_k: Optional[int] = bounded(None, gt=0, optional=True)  # required with transfer_select
    pin_memory: Optional[bool] = None  # page-locked training batches; null: on when training on CUDA
    # cut training batches from a copy of an in-memory set on the training device (no DataLoader, no per-batch
    # copy); null: on the CPU, and on CUDA when the set takes <= 1/4 of the device's memory (kdlab.engine.speed)
    on_device: Optional[bool] = None
    # Image-to-image translation tasks (name = edges2fashion | fashion2digits | digits2fashion | unpaired:<a>,<b> |
    # paired-folder:<path> | unpaired-folder:<path>, kdlab.data.translation): convert both domains to 1 (grey, luma)
    # or 3 (RGB) channels; null = as they are. direction BtoA swaps source and target.
    channels: Optional[int] = choice(None, (None, 1, 3))
    direction: str = choice("AtoB", ("AtoB", "BtoA"))


@dataclass
class ModelConfig:
    """A registry model (``kdlab list``) and its keyword arguments."""

    name: str = "lenet"
    kwargs: Dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[str] = None  # initial weights: a run directory or .safetensors of the same architecture


@dataclass
class TeacherConfig:
    """A trained teacher: a run directory, a ``.safetensors`` file or a ``.ckpt`` file."""

    checkpoint: Optional[str] = None


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (stepped once per epoch)."""

    name: str = choice("sgd", ("sgd", "adam", "adamw"))
    lr: float = bounded(0.05, gt=0, le=LR_MAX)
    momentum: float = bounded(0.9, ge=0)
    nesterov: bool = False
    weight_decay: float = bounded(5e-4, ge=0)
    betas: List[float] = bounded([0.9, 0.999], ge=0, lt=1, length=2)  # Adam's (beta1, beta2)
    scheduler: str = choice("cosine", ("cosine", "multistep", "linear", "none"))
    milestones: List[int] = bounded([], ge=1)  # epochs, for multistep
    gamma: float = bounded(0.1, gt=0)
    decay_start: Optional[int] = bounded(None, ge=0, optional=True)  # linear: constant until this epoch (null: epochs // 2)


#: accepted ``trainer.accelerator`` values (Lightning Fabric's names); the device must exist here
ACCELERATORS = ("cpu", "cuda", "gpu", "mps", "auto")


@dataclass
class TrainerConfig:
    """The shared loop (:mod:`kdlab.engine`) on Lightning Fabric."""

    epochs: int = bounded(10, gt=0, le=EPOCHS_MAX)
    accelerator: str = choice("cpu", ACCELERATORS)  # must exist on this machine (see check_devices)
    devices: Any = 1  # int, list of ids or "auto"; >1 means DDP (or launch with torchrun / fabric run)
    strategy: str = "auto"
    num_nodes: int = bounded(1, ge=1)
    precision: str = choice("32-true", PRECISIONS)  # Lightning Fabric's names
    log_every_n_steps: int = bounded(50, gt=0)
    progress: bool = True  # a rich progress bar where stderr is a terminal; the epoch lines are printed everywhere
    limit_train_batches: Optional[int] = bounded(None, ge=1, optional=True)  # cap steps per epoch (smoke runs)
    tensorboard: bool = True
    threads: Optional[int] = bounded(None, ge=1, optional=True)  # torch.set_num_threads on CPU
    # torch.compile of the student and teacher networks (those whose features no term hooks; kdlab.engine.speed)
    compile: str = choice("none", ("none", "default", "reduce-overhead", "max-autotune"))
    # BatchNorm statistics over every rank's batch under DDP (kdlab.models.sync_bn); nothing in one process
    sync_batchnorm: bool = False
    channels_last: bool = False  # 4-D inputs and every player's conv weights in channels-last memory format
    # frozen teacher's outputs on a static transfer set computed once (kdlab.games.teacher_cache):
    # auto = when safe and the run has 2+ epochs, on = required (refused with the reason when unsafe), off = every step
    teacher_cache: str = choice("auto", ("auto", "on", "off"))
    teacher_cache_dir: Optional[str] = None  # shared on-disk cache; None: memory, or <run>/teacher_cache when large
    teacher_cache_memory_mb: float = bounded(1024.0, ge=0)  # larger caches are memory-mapped files on disk
    # true: one table per batch size the loader yields (bit-identical to an uncached run, one teacher pass
    # each); false: one table at the batch size, one teacher pass (filled during epoch 1 when in memory)
    teacher_cache_exact: bool = False


@dataclass
class EvalConfig:
    """What is measured at the end of a run."""

    noise_sigmas: List[float] = bounded([0.0, 0.1, 0.2, 0.3, 0.4], ge=0)  # input noise std, normalised units
    noise_seed: int = bounded(0, ge=0, le=SEED_MAX)
    latency: bool = True
    latency_iters: int = bounded(30, ge=1)


@dataclass
class RunConfig:
    """One run: ``runs/<name>/``. ``label`` names the row in comparison reports."""

    name: str = "run"
    label: Optional[str] = None
    method: str = "teacher"
    seed: int = bounded(0, ge=0, le=SEED_MAX)
    out_dir: str = "runs"
    # plugin modules imported before the config is resolved (kdlab.plugins): dotted names or .py files;
    # the resolved config holds each one's {module, file, sha256}
    imports: List[Any] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    objective: Dict[str, Any] = field(default_factory=dict)  # player -> term -> term config (kdlab list terms)
    players: Any = None  # replaced by the method's Config schema
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)  # replaced by the method's Eval schema


# a run name is one directory inside out_dir: no separators, and no leading "." (".", "..", ".cache")
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
#: file names are at most 255 bytes; a run directory's siblings add a suffix (``.old-<time>``, ``.lock``)
NAME_MAX = 120
#: the sections of a run config that must be mappings (``data: 5`` is refused)
SECTIONS = tuple(f.name for f in fields(RunConfig) if isinstance(f.default_factory, type) and f.default_factory is not list
                 ) + ("objective", "players", "loss")


def yaml_where(exc: yaml.YAMLError, text: Optional[str] = None) -> str:
    """Where and what a YAML syntax error is: ``"line L, column C: problem (context)"`` (a tab named as such)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    lines = (text or "").splitlines()
    line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
    char = line[mark.column] if mark is not None and mark.column < len(line) else None
    if char == "\t":  # PyYAML says "found character that cannot start any token" without showing it
        problem += " ('\\t': YAML indents with spaces, not tabs)"
    return f"{where}{problem}" + (f" ({context})" if context else "")


def load_yaml(path: Path) -> DictConfig:
    """A YAML config file as a DictConfig.

    Raises:
        ConfigError: a YAML syntax error (file, line, column and the problem), or a file whose top
            level is not a mapping of keys.
    """
    try:
        node = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r}, {yaml_where(exc, path.read_text(errors='replace'))}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (a binary file?); accepted: a YAML file of "
                          f"keys (name: ..., data: {{...}}, ...)") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config file {str(path)!r}: {str(exc).splitlines()[0]}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"config file {str(path)!r} holds a {'list' if isinstance(node, ListConfig) else 'scalar'}; "
                          f"accepted: a mapping of keys (name: ..., data: {{...}}, ...)")
    return node


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """Turn ``["a.b=1", "c=x"]`` into a config; raise :class:`ConfigError` on a malformed item."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. trainer.epochs=5)")
        if "" in item.partition("=")[0].split("."):
            raise ConfigError(f"override {item!r}: the key {item.partition('=')[0]!r} has an empty part "
                              f"(two dots, or a leading/trailing dot); accepted: dotted names such as trainer.epochs=5")
    layers = []
    for item in overrides:  # one at a time, so an error names its item
        try:
            layers.append(OmegaConf.from_dotlist([item]))
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({yaml_where(exc, item.partition('=')[2])})") from None
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {item!r}: {str(exc).splitlines()[0]}") from None
    try:
        return OmegaConf.merge(*layers) if layers else OmegaConf.create({})
    except OmegaConfBaseException as exc:
        raise friendly_error(exc) from exc


def _check_sections(raw: DictConfig) -> None:
    """Sections given a scalar or a list (``data: 5``) are refused, naming the section."""
    for name in SECTIONS:
        value = raw.get(name)
        if value is not None and not isinstance(value, DictConfig):
            raise ConfigError(f"config section {name!r} = {value!r}; accepted: a mapping of its keys "
                              f"(e.g. {name}.<key>=... or '{name}: {{<key>: ...}}' in YAML)")


def load_config(
    sources: Sequence[Any],
    overrides: Sequence[str] = (),
    schemas: Optional[Callable[[str, DictConfig], Tuple[Optional[type], type]]] = None,
    prepare: Optional[Callable[[str, DictConfig], None]] = None,
) -> DictConfig:
    """Merge YAML files / dicts and ``key=value`` overrides onto the :class:`RunConfig` schema.

    Args:
        sources: YAML paths (str/Path) or mappings, merged left to right (a layer that sets another
            ``model.name`` than the layers before it drops their ``model.kwargs``).
        overrides: dotted ``key=value`` strings, applied last.
        schemas: maps a method name and the merged raw config to its ``(players, eval)`` dataclasses
            (``Method.Config``, ``Method.Eval``); ``players`` may be None (no keys).
        prepare: ``(method, raw config)`` applied before the schema merge, may edit ``raw`` in place
            (kdlab's runner refuses the old ``loss`` section and expands ``objective`` there).

    Returns:
        A read-only (struct) ``DictConfig`` with every key typed.

    Raises:
        ConfigError: unknown key, wrong type, a value outside its accepted set, a missing file.
    """
    layers = []
    for src in sources:
        if isinstance(src, (str, Path)):
            path = Path(src)
            if not path.is_file():
                raise ConfigError(f"config file {str(path)!r} does not exist")
            layers.append(load_yaml(path))
        else:
            layers.append(OmegaConf.create(src))
    layers.append(parse_overrides(overrides))
    for layer in layers:
        _check_sections(layer)
    try:
        raw = OmegaConf.create({})
        for layer in layers:  # model.kwargs belong to the architecture: a layer that changes model.name drops them
            name = OmegaConf.select(layer, "model.name", default=None)
            if name is not None and name != OmegaConf.select(raw, "model.name", default=name) and "kwargs" in raw.model:
                raw.model.kwargs = {}
            raw = OmegaConf.merge(raw, layer)
    except OmegaConfBaseException as exc:
        raise friendly_error(exc) from exc
    method = str(raw.get("method", RunConfig.method))
    schema = OmegaConf.structured(RunConfig)
    players_cls, eval_cls = schemas(method, raw) if schemas is not None else (None, EvalConfig)
    try:
        if prepare is not None:
            with open_dict(raw):
                prepare(method, raw)
        with open_dict(schema):
            schema.players = OmegaConf.structured(players_cls) if players_cls is not None else OmegaConf.create({})
            schema.eval = OmegaConf.structured(eval_cls)
        cfg = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as exc:
        raise friendly_error(exc) from exc
    validate(cfg, players_cls, eval_cls)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def validate(cfg: DictConfig, players_schema: Optional[type] = None, eval_schema: Optional[type] = None) -> None:
    """Checks that types alone cannot express: the run name (one directory inside ``out_dir``), the
    choices, ranges and lengths declared in the schemas' field metadata (:func:`check_section`), no
    NaN/inf anywhere (:func:`check_finite`), devices that exist (:func:`check_devices`), an ``out_dir``
    that can be created (:func:`check_output_dir`) and no more loader workers than the machine can run.

    Raises:
        ConfigError: naming the key, the value and what is accepted.
    """
    if not _NAME_RE.match(cfg.name) or len(cfg.name) > NAME_MAX:
        shown = repr(cfg.name) if len(cfg.name) <= 60 else f"'{cfg.name[:40]}...' ({len(cfg.name)} characters)"
        raise ConfigError(f"config key 'name' = {shown}: a run name is one directory inside out_dir; accepted: "
                          f"1 to {NAME_MAX} letters, digits, '.', '_' or '-', not starting with '.'")
    out = Path(str(cfg.out_dir)).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"config key 'out_dir' = {str(cfg.out_dir)!r} is a file; accepted: a directory "
                          f"(created if missing) that holds the run directories")
    # its shape only (kdlab evaluate loads a config too); a run's lock creates it and names a failure
    check_output_dir(out, "config key 'out_dir'", writable=False)
    check_section(cfg, RunConfig, "")
    if players_schema is not None and cfg.players is not None:
        check_section(cfg.players, players_schema, "players")
    if eval_schema is not None and eval_schema is not EvalConfig:
        check_section(cfg.eval, eval_schema, "eval")
    check_finite(OmegaConf.to_container(cfg, resolve=True))
    check_devices(cfg.trainer)
    check_processes("data.num_workers", cfg.data.num_workers, "loader worker processes")


def to_yaml(cfg: DictConfig) -> str:
    """The fully resolved config as YAML (what ``runs/<name>/config.yaml`` holds)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
