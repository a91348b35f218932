"""The distill method: the loss terms, their wiring to features, and its bad-input errors."""
from __future__ import annotations

import pytest
import torch

from kdlab.data import Batch, dataset_spec
from kdlab.engine import save_classifier
from kdlab.methods import Distill, TeacherMismatchError
from kdlab.config import ConfigError
from kdlab.models import build_model
from kdlab.runner import load_run_config

SPEC = dataset_spec("fashion-mnist")


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(0)
    return save_classifier(build_model("lenet"), tmp_path / "teacher.safetensors", data="fashion-mnist")


def _method(make_config, teacher_file, terms, model=None, spec=SPEC):
    cfg = load_run_config(
        [make_config(method="distill", teacher={"checkpoint": str(teacher_file)}, objective={"student": terms},
                     model=model or {"name": "lenet", "kwargs": {}})]
    )
    return Distill(cfg, spec)


def _batch(n=8):
    g = torch.Generator().manual_seed(1)
    return Batch(x=torch.randn(n, 1, 28, 28, generator=g), y=torch.randint(0, 10, (n,), generator=g))


def test_student_equal_to_teacher_has_zero_transfer_losses(make_config, teacher_file):
    terms = {"ce": {"weight": 0.0}, "kd": {"weight": 1.0}, "logits": {"weight": 1.0},
             "attention": {"weight": 1.0, "layers": [["pool1", "pool1"], ["pool2", "pool2"]]}}
    method = _method(make_config, teacher_file, terms)
    method.eval_model().load_state_dict(method.frozen["teacher"].state_dict())
    method.players["student"].eval()
    with torch.no_grad():
        terms = method.losses(_batch())
    for k in ("kd", "logits", "attention"):
        assert abs(terms[k].item()) < 1e-5, (k, terms[k].item())


def test_weights_scale_terms_and_gradients_reach_only_the_student(make_config, teacher_file):
    weights = {"ce": 0.5, "kd": 2.0, "logits": 0.1, "hints": 3.0, "attention": 4.0}
    layers = {"hints": [["pool2", "pool2"]], "attention": [["pool1", "pool1"]]}

    def terms(w):
        return {k: {"weight": w[k], **({"layers": layers[k]} if k in layers else {})} for k in w}

    model = {"name": "lenet", "kwargs": {"channels": [8, 16], "fc": 64}}
    batch = _batch()
    torch.manual_seed(0)
    weighted = _method(make_config, teacher_file, terms(weights), model).losses(batch)
    torch.manual_seed(0)
    unit = _method(make_config, teacher_file, terms({k: 1.0 for k in weights}), model)
    plain = unit.losses(batch)
    for k, w in (("ce", 0.5), ("kd", 2.0), ("logits", 0.1), ("hints", 3.0), ("attention", 4.0)):
        assert torch.allclose(weighted[k], w * plain[k], rtol=1e-5), k
    assert torch.allclose(plain["loss"], sum(plain[k] for k in ("ce", "kd", "logits", "hints", "attention")))
    plain["loss"].backward()
    student = unit.players["student"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.net.parameters())
    regressors = list(student.objective.terms["hints"].parameters())
    assert regressors and all(p.grad is not None for p in regressors)  # the hint regressor trains too
    assert all(p.grad is None for p in unit.frozen["teacher"].parameters())


def test_ce_only_run_does_not_run_the_teacher(make_config, teacher_file):
    method = _method(make_config, teacher_file, {"ce": {"weight": 1.0}},
                     {"name": "mlp", "kwargs": {"hidden": [16]}})
    calls = []
    method.frozen["teacher"].register_forward_hook(lambda *a: calls.append(1))
    method.losses(_batch())
    assert calls == []


def test_bad_input_errors(make_config, teacher_file):
    with pytest.raises(TeacherMismatchError, match=r"\(10, 1, 28\).*\(100, 3, 32\)"):
        _method(make_config, teacher_file, {"kd": {"weight": 1.0}}, spec=dataset_spec("cifar100"))
    with pytest.raises(ValueError, match=r"student 'pool1' is \(14, 14\).*teacher 'pool2' is \(7, 7\)"):
        _method(make_config, teacher_file, {"attention": {"weight": 1.0, "layers": [["pool1", "pool2"]]}})
    with pytest.raises(ConfigError, match=r"block9.*known features:.*pool2"):
        _method(make_config, teacher_file, {"hints": {"weight": 1.0, "layers": [["block9", "pool2"]]}})
    with pytest.raises(ValueError, match=r"objective\.student\.hints\.layers"):
        _method(make_config, teacher_file, {"hints": {"weight": 1.0}})
    with pytest.raises(ValueError, match="no term with a weight > 0"):
        _method(make_config, teacher_file, {"ce": {"weight": 0.0}})
    with pytest.raises(ValueError, match=r"objective\.student\.kd\.temperature"):
        _method(make_config, teacher_file, {"kd": {"weight": 1.0, "temperature": 0.0}})


def test_model_checkpoint_initialises_the_student(make_config, teacher_file, tmp_path):
    cfg = load_run_config([make_config(method="distill", teacher={"checkpoint": str(teacher_file)},
                                       model={"name": "lenet", "kwargs": {}, "checkpoint": str(teacher_file)},
                                       objective={"student": {"kd": {"weight": 1.0}}})])
    student = Distill(cfg, SPEC).eval_model()
    teacher = Distill(cfg, SPEC).frozen["teacher"]
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), teacher.state_dict().values()))
    bad = load_run_config([make_config(method="distill", teacher={"checkpoint": str(teacher_file)},
                                       model={"name": "mlp", "kwargs": {"hidden": [8]}, "checkpoint": str(teacher_file)})])
    with pytest.raises(ValueError, match="lenet"):
        Distill(bad, SPEC)
