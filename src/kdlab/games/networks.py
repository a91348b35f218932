"""The run's classifier network from its ``model`` section: the registry's architecture for the data set,
initialised from ``model.checkpoint`` when one is given (the teacher recipe, the distilled students, KDGAN's
classifier and co-distillation's peers all build theirs here)."""
from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["build_network"]


def build_network(cfg: Any, spec: Any) -> nn.Module:
    """The run's network from ``cfg.model`` (registry name + kwargs) for the data set ``spec``;
    initialised from ``cfg.model.checkpoint`` when one is given.

    Raises:
        UnknownNameError / TypeError / ValueError: bad model name or kwargs (from ``build_model``).
        ValueError: the checkpoint holds another architecture (names both).
    """
    from kdlab.engine import load_classifier
    from kdlab.models import build_model

    try:
        model = build_model(cfg.model.name, num_classes=spec.num_classes, in_channels=spec.in_channels,
                            image_size=spec.image_size, **dict(cfg.model.kwargs))
    except ValueError as exc:
        if type(exc) is not ValueError or not cfg.model.kwargs:  # name errors say what they are already
            raise
        raise ValueError(f"model.kwargs of {cfg.model.name!r}: {exc}") from None
    if cfg.model.checkpoint:
        init = load_classifier(cfg.model.checkpoint, what="model.checkpoint")
        got = (init.arch, dict(init.arch_kwargs), init.num_classes, init.in_channels, init.image_size)
        want = (model.arch, dict(model.arch_kwargs), model.num_classes, model.in_channels, model.image_size)
        if got != want:
            raise ValueError(
                f"model.checkpoint {cfg.model.checkpoint!r} holds {got} (arch, kwargs, classes, channels, size); "
                f"the config builds {want}"
            )
        model.load_state_dict(init.state_dict())
    return model
