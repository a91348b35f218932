"""CycleGAN teacher (Zhu et al. 2017): the unpaired image-to-image teacher of the VEM paper (``papers/003``
sec. 4.3 eq. 11 with the cycle loss as L_rec, and Table 2's ResNet baseline).

Players: ``generator`` G: A -> B (exported: the direction the students compress), ``generator_b2a``
F: B -> A, ``disc_b`` (judges B images: real B vs G(A)) and ``disc_a`` (real A vs F(B)), PatchGANs.
Per training step on an unpaired batch (``x`` = images of A, ``target`` = images of B, [-1, 1]):

1. G and F together (one loss, both discriminators frozen): ``objective.generator`` for each direction,
   its terms ``gan`` (``l(D_B(G(a)), 1) + l(D_A(F(b)), 1)``, adversarial, Zhu et al. eq. 1), ``cycle``
   (weight lambda_cycle = 10: ``|F(G(a)) - a|_1 + |G(F(b)) - b|_1``, eq. 2) and ``identity`` (weight
   lambda_cycle * lambda_identity = 5: ``|G(b) - b|_1 + |F(a) - a|_1``, sec. 5.2);
2. D_B on real b vs a fake from the history of G(a) (:class:`kdlab.games.i2i_players.ImagePool`,
   50 images), D_A likewise, each on ``objective.discriminator`` (``gan`` with weight 0.5, the code's
   halving: ``0.5 * (l(D(real), 1) + l(D(fake), 0))``).

``l`` is least squares (``gan.mode = lsgan``, CycleGAN) or BCE on logits (``vanilla``), one mode for both
objectives. The ``cycle`` and ``identity`` terms read the direction's partner and own generator from the game. The
published settings: lambda_cycle 10, lambda_identity 0.5, Adam 2e-4 (0.5, 0.999), linear decay, PatchGAN
with instance norm. The identity term needs equal channels in both domains (ConfigError otherwise).
Validation: the mean of both cycle losses on the validation pairs (``val/cycle``, lower is better).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch

from kdlab.config import bounded, choice
from kdlab.data.batch import Batch
from kdlab.engine.optim import optim_with_lr
from kdlab.games.base import METHODS, unwrap
from kdlab.games.gan_players import DiscriminatorGame, nan_guard
from kdlab.models.base import frozen
from kdlab.games.i2i_eval import cycle_error
from kdlab.games.i2i_players import (
    TRANSLATION_MOVED,
    ImagePool,
    TranslationEvalConfig,
    TranslationGameConfig,
    build_image_generator,
    build_patchgan,
    check_translation_data,
)
from kdlab.games.translation_teacher import TranslationTeacher
from kdlab.terms import Outputs

_GENERATORS = ("generator", "generator_b2a")


class _Direction:
    """What one direction's generator terms read of CycleGAN's game: ``own(x)`` (the direction's generator) and
    ``partner(x)`` (the other direction's), as wrapped for training."""

    def __init__(self, method: Any, own: str, partner: str) -> None:
        self.method, self._own, self._partner = method, own, partner

    def own(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.players[self._own](x)

    def partner(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.players[self._partner](x)
_DISCS = ("disc_b", "disc_a")


@METHODS.register("cyclegan")
class CycleGAN(TranslationTeacher):
    """CycleGAN teacher: two image generators and two PatchGANs on unpaired data (cycle + identity losses).

    Raises (at construction): ConfigError for paired or classification data, a latent generator, an
    identity weight with domains of different channels, or a PatchGAN too deep for the image size.
    """

    selection_key = "val/cycle"
    selection_mode = "min"

    Eval = TranslationEvalConfig
    default_objective = {"generator": {"gan": {"weight": 1.0, "mode": "lsgan"}, "cycle": {"weight": 10.0},
                                       "identity": {"weight": 5.0}},
                         "discriminator": {"gan": {"weight": 0.5, "mode": "lsgan"}}}
    moved = {**TRANSLATION_MOVED, "lambda_cycle": "objective.generator.cycle.weight",
             "lambda_identity": "objective.generator.identity.weight (lambda_cycle * lambda_identity: 5 for 10 and 0.5)"}

    @dataclass
    class Config(TranslationGameConfig):
        """``players`` section of ``kdlab train-gan method=cyclegan``."""

        disc_norm: str = choice("instance", ("batch", "instance"))
        pool_size: int = bounded(50, ge=0)  # history of generated images shown to each D (0 = none)

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        check_translation_data(spec, "cyclegan", "unpaired")
        lc = cfg.players
        ca, cb, size = spec.in_channels, spec.out_channels, spec.image_size
        g, f = build_image_generator(cfg, ca, cb, size), build_image_generator(cfg, cb, ca, size)
        # one objective per direction, each generator's gan term reading its own discriminator, its cycle and
        # identity terms its partner and itself
        (g_b, d_b) = self.game_objectives(g, "disc_b", game=_Direction(self, "generator", "generator_b2a"))
        (g_a, d_a) = self.game_objectives(f, "disc_a", game=_Direction(self, "generator_b2a", "generator"))
        self.g_objectives = {"generator": g_b, "generator_b2a": g_a}
        self.games = {"disc_b": DiscriminatorGame(self, d_b), "disc_a": DiscriminatorGame(self, d_a)}
        self.add_player("generator", g)
        self.add_player("generator_b2a", f)
        d_optim = optim_with_lr(cfg.optim, lc.disc_lr, "players.disc_lr")
        self.add_player("disc_b", build_patchgan(cb, size, lc.ndf, lc.n_layers, lc.disc_norm), d_optim)
        self.add_player("disc_a", build_patchgan(ca, size, lc.ndf, lc.n_layers, lc.disc_norm), d_optim)
        self.pools = {"disc_b": ImagePool(lc.pool_size), "disc_a": ImagePool(lc.pool_size)}

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        a, b = batch.x, batch.target
        P = self.players
        G, F, DB, DA = P["generator"], P["generator_b2a"], P["disc_b"], P["disc_a"]
        fake_b, fake_a = G(a), F(b)
        with frozen(DB), frozen(DA):
            tg = self.g_objectives["generator"](Outputs(out=fake_b, x=a), None, Batch(x=a, target=b))
            tf = self.g_objectives["generator_b2a"](Outputs(out=fake_a, x=b), None, Batch(x=b, target=a))
            total = tg["loss"] + tf["loss"]
            self.step_optimizers(_GENERATORS, total)
        parts = {k: (tg[k] if k in tg else 0) + (tf[k] if k in tf else 0) for k in ("gan", "cycle", "identity")}
        d_b = self._d_loss("disc_b", b, self.pools["disc_b"].query(fake_b))
        d_a = self._d_loss("disc_a", a, self.pools["disc_a"].query(fake_a))
        self.step_optimizers(_DISCS, d_b + d_a)
        out = {"loss_g": total.detach(), "loss_d": (d_b + d_a).detach()}
        out.update({("adv" if k == "gan" else k): (v.detach() if torch.is_tensor(v) else torch.zeros(())) for k, v in parts.items()})
        out["loss"] = nan_guard(torch.cat([fake_b.flatten(), fake_a.flatten()]), out["loss_g"] + out["loss_d"])
        return out

    def _d_loss(self, disc: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``objective.discriminator`` of the discriminator player ``disc`` (both are stepped together after)."""
        D = self.players[disc]
        fake = fake.detach()
        return self.games[disc].objective(Outputs(out=D(fake), x=fake), Outputs(out=D(real), x=real), Batch(x=fake))["loss"]

    def validate(self, loader: Any, device: Any) -> Dict[str, float]:
        """``val/cycle``: the mean of both directions' cycle L1 (in [-1, 1] units) on the validation pairs."""
        return {"val/cycle": cycle_error(self.eval_model(), unwrap(self.players["generator_b2a"]), loader, device)}

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["pools"] = {k: p.state_dict() for k, p in self.pools.items()}
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = self.fabric.device if self.fabric is not None else "cpu"
        for k, p in self.pools.items():
            if k in state.get("pools", {}):
                p.load_state_dict(state["pools"][k], device)
