"""The training commands (``train-teacher | distill | train-gan | compress-gan``) as one function that the
CLI (:mod:`kdlab.cli`) and the Python API (:mod:`kdlab.api`) both call: a layer below both, over
:mod:`kdlab.runner`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence


#: command -> (student kind, role, default method): the CLI dispatches on a method's kind and role
COMMANDS = {
    "train-teacher": ("classifier", "teacher", "teacher"),
    "distill": ("classifier", "student", "distill"),
    "train-gan": ("generator", "teacher", "gan"),
    "compress-gan": ("generator", "student", "gan-compression"),
}


def command_for(kind: str, role: str) -> str:
    """The command that runs methods of ``kind`` in ``role``."""
    return next(c for c, (k, r, _) in COMMANDS.items() if (k, r) == (kind, role))


def run_command(command: str, sources: Sequence[Any], overrides: Sequence[str] = (), imports: Sequence[Any] = (),
                resume: bool = False, overwrite: bool = False, callbacks: Sequence[Any] = ()) -> Path:
    """One training command (``train-teacher | distill | train-gan | compress-gan``) on config files or
    mappings: the command's default method, its kind/role check, then :func:`kdlab.runner.train`. The CLI
    and :mod:`kdlab.api` both run through here. Returns the run directory.

    Raises:
        ConfigError: a method of another kind or role (names the command that runs it), and see
            :func:`kdlab.runner.load_run_config` and :func:`kdlab.runner.train`.
    """
    from kdlab.config import ConfigError
    from kdlab.methods import METHODS
    from kdlab.runner import load_run_config, train

    kind, role, default = COMMANDS[command]
    if command == "train-gan" and not _names_method(sources, overrides):
        default = _translation_teacher(sources, overrides) or default
    cfg = load_run_config([{"method": default}, *sources], overrides, imports=imports)
    cls = METHODS.get(cfg.method)
    if (cls.kind, cls.role) != (kind, role):
        able = [n for n in METHODS.names() if (METHODS.get(n).kind, METHODS.get(n).role) == (kind, role)]
        raise ConfigError(
            f"method {cfg.method!r} trains a {cls.kind} {cls.role}: run it with `kdlab {command_for(cls.kind, cls.role)}`; "
            f"`kdlab {command}` runs {kind} {role} methods: {', '.join(able)}")
    return train(cfg, resume=resume, overwrite=overwrite, callbacks=callbacks)


def _raw_config(sources: Sequence[Path], overrides: Sequence[str]) -> Any:
    """The config files and overrides merged without the schema (to read a key before the method is known)."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(*[OmegaConf.create(s) if isinstance(s, dict) else OmegaConf.load(s) for s in sources],
                           OmegaConf.from_dotlist(list(overrides)))


def _names_method(sources: Sequence[Path], overrides: Sequence[str]) -> bool:
    """Whether a config file or an override sets ``method``."""
    return "method" in _raw_config(sources, overrides)


def _translation_teacher(sources: Sequence[Path], overrides: Sequence[str]) -> Optional[str]:
    """``train-gan`` without a method on an image-to-image task: ``pix2pix`` for paired data, ``cyclegan``
    for unpaired (None otherwise: the ``gan`` default stays)."""
    from omegaconf import OmegaConf

    from kdlab.data import dataset_spec

    raw = _raw_config(sources, overrides)
    try:
        name = OmegaConf.select(raw, "data.name", default=None)
        pairing = dataset_spec(name, root=OmegaConf.select(raw, "data.root", default=None)).pairing if name else None
    except Exception:  # an unknown or missing data set is reported by the run itself, with its message
        return None
    return {"paired": "pix2pix", "unpaired": "cyclegan"}.get(pairing)
