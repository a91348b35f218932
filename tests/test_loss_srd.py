"""SRD/SRRL (Yang et al. 2021): the loss against numpy, the term (connector, the teacher's frozen classifier,
its default features, config errors). Shared helpers and the real run: tests/test_loss_logit.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdlab.config import ConfigError
from kdlab.data.batch import Batch
from kdlab.losses.srd import srd_loss
from kdlab.models import build_model
from kdlab.models.base import extract_features
from kdlab.terms import Outputs, term_config
from kdlab.terms.srd import SRDTerm
from test_loss_logit import _ctx, _rand, np_kl_rows, np_softmax


def _np_srd(fs, ft, zs, zt, t, p, alpha, beta, feature, logit):
    d = np.abs(fs - ft) ** p
    fm = d.mean() if feature == "mean" else np.log(d.sum())
    if logit == "kl":
        sr = t * t * np.sum(np_kl_rows(np_softmax(zt / t), np_softmax(zs / t))) / zs.shape[0]
    else:
        sr = np.mean((zs - zt) ** 2)
    return alpha * fm + beta * sr


@pytest.mark.parametrize("feature,logit,p,t", [("mean", "kl", 2.0, 1.0), ("mean", "mse", 2.0, 4.0),
                                               ("log_sum", "kl", 1.0, 4.0), ("log_sum", "mse", 3.0, 2.0)])
def test_srd_loss_matches_numpy(feature, logit, p, t):
    fs, ft = _rand(4, 6, 3, 3, seed=23), _rand(4, 6, 3, 3, seed=24)
    zs, zt = _rand(4, 5, seed=25, scale=2), _rand(4, 5, seed=26, scale=2)
    expected = _np_srd(fs.numpy(), ft.numpy(), zs.numpy(), zt.numpy(), t, p, 0.5, 2.0, feature, logit)
    out = srd_loss(fs, ft, zs, zt, temperature=t, exponent=p, alpha=0.5, beta=2.0, feature=feature, logit=logit)
    assert out.item() == pytest.approx(expected, rel=1e-10)


def _mlp(hidden, seed):
    torch.manual_seed(seed)
    return build_model("mlp", 10, 1, 28, hidden=hidden)


def test_srd_term_matches_numpy_and_teacher_classifier_gets_no_gradient():
    student, teacher = _mlp([16, 8], 0), _mlp([24, 12], 1)  # teacher params keep requires_grad (a codistill peer)
    term = SRDTerm(term_config("srd", {"temperature": 2.0}), _ctx(student, teacher))
    assert (term.s_name, term.t_name) == ("fc2", "fc2")  # found: the features feeding fc
    assert all(k.startswith("connector.") for k in term.state_dict())  # the teacher's fc is not the term's
    x = _rand(5, 1, 28, 28, seed=27).float()
    fs = student.body(x)
    with torch.no_grad():
        ft = teacher.body(x)
        zt = teacher(x)
    value = term(Outputs(out=student(x), features={"fc2": fs}), Outputs(out=zt, features={"fc2": ft}), Batch(x=x))
    with torch.no_grad():
        r = term.connector(fs).double().numpy()
        w, b = teacher.fc.weight.double().numpy(), teacher.fc.bias.double().numpy()
    expected = _np_srd(r, ft.double().numpy(), r @ w.T + b, zt.double().numpy(), 2.0, 2.0, 1.0, 1.0, "mean", "kl")
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert teacher.fc.weight.grad is None and teacher.fc.bias.grad is None
    assert term.connector.body.weight.grad.abs().sum() > 0
    assert student.body.fc1[0].weight.grad.abs().sum() > 0


def test_srd_term_maps_and_config_errors():
    # maps: ResNet layer3 -> connector (1x1 conv + BN) -> teacher's gap + fc
    student, teacher = build_model("resnet8", 10, 1, 28), build_model("resnet8", 10, 1, 28)
    term = SRDTerm(term_config("srd", {"layers": [["layer3", "layer3"]]}), _ctx(student, teacher))
    x = _rand(3, 1, 28, 28, seed=28).float()
    zs, fs = extract_features(student, x, ["layer3"])
    with torch.no_grad():
        zt, ft = extract_features(teacher, x, ["layer3"])
    assert torch.isfinite(term(Outputs(out=zs, features=fs), Outputs(out=zt, features=ft), Batch(x=x)))
    lenet = lambda: build_model("lenet", 10, 1, 28, channels=[4, 8], fc=32)  # noqa: E731
    assert SRDTerm(term_config("srd", {}), _ctx(lenet(), lenet())).t_name == "fc1"
    with pytest.raises(ConfigError, match=r"teacher feature 'pool2' \(8, 7, 7\) cannot feed the teacher's fc \(in_features 32\)"):
        SRDTerm(term_config("srd", {"layers": [["pool2", "pool2"]]}), _ctx(lenet(), lenet()))
    with pytest.raises(ConfigError, match=r"the teacher Sequential has none"):
        SRDTerm(term_config("srd", {"layers": [["fc1", "0"]]}), _ctx(lenet(), nn.Sequential(nn.Flatten(), nn.Linear(784, 10))))
    with pytest.raises(ConfigError, match=r"one pair of penultimate features"):
        SRDTerm(term_config("srd", {"layers": [["fc1", "fc1"], ["fc1", "fc1"]]}), _ctx(lenet(), lenet()))
    with pytest.raises(ConfigError, match=r"student 'fc1' \(32,\) and teacher 'layer3' \(64, 7, 7\)"):
        SRDTerm(term_config("srd", {"layers": [["fc1", "layer3"]]}), _ctx(lenet(), teacher))
