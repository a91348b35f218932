"""The Python API: ``kdlab.distill``, ``kdlab.train_teacher``, ``kdlab.compress_gan``, ``kdlab.compare``,
``kdlab.evaluate``, ``kdlab.export``, for users with ``nn.Module`` s and ``Dataset`` s in hand.

No training code lives here: each call builds the same config mapping a YAML file would hold and runs it
through :func:`kdlab.commands.run_command` (the CLI's own path: the same checks, messages and run directory).
In-memory objects get names the config can hold:

* a ``Dataset``/``DataLoader`` is read once and registered as ``memory:<class>-<sha12>`` (the hash of its
  uint8 images and labels; :func:`kdlab.data.user.register_memory`);
* a student ``nn.Module`` is registered as the model ``module:<class>-<sha12>`` (hash of its weights), built
  as a copy of the module, so it starts from the module's own weights;
* a teacher ``nn.Module`` is registered likewise and written to ``<out_dir>/.api/<name>.safetensors``, which
  ``teacher.checkpoint`` names (``summary.json`` records that file's sha256).

Those names live in this process only: a run trained from in-memory objects is reloaded (``Run.student``)
here, or elsewhere after the same objects are passed again (same hash, same name).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from kdlab.compare import compare  # noqa: F401  (kdlab.compare: the package is callable)
from kdlab.config import ConfigError
from kdlab.export import export  # noqa: F401  (kdlab.export: the module is callable)

PathLike = Union[str, Path]
#: prefix of the models registered from in-memory modules (``module:<class>-<sha12>``)
MODULE_PREFIX = "module:"


class Run:
    """A finished run: its directory and what it wrote there.

    Attributes:
        path: the run directory (``<out_dir>/<name>``).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    @property
    def summary(self) -> Dict[str, Any]:
        """``summary.json`` as a dict (accuracies in %, timings, the teacher's and the data's identity)."""
        return json.loads((self.path / "summary.json").read_text())

    @property
    def metrics(self) -> Dict[str, Any]:
        """The summary's scalar numbers (``test_acc_best``, ``val_acc_best``, ``train_time_s`` ...)."""
        return {k: v for k, v in self.summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    @property
    def student(self) -> nn.Module:
        """The trained network (best on validation) rebuilt from the run's ``.safetensors``, in eval mode: a
        classifier, or a generator for a GAN run."""
        from kdlab.engine import load_classifier
        from kdlab.engine.checkpoint import read_safetensors_metadata
        from kdlab.engine.generators import GENERATOR_FORMAT, load_generator, resolve_generator

        weights = [p for p in self.path.glob("*.safetensors")]
        if weights and all(read_safetensors_metadata(p).get("format") == GENERATOR_FORMAT for p in weights):
            return load_generator(resolve_generator(self.path)).eval()
        return load_classifier(self.path)

    def report(self) -> str:
        """The run's ``report.md`` (Markdown)."""
        return (self.path / "report.md").read_text()

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.metrics.items() if k.startswith(("test_acc", "val_acc"))}
        return f"Run({str(self.path)!r}, {shown})"


def _digest(module: nn.Module) -> str:
    from kdlab.engine.checkpoint import state_digest

    return state_digest({k: v.detach().cpu() for k, v in module.state_dict().items()})


def register_module(module: nn.Module) -> str:
    """Register an in-memory classifier as the model ``module:<class>-<sha12>`` (built as a deep copy of it);
    returns the name."""
    from kdlab.models import MODELS
    from kdlab.models.base import adopt
    from kdlab.registry import slug

    name = f"{MODULE_PREFIX}{slug(type(module).__name__)}-{_digest(module)[:12]}"
    if name not in MODELS:
        def build(num_classes: int, in_channels: int, image_size: int, **kwargs: Any) -> nn.Module:
            return adopt(copy.deepcopy(module), name, {}, num_classes, in_channels, image_size)

        MODELS.add(name, build, help=f"in-memory {type(module).__name__} ({sum(p.numel() for p in module.parameters()):,} parameters)")
    return name


def check_output(module: nn.Module, spec: Any, what: str) -> None:
    """One dry forward of two zero images ``[2, C, S, S]``: the output must be logits ``[2, K]``.

    Raises:
        ConfigError: the forward raised, or another output shape (names both shapes and the data set).
    """
    net = copy.deepcopy(module).eval()
    x = torch.zeros(2, spec.in_channels, spec.image_size, spec.image_size)
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as exc:
        raise ConfigError(f"{what} {type(module).__name__} fails on the data set's input [2, {spec.in_channels}, "
                          f"{spec.image_size}, {spec.image_size}] (data {spec.name!r}): {type(exc).__name__}: {exc}") from None
    shape = tuple(getattr(out, "shape", ()))
    if shape != (2, spec.num_classes):
        raise ConfigError(f"{what} {type(module).__name__} outputs shape {shape} for a batch of 2; data set "
                          f"{spec.name!r} has {spec.num_classes} classes: accepted output [2, {spec.num_classes}]")


def _data_section(train: Any, val: Any, test: Any, data: Dict[str, Any], transfer: Any = None) -> Dict[str, Any]:
    """``data`` with ``name`` set from ``train`` (a name, or in-memory data registered by hash) and ``transfer``
    from ``transfer`` (a name, or in-memory images)."""
    from kdlab.data.user import register_images, register_memory

    data = dict(data)
    if transfer is not None:
        if data.get("transfer") is not None:
            raise ConfigError(f"the transfer set is given twice: transfer= and data.transfer = {data['transfer']!r}")
        data["transfer"] = str(transfer) if isinstance(transfer, (str, Path)) else register_images(transfer)
    if train is None:
        if test is not None or val is not None:
            raise ConfigError("test= / val= need train= (a Dataset or DataLoader of (image, label))")
        return data
    if isinstance(train, (str, Path)):
        if test is not None or val is not None:
            raise ConfigError(f"train = {str(train)!r} is a data set name, whose validation (data.val_size) and test "
                              f"splits are its own; drop test= / val=")
        return {**data, "name": str(train)}
    if test is None:
        raise ConfigError("train is in-memory data: give test= too (held-out (image, label) pairs of the same classes)")
    if val is not None and data.get("val_size") is not None:
        raise ConfigError(f"val= is the validation set, data.val_size = {data['val_size']} would draw another: "
                          f"give one of them")
    name = register_memory(train, test, val)
    # the given validation set's size, or no split unless asked for (a small in-memory set)
    data["val_size"] = len(val if hasattr(val, "__getitem__") else val.dataset) if val is not None else data.get("val_size", 0)
    return {**data, "name": name}


def _spec(data: Dict[str, Any]) -> Any:
    from kdlab.data import DEFAULT_DATASET, dataset_spec

    return dataset_spec(data.get("name", DEFAULT_DATASET), root=data.get("root"), image_size=data.get("image_size"))


def _network(net: Any, spec_of: Any, what: str) -> str:
    """A student given as a module: checked and registered; its model name."""
    check_output(net, spec_of(), what)
    return register_module(net)


def _config(command: str, method: Optional[str], model: Any, teacher: Any, train: Any, val: Any, test: Any,
            objective: Optional[Dict[str, Any]], out: PathLike, sections: Dict[str, Any],
            transfer: Any = None) -> Dict[str, Any]:
    cfg: Dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in sections.items()}
    out = Path(out)
    cfg.setdefault("name", out.name)
    cfg.setdefault("out_dir", str(out.parent))
    if method is not None:
        cfg["method"] = method
    cfg["data"] = _data_section(train, val, test, cfg.get("data", {}), transfer)
    spec = lambda: _spec(cfg["data"])  # noqa: E731  (only read when a module must be checked)
    section = dict(cfg.get("model", {}))
    if isinstance(model, dict):  # the model section itself: {"name", "kwargs", "checkpoint"}
        section, model = {**section, **model}, None
    if isinstance(model, nn.Module):
        if section.get("name"):
            raise ConfigError(f"the {'student' if command == 'distill' else 'model'} is given twice: as a module "
                              f"({type(model).__name__}) and as model name {section['name']!r}; give one")
        section["name"] = _network(model, spec, "student" if command == "distill" else "model")
    elif model is not None:
        if section.get("name") and section["name"] != model:
            raise ConfigError(f"the model is given twice: {model!r} and model name {section['name']!r}; give one")
        section["name"] = str(model)
    if section:
        cfg["model"] = section
    if isinstance(teacher, nn.Module):
        cfg["teacher"] = {**cfg.get("teacher", {}), "checkpoint": str(_save_teacher(teacher, spec(), Path(cfg["out_dir"])))}
    elif teacher is not None:
        cfg["teacher"] = {**cfg.get("teacher", {}), "checkpoint": str(getattr(teacher, "path", teacher))}
    if objective is not None:
        cfg["objective"] = objective
    return cfg


def _save_teacher(teacher: nn.Module, spec: Any, out_dir: Path) -> Path:
    """Check, register and write an in-memory teacher to ``<out_dir>/.api/<name>.safetensors`` (once per hash)."""
    from kdlab.engine import save_classifier
    from kdlab.models import build_model

    check_output(teacher, spec, "teacher")
    name = register_module(teacher)
    path = out_dir / ".api" / f"{name.replace(':', '-')}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        net = build_model(name, spec.num_classes, spec.in_channels, spec.image_size)
        save_classifier(net, path, data=spec.name, source=f"in-memory {type(teacher).__name__}")
    return path


def _run(command: str, cfg: Dict[str, Any], imports: Sequence[Any], overrides: Sequence[str], resume: bool,
         overwrite: bool, callbacks: Sequence[Any]) -> Run:
    from kdlab.commands import run_command

    for what, items in (("overrides", overrides), ("imports", imports), ("callbacks", callbacks)):
        if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)):  # a string is no list of them
            raise ConfigError(f"{what} = {items!r}; accepted: a list (e.g. {what}=[{items!r}])")
    return Run(run_command(command, [cfg], list(overrides), imports=list(imports), resume=resume, overwrite=overwrite,
                           callbacks=callbacks))


def distill(teacher: Any = None, student: Any = None, train: Any = None, val: Any = None, test: Any = None,
            objective: Optional[Dict[str, Any]] = None, method: str = "distill", out: PathLike = "runs/distill", *,
            transfer: Any = None, imports: Sequence[Any] = (), overrides: Sequence[str] = (), resume: bool = False, overwrite: bool = False,
            callbacks: Sequence[Any] = (), **config: Any) -> Run:
    """Distil a classifier student from a teacher: ``kdlab distill`` from Python.

    Args:
        teacher: an ``nn.Module`` (logits [B, K]), a run directory or a kdlab weights file.
        student: an ``nn.Module`` (starts from its weights), a model name (``kdlab list models``, ``torchvision:<name>``)
            or the ``model`` section (``{"name": "resnet20", "kwargs": {...}, "checkpoint": ...}``).
        train, test: a ``Dataset``/``DataLoader`` of (image, label) -- images [C, S, S] uint8 or float in [0, 1]
            -- each, or ``train`` a data set name (``fashion-mnist``, ``imagefolder:<path>``) and no ``test``.
        val: in-memory validation data (model selection; with in-memory ``train`` only), recorded as
            ``data.val_size`` = its size; without it ``data.val_size`` images of ``train`` (0 by default for
            in-memory data: the last epoch's weights).
        transfer: what the student learns from instead of ``train``'s images: a ``Dataset``/``DataLoader`` of
            images (or of pairs, labels ignored), or a ``data.transfer`` value (a data set name, ``synth``...).
        objective: per player, its terms: ``{"student": {"kd": {"weight": 1, "temperature": 4}}}``; features by
            friendly name or module path (``"layers": [["layer3", "features.8"]]``).
        method: a classifier-student method (``kdlab list methods``).
        out: the run directory, ``<out_dir>/<name>``.
        imports: plugin modules (dotted names or ``.py`` files) imported first, as the config key ``imports``.
        overrides: ``key=value`` strings applied last, as on the command line.
        resume, overwrite, callbacks: as :func:`kdlab.runner.train`.
        **config: config sections or keys (``trainer={"epochs": 5}``, ``data={...}``, ``seed=1``).

    Returns:
        :class:`Run`.

    Raises:
        ConfigError: what a YAML run refuses (same messages), a module whose output is not [B, K] for the data,
            a student given both as a module and as ``model`` name, unlabelled or malformed in-memory data.
    """
    cfg = _config("distill", method, student, teacher, train, val, test, objective, out, config, transfer)
    return _run("distill", cfg, imports, overrides, resume, overwrite, callbacks)


def train_teacher(model: Any = None, train: Any = None, val: Any = None, test: Any = None,
                  objective: Optional[Dict[str, Any]] = None, method: str = "teacher", out: PathLike = "runs/teacher", *,
                  imports: Sequence[Any] = (), overrides: Sequence[str] = (), resume: bool = False,
                  overwrite: bool = False, callbacks: Sequence[Any] = (), **config: Any) -> Run:
    """Train a classifier teacher with labels: ``kdlab train-teacher`` from Python. Arguments as :func:`distill`
    (``model`` as its ``student``). Returns :class:`Run` (``run.student`` is the trained teacher)."""
    cfg = _config("train-teacher", method, model, None, train, val, test, objective, out, config)
    return _run("train-teacher", cfg, imports, overrides, resume, overwrite, callbacks)


def compress_gan(teacher: Any = None, student: Any = None, train: Optional[str] = None,
                 objective: Optional[Dict[str, Any]] = None, method: str = "gan-compression",
                 out: PathLike = "runs/compress", *, imports: Sequence[Any] = (), overrides: Sequence[str] = (),
                 resume: bool = False, overwrite: bool = False, callbacks: Sequence[Any] = (), **config: Any) -> Run:
    """Distil a student generator: ``kdlab compress-gan`` from Python. ``teacher``: a GAN run directory or
    generator weights file; ``student``: a generator name (``kdlab list generators``) or the ``model`` section;
    ``train``: a data set or translation task name. Other arguments as :func:`distill`."""
    if isinstance(teacher, nn.Module):
        raise ConfigError(f"compress_gan: teacher {type(teacher).__name__} is a module; accepted: a GAN run directory "
                          f"or a kdlab generator weights file (written by kdlab train-gan)")
    cfg = _config("compress-gan", method, student, None, train, None, None, objective, out, config)
    if teacher is not None:
        cfg["teacher"] = {**cfg.get("teacher", {}), "checkpoint": str(getattr(teacher, "path", teacher))}
    return _run("compress-gan", cfg, imports, overrides, resume, overwrite, callbacks)


def evaluate(weights: Any, data: Optional[Dict[str, Any]] = None,
             sigmas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4)) -> Dict[str, Any]:
    """``kdlab evaluate``: test accuracy, noise robustness and cost of a classifier (a :class:`Run`, run
    directory or weights file) on its data set (or ``data`` keys); :func:`kdlab.runner.evaluate`."""
    from kdlab.runner import evaluate as run_evaluate

    return run_evaluate(str(getattr(weights, "path", weights)), data, sigmas=sigmas)


__all__: List[str] = ["Run", "distill", "train_teacher", "compress_gan", "compare", "evaluate", "export",
                      "register_module", "check_output"]
