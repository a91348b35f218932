"""OMGD as its official code (issue 25 part 1; docs/fidelity.md, section OMGD): the student's loss, the channel
distillation with its adapters, the online teachers' game, and each recipe's composition.

The independent computations below are transcriptions of bytedance/OMGD (cited per function), written with plain
torch, never kdlab's losses; every number the tests compare comes from them.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from kdlab.data import Batch
from kdlab.data.sets import DataSpec
from kdlab.engine.checkpoint import save_classifier
from kdlab.methods import METHODS, unwrap
from kdlab.models import build_model
from kdlab.runner import load_run_config

from conftest import CPUFabric
from omgd_official import hooked, omgd_cd, omgd_student_loss, omgd_tv

RECIPES = Path(__file__).resolve().parents[1] / "src" / "kdlab" / "recipes"
S = 32  # 5 U-Net stages, so OMGD's four mixed activations exist
#: OMGD's ``mapping_layers['unet_256']`` (base_multiteacher_distiller.py) as kdlab U-Net module paths
OMGD_LAYERS = [["downs.2.0", "downs.2.0"], ["downs.4.0", "downs.4.0"], ["ups.3.0", "ups.3.0"], ["ups.1.0", "ups.1.0"]]
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # the classifier's normalisation (fashion-mnist), checked below


# ----------------------------------------------------------------- fixtures
def spec():
    return DataSpec(name="toy", num_classes=10, in_channels=1, image_size=S, mean=(0.5,), std=(0.5,),
                    pairing="paired", target_channels=1)


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    torch.manual_seed(0)
    net = build_model("lenet", num_classes=10, in_channels=1, image_size=S, channels=[4, 8], fc=16)
    return save_classifier(net, tmp_path_factory.mktemp("omgd") / "clf.safetensors", data="fashion-mnist")


def omgd_raw(clf, tmp, **players):
    raw = OmegaConf.to_container(OmegaConf.load(RECIPES / "i2i_omgd.yaml"))
    for term in ("style", "perceptual"):
        raw["objective"]["student"][term]["extractor"] = str(clf)
    raw["model"]["kwargs"]["ngf"] = 4
    raw["players"].update({"wide": {"name": "unet", "kwargs": {"ngf": 8}},
                           "deep": {"name": "unet_deep", "kwargs": {"ngf": 4}}, "ndf": 8, **players})
    raw.update({"out_dir": str(tmp), "seed": 0, "data": {"name": "toy", "val_size": 0, "batch_size": 4},
                "optim": {"name": "adam", "lr": 0.001, "betas": [0.5, 0.999], "weight_decay": 0.0, "scheduler": "none"},
                "trainer": {"epochs": 1, "progress": False, "tensorboard": False, "threads": 1}})
    return raw


def omgd_method(clf, tmp, **players):
    torch.manual_seed(0)
    m = METHODS.get("omgd")(load_run_config([omgd_raw(clf, tmp, **players)]), spec())
    m.setup(CPUFabric())
    m.train()
    return m


def batch(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, S, S, generator=g) * 2 - 1
    return Batch(x=x, target=torch.tanh(2 * x.flip(-1)))


def params(m, player):
    """The player's parameters (not its BatchNorm running statistics, which every train-mode forward moves)."""
    return {k: v.detach().clone() for k, v in unwrap(m.players[player]).named_parameters()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------- the losses against the transcriptions
def test_channel_distillation_with_adapters_equals_omgd_calc_cd(clf, tmp_path):
    """The student's ``channel_distill`` (recipe: OMGD's four mixed activations, conv + BN + ReLU adapters) = OMGD's
    ``calc_CD_loss`` on the same activations with the same adapter parameters; the adapters map 2, 8, 16, 4 x ngf
    student channels to the wide teacher's and start as ``init_net`` leaves them (N(0, 0.02) conv, BN 1 / 0)."""
    m = omgd_method(clf, tmp_path)
    term = unwrap(m.players["student"]).objective.terms["channel_distill"]
    ngf_s, ngf_t = 4, 8
    assert [a[0].in_channels for a in term.adapters.adapters] == [2 * ngf_s, 8 * ngf_s, 16 * ngf_s, 4 * ngf_s]
    assert [a[0].out_channels for a in term.adapters.adapters] == [2 * ngf_t, 8 * ngf_t, 16 * ngf_t, 4 * ngf_t]
    assert all(a[0].bias is None and isinstance(a[1], nn.BatchNorm2d) and isinstance(a[2], nn.ReLU)
               for a in term.adapters.adapters)
    w = torch.cat([a[0].weight.flatten() for a in term.adapters.adapters])
    assert 0.015 < float(w.std()) < 0.025 and abs(float(w.mean())) < 0.005
    b = batch()
    names = [p[0] for p in OMGD_LAYERS]
    student, wide = unwrap(m.players["student"]).net, unwrap(m.players["teacher_wide"])
    _, s_acts = hooked(student, b.x, names)
    _, t_acts = hooked(wide, b.x, names)
    want = omgd_cd(s_acts, t_acts, term.adapters.adapters)
    from kdlab.terms import Outputs

    got = term(Outputs(out=b.x, features=dict(zip(names, s_acts))), Outputs(out=b.x, features=dict(zip(names, t_acts))), b)
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_omgd_student_loss_equals_the_official_sum_over_both_teachers(clf, tmp_path):
    """One step's student loss (``loss_g``) = OMGD's ``backward_G_student`` transcribed: SSIM 10 + style 1e4 +
    feature 10 + TV 1e-5 per teacher image (wide and deep, summed), + lambda_CD 10 x CD on the wide teacher's
    activations; computed on copies of the networks taken before the step (the step distils from that same pass)."""
    from kdlab.engine.checkpoint import load_classifier

    m = omgd_method(clf, tmp_path)
    student, wide, deep = (copy.deepcopy(unwrap(m.players[p])) for p in ("student", "teacher_wide", "teacher_deep"))
    adapters = student.objective.terms["channel_distill"].adapters.adapters
    net = load_classifier(clf).eval()
    assert tuple(m.spec.mean) == (0.5,)  # the toy task's own stats are not what the classifier was trained on

    def vgg(img):  # the stand-in feature network: LeNet's two ReLU conv stages, normalised as its training data
        _, f = hooked(net, ((img + 1) / 2 - FASHION_MEAN) / FASHION_STD, ["conv1", "conv2"])
        return f

    b = batch(3)
    names = [p[0] for p in OMGD_LAYERS]
    with torch.no_grad():
        t_w, t_acts = hooked(wide, b.x, names)
        t_d = deep(b.x)
    s_img, s_acts = hooked(student.net, b.x, names)
    want = omgd_student_loss(s_img, [t_w, t_d], vgg, s_acts, t_acts, adapters)
    out = m.training_step(b, 0)
    assert float(out["loss_g"]) == pytest.approx(float(want), rel=1e-4)
    assert float(out["tv"]) == pytest.approx(1e-5 * float(omgd_tv(s_img)), rel=1e-5)
    assert float(out["deep/tv"]) == float(out["tv"])  # the code's loop adds TV once per teacher


def test_fashion_normalisation_constant():
    from kdlab.data import dataset_spec

    s = dataset_spec("fashion-mnist")
    assert s.mean[0] == pytest.approx(FASHION_MEAN, abs=1e-4) and s.std[0] == pytest.approx(FASHION_STD, abs=1e-4)


# ----------------------------------------------------------------- the online game
def test_the_student_never_gets_a_gradient_from_the_discriminator(clf, tmp_path):
    """Two runs from the same start, one with the discriminator's weights scrambled: after one step (the teachers
    and D update too) the students are identical and the teachers are not (D is in the teachers' game only)."""
    a, b = omgd_method(clf, tmp_path), omgd_method(clf, tmp_path)
    with torch.no_grad():
        for p in unwrap(b.players["discriminator"]).parameters():
            p.add_(torch.randn_like(p))
    assert "gan" not in unwrap(a.players["student"]).objective.terms
    x = batch(5)
    a.training_step(x, 0), b.training_step(x, 0)
    assert same(params(a, "student"), params(b, "student"))
    assert not same(params(a, "teacher_wide"), params(b, "teacher_wide"))
    assert not same(params(a, "teacher_deep"), params(b, "teacher_deep"))


def test_teachers_update_by_their_own_game_and_not_by_the_students_step(clf, tmp_path):
    """``players.n_dis = 2``: at step 1 only the student moves; at step 0 the wide teacher's first Adam step is
    ``-lr * g / (|g| + eps)`` with g the gradient of OMGD's ``backward_G_teacher`` (hinge ``-mean D(x, G(x))`` +
    100 x L1 to the ground truth) through D before its update, and D's loss is OMGD's ``backward_D_teacher``:
    ``0.5 (relu(1 - D(real)) + relu(1 + D(fake)))`` means, summed over the two teachers."""
    m = omgd_method(clf, tmp_path, n_dis=2)
    b = batch(7)
    before = {p: params(m, p) for p in ("student", "teacher_wide", "teacher_deep", "discriminator")}
    m.training_step(b, 1)
    for p in ("teacher_wide", "teacher_deep", "discriminator"):
        assert same(before[p], params(m, p)), p
    assert not same(before["student"], params(m, "student"))

    wide, disc, deep = (copy.deepcopy(unwrap(m.players[p])) for p in ("teacher_wide", "discriminator", "teacher_deep"))
    fake = wide(b.x)
    loss = -disc(torch.cat([b.x, fake], 1)).mean() + 100.0 * F.l1_loss(fake, b.target)
    grads = torch.autograd.grad(loss, list(wide.parameters()))
    with torch.no_grad():
        real = torch.cat([b.x, b.target], 1)
        d_loss = sum(0.5 * (F.relu(1 - disc(real)).mean() + F.relu(1 + disc(torch.cat([b.x, f], 1))).mean())
                     for f in (fake.detach(), deep(b.x)))
    start = [p.detach().clone() for p in unwrap(m.players["teacher_wide"]).parameters()]
    out = m.training_step(b, 2)
    assert float(out["loss_d"]) == pytest.approx(float(d_loss), rel=1e-5)
    lr, eps = 0.001, 1e-8
    for p0, p1, g in zip(start, unwrap(m.players["teacher_wide"]).parameters(), grads):
        torch.testing.assert_close(p1.grad, g, rtol=1e-4, atol=1e-7)  # the gradient the step used (kept after it)
        torch.testing.assert_close(p1.detach() - p0, -lr * g / (g.abs() + eps), rtol=1e-3, atol=1e-7)


def test_online_run_finishes_and_resumes(clf, tmp_path):
    """Smoke test (finishes-only, plus resume equality): the recipe through the runner on a tiny edges2fashion
    subset; two epochs in one go vs one epoch + resume give the same student and teachers."""
    from kdlab.engine import load_checkpoint
    from kdlab.runner import train

    torch.manual_seed(0)
    c28 = save_classifier(build_model("lenet", num_classes=10, in_channels=1, image_size=28, channels=[4, 8], fc=16),
                          tmp_path / "c28.safetensors", data="fashion-mnist")

    def cfg(name, epochs):
        raw = omgd_raw(c28, tmp_path)
        raw.update({"name": name, "data": {"name": "edges2fashion", "n_per_class": 2, "val_size": 8, "max_test": 20,
                                           "batch_size": 4, "eval_batch_size": 20},
                    "eval": {"latency": False, "extractor": None, "grid_n": 2}})
        raw["trainer"].update({"epochs": epochs, "limit_train_batches": 2})
        return raw

    full = train(load_run_config([cfg("full", 2)]))
    train(load_run_config([cfg("cut", 1)]))
    train(load_run_config([cfg("cut", 2)]), resume=True)
    a, b = (load_checkpoint(tmp_path / n / "checkpoints" / "last.ckpt") for n in ("full", "cut"))
    assert b["epoch"] == 2 and (full / "student.safetensors").is_file()
    for p in ("student", "teacher_wide", "teacher_deep", "discriminator"):
        for k, v in a["method"]["players"][p].items():
            assert torch.equal(v, b["method"]["players"][p][k]), (p, k)


# ----------------------------------------------------------------- composition pinned per fidelity row
def _terms(cfg, player="student"):
    return {n: c for n, c in cfg.objective[player].items() if float(c.weight) > 0}


ONLINE = ["i2i_omgd.yaml", "i2i_omgd_edges2shoes.yaml"]
FROZEN = ["i2i_omgd_frozen.yaml", "i2i_omgd_unpaired.yaml", "i2i_omgd_horse2zebra.yaml"]
#: recipe -> (lambda_CD, CD layers or [] = the generators' defaults, feature network on or off)
STUDENT = {"i2i_omgd.yaml": (10.0, OMGD_LAYERS, True), "i2i_omgd_edges2shoes.yaml": (10.0, OMGD_LAYERS, False),
           "i2i_omgd_frozen.yaml": (10.0, OMGD_LAYERS, True), "i2i_omgd_unpaired.yaml": (500.0, [], True),
           "i2i_omgd_horse2zebra.yaml": (500.0, [], False)}


@pytest.mark.parametrize("recipe", ONLINE + FROZEN)
def test_student_objective_composition(recipe):
    """Rows "student": SSIM 10 (teacher image), style 1e4 (Gram L1 on two ReLU conv stages), feature 10 (L1 on the
    second), TV 1e-5 summed over the batch, channel distillation (lambda_CD 10 paired / 500 unpaired) through
    conv + BN + ReLU adapters; no adversarial term; VGG-free recipes switch the feature-network terms off."""
    cfg = load_run_config([str(RECIPES / recipe)])
    cd, layers, feature_net = STUDENT[recipe]
    t = _terms(cfg)
    assert set(t) == {"ssim", "tv", "channel_distill"} | ({"style", "perceptual"} if feature_net else set())
    assert "gan" not in t and float(t["ssim"].weight) == 10.0 and t["ssim"].target == "teacher"
    assert t["ssim"].kernel_size == 11 and t["ssim"].sigma == 1.5 and t["ssim"].form == "omgd"
    assert float(t["tv"].weight) == 1e-5 and t["tv"].reduction == "batch_sum" and t["tv"].norm == "l1"
    assert float(t["channel_distill"].weight) == cd and t["channel_distill"].adapter == "conv_bn_relu"
    assert OmegaConf.to_container(t["channel_distill"].layers) == layers
    if feature_net:
        assert float(t["style"].weight) == 1e4 and list(t["style"].layers) == ["conv1", "conv2"]
        assert float(t["perceptual"].weight) == 10.0 and t["perceptual"].distance == "l1"
        assert list(t["perceptual"].layers) == ["conv2"] and t["style"].target == t["perceptual"].target == "teacher"
        assert t["style"].extractor == t["perceptual"].extractor and "classifier" in t["style"].extractor


@pytest.mark.parametrize("recipe", ONLINE)
def test_online_recipes_players_and_teacher_objectives(recipe):
    """Rows "teacher_wide", "teacher_deep", "discriminator": method omgd with a wide (unet ngf 64) and a deep
    (unet_deep ngf 16) teacher, hinge GAN 1 + L1 100 to the ground truth each, one shared PatchGAN (ndf 128,
    BatchNorm) with hinge loss halved per teacher; teachers and D every step (n_dis 1); Adam 2e-4, beta1 0.5."""
    cfg = load_run_config([str(RECIPES / recipe)])
    assert cfg.method == "omgd" and "checkpoint" not in (cfg.get("teacher") or {}) or not cfg.teacher.checkpoint
    assert (cfg.players.wide.name, cfg.players.wide.kwargs.ngf) == ("unet", 64)
    assert (cfg.players.deep.name, cfg.players.deep.kwargs.ngf) == ("unet_deep", 16)
    assert (cfg.model.name, cfg.model.kwargs.ngf) == ("unet", 16)
    assert cfg.players.ndf == 128 and cfg.players.disc_norm == "batch" and cfg.players.n_dis == 1
    assert cfg.players.n_layers == (3 if cfg.data.image_size == 256 else 2)  # a map of patches, not one score
    for p in ("teacher_wide", "teacher_deep"):
        t = _terms(cfg, p)
        assert set(t) == {"gan", "l1_image"} and t["gan"].mode == "hinge" and float(t["gan"].weight) == 1.0
        assert float(t["l1_image"].weight) == 100.0 and t["l1_image"].target == "ground_truth"
        assert t["l1_image"].reduction == "mean"
    d = _terms(cfg, "discriminator")
    assert set(d) == {"gan"} and d["gan"].mode == "hinge" and float(d["gan"].weight) == 0.5
    assert cfg.optim.lr == 2e-4 and list(cfg.optim.betas) == [0.5, 0.999] and cfg.optim.scheduler == "linear"


@pytest.mark.parametrize("recipe", FROZEN)
def test_frozen_teacher_recipes_have_no_discriminator(recipe):
    """The frozen single-teacher option (method i2i-distill): a teacher checkpoint, no game (gan weight 0)."""
    cfg = load_run_config([str(RECIPES / recipe)])
    assert cfg.method == "i2i-distill" and cfg.teacher.checkpoint
    assert float(cfg.objective.student.gan.weight) == 0 and float(cfg.objective.discriminator.gan.weight) == 0


def test_built_players_and_the_deep_teachers_terms(clf, tmp_path):
    """The built method: players student, teacher_wide, teacher_deep, discriminator (no student discriminator);
    the student's terms read the wide teacher (CD on its features), and the image terms (SSIM, style, feature, TV)
    again the deep teacher's image; the frozen recipe builds no discriminator."""
    m = omgd_method(clf, tmp_path)
    assert set(m.players) == {"student", "teacher_wide", "teacher_deep", "discriminator"}
    assert not m.frozen
    obj = unwrap(m.players["student"]).objective
    assert set(obj.terms) == {"ssim", "style", "perceptual", "tv", "channel_distill"}
    assert obj.teacher_features == [p[1] for p in OMGD_LAYERS]
    assert set(m.deep_objective.terms) == {"ssim", "style", "perceptual", "tv"}
    assert unwrap(m.players["teacher_deep"]).arch == "unet_deep" and unwrap(m.players["teacher_wide"]).ngf == 8
    assert functools.reduce(lambda a, t: a and "critic" not in t.requires, obj.terms.values(), True)


def test_bad_inputs_are_refused_before_training(clf, tmp_path):
    """Unpaired data, a teacher that is no image generator and bad teacher kwargs are ConfigErrors naming the key."""
    from kdlab.config import ConfigError

    cfg = load_run_config([omgd_raw(clf, tmp_path)])
    unpaired = DataSpec(name="toy", num_classes=10, in_channels=1, image_size=S, mean=(0.5,), std=(0.5,),
                        pairing="unpaired", target_channels=1)
    with pytest.raises(ConfigError, match="omgd.*paired"):
        METHODS.get("omgd")(cfg, unpaired)
    with pytest.raises(ConfigError, match=r"players\.wide.*not an image-to-image generator.*unet"):
        METHODS.get("omgd")(load_run_config([omgd_raw(clf, tmp_path, wide={"name": "dcgan", "kwargs": {}})]), spec())
    with pytest.raises(ConfigError, match=r"players\.deep.*blocks"):
        METHODS.get("omgd")(load_run_config([omgd_raw(clf, tmp_path, deep={"name": "unet_deep",
                                                                            "kwargs": {"ngf": 4, "blocks": 0}})]), spec())
