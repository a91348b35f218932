"""OMGD's style loss: L1 between Gram matrices of a feature network's maps (bytedance/OMGD
``distillers/multiteacher_distiller.py``, ``backward_G_student``; Gatys et al. 2016)."""
from __future__ import annotations

from kdlab.config import ConfigError
from kdlab.losses.omgd import style_loss
from kdlab.terms._images import image_target
from kdlab.terms.base import TERMS, Term
from kdlab.terms.perceptual import FeatureNetworkConfig, feature_network_setup


@TERMS.register("style")
class StyleTerm(Term):
    """``sum_j w_j mean |Gram(phi_j(G^s(x))) - Gram(phi_j(y))|`` (:func:`kdlab.losses.omgd.style_loss`), y the
    teacher's image or the ground truth, ``Gram(F) = F F^T / (C H W)``, phi_j the named map features ``layers``
    of ``extractor`` (a frozen kdlab classifier: offline there is no VGG-16, whose relu1_2..relu4_3 OMGD uses;
    the output domain's classifier stands in, identified by its sha256 in ``summary.json``). OMGD weighs it
    1e4. 0 when the images are equal.

    Raises (at construction): ConfigError for no extractor, an extractor for other images, unknown layers
    (lists the known ones), a layer that is no map [C, H, W] (Gram matrices need channels and positions), a
    wrong number of layer weights.
    """

    Config = FeatureNetworkConfig
    requires = frozenset({"images"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        feature_network_setup(self, cfg, ctx, "style")
        from kdlab.models.base import feature_shapes

        shapes = feature_shapes(self.features.classifier, self.features.layers)
        flat = [n for n in self.features.layers if len(tuple(shapes[n])) != 3]
        if flat:
            raise ConfigError(f"objective.{ctx.role}.style.layers: {flat} of the extractor are not maps [C, H, W] "
                              f"(shapes {[tuple(shapes[n]) for n in flat]}); name convolutional features")

    def record(self):
        return {"extractor": self._record}

    def forward(self, s, t, batch):
        return style_loss(s.out, image_target(self.cfg.target, t, batch), self.features, self.cfg.layer_weights)
