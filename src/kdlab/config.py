"""Run configuration: omegaconf structured configs from dataclasses + YAML + ``key=value`` overrides.

A run config has fixed sections shared by every method (``data``, ``model``, ``teacher``,
``optim``, ``trainer``, ``eval``) and one method-specific section, ``loss``, whose schema is the
``Config`` dataclass of the method class (see :mod:`kdlab.methods`). So a new method adds its own
keys without touching this file, and unknown keys or wrong types are still errors that name the key.

This module knows nothing about methods: :func:`load_config` takes the method's ``loss`` schema
from a callback.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the key and what is accepted."""


@dataclass
class DataConfig:
    """Data set and loading. ``n_per_class`` draws a stratified subset (limited-data protocols)."""

    name: str = "fashion-mnist"
    root: Optional[str] = None  # None: $KDLAB_DATA, else ~/.cache/kdlab/data
    val_size: int = 5000  # images carved from the training split for model selection
    n_per_class: Optional[int] = None  # None: the whole remaining training split
    subset_seed: int = 0
    augment: bool = False
    batch_size: int = 128
    eval_batch_size: int = 1000
    num_workers: int = 0
    download: Optional[bool] = None  # None: try to download only when the files are missing
    image_size: Optional[int] = None  # only for imagefolder:<path>
    max_test: Optional[int] = None  # evaluate on a stratified part of the test split (quick runs)
    privileged: Optional[str] = None  # downsample | mask: inputs degraded, clean view as privileged 3rd entry
    privileged_factor: int = 4
    classes: Optional[List[int]] = None  # keep these labels only, relabelled 0..n-1 (transfer tasks)


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

    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: str = "cosine"  # cosine | multistep | none
    milestones: List[int] = field(default_factory=list)  # epochs, for multistep
    gamma: float = 0.1


@dataclass
class TrainerConfig:
    """The shared loop (:mod:`kdlab.engine`) on Lightning Fabric."""

    epochs: int = 10
    accelerator: str = "cpu"  # cpu | cuda | gpu | mps | auto
    devices: Any = 1  # int, list of ids or "auto"; >1 means DDP (or launch with torchrun / fabric run)
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"  # 32-true | 16-mixed | bf16-mixed | ...
    log_every_n_steps: int = 50
    progress: bool = True
    limit_train_batches: Optional[int] = None  # cap steps per epoch (smoke runs)
    tensorboard: bool = True
    threads: Optional[int] = None  # torch.set_num_threads on CPU


@dataclass
class EvalConfig:
    """What is measured at the end of a run."""

    noise_sigmas: List[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4])
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


_CHOICES = {
    "optim.name": ("sgd", "adam", "adamw"),
    "optim.scheduler": ("cosine", "multistep", "none"),
}
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
) -> DictConfig:
    """Merge YAML files / dicts and ``key=value`` overrides onto the :class:`RunConfig` schema.

    Args:
        sources: YAML paths (str/Path) or mappings, merged left to right.
        overrides: dotted ``key=value`` strings, applied last.
        loss_schema: maps a method name to its ``loss`` dataclass (``Method.Config``).

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
        if loss_schema is not None:
            with open_dict(schema):
                schema.loss = OmegaConf.structured(loss_schema(method))
        cfg = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as exc:
        raise _friendly(exc) from exc
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Checks that types alone cannot express. Raises :class:`ConfigError` naming the key."""
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"config key {key!r} = {value!r}; accepted: {', '.join(choices)}")
    if not _NAME_RE.match(cfg.name):
        raise ConfigError(f"config key 'name' = {cfg.name!r}: use letters, digits, '.', '_' or '-'")
    positive = {
        "trainer.epochs": cfg.trainer.epochs,
        "data.batch_size": cfg.data.batch_size,
        "data.eval_batch_size": cfg.data.eval_batch_size,
        "optim.lr": cfg.optim.lr,
        "trainer.log_every_n_steps": cfg.trainer.log_every_n_steps,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key {key!r} = {value!r} must be > 0")
    if cfg.data.n_per_class is not None and cfg.data.n_per_class <= 0:
        raise ConfigError(f"config key 'data.n_per_class' = {cfg.data.n_per_class} must be > 0 or null")
    if cfg.data.val_size < 0:
        raise ConfigError(f"config key 'data.val_size' = {cfg.data.val_size} must be >= 0")
    for s in cfg.eval.noise_sigmas:
        if s < 0:
            raise ConfigError(f"config key 'eval.noise_sigmas' holds {s}; noise std must be >= 0")


def to_yaml(cfg: DictConfig) -> str:
    """The fully resolved config as YAML (what ``runs/<name>/config.yaml`` holds)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
