"""The fidelity table's VEM and MosaicKD rows (``docs/fidelity.md``), each pinned: the recipes' and the terms'
published settings (terms, weights, inputs, players), VEM's paired mode in a real image-to-image student, and
MosaicKD's epoch counted as the published code counts it (optimizer steps per player in one epoch).

Sources: VEM has no official code (paper 003 sec. 5.3 and A.3; the public ports' settings in
``papers/NOTES.md``); MosaicKD is zju-vipa/MosaicKD ``kd_mosaic.py`` (``main_worker``, ``train``) and
``engine/models/generator.py`` (``Generator``, ``PatchDiscriminator``)."""
from __future__ import annotations

import copy
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn.utils import parametrize

from conftest import CPUFabric, small_config
from kdlab.data import Batch
from kdlab.data.sets import DataSpec
from kdlab.runner import load_run_config, train

RECIPES = Path(__file__).resolve().parents[1] / "src" / "kdlab" / "recipes"


# ============================================================================================ VEM


def test_vem_row_langevin_and_ebm_defaults():
    """Rows 'Langevin chain' and 'EBM update': K 10, eta 100, sigma 0.005 (sec. 5.3; ports coupling: separate step
    and noise), EBM Adam 1e-4 (sec. 5.3) with betas (0, 0.999) and the squared-energy weight 0.05 (ports),
    lambda_MI 0.05 (ports; Table 6 range 0.005-0.2)."""
    from kdlab.terms.vem import VEMTerm

    c = VEMTerm.Config()
    assert (c.weight, c.target, c.layers, c.steps, c.step_size, c.noise, c.coupling) == (
        0.05, "teacher", [], 10, 100.0, 0.005, "ports")
    assert (c.reg, c.lr, list(c.betas)) == (0.05, 1e-4, [0.0, 0.999])


def test_vem_row_ebm_architecture():
    """Row 'EBM architecture': on images the term builds Fig. 4's convolutional EBM with C = 32 (A.3) on the pair
    (t, s) concatenated, every weighted layer spectrally normalised."""
    from kdlab.models.ebm import ConvEnergy, weighted_layers
    from kdlab.terms import TermContext, build_objective

    ctx = TermContext(method="i2i-distill", kind="generator", student=nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)),
                      teacher=nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), student_input=(1, 16, 16),
                      teacher_input=(1, 16, 16), provides=frozenset({"teacher", "images", "features", "targets"}))
    ebm = build_objective({"vem": {}}, ctx).terms["vem"].players()["ebm"][0]
    assert isinstance(ebm, ConvEnergy) and ebm.stem.in_channels == 2 and ebm.stem.out_channels == 32
    assert all(parametrize.is_parametrized(m, "weight") for m in weighted_layers(ebm))


def test_vem_tables_pair_the_real_output_on_paired_data_and_the_teacher_otherwise():
    """Row 'MI target': vem-table1 (paired, Pix2Pix) sets ``target: ground_truth`` (sec. 5.3); the unpaired and
    unconditional tables keep the teacher's output; Table 6's lambda_MI per algorithm; eta 100 (the default)."""
    from kdlab.experiments.specs import row_configs

    lam = {"omgd": 0.1, "cat": 0.005, "gc": 0.1, "gcc": 0.1, "cagc": 0.05}  # VEM paper Table 6
    for scale in ("small", "full"):
        rows = {**{f"omgd-paired-{r}": c for r, c in row_configs("vem-table1", scale).items()},
                **row_configs("vem-table2", scale), **row_configs("vem-table3", scale)}
        assert len(rows) == 4 * 6
        for name, cfg in rows.items():
            algo, addon = name.rsplit("-", 1)
            terms = cfg.objective.student
            if addon == "alone":
                assert not {"vid", "crd", "vem"} & set(terms), name
                continue
            add = terms[addon]
            assert add.weight == lam[algo.replace("-paired", "")], name
            if addon == "vem":
                assert add.step_size == 100.0, name
                assert add.target == ("ground_truth" if algo == "omgd-paired" else "teacher"), name
            else:  # the other MI add-ons have no ground-truth mode
                assert "target" not in add, name


def test_vem_ablation_keeps_the_ports_step_size():
    """The DCGAN/KD ablation (``vem-ablation`` and ``vem-ablation-classifier``, not tables of the paper) ran with
    the ports' eta 50: pinned in every VEM row of both specs at both scales (the classifier's eta-1 row aside)."""
    from kdlab.experiments.specs import row_configs

    for scale in ("small", "full"):
        rows = {f"{col}/{r}": c for col in ("d4", "d8", "lambda") for r, c in row_configs("vem-ablation", scale, col).items()}
        rows.update({f"clf/{r}": c for r, c in row_configs("vem-ablation-classifier", scale).items()})
        vem = {r: c.objective.student.vem.step_size for r, c in rows.items() if "vem" in c.objective.student}
        assert len(vem) == 8 and vem.pop("clf/vem-eta1") == 1.0 and set(vem.values()) == {50.0}, (scale, vem)
    assert OmegaConf.load(RECIPES / "gan_student_vem.yaml").objective.student.vem.step_size == 50.0


def test_vem_paired_mode_in_an_image_to_image_student(tmp_path):
    """An i2i-distill student on paired data builds ``vem`` with ``target: ground_truth`` (refused before) and its
    EBM sees the pair (batch.target, student output) while the chain starts at the student's output."""
    from kdlab.engine.generators import save_generator
    from kdlab.methods import METHODS
    from kdlab.models import build_generator

    torch.manual_seed(0)
    teacher = save_generator(build_generator("unet", 1, 16, in_channels=1, ngf=8), tmp_path / "unet.safetensors")
    cfg = load_run_config([{
        "name": "s", "method": "i2i-distill", "out_dir": str(tmp_path), "seed": 0, "teacher": {"checkpoint": str(teacher)},
        "model": {"name": "unet", "kwargs": {"ngf": 4}}, "data": {"name": "toy", "val_size": 0, "batch_size": 4},
        "objective": {"student": {"l1_image": {"weight": 1.0, "target": "ground_truth"}, "gan": {"weight": 0.0},
                                  "vem": {"weight": 0.1, "target": "ground_truth", "channels": 4, "steps": 2,
                                          "noise": 0.0, "step_size": 0.5}}},
        "optim": {"name": "adam", "lr": 1e-3, "betas": [0.5, 0.999], "weight_decay": 0.0, "scheduler": "none"},
        "trainer": {"epochs": 1, "progress": False, "tensorboard": False}, "eval": {"latency": False}}])
    spec = DataSpec(name="toy", num_classes=10, in_channels=1, image_size=16, mean=(0.5,), std=(0.5,), pairing="paired",
                    target_channels=1)
    m = METHODS.get("i2i-distill")(cfg, spec)
    m.setup(CPUFabric())
    m.train()
    term = m.objective.terms["vem"]
    seen = []
    energies = term._energies
    term._energies = lambda t, tt, s, ebm=None: (seen.append((t.clone(), tt.clone(), s.detach().clone())),
                                                 energies(t, tt, s, ebm))[1]
    x, y = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1
    ebm = copy.deepcopy(term.players()["ebm"][0])  # theta of the chain (the step then updates the EBM)
    out = m.training_step(Batch(x=x, target=y), 0)
    assert math.isfinite(float(out["loss"])) and "ebm" in term.players()
    t, t_tilde, s = seen[0]
    assert torch.equal(t, y)  # the real output, not the teacher's
    # two noiseless ports steps x <- x - eta grad_x E(x, s) from t~_0 = s, with the chain's theta held fixed
    # (spectral norm's power iteration once per chain, as the term's parametrize.cached)
    x_k = s.clone()
    with parametrize.cached():
        for _ in range(2):
            x_k = x_k.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(ebm(x_k, s).sum(), x_k)
            x_k = x_k.detach() - 0.5 * g
    assert torch.allclose(t_tilde, x_k, atol=1e-5)
    assert torch.equal(seen[1][0], y)  # the EBM's own update (eq. 6) reads the same pair


# ======================================================================================= MosaicKD


def _recipe():
    return load_run_config([str(RECIPES / "mosaickd_cifar100.yaml")])


def test_mosaickd_recipe_student_generator_discriminator_terms():
    """Rows 'student KD', 'adv', 'align', 'local', 'balance', 'D': the published command's weights
    (``--adv 1 --align 1 --local 1 --balance 10 --T 1``), kd_mosaic.py ``train``."""
    cfg = _recipe()
    st, gen, dis = (OmegaConf.to_container(cfg.objective[p]) for p in ("student", "generator", "discriminator"))
    assert {k: v["weight"] for k, v in st.items() if v["weight"] > 0} == {"kd": 1.0}
    assert st["kd"]["temperature"] == 1.0
    assert {k: v["weight"] for k, v in gen.items()} == {"align": 1.0, "entropy_balance": 10.0, "adversarial": 1.0,
                                                         "gan": 1.0}
    assert gen["adversarial"]["mode"] == "kl" and gen["entropy_balance"]["log_base"] == "2"
    assert (gen["gan"]["mode"], gen["gan"]["reduction"]) == ("vanilla", "patch_sum")
    assert {k: (v["weight"], v["mode"], v["reduction"]) for k, v in dis.items()} == {"gan": (1.0, "vanilla", "patch_sum")}


def test_mosaickd_recipe_players_and_budget():
    """Rows 'players' and 'budget': generator/patch D of the code plan (published widths, init, biases), Adam 1e-3
    (0.5, 0.999) for G and D, student SGD 0.1 / 0.9 / 1e-4, batch 256, 200 epochs of the published loop: one
    D step, one G step and 5 student steps per OOD batch = 200 * 5 * len(DataLoader(CIFAR-10 train, 256)) =
    196,000 student updates."""
    from kdlab.games.synthesizer import epoch_passes
    from kdlab.models.gan import build_discriminator, build_generator

    cfg = _recipe()
    pc = cfg.players
    assert (pc.generator, pc.latent_dim, pc.discriminator, pc.synth_every, pc.synth_steps, pc.epoch_pass,
            pc.train_generator) == ("mosaic", 100, "patch", 5, 1, "discriminator", True)
    for o in (pc.g_optim, pc.d_optim):
        assert (o.name, o.lr, list(o.betas), o.weight_decay) == ("adam", 1e-3, [0.5, 0.999], 0.0)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert (cfg.data.batch_size, cfg.trainer.epochs, cfg.data.synth_real, cfg.data.augment) == (256, 200, "cifar10", True)
    batches = len(torch.utils.data.DataLoader(range(50000), batch_size=256))  # kd_mosaic.py's train_loader
    assert epoch_passes(cfg) * batches * cfg.trainer.epochs == 200 * 5 * batches == 196000
    # engine/models/generator.py: Generator(nz=100, ngf=64, img_size=32), PatchDiscriminator(nc=3, ndf=128)
    g = build_generator("mosaic", out_channels=3, image_size=32, latent_dim=100, **dict(pc.generator_kwargs))
    d = build_discriminator("patch", in_channels=3, image_size=32, **dict(pc.disc_kwargs))
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.bias is not None) for c in convs] == [(256, 128, False), (128, 64, False),
                                                                                     (64, 3, True)]
    assert g.project.out_features == 256 * 8 * 8 and g.project.bias is not None
    dconvs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.bias is not None) for c in dconvs] == [
        (3, 128, 4, 2, True), (128, 256, 4, 2, False), (256, 1, 1, 1, False)]
    assert g.init_scheme == d.init_scheme == "default"  # kd_mosaic.py applies no init of its own


def test_mosaickd_players_keep_pytorch_default_init():
    """PyTorch's default init (the published code's): a conv's weights uniform in +-1/sqrt(fan_in) (kaiming_uniform
    with a = sqrt(5)), BatchNorm weights 1; the DCGAN init (N(0, 0.02), BN N(1, 0.02)) only when asked for."""
    from kdlab.models.gan import build_generator

    torch.manual_seed(0)
    g = build_generator("mosaic", out_channels=3, image_size=32, latent_dim=100)
    last = [m for m in g.modules() if isinstance(m, nn.Conv2d)][-1].weight.detach()
    bound = 1 / math.sqrt(64 * 9)
    assert float(last.abs().max()) <= bound and float(last.std()) > 0.5 * bound / math.sqrt(3)
    assert all(torch.all(m.weight == 1) for m in g.modules() if isinstance(m, nn.BatchNorm2d))
    dc = build_generator("mosaic", out_channels=3, image_size=32, latent_dim=100, init="dcgan")
    last = [m for m in dc.modules() if isinstance(m, nn.Conv2d)][-1].weight.detach()
    assert abs(float(last.std()) - 0.02) < 0.005


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fid_teacher")
    return train(load_run_config([small_config(tmp, name="teacher", trainer={"epochs": 1})]))


def _counted_run(tmp_path, teacher, monkeypatch, name, n=50, **over):
    """One epoch of the mosaickd recipe on ``n`` OOD digits in batches of 16; returns (optimizer steps per player,
    the student's batch sizes, the run directory)."""
    from kdlab.cli import resolve_config
    from kdlab.games.base import Method

    counts, sizes = Counter(), []
    step_optimizer = Method.step_optimizer

    def counting(self, player, loss):
        counts[player] += 1
        return step_optimizer(self, player, loss)

    monkeypatch.setattr(Method, "step_optimizer", counting)
    from kdlab.methods import METHODS

    distill = METHODS.get("distill")
    training_step = distill.training_step
    monkeypatch.setattr(distill, "training_step", lambda self, b, s: (sizes.append(len(b)), training_step(self, b, s))[1])
    players = {"generator_kwargs": {"ngf": 8}, "latent_dim": 16, "disc_kwargs": {"ndf": 8}, **over.pop("players", {})}
    run = train(load_run_config([resolve_config("mosaickd"), small_config(
        tmp_path, name=name, method="distill", teacher={"checkpoint": str(teacher)},
        model={"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 16}},
        data={"synth_real": "mnist-digits", "transfer_n": n, "batch_size": 16, "val_size": 100, **over.pop("data", {})},
        players=players, objective=over.pop("objective", {}), trainer={"epochs": 1})]))
    return counts, sizes, run


def test_one_mosaickd_epoch_runs_the_published_updates(tmp_path, teacher, monkeypatch):
    """kd_mosaic.py ``train``: ``for i, (real, _) in enumerate(train_loader)``: one D step, one G step, then
    ``for _ in range(5)`` student steps, each on cat(G(z), a fresh OOD batch). Over the same loader (50 images,
    batch 16: 4 batches) one kdlab epoch steps D 4, G 4 and the student 20 times, on 16 + 16 images each."""
    counts, sizes, _ = _counted_run(tmp_path, teacher, monkeypatch, "published")
    iters = len(torch.utils.data.DataLoader(range(50), batch_size=16))
    assert iters == 4 and dict(counts) == {"discriminator": iters, "generator": iters, "student": 5 * iters}
    assert sizes == [32] * (5 * iters)


def test_epoch_pass_student_keeps_the_old_epoch(tmp_path, teacher, monkeypatch):
    """``players.epoch_pass: student``: one student pass over the OOD batches (4 steps), a synthesis every 5th."""
    counts, _, _ = _counted_run(tmp_path, teacher, monkeypatch, "student", players={"epoch_pass": "student"})
    assert dict(counts) == {"discriminator": 1, "generator": 1, "student": 4}


def _spec_row(slug: str):
    """A row of ``kdlab reproduce mosaickd``'s spec at small scale (recipes/experiments/mosaickd.yaml)."""
    from kdlab.compare import load_spec
    from kdlab.experiments.specs import SPEC_DIR

    return next(r for r in load_spec(SPEC_DIR / "mosaickd.yaml", scale="small").rows if r.slug == slug)


def test_frozen_generator_control_isolates_mosaicking(tmp_path, teacher, monkeypatch):
    """Row 'control': OOD + an untrained generator that never steps, no discriminator; the student still gets
    cat(G_0(z), OOD) for the same updates."""
    counts, sizes, run = _counted_run(tmp_path, teacher, monkeypatch, "frozen", players={
        "train_generator": False, "discriminator": None},  # the experiment's FROZEN_G, as sections
        objective={"generator": {"gan": {"weight": 0.0}}, "discriminator": {"gan": {"weight": 0.0}}})
    assert dict(counts) == {"student": 20} and sizes == [32] * 20
    row = _spec_row("frozen-g-ood")  # the experiment's row: the mosaickd row's sets + exactly these
    assert row.recipe.stem == "mosaickd" and set(row.set) - set(_spec_row("mosaickd-ood").set) == {
        "players.train_generator=false", "players.discriminator=null", "objective.generator.gan.weight=0",
        "objective.discriminator.gan.weight=0"}


def test_entropy_selection_row_runs_mosaickd_on_the_highest_entropy_subset(tmp_path, teacher, monkeypatch):
    """Row 'OOD subset' (Algorithm 1, kd_mosaic.py ``prepare_ood_data``: top-k teacher entropy): the experiment's
    mosaickd-entropy row, and a run that selects 32 of 48 digits: 2 batches, 10 student updates per epoch."""
    row = _spec_row("mosaickd-entropy-ood")
    assert row.recipe.stem == "mosaickd" and {"data.transfer_select=entropy", "data.transfer_n=4000",
                                              "data.transfer_k=2000"} <= set(row.set)
    counts, _, run = _counted_run(tmp_path, teacher, monkeypatch, "entropy", n=48,
                                  data={"transfer_select": "entropy", "transfer_k": 32})
    assert dict(counts) == {"discriminator": 2, "generator": 2, "student": 10}
    import json

    assert json.loads((run / "summary.json").read_text())["data"]["selection"]["rule"] == "entropy"


def test_frozen_generator_with_a_discriminator_is_refused(tmp_path, teacher):
    """The control has no synthesis: a discriminator would never learn, so the config is refused before training."""
    from kdlab.cli import resolve_config
    from kdlab.config import ConfigError

    cfg = load_run_config([resolve_config("mosaickd"), small_config(
        tmp_path, name="bad", method="distill", teacher={"checkpoint": str(teacher)},
        model={"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 16}},
        data={"synth_real": "mnist-digits", "transfer_n": 32, "batch_size": 16, "val_size": 100},
        players={"generator_kwargs": {"ngf": 8}, "latent_dim": 16, "disc_kwargs": {"ndf": 8}, "train_generator": False},
        trainer={"epochs": 1})])
    with pytest.raises(ConfigError, match=r"train_generator = false.*players.discriminator = 'patch'.*discriminator=null"):
        train(cfg)
