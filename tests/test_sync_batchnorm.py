"""``trainer.sync_batchnorm`` and the global batch's random draws on 2 gloo processes, against one process.

Two ranks each take rows r, r + 2, ... of a 16-row batch through a small double-precision BatchNorm net
(tests/test_jacobian_bn.py's) made synchronised by :func:`kdlab.models.batch_stats.sync_batchnorm`. The
references are computed here on one process with plain BatchNorm: the outputs, the input gradients of the
output sum (which flow through the global statistics to the other rank's samples), the parameter gradients
(their sum over the ranks, as DDP's average of batch means is a mean over the global batch), the running
statistics, and the per-sample Jacobian of the Jacobian pass, referenced by ``vmap(jacrev)`` of an eval-mode
copy whose statistics are the global batch's (tests/test_jacobian_bn.py). Without synchronisation a rank's
Jacobian is the one given its half batch, far from it: the option matters.
"""
from __future__ import annotations

import copy
import socket

import pytest
import torch

from test_jacobian_bn import _batch_stat_copy, _bn_net, _ref_jacobian, _x

SLOW = pytest.mark.slow  # the ranks fixture spawns 2 gloo processes: ~60 s on 2 busy cores


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple:
    """(the net, the 16-row batch, each rank's results)."""
    import torch.multiprocessing as mp

    from sync_bn_ranks import bn_on_rank

    tmp = tmp_path_factory.mktemp("sync")
    net, x = _bn_net(0), _x()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(bn_on_rank, args=(2, port, str(tmp / "rank"), copy.deepcopy(net), x), nprocs=2, join=True)
    return net, x, [torch.load(tmp / f"rank-{r}.pt", weights_only=False) for r in (0, 1)]


@SLOW
def test_synchronised_batchnorm_on_two_ranks_equals_one_process(ranks):
    net, x, got = ranks
    ref = copy.deepcopy(net).train()
    xl = x.clone().requires_grad_(True)
    y = ref(xl)
    y.sum().backward()
    for r, res in enumerate(got):
        assert torch.allclose(res["out"], y[r::2].detach(), rtol=1e-10, atol=1e-12)
        # the rows of the other rank reach this rank's input gradient through the global statistics
        assert torch.allclose(res["x_grad"], xl.grad[r::2], rtol=1e-9, atol=1e-12)
        for k, v in ref.named_buffers():
            assert torch.allclose(res["buffers"][k].to(v.dtype), v, rtol=1e-10, atol=1e-12), k
    for k, p in ref.named_parameters():
        assert torch.allclose(got[0]["param_grads"][k] + got[1]["param_grads"][k], p.grad, rtol=1e-9, atol=1e-12), k
    # the test can fail: plain BatchNorm on a half batch gives other outputs
    half = copy.deepcopy(net).train()(x[0::2])
    assert not torch.allclose(half, got[0]["out"], atol=1e-3)


@SLOW
def test_per_sample_jacobian_under_sync_batchnorm_is_the_global_batchs(ranks):
    """The Jacobian pass holds the global statistics constant: rank r's per-sample Jacobians are rows r::2
    of the one-process per-sample Jacobians (eval-mode copy with the global batch's statistics)."""
    net, x, got = ranks
    expected = _ref_jacobian(_batch_stat_copy(net, x), x)
    for r, res in enumerate(got):
        assert torch.allclose(res["jacobian"], expected[r::2], rtol=1e-8, atol=1e-10)
        local = _ref_jacobian(_batch_stat_copy(net, x[r::2]), x[r::2])  # unsynchronised: the half batch's
        assert (local - expected[r::2]).norm() > 0.05 * expected.norm() / 2


@SLOW
def test_rank_rows_and_dropout_draw_the_global_batch(ranks):
    """A latent and a dropout mask drawn on 2 ranks are rows r::2 of the one-process draw of the global batch."""
    _, _, got = ranks
    torch.manual_seed(5)
    z = torch.randn(8, 3)
    drop = torch.nn.Dropout(0.5).train()
    dropped = drop(torch.ones(8, 6))
    for r, res in enumerate(got):
        assert torch.equal(res["z"], z[r::2])
        assert torch.equal(res["dropped"], dropped[r::2])
    assert not torch.equal(got[0]["z"], got[1]["z"])


def test_conversion_keeps_parameters_and_is_plain_batchnorm_on_one_process():
    """Smoke-level on one process (no process group): the converted layers hold the same Parameter objects (an
    optimizer built before still trains them) and compute what BatchNorm computes, in train and eval mode."""
    from kdlab.models.batch_stats import sync_batchnorm
    from kdlab.models.sync_bn import GlobalBatchNorm

    net, x = _bn_net(0), _x()
    ref = copy.deepcopy(net)
    params = list(net.parameters())
    conv = sync_batchnorm(net)
    assert conv is net and [id(p) for p in conv.parameters()] == [id(p) for p in params]
    assert sum(isinstance(m, GlobalBatchNorm) for m in conv.modules()) == 3
    assert torch.equal(conv.train()(x), ref.train()(x))
    assert all(torch.equal(a, b) for a, b in zip(conv.buffers(), ref.buffers()))
    assert torch.equal(conv.eval()(x), ref.eval()(x))


def test_sync_batchnorm_must_be_a_bool():
    from kdlab.config import ConfigError
    from kdlab.runner import load_run_config

    with pytest.raises(ConfigError, match="trainer.sync_batchnorm.*'maybe'"):
        load_run_config([{"name": "x", "method": "teacher", "trainer": {"sync_batchnorm": "maybe"}}])
    assert load_run_config([{"name": "x", "method": "teacher"}]).trainer.sync_batchnorm is False


def _unet_deep_grads(dtype: torch.dtype, blocks: int) -> dict:
    from kdlab.models import build_generator

    torch.manual_seed(0)
    net = build_generator("unet_deep", 1, 32, in_channels=1, ngf=4, blocks=blocks).to(dtype).train()
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(8, 1, 32, 32, generator=gen), torch.randn(8, 1, 32, 32, generator=gen)
    (net(x.to(dtype)) * w.to(dtype)).sum().div(8).backward()
    return {n: p.grad.double() for n, p in net.named_parameters()}


def _worst_relative(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).abs().max()) / float(b[n].abs().max()) for n in a)


def test_omgds_deep_teacher_with_two_blocks_per_stage_is_ill_conditioned_in_float32():
    """Why the 2-rank OMGD case (tests/test_ddp_equivalence.py) uses ``blocks: 1`` for its deep teacher: with
    OMGD's two residual blocks per stage at 5 levels, BatchNorm over tiny spatial maps amplifies float32 rounding
    so much that the float32 gradient of ONE process is percents away from the float64 gradient (no two summation
    orders, 1 or 2 ranks, can agree within a float tolerance); with one block it is within 1e-4."""
    two32, two64 = _unet_deep_grads(torch.float32, 2), _unet_deep_grads(torch.float64, 2)
    one32, one64 = _unet_deep_grads(torch.float32, 1), _unet_deep_grads(torch.float64, 1)
    assert _worst_relative(two32, two64) > 1e-2
    assert _worst_relative(one32, one64) < 1e-4
