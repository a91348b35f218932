"""The per-step and per-run cost of the loop: plain-attribute term configs, the label range checked
once, Fabric wrappers only where they act, ``last.ckpt`` storing each tensor once, and the end-of-run
evaluation making no duplicate passes (with the same summary values)."""
from __future__ import annotations

import json
from dataclasses import is_dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.data.batch import Batch
from kdlab.engine import load_checkpoint, load_classifier, make_fabric
from kdlab.engine.speed import fabric_wraps, setup_player
from kdlab.losses import cross_entropy
from kdlab.metrics import accuracy_under_noise, evaluate_accuracy
from kdlab.runner import datasets_for, load_run_config, train
from kdlab.terms import Outputs, TermContext, term_config
from kdlab.terms.base import TERMS


def _ctx():
    return TermContext(method="distill", kind="classifier", student=nn.Linear(4, 3), teacher=nn.Linear(4, 3),
                       student_input=(4,), teacher_input=(4,),
                       provides=frozenset({"teacher", "logits", "labels", "features"}), num_classes=3)


def test_term_config_is_plain_attributes_and_gives_the_formula():
    term = TERMS.get("kd")(term_config("kd", {"temperature": 2.0}), _ctx())
    assert is_dataclass(term.cfg) and term.cfg.temperature == 2.0
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    got = term(Outputs(out=zs), Outputs(out=zt), Batch(size=5))
    p_t = F.softmax(zt / 2, dim=1)
    want = 4 * (p_t * (p_t.log() - F.log_softmax(zs / 2, dim=1))).sum(1).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_ce_term_checks_the_label_range_on_its_first_batch():
    bad = Batch(y=torch.tensor([0, 3]), size=2)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        TERMS.get("ce")(term_config("ce", {}), _ctx())(Outputs(out=torch.zeros(2, 3)), None, bad)
    term = TERMS.get("ce")(term_config("ce", {}), _ctx())
    z, y = torch.randn(2, 3), torch.tensor([0, 2])
    assert term(Outputs(out=z), None, Batch(y=y, size=2)).item() == pytest.approx(F.cross_entropy(z, y).item())
    with pytest.raises(IndexError):  # later batches: torch's own check, no host read-back of ours
        term(Outputs(out=z), None, bad)
    with pytest.raises(ValueError, match="must lie in"):  # the pure function checks by default
        cross_entropy(z, torch.tensor([0, 3]))


def test_fabric_wrappers_only_where_they_act():
    cfg = load_run_config([{"trainer": {"accelerator": "cpu"}}])
    fabric = make_fabric(cfg.trainer)
    assert not fabric_wraps(fabric)
    net = nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    m, o = setup_player(fabric, net, opt)
    assert m is net and o is opt
    bf16 = make_fabric(load_run_config([{"trainer": {"accelerator": "cpu", "precision": "bf16-mixed"}}]).trainer)
    assert fabric_wraps(bf16)
    m, _ = setup_player(bf16, nn.Linear(3, 2), None)
    assert m is not net and type(m).__name__ == "_FabricModule"


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_last_ckpt_stores_each_tensor_once(make_config):
    run = train(load_run_config([make_config(
        name="size", model={"name": "mlp", "kwargs": {"hidden": [256, 256]}},
        trainer={"epochs": 1, "progress": False, "tensorboard": False}, data={"val_size": 0})]))
    path = run / "checkpoints" / "last.ckpt"
    model = load_classifier(path)  # the exported view is still there, loadable standalone
    weights = _nbytes(model.state_dict().values())
    adam = 2 * _nbytes(model.parameters())  # exp_avg and exp_avg_sq
    assert path.stat().st_size < 1.3 * (weights + adam)
    ckpt = load_checkpoint(path)
    exported = load_classifier(run / "teacher.safetensors").state_dict()
    for k, v in ckpt["model"].items():
        assert torch.equal(v, exported[k]) and torch.equal(v, ckpt["method"]["players"]["model"][k])


def _count_passes(monkeypatch):
    import kdlab.games.evaluation as evaluation
    import kdlab.metrics.accuracy as accuracy

    calls = []

    def counted(fn):
        def wrapper(*args, **kwargs):
            calls.append(kwargs.get("noise_sigma", 0.0))
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(evaluation, "evaluate_accuracy", counted(evaluation.evaluate_accuracy))
    monkeypatch.setattr(accuracy, "evaluate_accuracy", counted(accuracy.evaluate_accuracy))
    return calls


def test_end_of_run_evaluation_makes_no_duplicate_passes(make_config, monkeypatch):
    cfg = load_run_config([make_config(name="ev", data={"val_size": 0},
                                       trainer={"epochs": 1, "progress": False, "tensorboard": False},
                                       eval={"latency": False, "noise_sigmas": [0.0, 0.2]})])
    calls = _count_passes(monkeypatch)
    run = train(cfg)
    assert calls == [0.0, 0.2]  # clean (best = last, sigma 0 = clean) and sigma 0.2: was 4 passes
    monkeypatch.undo()
    s = json.loads((run / "summary.json").read_text())
    data = datasets_for(cfg)
    from kdlab.data import make_loader

    loader = make_loader(data.test, cfg.data.eval_batch_size, shuffle=False, seed=cfg.seed)
    model = load_classifier(run / "teacher.safetensors")
    clean = evaluate_accuracy(model, loader)
    assert s["test_acc_best"] == s["test_acc_last"] == clean
    noise = accuracy_under_noise(model, loader, sigmas=[0.0, 0.2], seed=cfg.eval.noise_seed)
    assert s["noise_acc"] == {"0.0": noise[0.0], "0.2": noise[0.2]} and noise[0.0] == clean


def test_last_weights_are_tested_when_they_are_not_the_best(make_config):
    cfg = load_run_config([make_config(name="bl", optim={"lr": 0.05})])
    run = train(cfg)
    s = json.loads((run / "summary.json").read_text())
    data = datasets_for(cfg)
    from kdlab.data import make_loader

    loader = make_loader(data.test, cfg.data.eval_batch_size, shuffle=False, seed=cfg.seed)
    last = load_classifier(run / "checkpoints" / "last.ckpt")
    assert s["test_acc_last"] == evaluate_accuracy(last, loader)
    assert s["test_acc_best"] == evaluate_accuracy(load_classifier(run / "checkpoints" / "best.ckpt"), loader)


def test_evaluate_and_export_honour_the_runs_threads(tmp_path, monkeypatch):
    from kdlab.cli import apply_threads, run_threads

    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("trainer:\n  threads: 1\n")
    assert run_threads(str(run)) == run_threads(str(run / "student.safetensors")) == 1
    assert run_threads(str(run / "checkpoints" / "best.ckpt")) == 1
    assert run_threads(str(tmp_path / "elsewhere.safetensors")) is None
    got = []
    monkeypatch.setattr(torch, "set_num_threads", got.append)
    apply_threads(None, str(run))
    apply_threads(2, str(run))  # --threads wins
    assert got == [1, 2]
    with pytest.raises(ValueError, match="--threads"):
        apply_threads(0, str(run))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_step_backward_goes_through_fabric_only_where_fabric_wraps(make_config, tmp_path, monkeypatch, precision):
    """One process in fp32: the step calls ``loss.backward()`` itself (Fabric's would add only no-op hooks);
    bf16-mixed: through ``fabric.backward``. Either way the student's gradient is CE + T^2 KL written out
    here, on the same batch and weights."""
    from lightning_fabric import Fabric

    from kdlab.data import dataset_spec
    from kdlab.engine import save_classifier
    from kdlab.methods import METHODS
    from kdlab.models import build_model

    torch.manual_seed(0)
    teacher = save_classifier(build_model("mlp", 10, 1, 28, hidden=[]), tmp_path / "t.safetensors", data="fashion-mnist")
    cfg = load_run_config([make_config(
        name="bw", method="distill", teacher={"checkpoint": str(teacher)}, model={"name": "mlp", "kwargs": {"hidden": []}},
        objective={"student": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 2.0}}},
        trainer={"accelerator": "cpu", "precision": precision})])
    method = METHODS.get("distill")(cfg, dataset_spec("fashion-mnist"))
    calls = []
    real = Fabric.backward
    monkeypatch.setattr(Fabric, "backward", lambda self, loss, *a, **k: (calls.append(1), real(self, loss, *a, **k)))
    method.setup(make_fabric(cfg.trainer))
    method.train()
    net = method.eval_model()
    before = [p.detach().clone() for p in net.parameters()]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 1, 28, 28, generator=g), torch.randint(0, 10, (6,), generator=g)
    method.training_step(Batch(x=x, y=y), 0)
    assert len(calls) == (precision != "32-true")
    if precision != "32-true":
        return  # autocast changes the numbers; the call is what this case checks
    w, b = (p.clone().requires_grad_(True) for p in before)
    with torch.no_grad():
        zt = method.frozen["teacher"](x)
    zs = x.flatten(1) @ w.T + b
    p_t = F.softmax(zt / 2, dim=1)
    loss = F.cross_entropy(zs, y) + 4 * (p_t * (p_t.log() - F.log_softmax(zs / 2, dim=1))).sum(1).mean()
    gw, gb = torch.autograd.grad(loss, [w, b])
    got = [p.grad for p in net.parameters()]
    assert torch.allclose(got[0], gw, rtol=1e-5, atol=1e-7) and torch.allclose(got[1], gb, rtol=1e-5, atol=1e-7)


def test_progress_bar_is_drawn_only_on_a_terminal():
    """A log file gets the epoch lines and no bar (rich would write only its last frame there, cut short)."""
    import io
    import re

    from rich.console import Console

    from kdlab.engine.logging import ProgressBar

    for terminal in (False, True):
        out = io.StringIO()
        with ProgressBar(console=Console(file=out, force_terminal=terminal, width=100)) as bar:
            bar.start_epoch(0, 1, 3)
            bar.advance()
            bar.print("epoch 1/1  train/loss=1")
            assert (bar._progress is not None) == terminal
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # a terminal's text carries colour codes
        assert "epoch 1/1  train/loss=1" in text and ("━" in text) == terminal
