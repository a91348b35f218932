"""Speed options (``trainer.compile``, ``trainer.channels_last``, ``data.pin_memory``): what gets compiled,
and runs that train the same student as the plain loop (up to floating-point reassociation)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlab.config import ConfigError
from kdlab.engine import load_checkpoint
from kdlab.engine.speed import channels_last_batch, compile_networks, pin_memory_for
from kdlab.data.batch import Batch
from kdlab.runner import load_run_config, train

LENET = {"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 32}}


@pytest.fixture(scope="module")
def lenet_teacher(tmp_path_factory):
    from conftest import small_config

    tmp = tmp_path_factory.mktemp("speed")
    return train(load_run_config([small_config(tmp, name="t", model=LENET, trainer={"epochs": 1})]))


def _student(make_config, teacher, name, terms, **trainer):
    return load_run_config([make_config(name=name, method="distill", teacher={"checkpoint": str(teacher)}, model=LENET,
                                        objective={"student": terms}, trainer={"epochs": 1, **trainer})])


@pytest.mark.parametrize("terms, want", [
    ({"kd": {"weight": 1.0}}, ["student.net", "teacher"]),
    ({"kd": {"weight": 1.0}, "hints": {"weight": 1.0, "layers": [["pool2", "pool2"]]}}, []),
    ({"ce": {"weight": 1.0}, "jacobian": {"weight": 1.0}}, []),
])
def test_compile_targets_skip_hooked_networks_and_double_backward(make_config, lenet_teacher, monkeypatch, terms, want):
    from kdlab.data import dataset_spec
    from kdlab.methods import METHODS

    compiled = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: compiled.append((type(self).__name__, kw)))
    cfg = _student(make_config, lenet_teacher, "c", terms, compile="reduce-overhead")
    method = METHODS.get("distill")(cfg, dataset_spec("fashion-mnist"))
    from kdlab.engine import make_fabric

    method.setup(make_fabric(cfg.trainer, None))
    assert method.compiled == want
    assert compiled == [("LeNet", {"mode": "reduce-overhead"})] * len(want)


def test_speed_option_values_are_checked(make_config, lenet_teacher):
    with pytest.raises(ConfigError, match=r"trainer.compile.*accepted: none, default, reduce-overhead, max-autotune"):
        _student(make_config, lenet_teacher, "bad", {"kd": {"weight": 1.0}}, compile="fast")
    with pytest.raises(ValueError, match="accepted"):
        compile_networks([], "fast")
    assert pin_memory_for(None, torch.device("cpu")) is False and pin_memory_for(None, torch.device("cuda")) is True
    assert pin_memory_for(True, torch.device("cpu")) is True


def test_channels_last_batch_and_run_match_the_plain_loop(make_config, lenet_teacher):
    b = channels_last_batch(Batch(x=torch.randn(2, 1, 5, 5), y=torch.zeros(2, dtype=torch.long)))
    assert b.x.is_contiguous(memory_format=torch.channels_last) and b.y is not None
    terms = {"ce": {"weight": 1.0}, "kd": {"weight": 1.0}}
    plain = train(_student(make_config, lenet_teacher, "plain", terms))
    nhwc = train(_student(make_config, lenet_teacher, "nhwc", terms, channels_last=True))
    a = load_checkpoint(plain / "checkpoints" / "last.ckpt")["method"]["players"]["student"]
    b = load_checkpoint(nhwc / "checkpoints" / "last.ckpt")["method"]["players"]["student"]
    assert a.keys() == b.keys()
    for k in a:  # the same computation in another memory layout: equal up to reassociation
        assert torch.allclose(a[k], b[k].contiguous(), atol=1e-4), k


@pytest.mark.slow
def test_compiled_run_matches_the_eager_run(make_config, lenet_teacher):
    terms = {"ce": {"weight": 1.0}, "kd": {"weight": 1.0}}
    eager = train(_student(make_config, lenet_teacher, "eager", terms))
    comp = train(_student(make_config, lenet_teacher, "comp", terms, compile="default"))
    a = load_checkpoint(eager / "checkpoints" / "last.ckpt")["method"]["players"]["student"]
    b = load_checkpoint(comp / "checkpoints" / "last.ckpt")["method"]["players"]["student"]
    assert a.keys() == b.keys()  # in-place compile: the checkpoint keys of the plain network
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k
