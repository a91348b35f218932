"""Model names from torchvision and timm: ``torchvision:<name>`` (e.g. ``torchvision:resnet18``) and
``timm:<name>`` (e.g. ``timm:mobilenetv3_small_050``; timm is the optional extra ``kdlab[timm]``).

``num_classes`` and the input channels come from the data set (for torchvision the first convolution is
rebuilt for C != 3; timm's ``in_chans`` does it). ``model.kwargs`` go to the library's constructor, except
``pretrained: true``: the library's default ImageNet weights, read from torch hub's cache (torchvision:
``<hub dir>/checkpoints/<file>``; timm: the Hugging Face cache, offline) -- nothing is downloaded at run time;
a missing file is an error that names where to put it. The classifier head (other ``num_classes``) is then
left as initialised, and for C = 1 the first convolution's pretrained kernels are summed over RGB (the
usual grey adaptation). Weights of a kdlab run are given by ``model.checkpoint`` as for any model.
Features are named by module path (``layer3``, ``blocks.2``).
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from kdlab.models.base import adopt, register_prefix
from kdlab.registry import UnknownArgumentError, UnknownNameError

TORCHVISION, TIMM = "torchvision:", "timm:"


def _nearest(name: str, known: list, source: str, extra: str = "") -> UnknownNameError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    return UnknownNameError(f"unknown {source} model {name!r}; nearest names: {', '.join(close) or '(none)'} "
                            f"({len(known)} {source} classification models{extra})")


def _first_conv(net: nn.Module) -> tuple:
    """``(path, module)`` of the first ``nn.Conv2d`` of ``net`` (its stem)."""
    return next((p, m) for p, m in net.named_modules() if isinstance(m, nn.Conv2d))


def _set_in_channels(net: nn.Module, channels: int) -> None:
    """Rebuild the stem convolution for ``channels`` inputs; pretrained RGB kernels are summed (C = 1) or
    tiled and rescaled by 3 / C (other C), which keeps the response to a grey image."""
    path, conv = _first_conv(net)
    if conv.in_channels == channels:
        return
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        w = conv.weight
        new.weight.copy_(w.sum(1, keepdim=True) if channels == 1 else
                         w.repeat(1, (channels + w.shape[1] - 1) // w.shape[1], 1, 1)[:, :channels] * w.shape[1] / channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent, _, leaf = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, new)


def _torchvision(name: str) -> Callable[..., nn.Module]:
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)
    if name not in known:
        raise _nearest(name, known, "torchvision")

    def build(num_classes: int, in_channels: int, image_size: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        try:
            net = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        except TypeError as exc:
            raise UnknownArgumentError(f"model torchvision:{name}, model.kwargs {kwargs}: {exc}; accepted: the keyword "
                                       f"arguments of torchvision.models.{name} (and pretrained)") from None
        if pretrained:
            weights = tvm.get_model_weights(name).DEFAULT
            file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
            if not file.is_file():
                raise FileNotFoundError(
                    f"model torchvision:{name} with pretrained: true reads {weights} from torch hub's cache, which does "
                    f"not hold it (nothing is downloaded at run time): put {file.name} (from {weights.url}) at {file}, "
                    f"or set model.kwargs.pretrained=false, or model.checkpoint=<kdlab run>")
            state = torch.load(file, map_location="cpu", weights_only=True)
            own = net.state_dict()
            net.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
        _set_in_channels(net, in_channels)
        return adopt(net, f"{TORCHVISION}{name}", kwargs, num_classes, in_channels, image_size)

    return build


def _timm(name: str) -> Callable[..., nn.Module]:
    try:
        import timm
    except ImportError:
        raise ImportError(f"model timm:{name} needs timm: pip install 'kdlab[timm]' (or pip install timm)") from None
    known = timm.list_models()
    if name not in known:
        raise _nearest(name, known, "timm")

    def build(num_classes: int, in_channels: int, image_size: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        offline = {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE")}
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            net = timm.create_model(name, pretrained=bool(pretrained), num_classes=num_classes, in_chans=in_channels,
                                    **kwargs)
        except TypeError as exc:
            raise UnknownArgumentError(f"model timm:{name}, model.kwargs {kwargs}: {exc}; accepted: the keyword "
                                       f"arguments of timm.create_model({name!r}) (and pretrained)") from None
        except Exception as exc:
            if not pretrained:
                raise
            raise FileNotFoundError(
                f"model timm:{name} with pretrained: true reads its weights from the Hugging Face cache "
                f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}/hub), offline; they are not there ({exc}): "
                f"fetch them once elsewhere (timm.create_model({name!r}, pretrained=True)) and copy the cache, or set "
                f"model.kwargs.pretrained=false") from None
        finally:
            if offline["HF_HUB_OFFLINE"] is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = offline["HF_HUB_OFFLINE"]
        return adopt(net, f"{TIMM}{name}", kwargs, num_classes, in_channels, image_size)

    return build


register_prefix(TORCHVISION, _torchvision)
register_prefix(TIMM, _timm)

