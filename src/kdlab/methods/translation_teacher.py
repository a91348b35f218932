"""The base of the image-to-image teacher games (``pix2pix``, ``cyclegan``); not a method itself.

It owns what both share: the exported generator (player ``generator``, the A -> B direction), the grid of
fixed training rows written after every epoch, and the end-of-run evaluation on the test split
(:func:`kdlab.methods.i2i_eval.translation_finalize`).
"""
from __future__ import annotations

from typing import Any, Dict

from torch import nn

from kdlab.methods.base import Method, unwrap
from kdlab.methods.gan_players import generator_export_state
from kdlab.methods.i2i_eval import grid_examples, translation_finalize, translation_grid


class TranslationTeacher(Method):
    """An image-to-image teacher: a ``generator`` player mapping source to output images, exported as
    ``teacher.safetensors``."""

    kind = "generator"
    role = "teacher"
    export_name = "teacher"

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
