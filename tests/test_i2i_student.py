"""The i2i-distill student method: the image-generator builder, the PatchGAN game, validation and sample
grids, a short run of each algorithm's recipe (OMGD, GAN-Compression, CAT, GCC, CAGC) on tiny synthetic
paired / unpaired data that lowers the student's distance to the teacher, and its errors."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from kdlab.config import ConfigError
from kdlab.data import Batch
from kdlab.data.sets import DataSpec
from kdlab.engine.checkpoint import save_classifier
from kdlab.engine.generators import save_generator
from kdlab.methods import METHODS
from kdlab.games.gan_players import build_gen
from kdlab.models import build_generator, build_model
from kdlab.runner import load_run_config

from conftest import CPUFabric

S = 16
RECIPES = Path(__file__).resolve().parents[1] / "src" / "kdlab" / "recipes"


def spec(pairing="paired"):
    return DataSpec(name="toy", num_classes=10, in_channels=1, image_size=S, mean=(0.5,), std=(0.5,),
                    pairing=pairing, target_channels=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("i2i")
    torch.manual_seed(0)
    out = {"unet": save_generator(build_generator("unet", 1, S, in_channels=1, ngf=8), tmp / "unet.safetensors"),
           "resnet_gen": save_generator(build_generator("resnet_gen", 1, S, in_channels=1, ngf=8, n_blocks=3),
                                        tmp / "resnet.safetensors"),
           "clf": save_classifier(build_model("lenet", num_classes=10, in_channels=1, image_size=S, channels=[4, 8],
                                              fc=16), tmp / "clf.safetensors", data="fashion-mnist")}
    # the teacher run's conditional PatchGAN (GCC's D^t), as a Pix2Pix run's checkpoint holds it
    from kdlab.engine.checkpoint import save_checkpoint
    from kdlab.games.i2i_players import build_patchgan

    d_t = build_patchgan(2, S, 8, None, "batch").state_dict()
    out["unet_disc"] = tmp / "unet_disc.ckpt"
    save_checkpoint({"method": {"players": {"discriminator": d_t}}}, out["unet_disc"])
    return tmp, out


def blobs(n, seed):
    """Smooth synthetic source images in [-1, 1]: a Gaussian blob per image at a random place."""
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g) * (S - 6) + 3
    yy, xx = torch.meshgrid(torch.arange(S).float(), torch.arange(S).float(), indexing="ij")
    d = (yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2
    return (2 * torch.exp(-d / 8) - 1)[:, None]


def method(tmp, teacher, recipe=None, pairing="paired", **over):
    raw = OmegaConf.to_container(OmegaConf.load(RECIPES / recipe)) if recipe else {
        "name": "s", "method": "i2i-distill", "model": {"name": "unet", "kwargs": {"ngf": 4}},
        "objective": {"student": {"l1_image": {"weight": 1.0}}}}
    raw.update({"out_dir": str(tmp), "teacher": {"checkpoint": str(teacher)}, "seed": 0,
                "data": {"name": "toy", "val_size": 0, "batch_size": 8},
                "optim": {"name": "adam", "lr": 0.003, "betas": [0.5, 0.999], "weight_decay": 0.0, "scheduler": "none"},
                "trainer": {"epochs": 1, "progress": False, "tensorboard": False, "threads": 1}})
    raw["eval"] = {**raw.get("eval", {}), "latency": False}
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    cfg = load_run_config([raw])
    m = METHODS.get("i2i-distill")(cfg, spec(pairing))
    m.setup(CPUFabric())
    m.train()
    return m


@torch.no_grad()
def mse_to_teacher(m, x):
    s = m.eval_model()
    was = s.training
    s.eval()
    out = float(((s(x) - m.frozen["teacher"](x)) ** 2).mean())
    s.train(was)
    return out


@torch.no_grad()
def objective_to_teacher(m, x):
    """The student's objective (its weighted terms) against the teacher on ``x``, every network in eval mode."""
    student = m.players["student"]
    was = student.training
    student.eval()
    t = m.objective.teacher_outputs(m.frozen["teacher"], x, Batch(x=x))
    out = float(m.objective(student(x), t, Batch(x=x))["loss"])
    student.train(was)
    return out


CASES = [  # recipe, generator, pairing, extractor keys to point at the test classifier
    ("i2i_omgd_frozen.yaml", "unet", "paired", [("perceptual", "extractor"), ("style", "extractor")]),
    ("i2i_omgd_unpaired.yaml", "resnet_gen", "unpaired", [("perceptual", "extractor"), ("style", "extractor")]),
    ("i2i_gan_compression.yaml", "resnet_gen", "unpaired", []),
    ("i2i_cat.yaml", "resnet_gen", "unpaired", []),
    ("i2i_gcc.yaml", "unet", "paired", []),
    ("i2i_cagc.yaml", "unet", "paired", [("cagc", "extractor")]),
]


@pytest.mark.parametrize("recipe,arch,pairing,ext", CASES, ids=[c[0] for c in CASES])
def test_recipe_student_gets_closer_to_the_teacher(recipe, arch, pairing, ext, files):
    """The recipe as it is (its distillation terms and the game) trains with finite losses and logs both players;
    its distillation terms bring the student closer to the teacher. Closeness is measured without the game: the
    teacher here is a random network, so the discriminator's real images are no teacher outputs and the
    adversarial term pulls the student away from it (on unpaired data the ratio swings from 0.3 to 2.9 with the
    initialisation). A recipe whose distillation reads the discriminator (GCC) is measured with it. The students start
    at random and the discriminator afresh (the recipes' starts from the teacher run: tests/test_fidelity_unpaired.py)."""
    from kdlab.terms import TERMS

    tmp, f = files
    raw = OmegaConf.to_container(OmegaConf.load(RECIPES / recipe))
    terms = raw["objective"]["student"]
    for term, key in ext:
        terms[term][key] = str(f["clf"])
    if "downs.4.0" in str(terms.get("channel_distill", {}).get("layers")):  # OMGD's U-Net layers need 5 stages; 16 px has 4
        terms["channel_distill"]["layers"] = [["downs.2.0", "downs.2.0"], ["ups.1.0", "ups.1.0"]]
    kw = {"ngf": 4} if arch == "unet" else {"ngf": 4, "n_blocks": 3}
    x_val = blobs(16, 99)
    x, y = blobs(64, 1), blobs(64, 2)
    reads_d = any("critic" in TERMS.get(n).requires for n in terms if n != "gan")
    no_game = float(terms.get("gan", {}).get("weight", 1.0)) == 0  # OMGD's student plays no game
    for game in ((True,) if reads_d else (False,) if no_game else (True, False)):
        torch.manual_seed(0)  # each case's own student and discriminator, whatever ran before it
        # without the game, also without the ground-truth terms (the targets here are no teacher outputs)
        objective = terms if game else {**terms, "gan": {"weight": 0.0}, **{
            n: {**v, "weight": 0.0} for n, v in terms.items() if v.get("target") == "ground_truth"}}
        d_t = {"teacher_disc": str(f["unet_disc"])} if "gcc" in terms else {}
        gates = {} if game else {"disc_gates": None}  # GCC's gated D exists only with the game
        gate_terms = {n: {**v, "weight": 0.0} for n, v in raw["objective"].get("discriminator_gates", {}).items()}
        m = method(tmp, f[arch], recipe, pairing, model={"name": arch, "kwargs": kw},
                   objective={"student": objective, **({} if game else {"discriminator_gates": gate_terms})},
                   players={"ndf": 8, "disc_init": None, "student_init": "random", **d_t, **gates},
                   eval={"extractor": None})
        before, first = mse_to_teacher(m, x_val), None
        obj_before = objective_to_teacher(m, x_val) if no_game else None
        for step in range(40):
            i = (step * 8) % 64
            out = m.training_step(Batch(x=x[i:i + 8], target=y[i:i + 8]), step)
            assert torch.isfinite(out["loss"])
            first = out["loss_g"] if first is None else first
        if game:
            assert {"loss_d", "d_gan", "gan", "loss_g"} <= set(out)
        else:
            assert "discriminator" not in m.players
        if no_game:  # OMGD has no pixel distance: its own objective (the distance it defines) on held-out inputs
            assert objective_to_teacher(m, x_val) < 0.9 * obj_before
        elif (reads_d or not game) and "gcc" in terms:
            # GCC on Pix2Pix has no L1 to the teacher's image: its feature distances fall (the U-Nets' images start
            # within 3e-5 MSE of each other here, too close to measure a pull towards the teacher)
            assert float(out["loss_g"]) < 0.8 * float(first)
        elif reads_d or not game:
            assert mse_to_teacher(m, x_val) < 0.6 * before


def test_game_trains_the_conditional_discriminator_and_logs(files):
    tmp, f = files
    m = method(tmp, f["unet"], objective={"student": {"l1_image": {"weight": 1.0}, "gan": {"weight": 0.5}}},
               players={"ndf": 8})
    D = m.players["discriminator"]
    assert D.in_channels == 2  # paired: cat(source, image)
    d0 = [p.detach().clone() for p in D.parameters()]
    images = {}  # the student's image of its step
    m.eval_model().register_forward_hook(lambda mod, i, o: images.__setitem__("s", o.detach().clone()))
    x = blobs(8, 1)
    out = m.training_step(Batch(x=x, target=blobs(8, 2)), 0)
    assert any(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))
    assert {"loss_d", "d_gan", "gan", "l1_image", "loss_g"} <= set(out)
    with torch.no_grad():  # the non-saturating BCE of every patch of the stepped D on cat(x, student image), weight 0.5
        scores = copy.deepcopy(D)(torch.cat([x, images["s"]], 1))
        adv = float(F.binary_cross_entropy_with_logits(scores, torch.ones_like(scores)))
    assert float(out["gan"]) == pytest.approx(0.5 * adv, rel=1e-4)
    assert float(out["loss_g"]) == pytest.approx(float(out["l1_image"]) + float(out["gan"]), rel=1e-5)
    assert all(p.grad is None for p in m.frozen["teacher"].parameters())
    u = method(tmp, f["unet"], pairing="unpaired", players={"ndf": 8})
    assert u.players["discriminator"].in_channels == 1  # unpaired: the image alone


def test_validation_and_sample_grid(files):
    tmp, f = files
    m = method(tmp, f["unet"], objective={"student": {"l1_image": {"weight": 1.0}, "gan": {"weight": 0.0}}})
    assert "discriminator" not in m.players
    m.training_step(Batch(x=blobs(8, 1), target=blobs(8, 2)), 0)
    x = blobs(10, 3)
    val = m.validate([Batch(x=x[:6]), Batch(x=x[6:])], torch.device("cpu"))
    assert val["val/mse_to_teacher"] == pytest.approx(mse_to_teacher(m, x), rel=1e-5)
    from kdlab.data import TranslationDataset

    u8 = lambda t: ((t + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
    m.on_fit_start(TranslationDataset(u8(x[:5]), u8(blobs(5, 4)), "paired"), tmp, [5])
    m.on_epoch_end(0)
    from PIL import Image

    img = Image.open(tmp / "s" / "samples" / "epoch_001.png")
    assert img.size[1] == 4 * (S + 2) + 2  # four rows: input, teacher, student, ground truth


def test_builder_routes_on_input_kind_and_refuses_the_other_kind(files):
    tmp, f = files
    cfg = OmegaConf.create({"method": "i2i-distill", "model": {"name": "unet", "kwargs": {"ngf": 4}}})
    gen = build_gen(cfg, DataSpec("t", 10, 1, S, (0.5,), (0.5,), pairing="paired", target_channels=3), inputs="image")
    assert (gen.in_channels, gen.out_channels, gen.image_size) == (1, 3, S)
    with pytest.raises(ConfigError, match="'dcgan' is a latent generator.*accepted: .*unet"):
        build_gen(OmegaConf.create({"method": "i2i-distill", "model": {"name": "dcgan", "kwargs": {}}}), spec(),
                  inputs="image")
    with pytest.raises(ValueError, match=r"model.kwargs \['in_channels'\].*channels and image size come from the data"):
        build_gen(OmegaConf.create({"method": "i2i-distill", "model": {"name": "unet", "kwargs": {"in_channels": 3}}}),
                  spec(), inputs="image")


def test_bad_input(files):
    tmp, f = files
    with pytest.warns(UserWarning, match=r"student \(ngf 16\) is wider than its teacher \(ngf 8\)"):
        method(tmp, f["unet"], model={"name": "unet", "kwargs": {"ngf": 16}})
    with pytest.raises(ConfigError, match="needs an image-to-image translation data set"):
        load = load_run_config([{"name": "s", "method": "i2i-distill", "out_dir": str(tmp),
                                 "teacher": {"checkpoint": str(f["unet"])}, "model": {"name": "unet"}}])
        METHODS.get("i2i-distill")(load, spec(None))
    with pytest.raises(ConfigError, match="nothing to train"):
        method(tmp, f["unet"], objective={"student": {"gan": {"weight": 0.0}}})
    with pytest.raises(ConfigError, match=r"needs teacher_critic.*is no Pix2Pix run directory; set players\.teacher_disc"):
        method(tmp, f["unet"], objective={"student": {"gcc": {}, "gan": {"weight": 0.0}}})
    with pytest.raises(ConfigError, match="target = 'ground_truth' needs targets.*unpaired"):
        method(tmp, f["unet"], pairing="unpaired", objective={"student": {"l1_image": {"target": "ground_truth"}}})
    from kdlab.engine import GeneratorMismatchError

    rgb = save_generator(build_generator("unet", 3, S, in_channels=1, ngf=4), tmp / "rgb.safetensors")
    with pytest.raises(GeneratorMismatchError, match=r"outputs images of shape \(3, 16, 16\).*\(1, 16, 16\)"):
        method(tmp, rgb)


def test_gcc_on_sagan_reads_the_teacher_discriminator_through_gan_compression(tmp_path):
    """The unconditional row of the VEM paper (Table 3): a SAGAN student of ``gan-compression`` with the GCC
    term on the features of the teacher GAN run's discriminator (``players.teacher_disc``, frozen), its own
    gated discriminator from scratch. The teacher's discriminator is never updated (GCC's D^t); the term falls."""
    from kdlab.data import dataset_spec
    from kdlab.engine.checkpoint import save_checkpoint
    from kdlab.models import build_discriminator

    torch.manual_seed(0)
    teacher = save_generator(build_generator("sagan", 1, 28, ngf=16, latent_dim=8), tmp_path / "t.safetensors")
    d_teacher = build_discriminator("sagan", in_channels=1, image_size=28, ndf=16)
    save_checkpoint({"method": {"players": {"discriminator": d_teacher.state_dict()}}}, tmp_path / "last.ckpt")
    raw = OmegaConf.to_container(OmegaConf.load(RECIPES / "gcc_sagan.yaml"))
    over = {"out_dir": str(tmp_path), "name": "g", "teacher": {"checkpoint": str(teacher)},
            "model": {"name": "sagan", "kwargs": {"ngf": 8, "latent_dim": 8}}, "eval": {"extractor": None}}
    cfg = load_run_config([raw, over, {"players": {"disc_d": 16, "teacher_disc": str(tmp_path / "last.ckpt")}}])
    m = METHODS.get("gan-compression")(cfg, dataset_spec("fashion-mnist"))
    m.setup(CPUFabric())
    m.train()
    D_t = m.frozen["teacher_discriminator"]
    assert all(torch.equal(a, b) for a, b in zip(D_t.state_dict().values(), d_teacher.state_dict().values()))
    gcc = m.players["student"].objective.terms["gcc"]
    assert gcc.d_layers == ["l2", "attn2"]
    first = None
    for step in range(15):
        out = m.training_step(Batch(x=torch.rand(6, 1, 28, 28) * 2 - 1), step)
        assert torch.isfinite(out["loss"]) and "gcc" in out and "loss_gates" in out
        first = float(out["gcc"]) if first is None else first
    assert float(out["gcc"]) < first
    assert all(torch.equal(a, b) for a, b in zip(D_t.state_dict().values(), d_teacher.state_dict().values()))
    bad = load_run_config([raw, over, {"players": {"disc_d": 32, "teacher_disc": str(tmp_path / "last.ckpt")}}])
    with pytest.raises(ValueError, match="players.teacher_disc = .*does not fit the configured one"):
        METHODS.get("gan-compression")(bad, dataset_spec("fashion-mnist"))
