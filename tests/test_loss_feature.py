"""Feature-map losses of issue 9: FSP (Yim et al. 2017), NST (Huang & Wang 2017), AB (Heo et al. 2019) and
FT (Kim et al. 2018), each against an independent numpy computation of the paper's formula, their defining
properties, bad input, and real distill / gan-compression runs with the terms."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.config import ConfigError
from kdlab.data.batch import Batch
from kdlab.engine import load_checkpoint
from kdlab.losses.ab import ab_loss
from kdlab.losses.fsp import fsp_loss, fsp_matrix
from kdlab.losses.ft import Paraphraser, ft_loss
from kdlab.losses.nst import nst_loss
from kdlab.models import build_model
from kdlab.runner import load_run_config, train
from kdlab.terms import Outputs, TermContext, build_objective
from conftest import gan_student_config, small_config

LENET = {"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 32}}
QUICK = {"n_per_class": 10, "batch_size": 25, "val_size": 100, "max_test": 200}  # 100 examples: 4 steps of 25


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------- numpy references (from the papers)
def np_fsp(f1, f2):
    """Eq. 1 by loops; a larger first map is block-averaged down to the second's size first."""
    b, c1, h1, w1 = f1.shape
    _, c2, h, w = f2.shape
    if h1 > h:
        k = h1 // h
        f1 = f1.reshape(b, c1, h, k, w, k).mean(axis=(3, 5))
    g = np.zeros((b, c1, c2))
    for n in range(b):
        for i in range(c1):
            for j in range(c2):
                g[n, i, j] = sum(f1[n, i, y, x] * f2[n, j, y, x] for y in range(h) for x in range(w)) / (h * w)
    return g


def np_fsp_loss(s1, s2, t1, t2):  # eq. 2: 1/N sum_x ||G_t - G_s||^2
    return np.mean(np.sum((np_fsp(t1, t2) - np_fsp(s1, s2)) ** 2, axis=(1, 2)))


def np_nst(fs, ft, kernel="poly", d=2, c=0.0, sigma2=None):
    def vecs(f):
        v = f.reshape(f.shape[0], f.shape[1], -1)
        return v / np.linalg.norm(v, axis=2, keepdims=True)

    out = []
    for s, t in zip(vecs(fs), vecs(ft)):
        if kernel == "gaussian" and sigma2 is None:
            z = np.concatenate([s, t])
            sig = np.mean([np.sum((a - b) ** 2) for a in z for b in z])
        else:
            sig = sigma2

        def k(x, y):
            if kernel == "linear":
                return x @ y
            if kernel == "poly":
                return (x @ y + c) ** d
            return np.exp(-np.sum((x - y) ** 2) / (2 * sig))

        kk = lambda xs, ys: np.mean([k(x, y) for x in xs for y in ys])  # noqa: E731
        out.append(kk(t, t) + kk(s, s) - 2 * kk(s, t))
    return np.mean(out)


def np_ab(r, t, m=1.0):
    neg = (r + m) ** 2 * ((r > -m) & (t <= 0))
    pos = (r - m) ** 2 * ((r <= m) & (t > 0))
    return neg + pos


def np_ft(fs, ft, p=1):  # eq. 3 per example, batch mean
    unit = lambda f: f.reshape(len(f), -1) / np.linalg.norm(f.reshape(len(f), -1), axis=1, keepdims=True)  # noqa: E731
    d = unit(ft) - unit(fs)
    return np.mean(np.sum(np.abs(d) ** p, axis=1) ** (1 / p))


# --------------------------------------------------------------------------- FSP
def test_fsp_matrix_and_loss_match_numpy_loops():
    s1, s2 = _rand(2, 3, 8, 8, seed=1), _rand(2, 4, 4, 4, seed=2)  # the first map is larger: pooled to 4 x 4
    t1, t2 = _rand(2, 3, 4, 4, seed=3), _rand(2, 4, 4, 4, seed=4)
    np.testing.assert_allclose(fsp_matrix(s1, s2).numpy(), np_fsp(s1.numpy(), s2.numpy()), rtol=1e-10)
    # a larger SECOND map is pooled too (to the first's size): G(a, b) = G(b, a)^T
    np.testing.assert_allclose(fsp_matrix(s2, s1).numpy(), np_fsp(s1.numpy(), s2.numpy()).transpose(0, 2, 1), rtol=1e-10)
    want = np_fsp_loss(*(x.numpy() for x in (s1, s2, t1, t2)))
    assert float(fsp_loss(s1, s2, t1, t2)) == pytest.approx(want, rel=1e-10)
    assert float(fsp_loss(s1, s2, s1, s2)) == 0.0


def test_fsp_teacher_gets_no_gradient_and_bad_input():
    s1, s2 = _rand(2, 3, 4, 4, seed=1).requires_grad_(True), _rand(2, 4, 4, 4, seed=2)
    t1, t2 = _rand(2, 3, 4, 4, seed=3).requires_grad_(True), _rand(2, 4, 4, 4, seed=4).requires_grad_(True)
    fsp_loss(s1, s2, t1, t2).backward()
    assert s1.grad is not None and t1.grad is None and t2.grad is None
    with pytest.raises(ValueError, match=r"FSP matrices differ in size: student \(3, 4\).*teacher \(3, 5\)"):
        fsp_loss(s1, s2, t1, _rand(2, 5, 4, 4))
    with pytest.raises(ValueError, match=r"feature map \[B, C, H, W\], got shape \(2, 3\)"):
        fsp_matrix(_rand(2, 3), s2)
    with pytest.raises(ValueError, match="batch sizes differ"):
        fsp_matrix(s1, _rand(3, 4, 4, 4))


# --------------------------------------------------------------------------- NST
@pytest.mark.parametrize("kernel,kw", [("poly", {}), ("poly", {"degree": 3, "c": 0.5}), ("linear", {}),
                                       ("gaussian", {}), ("gaussian", {"sigma2": 0.7})])
def test_nst_matches_numpy(kernel, kw):
    fs, ft = _rand(2, 3, 4, 5, seed=5), _rand(2, 6, 4, 5, seed=6)  # channel counts differ
    np_kw = {"d": kw.get("degree", 2), "c": kw.get("c", 0.0), "sigma2": kw.get("sigma2")}
    want = np_nst(fs.numpy(), ft.numpy(), kernel, **np_kw)
    assert float(nst_loss(fs, ft, kernel=kernel, **kw)) == pytest.approx(want, rel=1e-9)


def test_nst_properties():
    f = _rand(2, 4, 3, 3, seed=7)
    assert float(nst_loss(f, f)) == pytest.approx(0.0, abs=1e-12)
    # a set of channels: invariant to their order and to a positive scale per channel
    perm = f[:, [2, 0, 3, 1]] * torch.tensor([1.0, 3.0, 0.5, 7.0], dtype=torch.float64).view(1, 4, 1, 1)
    assert float(nst_loss(perm, f)) == pytest.approx(0.0, abs=1e-12)
    g = _rand(2, 5, 3, 3, seed=8)
    assert float(nst_loss(g, f, kernel="gaussian")) > 0 and float(nst_loss(g, f)) > 0
    fs, ft = f.clone().requires_grad_(True), g.clone().requires_grad_(True)
    nst_loss(fs, ft).backward()
    assert ft.grad is None and torch.isfinite(fs.grad).all()
    with pytest.raises(ValueError, match=r"equal batch and spatial sizes; got student \(2, 4, 3, 3\) and teacher \(2, 5, 4, 4\)"):
        nst_loss(f, _rand(2, 5, 4, 4))
    with pytest.raises(ValueError, match="unknown kernel 'rbf'"):
        nst_loss(f, g, kernel="rbf")
    with pytest.raises(ValueError, match="sigma2"):
        nst_loss(f, g, kernel="gaussian", sigma2=0.0)


# --------------------------------------------------------------------------- AB
def test_ab_matches_numpy_and_reductions():
    r, t = _rand(3, 4, 5, 5, seed=9) * 1.5, _rand(3, 4, 5, 5, seed=10)
    per = np_ab(r.numpy(), t.numpy(), 0.7)
    assert float(ab_loss(r, t, margin=0.7)) == pytest.approx(per.mean(), rel=1e-10)
    assert float(ab_loss(r, t, margin=0.7, reduction="batchmean")) == pytest.approx(per.sum() / 3, rel=1e-10)
    assert float(ab_loss(r[:, :, 0, 0], t[:, :, 0, 0])) == pytest.approx(np_ab(r.numpy()[:, :, 0, 0], t.numpy()[:, :, 0, 0]).mean())
    # zero once every student response lies at least m on the teacher's side of the boundary
    assert float(ab_loss(torch.where(t > 0, 1.0, -1.0).double(), t)) == 0.0
    # only the sign of the teacher matters
    assert float(ab_loss(r, t * 5)) == pytest.approx(float(ab_loss(r, t)))
    rs, tt = r.clone().requires_grad_(True), t.clone().requires_grad_(True)
    ab_loss(rs, tt).backward()
    assert tt.grad is None and rs.grad is not None
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="margin must be a finite number > 0"):
            ab_loss(r, t, margin=bad)
    with pytest.raises(ValueError, match=r"same shape.*student \(3, 4, 5, 5\) and teacher \(3, 2, 5, 5\)"):
        ab_loss(r, t[:, :2])


# --------------------------------------------------------------------------- FT
@pytest.mark.parametrize("p", [1, 2])
def test_ft_matches_numpy_and_is_scale_invariant(p):
    fs, ft = _rand(3, 2, 4, 4, seed=11), _rand(3, 2, 4, 4, seed=12)
    assert float(ft_loss(fs, ft, p=p)) == pytest.approx(np_ft(fs.numpy(), ft.numpy(), p), rel=1e-10)
    assert float(ft_loss(fs * 4.0, ft, p=p)) == pytest.approx(float(ft_loss(fs, ft, p=p)), rel=1e-10)
    assert float(ft_loss(ft * 0.3, ft, p=p)) == pytest.approx(0.0, abs=1e-12)
    s, t = fs.clone().requires_grad_(True), ft.clone().requires_grad_(True)
    ft_loss(s, t, p=p).backward()
    assert t.grad is None and s.grad is not None


def test_ft_modules_and_bad_input():
    para = Paraphraser(6, rate=0.5)
    x = _rand(2, 6, 5, 5).float()
    assert para(x).shape == (2, 3, 5, 5) and Paraphraser(6, rate=0.1).factor_channels == 1  # floor(k C), >= 1
    assert para.decoder(para(x)).shape == x.shape
    with pytest.raises(ValueError, match="p must be 1 or 2, got 3"):
        ft_loss(_rand(2, 3), _rand(2, 3), p=3)
    with pytest.raises(ValueError, match=r"same shape.*student \(2, 3\) and teacher \(2, 4\)"):
        ft_loss(_rand(2, 3), _rand(2, 4))


# --------------------------------------------------------------------------- terms at build (no data)
def _ctx(student=None, teacher=None):
    torch.manual_seed(0)
    return TermContext(method="distill", kind="classifier", student=student or build_model("lenet", channels=[4, 8], fc=32),
                       teacher=teacher or build_model("lenet", channels=[4, 8], fc=32), student_input=(1, 28, 28),
                       teacher_input=(1, 28, 28), provides=frozenset({"teacher", "features", "logits", "labels"}),
                       num_classes=10)


def test_bad_term_configs_are_config_errors():
    ctx = _ctx(teacher=build_model("lenet", channels=[6, 8], fc=32))
    with pytest.raises(ConfigError, match=r"'fsp'.*FSP matrices differ in size: student \['conv1', 'conv2'\] gives \(4, 8\) "
                                          r"from maps \(4, 28, 28\) and \(8, 14, 14\), teacher .* gives \(6, 8\)"):
        build_objective({"fsp": {"student_pairs": [["conv1", "conv2"]], "teacher_pairs": [["conv1", "conv2"]]}}, ctx)
    with pytest.raises(ConfigError, match="one non-zero length.*got 1 student and 2 teacher pairs"):
        build_objective({"fsp": {"student_pairs": [["conv1", "conv2"]],
                                 "teacher_pairs": [["conv1", "conv2"], ["pool1", "conv2"]]}}, ctx)
    with pytest.raises(ConfigError, match=r"'nst' needs equal spatial sizes: student 'conv1' is \(4, 28, 28\), teacher 'conv2' is \(8, 14, 14\)"):
        build_objective({"nst": {"layers": [["conv1", "conv2"]]}}, ctx)
    with pytest.raises(ConfigError, match=r"'nst' needs feature maps.*student 'fc1' is \(32,\)"):
        build_objective({"nst": {"layers": [["fc1", "conv2"]]}}, ctx)
    with pytest.raises(ConfigError, match=r"objective.student.ab.margin.*must be > 0"):
        build_objective({"ab": {"layers": [["conv2", "conv2"]], "margin": 0.0}}, ctx)
    with pytest.raises(ConfigError, match=r"'ab': student 'conv2' \(8, 14, 14\) cannot be connected to teacher 'conv1' \(6, 28, 28\)"):
        build_objective({"ab": {"layers": [["conv2", "conv1"]]}}, ctx)
    with pytest.raises(ConfigError, match=r"objective.student.ft.p.*accepted: 1, 2"):
        build_objective({"ft": {"layers": [["conv2", "conv2"]], "p": 3}}, ctx)
    with pytest.raises(ConfigError, match=r"'ft': student 'conv2' \(8, 14, 14\) and teacher 'conv1'.*smaller"):
        build_objective({"ft": {"layers": [["conv2", "conv1"]]}}, ctx)


def test_ft_paraphraser_player_learns_reconstruction_on_fixed_data():
    ctx = _ctx()
    obj = build_objective({"ft": {"layers": [["conv2", "conv2"]], "paraphraser_steps": 20}}, ctx)
    term = obj.terms["ft"]
    module, optim = term.players()["paraphraser"]
    assert module is term.paraphrasers and optim is None  # the run's optim section
    assert module[0].factor_channels == 4  # k = 0.5 of the teacher's 8 channels
    opt = torch.optim.Adam(module.parameters(), lr=0.01)

    def step(name, loss):
        assert name == "paraphraser"
        opt.zero_grad()
        loss.backward()
        opt.step()

    torch.manual_seed(1)
    # a fixed teacher feature with 4 independent channels mixed into 8 (the factor has 4): reconstructible
    feat = torch.einsum("oc,bchw->bohw", torch.randn(8, 4), torch.randn(2, 4, 5, 5))
    s = Outputs(out=torch.zeros(2, 10), features={"conv2": torch.randn(2, 8, 5, 5, requires_grad=True)})
    t = Outputs(out=torch.zeros(2, 10), features={"conv2": feat})
    batch = Batch(size=2)
    w0 = [p.detach().clone() for p in module.parameters()]
    assert float(term(s, t, batch).detach()) == 0.0  # pre-training: the student term is 0
    recs = [float(term.update(s, t, batch, step)["paraphraser_rec"]) for _ in range(20)]
    assert any(not torch.equal(a, b) for a, b in zip(w0, module.parameters()))
    assert recs[-1] < 0.7 * recs[0] and int(term.paraphraser_done) == 20
    assert term.update(s, t, batch, step) == {}  # done: fixed from now on
    module.zero_grad(set_to_none=True)
    value = term(s, t, batch)
    value.backward()
    assert float(value.detach()) > 0 and all(p.grad is None for p in module.parameters())  # F_t without gradient
    assert any(p.grad is not None for p in term.translators.parameters())  # the translator learns with the student


# --------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def lenet_teacher(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher")
    return train(load_run_config([small_config(tmp, name="teacher", model=LENET, data=QUICK, trainer={"epochs": 1},
                                               eval={"latency": False, "noise_sigmas": [0.0]})]))


def _rows(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


DISTILL = {
    "fsp": {"student_pairs": [["conv1", "conv2"]], "teacher_pairs": [["conv1", "conv2"]]},
    "nst": {"layers": [["conv2", "conv2"]]},
    "ab": {"layers": [["conv2", "conv2.0"]]},  # the teacher's conv before its ReLU: a pre-activation
    "ft": {"layers": [["conv2", "conv2"]], "paraphraser_steps": 2},
}


@pytest.mark.parametrize("name", sorted(DISTILL))
def test_distill_run_with_term(tmp_path, lenet_teacher, name):
    cfg = small_config(tmp_path, name=f"s-{name}", method="distill", model=LENET, teacher={"checkpoint": str(lenet_teacher)},
                       data=QUICK, objective={"student": {"ce": {"weight": 1.0}, name: DISTILL[name]}},
                       trainer={"epochs": 1, "log_every_n_steps": 1}, eval={"latency": False, "noise_sigmas": [0.0]})
    run = train(load_run_config([cfg]))
    rows = [r for r in _rows(run) if f"train/{name}" in r]
    assert len(rows) == 4 and all(np.isfinite(r[f"train/{name}"]) and np.isfinite(r["train/loss"]) for r in rows)
    if name != "ft":
        assert all(r[f"train/{name}"] > 0 for r in rows)
        return
    # two steps of paraphraser pre-training (student term 0), then factor transfer with a fixed paraphraser
    assert [r["train/ft"] == 0 for r in rows] == [True, True, False, False]
    assert [("train/ft/paraphraser_rec" in r) for r in rows] == [True, True, False, False]
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["method"]
    assert int(state["players"]["student"]["objective.terms.ft.paraphraser_done"]) == 2
    assert "student.ft.paraphraser" in state["optimizers"]


GAN = {  # d = 4 student vs d = 8 teacher: net.5 (8|16, 7, 7), net.2 (16|32, 3, 3), net.8 (4|8, 14, 14)
    "fsp": {"student_pairs": [["net.2", "net.5"]], "teacher_pairs": [["net.5", "net.8"]]},  # both (16, 8)
    "nst": {"layers": [["net.5", "net.5"]]},
    "ab": {"layers": [["net.4", "net.4"]]},  # BatchNorm output before the ReLU
    "ft": {"layers": [["net.5", "net.5"]]},
}


@pytest.mark.parametrize("name", sorted(GAN))
def test_gan_compression_run_with_term(tmp_path, gen_teacher, name):
    cfg = gan_student_config(tmp_path, gen_teacher, objective={"student": {"mse": {"weight": 1.0}, name: GAN[name]}})
    run = train(load_run_config([cfg]))
    rows = [r for r in _rows(run) if f"train/{name}" in r]
    assert len(rows) == 3 and all(np.isfinite(r[f"train/{name}"]) and r[f"train/{name}"] > 0 for r in rows)


def test_ft_paraphraser_update_goes_through_its_players_wrapper():
    """Under DDP the player ``paraphraser`` is wrapped; its update must call the wrapper (which averages the
    gradients across ranks), not the bare modules. A recording wrapper stands in for DDP here."""
    ctx = _ctx()
    term = build_objective({"ft": {"layers": [["conv2", "conv2"]], "paraphraser_steps": 2}}, ctx).terms["ft"]
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, maps):
            calls.append(len(maps))
            return self.module(maps)

    term._wrapped = {"paraphraser": Recorder(term.players()["paraphraser"][0])}
    feat = torch.randn(2, 8, 5, 5)
    s = Outputs(out=torch.zeros(2, 10), features={"conv2": torch.randn(2, 8, 5, 5)})
    t = Outputs(out=torch.zeros(2, 10), features={"conv2": feat})
    got = term.update(s, t, Batch(size=2), lambda name, loss: None)["paraphraser_rec"]
    para = term.paraphrasers[0]
    want = torch.nn.functional.mse_loss(para.decoder(para.encoder(feat)), feat)  # eq. 1, written out
    assert calls == [1] and float(got) == pytest.approx(float(want), rel=1e-6)
