"""KDGAN's adversarial term of the value function U (Wang et al. 2018, appendix A, eq. 5): for the
classifier ``alpha E_{y~p_c}[log(1 - p_d(x, y))]``, for the teacher ``(1 - alpha) E_{y~p_t}[log(1 - p_d(x, y))]``,
``p_d(x, y) = sigmoid(l_d(x)_y)`` the discriminator's score (no gradient reaches it). ``weight`` scales it
further (1 = the paper's U). The gradient of the expectation is estimated by ``estimator``:

* ``paper``: REINFORCE with the control variate ``baseline`` over the game's k pseudo labels (appendix B);
  ``score: discrete`` scores ``log p(z|x)`` at the discretised label, ``concrete`` the concrete density of
  the continuous Gumbel-softmax sample (the appendix's literal ``log q(y|x)``);
* ``code``: the released code's estimator (the reward ``p_d(x, z)`` as a soft BCE target);
* ``exact``: the exact gradient of ``sum_y p(y|x) log(1 - p_d(x, y))`` (d scores every label in one pass);
* ``pathwise``: the reparameterised Gumbel-softmax gradient through the continuous samples, d scoring the soft
  label through its label-linear logit (:func:`kdlab.losses.kdgan.pathwise_surrogate`; needs the Gumbel sampler).

The game (the host method, ``ctx.game``) gives the mixture weight ``alpha``, the Gumbel temperature ``tau``
and ``sample(logits) -> (log y or None, z [k, B])``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.config import ConfigError, choice
from kdlab.losses import kdgan as K
from kdlab.terms.base import TERMS, Term, TermConfig

ESTIMATORS = ("paper", "code", "exact", "pathwise")


@TERMS.register("kdgan_adversarial")
class KDGANAdversarialTerm(Term):
    """The surrogate whose gradient estimates ``grad [alpha or 1 - alpha] E_{y~p}[log(1 - p_d(x, y))]`` for the
    player's logits ``s.out`` [B, K]; d reads ``batch.x`` (the classifier's and d's view).

    Raises (at construction): ConfigError: no KDGAN game in the context; ``baseline: loo`` with k < 2;
    ``score: concrete`` or ``estimator: pathwise`` without the Gumbel sampler.
    """

    @dataclass
    class Config(TermConfig):
        estimator: str = choice("paper", ESTIMATORS)
        baseline: str = choice("exact", K.BASELINES)  # control variate of estimator paper
        score: str = choice("discrete", K.SCORES)  # paper estimator's score: discrete (log p(z)) | concrete (log q(y))

    requires = frozenset({"logits", "critic"})
    roles = frozenset({"student", "teacher"})

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        game = ctx.game
        if game is None or not hasattr(game, "sample"):
            raise ConfigError(f"term 'kdgan_adversarial' is a term of the KDGAN game; method {ctx.method!r} plays none")
        where = f"objective.{ctx.role}.kdgan_adversarial"
        if cfg.baseline == "loo" and game.k < 2:
            raise ConfigError(f"{where}.baseline = 'loo' needs players.k >= 2, got k = {game.k}")
        if cfg.score == "concrete" and game.sampler != "gumbel":
            raise ConfigError(f"{where}.score = 'concrete' scores the Gumbel-softmax sample: it needs players.sampler = 'gumbel'")
        if cfg.estimator == "pathwise" and game.sampler != "gumbel":
            raise ConfigError(f"{where}.estimator = 'pathwise' differentiates through the Gumbel-softmax sample: it needs "
                              "players.sampler = 'gumbel'")
        self._game, self._critic = game, ctx.critic
        self.teacher_side = ctx.role == "teacher"

    def forward(self, s, t, batch):
        game, c = self._game, self.cfg
        with torch.no_grad():
            d_logits = self._critic.scores(batch.x)
        share = (1.0 - game.alpha) if self.teacher_side else game.alpha
        logits = s.out
        if c.estimator == "exact":
            return share * K.expected_reward(logits, d_logits).mean()
        if c.estimator == "pathwise":
            return share * K.pathwise_surrogate(logits, d_logits, game.tau, game.k)
        log_y, z = game.sample(logits)
        if c.estimator == "code":
            return share * K.code_surrogate(logits, z, d_logits)
        score = K.concrete_log_density(logits, log_y, game.tau) if c.score == "concrete" else None
        rewards = K.adversarial_rewards(d_logits, z)
        return share * K.reinforce_surrogate(logits, z, rewards, c.baseline, d_logits=d_logits, score_logp=score)
