"""Fidelity pins of docs/fidelity.md, sections "KDGAN" and "Peer losses of the reference frameworks".

Each test pins rows of the table: it loads the recipe (or builds the term / the experiment's configs) and asserts
the composition (terms, weights, inputs, players, protocol), so changing a published default fails here. The
numeric forms of the peer losses against their official code are in ``tests/test_loss_peer.py``; KDGAN's
estimators and theory in ``tests/test_kdgan.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import kdlab
from kdlab.config import ConfigError
from kdlab.losses import kdgan as K
from kdlab.methods import KDGAN
from kdlab.runner import load_run_config, train

RECIPES = Path(kdlab.__file__).parent / "recipes"


def _recipe(name):
    return load_run_config([str(RECIPES / f"{name}.yaml")])


# ----------------------------------------------------------------------------------------------- KDGAN
def test_kdgan_recipe_players_and_objectives():
    """Rows: players c, t, d; c = alpha A_c + beta L_DS^c (beta 2, L2 on log-probabilities, no CE); t = (1 - alpha)
    A_t + gamma L_DS^t (gamma 1e-4, no CE anchor); d = the k-sample value function; alpha 0.2, k 5."""
    cfg = _recipe("kdgan")
    assert cfg.method == "kdgan"
    assert KDGAN.objectives == {"student": "student", "teacher": "teacher", "discriminator": "discriminator"}
    obj = {p: dict(cfg.objective[p]) for p in ("student", "teacher", "discriminator")}
    assert set(obj["student"]) == {"kdgan_adversarial", "kdgan_distill"}  # no ce: the paper's U
    assert set(obj["teacher"]) == {"kdgan_adversarial", "kdgan_distill"}  # no ce anchor (not in the paper)
    assert set(obj["discriminator"]) == {"kdgan_discriminator"}
    for p in ("student", "teacher"):
        adv = obj[p]["kdgan_adversarial"]
        assert (adv.weight, adv.estimator, adv.baseline, adv.score) == (1.0, "paper", "exact", "discrete")
        assert obj[p]["kdgan_distill"].mode == "l2"
    assert obj["student"]["kdgan_distill"].weight == 2.0  # beta
    assert obj["teacher"]["kdgan_distill"].weight == 1e-4  # gamma
    assert obj["discriminator"]["kdgan_discriminator"].weight == 1.0
    pl = cfg.players
    assert (pl.alpha, pl.k, pl.sampler) == (0.2, 5, "gumbel")
    assert (cfg.model.name, list(cfg.model.kwargs.hidden)) == ("mlp", [800, 800])  # classifier c
    assert pl.disc_model == "lenet" and dict(pl.disc_kwargs) == {}  # d: appendix C LeNet 32-64-1024


def test_kdgan_recipe_protocol_is_the_published_run_script():
    """Rows: schedule 20/10/10 epochs, Adam 5e-4 for every player (teacher included), every player pre-trained
    (classifier and d from CE runs), Gumbel temperature 10 x 0.88 every max(E/36, 1) epochs without a binding floor,
    batch 100, 50 classifier epochs."""
    cfg = _recipe("kdgan")
    pl = cfg.players
    assert (list(pl.schedule), pl.schedule_unit) == ([20, 10, 10], "epoch")
    assert (cfg.optim.name, cfg.optim.lr) == ("adam", 5e-4)
    assert pl.teacher_lr == cfg.optim.lr and pl.disc_lr is None
    assert cfg.trainer.epochs == 200 and cfg.trainer.epochs * 10 // 40 == 50  # classifier epochs
    assert pl.tau_every == max(cfg.trainer.epochs // 36, 1)
    assert (pl.tau_start, pl.tau_decay) == (10.0, 0.88)
    final = pl.tau_start * pl.tau_decay ** ((cfg.trainer.epochs - 1) // pl.tau_every)
    assert pl.tau_min < final  # no floor binds, as in the code
    assert cfg.data.batch_size == 100 and cfg.data.n_per_class == 1000
    assert cfg.data.augment is False  # the stated departure: no AffineGenerator augmentation
    assert cfg.model.checkpoint == "runs/kdgan-pretrain" and pl.disc_init == "runs/kdgan-pretrain-d"
    pre, pre_d = _recipe("kdgan_pretrain"), _recipe("kdgan_pretrain_d")
    assert pre.method == pre_d.method == "teacher"  # plain cross entropy
    assert (pre.model.name, list(pre.model.kwargs.hidden)) == ("mlp", [800, 800])
    assert pre_d.model.name == "lenet" and dict(pre_d.model.kwargs) == {}
    assert pre.name == "kdgan-pretrain" and pre_d.name == "kdgan-pretrain-d" and pre_d.seed != pre.seed


def test_kdgan_method_defaults_teacher_rate_and_no_anchor():
    """Row: the teacher's rate defaults to the players' (published); the CE anchor is off by default."""
    assert KDGAN.Config().teacher_lr is None
    assert "ce" not in KDGAN.default_objective["teacher"] and "ce" not in KDGAN.default_objective["student"]


def _table4_plan(tmp_path, scale="full"):
    """kdgan-table4's planned runs (every config resolved, nothing trained): slug -> seed-0 config, init runs by name."""
    from omegaconf import OmegaConf

    from kdlab.compare import load_spec
    from kdlab.compare.plan import plan_compare
    from kdlab.experiments.specs import SPEC_DIR

    plan = plan_compare(load_spec(SPEC_DIR / "kdgan-table4.yaml", scale=scale, seeds="0,1"), tmp_path)
    cells = {c.row.slug: (c.row.label, OmegaConf.to_container(c.cfg)) for c in plan.cells if c.seed == 0}
    return cells, {c.cfg.name: OmegaConf.to_container(c.cfg) for c in plan.inits}


def test_kdgan_experiment_row_matches_the_recipe_and_anchor_is_a_labelled_diagnostic(tmp_path):
    """Rows: the kdgan-table4 KDGAN row (full scale, n = 10K) plays the recipe's game; the CE anchor appears only
    in the diagnostic row, labelled "not in the paper"."""
    cells, _ = _table4_plan(tmp_path)
    recipe = _recipe("kdgan")
    row = cells["kdgan-paper-10k"][1]
    assert "ce" not in row.get("objective", {}).get("teacher", {})
    pl = row["players"]
    assert pl["schedule"] == list(recipe.players.schedule) and pl["schedule_unit"] == recipe.players.schedule_unit
    assert pl["teacher_lr"] == recipe.players.teacher_lr and pl["tau_every"] == recipe.players.tau_every
    assert pl["tau_min"] == recipe.players.tau_min
    assert row["trainer"]["epochs"] == recipe.trainer.epochs
    assert row["data"]["batch_size"] == recipe.data.batch_size
    diag = {slug[:-len("-paper-10k")]: cfg for slug, cfg in cells.items()
            if slug.startswith("kdgan-") and slug.endswith("-paper-10k") and slug != "kdgan-paper-10k"}
    assert sorted(diag) == ["kdgan-a0", "kdgan-ce", "kdgan-kl", "kdgan-tce"]
    assert diag["kdgan-tce"][1]["objective"]["teacher"]["ce"]["weight"] == 1.0
    assert "not in the paper" in diag["kdgan-tce"][0]
    assert all(d[1]["objective"]["teacher"].get("ce", {}).get("weight", 0.0) == 0.0
               for k, d in diag.items() if k != "kdgan-tce")


def test_kdgan_small_scale_teacher_is_trained_on_the_whole_split(tmp_path):
    """Row: small scale, teacher pre-trained on the whole training split (one teacher for every n); full scale on the
    n images as the paper."""
    cells, inits = _table4_plan(tmp_path, "small")
    teacher = inits["kdgan-table4-init-teacher-s0"]
    assert teacher["data"]["n_per_class"] is None and teacher["method"] == "teacher"
    assert {c["teacher"]["checkpoint"] for _, c in cells.values()} == {str(tmp_path / "kdgan-table4-init-teacher-s0")}
    _, full = _table4_plan(tmp_path, "full")
    assert full["kdgan-table4-init-teacher-paper-5k-s0"]["data"]["n_per_class"] == 500


def test_kdgan_selectable_epochs_are_the_classifiers():
    """Row: checkpoint candidates = the classifier's training epochs (the published code evaluates inside its gen
    epochs only)."""
    m = object.__new__(KDGAN)  # selectable reads the schedule and the unit only
    m.schedule = [2, 1, 1]
    m.cfg = type("C", (), {"players": type("P", (), {"schedule_unit": "epoch"})()})()
    assert [m.selectable(e) for e in range(8)] == [False, False, False, True] * 2
    m.cfg.players.schedule_unit = "step"
    assert m.selectable(0)
    m.schedule = [1, 1, 0]
    assert not m.selectable(0)


def test_kdgan_run_never_selects_the_untouched_start(make_config, tmp_path):
    """A 3-epoch run with the [d, t, c] = [1, 1, 1] epoch cycle from a CE-pre-trained classifier, its one c-epoch at a
    rate (Adam 0.5) that wrecks it: epochs 0 and 1 leave the classifier untouched and validate best, yet the only
    candidate is epoch 2 (before the rule, best_epoch was 0: the untouched start)."""
    small = {"n_per_class": 50}
    teacher = train(load_run_config([make_config(name="t", trainer={"epochs": 1}, data=small)]))
    mlp = {"name": "mlp", "kwargs": {"hidden": [32]}}
    start = train(load_run_config([make_config(name="start", model=mlp, trainer={"epochs": 2}, data=small)]))
    cfg = load_run_config([make_config(
        method="kdgan", name="kg", teacher={"checkpoint": str(teacher)}, model={**mlp, "checkpoint": str(start)},
        data=small, optim={"name": "adam", "lr": 0.5, "scheduler": "none"},
        players={"disc_model": "mlp", "disc_kwargs": {"hidden": [32]}, "disc_init": "scratch", "schedule": [1, 1, 1],
                 "schedule_unit": "epoch", "teacher_lr": 1e-5}, trainer={"epochs": 3})])
    run = train(cfg)
    s = json.loads((run / "summary.json").read_text())
    vals = [r["val/acc"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "val/acc" in r]
    assert vals[0] == vals[1] > vals[2]  # the start validates best: the rule, not the numbers, picks epoch 2
    assert s["best_epoch"] == 2, s["best_epoch"]


def test_kdgan_pathwise_estimator_formula_and_fig7_variant():
    """Row: Fig. 7 includes the pathwise estimator. Its surrogate against an independent numpy computation with the
    same Gumbel draws; d evaluated at the soft label through its label-linear logit; refused without Gumbel."""
    logits = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.0, -1.2]], dtype=torch.float64, requires_grad=True)
    d_logits = torch.tensor([[0.5, -1.0, 2.0], [-0.3, 0.8, 0.1]], dtype=torch.float64)
    tau, k = 0.7, 4
    got = K.pathwise_surrogate(logits, d_logits, tau, k, torch.Generator().manual_seed(3))
    u = torch.rand((k, 2, 3), generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    g = -np.log(-np.log(u))
    z = logits.detach().numpy()
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    a = (logp[None] + g) / tau
    y = np.exp(a - a.max(-1, keepdims=True))
    y /= y.sum(-1, keepdims=True)
    s = (y * d_logits.numpy()[None]).sum(-1)
    assert got.item() == pytest.approx(np.mean(-np.log1p(np.exp(s))), rel=1e-12)  # log(1 - sigmoid(s))
    got.backward()
    assert logits.grad.abs().sum() > 0  # the gradient flows through the sample
    # one-hot limit: at small tau the value is log(1 - p_d(x, argmax)) of the Gumbel-max label
    cold = K.pathwise_surrogate(logits.detach(), d_logits, 1e-4, k, torch.Generator().manual_seed(3))
    zl = np.argmax(logp[None] + g, -1)
    exact = np.mean(-np.log1p(np.exp(np.take_along_axis(d_logits.numpy()[None].repeat(k, 0), zl[..., None], -1))))
    assert cold.item() == pytest.approx(exact, rel=1e-6)
    from kdlab.experiments.specs import row_configs

    rows = row_configs("kdgan-fig7", "small")  # Fig. 7's rows: the pathwise reading beside REINFORCE's
    assert rows["gumbel-pathwise"].objective.student.kdgan_adversarial.estimator == "pathwise"
    assert rows["gumbel-pathwise"].players.sampler == "gumbel"
    assert rows["categorical"].players.sampler == "categorical"
    assert rows["gumbel-discrete"].objective.student.kdgan_adversarial.estimator == "paper"


def test_kdgan_pathwise_needs_the_gumbel_sampler(make_config, tmp_path):
    teacher = train(load_run_config([make_config(name="t2", trainer={"epochs": 1}, data={"n_per_class": 20})]))
    cfg = load_run_config([make_config(
        method="kdgan", name="kp", teacher={"checkpoint": str(teacher)}, model={"name": "mlp", "kwargs": {"hidden": [16]}},
        data={"n_per_class": 20}, players={"disc_model": "mlp", "disc_kwargs": {"hidden": [16]}, "disc_init": "scratch", "sampler": "categorical"},
        objective={"student": {"kdgan_adversarial": {"estimator": "pathwise"}}}, trainer={"epochs": 1})])
    with pytest.raises(ConfigError, match="pathwise"):
        train(cfg)


# ----------------------------------------------------------------------------------------------- peer losses
def test_peer_terms_defaults_are_the_official_codes():
    """Rows: kd.standardize (off by default; official base T 2 in the LS configs), chsim (torchdistill divisor, student
    embed), skd_instance (tau 4), skd_direction (lambda 0.1); paper forms by default, code forms by ``mode``."""
    from kdlab.terms import TERMS

    kd = TERMS.get("kd").Config()
    assert (kd.standardize, kd.temperature, kd.reduction, kd.t_squared) == (False, 4.0, "batchmean", True)
    ch = TERMS.get("chsim").Config()
    assert (ch.norm, ch.embed) == ("torchdistill", True)
    ins, dirn = TERMS.get("skd_instance").Config(), TERMS.get("skd_direction").Config()
    assert (ins.temperature, ins.mode) == (4.0, "paper")
    assert (dirn.tikhonov, dirn.mode) == (0.1, "paper")
    for name in ("chsim", "skd_instance", "skd_direction"):
        assert "teacher" in TERMS.get(name).requires
    assert "features" in TERMS.get("chsim").requires and "logits" in TERMS.get("skd_direction").requires


def test_peer_terms_compose_in_a_distill_objective(make_config, tmp_path):
    """The four peer rows as student terms of a ``distill`` run: the objective holds them with their weights."""
    cfg = load_run_config([make_config(method="distill", name="peer", objective={"student": {
        "ce": {"weight": 0.5}, "kd": {"weight": 9.0, "temperature": 2.0, "standardize": True},
        "skd_instance": {"weight": 0.5, "mode": "code"}, "skd_direction": {"weight": 0.5, "mode": "code"}}})])
    st = cfg.objective.student
    assert st.kd.standardize is True and st.kd.temperature == 2.0 and st.kd.weight == 9.0
    assert st.skd_instance.mode == st.skd_direction.mode == "code"
    assert st.skd_instance.weight == st.skd_direction.weight == st.ce.weight == 0.5
