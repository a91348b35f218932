"""VEM (Kang et al. 2022): Langevin against a known Gaussian, the EBM objective's sign, spectral norm on
every layer, gradients of the student's term, the MI lower bound against a closed-form MI, checkpoint and
resume, bad input, and real distill / gan-compression runs with the term."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from kdlab.config import ConfigError
from kdlab.data.batch import Batch
from kdlab.engine import NonFiniteLossError, load_checkpoint
from kdlab.losses.ebm import ebm_loss, langevin, vem_student_loss
from kdlab.models.ebm import ConvEnergy, MLPEnergy, build_energy, weighted_layers
from kdlab.runner import load_run_config, train
from kdlab.terms import Outputs, TermContext, build_objective
from conftest import gan_student_config


# ------------------------------------------------------------------------------------- Langevin


@pytest.mark.parametrize("coupling", ["paper", "ports"])
def test_langevin_samples_a_known_gaussian(coupling):
    """E(t) = ||t - mu||^2 / (2 s^2): small steps give samples of N(mu, s^2) (eq. 7, K large)."""
    mu, s = torch.tensor([1.0, -2.0]), 0.5
    energy = lambda x: ((x - mu) ** 2).sum(1) / (2 * s ** 2)  # noqa: E731
    lam = 0.01
    # the ports' update with eta = lam / 2 and sigma = sqrt(lam) is eq. 7 with lambda = lam
    kw = dict(step_size=lam) if coupling == "paper" else dict(step_size=lam / 2, noise=math.sqrt(lam))
    x = langevin(energy, torch.zeros(4000, 2), steps=1500, coupling=coupling,
                 generator=torch.Generator().manual_seed(0), **kw)
    assert not x.requires_grad
    assert torch.allclose(x.mean(0), mu, atol=0.03)
    # the unadjusted chain's stationary variance is s^2 / (1 - lam / (4 s^2)): 1% above s^2 here
    assert torch.allclose(x.var(0), torch.full((2,), s ** 2), rtol=0.06)


def test_langevin_is_one_gradient_step_without_noise_and_rejects_bad_settings():
    x0 = torch.randn(5, 3)
    energy = lambda x: (x ** 3).sum(1)  # noqa: E731  grad = 3 x^2
    got = langevin(energy, x0, steps=1, step_size=0.1, noise=0.0)
    assert torch.allclose(got, x0 - 0.1 * 3 * x0 ** 2)
    for bad, match in (({"steps": 0}, "K = 0"), ({"step_size": 0.0}, "step size = 0.0"), ({"noise": -1.0}, "noise = -1.0"),
                       ({"coupling": "exact"}, "'exact'")):
        with pytest.raises(ValueError, match=match):
            langevin(energy, x0, **bad)
    with pytest.raises(ValueError, match=r"one value per sample"):
        langevin(lambda x: x.sum(), x0)


# ----------------------------------------------------------------------------------- the EBMs


@pytest.mark.parametrize("model", [lambda: ConvEnergy((1, 28, 28), channels=4), lambda: ConvEnergy((3, 32, 32), channels=2),
                                   lambda: MLPEnergy((10,), channels=16)])
def test_every_weighted_layer_is_spectrally_normalised(model):
    torch.manual_seed(0)
    ebm = model()
    layers = weighted_layers(ebm)
    assert len(layers) >= 3
    shape = (2, 10) if isinstance(ebm, MLPEnergy) else (2,) + ((1, 28, 28) if ebm.stem.in_channels == 2 else (3, 32, 32))
    t = torch.randn(shape)
    for _ in range(30):  # power iterations run on each training-mode forward
        ebm(t, t)
    ebm.eval()
    for m in layers:
        assert parametrize.is_parametrized(m, "weight"), m
        w = m.weight.detach().reshape(m.weight.shape[0], -1)
        assert abs(float(torch.linalg.matrix_norm(w, ord=2)) - 1.0) < 0.05


def test_conv_energy_follows_fig4_and_takes_any_image_size():
    ebm = ConvEnergy((3, 256, 256), channels=8)
    widths = [b.conv1.out_channels for b in ebm.blocks]
    assert ebm.stem.out_channels == 8 and widths == [16, 32, 32, 32, 32, 32, 32]  # C, 2C, 4C x 6
    assert all(b.down for b in ebm.blocks)  # 128 -> 1 in seven halvings
    small = ConvEnergy((1, 28, 28), channels=4)
    assert [b.down for b in small.blocks] == [True, True, True, True, False, False, False]  # 14 -> 7 -> 4 -> 2 -> 1
    assert small(torch.randn(3, 1, 28, 28), torch.randn(3, 1, 28, 28)).shape == (3,)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ConvEnergy((10,))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        build_energy("auto", (2, 3), 8)


def test_ebm_objective_lowers_data_energy_and_raises_sample_energy():
    """Eq. 6 sign check: gradient steps on ebm_loss separate data (around +2) from samples (around -2)."""
    torch.manual_seed(0)
    ebm = MLPEnergy((2,), channels=32)
    data, samples, s = torch.randn(64, 2) + 2.0, torch.randn(64, 2) - 2.0, torch.zeros(64, 2)
    opt = torch.optim.Adam(ebm.parameters(), lr=1e-3, betas=(0.0, 0.999))
    e0d, e0s = float(ebm(data, s).mean().detach()), float(ebm(samples, s).mean().detach())
    for _ in range(50):
        opt.zero_grad()
        ebm_loss(ebm(data, s), ebm(samples, s), reg=0.05).backward()
        opt.step()
    with torch.no_grad():
        assert float(ebm(data, s).mean()) < e0d and float(ebm(samples, s).mean()) > e0s
    # the value: mean E_d - mean E_s + reg * (mean E_d^2 + mean E_s^2), against plain arithmetic
    a, b = [0.5, -1.0, 2.0], [1.0, 3.0, -2.0]
    want = sum(a) / 3 - sum(b) / 3 + 0.1 * (sum(v * v for v in a) / 3 + sum(v * v for v in b) / 3)
    assert float(ebm_loss(torch.tensor(a), torch.tensor(b), reg=0.1)) == pytest.approx(want)
    assert float(vem_student_loss(torch.tensor(a), torch.tensor(b))) == pytest.approx(sum(a) / 3 - sum(b) / 3)


def test_mi_lower_bound_is_below_the_true_mi_and_approaches_it():
    """Eq. 2 on a Gaussian pair with I(T; S) = -0.5 log(1 - rho^2): the bound H(T) + E log q(t | s), with
    Z(s) by quadrature, stays below I and climbs to it as the EBM trains with Langevin samples (eq. 6).

    The pair is scaled by 10 (MI is scale-invariant): a spectrally normalised energy is ~1-Lipschitz, and
    the conditional's quadratic energy must fit that slope over the data's range."""
    torch.manual_seed(0)
    rho, scale = 0.9, 10.0
    mi = -0.5 * math.log(1 - rho ** 2)
    h_t = 0.5 * math.log(2 * math.pi * math.e * scale ** 2)
    g = torch.Generator().manual_seed(1)

    def pairs(n):
        s = torch.randn(n, 1, generator=g)
        return scale * (rho * s + math.sqrt(1 - rho ** 2) * torch.randn(n, 1, generator=g)), scale * s

    t_ev, s_ev = pairs(500)
    grid = torch.linspace(-80, 80, 1601).unsqueeze(1)
    log_dt = math.log(float(grid[1] - grid[0]))

    @torch.no_grad()
    def bound(ebm):
        ebm.eval()
        log_z = torch.stack([torch.logsumexp(-ebm(grid, s.expand(len(grid), 1)), 0) + log_dt for s in s_ev])
        per = h_t - ebm(t_ev, s_ev) - log_z
        ebm.train()
        return float(per.mean()), float(per.std()) / math.sqrt(len(per))

    ebm = MLPEnergy((1,), channels=64)
    opt = torch.optim.Adam(ebm.parameters(), lr=1e-3, betas=(0.0, 0.999))
    history = [bound(ebm)]
    for it in range(600):
        t, s = pairs(256)
        t_tilde = langevin(lambda x: ebm(x, s), s, steps=30, step_size=4.0, coupling="paper")  # noqa: B023
        opt.zero_grad()
        ebm_loss(ebm(t, s), ebm(t_tilde, s), reg=0.0).backward()
        opt.step()
        if it % 200 == 199:
            history.append(bound(ebm))
    for value, se in history:
        assert value < mi + 3 * se, history
    assert history[0][0] < mi - 1.0  # an untrained EBM: a loose bound
    assert history[-1][0] > mi - 0.2, history  # trained: close to the true MI (0.830 nats)


# ------------------------------------------------------------------------------------ the term


def _ctx(**kw) -> TermContext:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    base = dict(method="distill", kind="classifier", student=net, teacher=nn.Sequential(nn.Flatten(), nn.Linear(12, 5)),
                student_input=(3, 2, 2), teacher_input=(3, 2, 2), provides=frozenset({"teacher", "logits", "features", "labels"}),
                num_classes=5)
    base.update(kw)
    return TermContext(**base)


def test_vem_term_gradient_reaches_the_student_only_through_s():
    obj = build_objective({"vem": {"weight": 0.1, "step_size": 1.0}}, _ctx())
    term = obj.terms["vem"]
    assert "ebm" not in dict(term.named_modules())  # its own player, not trained by the student's optimizer
    ebm, optim = term.players()["ebm"]
    assert optim.name == "adam" and list(optim.betas) == [0.0, 0.999] and optim.lr == 1e-4
    x = torch.randn(8, 3, 2, 2)
    student, teacher = _ctx().student, nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    s_out = student(x)
    t_out = teacher(x)  # a teacher output WITH a graph: the term must not send gradient into it
    out = obj(Outputs(out=s_out, x=x), Outputs(out=t_out, x=x), Batch(x=x, size=8))
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in ebm.parameters())
    assert all(p.requires_grad for p in ebm.parameters())  # restored after the student's forward
    # the value is weight * (mean E(t, s) - mean E(t~, s)) with the cached samples
    t_tilde = term._cache[1]
    ebm.eval()  # the weights of the term's last forward (no further power iteration)
    with torch.no_grad():
        want = 0.1 * (ebm(t_out, s_out).mean() - ebm(t_tilde, s_out).mean())
    assert float(out["vem"].detach()) == pytest.approx(float(want), rel=1e-5)


def test_vem_update_steps_the_ebm_and_logs_energies():
    obj = build_objective({"vem": {"step_size": 1.0}}, _ctx())
    term = obj.terms["vem"]
    ebm, _ = term.players()["ebm"]
    opt = torch.optim.Adam(ebm.parameters(), lr=1e-3, betas=(0.0, 0.999))
    s = Outputs(out=torch.randn(16, 5, requires_grad=True))
    t = Outputs(out=torch.randn(16, 5) + 3.0)
    names = []

    def step(name, loss):
        names.append(name)
        opt.zero_grad()
        loss.backward()
        opt.step()

    gaps = []
    for _ in range(40):
        term(s, t, Batch(size=16))
        logs = term.update(s, t, Batch(size=16), step)
        gaps.append(float(logs["energy_gap"]))
    assert set(logs) == {"energy_data", "energy_sample", "energy_gap", "energy_abs", "ebm_loss"}
    assert names == ["ebm"] * 40 and gaps[-1] > gaps[0]  # the EBM learns to tell t from the samples
    assert term.update(s, t, Batch(size=16), step) == {}  # nothing cached: nothing to update


def test_vem_bad_input_is_a_config_error():
    with pytest.raises(ConfigError, match=r"student 'output' is \(5,\), teacher 'output' is \(7,\)"):
        build_objective({"vem": {}}, _ctx(teacher=nn.Sequential(nn.Flatten(), nn.Linear(12, 7))))
    for key, value, match in (("steps", 0, "steps"), ("step_size", 0.0, "step_size"), ("noise", -0.1, "noise"),
                              ("coupling", "exact", "coupling"), ("target", "labels", "target"), ("energy", "rbm", "energy")):
        with pytest.raises(ConfigError, match=match):
            build_objective({"vem": {key: value}}, _ctx())
    with pytest.raises(ConfigError, match=r"one \[student, teacher\] pair"):
        build_objective({"vem": {"layers": [["output", "output"], ["output", "output"]]}}, _ctx())
    with pytest.raises(ConfigError, match=r"ground_truth.*a generator student has no labels"):
        build_objective({"vem": {"target": "ground_truth"}}, _ctx(
            kind="generator", provides=frozenset({"teacher", "images", "features"}),
            why_not={"labels": "a generator student has no labels"}))
    with pytest.raises(ConfigError, match=r"conv.*\(C, H, W\)"):
        build_objective({"vem": {"energy": "conv"}}, _ctx())


def test_vem_ground_truth_target_uses_one_hot_labels_without_the_teacher():
    obj = build_objective({"vem": {"target": "ground_truth", "step_size": 1.0}}, _ctx())
    assert not obj.needs_teacher
    y = torch.tensor([0, 4, 2])
    t = obj.terms["vem"].target(torch.zeros(3, 5), None, Batch(x=torch.zeros(3, 1), y=y, size=3))
    assert torch.equal(t, nn.functional.one_hot(y, 5).float())


# --------------------------------------------------------------------------------- real runs


def _teacher(tmp_path: Path, make_config) -> Path:
    return train(load_run_config([make_config(name="teacher", trainer={"epochs": 1})]))


def _logged(run: Path, key: str):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def test_distill_with_vem_checkpoints_the_ebm_and_resumes_bit_identically(tmp_path, make_config):
    teacher = _teacher(tmp_path, make_config)
    base = dict(method="distill", teacher={"checkpoint": str(teacher)}, optim={"scheduler": "none"},
                objective={"student": {"kd": {"weight": 1.0}, "vem": {"weight": 0.1, "step_size": 1.0, "steps": 3}}})
    full = train(load_run_config([make_config(name="full", **base, trainer={"epochs": 2, "log_every_n_steps": 1})]))
    gaps = _logged(full, "train/vem/energy_gap")
    assert gaps and all(math.isfinite(g) for g in gaps) and _logged(full, "train/vem")
    ck = load_checkpoint(full / "checkpoints" / "last.ckpt")["method"]
    ebm_state = ck["players"]["student.vem.ebm"]
    assert any(k.endswith("parametrizations.weight.original") for k in ebm_state)
    assert "student.vem.ebm" in ck["optimizers"] and not any("ebm" in k for k in ck["players"]["student"])
    train(load_run_config([make_config(name="part", **base, trainer={"epochs": 1})]))
    resumed = train(load_run_config([make_config(name="part", **base, trainer={"epochs": 2})]), resume=True)
    got = load_checkpoint(resumed / "checkpoints" / "last.ckpt")["method"]
    for player in ("student", "student.vem.ebm"):
        for k, v in ck["players"][player].items():
            assert torch.equal(got["players"][player][k], v), (player, k)
    want_opt, got_opt = ck["optimizers"]["student.vem.ebm"]["state"], got["optimizers"]["student.vem.ebm"]["state"]
    assert want_opt and got_opt.keys() == want_opt.keys()
    for i, st in want_opt.items():  # Adam's moments and step count continue exactly
        for k, v in st.items():
            assert torch.equal(got_opt[i][k], v), (i, k)


def test_energy_above_the_bound_stops_the_run_with_a_clear_message(tmp_path, make_config):
    teacher = _teacher(tmp_path, make_config)
    cfg = load_run_config([make_config(name="bound", method="distill", teacher={"checkpoint": str(teacher)},
                                       objective={"student": {"kd": {"weight": 1.0}, "vem": {"max_energy": 1e-12}}})])
    with pytest.raises(NonFiniteLossError, match=r"step 1 .*max_energy = 1e-12.*no epoch had completed"):
        train(cfg)


def test_gan_compression_with_vem_on_images(tmp_path, gen_teacher):
    cfg = load_run_config([gan_student_config(tmp_path, gen_teacher, objective={
        "student": {"mse": {"weight": 1.0}, "vem": {"weight": 0.1, "channels": 4, "steps": 2}}})])
    run = train(cfg)
    assert _logged(run, "train/vem/energy_abs") and _logged(run, "train/vem")
    players = load_checkpoint(run / "checkpoints" / "last.ckpt")["method"]["players"]
    assert any("blocks.6.conv2" in k for k in players["student.vem.ebm"])  # the Fig. 4 body on 28 x 28 images


@pytest.mark.slow
def test_distill_with_vem_under_ddp_on_two_cpu_processes(tmp_path, make_config):
    """Two gloo ranks: the EBM's update goes through its DDP wrapper (gradients averaged across ranks)."""
    import subprocess
    import sys

    import yaml

    teacher = _teacher(tmp_path, make_config)
    cfg = make_config(name="ddp-vem", method="distill", teacher={"checkpoint": str(teacher)},
                      objective={"student": {"kd": {"weight": 1.0}, "vem": {"weight": 0.1, "step_size": 1.0, "steps": 2}}},
                      trainer={"epochs": 1, "devices": 2, "strategy": "ddp", "progress": False, "tensorboard": False})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "kdlab.cli", "distill", str(tmp_path / "s.yaml")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = load_checkpoint(tmp_path / "ddp-vem" / "checkpoints" / "last.ckpt")["method"]
    assert "student.vem.ebm" in ck["players"] and "student.vem.ebm" in ck["optimizers"]



VEM_SMALL = {"weight": 0.1, "step_size": 1.0, "steps": 2, "channels": 16}


def _method_config(tmp_path, teacher, method):
    """A tiny run of ``method`` with KD + VEM on logits (plus the game's own keys)."""
    from conftest import small_config

    terms = {"kd": {"weight": 1.0}, "vem": VEM_SMALL}
    base = dict(name=f"vem-{method}", method=method, teacher={"checkpoint": str(teacher)},
                trainer={"epochs": 1}, data={"n_per_class": 20, "batch_size": 20, "val_size": 100})
    if method == "codistill":
        base["players"], base["objective"] = {"peer": "copy"}, {"student": terms}
    elif method == "kdgan":
        base["players"] = {"disc_model": "mlp", "disc_kwargs": {"hidden": [64, 64]}}
        base["objective"] = {"student": terms}
    else:  # the synthesizer (recipes mosaickd, dfad of method distill): generator batches, no labels
        base["method"] = "distill"
        gen = {"generator": "mosaic", "generator_kwargs": {"ngf": 8}, "latent_dim": 16}
        objective = {"student": {**terms, "ce": {"weight": 0.0}}}
        if method == "mosaickd":
            src = {"transfer": "synth", "synth_real": "mnist-digits", "transfer_n": 48}
            gen.update({"discriminator": "patch", "disc_kwargs": {"ndf": 8}})
            patch = {"weight": 1.0, "reduction": "patch_sum"}
            objective.update(generator={"align": {}, "entropy_balance": {"weight": 10.0, "log_base": "2"},
                                        "adversarial": {}, "gan": patch}, discriminator={"gan": patch})
        else:
            src = {"transfer": "synth", "steps_per_epoch": 3}
            objective["generator"] = {"adversarial": {"mode": "l1"}}
        base["data"] = {"batch_size": 16, "val_size": 100, **src}
        base["players"], base["objective"] = gen, objective
    return load_run_config([small_config(tmp_path, **base)])


@pytest.mark.parametrize("method", ["codistill", "kdgan", "mosaickd", "dfad"])
def test_vem_trains_its_ebm_in_every_student_method(tmp_path, make_config, method):
    """Each game runs the term's own update after its student step: the EBM's optimizer has stepped."""
    run = train(_method_config(tmp_path, _teacher(tmp_path, make_config), method))
    ck = load_checkpoint(run / "checkpoints" / "last.ckpt")["method"]
    names = [n for n in ck["players"] if n.endswith(".vem.ebm")]
    assert names, list(ck["players"])
    for name in names:
        assert ck["optimizers"][name]["state"], f"{name}: the EBM's optimizer never stepped"
