"""LPIPS-form perceptual distance on a pluggable feature network (Zhang et al. 2018, eq. 1; CAGC's
``LPIPS``, VEM paper eq. 27)."""
from __future__ import annotations

from kdlab.losses.image import lpips_distance
from kdlab.terms._images import image_target
from kdlab.terms.base import TERMS, Term
from kdlab.terms.perceptual import FeatureNetworkConfig, feature_network_setup


@TERMS.register("lpips")
class LPIPSTerm(Term):
    """``sum_l w_l mean_{h,w} ||u_l(G^s(x)) - u_l(y)||^2`` with u_l the channel-unit-normalised features of
    the frozen ``extractor`` classifier (:func:`kdlab.losses.image.lpips_distance`; LPIPS's "baseline"
    variant: no learned channel weights, which need downloaded weights). Keys and errors as ``perceptual``.
    0 when the images are equal.
    """

    Config = FeatureNetworkConfig
    requires = frozenset({"images"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        feature_network_setup(self, cfg, ctx, "lpips")

    def record(self):
        return {"extractor": self._record}

    def forward(self, s, t, batch):
        return lpips_distance(s.out, image_target(self.cfg.target, t, batch), self.features, self.cfg.layer_weights)
