"""Run configuration: omegaconf structured configs from dataclasses + YAML + ``key=value`` overrides.

A run config has fixed sections shared by every method (``data``, ``model``, ``teacher``,
``optim``, ``trainer``, ``eval``) and one method-specific section, ``loss``, whose schema is the
``Config`` dataclass of the method class (see :mod:`kdlab.methods`). So a new method adds its own
keys without touching this file, and unknown keys or wrong types are still errors that name the key.

This module knows nothing about methods: :func:`load_config` takes the method's ``loss`` schema
from a callback.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the key and what is accepted."""


# ----------------------------------------------------------------- declared choices and ranges
# A dataclass field states its accepted values once, in its metadata; :func:`check_section` checks
# every section (run config, method ``loss`` sections, terms) with that one rule set.


def choice(default: Any, choices: Sequence[Any], help: str = "") -> Any:
    """A dataclass field whose value must be one of ``choices``."""
    return field(default=default, metadata={"choices": tuple(choices), "help": help})


def bounded(default: Any, *, ge: Optional[float] = None, gt: Optional[float] = None, le: Optional[float] = None,
            lt: Optional[float] = None, optional: bool = False, help: str = "") -> Any:
    """A numeric dataclass field with bounds (``ge``: >=, ``gt``: >, ``le``: <=, ``lt``: <); ``optional``
    lets ``None`` through. Lists default through ``default_factory`` when ``default`` is a list."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "optional": optional, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check_value(key: str, value: Any, meta: Any) -> None:
    if "choices" in meta:
        if value not in meta["choices"]:
            raise ConfigError(f"config key {key!r} = {value!r}; accepted: {', '.join(map(str, meta['choices']))}")
        return
    bounds = [(op, meta[op]) for op in ("ge", "gt", "le", "lt") if meta.get(op) is not None]
    if not bounds or (value is None and meta.get("optional")):
        return
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    for v in items:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
        ok = ok and all({"ge": v >= b, "gt": v > b, "le": v <= b, "lt": v < b}[op] for op, b in bounds)
        if not ok:
            text = " and ".join({"ge": ">= ", "gt": "> ", "le": "<= ", "lt": "< "}[op] + f"{b:g}" for op, b in bounds)
            extra = " (or null)" if meta.get("optional") else ""
            raise ConfigError(f"config key {key!r} = {value!r} must be {text}{extra}")


_YAML_BOOLS = {"True": "on", "False": "off"}


def check_section(section: Any, schema: type, prefix: str) -> None:
    """Check every field of ``section`` (a DictConfig or object) against the choices/bounds declared in
    the metadata of the dataclass ``schema`` (see :func:`choice`, :func:`bounded`); nested dataclass
    sections (fields with a dataclass ``default_factory``) are checked recursively.

    Raises:
        ConfigError: naming ``prefix.key``, the value and what is accepted.
    """
    for f in fields(schema):
        value = getattr(section, f.name, None)
        key = f"{prefix}.{f.name}" if prefix else f.name
        factory = f.default_factory
        if isinstance(factory, type) and is_dataclass(factory):
            if value is not None:
                check_section(value, factory, key)
        elif f.metadata:
            alias = _YAML_BOOLS.get(str(value)) if isinstance(value, (bool, str)) else None
            if alias is not None and alias in f.metadata.get("choices", ()):
                value = alias  # YAML 1.1 reads a bare on/off as a boolean
                setattr(section, f.name, value)
            _check_value(key, value, f.metadata)


@dataclass
class DataConfig:
    """Data set and loading. ``n_per_class`` draws a stratified subset (limited-data protocols)."""

    name: str = "fashion-mnist"
    root: Optional[str] = None  # None: $KDLAB_DATA, else ~/.cache/kdlab/data
    val_size: int = bounded(5000, ge=0)  # images carved from the training split for model selection
    n_per_class: Optional[int] = bounded(None, gt=0, optional=True)  # None: the whole remaining training split
    subset_seed: int = 0
    augment: bool = False
    batch_size: int = bounded(128, gt=0)
    eval_batch_size: int = bounded(1000, gt=0)
    num_workers: int = 0
    download: Optional[bool] = None  # None: try to download only when the files are missing
    image_size: Optional[int] = None  # only for imagefolder:<path>
    max_test: Optional[int] = None  # evaluate on a stratified part of the test split (quick runs)
    privileged: Optional[str] = None  # downsample | mask: inputs degraded, clean view as privileged 3rd entry
    privileged_factor: int = 4
    classes: Optional[List[int]] = None  # keep these labels only, relabelled 0..n-1 (transfer tasks)
    # What the student trains on (validation, model selection and test always use ``name``):
    # null/"train" = the labelled training subset above; "none" = data-free (the method synthesises
    # every batch); or any data set name / imagefolder:<path> = unlabelled (e.g. out-of-domain) images.
    transfer: Optional[str] = None
    transfer_n: Optional[int] = bounded(None, gt=0, optional=True)  # a seeded random subset of the transfer set
    transfer_channels: Optional[int] = choice(None, (None, 1, 3))  # convert: 1 = grayscale (luma), 3 = RGB
    transfer_size: Optional[int] = bounded(None, gt=0, optional=True)  # resize transfer images to S x S
    steps_per_epoch: Optional[int] = bounded(None, gt=0, optional=True)  # data-free runs: batches per epoch
    # Keep transfer_k images of an unlabelled transfer set, ranked by the teacher (kdlab.data.selection):
    # entropy = the highest-entropy ones (MosaicKD Algorithm 1), balanced = ~k/K per predicted class.
    transfer_select: str = choice("none", ("none", "entropy", "balanced"))
    transfer_k: Optional[int] = bounded(None, gt=0, optional=True)  # required with transfer_select
    pin_memory: Optional[bool] = None  # page-locked training batches; null: on when training on CUDA


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
    lr: float = bounded(0.05, gt=0)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: str = choice("cosine", ("cosine", "multistep", "none"))
    milestones: List[int] = field(default_factory=list)  # epochs, for multistep
    gamma: float = 0.1


@dataclass
class TrainerConfig:
    """The shared loop (:mod:`kdlab.engine`) on Lightning Fabric."""

    epochs: int = bounded(10, gt=0)
    accelerator: str = "cpu"  # cpu | cuda | gpu | mps | auto
    devices: Any = 1  # int, list of ids or "auto"; >1 means DDP (or launch with torchrun / fabric run)
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"  # 32-true | 16-mixed | bf16-mixed | ...
    log_every_n_steps: int = bounded(50, gt=0)
    progress: bool = True
    limit_train_batches: Optional[int] = None  # cap steps per epoch (smoke runs)
    tensorboard: bool = True
    threads: Optional[int] = None  # torch.set_num_threads on CPU
    # torch.compile of the student and teacher networks (those whose features no term hooks; kdlab.engine.speed)
    compile: str = choice("none", ("none", "default", "reduce-overhead", "max-autotune"))
    channels_last: bool = False  # 4-D inputs and every player's conv weights in channels-last memory format
    # frozen teacher's outputs on a static transfer set computed once (kdlab.methods.teacher_cache):
    # auto = when safe, on = required (refused with the reason when unsafe), off = every step
    teacher_cache: str = choice("auto", ("auto", "on", "off"))
    teacher_cache_dir: Optional[str] = None  # shared on-disk cache; None: memory, or <run>/teacher_cache when large
    teacher_cache_memory_mb: float = bounded(1024.0, ge=0)  # larger caches are memory-mapped files on disk


@dataclass
class EvalConfig:
    """What is measured at the end of a run."""

    noise_sigmas: List[float] = bounded([0.0, 0.1, 0.2, 0.3, 0.4], ge=0)  # input noise std, normalised units
    noise_seed: int = 0
    latency: bool = True
    latency_iters: int = 30


@dataclass
class RunConfig:
    """One run: ``runs/<name>/``. ``label`` names the row in comparison reports."""

    name: str = "run"
    label: Optional[str] = None
    method: str = "teacher"
    seed: int = 0
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss: Any = None  # replaced by the method's Config schema
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _friendly(exc: OmegaConfBaseException) -> ConfigError:
    key = getattr(exc, "full_key", None)
    msg = str(exc).split("\n")[0]
    return ConfigError(f"config key {key!r}: {msg}" if key else f"config: {msg}")


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """Turn ``["a.b=1", "c=x"]`` into a config; raise :class:`ConfigError` on a malformed item."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. trainer.epochs=5)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:  # pragma: no cover - from_dotlist is lenient
        raise _friendly(exc) from exc


def load_config(
    sources: Sequence[Any],
    overrides: Sequence[str] = (),
    loss_schema: Optional[Callable[[str], type]] = None,
    prepare_loss: Optional[Callable[[str, Any], Any]] = None,
) -> DictConfig:
    """Merge YAML files / dicts and ``key=value`` overrides onto the :class:`RunConfig` schema.

    Args:
        sources: YAML paths (str/Path) or mappings, merged left to right.
        overrides: dotted ``key=value`` strings, applied last.
        loss_schema: maps a method name to its ``loss`` dataclass (``Method.Config``).
        prepare_loss: ``(method, raw loss section) -> loss section`` applied before the schema merge
            (kdlab's runner refuses old keys and expands ``loss.terms`` there).

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
            layers.append(OmegaConf.load(path))
        else:
            layers.append(OmegaConf.create(src))
    layers.append(parse_overrides(overrides))
    raw = OmegaConf.merge(*layers) if layers else OmegaConf.create({})
    method = str(raw.get("method", RunConfig.method))
    schema = OmegaConf.structured(RunConfig)
    try:
        if prepare_loss is not None:
            with open_dict(raw):
                raw.loss = prepare_loss(method, raw.get("loss") or OmegaConf.create({}))
        if loss_schema is not None:
            with open_dict(schema):
                schema.loss = OmegaConf.structured(loss_schema(method))
        cfg = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as exc:
        raise _friendly(exc) from exc
    validate(cfg, loss_schema(method) if loss_schema is not None else None)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def validate(cfg: DictConfig, loss_schema: Optional[type] = None) -> None:
    """Checks that types alone cannot express: the choices and ranges declared in the schemas' field
    metadata (:func:`check_section`), and the run name. Raises :class:`ConfigError` naming the key."""
    if not _NAME_RE.match(cfg.name):
        raise ConfigError(f"config key 'name' = {cfg.name!r}: use letters, digits, '.', '_' or '-'")
    check_section(cfg, RunConfig, "")
    if loss_schema is not None and cfg.loss is not None:
        check_section(cfg.loss, loss_schema, "loss")


def to_yaml(cfg: DictConfig) -> str:
    """The fully resolved config as YAML (what ``runs/<name>/config.yaml`` holds)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
