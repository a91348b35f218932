"""The classifier base class, the model registry and feature extraction by forward hooks.

Every classifier in kdlab is a :class:`Classifier`: ``forward(x [B, C, H, W]) -> logits [B, K]``
plus the metadata a checkpoint needs to rebuild it (``arch``, ``arch_kwargs``, ``num_classes``,
``in_channels``, ``image_size``) and a table ``feature_layers`` of friendly feature names ->
module paths. Intermediate features are taken with forward hooks on those modules (torchdistill's
approach), so no model has to be rewritten to expose them and one forward pass gives the logits and
every requested feature, with gradients (hints, attention transfer and input Jacobians need them).
"""
from __future__ import annotations

import inspect
import re
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from kdlab.features import FC_INPUT, INPUT, UnknownFeatureError, capture_features, split_feature  # noqa: F401

from kdlab.registry import Registry, UnknownArgumentError, UnknownNameError

MODELS = Registry("model")
"""Registry of classifier factories ``f(num_classes, in_channels, image_size, **kwargs) -> Classifier``."""

# Families whose depth/width is part of the name (regex, factory): any depth/width of the right
# form is built, not only the registered names (which exist so that ``kdlab list`` shows them).
_PATTERNS: List[Tuple["re.Pattern[str]", Callable[..., "Classifier"]]] = []


class GlobalAvgPool2d(nn.Module):
    """Global average pooling: ``[B, C, H, W] -> [B, C]`` (mean over H and W).

    A module (not a functional call) so that its output, the ``gap`` feature, can be hooked.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class Classifier(nn.Module):
    """Base class of kdlab classifiers.

    Subclasses build their layers, fill ``feature_layers`` and implement ``forward``.

    Attributes:
        num_classes: K, the number of logits.
        in_channels: C of the input images.
        image_size: H = W of the input images (pixels) the model was built for.
        arch: registry name (e.g. ``"vgg9"``, ``"wrn_40_2"``) that :func:`build_model` accepts.
        arch_kwargs: the architecture keyword arguments used (defaults included), JSON-serialisable,
            so ``build_model(arch, num_classes, in_channels, image_size, **arch_kwargs)`` rebuilds
            the same architecture (same parameter names and shapes).
        feature_layers: friendly feature name -> module path in ``named_modules()`` whose OUTPUT
            is the feature, in forward order.
    """

    def __init__(
        self,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        num_classes: int,
        in_channels: int,
        image_size: int,
    ) -> None:
        super().__init__()
        _check_int("num_classes", num_classes, 1)
        _check_int("in_channels", in_channels, 1)
        _check_int("image_size", image_size, 1)
        self.arch = str(arch)
        self.arch_kwargs: Dict[str, Any] = dict(arch_kwargs)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.feature_layers: Dict[str, str] = {}

    def config(self) -> Dict[str, Any]:
        """JSON-serialisable description: ``{"name", "num_classes", "in_channels", "image_size", "kwargs"}``.

        ``build_model(c["name"], c["num_classes"], c["in_channels"], c["image_size"], **c["kwargs"])``
        rebuilds the architecture.
        """
        return {
            "name": self.arch,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "kwargs": dict(self.arch_kwargs),
        }

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, num_classes={self.num_classes}, in_channels={self.in_channels}, "
            f"image_size={self.image_size}"
        )


# ----------------------------------------------------------------------------- validation helpers


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_dropout(value: Any, name: str = "dropout") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def _check_min_size(arch: str, image_size: int, minimum: int) -> None:
    if image_size < minimum:
        raise ValueError(f"{arch} needs image_size >= {minimum}, got {image_size}")


@contextmanager
def frozen(module: nn.Module, keep: Sequence[nn.Parameter] = ()) -> Iterator[nn.Module]:
    """Freeze ``module``'s parameters but ``keep`` while another player's step back-propagates through it (no
    gradients accumulate there, so its own next step starts clean; e.g. a generator step through D, or GCC's
    gates step with D's weights fixed, ``set_netD_weight_grad(False)``); restored on exit."""
    kept = {id(p) for p in keep}
    params = [p for p in module.parameters() if p.requires_grad and id(p) not in kept]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def init_weights(module: nn.Module) -> None:
    """He (Kaiming) normal init for convolutions (fan_out, ReLU), BN weight 1 / bias 0, Linear bias 0.

    The init of torchvision's ResNets and of RepDistiller's CIFAR models; Linear weights keep
    PyTorch's default (uniform +-1/sqrt(fan_in)).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- registry / building


def register_pattern(regex: str, factory: Callable[..., Classifier]) -> None:
    """Let :func:`build_model` accept every name that fully matches ``regex`` (e.g. any ``wrn_D_W``).

    The match's groups are passed, as integers, as the first positional arguments of ``factory``;
    the other arguments are keywords as for registered factories.
    """
    _PATTERNS.append((re.compile(regex), factory))


_COMMON = ("num_classes", "in_channels", "image_size")

#: name prefix -> resolver of the rest of the name to a factory (``torchvision:``, ``timm:``; :mod:`kdlab.models.hub`)
_PREFIXES: Dict[str, Callable[[str], Callable[..., nn.Module]]] = {}


def register_prefix(prefix: str, resolve: Callable[[str], Callable[..., nn.Module]]) -> None:
    """Let :func:`build_model` accept ``<prefix><name>``: ``resolve(name)`` returns the factory (or raises
    :class:`UnknownNameError` naming the nearest names)."""
    _PREFIXES[prefix.lower()] = resolve


def adopt(net: nn.Module, arch: str, arch_kwargs: Mapping[str, Any], num_classes: int, in_channels: int,
          image_size: int) -> nn.Module:
    """Give a plain ``nn.Module`` (a plugin's, torchvision's, timm's, an in-memory one) the metadata of a
    :class:`Classifier` (``arch``, ``arch_kwargs``, ``num_classes``, ``in_channels``, ``image_size``,
    ``feature_layers``) so kdlab can save, reload and report it; its features are named by module path
    (``"layer3"``). A ``Classifier`` is returned unchanged.

    Raises:
        TypeError: ``net`` is not an ``nn.Module`` (names what it is).
    """
    if isinstance(net, Classifier):
        return net
    if not isinstance(net, nn.Module):
        raise TypeError(f"model {arch!r}: the factory returned {type(net).__name__}; accepted: a torch.nn.Module")
    for key, value in (("arch", arch), ("arch_kwargs", dict(arch_kwargs)), ("num_classes", int(num_classes)),
                       ("in_channels", int(in_channels)), ("image_size", int(image_size))):
        object.__setattr__(net, key, value)
    if not hasattr(net, "feature_layers"):
        object.__setattr__(net, "feature_layers", {})
    return net


def _resolve(name: str) -> Tuple[Callable[..., Classifier], Tuple[int, ...]]:
    """Factory and the integers parsed from the name (empty for registered names)."""
    key = str(name).lower()
    if key in MODELS:
        return MODELS.get(key), ()
    for prefix, resolve in _PREFIXES.items():
        if key.startswith(prefix):
            return resolve(str(name)[len(prefix):]), ()
    for regex, factory in _PATTERNS:
        m = regex.fullmatch(key)
        if m:
            return factory, tuple(int(g) for g in m.groups())
    known = ", ".join(MODELS.names())
    raise UnknownNameError(
        f"unknown model {name!r}; known models: {known} "
        "(also any resnet{depth} with (depth - 2) % 6 == 0 and any wrn_{depth}_{width} with "
        "(depth - 4) % 6 == 0)"
    )


def _accepted_kwargs(factory: Callable[..., Any], n_fixed: int) -> Optional[List[str]]:
    """Architecture keywords a factory takes (None: it accepts any ``**kwargs``)."""
    params = list(inspect.signature(factory).parameters.values())[n_fixed:]
    names = []
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _COMMON:
            names.append(p.name)
    return names


def build_model(
    name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, **kwargs: Any
) -> Classifier:
    """Build the classifier registered as ``name`` for ``[B, in_channels, image_size, image_size]`` input.

    Args:
        name: a registry name (``MODELS.names()``), or ``resnet{D}`` / ``wrn_{D}_{W}`` of any valid depth.
        num_classes: K >= 1, the number of logits.
        in_channels: C >= 1 of the input images.
        image_size: H = W >= 1 of the input images (pixels).
        **kwargs: architecture options (e.g. ``dropout``, ``width``, ``hidden``); see each model.

    Returns:
        a :class:`Classifier` whose ``arch`` is the canonical (lower-case) name, e.g. ``"resnet20"``.

    Raises:
        UnknownNameError: unknown ``name`` (the message lists the known names).
        TypeError: a keyword argument the model does not take (names it and the accepted ones).
        ValueError: a bad value (names it and the accepted range).
    """
    factory, fixed = _resolve(name)
    accepted = _accepted_kwargs(factory, len(fixed))
    if accepted is not None:
        bad = sorted(set(kwargs) - set(accepted))
        if bad:
            raise UnknownArgumentError(
                f"model {name!r} got unknown keyword argument(s) {bad}; accepted: "
                f"{', '.join(accepted) if accepted else '(none)'}"
            )
    _check_int("num_classes", num_classes, 1)
    _check_int("in_channels", in_channels, 1)
    _check_int("image_size", image_size, 1)
    # the model sets its canonical ``arch`` itself (e.g. "wrn_040_2" builds arch "wrn_40_2")
    return factory(*fixed, num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


# ----------------------------------------------------------------------------- features
# the mechanism itself is kdlab.features (below every layer); re-exported here


def extract_features(
    model: nn.Module, x: Tensor, names: Union[str, Sequence[str]]
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Run ``model(x)`` once and return the logits and the requested intermediate features.

    Args:
        model: a :class:`Classifier` (friendly names from ``feature_layers``) or any ``nn.Module``.
        x: input ``[B, C, H, W]`` (normalised images).
        names: friendly feature names (``model.feature_layers``) and/or module paths of
            ``model.named_modules()``; a single string is one name.

    Returns:
        ``(logits [B, K], {name: feature [B, ...]})``; features keep their autograd graph, so a
        loss on them back-propagates into the model and into ``x``.

    Raises:
        UnknownFeatureError: unknown name (lists the friendly names); raised before the forward.
        RuntimeError: a requested module did not run during the forward pass.
    """
    if isinstance(names, str):
        names = [names]
    with capture_features(model, names) as store:
        logits = model(x)
    missing = [n for n in names if n not in store]
    if missing:
        raise RuntimeError(f"feature(s) {missing} were not produced: their modules did not run in forward")
    return logits, {n: store[n] for n in names}


def feature_shapes(
    model: nn.Module,
    names: Optional[Sequence[str]] = None,
    input_shape: Optional[Tuple[int, int, int]] = None,
) -> Dict[str, Tuple[int, ...]]:
    """Per-sample shapes of features, from a dry run on one all-zero image in eval mode (no grad).

    Args:
        model: the model; its train/eval mode is restored afterwards.
        names: features to report (default: every friendly name of ``model.feature_layers``).
        input_shape: ``(C, H, W)``; default ``(model.in_channels, model.image_size, model.image_size)``.

    Returns:
        ``{name: shape without the batch dimension}``, e.g. vgg9 on 32x32: ``{"pool1": (64, 16, 16), ...}``.

    Raises:
        UnknownFeatureError: unknown name. ValueError: no ``input_shape`` for a non-Classifier model.
    """
    if names is None:
        names = list(getattr(model, "feature_layers", {}) or {})
    if input_shape is None:
        try:
            input_shape = (model.in_channels, model.image_size, model.image_size)  # type: ignore[assignment]
        except AttributeError:
            raise ValueError("input_shape=(C, H, W) is needed for a model without in_channels/image_size") from None
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros((1, *input_shape), device=device, dtype=dtype)
            _, feats = extract_features(model, x, names)
    finally:
        model.train(was_training)
    return {n: tuple(f.shape[1:]) for n, f in feats.items()}
