"""SRD/SRRL (Yang et al. 2021): the connected student feature through the teacher's frozen classifier."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config import ConfigError, bounded, choice, temperature_field
from kdlab.losses.adapters import ConvRegressor, to_vector, vector_size
from kdlab.losses.srd import SRD_FEATURE_MODES, SRD_LOGIT_MODES, srd_loss
from kdlab.models.base import FC_INPUT, capture_features
from kdlab.terms.base import OUTPUT, TERMS, Term, TermConfig, layer_pairs


def teacher_classifier(net: nn.Module, who: str = "teacher") -> nn.Linear:
    """``net.fc``, the final linear layer of a kdlab classifier.

    Raises:
        ConfigError: ``net`` has no ``fc`` that is an ``nn.Linear`` (names its type).
    """
    fc = getattr(net, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise ConfigError(f"term 'srd' needs the {who}'s final linear classifier as its attribute 'fc' (an nn.Linear); "
                          f"the {who} {type(net).__name__} has {type(fc).__name__ if fc is not None else 'none'}")
    return fc


def classifier_input(net: nn.Module, input_shape: Sequence[int], who: str) -> str:
    """The friendly feature of ``net`` that is the input of ``net.fc`` (the penultimate feature: ``gap`` of
    ResNets/VGGs/WRNs, ``fc1`` of LeNet, the last hidden layer of an MLP), found by one dry forward in
    eval mode on a fixed random input (its own generator: the global RNG is untouched): the last
    feature whose value equals what ``fc`` receives.

    Raises:
        ConfigError: no ``fc`` Linear, or no friendly feature equals its input (asks for ``layers``).
    """
    teacher_classifier(net, who)  # an fc Linear, or a ConfigError
    names = list(getattr(net, "feature_layers", {}) or {})
    p = next(net.parameters(), None)
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    x = x.to(p.device, p.dtype) if p is not None else x
    was = net.training
    net.eval()
    try:
        with torch.no_grad(), capture_features(net, names + [FC_INPUT]) as store:
            net(x)
    finally:
        net.train(was)
    seen = store.get(FC_INPUT)
    hits = [n for n in names if n in store and seen is not None and store[n].shape == seen.shape
            and torch.equal(store[n], seen)]
    if not hits:
        raise ConfigError(f"term 'srd': none of the {who}'s features ({', '.join(names) or 'none'}) is the input of its "
                          "classifier 'fc'; set objective.student.srd.layers: [[student feature, teacher feature]]")
    return hits[-1]


@TERMS.register("srd")
class SRDTerm(Term):
    """SRD/SRRL (Yang et al., ICLR 2021): ``alpha L_FM(r(f_s), f_t) + beta L_SR(W_t r(f_s), z_t)``.

    ``r``: a connector trained with the student (:class:`kdlab.losses.adapters.ConvRegressor`: linear for
    vectors, 1x1 conv + BN for maps); ``W_t``: the teacher's frozen ``fc`` (no gradient reaches it; maps
    are average-pooled first, as the teacher's ``gap``). ``L_FM``: mean ``|d|^exponent`` (2 = MSE, the
    paper) or ``log_sum`` (torchdistill's ``SRDLoss``); ``L_SR``: ``T^2 KL(softmax(z_t/T) ||
    softmax(W_t r(f_s)/T))`` batchmean, or ``mse`` of the logits (the authors' code)
    (:func:`kdlab.losses.srd.srd_loss`). ``layers``: one pair; default: the features feeding each
    network's ``fc`` (``gap``, LeNet ``fc1``, the MLP's last hidden layer)."""

    @dataclass
    class Config(TermConfig):
        layers: List[List[str]] = field(default_factory=list)  # [[student feature, teacher feature]]; [] = fc inputs
        temperature: float = temperature_field(1.0)
        exponent: float = bounded(2.0, gt=0)
        alpha: float = bounded(1.0, ge=0)  # feature term
        beta: float = bounded(1.0, ge=0)  # logit term
        feature: str = choice("mean", SRD_FEATURE_MODES)
        logit: str = choice("kl", SRD_LOGIT_MODES)

    requires = frozenset({"teacher", "logits", "features"})

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        fc = teacher_classifier(ctx.teacher)
        if cfg.layers:
            pairs = layer_pairs(cfg.layers, "srd")
            if len(pairs) != 1 or OUTPUT in pairs[0]:
                raise ConfigError(f"objective.student.srd.layers takes one pair of penultimate features [[student, teacher]] "
                                  f"(not {OUTPUT!r}); got {[list(p) for p in pairs]}")
        else:
            pairs = [(classifier_input(ctx.student, ctx.student_input, "student"),
                      classifier_input(ctx.teacher, ctx.teacher_input, "teacher"))]
        (self.s_name, self.t_name), = pairs
        s_shape = ctx.student_shapes([self.s_name], "srd")[self.s_name]
        t_shape = ctx.teacher_shapes([self.t_name], "srd")[self.t_name]
        if len(t_shape) not in (1, 3) or vector_size(t_shape) != fc.in_features:
            raise ConfigError(f"term 'srd': the teacher feature {self.t_name!r} {tuple(t_shape)} cannot feed the teacher's fc "
                              f"(in_features {fc.in_features}): pick the feature fc reads (or the map pooled into it)")
        try:
            self.connector = ConvRegressor(s_shape, t_shape)
        except ValueError as exc:
            raise ConfigError(f"term 'srd': student {self.s_name!r} {tuple(s_shape)} and teacher {self.t_name!r} "
                              f"{tuple(t_shape)}: {exc}") from None
        self._fc = (fc,)  # a tuple, not a submodule: the student's optimizer and checkpoint must not own it
        self.expose(pairs)

    def forward(self, s, t, batch):
        fc = self._fc[0]
        r = self.connector(s.features[self.s_name])
        # the teacher's classifier with detached weights: gradients reach r (the student), never fc
        z = F.linear(to_vector(r), fc.weight.detach(), None if fc.bias is None else fc.bias.detach())
        c = self.cfg
        return srd_loss(r, t.features[self.t_name], z, t.out, temperature=c.temperature, exponent=c.exponent,
                        alpha=c.alpha, beta=c.beta, feature=c.feature, logit=c.logit)
