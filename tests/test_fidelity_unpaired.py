"""Fidelity of the offline image-to-image students to their official code (docs/fidelity.md, sections
GAN-Compression, CAT and CAGC): each row of the table pinned by the recipe's composition, the students' and
discriminators' starts, the PatchGAN's depth at 28 px, and each student loss on a fixed input against an
independent computation transcribed from the official code.

Sources (read with git at their default branch):
* mit-han-lab/gan-compression: scripts/cycle_gan/horse2zebra/distill.sh; distillers/base_resnet_distiller.py
  (``backward_D``, ``backward_G``, ``mapping_layers``); distillers/resnet_distiller.py (``calc_distill_loss``,
  ``load_networks``); utils/weight_transfer.py (``load_pretrained_weight``, ``transfer_Conv2d``,
  ``transfer_ConvTranspose2d``, ``transfer_ResnetBlock``); models/modules/loss.py (``GANLoss``: lsgan = MSE).
* snap-research/CAT: scripts/cycle_gan/horse2zebra/train_inception_student_2p6B.sh;
  distillers/inception_distiller.py (``calc_distill_loss``, ``backward_G``); utils/common.py (``KA``).
* lychenyoko/content-aware-gan-compression: train_hyperparams.py; train.py (``KD_loss``,
  ``g_nonsaturating_loss``); Util/content_aware_pruning.py (``Get_Masked_Tensor``); prune.py (the pruned
  checkpoint keeps the teacher's ``'d'``).
* junyanz/pytorch-CycleGAN-and-pix2pix: models/networks.py (``NLayerDiscriminator``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from kdlab.config import ConfigError
from kdlab.data import Batch
from kdlab.data.sets import DataSpec
from kdlab.engine.checkpoint import save_checkpoint, save_classifier
from kdlab.engine.generators import save_generator
from kdlab.methods import METHODS
from kdlab.games.i2i_players import build_patchgan, patchgan_depth
from kdlab.models import build_generator, build_model
from kdlab.models.weight_transfer import transfer_teacher_channels
from kdlab.runner import load_run_config

S = 28
RECIPES = Path(__file__).resolve().parents[1] / "src" / "kdlab" / "recipes"


def recipe(name):
    return load_run_config([RECIPES / f"{name}.yaml"])


def spec(pairing):
    return DataSpec(name="toy", num_classes=10, in_channels=1, image_size=S, mean=(0.5,), std=(0.5,),
                    pairing=pairing, target_channels=1)


# -- the recipes' composition: one assertion block per row of docs/fidelity.md -----------------------------
def test_gan_compression_recipe_composition():
    """distill.sh: --gan_mode lsgan --lambda_recon 10 --lambda_distill 0.01 --student_ngf 32 (of 64), D's loss
    halved (backward_D), --restore_D_path, --restore_pretrained_G_path; Adam 2e-4 beta1 0.5, linear decay."""
    cfg = recipe("i2i_gan_compression")
    st, d = cfg.objective.student, cfg.objective.discriminator
    assert cfg.method == "i2i-distill" and sorted(st) == ["gan", "gc_distill", "l1_image"] and sorted(d) == ["gan"]
    assert (st.gan.mode, st.gan.weight, d.gan.mode, d.gan.weight) == ("lsgan", 1.0, "lsgan", 0.5)
    assert (st.l1_image.weight, st.l1_image.target, st.l1_image.reduction) == (10.0, "teacher", "mean")
    assert (st.gc_distill.weight, st.gc_distill.reduction, list(st.gc_distill.layers)) == (0.01, "mean", [])
    assert (cfg.players.disc_init, cfg.players.student_init, cfg.players.d_step) == ("teacher", "teacher", "after")
    assert cfg.players.ndf is None and cfg.players.n_layers is None  # the teacher's D: read off its checkpoint
    assert cfg.model.name == "resnet_gen" and dict(cfg.model.kwargs) == {"ngf": 32, "n_blocks": 9}
    assert (cfg.optim.name, cfg.optim.lr, list(cfg.optim.betas), cfg.optim.scheduler) == ("adam", 2e-4, [0.5, 0.999],
                                                                                            "linear")


def test_cat_recipe_composition():
    """train_inception_student_2p6B.sh: --gan_mode lsgan --lambda_recon 5 --lambda_distill 1.0
    --distill_G_loss_type ka, --restore_D_path, --restore_pretrained_G_path."""
    cfg = recipe("i2i_cat")
    st, d = cfg.objective.student, cfg.objective.discriminator
    assert cfg.method == "i2i-distill" and sorted(st) == ["gan", "kernel_alignment", "l1_image"] and sorted(d) == ["gan"]
    assert (st.gan.mode, st.gan.weight, d.gan.mode, d.gan.weight) == ("lsgan", 1.0, "lsgan", 0.5)
    assert (st.l1_image.weight, st.l1_image.target, st.l1_image.reduction) == (5.0, "teacher", "mean")
    assert (st.kernel_alignment.weight, st.kernel_alignment.center, list(st.kernel_alignment.layers)) == (1.0, False, [])
    assert (cfg.players.disc_init, cfg.players.student_init, cfg.players.d_step) == ("teacher", "teacher", "before")
    assert cfg.model.name == "resnet_gen" and dict(cfg.model.kwargs) == {"ngf": 16, "n_blocks": 9}


@pytest.mark.parametrize("name,method,game,d_weight", [("i2i_cagc", "i2i-distill", "vanilla", 0.5),
                                                       ("cagc_sagan", "gan-compression", "hinge", 1.0)])
def test_cagc_recipes_composition(name, method, game, d_weight):
    """train_hyperparams.py: kd_l1_lambda 3, kd_lpips_lambda 3, kd_mode Output_Only (no feature term),
    content_aware_KD True (the masked images); the game the host's; D from the teacher's ('d' of prune.py)."""
    cfg = recipe(name)
    st, d = cfg.objective.student, cfg.objective.discriminator
    assert cfg.method == method
    assert sorted(k for k, v in st.items() if v.weight > 0) == ["cagc", "gan"]
    c = st.cagc
    assert (c.weight, c.lambda_recon, c.lambda_distill, c.lambda_lpips, c.reduction, c.saliency) == (
        1.0, 3.0, 0.0, 3.0, "mean", "foreground")
    assert c.extractor  # LPIPS's network: the output domain's classifier
    assert (st.gan.mode, st.gan.weight, d.gan.mode, d.gan.weight) == (game, 1.0, game, d_weight)
    assert cfg.players.disc_init


def test_cagc_term_defaults_are_its_codes():
    """The term's own defaults (a config naming only ``cagc``) are CAGC's train_hyperparams.py."""
    cfg = load_run_config([RECIPES / "i2i_cagc.yaml", {"objective": {"student": {"cagc": {"extractor": "x"}}}}])
    from kdlab.terms.cagc import CAGCTerm

    d = CAGCTerm.Config()
    assert (d.lambda_recon, d.lambda_distill, d.lambda_lpips, d.reduction) == (3.0, 0.0, 3.0, "mean")
    assert cfg.objective.student.cagc.lambda_recon == 3.0


def test_vem_table3_holds_a_cagc_row_on_the_sagan_teacher():
    from kdlab.experiments.specs import row_configs

    for scale in ("small", "full"):
        rows = row_configs("vem-table3", scale)
        assert {r for r in rows if r.startswith("cagc-")} == {"cagc-alone", "cagc-vid", "cagc-crd", "cagc-vem"}
        assert {r for r in rows if r.startswith("gcc-")} == {"gcc-alone", "gcc-vid", "gcc-crd", "gcc-vem"}
        cagc = rows["cagc-vem"]
        assert cagc.method == "gan-compression" and "cagc" in cagc.objective.student and cagc.model.name == "sagan"
        assert cagc.objective.student.vem.weight == 0.05  # VEM Table 6: CAGC + VEM lambda_MI 0.05
        teacher_ngf = {"small": 32, "full": 64}[scale]  # the init teacher's width at each scale
        # Table 3: 90.91% of StyleGAN2's MACs cut, MACs ~ width^2
        assert cagc.model.kwargs.ngf / teacher_ngf == pytest.approx(0.3, abs=0.02)


# -- the PatchGAN's depth -------------------------------------------------------------------------------
def test_patchgan_depth_follows_the_image_size():
    """pix2pix's 3 stride-2 layers at 256 px (a 30x30 map); at 28 px 3 layers leave a 1x1 map (one 70 px patch,
    a whole-image discriminator): the depth there is 2, a 5x5 map, the small teachers' depth."""
    side = {n: S // 2 ** n - 2 for n in (1, 2, 3)}  # NLayerDiscriminator: k4 s2 p1 halves; two k4 s1 p1 take 1 each
    assert side[3] == 1
    for size, want in [(256, 3), (64, 3), (48, 3), (32, 2), (28, 2), (16, 1), (8, 1)]:
        assert patchgan_depth(size) == want, size
        assert size // 2 ** want - 2 >= (4 if size >= 16 else 2)
    with pytest.raises(ConfigError, match=r"n_layers = 3 leaves no patch on 28x28.*1x1.*accepted: 1..2"):
        patchgan_depth(28, 3)
    assert patchgan_depth(28, 1) == 1  # an explicit depth with a map is kept


# -- the players' starts, and each student loss on a fixed input -------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two teacher runs as kdlab writes them: a CycleGAN one (generator A -> B, disc_b judging B, disc_a) and a
    pix2pix one (U-Net, a conditional ``discriminator``), plus an output-domain classifier."""
    tmp = tmp_path_factory.mktemp("fidelity")
    torch.manual_seed(0)
    cyc = tmp / "cyclegan"
    g = build_generator("resnet_gen", 1, S, in_channels=1, ngf=8, n_blocks=9)
    for p in g.parameters():  # a trained-looking teacher: channels of clearly different norms
        p.data.normal_(0, 0.1)
    save_generator(g, cyc / "generator.safetensors")
    discs = {k: build_patchgan(1, S, 8, None, "instance") for k in ("disc_b", "disc_a")}
    save_checkpoint({"method": {"players": {k: d.state_dict() for k, d in discs.items()}}},
                    cyc / "checkpoints" / "last.ckpt")
    p2p = tmp / "pix2pix"
    u = build_generator("unet", 1, S, in_channels=1, ngf=8)
    save_generator(u, p2p / "generator.safetensors")
    d = build_patchgan(2, S, 8, None, "batch")
    save_checkpoint({"method": {"players": {"discriminator": d.state_dict()}}}, p2p / "checkpoints" / "last.ckpt")
    clf = save_classifier(build_model("lenet", num_classes=10, in_channels=1, image_size=S, channels=[4, 8], fc=16),
                          tmp / "clf.safetensors", data="fashion-mnist")
    return {"tmp": tmp, "cyclegan": cyc, "pix2pix": p2p, "teacher_g": g, "discs": discs, "p2p_d": d, "clf": clf}


def build(runs, name, pairing="unpaired", **over):
    raw = OmegaConf.to_container(OmegaConf.load(RECIPES / f"{name}.yaml"))
    run = runs["cyclegan" if pairing == "unpaired" else "pix2pix"]
    raw.update({"out_dir": str(runs["tmp"]), "teacher": {"checkpoint": str(run)}, "seed": 0,
                "data": {"name": "toy", "val_size": 0, "batch_size": 4},
                "trainer": {"epochs": 1, "progress": False, "tensorboard": False, "threads": 1}})
    raw["model"]["kwargs"] = {"ngf": 4, "n_blocks": 9} if pairing == "unpaired" else {"ngf": 4}
    raw["eval"] = {**raw["eval"], "extractor": None, "latency": False}
    for term in raw["objective"]["student"].values():
        if "extractor" in term:
            term["extractor"] = str(runs["clf"])
    return METHODS.get("i2i-distill")(load_run_config([raw, over]), spec(pairing))


def x_fixed(n=4, seed=1):
    return torch.rand(n, 1, S, S, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_student_starts_from_the_teachers_strongest_channels(runs):
    """load_pretrained_weight (resnet_9blocks branch), transcribed with numpy: at each conv the input channels
    kept by the layer before, then the outputs of largest sum |W| (ConvTranspose2d: axes swapped); a residual
    block's second conv maps back onto the stream's channels; the last conv keeps every output."""
    m = build(runs, "i2i_gan_compression")
    T = {k: v.detach().numpy() for k, v in runs["teacher_g"].state_dict().items()}
    St = {k: v.detach().numpy() for k, v in m.eval_model().state_dict().items()}

    def top(q, k):
        return np.argsort(-q, kind="stable")[:k]

    def conv(name, cin, k, out=None):
        w = T[f"{name}.weight"][:, cin]
        o = top(np.abs(w).sum((1, 2, 3)), k) if out is None else out
        np.testing.assert_array_equal(St[f"{name}.weight"], w[o])
        np.testing.assert_array_equal(St[f"{name}.bias"], T[f"{name}.bias"][o])
        return o

    idx = conv("stem.1", np.arange(1), 4)
    idx = conv("downs.0.0", idx, 8)
    idx = conv("downs.1.0", idx, 16)
    for b in range(9):
        hidden = conv(f"blocks.{b}.body.1", idx, 16)
        conv(f"blocks.{b}.body.5", hidden, 16, out=idx)
    for u, k in (("ups.0.conv", 8), ("ups.1.conv", 4)):
        w = T[f"{u}.weight"][idx]
        o = top(np.abs(w).sum((0, 2, 3)), k)
        np.testing.assert_array_equal(St[f"{u}.weight"], w[:, o])
        np.testing.assert_array_equal(St[f"{u}.bias"], T[f"{u}.bias"][o])
        idx = o
    np.testing.assert_array_equal(St["head.1.weight"], T["head.1.weight"][:, idx])
    np.testing.assert_array_equal(St["head.1.bias"], T["head.1.bias"])


def test_student_of_the_teachers_width_computes_the_teachers_images():
    """A channel permutation of the teacher is the teacher (instance and batch norm alike)."""
    for norm in ("instance", "batch"):
        torch.manual_seed(0)
        t = build_generator("resnet_gen", 1, S, in_channels=1, ngf=6, n_blocks=3, norm=norm).eval()
        s = build_generator("resnet_gen", 1, S, in_channels=1, ngf=6, n_blocks=3, norm=norm).eval()
        for p in t.parameters():
            p.data.normal_(0, 0.1)
        transfer_teacher_channels(t, s)
        x = x_fixed()
        assert torch.allclose(s(x), t(x), atol=1e-5), norm
    with pytest.raises(ValueError, match="ngf <= the teacher's"):
        transfer_teacher_channels(s, build_generator("resnet_gen", 1, S, in_channels=1, ngf=8, n_blocks=3, norm=norm))
    with pytest.raises(ValueError, match="resnet_gen"):
        transfer_teacher_channels(build_generator("unet", 1, S, in_channels=1, ngf=8),
                                  build_generator("unet", 1, S, in_channels=1, ngf=4))


def test_discriminator_starts_from_the_teachers_of_the_output_domain(runs):
    """restore_D_path: the student's D holds the teacher run's output-domain D (CycleGAN: disc_b, the judge of
    G: A -> B; pix2pix: its conditional discriminator), width/depth/norm read off it; its map at 28 px > 1x1."""
    for name, pairing, want in (("i2i_gan_compression", "unpaired", runs["discs"]["disc_b"]),
                                ("i2i_cagc", "paired", runs["p2p_d"])):
        m = build(runs, name, pairing)
        assert set(m.players) == {"student", "discriminator"}
        D = m.players["discriminator"]
        got, ref = D.state_dict(), want.state_dict()
        assert list(got) == list(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
        assert D.n_layers == 2 and D.output_shape[1] > 1  # 28 px: a 5x5 map of patches
        assert not all(torch.equal(got[k], runs["discs"]["disc_a"].state_dict()[k])
                       for k in runs["discs"]["disc_a"].state_dict() if k in got)


def test_student_patchgan_at_28px_is_a_map_of_patches(runs):
    """Without disc_init the depth follows the image size: 2 at 28 px, a [B, 1, 5, 5] map (not 1x1)."""
    m = build(runs, "i2i_cat", players={"disc_init": None, "student_init": "random", "ndf": 8})
    D = m.players["discriminator"]
    out = D(x_fixed())
    assert out.shape == (4, 1, 5, 5) and out.shape[-1] > 1
    with pytest.raises(ConfigError, match="n_layers = 3 leaves no patch on 28x28"):
        build(runs, "i2i_cat", players={"disc_init": None, "n_layers": 3})


def test_bad_starts_are_refused_before_training(runs, tmp_path):
    with pytest.raises(ConfigError, match="student_init = 'teacher'.*resnet_gen"):
        build(runs, "i2i_cagc", "paired", players={"student_init": "teacher"})
    with pytest.raises(FileNotFoundError, match="disc_init.*no GAN run checkpoint"):
        build(runs, "i2i_cat", players={"disc_init": str(tmp_path)})
    with pytest.raises(ConfigError, match="disc_init.*does not fit"):
        build(runs, "i2i_cat", players={"ndf": 16})
    with pytest.raises(ConfigError, match="disc_init.*no\\s+gan term"):
        build(runs, "i2i_cat", objective={"student": {"gan": {"weight": 0.0}}})


def _hooked(net, names, x):
    """``net(x)`` and the outputs of the modules ``names`` (forward hooks, as the official mapping_layers)."""
    acts, hooks = {}, []
    mods = dict(net.named_modules())
    for n in names:
        hooks.append(mods[n].register_forward_hook(lambda mod, i, o, n=n: acts.__setitem__(n, o)))
    try:
        out = net(x)
    finally:
        for h in hooks:
            h.remove()
    return out, [acts[n] for n in names]


#: GAN-Compression's mapping_layers 'model.%d' % i for i in range(9, 21, 3) of resnet_9blocks: the ReLU after the
#: second down-sampling conv (model.9) and the outputs of blocks 3, 6, 9 (model.12, .15, .18), in kdlab's names
MAPPED = ["downs.1", "blocks.2", "blocks.5", "blocks.8"]


def _student_loss(m, x):
    """The recipe's student loss as kdlab computes it (the objective of one training step)."""
    batch = Batch(x=x, target=x_fixed(len(x), 7))
    t = m.objective.teacher_outputs(m.frozen["teacher"], x, batch)
    s = m.players["student"](x)
    return {k: float(v.detach()) for k, v in m.student_terms("student", s, t, batch).items()}


def test_gan_compression_student_loss_equals_the_official_formula(runs):
    """backward_G (unaligned): L1(S, T) * 10 + GANLoss('lsgan')(D(S), True) + 0.01 * sum_l F.mse_loss(netA_l(S_l), T_l)."""
    m = build(runs, "i2i_gan_compression")
    x = x_fixed()
    got = _student_loss(m, x)
    term = m.players["student"].objective.terms["gc_distill"]
    assert term.pairs == [("down2", "down2"), ("block3", "block3"), ("block6", "block6"), ("block9", "block9")]
    w = torch.cat([A.weight.detach().flatten() for A in term.loss.adapters])  # init_net(netA): N(0, 0.02), bias 0
    assert abs(float(w.std()) - 0.02) < 0.004 and all(float(A.bias.detach().abs().max()) == 0 for A in term.loss.adapters)
    assert [(A.in_channels, A.out_channels) for A in term.loss.adapters] == [(16, 32)] * 4  # fs * 4 -> ft * 4
    with torch.no_grad():
        S_img, s_acts = _hooked(m.eval_model(), MAPPED, x)
        T_img, t_acts = _hooked(m.frozen["teacher"], MAPPED, x)
        D = m.players["discriminator"]
        distill = sum(F.mse_loss(F.conv2d(a, A.weight, A.bias), b) for a, b, A in zip(s_acts, t_acts, term.loss.adapters))
        ref = 10 * (S_img - T_img).abs().mean() + ((D(S_img) - 1) ** 2).mean() + 0.01 * distill
    assert got["loss"] == pytest.approx(float(ref), rel=1e-5)
    assert got["gc_distill"] == pytest.approx(float(0.01 * distill), rel=1e-5)


def _ka(X, Y):
    """CAT utils/common.py KA, transcribed: <XX^T, YY^T>_F / (||XX^T||_F ||YY^T||_F), X reshaped [n, chw]."""
    X_, Y_ = X.reshape(X.shape[0], -1), Y.reshape(Y.shape[0], -1)
    Xv, Yv = X_ @ X_.T, Y_ @ Y_.T
    return (Xv * Yv).sum() / ((Xv ** 2).sum() * (Yv ** 2).sum()) ** 0.5


def test_cat_student_loss_equals_the_official_formula(runs):
    """backward_G (unaligned, distill_G_loss_type ka): L1(S, T) * 5 + lsgan + 1.0 * sum_l -KA(S_l, T_l)."""
    m = build(runs, "i2i_cat")
    x = x_fixed()
    got = _student_loss(m, x)
    with torch.no_grad():
        S_img, s_acts = _hooked(m.eval_model(), MAPPED, x)
        T_img, t_acts = _hooked(m.frozen["teacher"], MAPPED, x)
        ka = sum(-_ka(a, b) for a, b in zip(s_acts, t_acts))
        ref = 5 * (S_img - T_img).abs().mean() + ((m.players["discriminator"](S_img) - 1) ** 2).mean() + ka
    # -KA sums to about -L while the rest is about +L: the total cancels, so compare in absolute float32 units
    assert got["loss"] == pytest.approx(float(ref), abs=1e-5)
    assert got["kernel_alignment"] == pytest.approx(float(ka), rel=1e-5)


def test_cagc_student_loss_equals_the_official_formula(runs):
    """KD_loss (Output_Only, content-aware): 3 * mean|M T - M S| + 3 * mean LPIPS(M S, M T), with the pix2pix
    host's non-saturating game (g_nonsaturating_loss = softplus(-D)); LPIPS here on the classifier's conv1
    (Zhang et al. eq. 1 with unit weights), the mask the border-background saliency of the teacher's image."""
    m = build(runs, "i2i_cagc", "paired", objective={"student": {"cagc": {"lpips_layers": ["conv1"]}}})
    x = x_fixed()
    got = _student_loss(m, x)
    from kdlab.data import dataset_spec
    from kdlab.engine import load_network
    from kdlab.models.base import extract_features

    clf, _ = load_network(str(runs["clf"]), dataset_spec("fashion-mnist"))
    fm = dataset_spec("fashion-mnist")
    with torch.no_grad():
        S_img, T_img = m.eval_model()(x), m.frozen["teacher"](x)
        border = torch.cat([T_img[:, :, 0, :], T_img[:, :, -1, :], T_img[:, :, :, 0], T_img[:, :, :, -1]], 2)
        dev = (T_img - border.median(2).values[:, :, None, None]).abs().mean(1, keepdim=True)
        M = (dev > 0.1 * dev.flatten(1).max(1).values[:, None, None, None]).float()

        def conv1(img):
            return extract_features(clf, ((img + 1) / 2 - fm.mean[0]) / fm.std[0], ["conv1"])[1]["conv1"]

        def unit(f):
            return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)

        lp = (unit(conv1(M * S_img)) - unit(conv1(M * T_img))).pow(2).sum(1).mean()
        gan = F.softplus(-m.players["discriminator"](torch.cat([x, S_img], 1))).mean()
        ref = 3 * (M * T_img - M * S_img).abs().mean() + 3 * lp + gan
    assert got["loss"] == pytest.approx(float(ref), rel=1e-5)


@pytest.mark.parametrize("name,d_first", [("i2i_gan_compression", False), ("i2i_cat", True)])
def test_step_order_as_the_official_optimize_parameters(runs, name, d_first):
    """GAN-Compression (resnet_distiller.optimize_parameters): backward_D, backward_G, then both steps, so the
    student's adversarial loss reads D before its update; CAT (inception_distiller): D's step, then the student's
    through the updated D. Both D steps see the student's images of the same forward pass."""
    import copy

    from conftest import CPUFabric

    from kdlab.games.base import unwrap

    m = build(runs, name)
    m.setup(CPUFabric())
    D0, S0 = copy.deepcopy(unwrap(m.players["discriminator"])), copy.deepcopy(m.eval_model())
    x = x_fixed()
    out = m.training_step(Batch(x=x, target=x_fixed(4, 7)), 0)
    D1 = unwrap(m.players["discriminator"])
    assert not all(torch.equal(a, b) for a, b in zip(D0.state_dict().values(), D1.state_dict().values()))
    with torch.no_grad():
        s_img = S0(x)
        d_loss = 0.5 * (((D0(x_fixed(4, 7)) - 1) ** 2).mean() + (D0(s_img) ** 2).mean())  # backward_D, lsgan
        gan = (((D1 if d_first else D0)(s_img) - 1) ** 2).mean()
    assert float(out["loss_d"]) == pytest.approx(float(d_loss), rel=1e-5)
    assert float(out["gan"]) == pytest.approx(float(gan), rel=1e-5)
