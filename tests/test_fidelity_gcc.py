"""GCC (Li et al. 2021; VEM paper 003 eqs. 16-18) against its official code, SJLeo/GCC: the rows of the GCC
section of docs/fidelity.md, each pinned here.

Independent computations are transcribed from the official code (file and function named at each): the channel
gate (models/DifferentiableOp.py ``Mask``, ``DifferentiableOP``), the architecture loss (models/SAGAN.py
``backward_D_arch``, ``get_D_arch_diff``; models/GANLoss.py ``GANLoss``), the distillation (models/SAGAN.py
``backward_G``, ``gram``). The composition tests load the recipes and build their players."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from kdlab.data import Batch, dataset_spec
from kdlab.engine.checkpoint import save_checkpoint
from kdlab.engine.generators import save_generator
from kdlab.losses.gcc import selective_activation_loss
from kdlab.methods import METHODS
from kdlab.models import build_discriminator, build_generator
from kdlab.models.gates import ChannelGate, channel_gates
from kdlab.runner import load_run_config

from conftest import CPUFabric

RECIPES = Path(__file__).resolve().parents[1] / "src" / "kdlab" / "recipes"


# --------------------------------------------------------------------------- official formulas, transcribed
def official_mask(alpha, threshold):
    """DifferentiableOp.py ``Mask.forward``: ``(sign(alpha - threshold) + 1) / 2``."""
    return (torch.sign(alpha - threshold) + 1) / 2


def official_gan_loss(pred, target_is_real, for_discriminator, mode):
    """GANLoss.py ``GANLoss.__call__`` (real label 1, fake 0)."""
    if mode in ("lsgan", "vanilla"):
        target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
        return F.mse_loss(pred, target) if mode == "lsgan" else F.binary_cross_entropy_with_logits(pred, target)
    if for_discriminator:
        if target_is_real:
            return -torch.mean(torch.min(pred - 1, torch.zeros_like(pred)))
        return -torch.mean(torch.min(-pred - 1, torch.zeros_like(pred)))
    return -torch.mean(pred)


def official_arch_loss(pred_real_s, pred_fake_s, pred_fake_t, mode, half=False):
    """SAGAN.py ``backward_D_arch`` (Pix2Pix.py: D's part halved), with ``get_D_arch_diff`` for both models and
    ``ema_beta`` = 1 (the first epoch)."""
    diff_t = torch.abs(official_gan_loss(pred_fake_t, True, False, mode) - official_gan_loss(pred_fake_t, False, True, mode))
    fake_s = official_gan_loss(pred_fake_s, False, True, mode)
    diff_s = torch.abs(official_gan_loss(pred_fake_s, True, False, mode) - fake_s)
    real_s = official_gan_loss(pred_real_s, True, True, mode)
    return torch.abs(diff_s - diff_t) + (0.5 if half else 1.0) * (real_s + fake_s)


def official_gram(x):
    """SAGAN.py ``SAGANModel.gram``."""
    b, c, h, w = x.size()
    f = x.view(b, c, h * w)
    return f.bmm(f.transpose(1, 2)) / (c * h * w)


def official_distill(features, targets, lambda_content, lambda_gram):
    """SAGAN.py ``backward_G``: sum over the pairs of sqrt(MSE) of Gram matrices and of the features."""
    gram = sum(torch.sqrt(F.mse_loss(official_gram(f), official_gram(t))) for f, t in zip(features, targets))
    content = sum(torch.sqrt(F.mse_loss(f, t)) for f, t in zip(features, targets))
    return lambda_gram * gram + lambda_content * content


# --------------------------------------------------------------------------- the gate and the gated discriminator
def test_channel_gate_is_gccs_differentiable_op():
    """Forward: the input times ``Mask``; backward: ``Mask``'s straight-through gradient, so d out / d alpha_c is
    the sum of grad * input over the batch and positions (DifferentiableOp.py, ``Mask.backward``)."""
    gate = ChannelGate(4, threshold=0.1)
    with torch.no_grad():
        gate.alpha.copy_(torch.tensor([1.0, 0.05, 0.1, 0.6]))  # on, off, exactly at the threshold (1/2), on
    x = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    g = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    out = gate(x)
    mask = official_mask(gate.alpha.detach(), 0.1)
    assert mask.tolist() == [1.0, 0.0, 0.5, 1.0]
    assert torch.allclose(out, x * mask[None, :, None, None])
    (out * g).sum().backward()
    assert torch.allclose(gate.alpha.grad, (g * x).sum(dim=(0, 2, 3)), atol=1e-5)
    with torch.no_grad():
        gate.alpha.copy_(torch.tensor([1.7, -0.3, 0.5, 0.2]))
    gate.clip_()  # DifferentiableOP.clip_alpha
    assert gate.alpha.tolist() == pytest.approx([1.0, 0.0, 0.5, 0.2])
    with pytest.raises(ValueError, match="threshold 1.5 must be in"):
        ChannelGate(3, 1.5)


def test_gated_sagan_discriminator_is_gccs_mask_discriminator():
    """SAGAN.py ``MaskDiscriminator``: a gate after every hidden SN convolution, before its LeakyReLU, none on the
    attention or the last conv; with every gate on it is the ungated discriminator; a gate off zeroes its channel."""
    torch.manual_seed(0)
    plain = build_discriminator("sagan", in_channels=1, image_size=28, ndf=8)
    gated = build_discriminator("sagan", in_channels=1, image_size=28, ndf=8, gate_threshold=0.1)
    gates = channel_gates(gated)
    assert [g.alpha.numel() for g in gates] == [8, 16, 32] and all(g.threshold == 0.1 for g in gates)
    kinds = [type(m).__name__.replace("Parametrized", "") for m in gated.net]
    assert kinds[:3] == ["Conv2d", "ChannelGate", "LeakyReLU"] and kinds[-1] == "Conv2d"
    state = {k: v for k, v in gated.state_dict().items() if "alpha" not in k}
    plain_state = plain.state_dict()
    gated.load_state_dict({**gated.state_dict(), **{k: plain_state[k2] for k, k2 in zip(state, plain_state)}})
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    plain.eval(), gated.eval()
    assert torch.allclose(plain(x), gated(x), atol=1e-6)
    with torch.no_grad():
        gates[0].alpha[2] = 0.0
    from kdlab.models.base import extract_features

    _, f = extract_features(gated, x, ["l1"])
    assert float(f["l1"][:, 2].detach().abs().max()) == 0.0 and float(f["l1"][:, 1].detach().abs().max()) > 0


@pytest.mark.parametrize("mode,half", [("hinge", False), ("vanilla", True), ("lsgan", False)])
def test_architecture_loss_equals_gccs_backward_D_arch(mode, half):
    g = torch.Generator().manual_seed(2)
    real, fake, fake_t = (torch.randn(6, generator=g) * 2 for _ in range(3))
    ref = official_arch_loss(real, fake, fake_t, mode, half)
    gap_t = torch.abs(official_gan_loss(fake_t, True, False, mode) - official_gan_loss(fake_t, False, True, mode))
    got = selective_activation_loss(real, fake, gap_t, mode, d_weight=0.5 if half else 1.0)
    assert float(got) == pytest.approx(float(ref), rel=1e-6)


# --------------------------------------------------------------------------- the recipes' players
def _sagan_run(tmp_path, recipe="gcc_sagan.yaml", **players):
    torch.manual_seed(0)
    teacher = save_generator(build_generator("sagan", 1, 28, ngf=16, latent_dim=8), tmp_path / "t.safetensors")
    d_teacher = build_discriminator("sagan", in_channels=1, image_size=28, ndf=16)
    save_checkpoint({"method": {"players": {"discriminator": d_teacher.state_dict()}}}, tmp_path / "last.ckpt")
    raw = OmegaConf.to_container(OmegaConf.load(RECIPES / recipe))
    cfg = load_run_config([raw, {"out_dir": str(tmp_path), "name": "g", "teacher": {"checkpoint": str(teacher)},
                                 "model": {"name": "sagan", "kwargs": {"ngf": 8, "latent_dim": 8}},
                                 "players": {"disc_d": 16, "teacher_disc": str(tmp_path / "last.ckpt"), **players},
                                 "eval": {"extractor": None}, "trainer": {"epochs": 4}}])
    m = METHODS.get("gan-compression")(cfg, dataset_spec("fashion-mnist"))
    m.setup(CPUFabric())
    m.train()
    return m, d_teacher


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_teacher_discriminator_is_never_updated_and_gates_only_by_their_step(tmp_path):
    """GCC's D^t is the teacher run's, frozen: no step (student, D, gates) changes it. D's optimizer never holds the
    gates; the gates' step changes only the gates (D's weights frozen meanwhile) after clipping alpha to [0, 1]."""
    m, d_teacher = _sagan_run(tmp_path)
    D_t, D = m.frozen["teacher_discriminator"], m.players["discriminator"]
    assert not any(p.requires_grad for p in D_t.parameters())
    alphas = {id(g.alpha) for g in channel_gates(D)}
    d_opt = {id(p) for group in m.optimizers["discriminator"].param_groups for p in group["params"]}
    gate_opt = {id(p) for group in m.optimizers["discriminator_gates"].param_groups for p in group["params"]}
    assert alphas and not (alphas & d_opt) and gate_opt == alphas
    t0 = _params(D_t)
    real = torch.rand(6, 1, 28, 28) * 2 - 1
    for step in range(3):
        m.training_step(Batch(x=real), step)
    assert all(torch.equal(t0[k], v) for k, v in _params(D_t).items())
    assert all(torch.equal(v, d_teacher.state_dict()[k]) for k, v in _params(D_t).items())
    weights = lambda: {k: v.detach().clone() for k, v in D.named_parameters()}  # noqa: E731 (not SN's u, v buffers)
    before = weights()
    with torch.no_grad():
        channel_gates(D)[0].alpha[0] = 1.3  # clipped to 1 before the gates' step
    out = m.gate_step(m.range.to_tanh(real))
    after = weights()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith("alpha") for k in changed)
    assert float(channel_gates(D)[0].alpha.detach().max()) <= 1.0 + 1e-3 and "loss_gates" in out


def test_gate_step_loss_is_the_architecture_loss_on_both_discriminators(tmp_path):
    """The gates' loss of one step = GCC's ``backward_D_arch`` on D^s(real), D^s(G^s(z)) and D^t(G^t(z)) for the
    step's z (reproduced by reseeding), with the adaptive EMA of the teacher's gap (``adaptive_ema_beta``)."""
    m, _ = _sagan_run(tmp_path)
    real = torch.rand(6, 1, 28, 28) * 2 - 1
    D, D_t, G_t = m.players["discriminator"], m.frozen["teacher_discriminator"], m.frozen["teacher"]
    gates = m.players["discriminator_gates"]

    # train-mode spectral norm advances its power iteration at every forward: replay from the same state
    snap = {n: _params(m.players[n]) for n in ("student", "discriminator")}

    def reference():
        z = torch.randn(6, 8)
        with torch.no_grad():
            s_img, t_img = m.players["student"](z).out, G_t(z)
            return official_arch_loss(D(real), D(s_img), D_t(t_img), "hinge"), t_img

    torch.manual_seed(5)
    ref, t_img = reference()
    for n, state in snap.items():
        m.players[n].load_state_dict(state)
    torch.manual_seed(5)
    out = m.gate_step(real)
    assert float(out["loss_gates"]) == pytest.approx(float(ref), rel=1e-5)
    gap1 = float(gates.teacher_gap)
    m.on_epoch_end(0)  # beta = 1 - 1/4
    torch.manual_seed(6)
    z = torch.randn(6, 8)
    with torch.no_grad():
        p = D_t(G_t(z))
    now = abs(float(-p.mean()) - float(F.relu(1 + p).mean()))
    torch.manual_seed(6)
    m.gate_step(real)
    assert float(gates.teacher_gap) == pytest.approx(0.75 * now + 0.25 * gap1, rel=1e-5)


def test_gcc_term_is_gccs_backward_G_on_the_teacher_discriminator(tmp_path):
    """The student's distillation = SAGAN.py ``backward_G``'s gram + content losses: the generators' ``l2`` and
    ``attn2`` (student's through 1x1 convs without bias) and the TEACHER discriminator's ``l2`` and ``attn2`` of the
    student's vs the teacher's image, each as sqrt(MSE); ``lambda_L1`` 0."""
    from kdlab.models.base import extract_features

    m, _ = _sagan_run(tmp_path)
    term = m.players["student"].objective.terms["gcc"]
    convs = list(term.adapters.adapters)
    assert [c.bias for c in convs] == [None, None] and [c.kernel_size for c in convs] == [(1, 1), (1, 1)]
    student, G_t, D_t = m.eval_model(), m.frozen["teacher"], m.frozen["teacher_discriminator"]
    student.eval()
    z = torch.randn(5, 8)
    s_img, fs = extract_features(student, z, ["l2", "attn2"])
    t_img, ft = extract_features(G_t, z, ["l2", "attn2"])
    _, ds = extract_features(D_t, s_img, ["l2", "attn2"])
    _, dt = extract_features(D_t, t_img, ["l2", "attn2"])
    feats = [convs[0](fs["l2"]), convs[1](fs["attn2"]), ds["l2"], ds["attn2"]]
    targets = [ft["l2"], ft["attn2"], dt["l2"], dt["attn2"]]
    ref = official_distill(feats, targets, lambda_content=1.0, lambda_gram=1.0)
    from kdlab.terms import Outputs

    got = term(Outputs(out=s_img, features=fs), Outputs(out=t_img, features=ft), Batch(x=torch.zeros(5, 1, 28, 28)))
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)


# --------------------------------------------------------------------------- composition (one test per fidelity row group)
def test_gcc_sagan_recipe_student_objective():
    """Rows "student: L_GAN", "D^t features", "generator features", "distance", "lambda_L1" of the SAGAN table."""
    cfg = load_run_config([str(RECIPES / "gcc_sagan.yaml")])
    st = cfg.objective.student
    assert {k for k, v in st.items() if float(v.weight) > 0} == {"gcc", "gan"}
    assert float(st.mse.weight) == 0.0
    assert (st.gan.mode, float(st.gan.weight)) == ("hinge", 1.0)
    g = st.gcc
    assert float(g.weight) == 1.0 and list(g.d_layers) == ["l2", "attn2"]
    assert [list(p) for p in g.layers] == [["l2", "l2"], ["attn2", "attn2"]]
    assert (g.distance, float(g.lambda_mse), float(g.lambda_style), float(g.lambda_recon), g.normalize) == \
        ("root", 1.0, 1.0, 0.0, "chw")


def test_gcc_sagan_recipe_discriminators_and_optimizers():
    """Rows "discriminator: L_GAN, optimizer, gates", "discriminator_gates: L_arch, optimizer", "student: optimizer"."""
    cfg = load_run_config([str(RECIPES / "gcc_sagan.yaml")])
    d = cfg.objective.discriminator
    assert {k for k, v in d.items() if float(v.weight) > 0} == {"gan"} and d.gan.mode == "hinge"
    arch = cfg.objective.discriminator_gates
    assert {k for k, v in arch.items() if float(v.weight) > 0} == {"selective_activation"}
    sa = arch.selective_activation
    assert (float(sa.weight), sa.mode, float(sa.d_weight), sa.teacher_gap_ema) == (1.0, "hinge", 1.0, "adaptive")
    p = cfg.players
    assert (p.disc, p.disc_d, p.disc_lr, p.disc_gates, p.arch_lr) == ("sagan", 64, 0.0004, 0.1, 0.0001)
    assert p.disc_init is None and p.teacher_disc is None  # D^s from scratch; D^t = the teacher run's
    o = cfg.optim
    assert (o.name, o.lr, list(o.betas), o.scheduler, cfg.data.batch_size) == ("adam", 0.0001, [0.0, 0.9], "none", 64)
    assert cfg.model.kwargs.ngf == 52 and cfg.method == "gan-compression"


def test_gcc_sagan_players_and_whose_features(tmp_path):
    """Which players exist and whose features each term reads: the gcc term reads the frozen teacher D, the game
    the student's gated D, the gates' term both."""
    m, _ = _sagan_run(tmp_path)
    assert set(m.players) == {"student", "discriminator", "discriminator_gates"}
    assert set(m.frozen) == {"teacher", "teacher_discriminator"}
    terms = m.players["student"].objective.terms
    assert terms["gcc"].critic.get() is m.frozen["teacher_discriminator"]
    assert terms["gan"]._critic.get() is m.players["discriminator"]
    sa = m.gate_objective.terms["selective_activation"]
    assert sa.critic.get() is m.players["discriminator"] and sa.teacher_critic.get() is m.frozen["teacher_discriminator"]
    assert len(channel_gates(m.players["discriminator"])) == 3 and not channel_gates(m.frozen["teacher_discriminator"])
    assert m.optimizers["discriminator_gates"].param_groups[0]["betas"] == (0.9, 0.999)


def test_i2i_gcc_recipe_composition():
    """Rows of the Pix2Pix table: hinge game, L1 to the ground truth x100, gcc on the teacher's PatchGAN (content 50,
    gram 1e4, sqrt distance, no L1 to the teacher)."""
    cfg = load_run_config([str(RECIPES / "i2i_gcc.yaml")])
    st = cfg.objective.student
    assert {k for k, v in st.items() if float(v.weight) > 0} == {"gcc", "l1_image", "gan"}
    assert (float(st.l1_image.weight), st.l1_image.target) == (100.0, "ground_truth")
    assert (st.gan.mode, cfg.objective.discriminator.gan.mode) == ("hinge", "hinge")
    g = st.gcc
    assert (g.distance, float(g.lambda_mse), float(g.lambda_style), float(g.lambda_recon), list(g.d_layers)) == \
        ("root", 50.0, 10000.0, 0.0, [])
    assert g.layers is None  # the U-Nets' default layers through 1x1 convs
    assert cfg.players.teacher_disc is None and cfg.method == "i2i-distill"
    sa = cfg.objective.discriminator_gates.selective_activation
    assert (float(sa.weight), sa.mode, float(sa.d_weight), sa.teacher_gap_ema) == (1.0, "hinge", 0.5, "adaptive")
    assert (cfg.players.disc_gates, cfg.players.arch_lr) == (0.5, 0.0001)


def test_gated_patchgan_is_gccs_mask_nlayer_discriminator():
    """Pix2Pix.py ``MaskNLayerDiscriminator``: the first gate after the first LeakyReLU, the others after each norm
    and before the LeakyReLU; none on the last conv. Every gate on: the ungated PatchGAN."""
    from kdlab.games.i2i_players import build_patchgan

    torch.manual_seed(0)
    plain = build_patchgan(2, 32, 8, 2, "batch")
    gated = build_patchgan(2, 32, 8, 2, "batch", 0.5)
    kinds = [type(m).__name__ for m in gated.net]
    assert kinds == ["Conv2d", "LeakyReLU", "ChannelGate", "Conv2d", "BatchNorm2d", "ChannelGate", "LeakyReLU",
                     "Conv2d", "BatchNorm2d", "ChannelGate", "LeakyReLU", "Conv2d"]
    assert [g.alpha.numel() for g in channel_gates(gated)] == [8, 16, 32]
    assert list(gated.feature_layers) == list(plain.feature_layers)
    gated.load_state_dict({**gated.state_dict(), **{k: v for k, v in zip(
        [k for k in gated.state_dict() if "alpha" not in k], plain.state_dict().values())}})
    x = torch.rand(3, 2, 32, 32)
    assert torch.allclose(plain.eval()(x), gated.eval()(x), atol=1e-6)


def test_i2i_gcc_players(tmp_path):
    """i2i-distill with the recipe: the gated student PatchGAN and its gates' player, the frozen teacher PatchGAN read
    by the gcc term and by the gates' term; a step updates the gates and never the teacher's discriminator."""
    from kdlab.data.sets import DataSpec
    from kdlab.engine.checkpoint import save_checkpoint as save
    from kdlab.games.i2i_players import build_patchgan

    torch.manual_seed(0)
    teacher = save_generator(build_generator("unet", 1, 16, in_channels=1, ngf=8), tmp_path / "u.safetensors")
    d_t = build_patchgan(2, 16, 8, None, "batch")
    save({"method": {"players": {"discriminator": d_t.state_dict()}}}, tmp_path / "d.ckpt")
    raw = OmegaConf.to_container(OmegaConf.load(RECIPES / "i2i_gcc.yaml"))
    cfg = load_run_config([raw, {"out_dir": str(tmp_path), "teacher": {"checkpoint": str(teacher)},
                                 "model": {"kwargs": {"ngf": 4}}, "data": {"name": "toy", "val_size": 0, "batch_size": 4},
                                 "players": {"ndf": 8, "teacher_disc": str(tmp_path / "d.ckpt")},
                                 "eval": {"extractor": None}}])
    spec = DataSpec(name="toy", num_classes=10, in_channels=1, image_size=16, mean=(0.5,), std=(0.5,),
                    pairing="paired", target_channels=1)
    m = METHODS.get("i2i-distill")(cfg, spec)
    m.setup(CPUFabric())
    m.train()
    assert set(m.players) == {"student", "discriminator", "discriminator_gates"}
    assert set(m.frozen) == {"teacher", "teacher_discriminator"}
    assert m.players["student"].objective.terms["gcc"].critic.get() is m.frozen["teacher_discriminator"]
    sa = m.gate_objective.terms["selective_activation"]
    assert sa.critic.get() is m.players["discriminator"] and sa.teacher_critic.condition_channels == 1
    t0 = _params(m.frozen["teacher_discriminator"])
    a0 = torch.cat([g.alpha.detach().clone() for g in channel_gates(m.players["discriminator"])])
    x, y = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1
    out = m.training_step(Batch(x=x, target=y), 0)
    assert "loss_gates" in out and torch.isfinite(out["loss"])
    assert all(torch.equal(t0[k], v) for k, v in _params(m.frozen["teacher_discriminator"]).items())
    assert not torch.equal(a0, torch.cat([g.alpha.detach() for g in channel_gates(m.players["discriminator"])]))


def test_gcc_refuses_gates_without_their_objective_and_the_reverse(tmp_path):
    from kdlab.config import ConfigError

    with pytest.raises(ConfigError, match="objective.discriminator_gates has no term with a weight > 0"):
        _bad(tmp_path, {"objective": {"discriminator_gates": {"selective_activation": {"weight": 0.0}}}})
    with pytest.raises(ConfigError, match="there are none: set players.disc_gates"):
        _bad(tmp_path, {"players": {"disc_gates": None}})
    with pytest.raises(ConfigError, match=r"selective_activation.mode = 'lsgan' reads another game.*'hinge'"):
        _bad(tmp_path, {"objective": {"discriminator_gates": {"selective_activation": {"mode": "lsgan"}}}})


def _bad(tmp_path, over):
    torch.manual_seed(0)
    teacher = save_generator(build_generator("sagan", 1, 28, ngf=16, latent_dim=8), tmp_path / "t.safetensors")
    save_checkpoint({"method": {"players": {"discriminator": build_discriminator(
        "sagan", in_channels=1, image_size=28, ndf=16).state_dict()}}}, tmp_path / "last.ckpt")
    raw = OmegaConf.to_container(OmegaConf.load(RECIPES / "gcc_sagan.yaml"))
    base = {"out_dir": str(tmp_path), "name": "g", "teacher": {"checkpoint": str(teacher)},
            "model": {"name": "sagan", "kwargs": {"ngf": 8, "latent_dim": 8}},
            "players": {"disc_d": 16, "teacher_disc": str(tmp_path / "last.ckpt")}, "eval": {"extractor": None}}
    cfg = load_run_config([raw, base, over])
    return METHODS.get("gan-compression")(cfg, dataset_spec("fashion-mnist"))


def test_root_distance_is_finite_at_zero_and_squared_is_eq_18():
    """``distance: root`` (GCC's sqrt(MSE)) gives 0 and a zero, finite gradient for equal maps (sqrt's slope is
    infinite at 0); ``squared`` with ``reduction: sum`` is eq. 18's squared Frobenius norms, batch-averaged."""
    from kdlab.losses.gcc import gcc_distance

    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    v = gcc_distance(x, x.detach().clone(), 1.0, 1.0, distance="root")
    v.backward()
    assert float(v) == 0.0 and torch.isfinite(x.grad).all() and float(x.grad.abs().max()) == 0.0
    y = torch.randn(2, 3, 4, 4)
    sq = gcc_distance(x.detach(), y, 0.5, 2.0, reduction="sum", distance="squared")
    ref = 0.5 * ((x.detach() - y) ** 2).sum() / 2 + 2.0 * ((official_gram(x.detach()) - official_gram(y)) ** 2).sum() / 2
    assert float(sq) == pytest.approx(float(ref), rel=1e-5)
    with pytest.raises(ValueError, match="distance"):
        gcc_distance(x, y, distance="cubed")
