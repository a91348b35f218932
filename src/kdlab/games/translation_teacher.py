"""The base of the image-to-image teacher games (``pix2pix``, ``cyclegan``); not a method itself.

It owns what both share: the exported generator (player ``generator``, the A -> B direction), the grid of
fixed training rows written after every epoch, and the end-of-run evaluation on the test split
(:func:`kdlab.games.i2i_eval.translation_finalize`).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from torch import nn

from kdlab.config import ConfigError
from kdlab.games.base import Method, unwrap
from kdlab.games.gan_players import generator_export_state
from kdlab.games.i2i_eval import grid_examples, translation_finalize, translation_grid


class TranslationTeacher(Method):
    """An image-to-image teacher: a ``generator`` player mapping source to output images, exported as
    ``teacher.safetensors``."""

    kind = "generator"
    role = "teacher"
    export_name = "teacher"

    objectives = {"generator": "generator", "discriminator": "discriminator"}

    def game_objectives(self, gen: nn.Module, disc: str, condition: int = 0, game: Any = None,
                        player: str = "generator") -> Tuple[Any, Any]:
        """``(objective.<player>, objective.discriminator)`` built for the generator ``gen`` and the discriminator
        player ``disc`` (registered later; conditioned on ``condition`` source channels), the generator's
        ``gan`` term reading that discriminator; ``game``: what the generator's terms may read of the game
        (CycleGAN: ``own`` and ``partner`` generators, for the ``cycle`` and ``identity`` terms); ``player``: the
        generator's objective (OMGD: ``teacher_wide``, ``teacher_deep``).

        Raises:
            ConfigError: the two ``gan`` terms in different modes, no discriminator ``gan`` term, or
                generator terms with trainable parts of their own.
        """
        from kdlab.terms import CriticView, TermContext

        spec = self.spec
        obj = self.cfg.objective
        g, d = obj[player].get("gan"), obj.discriminator.get("gan")
        if d is None or float(d.weight) == 0 or (g is not None and g.mode != d.mode):
            raise ConfigError(f"objective.discriminator.gan must play the generator's game: got {player} "
                              f"{dict(g) if g is not None else None}, discriminator {dict(d) if d is not None else None}")
        image = (gen.out_channels, spec.image_size, spec.image_size)
        critic = CriticView(lambda: unwrap(self.players[disc]), image, condition, trained=lambda: self.players[disc])
        paired = getattr(spec, "pairing", None) == "paired"

        def ctx(role: str) -> TermContext:
            given = {"critic", "images"} | ({"targets"} if paired else set()) if role == "generator" else {"critic"}
            return TermContext(method=self.cfg.method, kind="generator", student=gen, teacher=None, spec=spec,
                               student_input=(spec.in_channels, spec.image_size, spec.image_size), teacher_input=image,
                               provides=frozenset(given), critic=critic, role=role, game=game,
                               why_not={"teacher": "a translation teacher has no teacher",
                                        "targets": "unpaired data has no ground truth per input"})

        return (self.plain_objective(ctx("generator"), player),
                self.plain_objective(ctx("discriminator"), "discriminator"))

    def eval_model(self) -> nn.Module:
        return unwrap(self.players["generator"])

    def export_state(self, *, copy: bool = True, **metadata: Any):
        return generator_export_state(self.eval_model(), copy=copy, **metadata)

    def on_fit_start(self, train_set: Any, run_dir: Any, batch_sizes: Any) -> None:
        self.grid_batch = grid_examples(train_set, self.cfg.eval.grid_n)  # fixed inputs of the epoch grids

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        translation_grid(self, epoch)

    def finalize(self, run_dir: Any, data: Any, result: Any, device: Any) -> Dict[str, Any]:
        return translation_finalize(self, run_dir, data, result, device)
