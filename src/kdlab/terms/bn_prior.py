"""The BatchNorm-statistics prior (DeepInversion eq. 4, ``R_feature``; the generator-based DFQ of Choi et
al. 2020): the batch statistics of the generator's images at the input of every teacher BatchNorm layer
should match the layer's running statistics, i.e. what the teacher saw in training.

* ``norm: layer``: ``sum_l ||mu_l - m_l||_2 + ||var_l - v_l||_2`` (DeepInversion; Fast-Datafree / CMI's
  ``DeepInversionHook`` summed over layers);
* ``norm: concat``: one norm over all channels of all layers (MosaicKD's data-free baseline code).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from torch import nn

from kdlab.config import ConfigError, choice
from kdlab.features import INPUT
from kdlab.losses.datafree import BN_NORMS, bn_statistics_loss
from kdlab.terms.base import TERMS, Term, TermConfig


def batchnorm_layers(net: nn.Module) -> List[tuple]:
    """``[(module path, layer), ...]``: the BatchNorm layers of ``net`` that keep running statistics, in order."""
    return [(n, m) for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats and m.running_mean is not None and m.running_var is not None]


@TERMS.register("bn_prior")
class BNPriorTerm(Term):
    """:func:`kdlab.losses.datafree.bn_statistics_loss` over every BatchNorm layer of the teacher (their inputs
    are teacher features ``<path>:in``; the running statistics are the frozen teacher's). Scalar >= 0.

    Raises (at construction): ConfigError: a teacher without BatchNorm layers (names its architecture).
    """

    @dataclass
    class Config(TermConfig):
        norm: str = choice("layer", BN_NORMS)

    requires = frozenset({"teacher", "features"})
    roles = frozenset({"generator"})

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        layers = batchnorm_layers(ctx.teacher)
        if not layers:
            arch = getattr(ctx.teacher, "arch", type(ctx.teacher).__name__)
            raise ConfigError(f"term 'bn_prior' matches the running statistics of the teacher's BatchNorm layers; the "
                              f"teacher {arch!r} has no BatchNorm layer with running statistics: use a teacher with "
                              "BatchNorm (e.g. vgg4, resnet20, wrn_16_1) or drop the term")
        self.teacher_features = [path + INPUT for path, _ in layers]
        self._bn = [m for _, m in layers]  # a plain list: the teacher's layers are not this term's modules

    def forward(self, s, t, batch):
        inputs = [t.features[n] for n in self.teacher_features]
        return bn_statistics_loss(inputs, [b.running_mean for b in self._bn], [b.running_var for b in self._bn],
                                  norm=self.cfg.norm)
