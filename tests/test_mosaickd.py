"""MosaicKD (the ``mosaickd`` recipe: the synthesizer with a patch discriminator on out-of-domain images): the
generator's and discriminator's losses against closed forms and numpy, the supplement's A.3 identity, the
game's gradient routing, and a short real run (Fashion-MNIST teacher, MNIST digits OOD)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import small_config
from kdlab.config import ConfigError
from kdlab.data import dataset_spec
from kdlab.losses.mosaic import (adversarial_kl, align_loss, balance_loss, gan_value, optimal_discriminator,
                                 patch_bce, patch_discriminator_loss)
from kdlab.models.gan import DISCRIMINATORS, GENERATORS
from kdlab.runner import load_run_config, train

SPEC = dataset_spec("fashion-mnist")
# the MosaicKD models once merged (Table 2 generator, Table 3 patch D), else DCGAN stand-ins
GEN = ({"generator": "mosaic", "generator_kwargs": {"ngf": 16}} if "mosaic" in GENERATORS
       else {"generator": "dcgan", "generator_kwargs": {"d": 8}})


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("base,log", [("e", np.log), ("2", np.log2), ("10", np.log10)])
def test_balance_loss_closed_forms(base, log):
    k = 10
    # a uniform batch mean: -log K, from uniform rows and from one-hot rows covering every class once
    assert float(balance_loss(torch.zeros(3, k), log_base=base)) == pytest.approx(-log(k), rel=1e-6)
    assert float(balance_loss(torch.eye(k), probs=True, log_base=base)) == pytest.approx(-log(k), rel=1e-6)
    # one class for the whole batch: 0 (as probabilities and as saturated logits)
    one = torch.zeros(5, k)
    one[:, 3] = 1.0
    assert float(balance_loss(one, probs=True, log_base=base)) == pytest.approx(0.0, abs=1e-7)
    assert float(balance_loss(one * 200.0, log_base=base)) == pytest.approx(0.0, abs=1e-6)
    # a random batch against numpy: sum_y pbar log pbar
    z = np.random.default_rng(0).normal(size=(7, k)) * 2
    pbar = _softmax(z).mean(0)
    assert float(balance_loss(torch.tensor(z), log_base=base)) == pytest.approx(float((pbar * log(pbar)).sum()), rel=1e-9)
    with pytest.raises(ValueError, match="log_base.*'e', '2', '10'"):
        balance_loss(torch.zeros(2, k), log_base="3")


def test_align_patch_and_adversarial_losses_against_numpy():
    rng = np.random.default_rng(1)
    zt, zs = rng.normal(size=(6, 5)) * 3, rng.normal(size=(6, 5))
    pt, ps = _softmax(zt), _softmax(zs)
    assert float(align_loss(torch.tensor(zt))) == pytest.approx(float(-(pt * np.log(pt)).sum(1).mean()), rel=1e-9)
    kl = float((pt * (np.log(pt) - np.log(ps))).sum(1).mean())
    assert float(adversarial_kl(torch.tensor(zs), torch.tensor(zt))) == pytest.approx(-kl, rel=1e-9)
    pt2, ps2 = _softmax(zt / 3), _softmax(zs / 3)
    kl2 = 9 * float((pt2 * (np.log(pt2) - np.log(ps2))).sum(1).mean())
    assert float(adversarial_kl(torch.tensor(zs), torch.tensor(zt), 3.0)) == pytest.approx(-kl2, rel=1e-9)
    # the teacher's logits are NOT detached: the generator's gradient passes through both networks
    t = torch.tensor(zt, requires_grad=True)
    adversarial_kl(torch.tensor(zs), t).backward()
    assert t.grad.abs().sum() > 0
    # patch BCE: summed over the map, divided by the batch size
    m = rng.normal(size=(4, 1, 3, 5))
    bce1 = np.log1p(np.exp(-m))  # -log sigmoid(m): target 1
    bce0 = np.log1p(np.exp(m))   # -log(1 - sigmoid(m)): target 0
    assert float(patch_bce(torch.tensor(m), 1.0)) == pytest.approx(bce1.sum() / 4, rel=1e-9)
    assert float(patch_bce(torch.tensor(m[:, 0, 0, 0]), 0.0)) == pytest.approx(bce0[:, 0, 0, 0].mean(), rel=1e-9)
    d = patch_discriminator_loss(torch.tensor(m), torch.tensor(m[:2]))
    assert float(d) == pytest.approx(0.5 * (bce1.sum() / 4 + bce0[:2].sum() / 2), rel=1e-9)
    with pytest.raises(ValueError, match="target must be in"):
        patch_bce(torch.tensor(m), 2.0)


def test_optimal_discriminator_and_eq7_jsd_identity():
    """Supplement A.3: D* = p_data / (p_data + p_G) (eq. 6) maximises V (eq. 5), V(G, D*) = -log 4 + 2 JSD (eq. 7)."""
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(6))
    q = rng.dirichlet(np.ones(6))
    q[0], p[5] = 0.0, 0.0  # disjoint mass on some points
    p, q = p / p.sum(), q / q.sum()
    d_star = optimal_discriminator(p, q)
    assert np.allclose(d_star, p / (p + q))
    m = 0.5 * (p + q)
    kl = lambda a, b: float(np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / b), 0.0)))  # noqa: E731
    jsd = 0.5 * kl(p, m) + 0.5 * kl(q, m)
    assert gan_value(p, q, d_star) == pytest.approx(-math.log(4) + 2 * jsd, rel=1e-9)
    for _ in range(20):  # every other D does worse
        d = np.clip(d_star + rng.normal(scale=0.05, size=6), 1e-6, 1 - 1e-6)
        assert gan_value(p, q, d) < gan_value(p, q, d_star)
    # P_G = P_data: D* = 1/2 and V = -log 4 (JSD = 0); torch input gives torch output
    same = optimal_discriminator(torch.tensor(p), torch.tensor(p))
    assert isinstance(same, torch.Tensor) and torch.allclose(same, torch.full_like(same, 0.5))
    assert gan_value(p, p, same.numpy()) == pytest.approx(-math.log(4))


# ----------------------------------------------------------------------------- the method


class _MapD(nn.Module):
    """A tiny patch discriminator: a [B, 1, 7, 7] logit map on 28x28 images."""

    def __init__(self, in_channels=1, image_size=28, width=8, bn=True):
        super().__init__()
        norm = nn.BatchNorm2d(2 * width) if bn else nn.Identity()
        self.net = nn.Sequential(nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(width, 2 * width, 4, 2, 1), norm, nn.LeakyReLU(0.2),
                                 nn.Conv2d(2 * width, 1, 1))

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def map_disc(monkeypatch):
    """Register ``toymap`` (a [B, 1, 7, 7] logit map) for one test."""
    monkeypatch.setitem(DISCRIMINATORS._entries, "toymap", _MapD)
    monkeypatch.setitem(DISCRIMINATORS._help, "toymap", "test patch D")
    return "toymap"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mosaic_teacher")
    return train(load_run_config([small_config(tmp, name="teacher", trainer={"epochs": 1})]))


#: the recipe's generator terms, by the supplement's names: adv, align, local (patch realism), balance
NAMES = {"adv": "adversarial", "align": "align", "local": "gan", "balance": "entropy_balance"}


def _cfg(tmp_path, teacher, data=None, objective=None, **players):
    """The ``mosaickd`` recipe (``distill`` with ``data.transfer: synth``, MNIST digits as ``data.synth_real``) with a
    small student and generator; ``objective`` and ``players`` merge over the recipe's."""
    from kdlab.cli import resolve_config

    return load_run_config([resolve_config("mosaickd"), small_config(
        tmp_path, name="mosaic", method="distill", teacher={"checkpoint": str(teacher)},
        model={"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 32}},
        data={"batch_size": 16, "val_size": 200, **(data or {})}, players={**GEN, **players},
        objective=objective or {})])


def _weights(**w):
    """``objective.generator`` with the supplement's weights (``adv=1.0`` ...), the other terms at 0."""
    return {"generator": {NAMES[k]: {"weight": float(w.get(k, 0.0))} for k in NAMES}}


def _method(tmp_path, teacher, objective=None, **players):
    from lightning_fabric import Fabric

    from kdlab.methods import METHODS

    torch.manual_seed(0)
    m = METHODS.get("distill")(_cfg(tmp_path, teacher, objective=objective, **players), SPEC)
    m.setup(Fabric(accelerator="cpu", devices=1))
    m.train()
    return m


def _grads(module):
    return [p.grad for p in module.parameters()]


def _backward_only(m):
    m.step_optimizer = lambda name, loss: loss.backward()  # keep the gradients, change no weight


@pytest.mark.parametrize("term", sorted(NAMES))
def test_each_generator_term_alone_trains_the_generator_only(tmp_path, teacher, map_disc, term):
    m = _method(tmp_path, teacher, _weights(**{term: 1.0}), discriminator=map_disc)
    _backward_only(m)
    synth = m.synthesizer
    logs = synth.g_step(synth.generate(8, synth.device()))
    gen_grads = [g for g in _grads(m.players["generator"]) if g is not None]
    assert gen_grads and sum(float(g.abs().sum()) for g in gen_grads) > 0
    student = m.players["student"].net
    assert all(g is None for g in _grads(m.frozen["teacher"]))
    assert all(g is None for g in _grads(student))  # frozen during G's step
    assert all(g is None for g in _grads(m.players["discriminator"]))
    assert all(p.requires_grad for p in student.parameters())  # and unfrozen again
    key = f"g_{NAMES[term]}"
    assert key in logs and float(logs["g_loss"]) == pytest.approx(float(logs[key]), rel=1e-6)


def test_generator_terms_match_numpy_on_the_same_images(tmp_path, teacher, map_disc):
    m = _method(tmp_path, teacher, {"generator": {"adversarial": {"weight": 1.0}, "align": {"weight": 2.0},
                                                  "gan": {"weight": 3.0}, "entropy_balance": {"weight": 4.0}}},
                discriminator=map_disc)
    _backward_only(m)
    synth = m.synthesizer
    fake = synth.generate(8, synth.device())
    with torch.no_grad():
        pt = _softmax(m.frozen["teacher"](fake).double().numpy())
        ps = _softmax(m.players["student"].net(fake).double().numpy())
        dmap = m.players["discriminator"](fake).double().numpy()
    pbar = pt.mean(0)
    logs = {k: float(v) for k, v in synth.g_step(fake).items()}  # each term times its weight
    assert logs["g_entropy_balance"] == pytest.approx(4 * float((pbar * np.log2(pbar)).sum()), rel=1e-4)  # recipe: log2
    assert logs["g_align"] == pytest.approx(2 * float(-(pt * np.log(pt)).sum(1).mean()), rel=1e-4)
    assert logs["g_adversarial"] == pytest.approx(-float((pt * np.log(pt / ps)).sum(1).mean()), rel=1e-3, abs=1e-6)
    assert logs["g_gan"] == pytest.approx(3 * float(np.log1p(np.exp(-dmap)).sum() / 8), rel=1e-4)  # patch_sum
    want = sum(logs[f"g_{t}"] for t in NAMES.values())
    assert logs["g_loss"] == pytest.approx(want, rel=1e-5)


def test_discriminator_step_lowers_its_bce_on_a_fixed_toy_problem(tmp_path, teacher, map_disc):
    # the published D optimizer (Adam, betas (0.5, 0.999)) at lr 1e-2 instead of 1e-3: a visible change in 10 steps
    d_optim = {"name": "adam", "lr": 1e-2, "betas": [0.5, 0.999], "weight_decay": 0.0}
    m = _method(tmp_path, teacher, discriminator=map_disc, d_optim=d_optim)
    g = torch.Generator().manual_seed(0)
    real = torch.randn(16, 1, 28, 28, generator=g) * 0.1  # "real": left half bright, right half dark
    real[..., :14] += 2.0
    fake = m.synthesizer.generate(16, m.synthesizer.device()).detach()
    disc = m.players["discriminator"]

    def bce():
        with torch.no_grad():
            return float(patch_discriminator_loss(disc(real), disc(fake)))

    seen = [bce()]
    for _ in range(10):
        m.synthesizer.d_step(real, fake)
        seen.append(bce())
    assert all(b < a for a, b in zip(seen, seen[1:])), seen
    assert seen[-1] < seen[0] - 1.5, seen  # nats per image, summed over the 7 x 7 map
    assert all(g is None for g in _grads(m.players["generator"]))  # fake was detached


def test_regularizer_settings_of_fig1(tmp_path, teacher, map_disc):
    from kdlab.data import Batch
    from kdlab.compare import load_spec
    from kdlab.experiments.specs import SPEC_DIR

    rows = {r.slug: r for r in load_spec(SPEC_DIR / "mosaickd.yaml", scale="small").rows}
    none_sets = [o for o in rows["reg-none-ablation"].set if o not in rows["stride1-ablation"].set]
    assert len(none_sets) == 3
    overrides = {}
    for item in none_sets:  # the experiment's "no discriminator" row, as its dotted overrides
        key, value = item.split("=")
        node = overrides
        parts = key.split(".")
        for k in parts[:-1]:
            node = node.setdefault(k, {})
        node[parts[-1]] = None if value == "null" else float(value)
    none = _method(tmp_path, teacher, overrides["objective"], **overrides["players"])
    assert "discriminator" not in none.players
    logs = none.synthesizer.synthesize(Batch(x=torch.zeros(4, 1, 28, 28)))
    assert "d_loss" not in logs and "g_gan" not in logs and {"g_adversarial", "g_align", "g_entropy_balance"} <= set(logs)
    image = _method(tmp_path, teacher, discriminator="dcgan", disc_kwargs={"d": 8})  # one logit per image
    assert image.players["discriminator"](torch.zeros(2, 1, 28, 28)).shape == (2,)
    patch = _method(tmp_path, teacher, discriminator=map_disc)
    assert patch.players["discriminator"](torch.zeros(2, 1, 28, 28)).shape == (2, 1, 7, 7)
    logs = patch.synthesizer.synthesize(Batch(x=torch.zeros(4, 1, 28, 28)))
    assert {"d_loss", "g_loss", "g_adversarial", "g_align", "g_gan", "g_entropy_balance"} <= set(logs)


def test_refused_configs_name_the_bad_value(tmp_path, teacher, map_disc):
    from kdlab.methods import METHODS

    def build(**kw):
        return METHODS.get("distill")(_cfg(tmp_path, teacher, **kw), SPEC)

    with pytest.raises(ConfigError, match=r"players.discriminator = 'patch'.*set data.synth_real"):
        build(data={"synth_real": None, "steps_per_epoch": 2})
    with pytest.raises(ConfigError, match=r"players.discriminator = 'pach'; accepted: .*dcgan"):
        build(discriminator="pach")
    with pytest.raises(ConfigError, match=r"players.disc_kwargs = \{'widths': 3\} do not fit .*'dcgan'.*accepted: d"):
        build(discriminator="dcgan", disc_kwargs={"widths": 3})
    if "patch" in DISCRIMINATORS:  # the Table 3 patch D: a map at every final stride
        with pytest.raises(ConfigError, match=r"players.disc_kwargs = \{'final_stride': 5\}.*accepted: 1, 2, 3, 4"):
            build(disc_kwargs={"final_stride": 5})
    with pytest.raises(ConfigError, match="objective.generator has no term with a weight > 0"):
        build(objective=_weights())
    with pytest.raises(ConfigError, match=r"objective.generator.gan.reduction = 'patch_sum'.*needs mode = 'vanilla'"):
        build(objective={"generator": {"gan": {"mode": "hinge"}}})


@pytest.mark.timeout(300)
def test_short_real_run_on_mnist_digits(tmp_path, teacher, monkeypatch):
    disc = {"discriminator": "patch", "disc_kwargs": {"ndf": 16}} if "patch" in DISCRIMINATORS else {"discriminator": "toymap"}
    if disc["discriminator"] == "toymap":
        monkeypatch.setitem(DISCRIMINATORS._entries, "toymap", _MapD)
        monkeypatch.setitem(DISCRIMINATORS._help, "toymap", "test patch D")
    terms = {"kd": {"weight": 1.0, "temperature": 1.0}, "logits": {"weight": 0.5}}  # an extra term composes
    cfg = _cfg(tmp_path, teacher, data={"transfer_n": 200, "batch_size": 20}, objective={"student": terms}, **disc)
    run = train(cfg)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = ("train/d_loss", "train/g_loss", "train/g_adversarial", "train/g_align", "train/g_gan",
            "train/g_entropy_balance", "train/kd", "train/logits", "train/loss")
    logged = [r for r in rows if "train/g_loss" in r]
    assert logged
    for r in logged:
        assert all(k in r and math.isfinite(r[k]) for k in keys), r
        assert -10 * math.log2(10) - 1e-4 <= r["train/g_entropy_balance"] <= 1e-5  # weight 10 times [-log2 K, 0]
        assert r["train/loss"] == pytest.approx(r["train/kd"] + r["train/logits"], rel=1e-4)
    assert sorted(p.name for p in (run / "samples").glob("epoch_*.png")) == ["epoch_001.png", "epoch_002.png",
                                                                              "epoch_003.png"]
    s = json.loads((run / "summary.json").read_text())
    assert s["data"]["transfer"] == "synth" and math.isfinite(s["test_acc_best"])
    synth = s["synthesizer"]
    assert synth["discriminator"] == disc["discriminator"] and synth["synth_real"] == "mnist-digits"
    assert synth["objective"]["generator"]["entropy_balance"]["weight"] == 10.0


def test_recipe_holds_the_published_weights_and_ood_source():
    from kdlab.cli import resolve_config

    cfg = load_run_config([resolve_config("mosaickd")])
    g, d, lc = cfg.objective.generator, cfg.objective.discriminator, cfg.players
    assert cfg.method == "distill" and cfg.data.transfer == "synth" and cfg.data.synth_real == "mnist-digits"
    assert cfg.data.name == "fashion-mnist"
    assert (g.adversarial.weight, g.align.weight, g.gan.weight, g.entropy_balance.weight) == (1.0, 1.0, 1.0, 10.0)
    assert (g.adversarial.mode, g.adversarial.temperature, g.entropy_balance.log_base) == ("kl", 1.0, "2")
    assert (g.gan.mode, g.gan.reduction, d.gan.mode, d.gan.reduction) == ("vanilla", "patch_sum", "vanilla", "patch_sum")
    assert lc.synth_every == 5 and lc.discriminator == "patch" and lc.generator == "mosaic"
    assert dict(cfg.objective.student.kd) == {"weight": 1.0, "temperature": 1.0, "reduction": "batchmean", "t_squared": True, "standardize": False}
    assert (lc.d_optim.name, lc.d_optim.lr, list(lc.d_optim.betas)) == ("adam", 1e-3, [0.5, 0.999])
