"""Pixel MSE to the teacher generator's image for the same input (Aguinaldo et al. 2019, Fig. 3)."""
from __future__ import annotations

from kdlab.losses import generator_mse
from kdlab.terms.base import TERMS, Term


@TERMS.register("mse")
class ImageMSETerm(Term):
    """Pixel MSE between student and teacher generator images (Aguinaldo et al. 2019, eq. 3).

    ``mean over pixels (G_s(z) - G_t(z))^2`` in the generators' [-1, 1] units, teacher image detached
    (:func:`kdlab.losses.generator_mse`); the student generator's distillation loss of GAN compression."""

    requires = frozenset({"teacher", "images"})
    legacy = {"mse_weight": "weight"}

    def forward(self, s, t, batch):
        return generator_mse(s.out, t.out.detach())
