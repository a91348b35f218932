"""Perceptual (feature reconstruction) loss on a pluggable feature network (OMGD, VEM paper eq. 15;
Johnson et al. 2016, eq. 2)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from kdlab.config import ConfigError, choice
from kdlab.losses.image import FEATURE_DISTANCES, perceptual_loss
from kdlab.terms._images import IMAGE_TARGETS, image_target, load_feature_network, target_requires
from kdlab.terms.base import TERMS, Term, TermConfig


@dataclass
class FeatureNetworkConfig(TermConfig):
    """Keys of the terms on a feature network (perceptual, lpips)."""

    target: str = choice("teacher", IMAGE_TARGETS)
    extractor: Optional[str] = None  # a kdlab classifier of the output domain (run dir / .safetensors / .ckpt)
    layers: List[str] = field(default_factory=list)  # its named features; [] = all its friendly features
    layer_weights: Optional[List[float]] = None  # one per layer; null = 1 each


def feature_network_setup(term, cfg, ctx, name: str) -> None:
    """Shared construction of the feature-network terms: requirements, the network (not a submodule:
    it is frozen and belongs to no optimizer or checkpoint; its hash is recorded instead) and checks."""
    term.requires = target_requires(cfg.target, ctx, name)
    net, term._record = load_feature_network(cfg.extractor, list(cfg.layers), ctx, name)
    object.__setattr__(term, "features", net)
    if cfg.layer_weights is not None and len(cfg.layer_weights) != len(net.layers):
        raise ConfigError(f"objective.student.{name}.layer_weights has {len(cfg.layer_weights)} entries for "
                          f"{len(net.layers)} layers {net.layers}")


@dataclass
class PerceptualConfig(FeatureNetworkConfig):
    """Keys of the perceptual term: the feature network's, and the distance per feature element."""

    distance: str = choice("mse", FEATURE_DISTANCES)  # mse: Johnson et al. eq. 2 | l1: OMGD's feature loss


@TERMS.register("perceptual")
class PerceptualTerm(Term):
    """``sum_j w_j mean (phi_j(G^s(x)) - phi_j(y))^2`` (:func:`kdlab.losses.image.perceptual_loss`), y the
    teacher's image or the ground truth, phi_j the named features ``layers`` of ``extractor``: a frozen kdlab
    classifier (offline there is no VGG; the output domain's classifier stands in), identified by its
    sha256 in ``summary.json``. ``distance: l1``: ``mean |.|`` instead of the square (OMGD's feature loss,
    ``F.l1_loss`` on one VGG layer). 0 when the images are equal.

    Raises (at construction): ConfigError for no extractor, an extractor for other images, unknown
    layers (lists the known ones), a wrong number of layer weights.
    """

    Config = PerceptualConfig
    requires = frozenset({"images"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        feature_network_setup(self, cfg, ctx, "perceptual")

    def record(self):
        return {"extractor": self._record}

    def forward(self, s, t, batch):
        return perceptual_loss(s.out, image_target(self.cfg.target, t, batch), self.features, self.cfg.layer_weights,
                               self.cfg.distance)
