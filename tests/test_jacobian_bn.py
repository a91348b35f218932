"""Per-sample input Jacobians under train-mode BatchNorm (issue 10 part 1).

The reference is independent of kdlab's two-pass code: an eval-mode copy of the network whose running
statistics are this batch's (set by a momentum-1 train-mode forward, variance made biased), its
per-sample function differentiated by ``torch.func.vmap(torch.func.jacrev(...))`` over
``functional_call``.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from kdlab.data import Batch, dataset_spec
from kdlab.engine import save_classifier
from kdlab.losses import attention_jacobian_loss, input_gradients, jacobian_matching, output_jacobian_loss
from kdlab.methods import JacobianDistill, TeacherTraining
from kdlab.models import build_model
from kdlab.models.batch_stats import coupled_norms, jacobian_forward
from kdlab.models.base import capture_features
from kdlab.runner import load_run_config

SPEC = dataset_spec("fashion-mnist")
B = 16


def _bn_net(seed: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Tanh(), nn.Conv2d(3, 3, 3, padding=1),
        nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 36, 8), nn.BatchNorm1d(8), nn.Tanh(),
        nn.Dropout(dropout), nn.Linear(8, 4),
    ).double()


def _x(seed: int = 3, shape=(B, 1, 6, 6)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _batch_stat_copy(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """An eval-mode copy of ``net`` whose running statistics are the batch statistics of ``x``."""
    ref = copy.deepcopy(net)
    counts = {}
    for name, m in ref.named_modules():
        if isinstance(m, _BatchNorm):
            m.momentum = 1.0
            m.register_forward_pre_hook(lambda mod, a, n=name: counts.__setitem__(n, a[0].numel() // a[0].shape[1]))
    ref.train()
    with torch.no_grad():
        ref(x)
    for name, m in ref.named_modules():
        if name in counts:  # BatchNorm stores the unbiased variance, and normalises with the biased one
            m.running_var.mul_((counts[name] - 1) / counts[name])
    return ref.eval()


def _ref_jacobian(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, K, D]: vmap(jacrev) of the per-sample function of an eval-mode network."""
    state = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    f = lambda xi: functional_call(net, state, (xi.unsqueeze(0),)).squeeze(0)  # noqa: E731
    return vmap(jacrev(f))(x).flatten(2).detach()


def test_jacobian_pass_gives_per_sample_jacobian_and_main_pass_is_unchanged():
    net, x = _bn_net(0), _x()
    plain = copy.deepcopy(net)
    ref = _batch_stat_copy(net, x)
    xl = x.clone().requires_grad_(True)
    main, per = jacobian_forward(net, xl)
    assert per is not None and len(coupled_norms(net)) == 3
    j = input_gradients(per, xl, None, create_graph=True)
    expected = _ref_jacobian(ref, x)
    assert torch.allclose(j, expected, rtol=1e-5, atol=1e-8)
    # the old definition (batch-sum gradient of the ordinary pass) is far from it: the test can fail
    old = input_gradients(copy.deepcopy(plain)(xl), xl, None)
    assert (old - expected).norm() > 0.05 * expected.norm()
    # the main pass is the ordinary train-mode forward: values, and running statistics updated once
    assert torch.equal(main, plain(x)) and torch.allclose(per, main, atol=1e-12)
    for a, b in zip(net.buffers(), plain.buffers()):
        assert torch.equal(a, b)


def test_no_second_pass_in_eval_mode_or_without_input_grad():
    net, x = _bn_net(0), _x()
    assert jacobian_forward(net.eval(), x.clone().requires_grad_(True))[1] is None
    assert jacobian_forward(net.train(), x)[1] is None


def test_dropout_masks_are_replayed_and_the_rng_stream_is_unchanged():
    net, x = _bn_net(0, dropout=0.5), _x()
    torch.manual_seed(7)
    main, per = jacobian_forward(net, x.clone().requires_grad_(True))
    after = torch.rand(3)
    torch.manual_seed(7)
    plain = copy.deepcopy(net)(x)
    assert torch.equal(main, plain) and torch.allclose(per, main, atol=1e-12)
    assert torch.equal(torch.rand(3), after)


def test_output_jacobian_loss_matches_reference_and_is_zero_for_a_copy_in_the_same_mode():
    s_net, t_net, x = _bn_net(0), _bn_net(1).eval(), _x()
    t_net.load_state_dict(_batch_stat_copy(_bn_net(1), x).state_dict())  # any eval-mode teacher
    ref_s = _batch_stat_copy(s_net, x)
    term, s_logits, _ = output_jacobian_loss(s_net, t_net, x, select="full")
    expected = jacobian_matching(_ref_jacobian(ref_s, x), _ref_jacobian(t_net, x))
    assert torch.allclose(term, expected, rtol=1e-5)
    # a copy in the same (train) mode, and the eval-mode teacher with this batch's statistics: 0
    same, *_ = output_jacobian_loss(s_net, copy.deepcopy(s_net), x, select="full")
    assert same.item() < 1e-20
    zero, *_ = output_jacobian_loss(s_net, _batch_stat_copy(s_net, x), x, select="full")
    assert zero.item() < 1e-18


class _Swapped(nn.Module):
    """``net`` with its parameters replaced by ``params`` (``functional_call``), so gradcheck can vary them;
    ``net``'s BatchNorm layers are still its modules, so the two-pass code path runs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.params = net, {}

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, self.params, (v,))


def test_jacobian_loss_parameter_gradient_against_finite_differences():
    torch.manual_seed(0)
    s_net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    t_net = nn.Sequential(nn.Linear(3, 2), nn.Tanh()).double()
    x = _x(shape=(5, 3))
    swapped = _Swapped(s_net)
    names = [n for n, _ in s_net.named_parameters()]

    def loss(*params):
        swapped.params = dict(zip(names, params))
        return output_jacobian_loss(swapped, t_net, x, select="full")[0]

    params = tuple(p.detach().clone().requires_grad_(True) for p in s_net.parameters())
    assert coupled_norms(swapped)
    assert torch.autograd.gradcheck(loss, params)


# -- through the methods: the Jacobian the loss uses -------------------------------------------------

@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(0)
    return save_classifier(build_model("vgg4", width=0.125), tmp_path / "teacher.safetensors", data="fashion-mnist")


def _distill(make_config, teacher_file, terms):
    cfg = load_run_config([make_config(method="jacobian", teacher={"checkpoint": str(teacher_file)},
                                       objective={"student": terms}, model={"name": "vgg4", "kwargs": {"width": 0.125}})])
    m = JacobianDistill(cfg, SPEC)
    m.players["student"].double()
    m.frozen["teacher"].double()
    return m


def _fm_batch():
    g = torch.Generator().manual_seed(1)
    return Batch(x=torch.randn(B, 1, 28, 28, generator=g, dtype=torch.float64), y=torch.randint(0, 10, (B,), generator=g))


TERMS = {"ce": {"weight": 0.0}, "logits": {"weight": 1.0}, "jacobian": {"weight": 1.0, "select": "full"},
         "attention_jacobian": {"weight": 1.0, "layers": [["pool2", "pool2"]]}}


def _attention_ref(s_ref, t_net, x, name="pool2"):
    """eq. 10 on one sample at a time (B = 1 batches of eval-mode networks: no coupling possible)."""
    vals = []
    for b in range(x.shape[0]):
        xb = x[b:b + 1].clone().requires_grad_(True)
        with capture_features(s_ref, [name]) as fs, capture_features(t_net, [name]) as ft:
            s_ref(xb), t_net(xb)
        vals.append(attention_jacobian_loss(fs[name], ft[name], xb, pool=5))
    return torch.stack(vals).mean()


def test_distill_losses_use_per_sample_jacobians_of_the_train_mode_student(make_config, teacher_file):
    m = _distill(make_config, teacher_file, TERMS)
    student, teacher = m.eval_model(), m.frozen["teacher"]
    assert student.training and coupled_norms(student)
    batch = _fm_batch()
    ref_s = _batch_stat_copy(student, batch.x)
    terms = m.losses(batch)
    expected = jacobian_matching(_ref_jacobian(ref_s, batch.x), _ref_jacobian(teacher, batch.x))
    assert torch.allclose(terms["jacobian"], expected, rtol=1e-5)
    assert torch.allclose(terms["attention_jacobian"], _attention_ref(ref_s, teacher, batch.x), rtol=1e-5)


def test_distill_terms_are_zero_for_a_train_mode_copy_of_the_teacher(make_config, teacher_file):
    m = _distill(make_config, teacher_file, TERMS)
    batch = _fm_batch()
    teacher = m.frozen["teacher"]
    teacher.load_state_dict(_batch_stat_copy(teacher, batch.x).state_dict())  # eval mode, this batch's stats
    m.eval_model().load_state_dict(teacher.state_dict())  # the student: the same network in train mode
    terms = m.losses(batch)
    for k in ("logits", "jacobian", "attention_jacobian"):
        assert abs(terms[k].item()) < 1e-12, (k, terms[k].item())


def test_teacher_penalty_is_on_per_sample_jacobians(make_config):
    cfg = load_run_config([make_config(objective={"teacher": {"jacobian_penalty": {"weight": 2.0}}},
                                       model={"name": "vgg4", "kwargs": {"width": 0.125}})])
    m = TeacherTraining(cfg, SPEC)
    model = m.players["model"].double()
    batch = _fm_batch()
    ref = _batch_stat_copy(model, batch.x)
    m.step_optimizer = lambda name, loss: None  # no optimiser set up here: only the step's losses are read
    out = m.training_step(batch, 0)
    j = _ref_jacobian(ref, batch.x)[torch.arange(B), batch.y]  # [B, D] of the label's logit
    # the logged term is weighted (lambda = 2)
    assert torch.allclose(out["jacobian_penalty"], 2.0 * j.pow(2).sum(1).mean(), rtol=1e-5)
