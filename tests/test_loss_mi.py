"""Mutual-information losses: VID (Ahn et al. 2019) and CRD (Tian et al. 2020) against numpy, their
trainable parts and buffers, bad input, and real distill / gan-compression runs (CRD with a latent pool)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from kdlab.config import ConfigError
from kdlab.data.batch import Batch
from kdlab.data.transfer import TransferInfo
from kdlab.engine import load_checkpoint
from kdlab.losses.crd import CRDLoss, nce_contrast_loss
from kdlab.losses.vid import VIDLoss, vid_loss
from kdlab.runner import load_run_config, train
from kdlab.terms import TermContext, build_objective
from conftest import gan_student_config


# ------------------------------------------------------------------------------- numpy references


def np_vid(mu, t, var):
    """Mean over all elements of 0.5 (log var_c + (t - mu)^2 / var_c), var_c on axis 1."""
    mu, t, var = (np.asarray(a, dtype=np.float64) for a in (mu, t, var))
    v = var.reshape((1, -1) + (1,) * (mu.ndim - 2))
    return float(np.mean(0.5 * (np.log(v) + (t - mu) ** 2 / v)))


def np_nce(p, n):
    """CRD eq. 18-19: -(1/B) [sum log h(pos) + sum log(1 - h(neg))], h = P / (P + k/N)."""
    p = np.asarray(p, dtype=np.float64)
    k = p.shape[1] - 1
    total = 0.0
    for b in range(p.shape[0]):
        total += math.log(p[b, 0] / (p[b, 0] + k / n))
        for j in range(1, k + 1):
            total += math.log(1.0 - p[b, j] / (p[b, j] + k / n))
    return -total / p.shape[0]


def np_unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy(x):
    return x.detach().double().numpy()


# ------------------------------------------------------------------------------------------ VID


@pytest.mark.parametrize("shape", [(3, 4, 5, 5), (6, 7)])
def test_vid_loss_is_the_gaussian_nll(shape):
    g = torch.Generator().manual_seed(0)
    mu, t = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    var = torch.rand(shape[1], generator=g) + 0.1
    assert float(vid_loss(mu, t, var)) == pytest.approx(np_vid(mu, t, var), rel=1e-5)
    # the NLL is minimal in the variance where sigma^2 = mean squared error of that channel
    mse = ((t - mu) ** 2).mean(dim=[0] + list(range(2, len(shape))))
    best = float(vid_loss(mu, t, mse))
    for scale in (0.5, 2.0):
        assert float(vid_loss(mu, t, mse * scale)) > best


def test_vid_module_initial_variance_pooling_and_teacher_detached():
    torch.manual_seed(0)
    m = VIDLoss((4, 14, 14), (6, 7, 7), init_var=5.0, eps=1e-5)
    assert torch.allclose(m.variance(), torch.full((6,), 5.0), atol=1e-5)
    assert m.regressor[0].out_channels == 16  # max(teacher channels 6, 16)
    s = torch.randn(2, 4, 14, 14, requires_grad=True)
    t = torch.randn(2, 6, 7, 7, requires_grad=True)
    loss = m(s, t)
    # the student map is average-pooled 2x2 to the teacher's 7x7 (numpy), then regressed
    pooled = _numpy(s).reshape(2, 4, 7, 2, 7, 2).mean(axis=(3, 5))
    mu = m.regressor(torch.from_numpy(pooled).float())
    assert loss.item() == pytest.approx(np_vid(_numpy(mu), _numpy(t), _numpy(m.variance())), rel=1e-5)
    loss.backward()
    assert t.grad is None and s.grad is not None and m.alpha.grad is not None
    # a smaller student map: the teacher is pooled to the student's size instead (as RepDistiller)
    m2 = VIDLoss((4, 7, 7), (6, 14, 14))
    assert torch.isfinite(m2(torch.randn(2, 4, 7, 7), torch.randn(2, 6, 14, 14)))
    vec = VIDLoss((5,), (3,), mid_channels=4)
    assert isinstance(vec.regressor[0], nn.Linear) and vec.regressor[0].out_features == 4


def test_vid_variances_change_after_one_optimizer_step():
    torch.manual_seed(0)
    m = VIDLoss((5,), (3,))
    before = m.alpha.detach().clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss = m(torch.randn(8, 5), 3.0 * torch.randn(8, 3))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(before, m.alpha.detach())


def test_vid_bad_input():
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3\).*\(2, 4\)"):
        vid_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(3))
    with pytest.raises(ValueError, match=r"variance must have shape \[C\] = \[3\]"):
        vid_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(4))
    with pytest.raises(ValueError, match="variance must be > 0"):
        vid_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\] or \[B, C\]"):
        vid_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(3))
    with pytest.raises(ValueError, match=r"both be maps.*\(4, 7, 7\).*\(8,\)"):
        VIDLoss((4, 7, 7), (8,))
    with pytest.raises(ValueError, match="init_var must be > eps"):
        VIDLoss((4,), (4,), init_var=1e-6, eps=1e-5)
    with pytest.raises(ValueError, match=r"built for student"):
        VIDLoss((4,), (4,))(torch.zeros(2, 5), torch.zeros(2, 4))


# ------------------------------------------------------------------------------------------ CRD


def test_nce_contrast_loss_matches_numpy():
    p = torch.rand(4, 1 + 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.05
    assert float(nce_contrast_loss(p, 50)) == pytest.approx(np_nce(p.numpy(), 50), rel=1e-5)  # + RepDistiller eps 1e-7
    with pytest.raises(ValueError, match=r"\[B, 1 \+ k\]"):
        nce_contrast_loss(torch.ones(4, 1), 50)


def _fixed_crd(n=12, k=5, d=6):
    torch.manual_seed(0)
    crd = CRDLoss((7,), (9,), n, k=k, feat_dim=d, temperature=0.5, momentum=0.5)
    g = torch.Generator().manual_seed(3)
    crd.memory_s.copy_(torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1))
    crd.memory_t.copy_(torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1))
    return crd


def _np_embed(lin, f):
    return np_unit(_numpy(f) @ _numpy(lin.weight).T + _numpy(lin.bias))


def test_crd_on_a_fixed_memory_bank_equals_the_hand_computation():
    n, k, tau = 12, 5, 0.5
    crd = _fixed_crd(n, k)
    g = torch.Generator().manual_seed(4)
    f_s, f_t = torch.randn(3, 7, generator=g), torch.randn(3, 9, generator=g)
    index = torch.tensor([2, 7, 11])
    negatives = torch.randint(0, n, (3, k), generator=g)
    mem_s, mem_t = _numpy(crd.memory_s), _numpy(crd.memory_t)
    v_s, v_t = _np_embed(crd.embed_s.linear, f_s), _np_embed(crd.embed_t.linear, f_t)
    rows = np.concatenate([index.numpy()[:, None], negatives.numpy()], axis=1)
    e_t = np.array([[math.exp(mem_s[r] @ v_t[b] / tau) for r in rows[b]] for b in range(3)])  # teacher anchor
    e_s = np.array([[math.exp(mem_t[r] @ v_s[b] / tau) for r in rows[b]] for b in range(3)])  # student anchor
    z_t, z_s = e_t.mean() * n, e_s.mean() * n  # Z from the first batch
    want = np_nce(e_t / z_t, n) + np_nce(e_s / z_s, n)
    crd.eval()  # no memory update: the second call sees the same banks
    assert crd(f_s, f_t, index, negatives).item() == pytest.approx(want, rel=1e-4)
    assert float(crd.z_t) == pytest.approx(z_t, rel=1e-4) and float(crd.z_s) == pytest.approx(z_s, rel=1e-4)
    # Z is kept: another batch is normalised by the first batch's Z
    f2 = torch.randn(3, 7, generator=g)
    v2 = _np_embed(crd.embed_s.linear, f2)
    e2 = np.array([[math.exp(mem_t[r] @ v2[b] / tau) for r in rows[b]] for b in range(3)])
    want2 = np_nce(e_t / z_t, n) + np_nce(e2 / z_s, n)
    assert crd(f2, f_t, index, negatives).item() == pytest.approx(want2, rel=1e-4)
    assert float(crd.z_s) == pytest.approx(z_s, rel=1e-4)


def test_crd_memory_update_and_gradients():
    crd = _fixed_crd()
    before_s, before_t = _numpy(crd.memory_s), _numpy(crd.memory_t)
    f_s = torch.randn(3, 7, requires_grad=True)
    f_t = torch.randn(3, 9, requires_grad=True)
    index = torch.tensor([0, 4, 9])
    crd.train()
    loss = crd(f_s, f_t, index)  # random negatives
    v_s, v_t = _np_embed(crd.embed_s.linear, f_s), _np_embed(crd.embed_t.linear, f_t)
    for mem, old, v in ((crd.memory_s, before_s, v_s), (crd.memory_t, before_t, v_t)):
        new = _numpy(mem)
        np.testing.assert_allclose(new[[0, 4, 9]], np_unit(0.5 * old[[0, 4, 9]] + 0.5 * v), rtol=1e-5, atol=1e-6)
        other = [i for i in range(12) if i not in (0, 4, 9)]
        np.testing.assert_array_equal(new[other], old[other])
    loss.backward()
    assert f_t.grad is None and f_s.grad is not None
    # both heads are trained (the teacher head too, as RepDistiller)
    assert crd.embed_s.linear.weight.grad is not None and crd.embed_t.linear.weight.grad is not None


def test_crd_bad_input_and_k_larger_than_the_transfer_set():
    crd = _fixed_crd()
    with pytest.raises(ValueError, match=r"row index.*batch.index.*None"):
        crd(torch.zeros(2, 7), torch.zeros(2, 9), None)
    with pytest.raises(ValueError, match=r"must lie in \[0, 12\)"):
        crd(torch.zeros(2, 7), torch.zeros(2, 9), torch.tensor([0, 12]))
    with pytest.raises(ValueError, match="batch sizes differ"):
        crd(torch.zeros(2, 7), torch.zeros(3, 9), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"k = 12 .*n_data = 12"):
        CRDLoss((7,), (9,), 12, k=12)
    net = nn.Linear(5, 3)
    ctx = TermContext(method="m", kind="classifier", student=net, teacher=nn.Linear(5, 3), student_input=(5,),
                      teacher_input=(5,), provides=frozenset({"teacher", "logits", "features", "index"}),
                      num_classes=3, transfer_size=10)
    with pytest.raises(ConfigError, match=r"objective.student.crd.k = 10 .*N - 1 = 9 \(N = 10 rows"):
        build_objective({"crd": {"k": 10}}, ctx)
    obj = build_objective({"crd": {"k": 9, "feat_dim": 4}}, ctx)
    assert obj.terms["crd"].losses[0].memory_s.shape == (10, 4)
    ctx.provides = frozenset({"teacher", "logits", "features"})
    ctx.why_not = {"index": "its batches carry no rows"}
    with pytest.raises(ConfigError, match=r"term 'crd' needs index.*its batches carry no rows"):
        build_objective({"crd": {"k": 4}}, ctx)


# ---------------------------------------------------------------------------------- real runs


def _teacher(tmp_path: Path, make_config) -> Path:
    return train(load_run_config([make_config(name="teacher", out_dir=str(tmp_path), trainer={"epochs": 1})]))


def _last_log(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if any(k.startswith("train/") for k in r)][-1]


def test_distill_with_vid_and_crd_trains_checkpoints_and_resumes(tmp_path, make_config):
    teacher = _teacher(tmp_path, make_config)
    base = dict(method="distill", teacher={"checkpoint": str(teacher)}, optim={"scheduler": "none"},
                objective={"student": {"ce": {"weight": 1.0},
                                       "vid": {"weight": 0.5, "layers": [["output", "output"], ["fc1", "fc2"]]},
                                       "crd": {"weight": 0.8, "k": 64, "layers": [["fc2", "fc2"]]}}})
    full = train(load_run_config([make_config(name="full", **base, trainer={"epochs": 2, "log_every_n_steps": 1})]))
    log = _last_log(full)
    assert math.isfinite(log["train/vid"]) and math.isfinite(log["train/crd"]) and log["train/crd"] > 0
    state = load_checkpoint(full / "checkpoints" / "last.ckpt")["method"]["players"]["student"]
    # the VID variances were trained by the student's optimizer (initially all softplus^-1(5 - 1e-5))
    alpha = state["objective.terms.vid.losses.1.alpha"]
    assert alpha.shape == (64,) and not torch.allclose(alpha, torch.full_like(alpha, math.log(math.expm1(5.0 - 1e-5))))
    # CRD's memory banks and Z are buffers of the student player: checkpointed
    mem = state["objective.terms.crd.losses.0.memory_s"]
    n = json.loads((full / "summary.json").read_text())["data"]["n_transfer"]
    assert mem.shape == (n, 128) and torch.allclose(mem.norm(dim=1), torch.ones(n), atol=1e-5)  # every row updated
    assert float(state["objective.terms.crd.losses.0.z_s"]) > 0 and float(state["objective.terms.crd.losses.0.z_t"]) > 0
    # interrupted after epoch 1 and resumed: the buffers (and weights) of the uninterrupted run
    train(load_run_config([make_config(name="part", **base, trainer={"epochs": 1})]))
    resumed = train(load_run_config([make_config(name="part", **base, trainer={"epochs": 2})]), resume=True)
    got = load_checkpoint(resumed / "checkpoints" / "last.ckpt")["method"]["players"]["student"]
    for key in ("memory_s", "memory_t", "z_s", "z_t"):
        k = f"objective.terms.crd.losses.0.{key}"
        assert torch.equal(got[k], state[k]), k
    assert torch.equal(got["objective.terms.vid.losses.1.alpha"], alpha)


def test_gan_compression_with_vid_and_crd_on_images(tmp_path, gen_teacher):
    cfg = load_run_config([gan_student_config(tmp_path, gen_teacher, players={"latents": "pool"}, objective={
        "student": {"mse": {"weight": 1.0}, "vid": {"weight": 0.1}, "crd": {"weight": 0.1, "k": 16}}})])
    run = train(cfg)
    log = _last_log(run)
    assert math.isfinite(log["train/vid"]) and math.isfinite(log["train/crd"])
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["method"]["players"]["student"]
    assert state["objective.terms.crd.losses.0.memory_t"].shape == (48, 128)  # data-free: 3 steps of 16 rows
    assert state["objective.terms.vid.losses.0.alpha"].shape == (1,)  # one variance per image channel
    # fresh latents are no rows of the transfer set: CRD is refused, naming the key to set
    with pytest.raises(ConfigError, match=r"term 'crd' needs index.*players.latents=pool"):
        train(load_run_config([gan_student_config(tmp_path, gen_teacher, name="fresh",
                                                  objective={"student": {"crd": {"weight": 1.0, "k": 16}}})]))


def _gan_method(tmp_path, teacher, **players):
    from kdlab.data import dataset_spec
    from kdlab.methods import METHODS

    cfg = load_run_config([gan_student_config(tmp_path, teacher, players=players)])
    method = METHODS.get("gan-compression")(cfg, dataset_spec("fashion-mnist"), TransferInfo(size=48, indexed=True))
    method.fabric = SimpleNamespace(device=torch.device("cpu"))
    return method


def test_latent_pool_is_fixed_per_row_and_fresh_is_unchanged(tmp_path, gen_teacher):
    from kdlab.games.generator_student import latent_pool

    pool = _gan_method(tmp_path, gen_teacher, latents="pool")
    z = pool.student_inputs(Batch(index=torch.tensor([3, 0, 3])))
    torch.manual_seed(1)
    again = pool.student_inputs(Batch(index=torch.tensor([3, 0, 3])))
    assert torch.equal(z[0], z[2]) and not torch.equal(z[0], z[1]) and torch.equal(z, again)
    assert torch.equal(z, latent_pool(0, 48, 16)[[3, 0, 3]])
    assert not torch.equal(latent_pool(1, 48, 16), latent_pool(0, 48, 16))  # the run seed picks the pool
    # apart from the evaluation latents (seeded with eval.sample_seed = 0)
    assert not torch.allclose(latent_pool(0, 48, 16), torch.randn(48, 16, generator=torch.Generator().manual_seed(0)))
    fresh = _gan_method(tmp_path, gen_teacher)  # default: a fresh N(0, I) draw from the global RNG, as before
    torch.manual_seed(5)
    got = fresh.student_inputs(Batch(index=torch.tensor([3, 0, 3])))
    torch.manual_seed(5)
    assert torch.equal(got, torch.randn(3, 16))
    with pytest.raises(ConfigError, match=r"players.latents.*accepted: fresh, pool"):
        _gan_method(tmp_path, gen_teacher, latents="reuse")


def test_crd_memory_under_two_processes_holds_every_ranks_rows(tmp_path):
    """2 gloo ranks with unequal shards (3 + 2 rows) update CRD's banks: each rank ends with the banks that one
    process updating with all 5 rows holds (no rank's rows lost to DDP's broadcast of rank 0's buffers), and
    Z's mean is the mean over both shards. The reference is the update formula written out here."""
    import socket

    import torch.multiprocessing as mp

    from crd_ranks import update_on_rank

    g = torch.Generator().manual_seed(3)
    index = torch.tensor([4, 11, 0, 17, 9])
    v_s, v_t, scores = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g), torch.rand(5, 7, generator=g)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(update_on_rank, args=(2, port, str(tmp_path / "rank"), index, v_s, v_t, scores), nprocs=2, join=True)
    torch.manual_seed(0)
    ref = CRDLoss((8,), (8,), n_data=20, k=4, feat_dim=6)
    for memory, v in ((ref.memory_s, v_s), (ref.memory_t, v_t)):  # m[i] <- normalize(0.5 m[i] + 0.5 v_i)
        for row, vec in zip(index.tolist(), v):
            mixed = memory[row] * 0.5 + vec * 0.5
            memory[row] = mixed / mixed.norm()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank-{rank}.pt", weights_only=True)
        assert torch.allclose(got["memory_s"], ref.memory_s, atol=1e-6)
        assert torch.allclose(got["memory_t"], ref.memory_t, atol=1e-6)
        assert float(got["mean"]) == pytest.approx(float(scores.mean()), rel=1e-6)
