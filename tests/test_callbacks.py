"""Engine callbacks (:mod:`kdlab.engine.callbacks`): the read-only view changes nothing in a run, every
step and epoch is seen, a failing callback stops the run by name and keeps ``last.ckpt``, and the KDGAN
experiments that trace their games through callbacks run end to end (smoke tests, marked slow)."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from conftest import small_config
from kdlab.engine import Callback, CallbackError, Trainer, load_checkpoint, unwrap
from kdlab.runner import load_run_config, train

# 100 training images: 2 steps of 50 per epoch; BatchNorm students (resnet8) and tiny LeNets
TINY = {"val_size": 100, "n_per_class": 10, "batch_size": 50, "max_test": 100}
LENET = {"channels": [4, 8], "fc": 32}


@pytest.fixture(scope="module")
def random_teacher(tmp_path_factory) -> Path:
    """A randomly initialised small LeNet saved as a kdlab classifier (a teacher needs only fixed weights)."""
    from kdlab.engine import save_classifier
    from kdlab.models import build_model

    torch.manual_seed(0)
    net = build_model("lenet", num_classes=10, in_channels=1, image_size=28, **LENET)
    return save_classifier(net, tmp_path_factory.mktemp("teacher") / "teacher.safetensors", data="fashion-mnist")


def _cfg(tmp_path: Path, name: str, method: str, teacher: Path) -> Any:
    """A two-epoch run of ``method`` (kdgan: three trained players; distill: a frozen teacher), BatchNorm student."""
    sections: Dict[str, Any] = {"data": TINY, "model": {"name": "resnet8", "kwargs": {}}, "teacher": {"checkpoint": str(teacher)},
                                "trainer": {"epochs": 2, "log_every_n_steps": 1}}
    if method == "kdgan":
        sections["players"] = {"disc_model": "lenet", "disc_kwargs": LENET, "disc_init": "scratch", "teacher_lr": 1e-3}
    else:
        sections["objective"] = {"student": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 4.0}}}
    return load_run_config([small_config(tmp_path, name=name, method=method, **sections)])


def _live(method: Any) -> Dict[str, Any]:
    """Everything a callback must not change (test-side, from the live method): each network's state_dict,
    its parameters' ``.grad``, its modules' train flags, and each optimizer's state."""
    out: Dict[str, Any] = {}
    for name, module in {**method.players, **method.frozen}.items():
        net = unwrap(module)
        out.update({f"{name}/state/{k}": v.detach().clone() for k, v in net.state_dict().items()})
        out.update({f"{name}/grad/{k}": None if p.grad is None else p.grad.clone() for k, p in net.named_parameters()})
        out[f"{name}/modes"] = tuple(m.training for m in net.modules())
    for name, opt in method.optimizers.items():
        if opt is None:
            continue
        for i, st in opt.state_dict()["state"].items():
            out.update({f"opt/{name}/{i}/{k}": v.clone() if torch.is_tensor(v) else v for k, v in st.items()})
    return out


def _assert_same(a: Dict[str, Any], b: Dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.is_tensor(b[k]) and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


class Tamper(Callback):
    """Tries every way the view offers to change a player, in every hook, and checks (against the live method,
    test-side only) that nothing changed."""

    def __init__(self) -> None:
        self.calls: Dict[str, int] = {}
        self.bn_clone_moved = False
        self.x = torch.randn(8, 1, 28, 28)

    def _tamper(self, view: Any, hook: str, x: torch.Tensor) -> None:
        self.calls[hook] = self.calls.get(hook, 0) + 1
        before = _live(view._method)
        torch.rand(7), random.random()  # the run's random streams
        for name in view.names() + view.frozen_names():
            h = view.module(name) if name in view.names() else view.frozen(name)
            for v in view.state_dict(name).values():
                v.add_(1)
            params, buffers = h.parameters(), h.buffers()
            with torch.no_grad():
                for p in params.values():
                    p.add_(1)
            out = h.functional(x.to(h.device), train=True)  # fresh clones, train-mode BatchNorm
            logits = getattr(out, "out", out)
            if logits.requires_grad:
                logits.square().mean().backward()
            running = {k: v.clone() for k, v in buffers.items()}
            out = h.functional(x.to(h.device), params=params, buffers=buffers, train=True)
            g = getattr(out, "out", out)
            if g.requires_grad:
                g.sum().backward()  # grads land on the clones in params
                assert all(p.grad is not None for p in params.values() if p.requires_grad)
            self.bn_clone_moved |= any("running_mean" in k and not torch.equal(running[k], buffers[k]) for k in buffers)
            first = next(iter(params))  # a partial dict: the other parameters are clones too, not the live ones
            out = view.functional(name, x.to(h.device), params={first: params[first]}, train=True)
            if getattr(out, "out", out).requires_grad:
                getattr(out, "out", out).sum().backward()
        torch.set_grad_enabled(False)  # a global switch: the engine restores it
        _assert_same(before, _live(view._method))

    def on_fit_start(self, view):
        self._tamper(view, "fit_start", self.x)

    def on_step_end(self, view, batch, step, logs):
        self._tamper(view, "step_end", batch.x)
        logs["loss"].add_(100.0)  # a copy: the logged values do not change
        batch.x.add_(1.0)  # the engine does not use the batch again

    def on_epoch_end(self, view, epoch, metrics):
        self._tamper(view, "epoch_end", self.x)

    def on_fit_end(self, view):
        self._tamper(view, "fit_end", self.x)


def _rows(run: Path) -> List[Dict[str, Any]]:
    """metrics.jsonl without the wall-clock columns."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("throughput", "time")} for r in rows]


@pytest.mark.parametrize("method", ["kdgan", "distill"])
def test_view_changes_nothing_and_a_run_with_callbacks_ends_bit_identical(method, random_teacher, tmp_path, monkeypatch):
    """A callback that adds to every tensor the view gives, backpropagates through functional outputs, runs
    train-mode BatchNorm forwards, draws random numbers and turns grad mode off leaves every player's
    state_dict, grads, modes and optimizer state bit-identical (checked in each hook), and the run ends
    exactly as one without it (weights, BatchNorm statistics, grads, optimizer state, logged losses)."""
    fitted = []
    original = Trainer.fit

    def spy(self, m, *args, **kwargs):
        fitted.append(m)
        return original(self, m, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", spy)
    plain = train(_cfg(tmp_path, "plain", method, random_teacher))
    tamper = Tamper()
    tampered = train(_cfg(tmp_path, "tampered", method, random_teacher), callbacks=[tamper])
    assert tamper.calls == {"fit_start": 1, "step_end": 4, "epoch_end": 2, "fit_end": 1}
    assert tamper.bn_clone_moved  # the BatchNorm forward did run in train mode, on the clones
    _assert_same(_live(fitted[0]), _live(fitted[1]))
    assert _rows(plain) == _rows(tampered)
    a, b = (load_checkpoint(r / "checkpoints" / "last.ckpt")["method"] for r in (plain, tampered))
    for player in a["players"]:
        _assert_same(a["players"][player], b["players"][player])


class Counter(Callback):
    def __init__(self) -> None:
        self.events: List[tuple] = []

    def on_fit_start(self, view):
        self.events.append(("start", view.epoch, view.step))

    def on_step_end(self, view, batch, step, logs):
        assert view.step == step and "loss" in logs
        self.events.append(("step", view.epoch, step, len(batch)))

    def on_epoch_end(self, view, epoch, metrics):
        assert view.epoch == epoch + 1 and "val/acc" in metrics and "train/loss" in metrics
        self.events.append(("epoch", epoch, view.step))

    def on_fit_end(self, view):
        self.events.append(("end", view.epoch, view.step))


def test_callbacks_see_every_step_and_epoch_and_a_read_only_config(make_config):
    seen = {}

    class Look(Callback):
        def on_fit_start(self, view):
            seen.update(method=view.method_name, names=view.names(), frozen=view.frozen_names(), zero=view.is_global_zero,
                        run_dir=view.run_dir)
            with pytest.raises(Exception, match="[Rr]ead-only"):
                view.cfg.seed = 5
            with pytest.raises(KeyError, match="players: model"):
                view.module("teacher")

    counter = Counter()
    # 100 images in batches of 30: 4 steps per epoch (30, 30, 30, 10)
    cfg = load_run_config([make_config(name="count", data={**TINY, "batch_size": 30}, trainer={"epochs": 2})])
    run = train(cfg, callbacks=[counter, Look()])
    steps = [e for e in counter.events if e[0] == "step"]
    assert [s[2] for s in steps] == list(range(1, 9))
    assert [s[1] for s in steps] == [0] * 4 + [1] * 4
    assert [s[3] for s in steps] == [30, 30, 30, 10] * 2
    assert counter.events[0] == ("start", 0, 0) and counter.events[-1] == ("end", 2, 8)
    assert [e for e in counter.events if e[0] == "epoch"] == [("epoch", 0, 4), ("epoch", 1, 8)]
    assert seen == {"method": "teacher", "names": ["model"], "frozen": [], "zero": True, "run_dir": run}
    assert cfg.seed == 0  # the run's own config is not the view's copy


class Boom(Callback):
    """Raises in hook ``hook`` during epoch ``epoch`` (0-based)."""

    def __init__(self, hook: str, epoch: int) -> None:
        self.hook, self.epoch = hook, epoch

    def _maybe(self, hook, view, epoch):
        if hook == self.hook and epoch == self.epoch:
            raise ValueError("the trace went wrong")

    def on_fit_start(self, view):
        self._maybe("on_fit_start", view, view.epoch)

    def on_step_end(self, view, batch, step, logs):
        self._maybe("on_step_end", view, view.epoch)

    def on_epoch_end(self, view, epoch, metrics):
        self._maybe("on_epoch_end", view, epoch)


@pytest.mark.parametrize("hook, epoch, kept", [("on_step_end", 1, 1), ("on_epoch_end", 0, 1), ("on_fit_start", 0, None)])
def test_a_failing_callback_stops_the_run_by_name_and_keeps_last_ckpt(hook, epoch, kept, make_config):
    cfg = load_run_config([make_config(name="boom", data=TINY, trainer={"epochs": 3})])
    with pytest.raises(CallbackError, match=rf"callback Boom failed in {hook} at epoch {epoch + 1}.*ValueError: the trace "
                                            r"went wrong; the run stopped") as info:
        train(cfg, callbacks=[Boom(hook, epoch)])
    assert isinstance(info.value.__cause__, ValueError)
    last = Path(cfg.out_dir) / "boom" / "checkpoints" / "last.ckpt"
    if kept is None:
        assert not last.exists() and "no epoch had completed" in str(info.value)
    else:
        assert load_checkpoint(last)["epoch"] == kept and str(last) in str(info.value)
        assert not (Path(cfg.out_dir) / "boom.lock").exists()  # the run directory is released
        run = train(cfg, resume=True)  # and continues where it stopped
        assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 3


def test_kdgan_estimators_rebuilt_from_the_pure_functions_match_the_method(random_teacher, tmp_path):
    """The traces' adversarial surrogate and temperature (kdlab.experiments.kdgan_traces) are the method's own."""
    from kdlab.data import dataset_spec
    from kdlab.experiments.kdgan_traces import adversarial_surrogate, kdgan_tau
    from kdlab.methods import KDGAN

    from types import SimpleNamespace

    from kdlab.data.batch import Batch
    from kdlab.terms import Outputs

    logits, d_logits = torch.randn(6, 10, requires_grad=True), torch.randn(6, 10)
    for players, adv in (({}, {"estimator": "exact"}), ({}, {"estimator": "code"}), ({"sampler": "categorical"}, {}),
                         ({"sampler": "gumbel"}, {"score": "concrete"}), ({}, {"baseline": "loo"}), ({}, {}),
                         ({}, {"estimator": "pathwise"})):
        base = small_config(tmp_path, name="est", method="kdgan", teacher={"checkpoint": str(random_teacher)},
                            players={"disc_model": "lenet", "disc_kwargs": LENET, "tau_decay": 0.5, **players},
                            objective={"student": {"kdgan_adversarial": adv}})
        m = KDGAN(load_run_config([base]), dataset_spec("fashion-mnist"))
        m.epoch = 3
        assert kdgan_tau(m.cfg.players, 3) == m.tau
        term = m.objective.terms["kdgan_adversarial"]  # the classifier's: alpha * A_c
        term._critic = SimpleNamespace(scores=lambda x: d_logits)
        torch.manual_seed(1)
        want = term(Outputs(out=logits), None, Batch(x=torch.zeros(6, 1, 28, 28)))
        torch.manual_seed(1)
        got = m.cfg.players.alpha * adversarial_surrogate(m.cfg.players, m.cfg.objective.student.kdgan_adversarial,
                                                          m.tau, logits, d_logits)
        assert torch.equal(want, got), (players, adv)


# ----------------------------------------------------------------------------- smoke tests (real training, slow)


def _count_trainings(monkeypatch) -> List[str]:
    from kdlab.experiments import grid

    trained: List[str] = []
    original = grid.train

    def counting(cfg, **kw):
        trained.append(cfg.name)
        return original(cfg, **kw)

    monkeypatch.setattr(grid, "train", counting)
    return trained


# n = 100, 4 steps of 25 per epoch, small validation and test splits, 2 epochs per run
SHRINK = ["data.n_per_class=10", "data.val_size=100", "data.max_test=200", "trainer.epochs=2"]


def _tiny(name: str, rows: List[str], **small: Any) -> Any:
    """Experiment spec ``name`` at small scale cut to ``rows`` (and the inits they use), seed 0, no declared
    comparisons (a smoke run, not a test of the claims); ``small``: keys of its small scale replaced."""
    import yaml

    from kdlab.compare import load_spec
    from kdlab.experiments.specs import SPEC_DIR

    raw = yaml.safe_load((SPEC_DIR / f"{name}.yaml").read_text())
    raw["methods"] = [m for m in raw["methods"] if m["name"] in rows]
    for key in ("primary", "secondary"):
        raw.pop(key, None)
    scale = {**raw["scales"]["small"], "seeds": [0], **small}
    scale["rows"] = {k: v for k, v in (scale.get("rows") or {}).items() if k in rows}
    return load_spec({**raw, "scales": {"small": scale}}, scale="small")


@pytest.mark.slow
def test_smoke_kdgan_fig7_end_to_end_on_the_engine(tmp_path, monkeypatch):
    """SMOKE TEST: ``kdgan-fig7 --scale small``'s first row shrunk (2 epochs, 3 draws, n = 100, small splits)
    trains its game as an engine run with the gradient-variance callback; the analysis' metrics reach
    results.json and the report (with its trace plots); a second call reuses every run with its analysis."""
    from kdlab.compare import run_compare

    trained = _count_trainings(monkeypatch)
    spec = _tiny("kdgan-fig7", ["categorical"], callbacks=[{"name": "kdgan-grad-variance", "draws": 3}])
    report = run_compare(spec, tmp_path, SHRINK).report
    trace = json.loads((tmp_path / "kdgan-fig7-categorical-s0" / "analysis" / "kdgan-grad-variance-draws3.json").read_text())
    assert [r["epoch"] for r in trace["trace"]] == [0, 1] and all(r["adv"] > 0 and r["ds"] > 0 for r in trace["trace"])
    (row,) = json.loads((report.parent / "results.json").read_text())["rows"]
    assert row["runs"][0]["analysis"]["adv_grad_var_log10"] == pytest.approx(
        math.log10((trace["trace"][0]["adv"] + trace["trace"][1]["adv"]) / 2))
    assert "## Analyses" in report.read_text() and (report.parent / "plots" / "kdgan-grad-variance-adv.png").is_file()
    assert trained == ["kdgan-fig7-init-teacher-s0", "kdgan-fig7-categorical-s0"]
    run_compare(spec, tmp_path, SHRINK)
    assert len(trained) == 2  # every run reused with its analysis


@pytest.mark.slow
def test_smoke_kdgan_teacher_collapse_end_to_end_on_the_engine(tmp_path, monkeypatch):
    """SMOKE TEST: ``kdgan-teacher-collapse --scale small`` shrunk to the published row and a warm-up row (8 game
    steps traced every 4, n = 100 in batches of 25): each game an engine run traced by the teacher-trace
    callback, the warm-up an init run (d alone) whose d, saved by the save-player callback, the game continues
    from; the trace's metrics reach results.json."""
    from kdlab.compare import run_compare

    trained = _count_trainings(monkeypatch)
    spec = _tiny("kdgan-teacher-collapse", ["published", "scratch-warm"],
                 callbacks=[{"name": "kdgan-teacher-trace", "every": 4}])
    report = run_compare(spec, tmp_path, SHRINK + ["data.batch_size=25"]).report
    assert trained == ["kdgan-teacher-collapse-init-teacher-s0", "kdgan-teacher-collapse-init-warm-scratch-s0",
                       "kdgan-teacher-collapse-published-s0", "kdgan-teacher-collapse-scratch-warm-s0"]
    rows = {e["slug"]: e for e in json.loads((report.parent / "results.json").read_text())["rows"]}
    for slug, steps, file in (("published", [0, 4, 8], "every4"), ("scratch-warm", [40, 44, 48], "every4-offset40")):
        trace = json.loads((tmp_path / f"kdgan-teacher-collapse-{slug}-s0" / "analysis"
                            / f"kdgan-teacher-trace-{file}.json").read_text())["trace"]
        assert [r["step"] for r in trace] == steps, slug
        assert all(0 <= r["teacher_acc"] <= 100 and 0 <= r["d_misrank"] <= 1 for r in trace)
        got = rows[slug]["runs"][0]["analysis"]
        assert got["teacher_acc_drop"] == pytest.approx(trace[0]["teacher_acc"] - trace[-1]["teacher_acc"])
    game = yaml_config(tmp_path / "kdgan-teacher-collapse-scratch-warm-s0")
    assert game["players"]["disc_init"] == str(tmp_path / "kdgan-teacher-collapse-init-warm-scratch-s0"
                                               / "discriminator.safetensors")
    assert game["players"]["tau_start"] == pytest.approx(10.0 * 0.88 ** 8)  # the warm-up's 8 epochs of decay
    assert (report.parent / "plots" / "kdgan-teacher-trace-teacher_acc.png").is_file()
    run_compare(spec, tmp_path, SHRINK + ["data.batch_size=25"])
    assert len(trained) == 4  # every run reused with its analysis


def yaml_config(run: Path) -> Dict[str, Any]:
    """A run's resolved ``config.yaml`` as a dict."""
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())
