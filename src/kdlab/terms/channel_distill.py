"""OMGD's channel distillation (Ren et al. 2021; VEM paper appendix A.2.1, eqs. 13-14)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from kdlab.config import choice
from kdlab.losses.gan_compression_distill import Conv1x1Adapters
from kdlab.losses.omgd import ConvBNReLUAdapters, channel_distillation_losses
from kdlab.terms._images import generator_pairs
from kdlab.terms.base import TERMS, Term, TermConfig

#: ``adapter`` of the channel distillation: the form of ``f_l``
ADAPTERS = ("conv", "conv_bn_relu")


@TERMS.register("channel_distill")
class ChannelDistillTerm(Term):
    """``L_CD = sum_l E_x (1/C_l) ||GAP(G_l^t(x)) - GAP(f_l(G_l^s(x)))||_2^2`` (eqs. 13-14;
    :func:`kdlab.losses.omgd.channel_distillation_losses`).

    ``layers``: ``[[student feature, teacher feature], ...]`` of the generators (``[]``: their default
    distilled layers, ``distill_layers`` of ``unet``/``resnet_gen``; OMGD's recipes name its four mixed
    encoder/decoder activations). ``f_l`` (``adapter``): ``conv`` = a 1x1 convolution with bias
    (:class:`kdlab.losses.gan_compression_distill.Conv1x1Adapters`) or ``conv_bn_relu`` = OMGD's bias-free 1x1
    conv + BatchNorm + ReLU (:class:`kdlab.losses.omgd.ConvBNReLUAdapters`), student channels -> teacher
    channels, owned by the term and trained with the student. Only channel means are compared, so the maps
    may differ in size. 0 when the adapted student's channel means equal the teacher's.

    Raises (at construction): ConfigError for unknown features (lists the known ones) or non-map features.
    """

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [] = the generators' default distilled layers
        adapter: str = choice("conv", ADAPTERS)  # f_l: 1x1 conv (GAN-Compression) | conv_bn_relu (OMGD's code)

    requires = frozenset({"teacher", "images", "features"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.pairs, shapes = generator_pairs(cfg.layers, ctx, "channel_distill")
        self.expose(self.pairs)
        make = ConvBNReLUAdapters if cfg.adapter == "conv_bn_relu" else Conv1x1Adapters
        self.adapters = make([s[0] for s, _ in shapes], [t[0] for _, t in shapes])

    def forward(self, s, t, batch):
        adapted = self.adapters.adapt([s.features[a] for a, _ in self.pairs])
        return channel_distillation_losses(adapted, [t.features[b] for _, b in self.pairs])
