"""Pix2Pix and CycleGAN teachers: their losses against independent computations, the cycle loss of
inverse generators, the image pool, the linear schedule, and training steps that lower their losses."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from kdlab.config import ConfigError
from kdlab.data.batch import Batch
from kdlab.data.sets import DataSpec
from kdlab.losses import (
    cycle_consistency_loss,
    identity_loss,
    map_discriminator_loss,
    map_generator_loss,
    pix2pix_generator_loss,
)
from kdlab.methods import METHODS
from kdlab.games.i2i_players import ImagePool
from kdlab.runner import load_run_config

from conftest import CPUFabric

PAIRED = DataSpec("toy-paired", 0, 1, 16, (0.5,), (0.5,), [], pairing="paired", target_channels=1)
UNPAIRED = replace(PAIRED, name="toy-unpaired", pairing="unpaired")


def _np_bce(logits, target):
    z = logits.astype(np.float64)
    return np.mean(np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z))))


def test_map_losses_match_numpy():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(3, 1, 5, 5, generator=g), torch.randn(3, 1, 5, 5, generator=g)
    r, f = real.numpy(), fake.numpy()
    assert float(map_discriminator_loss(real, fake, "vanilla")) == pytest.approx(0.5 * (_np_bce(r, 1) + _np_bce(f, 0)), rel=1e-6)
    assert float(map_discriminator_loss(real, fake, "lsgan")) == pytest.approx(0.5 * (np.mean((r - 1) ** 2) + np.mean(f ** 2)), rel=1e-6)
    assert float(map_generator_loss(fake, "vanilla")) == pytest.approx(_np_bce(f, 1), rel=1e-6)
    assert float(map_generator_loss(fake, "lsgan")) == pytest.approx(np.mean((f - 1) ** 2), rel=1e-6)
    with pytest.raises(ValueError, match="hinge.*accepted"):
        map_generator_loss(fake, "hinge")


def test_pix2pix_generator_loss_is_adversarial_plus_weighted_l1():
    g = torch.Generator().manual_seed(1)
    scores, fake, target = (torch.randn(2, 1, 4, 4, generator=g), torch.rand(2, 3, 8, 8, generator=g) * 2 - 1,
                            torch.rand(2, 3, 8, 8, generator=g) * 2 - 1)
    total, adv, rec = pix2pix_generator_loss(scores, fake, target, lambda_rec=100.0)
    l1 = np.abs(fake.numpy() - target.numpy()).mean()
    assert float(rec) == pytest.approx(l1, rel=1e-6)
    assert float(total) == pytest.approx(_np_bce(scores.numpy(), 1) + 100.0 * l1, rel=1e-6)


def test_cycle_loss_is_zero_for_inverse_generators_and_positive_otherwise():
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    gen = lambda t: -t  # noqa: E731  (an involution: its own inverse)
    assert float(cycle_consistency_loss(x, gen(gen(x)))) == 0.0
    assert float(cycle_consistency_loss(x, 0.5 * x)) == pytest.approx(float((0.5 * x).abs().mean()), rel=1e-6)
    assert float(identity_loss(x, x)) == 0.0


def test_image_pool_fills_then_swaps_and_returns_the_batch_size():
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).reshape(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and len(pool.images) == 4
    new = torch.full((64, 1, 1, 1), 9.0)
    out = pool.query(new)
    old = int((out < 9).sum())
    assert out.shape == new.shape and 0 < old <= 4  # a stored image comes back at most once per slot...
    assert sorted(float(i) for i in torch.cat(pool.images).flatten()).count(9.0) == old  # ...and its slot keeps the new one
    assert torch.equal(ImagePool(0).query(new), new)


def test_linear_schedule_is_constant_then_decays_linearly():
    from omegaconf import OmegaConf

    from kdlab.engine.optim import build_scheduler

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, OmegaConf.create({"scheduler": "linear", "decay_start": 4}), 8)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # the pix2pix rule: 1 - max(0, e + 1 - start) / (epochs - start + 1), applied after epoch e
    assert lrs == pytest.approx([1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2])


def _config(tmp_path, method, model=None, **players):
    return load_run_config([{
        "name": method, "method": method, "seed": 0, "out_dir": str(tmp_path),
        "model": {"name": "unet" if method == "pix2pix" else "resnet_gen",
                  "kwargs": {"ngf": 4} if method == "pix2pix" else {"ngf": 4, "n_blocks": 1}},
        "players": {"ndf": 4, "n_layers": 1, **players},
        **({"model": model} if model else {}),
        "optim": {"name": "adam", "lr": 2e-3, "betas": [0.5, 0.999], "weight_decay": 0.0, "scheduler": "linear"},
        "trainer": {"epochs": 1, "progress": False, "tensorboard": False, "threads": 1},
    }])


def _method(cfg, spec):
    m = METHODS.get(cfg.method)(cfg, spec)
    m.setup(CPUFabric())
    m.train()
    return m


def _paired_batch(n=8, seed=0):
    """Smooth images; targets are a fixed function of inputs (a sign flip), so the L1 to the ground truth can fall."""
    coarse = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    x = torch.nn.functional.interpolate(coarse, size=16, mode="bilinear", align_corners=False)
    return Batch(x=x, target=-x, index=torch.arange(n))


def test_pix2pix_steps_lower_the_l1_to_the_ground_truth(tmp_path):
    torch.manual_seed(0)
    m = _method(_config(tmp_path, "pix2pix"), PAIRED)
    first = [float(m.training_step(_paired_batch(seed=s), s)["g_l1_image"]) for s in range(3)]
    for s in range(3, 60):
        out = m.training_step(_paired_batch(seed=s), s)
    assert set(out) >= {"loss", "loss_d", "d_gan", "loss_g", "g_gan", "g_l1_image"}
    assert float(out["g_l1_image"]) < 0.6 * np.mean(first)


def test_cyclegan_steps_lower_the_cycle_loss_and_train_all_four_players(tmp_path):
    torch.manual_seed(0)
    m = _method(_config(tmp_path, "cyclegan", pool_size=4), UNPAIRED)
    before = {n: [p.detach().clone() for p in mod.parameters()] for n, mod in m.players.items()}
    first = float(m.training_step(_paired_batch(seed=0), 0)["cycle"])
    for s in range(1, 40):
        out = m.training_step(_paired_batch(seed=s), s)
    assert float(out["cycle"]) < 0.6 * first
    for n, mod in m.players.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[n], mod.parameters())), n
    state = m.state_dict()
    assert state["pools"]["disc_b"]["images"].shape == (4, 1, 16, 16)


def test_teachers_refuse_the_wrong_data(tmp_path):
    with pytest.raises(ConfigError, match="classification data set"):
        METHODS.get("pix2pix")(_config(tmp_path, "pix2pix"), replace(PAIRED, pairing=None))
    with pytest.raises(ConfigError, match="unpaired task; method 'pix2pix' trains on paired"):
        METHODS.get("pix2pix")(_config(tmp_path, "pix2pix"), UNPAIRED)
    with pytest.raises(ConfigError, match="objective.generator.identity needs domains of equal channels.*1 to 3 channels"):
        METHODS.get("cyclegan")(_config(tmp_path, "cyclegan"), replace(UNPAIRED, target_channels=3))
    with pytest.raises(ConfigError, match="n_layers = 3 leaves no patch on 16x16.*1..2"):
        METHODS.get("pix2pix")(_config(tmp_path, "pix2pix", n_layers=3), PAIRED)
    cfg = _config(tmp_path, "pix2pix", model={"name": "dcgan", "kwargs": {}})
    with pytest.raises(ConfigError, match="'dcgan' is not an image-to-image generator; accepted: .*unet"):
        METHODS.get("pix2pix")(cfg, PAIRED)


def test_hinge_loss_matches_numpy():
    from kdlab.losses import hinge_discriminator_loss

    r, f = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.5])
    want = np.mean(np.maximum(0, 1 - r.numpy())) + np.mean(np.maximum(0, 1 + f.numpy()))
    assert float(hinge_discriminator_loss(r, f)) == pytest.approx(want)


def test_sagan_teacher_plays_the_hinge_game_with_a_sagan_critic(tmp_path):
    """The unconditional row of the VEM paper (Table 3): SAGAN generator and critic in ``kdlab train-gan``."""
    from kdlab.data import dataset_spec

    cfg = load_run_config([{
        "name": "sagan", "method": "gan", "seed": 0, "out_dir": str(tmp_path), "data": {"val_size": 0},
        "model": {"name": "sagan", "kwargs": {"ngf": 8, "latent_dim": 16}},
        "objective": {"generator": {"gan": {"mode": "hinge"}}, "discriminator": {"gan": {"mode": "hinge"}}},
        "players": {"disc_d": 8, "disc_lr": 4e-4}, "eval": {"n_samples": 100, "kid_subset_size": 50},
        "optim": {"name": "adam", "lr": 1e-4, "betas": [0.0, 0.9], "weight_decay": 0.0, "scheduler": "none"},
        "trainer": {"epochs": 1, "progress": False, "tensorboard": False, "threads": 1},
    }])
    m = _method(cfg, dataset_spec("fashion-mnist"))
    disc = m.players["discriminator"]
    assert disc.arch == "sagan" and disc.ndf == 8
    assert m.g_objective.terms["gan"].cfg.mode == m.game.objective.terms["gan"].cfg.mode == "hinge"
    d0 = [p.detach().clone() for p in disc.parameters()]
    out = m.training_step(Batch(x=torch.randn(6, 1, 28, 28)), 0)
    assert torch.isfinite(out["loss"]) and any(not torch.equal(a, b) for a, b in zip(d0, disc.parameters()))
    assert {"loss_d", "d_gan", "loss_g"} <= set(out)
    with pytest.raises(ValueError, match="not options of generator 'sagan'; accepted: latent_dim, ngf"):
        load = dict(cfg.model.kwargs)
        METHODS.get("gan")(load_run_config([{**_plain(cfg), "model": {"name": "sagan", "kwargs": {**load, "d": 4}}}]),
                           dataset_spec("fashion-mnist"))


def _plain(cfg):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg)


@pytest.fixture(scope="module")
def fashion_classifier(tmp_path_factory):
    """A small Fashion-MNIST classifier: the output domain's extractor of edges2fashion."""
    from kdlab.runner import train

    tmp = tmp_path_factory.mktemp("clf")
    cfg = load_run_config([{
        "name": "clf", "method": "teacher", "seed": 0, "out_dir": str(tmp),
        "data": {"n_per_class": 100, "val_size": 500, "max_test": 500},
        "model": {"name": "mlp", "kwargs": {"hidden": [64]}},
        "optim": {"name": "adam", "lr": 0.002, "weight_decay": 0.0, "scheduler": "none"},
        "trainer": {"epochs": 2, "progress": False, "tensorboard": False, "threads": 2},
        "eval": {"latency": False, "noise_sigmas": [0.0]},
    }])
    return train(cfg)


def test_pix2pix_run_on_edges2fashion_lowers_the_mae_and_reports_every_metric(tmp_path, fashion_classifier):
    """A real (short) Pix2Pix run through ``kdlab train-gan`` (routed by the paired task): the test MAE to the
    ground truth falls below the untrained generator's, and the summary holds FID/KID, SSIM and accuracy."""
    import json

    from kdlab.cli import main
    from kdlab.data import build_datasets
    from kdlab.games.i2i_players import build_image_generator
    from kdlab.metrics.translation import paired_errors, translate

    args = ["train-gan", "data.name=edges2fashion", "model.name=unet", "model.kwargs.ngf=8", "data.n_per_class=40",
            "data.val_size=200", "data.max_test=300", "data.batch_size=16", "players.ndf=8", "players.n_layers=2",
            f"eval.extractor={fashion_classifier}", "eval.kid_subset_size=50", "eval.kid_subsets=5",
            "optim.name=adam", "optim.lr=0.001", "optim.weight_decay=0", "optim.scheduler=linear",
            "trainer.epochs=2", "trainer.progress=false", "trainer.tensorboard=false", "trainer.threads=2",
            "eval.latency=false", f"out_dir={tmp_path}", "name=p2p"]
    assert main(args) == 0
    run = tmp_path / "p2p"
    s = json.loads((run / "summary.json").read_text())
    assert s["method"] == "pix2pix" and s["task"]["pairing"] == "paired"
    t = s["translation"]
    assert {"fid", "kid", "mae", "ssim", "domain_accuracy"} <= set(t) and len(t["domain_accuracy"]["per_class"]) == 10
    data = build_datasets("edges2fashion", val_size=200, n_per_class=40, max_test=300)
    torch.manual_seed(0)
    cfg = load_run_config([{"model": {"name": "unet", "kwargs": {"ngf": 8}}}])
    untrained = build_image_generator(cfg, 1, 1, 28)
    before = paired_errors((f, y) for _, f, y, _ in translate(untrained, data.test, 100))["mae"]
    assert t["mae"] < 0.8 * before
    report = (run / "report.md").read_text()
    assert "image-to-image" in report and "samples/translations.png" in report
    assert (run / "samples" / "epoch_002.png").is_file() and (run / "teacher.safetensors").is_file()


def test_cyclegan_run_on_fashion2digits(tmp_path):
    """``kdlab train-gan`` on an unpaired task routes to CycleGAN and exports the A -> B generator."""
    import json

    from kdlab.cli import main
    from kdlab.engine.generators import load_generator

    args = ["train-gan", "data.name=fashion2digits", "model.name=resnet_gen", "model.kwargs.ngf=4",
            "model.kwargs.n_blocks=1", "data.n_per_class=10", "data.val_size=50", "data.max_test=100",
            "data.batch_size=10", "players.ndf=4", "players.n_layers=2", "players.pool_size=5", "optim.name=adam",
            "optim.lr=0.001", "optim.weight_decay=0", "trainer.epochs=1", "trainer.progress=false",
            "trainer.tensorboard=false", "trainer.threads=2", "eval.latency=false", f"out_dir={tmp_path}", "name=cg"]
    assert main(args) == 0
    s = json.loads((tmp_path / "cg" / "summary.json").read_text())
    assert s["method"] == "cyclegan" and s["task"]["pairing"] == "unpaired" and "mae" not in s["translation"]
    gen = load_generator(tmp_path / "cg")
    assert gen.arch == "resnet_gen" and gen.input_shape == (1, 28, 28)
