"""The jacobian / lwf methods, the teacher's Jacobian-norm penalty and data.classes, on real Fashion-MNIST."""
from __future__ import annotations

import json

import pytest
import torch

from kdlab.config import ConfigError
from kdlab.data import Batch, dataset_spec
from kdlab.engine import load_classifier, save_classifier
from kdlab.methods import JacobianDistill, LwFTransfer
from kdlab.models import build_model
from kdlab.runner import datasets_for, load_run_config, train

SPEC = dataset_spec("fashion-mnist")
SMALL_VGG = {"name": "vgg4", "kwargs": {"width": 0.125}}


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(0)
    return save_classifier(build_model("vgg9", width=0.125), tmp_path / "teacher.safetensors", data="fashion-mnist")


def _method(make_config, teacher_file, sections, model=None, cls=JacobianDistill, method="jacobian", spec=SPEC):
    cfg = load_run_config([make_config(method=method, teacher={"checkpoint": str(teacher_file)}, **sections,
                                       model=model or SMALL_VGG)])
    return cls(cfg, spec)


def _batch(n=6):
    g = torch.Generator().manual_seed(1)
    return Batch(x=torch.randn(n, 1, 28, 28, generator=g), y=torch.randint(0, 10, (n,), generator=g))


def _terms(ce=0.0, logits=1.0, jacobian=1.0, select="full", attention=1.0, attention_jacobian=1.0):
    """An ``objective`` section with every term of the Jacobian paper (weights and the Jacobian selection)."""
    return {"objective": {"student": {"ce": {"weight": ce}, "logits": {"weight": logits},
                                      "jacobian": {"weight": jacobian, "select": select},
                                      "attention": {"weight": attention, "layers": [["pool1", "pool1"]]},
                                      "attention_jacobian": {"weight": attention_jacobian,
                                                             "layers": [["pool2", "pool2"]]}}}}


ALL_TERMS = _terms()


def test_student_equal_to_teacher_has_zero_matching_terms(make_config, teacher_file):
    method = _method(make_config, teacher_file, ALL_TERMS, model={"name": "vgg9", "kwargs": {"width": 0.125}})
    method.eval_model().load_state_dict(method.frozen["teacher"].state_dict())
    method.players["student"].eval()
    terms = method.losses(_batch())
    for k in ("logits", "jacobian", "attention", "attention_jacobian"):
        assert abs(terms[k].item()) < 1e-8, (k, terms[k].item())


def test_weights_scale_terms_and_only_the_student_gets_gradients(make_config, teacher_file):
    batch = _batch()
    sections = _terms(ce=0.5, logits=2.0, jacobian=3.0, select="top", attention=0.25, attention_jacobian=4.0)
    torch.manual_seed(0)
    weighted = _method(make_config, teacher_file, sections)
    weighted.players["student"].eval()
    w_terms = weighted.losses(batch)
    torch.manual_seed(0)
    unit = _method(make_config, teacher_file, _terms(ce=1.0, logits=1.0, jacobian=1.0, select="top", attention=1.0,
                                                     attention_jacobian=1.0))
    unit.players["student"].eval()
    terms = unit.losses(batch)
    for k, w in (("ce", 0.5), ("logits", 2.0), ("jacobian", 3.0), ("attention", 0.25), ("attention_jacobian", 4.0)):
        assert torch.allclose(w_terms[k], w * terms[k], rtol=1e-5), k
        assert terms[k].item() > 0, k
    terms["jacobian"].backward(retain_graph=True)
    net = unit.eval_model()
    # conv weights get a gradient through double backprop (biases do not: a piecewise-linear
    # network's Jacobian depends on them only through the ReLU pattern)
    conv_grads = [p.grad for p in net.parameters() if p.dim() == 4]
    assert len(conv_grads) == 3 and all(g is not None and g.abs().sum() > 0 for g in conv_grads)
    assert all(p.grad is None for p in unit.frozen["teacher"].parameters())


def test_bad_input_errors(make_config, teacher_file):
    with pytest.raises(ConfigError, match=r"'block7'.*known features: pool1, pool2, pool3, gap"):
        _method(make_config, teacher_file,
                {"objective": {"student": {"attention_jacobian": {"weight": 1.0, "layers": [["block7", "pool1"]]}}}})
    with pytest.raises(ValueError, match=r"student 'pool1' is \(14, 14\), teacher 'pool2' is \(7, 7\)"):
        _method(make_config, teacher_file,
                {"objective": {"student": {"attention_jacobian": {"weight": 1.0, "layers": [["pool1", "pool2"]]}}}})
    with pytest.raises(ValueError, match=r"objective\.student\.jacobian\.select' = 'diag'; accepted: full, label, top"):
        _method(make_config, teacher_file, {"objective": {"student": {"jacobian": {"weight": 1.0, "select": "diag"}}}})
    with pytest.raises(ValueError, match=r"players\.input_noise' = -0\.5 must be >= 0"):
        _method(make_config, teacher_file, {"players": {"input_noise": -0.5}})
    with pytest.raises(ValueError, match=r"objective\.student\.attention_jacobian\.layers"):
        _method(make_config, teacher_file, {"objective": {"student": {"attention_jacobian": {"weight": 1.0}}}})
    from kdlab.methods import TeacherTraining

    with pytest.raises(ValueError, match=r"objective\.teacher\.jacobian_penalty\.form' = 'l1'; accepted: se, ce"):
        TeacherTraining(load_run_config([make_config(
            objective={"teacher": {"jacobian_penalty": {"weight": 1.0, "form": "l1"}}})]), SPEC)
    with pytest.raises(ValueError, match=r"players\.input_noise' = -1\.0 must be >= 0"):
        TeacherTraining(load_run_config([make_config(players={"input_noise": -1.0})]), SPEC)


def _input_grad_norm(model, x, y):
    x = x.clone().requires_grad_(True)
    model.eval()
    logits = model(x)
    (g,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), x)
    return g.flatten(1).norm(dim=1).mean().item()


def test_jacobian_penalty_lowers_input_gradient_norm(make_config):
    """Same seed and data, lambda = 0 vs lambda = 10 (Table 2): the trained model's ||d logit_y / dx|| is smaller."""
    norms = {}
    for lam in (0.0, 10.0):
        cfg = load_run_config([make_config(name=f"jp{lam}", objective={"teacher": {"jacobian_penalty": {"weight": lam}}},
                                           trainer={"epochs": 4, "progress": False, "tensorboard": False})])
        run = train(cfg)
        model = load_classifier(run / "teacher.safetensors")
        test = datasets_for(cfg).test
        xs, ys = zip(*[test[i] for i in range(300)])
        norms[lam] = _input_grad_norm(model, torch.stack(xs), torch.tensor(ys))
        summary = json.loads((run / "summary.json").read_text())
        assert summary["test_acc_best"] > 50  # both still learn (10 classes, chance is 10%)
    assert norms[10.0] < 0.7 * norms[0.0], norms


def test_data_classes_keeps_and_relabels_a_label_subset(make_config):
    cfg = load_run_config([make_config(data={"classes": [7, 2, 9], "n_per_class": 5, "val_size": 30})])
    d = datasets_for(cfg)
    assert d.spec.num_classes == 3 and d.spec.class_names == [SPEC.class_names[c] for c in (7, 2, 9)]
    ys = torch.tensor([d.train[i][1] for i in range(len(d.train))])
    assert sorted(ys.tolist()) == [0] * 5 + [1] * 5 + [2] * 5
    assert len(d.test) == 500  # max_test of the small config, from the 3 x 1000 test images of these classes
    assert sorted(set(int(d.test[i][1]) for i in range(len(d.test)))) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"data.classes.*\[3, 3\].*distinct"):
        datasets_for(load_run_config([make_config(data={"classes": [3, 3]})]))


def test_lwf_two_heads_transfer_end_to_end(make_config, tmp_path):
    """Teacher on classes 0-4, student on 5-9 with LwF + Jacobians; oracle init copies the teacher."""
    tcfg = load_run_config([make_config(name="src", model=SMALL_VGG, data={"classes": [0, 1, 2, 3, 4]},
                                        trainer={"epochs": 1, "progress": False, "tensorboard": False})])
    tdir = train(tcfg)
    target = {"classes": [5, 6, 7, 8, 9]}
    terms = {"ce": {"weight": 1.0}, "logits": {"weight": 1.0}, "jacobian": {"weight": 1.0},
             "attention_jacobian": {"weight": 1.0, "layers": [["pool1", "pool1"]]}}
    cfg = load_run_config([make_config(name="lwf", method="lwf", model=SMALL_VGG, data=target, objective={"student": terms},
                                       teacher={"checkpoint": str(tdir)},
                                       trainer={"epochs": 1, "progress": False, "tensorboard": False})])
    spec = datasets_for(cfg).spec
    m = LwFTransfer(cfg, spec)
    batch = _batch()
    out = m.players["student"](batch.x)
    tgt, src = out.logits_for_labels, out.out
    assert tgt.shape == (6, 5) and src.shape == (6, 5)
    terms = m.losses(Batch(x=batch.x, y=batch.y % 5))
    assert set(terms) == {"ce", "logits", "jacobian", "attention_jacobian", "loss"}
    run = train(cfg)
    s = json.loads((run / "summary.json").read_text())
    assert s["source_teacher"]["num_classes"] == 5 and "test_acc_best" in s
    oracle = load_run_config([make_config(name="oracle", method="lwf", model=SMALL_VGG, data=target,
                                          objective={"student": {"ce": {"weight": 1.0}, "logits": {"weight": 0.0}}},
                                          players={"init_from_teacher": True},
                                          teacher={"checkpoint": str(tdir)})])
    om = LwFTransfer(oracle, spec)
    t_state = om.frozen["teacher"].state_dict()
    s_state = om.eval_model().state_dict()
    copied = [k for k in s_state if k in t_state and s_state[k].shape == t_state[k].shape]
    assert copied and all(torch.equal(s_state[k], t_state[k]) for k in copied)
