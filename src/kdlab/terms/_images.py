"""Build-time helpers shared by the image terms of the image-to-image students (VEM paper appendix A.2):
what an image term compares the student's image with (the teacher's image or the ground truth), the
generators' default distilled layers, and the pluggable feature network of the perceptual / LPIPS terms.
"""
from __future__ import annotations

from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

import torch
from torch import nn

from kdlab.config import ConfigError
from kdlab.terms._feature_maps import map_shapes
from kdlab.terms.base import Outputs, TermContext, layer_pairs

#: ``target`` of an image term: the teacher's image for the same input, or the ground truth of paired data
IMAGE_TARGETS = ("teacher", "ground_truth")


def target_requires(target: str, ctx: TermContext, term: str, base: Sequence[str] = ("images",)) -> FrozenSet[str]:
    """The capabilities an image term comparing with ``target`` needs (``base`` + teacher or targets).

    Raises:
        ConfigError: the method cannot provide them (names the term, the key and why).
    """
    need = "teacher" if target == "teacher" else "targets"
    if need not in ctx.provides:
        why = ctx.why_not.get(need, "")
        alt = "ground_truth" if target == "teacher" else "teacher"
        raise ConfigError(f"objective.{ctx.role}.{term}.target = {target!r} needs {need}, which method {ctx.method!r} does not "
                          f"provide{': ' + why if why else ''}; use objective.{ctx.role}.{term}.target={alt}")
    return frozenset(base) | {need}


def image_target(target: str, t: Optional[Outputs], batch: Any) -> torch.Tensor:
    """The image the student's is compared with: ``t.out`` (teacher) or ``batch.target`` (ground truth), detached.

    Raises:
        ValueError: ground truth asked for but the batch has none.
    """
    if target == "teacher":
        return t.out.detach()
    if batch.target is None:
        raise ValueError("target = 'ground_truth' but the batch carries no ground-truth image (batch.target): "
                         "paired translation data is needed")
    return batch.target


def default_layer_pairs(ctx: TermContext, term: str) -> List[Tuple[str, str]]:
    """``[(name, name), ...]`` of the generators' default distilled layers (their ``distill_layers``), for a
    student and teacher of one architecture.

    Raises:
        ConfigError: a generator without defaults, or student and teacher of different architectures
            (then ``objective.student.<term>.layers`` must name the pairs).
    """
    s_arch, t_arch = getattr(ctx.student, "arch", None), getattr(ctx.teacher, "arch", None)
    s_def, t_def = getattr(ctx.student, "distill_layers", None), getattr(ctx.teacher, "distill_layers", None)
    if not s_def or s_arch != t_arch or list(s_def) != list(t_def or []):
        known = sorted(getattr(ctx.student, "feature_layers", {}) or {})
        raise ConfigError(f"term {term!r} has no default layers for student {s_arch!r} and teacher {t_arch!r}: set "
                          f"objective.student.{term}.layers = [[student feature, teacher feature], ...] (student features: "
                          f"{', '.join(known) or 'module paths'})")
    return [(n, n) for n in s_def]


def generator_pairs(layers: Optional[Sequence[Sequence[str]]], ctx: TermContext, term: str, same_size: bool = False):
    """The ``(student, teacher)`` generator feature pairs of a term (``layers``, or the generators' defaults when
    empty/None) and their per-sample shapes ``[((C_s, H, W), (C_t, H, W)), ...]``.

    Raises:
        ConfigError: a bad pair, an unknown feature (lists the known ones), a feature that is not a map, or
            (``same_size``) maps of different spatial sizes (names both shapes).
    """
    pairs = layer_pairs(layers, term) if layers else default_layer_pairs(ctx, term)
    return pairs, map_shapes(pairs, ctx, term, same_size=same_size)


class FeatureNetwork(nn.Module):
    """A frozen kdlab classifier as the feature network ``phi`` of the perceptual / LPIPS terms.

    ``forward(images [B, C, H, W] in [-1, 1]) -> [phi_l(images) for l in layers]``: the images are mapped to
    [0, 1] and normalised as the classifier's training data (``(x - mean) / std``), then its named
    features are taken by forward hooks, with a graph to the images (the classifier's parameters are
    frozen; eval mode always).
    """

    def __init__(self, classifier: nn.Module, layers: Sequence[str], mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.layers = list(layers)
        c = len(tuple(mean))
        self.register_buffer("mean", torch.tensor(tuple(mean), dtype=torch.float32).reshape(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).reshape(1, c, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "FeatureNetwork":  # always eval: BN statistics and dropout frozen
        return super().train(False)

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        from kdlab.models.base import extract_features

        p = self.mean
        if p.device != images.device:
            self.to(images.device)  # not a player: moved where the images are on first use
        x = ((images + 1.0) / 2.0 - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        _, feats = extract_features(self.classifier, x, self.layers)
        return [feats[n] for n in self.layers]


def _normalisation(meta: Dict[str, Any], ctx: TermContext) -> Tuple[Tuple[float, ...], Tuple[float, ...], str]:
    """(mean, std, where from) of the classifier's inputs: the data set recorded in its weights, else the
    translation task's output domain, else the run's data set."""
    from kdlab.data import dataset_spec

    name = meta.get("data") or getattr(ctx.spec, "target_domain", None)
    if name and not str(name).startswith("imagefolder"):
        try:
            spec = dataset_spec(str(name))
            return tuple(spec.mean), tuple(spec.std), str(name)
        except Exception:  # an unknown or unreadable data set: fall through
            pass
    if ctx.spec is not None and getattr(ctx.spec, "pairing", None) is None:
        return tuple(ctx.spec.mean), tuple(ctx.spec.std), str(ctx.spec.name)
    c = getattr(ctx.spec, "out_channels", 1) if ctx.spec is not None else 1
    return (0.5,) * c, (0.5,) * c, "[-1, 1] (mean = std = 0.5)"


def load_feature_network(extractor: Optional[str], layers: Sequence[str], ctx: TermContext,
                         term: str) -> Tuple[FeatureNetwork, Dict[str, Any]]:
    """The feature network of ``objective.student.<term>.extractor`` (a kdlab classifier run dir, ``.safetensors`` or
    ``.ckpt``) and its record for ``summary.json`` (checkpoint, sha256, arch, layers, normalisation).

    ``layers``: the classifier's named features (empty: all its friendly features, e.g. LeNet's conv1,
    pool1, conv2, pool2, fc1). Loaded by content hash as every kdlab network (an edited file is refused).

    Raises:
        ConfigError: no extractor, a classifier whose input channels / size differ from the generator's
            images (names both), unknown layer names (lists the known ones).
        FileNotFoundError / WeightsError: as :func:`kdlab.engine.checkpoint.load_classifier`.
    """
    from kdlab.engine.checkpoint import load_classifier, read_weights, resolve_weights
    from kdlab.engine.digest import file_sha256
    from kdlab.models.base import UnknownFeatureError, feature_shapes

    if not extractor:
        raise ConfigError(f"term {term!r} needs a feature network: set objective.student.{term}.extractor=runs/<classifier run> "
                          "(a kdlab classifier trained on the output domain, `kdlab train-teacher`)")
    path = resolve_weights(extractor)
    clf = load_classifier(path, what=f"objective.student.{term}.extractor")
    meta, _ = read_weights(path, f"objective.student.{term}.extractor")
    img = tuple(ctx.student_shapes(["output"], term)["output"]) if ctx.student is not None else None
    if img is not None and (clf.in_channels, clf.image_size) != (img[0], img[1]):
        raise ConfigError(f"objective.student.{term}.extractor {str(path)!r} takes images of (channels, size) = "
                          f"{(clf.in_channels, clf.image_size)}, but the generator makes {(img[0], img[1])}")
    names = list(layers) or list(getattr(clf, "feature_layers", {}) or {})
    if not names:
        raise ConfigError(f"objective.student.{term}.layers: the extractor {clf.arch!r} has no named features; name module paths")
    try:
        feature_shapes(clf, names)
    except UnknownFeatureError as exc:
        raise ConfigError(f"objective.student.{term}.layers: the extractor {exc}") from None
    mean, std, source = _normalisation(dict(meta), ctx)
    record = {"checkpoint": str(path), "sha256": file_sha256(path), "arch": clf.arch, "layers": names,
              "normalisation": source}
    return FeatureNetwork(clf, names, mean, std), record
