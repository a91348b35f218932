"""Named features of any network: kdlab's one mechanism to read an intermediate tensor.

A feature name is a friendly name of the network's ``feature_layers`` table (kdlab's classifiers and
generators have one), or any module path of ``named_modules()``; either may end in :data:`INPUT` to
take the module's input instead of its output (``"fc:in"``: a classifier's penultimate features;
``"features.1:in"``: what a BatchNorm layer normalises). :func:`capture_features` hooks the modules
for the duration of a ``with`` block (torchdistill's approach: no network is rewritten), so one forward
pass gives the output and every requested feature, with gradients.

Below every other layer of kdlab (imports torch only): models, terms, methods and metrics all use it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Sequence, Tuple, Union

from torch import Tensor, nn


class UnknownFeatureError(KeyError):
    """A feature name that is neither a friendly name of the model nor a module path in it.

    The message lists the model's friendly feature names (module paths from ``named_modules()`` are
    accepted too).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""



#: suffix of a feature name that asks for a module's INPUT (its first positional argument) instead of
#: its output, e.g. ``"fc:in"`` (the penultimate features of a classifier), ``"features.1:in"`` (a
#: BatchNorm layer's input)
INPUT = ":in"


#: the penultimate features of a :class:`Classifier`: the input of its final linear layer ``fc``
FC_INPUT = "fc" + INPUT


def split_feature(name: str) -> Tuple[str, bool]:
    """``(module name or path, True when the module's input is asked for)`` of a feature name."""
    return (name[: -len(INPUT)], True) if name.endswith(INPUT) else (name, False)


def _resolve_features(model: nn.Module, names: Sequence[str]) -> Dict[str, Tuple[str, bool]]:
    friendly: Mapping[str, str] = getattr(model, "feature_layers", None) or {}
    modules = dict(model.named_modules())
    out: Dict[str, Tuple[str, bool]] = {}
    for n in names:
        base, is_input = split_feature(n)
        if base in friendly:  # friendly names first
            out[n] = (friendly[base], is_input)
        elif base in modules and base != "":
            out[n] = (base, is_input)
        else:
            listed = ", ".join(friendly) if friendly else "(none)"
            raise UnknownFeatureError(
                f"unknown feature {n!r} for model {getattr(model, 'arch', type(model).__name__)!r}; "
                f"known features: {listed} (or any module path of named_modules(); '<name>{INPUT}' for a module's input)"
                f"{_near(modules, base)}"
            )
    return out


def _near(modules: Mapping[str, nn.Module], path: str) -> str:
    """``"; module paths near 'layer3.9': layer3.0, layer3.1, ..."``: the children of the deepest existing
    parent of ``path`` and the closest spellings among all paths."""
    import difflib

    parts = path.split(".")
    parent = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in modules), "")
    children = [p for p in modules if p and (p.rsplit(".", 1)[0] if "." in p else "") == parent]
    close = difflib.get_close_matches(path, [p for p in modules if p], n=3, cutoff=0.6)
    near = list(dict.fromkeys(children[:12] + close))
    return f"; module paths near {path!r}: {', '.join(near)}{' ...' if len(children) > 12 else ''}" if near else ""


@contextmanager
def capture_features(model: nn.Module, names: Union[str, Sequence[str]]) -> Iterator[Dict[str, Tensor]]:
    """Context manager: while active, each forward pass of ``model`` stores the requested features.

    This is kdlab's one feature mechanism: every place that reads an intermediate tensor of a network
    (terms, the data-free generator terms, feature extractors of the metrics) goes through it.

    Yields a dict ``name -> Tensor`` filled by forward hooks: the OUTPUT of the module the name resolves
    to, or its INPUT (first positional argument, by a forward pre-hook) for a name ending in
    :data:`INPUT` (``"fc:in"``). If a module runs several times in one forward, the last call is kept.
    Hooks are removed on exit, also when the body raises. Gradients flow through the stored tensors.

    Raises:
        UnknownFeatureError: a name that is neither a friendly name nor a module path (with or without
            the input suffix).
    """
    if isinstance(names, str):
        names = [names]
    paths = _resolve_features(model, list(names))
    modules = dict(model.named_modules())
    store: Dict[str, Tensor] = {}
    handles = []

    def make_hook(feature_names: List[str]) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            for fn in feature_names:
                store[fn] = output

        return hook

    def make_pre_hook(feature_names: List[str]) -> Callable[..., None]:
        def hook(_module: nn.Module, inputs: Any) -> None:
            for fn in feature_names:
                store[fn] = inputs[0]

        return hook

    by_path: Dict[Tuple[str, bool], List[str]] = {}
    for fname, where in paths.items():
        by_path.setdefault(where, []).append(fname)
    try:
        for (path, is_input), fnames in by_path.items():
            if is_input:
                handles.append(modules[path].register_forward_pre_hook(make_pre_hook(fnames)))
            else:
                handles.append(modules[path].register_forward_hook(make_hook(fnames)))
        yield store
    finally:
        for h in handles:
            h.remove()


