"""Relation-based losses (RKD, PKT, SP, CC) against numpy computations of the papers' formulas, their
defining invariances, gradients, bad input, and as terms in real distill and gan-compression runs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.data.batch import Batch
from kdlab.config import ConfigError
from kdlab.engine import load_checkpoint
from kdlab.engine.generators import save_generator
from kdlab.losses.cc import cc_correlation, cc_loss
from kdlab.losses.pkt import pkt_loss
from kdlab.losses.rkd import rkd_loss
from kdlab.losses.sp import sp_loss
from kdlab.models import build_generator
from kdlab.runner import load_run_config, train
from conftest import gan_student_config, small_config

RELATIONAL = ("rkd", "pkt", "sp", "cc")


def _rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _orthogonal(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))  # a random orthogonal matrix (Haar)


# ---------------------------------------------------------------------------------------------
# numpy references, written from the papers' formulas with explicit loops
def np_huber(x):
    a = np.abs(x)
    return np.where(a <= 1.0, 0.5 * x * x, a - 0.5)


def np_rkd(s, t, wd=25.0, wa=50.0):
    def potentials(e):
        b = len(e)
        dist = np.zeros((b, b))
        for i in range(b):
            for j in range(b):
                if i != j:
                    dist[i, j] = math.sqrt(sum((e[i] - e[j]) ** 2))
        dist /= dist.sum() / (b * (b - 1))  # mean over the off-diagonal pairs
        ang = np.zeros((b, b, b))
        for i in range(b):
            for j in range(b):  # the vertex, as the paper writes cos(angle t_i t_j t_k)
                for k in range(b):
                    if i != j and k != j:
                        u, v = e[i] - e[j], e[k] - e[j]
                        ang[i, j, k] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
        return dist, ang

    ds, as_ = potentials(s)
    dt, at = potentials(t)
    return wd * np_huber(ds - dt).mean() + wa * np_huber(as_ - at).mean()


def np_pkt(s, t, eps=1e-7):
    def cond(x):
        b = len(x)
        k = np.empty((b, b))
        for i in range(b):
            for j in range(b):
                k[i, j] = (x[i] @ x[j] / ((np.linalg.norm(x[i]) + eps) * (np.linalg.norm(x[j]) + eps)) + 1) / 2
        return k / k.sum(axis=1, keepdims=True)

    p, q = cond(t), cond(s)
    return np.mean(p * np.log((p + eps) / (q + eps)))


def np_sp(fs, ft):
    def g(f):
        q = f.reshape(len(f), -1)
        gram = q @ q.T
        return gram / np.linalg.norm(gram, axis=1, keepdims=True)

    b = len(fs)
    return np.sum((g(ft) - g(fs)) ** 2) / b**2


def np_cc(zs, zt, kernel="gaussian", gamma=0.4, order=2):
    def corr(z):
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        c = z @ z.T
        if kernel == "bilinear":
            return c
        return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * c**p for p in range(order + 1))

    return np.sum((corr(zs) - corr(zt)) ** 2) / len(zs) ** 2


# ---------------------------------------------------------------------------------------------
# values against numpy
@pytest.mark.parametrize("wd,wa", [(25.0, 50.0), (1.0, 2.0), (1.0, 0.0), (0.0, 3.0)])
def test_rkd_matches_numpy(wd, wa):
    s, t = _rand(6, 5, seed=1), _rand(6, 9, seed=2, scale=3.0)  # different widths
    got = rkd_loss(s, t, distance_weight=wd, angle_weight=wa).item()
    assert got == pytest.approx(np_rkd(s.numpy(), t.numpy(), wd, wa), rel=1e-9)
    # far apart relations use the linear part of the Huber loss
    s2 = torch.cat([s[:5], s[5:] * 40.0])
    assert rkd_loss(s2, t, wd, wa).item() == pytest.approx(np_rkd(s2.numpy(), t.numpy(), wd, wa), rel=1e-9)


def test_pkt_matches_numpy():
    s, t = _rand(7, 4, seed=3), _rand(7, 11, seed=4)
    assert pkt_loss(s, t).item() == pytest.approx(np_pkt(s.numpy(), t.numpy()), rel=1e-9)


def test_sp_matches_numpy_maps_and_vectors():
    s, t = _rand(5, 3, 4, 4, seed=5), _rand(5, 6, 2, 2, seed=6)
    assert sp_loss(s, t).item() == pytest.approx(np_sp(s.numpy(), t.numpy()), rel=1e-9)
    v = _rand(5, 10, seed=7)  # a vector student against a map teacher
    assert sp_loss(v, t).item() == pytest.approx(np_sp(v.numpy(), t.numpy()), rel=1e-9)


@pytest.mark.parametrize("kernel,gamma,order", [("gaussian", 0.4, 2), ("gaussian", 1.3, 5), ("bilinear", 0.4, 2)])
def test_cc_matches_numpy(kernel, gamma, order):
    s, t = _rand(6, 5, seed=8), _rand(6, 3, seed=9)
    got = cc_loss(s, t, kernel=kernel, gamma=gamma, order=order).item()
    assert got == pytest.approx(np_cc(s.numpy(), t.numpy(), kernel, gamma, order), rel=1e-9)


def test_cc_taylor_series_converges_to_the_gaussian_kernel():
    z = _rand(5, 4, seed=10)
    zn = (z / z.norm(dim=1, keepdim=True)).numpy()
    exact = np.exp(-0.7 * ((zn[:, None] - zn[None]) ** 2).sum(-1))
    np.testing.assert_allclose(cc_correlation(z, "gaussian", 0.7, 30).numpy(), exact, rtol=1e-10)


def test_float32_close_to_float64():
    s, t = _rand(8, 6, seed=11), _rand(8, 6, seed=12)
    for f in (rkd_loss, pkt_loss, sp_loss, cc_loss):
        assert f(s.float(), t.float()).item() == pytest.approx(f(s, t).item(), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# defining properties
@pytest.mark.parametrize("f", [rkd_loss, pkt_loss, sp_loss, cc_loss])
def test_zero_for_identical(f):
    x = _rand(6, 5, seed=13)
    assert f(x, x.clone()).item() == pytest.approx(0.0, abs=1e-12)


def test_rkd_invariant_to_rotation_translation_and_scaling_of_either_side():
    s, t = _rand(7, 6, seed=14), _rand(7, 6, seed=15)
    base = rkd_loss(s, t).item()
    assert base > 0.1

    def move(x, seed, scale):
        q = torch.from_numpy(_orthogonal(x.shape[1], seed))
        return scale * x @ q + _rand(1, x.shape[1], seed=seed + 1, scale=5.0)

    for s2, t2 in ((move(s, 20, 3.7), t), (s, move(t, 30, 0.2)), (move(s, 40, 11.0), move(t, 50, 0.05))):
        assert rkd_loss(s2, t2).item() == pytest.approx(base, rel=1e-9)
    assert rkd_loss(move(t, 60, 2.5), t).item() == pytest.approx(0.0, abs=1e-12)


def test_pkt_and_cc_see_directions_only():
    s, t = _rand(6, 4, seed=16), _rand(6, 4, seed=17)
    scale = torch.rand(6, 1, dtype=torch.float64) * 10 + 0.1  # positive per-example scale
    assert pkt_loss(s * scale, t).item() == pytest.approx(pkt_loss(s, t).item(), rel=1e-6)
    assert cc_loss(s, t * scale).item() == pytest.approx(cc_loss(s, t).item(), rel=1e-9)


def test_sp_only_sees_the_batch_gram_matrix():
    s, t = _rand(6, 5, seed=18), _rand(6, 4, seed=19)
    # t @ Q^T with orthonormal columns Q [9, 4]: 9 channels, the same B x B Gram matrix
    q = torch.from_numpy(_orthogonal(9, 21)[:, :4])
    wide = t @ q.t()
    assert sp_loss(s, wide).item() == pytest.approx(sp_loss(s, t).item(), rel=1e-9)
    assert sp_loss(wide, t).item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# gradients
@pytest.mark.parametrize("f", [rkd_loss, pkt_loss, sp_loss, cc_loss])
def test_teacher_gets_no_gradient_and_student_does(f):
    s = _rand(6, 5, seed=22).requires_grad_(True)
    t = _rand(6, 5, seed=23).requires_grad_(True)
    f(s, t).backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_student_gradient_matches_finite_differences():
    s, t = _rand(5, 3, seed=24).requires_grad_(True), _rand(5, 4, seed=25)
    for f in (rkd_loss, pkt_loss, sp_loss, cc_loss):
        assert torch.autograd.gradcheck(lambda x: f(x, t), (s,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("f", [rkd_loss, pkt_loss, sp_loss, cc_loss])
def test_degenerate_batches_give_finite_values_and_gradients(f):
    for s in (torch.zeros(4, 3), _rand(1, 3).float(), torch.ones(4, 3)):  # zero rows, one example, coincident
        s = s.clone().requires_grad_(True)
        value = f(s, _rand(len(s), 3).float())
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(s.grad).all()
    assert f(_rand(1, 3), _rand(1, 3)).item() == 0.0  # no relation in a batch of one


# ---------------------------------------------------------------------------------------------
# bad input
@pytest.mark.parametrize("f", [rkd_loss, pkt_loss, cc_loss])
def test_vector_losses_refuse_maps_and_name_shapes(f):
    with pytest.raises(ValueError, match=r"\[B, D\].*to_vector.*\(4, 2, 3, 3\).*\(4, 5\)"):
        f(torch.randn(4, 2, 3, 3), torch.randn(4, 5))


@pytest.mark.parametrize("f", [rkd_loss, pkt_loss, sp_loss, cc_loss])
def test_bad_batches_and_dtypes(f):
    with pytest.raises(ValueError, match=r"batch sizes differ.*\(4, 5\).*\(3, 5\)"):
        f(torch.randn(4, 5), torch.randn(3, 5))
    with pytest.raises(ValueError, match="floating-point"):
        f(torch.ones(4, 5, dtype=torch.long), torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        f(torch.randn(4), torch.randn(4, 5))


def test_bad_hyper_parameters_name_the_value():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"distance_weight.*-1"):
        rkd_loss(s, t, distance_weight=-1)
    with pytest.raises(ValueError, match=r"angle_weight.*nan"):
        rkd_loss(s, t, angle_weight=float("nan"))
    with pytest.raises(ValueError, match="both 0"):
        rkd_loss(s, t, 0, 0)
    with pytest.raises(ValueError, match=r"eps.*0"):
        pkt_loss(s, t, eps=0)
    with pytest.raises(ValueError, match=r"'poly'.*'bilinear'.*'gaussian'"):
        cc_loss(s, t, kernel="poly")
    with pytest.raises(ValueError, match=r"gamma.*-0.5"):
        cc_loss(s, t, gamma=-0.5)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=r"order must be an int >= 1"):
            cc_loss(s, t, order=bad)


# ---------------------------------------------------------------------------------------------
# terms built by hand: the values are the pure losses summed over pairs
def _objective(terms):
    from kdlab.models import build_model
    from kdlab.terms import Student, TermContext, build_objective

    torch.manual_seed(0)
    s_net = build_model("lenet", channels=[4, 8], fc=32)
    t_net = build_model("lenet", channels=[8, 16], fc=48)
    ctx = TermContext(method="distill", kind="classifier", student=s_net, teacher=t_net, student_input=(1, 28, 28),
                      teacher_input=(1, 28, 28), provides=frozenset({"teacher", "logits", "features"}), num_classes=10)
    obj = build_objective(terms, ctx)
    x = torch.randn(6, 1, 28, 28)
    return obj, Student(s_net, obj)(x), obj.teacher_outputs(t_net, x, Batch(x=x)), t_net


def test_terms_sum_the_pure_losses_over_their_pairs():
    from kdlab.losses.adapters import to_vector

    terms = {"rkd": {"layers": [["pool2", "pool2"], ["output", "fc1"]]}, "pkt": {"pool": "avg", "layers": [["conv2", "conv2"]]},
             "sp": {}, "cc": {"kernel": "bilinear", "layers": [["fc1", "pool1"]]}}
    obj, s, t, _ = _objective(terms)
    # the output needs no hook; every named feature is exposed once
    assert obj.student_features == ["pool2", "conv2", "fc1"] and obj.teacher_features == ["pool2", "fc1", "conv2", "pool1"]
    values = obj(s, t, None)
    f, g = s.features, t.features
    flat = lambda x: x.flatten(1)  # noqa: E731
    expect = {"rkd": rkd_loss(flat(f["pool2"]), flat(g["pool2"])) + rkd_loss(s.out, g["fc1"]),
              "pkt": pkt_loss(to_vector(f["conv2"], "avg"), to_vector(g["conv2"], "avg")),
              "sp": sp_loss(s.out, t.out), "cc": cc_loss(f["fc1"], flat(g["pool1"]), kernel="bilinear")}
    for name, value in expect.items():
        assert values[name].item() == pytest.approx(value.item(), rel=1e-6), name


def test_cc_heads_train_on_both_sides_and_the_teacher_network_gets_nothing():
    obj, s, t, t_net = _objective({"cc": {"embed_dim": 8, "layers": [["pool2", "pool2"]]}})
    obj(s, t, None)["loss"].backward()
    cc = obj.terms["cc"]
    for head in (cc.embed_s[0], cc.embed_t[0]):
        assert head.linear.weight.grad is not None and head.linear.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in t_net.parameters())


# ---------------------------------------------------------------------------------------------
# terms in real runs
LENET_T = {"name": "lenet", "kwargs": {"channels": [8, 16], "fc": 48}}
LENET_S = {"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 32}}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    mlp = train(load_run_config([small_config(root, name="mlp-t", trainer={"epochs": 1})]))
    lenet = train(load_run_config([small_config(root, name="lenet-t", model=LENET_T, trainer={"epochs": 1})]))
    torch.manual_seed(0)
    gen = save_generator(build_generator("dcgan", 1, 28, d=8, latent_dim=16), root / "tg.safetensors", data="fashion-mnist")
    return {"mlp": mlp, "lenet": lenet, "gen": gen}


def _train_log(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if any(k.startswith("train/") for k in r)][-1]


def _distill(tmp_path, teacher, terms, **kw):
    cfg = small_config(tmp_path, name="s", method="distill", teacher={"checkpoint": str(teacher)},
                       objective={"student": {"ce": {"weight": 1.0}, **terms}},
                       trainer={"epochs": 1, "log_every_n_steps": 1}, **kw)
    return train(load_run_config([cfg]))


def test_all_four_terms_on_the_logits_in_distill(tmp_path, teachers):
    terms = {"rkd": {"weight": 1.0}, "pkt": {"weight": 100.0}, "sp": {"weight": 10.0}, "cc": {"weight": 10.0}}
    log = _train_log(_distill(tmp_path, teachers["mlp"], terms))
    for name in RELATIONAL:
        assert math.isfinite(log[f"train/{name}"]) and log[f"train/{name}"] > 0, name
    assert math.isfinite(log["train/loss"])


def test_named_map_features_of_different_widths_and_cc_embeddings(tmp_path, teachers):
    terms = {"rkd": {"layers": [["pool2", "pool2"]], "pool": "avg", "angle_weight": 0.0},
             "pkt": {"layers": [["fc1", "fc1"]]},
             "sp": {"layers": [["conv1", "pool2"], ["pool2", "fc1"]]},  # other channels, sizes and ranks
             "cc": {"layers": [["pool2", "pool2"]], "embed_dim": 16, "kernel": "bilinear"}}
    run = _distill(tmp_path, teachers["lenet"], terms, model=LENET_S)
    log = _train_log(run)
    for name in RELATIONAL:
        assert math.isfinite(log[f"train/{name}"]) and log[f"train/{name}"] > 0, name
    student = load_checkpoint(run / "checkpoints" / "last.ckpt")["method"]["players"]["student"]
    # both CC heads are the student's modules: trained by its optimizer, saved with it
    assert student["objective.terms.cc.embed_s.0.linear.weight"].shape == (16, 8 * 7 * 7)
    assert student["objective.terms.cc.embed_t.0.linear.weight"].shape == (16, 16 * 7 * 7)


def test_all_four_terms_on_generator_images_and_features(tmp_path, teachers):
    terms = {"mse": {"weight": 1.0}, "rkd": {"weight": 1.0}, "pkt": {"weight": 1.0}, "cc": {"weight": 1.0},
             "sp": {"weight": 1.0, "layers": [["output", "output"], ["net.5", "net.5"]]}}
    run = train(load_run_config([gan_student_config(tmp_path, teachers["gen"], objective={"student": terms})]))
    log = _train_log(run)
    for name in RELATIONAL:
        assert math.isfinite(log[f"train/{name}"]) and log[f"train/{name}"] >= 0, name


def test_term_config_errors_before_training(tmp_path, teachers):
    from kdlab.data import dataset_spec
    from kdlab.methods import METHODS

    def build(terms):
        cfg = load_run_config([small_config(tmp_path, method="distill", teacher={"checkpoint": str(teachers["mlp"])},
                                            objective={"student": terms})])
        return METHODS.get(cfg.method)(cfg, dataset_spec("fashion-mnist"))

    with pytest.raises(ConfigError, match=r"objective.student.rkd.pool.*accepted: avg, flatten"):
        build({"rkd": {"pool": "max"}})
    with pytest.raises(ConfigError, match=r"objective.student.rkd.*both 0"):
        build({"rkd": {"distance_weight": 0, "angle_weight": 0}})
    with pytest.raises(ConfigError, match=r"objective.student.cc.kernel.*accepted: bilinear, gaussian"):
        build({"cc": {"kernel": "poly"}})
    with pytest.raises(ConfigError, match=r"objective.student.cc.gamma.*must be > 0"):
        build({"cc": {"gamma": 0}})
    with pytest.raises(ConfigError, match=r"objective.student.cc.order.*must be >= 1"):
        build({"cc": {"order": 0}})
    with pytest.raises(ConfigError, match=r"term 'sp' in method 'distill': the student unknown feature 'pool9'"):
        build({"sp": {"layers": [["pool9", "fc1"]]}})
    with pytest.raises(ConfigError, match=r"objective.student.pkt.layers entries are \[student feature, teacher feature\]"):
        build({"pkt": {"layers": [["fc1"]]}})
