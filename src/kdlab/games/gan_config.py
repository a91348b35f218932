"""Config keys shared by the GAN methods (``gan``, ``gan-compression``, generator students): the
adversarial game and the end-of-run generative evaluation, with their cross-key checks.
"""
from __future__ import annotations

import inspect

from dataclasses import dataclass
from typing import Any, Optional

from kdlab.config import ConfigError, EvalConfig, bounded
from kdlab.engine.loading import check_extractor_path
from kdlab.models.gan import DISCRIMINATORS



@dataclass
class GanEvalConfig(EvalConfig):
    """``eval`` section of the GAN methods: the run's evaluation keys and the generative evaluation's."""

    extractor: Optional[str] = None  # classifier run dir / .safetensors (same data set), "inception", or null
    n_samples: int = bounded(10000, ge=1)  # generated images for FID/KID/IS/VoL (vs the test split's images)
    sample_seed: int = 0  # seed of the fixed latents (the same z for teacher and students)
    kid_subset_size: int = bounded(1000, ge=1)
    kid_subsets: int = bounded(100, ge=1)
    is_splits: int = bounded(10, ge=1)
    grid_n: int = bounded(64, ge=1)  # images per sample grid


@dataclass
class GanGameConfig:
    """``players`` keys of the discriminator of an unconditional GAN game. The game itself is the ``gan`` term of
    the generator's and the discriminator's objectives (mode vanilla | lsgan | hinge | wgan; WGAN-GP = wgan +
    the discriminator's ``gradient_penalty`` term)."""

    disc: Optional[str] = None  # dcgan | wdcgan | sagan; null: the generator's name (a gradient penalty needs wdcgan: no BatchNorm)
    disc_d: Optional[int] = bounded(None, gt=0, optional=True)  # critic width: depth factor d (dcgan) or ndf (sagan); null: the generator's
    n_critic: int = bounded(1, ge=1)  # discriminator steps per generator step
    clip: Optional[float] = bounded(None, gt=0, optional=True)  # WGAN's weight clipping to [-clip, clip] after each D step (Arjovsky et al. 2017: 0.01)
    disc_lr: Optional[float] = bounded(None, gt=0, optional=True)  # null: optim.lr


#: the old ``loss.game`` / ``loss.gp_weight`` keys' new places (GAN methods' ``moved``)
GAME_MOVED = {"game": "objective.<generator or student>.gan.mode and objective.discriminator.gan.mode (gan -> vanilla; "
                      "wgan-gp -> wgan with objective.discriminator.gradient_penalty)",
              "gp_weight": "objective.discriminator.gradient_penalty.weight",
              "adv_weight": "objective.student.gan.weight"}


def check_eval_config(lc: Any, max_test: Optional[int] = None) -> None:
    """Cross-key checks of :class:`GanEvalConfig` (ranges are declared on the fields) -> ConfigError naming
    both keys; a missing extractor file -> FileNotFoundError (both before training, not after it)."""
    if lc.kid_subset_size > lc.n_samples:
        raise ConfigError(
            f"eval.kid_subset_size = {lc.kid_subset_size} is larger than eval.n_samples = {lc.n_samples}: too few "
            "samples for KID's subset size; lower kid_subset_size or raise n_samples"
        )
    if max_test is not None and lc.extractor and lc.kid_subset_size > max_test:
        raise ConfigError(
            f"eval.kid_subset_size = {lc.kid_subset_size} is larger than data.max_test = {max_test} real test images: "
            "too few samples for KID's subset size; lower kid_subset_size or raise data.max_test"
        )
    check_extractor_path(lc.extractor)


def check_game_config(lc: Any, gen_name: str, objective: Any, generator: str) -> str:
    """Cross-key checks of the game: the discriminator's name, the two ``gan`` terms' modes (they must be one
    game), a gradient penalty's critic; returns the discriminator name.

    Args:
        lc: the ``players`` section. gen_name: the generator's model name. objective: the run's ``objective``
        section. generator: the player whose objective holds the generator's side (``generator`` or ``student``).

    Raises:
        ConfigError: naming the keys and the accepted values.
    """
    g = objective[generator].get("gan")
    d = objective["discriminator"].get("gan")
    if d is None or float(d.weight) == 0:
        raise ConfigError("objective.discriminator has no gan term: the discriminator would not learn; set "
                          "objective.discriminator.gan.weight=1")
    if g is not None and g.mode != d.mode:
        raise ConfigError(f"objective.{generator}.gan.mode = {g.mode!r} and objective.discriminator.gan.mode = "
                          f"{d.mode!r} are two games: set both to one of vanilla, lsgan, hinge, wgan")
    disc = lc.disc or gen_name
    # critics of one value per image: the dcgan family (width = depth factor d) and sagan (width = ndf);
    # PatchGAN's score maps belong to the image-to-image games
    scaled = [n for n in DISCRIMINATORS.names() if "d" in inspect.signature(DISCRIMINATORS.get(n)).parameters] + ["sagan"]
    if disc not in scaled:
        raise ConfigError(f"players.disc = {disc!r}; accepted: {', '.join(scaled)}")
    gp = objective["discriminator"].get("gradient_penalty")
    if gp is not None and float(gp.weight) > 0 and disc == "dcgan":
        raise ConfigError("objective.discriminator.gradient_penalty needs a critic without BatchNorm: set players.disc=wdcgan")
    return disc
