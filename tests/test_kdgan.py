"""KDGAN (Wang et al. 2018): theory (Lemma 4.1, Theorem 4.2), the gradient estimators of appendix B,
Gumbel-softmax samples, the method on real Fashion-MNIST, CODIS, privileged inputs, bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlab.data import Batch, dataset_spec, degrade, build_datasets
from kdlab.engine import save_classifier
from kdlab.losses import kdgan as K
from kdlab.methods import KDGAN, Codistill, TeacherMismatchError
from kdlab.games.base import unwrap
from kdlab.models import build_model
from kdlab.runner import load_run_config, train

SPEC = dataset_spec("fashion-mnist")


# ----------------------------------------------------------------------------- Gumbel-softmax


def test_gumbel_softmax_one_hot_as_tau_to_zero_and_argmax_frequencies_match_p():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    p = torch.softmax(logits, -1)
    n = 20000
    log_y, z = K.gumbel_softmax_sample(logits, tau=0.01, k=n)
    y = log_y.exp()
    assert torch.allclose(y.sum(-1), torch.ones_like(y.sum(-1)), atol=1e-5)
    assert y.max(-1).values.mean() > 0.99  # one-hot in the limit
    assert torch.equal(y.argmax(-1), z)
    freq = torch.stack([(z == c).double().mean(0) for c in range(4)], 1)
    tol = 4 * torch.sqrt(p * (1 - p) / n).double() + 1e-4
    assert ((freq - p.double()).abs() < tol).all(), (freq, p)
    # high temperature: far from one-hot; the argmax law does not depend on tau (Gumbel-max)
    log_y_hot, z_hot = K.gumbel_softmax_sample(logits, tau=10.0, k=n)
    assert log_y_hot.exp().max(-1).values.mean() < 0.5
    freq_hot = torch.stack([(z_hot == c).double().mean(0) for c in range(4)], 1)
    assert ((freq_hot - p.double()).abs() < tol).all()
    maxes = [K.gumbel_softmax_sample(logits, tau=t, k=2000)[0].exp().max(-1).values.mean() for t in (5.0, 1.0, 0.2)]
    assert maxes[0] < maxes[1] < maxes[2]


def test_direct_sampling_matches_p():
    torch.manual_seed(1)
    logits = torch.tensor([[1.0, -1.0, 0.3]])
    z = K.sample_labels(logits, k=20000)
    freq = torch.stack([(z == c).double().mean() for c in range(3)])
    assert torch.allclose(freq, torch.softmax(logits, -1)[0].double(), atol=0.015)


# ----------------------------------------------------------------------------- Lemma 4.1 / Theorem 4.2


def _dists(seed=0, b=3, k=4):
    g = torch.Generator().manual_seed(seed)
    mk = lambda: torch.softmax(torch.randn(b, k, generator=g, dtype=torch.float64) * 1.5, -1)  # noqa: E731
    return mk(), mk(), mk()


def test_lemma_4_1_trained_discriminator_matches_closed_form():
    p_u, p_c, p_t = _dists()
    alpha = 0.3
    d = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([d], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = -K.value_function(p_u, p_c, p_t, d, alpha).sum()
        loss.backward()
        return loss

    opt.step(closure)
    p_alpha = alpha * p_c.numpy() + (1 - alpha) * p_t.numpy()
    expected = p_u.numpy() / (p_u.numpy() + p_alpha)  # Lemma 4.1, computed here independently
    np.testing.assert_allclose(torch.sigmoid(d).detach().numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(K.optimal_discriminator(p_u, p_c, p_t, alpha).numpy(), expected, atol=1e-12)


def test_theorem_4_2_value_is_minus_log4_plus_2js_and_minimal_at_pu():
    p_u, p_c, p_t = _dists(seed=3)
    alpha = 0.2

    def u_at_optimum(pc, pt):
        d_opt = K.optimal_discriminator(p_u, pc, pt, alpha)
        return K.value_function(p_u, pc, pt, torch.logit(d_opt), alpha)

    # at p_c = p_t = p_u: U = -log 4 and both distillation losses are 0
    u_eq = u_at_optimum(p_u, p_u)
    np.testing.assert_allclose(u_eq.numpy(), -math.log(4), atol=1e-10)
    lp = p_u.log()
    assert float(K.kdgan_distill_loss(lp, lp, "l2")) == pytest.approx(0.0, abs=1e-12)
    assert float(K.kdgan_distill_loss(lp, lp, "kl")) == pytest.approx(0.0, abs=1e-12)
    # elsewhere: U = -log 4 + 2 JS(p_u || p_alpha) > -log 4 (JS computed independently with numpy)
    pu, pa = p_u.numpy(), alpha * p_c.numpy() + (1 - alpha) * p_t.numpy()
    m = (pu + pa) / 2
    js = 0.5 * (pu * np.log(pu / m)).sum(-1) + 0.5 * (pa * np.log(pa / m)).sum(-1)
    u = u_at_optimum(p_c, p_t).numpy()
    np.testing.assert_allclose(u, -math.log(4) + 2 * js, atol=1e-10)
    assert (u > -math.log(4) + 1e-6).all()


def test_discriminator_k_sample_objective_estimates_u():
    torch.manual_seed(0)
    p_u = F.one_hot(torch.tensor([2, 0, 1]), 4).double()
    _, p_c, p_t = _dists(seed=5)
    d = torch.randn(3, 4, dtype=torch.float64)
    alpha = 0.4
    z_c = torch.multinomial(p_c, 40000, replacement=True).t()
    z_t = torch.multinomial(p_t, 40000, replacement=True).t()
    est = K.discriminator_objective(d, torch.tensor([2, 0, 1]), z_c, z_t, alpha)
    exact = K.value_function(p_u, p_c, p_t, d, alpha).mean()
    assert float(est) == pytest.approx(float(exact), abs=0.02)


# ----------------------------------------------------------------------------- appendix B estimators


def _grads(baseline, k, reps, score="discrete", seed=0):
    torch.manual_seed(seed)
    theta = torch.tensor([[0.5, -0.3, 1.0, 0.0], [0.0, 1.5, -1.0, 0.2]], dtype=torch.float64)
    d_logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [-0.5, 1.0, 3.0, -2.0]], dtype=torch.float64)
    t = theta.clone().requires_grad_(True)
    K.expected_reward(t, d_logits).mean().backward()
    exact = t.grad.clone()
    # reps independent replicates at once: tile theta; each copy's gradient is one replicate's estimate
    t = theta.repeat(reps, 1).requires_grad_(True)
    dl = d_logits.repeat(reps, 1)
    log_y, z = K.gumbel_softmax_sample(t, tau=0.5, k=k)
    s = K.concrete_log_density(t, log_y, 0.5) if score == "concrete" else None
    (reps * K.reinforce_surrogate(t, z, K.adversarial_rewards(dl, z), baseline, dl, score_logp=s)).backward()
    return exact, t.grad.view(reps, *theta.shape)


@pytest.mark.parametrize("baseline,k", [("exact", 1), ("loo", 2), ("none", 1)])
def test_reinforce_estimator_is_unbiased(baseline, k):
    exact, g = _grads(baseline, k, 20000)
    se = g.std(0) / math.sqrt(g.shape[0])
    assert ((g.mean(0) - exact).abs() <= 4.5 * se + 1e-3).all(), (g.mean(0), exact)


def test_control_variate_lowers_variance_and_sample_mean_baseline_is_biased_by_k_minus_1_over_k():
    exact, g_cv = _grads("exact", 1, 20000, seed=1)
    _, g_none = _grads("none", 1, 20000, seed=1)
    assert g_cv.var(0).sum() < 0.5 * g_none.var(0).sum()
    _, g_mean = _grads("mean", 4, 20000, seed=2)
    se = g_mean.std(0) / math.sqrt(g_mean.shape[0])
    assert ((g_mean.mean(0) - 0.75 * exact).abs() <= 4.5 * se + 1e-3).all()


def test_concrete_score_estimator_is_unbiased_too():
    exact, g = _grads("exact", 1, 20000, score="concrete", seed=3)
    se = g.std(0) / math.sqrt(g.shape[0])
    assert ((g.mean(0) - exact).abs() <= 4.5 * se + 1e-3).all()


def test_concrete_log_density_integrates_to_one_for_two_classes():
    # K = 2: y = (s, 1-s); integrate q over s in (0, 1) numerically
    logits = torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    s = torch.linspace(1e-6, 1 - 1e-6, 200001, dtype=torch.float64)
    log_y = torch.stack([s.log(), (1 - s).log()], -1).unsqueeze(1)  # [n, 1, 2]
    dens = K.concrete_log_density(logits, log_y, tau=0.8).exp().squeeze(1)
    assert float(torch.trapezoid(dens, s)) == pytest.approx(1.0, abs=1e-3)


def test_distill_l2_matches_closed_form_and_only_learner_gets_gradient():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, generator=g, requires_grad=True)
    b = torch.randn(5, 4, generator=g, requires_grad=True)
    la, lb = np.log(np.exp(a.detach().numpy()) / np.exp(a.detach().numpy()).sum(1, keepdims=True)), None
    lb = np.log(np.exp(b.detach().numpy()) / np.exp(b.detach().numpy()).sum(1, keepdims=True))
    loss = K.kdgan_distill_loss(a, b, "l2")
    assert float(loss.detach()) == pytest.approx(0.5 * ((la - lb) ** 2).sum(1).mean(), rel=1e-5)
    loss.backward()
    assert a.grad is not None and b.grad is None


# ----------------------------------------------------------------------------- the method


@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory):
    """A small LeNet teacher trained briefly on real Fashion-MNIST (about 80% test accuracy)."""
    tmp = tmp_path_factory.mktemp("kdgan_teacher")
    cfg = load_run_config([{
        "name": "teacher", "method": "teacher", "out_dir": str(tmp),
        "data": {"name": "fashion-mnist", "val_size": 200, "n_per_class": 100, "batch_size": 50, "eval_batch_size": 500, "max_test": 500},
        "model": {"name": "lenet", "kwargs": {"channels": [8, 16], "fc": 64}},
        "optim": {"name": "adam", "lr": 0.002, "weight_decay": 0.0},
        "trainer": {"epochs": 4, "progress": False, "tensorboard": False},
        "eval": {"latency": False, "noise_sigmas": [0.0]},
    }])
    return train(cfg)


def _kdgan_cfg(make_config, teacher, **players):
    return load_run_config([make_config(method="kdgan", name="kdgan", teacher={"checkpoint": str(teacher)},
                                        model={"name": "mlp", "kwargs": {"hidden": [64, 64]}},
                                        data={"n_per_class": 100},
                                        players={"disc_model": "lenet", "disc_kwargs": {"channels": [8, 16], "fc": 64},
                                                 "teacher_lr": 1e-5, **players},  # the former default: a slow teacher
                                        trainer={"epochs": 4})])


def test_kdgan_short_real_run_well_above_chance_with_finite_discriminator(make_config, small_teacher):
    run = train(_kdgan_cfg(make_config, small_teacher))
    s = json.loads((run / "summary.json").read_text())
    assert s["test_acc_best"] > 45.0, s["test_acc_best"]  # chance is 10%
    d_values = [json.loads(line).get("train/d_value") for line in (run / "metrics.jsonl").read_text().splitlines()]
    d_values = [v for v in d_values if v is not None]
    assert d_values and all(math.isfinite(v) and v <= 0 for v in d_values)
    assert s["teacher"]["test_acc_last"] > 40.0
    objective = s["kdgan"]["objective"]  # the estimator is a key of each player's adversarial term
    assert objective["student"]["kdgan_adversarial"]["estimator"] == objective["teacher"]["kdgan_adversarial"]["estimator"] == "paper"


def test_schedule_phases_and_temperature(make_config, small_teacher):
    m = KDGAN(_kdgan_cfg(make_config, small_teacher, schedule=[2, 1, 1], schedule_unit="epoch",
                         tau_start=10.0, tau_decay=0.5, tau_min=0.3), SPEC)
    seen = []
    for e in range(5):
        m.epoch = e
        seen.append(next(p for p, n in m.phase_counts().items() if n))
    assert seen == ["d", "d", "t", "c", "d"]
    m.epoch = 3
    assert m.tau == pytest.approx(1.25)
    m.epoch = 10
    assert m.tau == pytest.approx(0.3)  # the floor


def test_game_step_updates_each_player_with_its_own_objective(make_config, small_teacher):
    m = KDGAN(_kdgan_cfg(make_config, small_teacher, schedule=[0, 0, 1]), SPEC)
    from lightning_fabric import Fabric

    m.setup(Fabric(accelerator="cpu", devices=1))
    before = {n: [p.detach().clone() for p in pl.parameters()] for n, pl in m.players.items()}
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    m.training_step(Batch(x=x, y=y), 0)
    changed = {n: any(not torch.equal(a, b) for a, b in zip(before[n], pl.parameters())) for n, pl in m.players.items()}
    assert changed == {"classifier": True, "teacher": False, "discriminator": False}


def test_discriminator_starts_from_a_pretrained_classifier_run(make_config, small_teacher, tmp_path):
    """``players.disc_init: <run or weights>``: the published code pre-trains d with cross entropy."""
    torch.manual_seed(3)
    pre = build_model("lenet", channels=[8, 16], fc=64)
    path = save_classifier(pre, tmp_path / "d.safetensors", data="fashion-mnist")
    m = KDGAN(_kdgan_cfg(make_config, small_teacher, disc_init=str(path)), SPEC)
    got = unwrap(m.players["discriminator"]).state_dict()
    assert all(torch.equal(got[k], v) for k, v in pre.state_dict().items())


def test_privileged_input_goes_to_the_teacher_only(make_config, small_teacher):
    m = KDGAN(_kdgan_cfg(make_config, small_teacher), SPEC)
    from lightning_fabric import Fabric

    m.setup(Fabric(accelerator="cpu", devices=1))
    seen = {}
    for name in ("classifier", "teacher", "discriminator"):
        m.players[name].register_forward_hook(lambda mod, inp, out, name=name: seen.setdefault(name, []).append(inp[0]))
    x, xc = torch.zeros(4, 1, 28, 28), torch.ones(4, 1, 28, 28)
    m.training_step(Batch(x=x, y=torch.zeros(4, dtype=torch.long), x_teacher=xc), 0)
    assert all(bool((t == 1).all()) for t in seen["teacher"])
    assert all(bool((t == 0).all()) for t in seen["classifier"] + seen["discriminator"])


def test_privileged_view_carries_real_information_on_fashion_mnist():
    """Nearest-class-mean accuracy on real images: the clean (teacher) view beats the degraded one."""
    data = build_datasets("fashion-mnist", val_size=0, n_per_class=200, max_test=2000, privileged="mask", privileged_factor=4)
    train_b = data.train.__getitems__(list(range(len(data.train))))
    test_b = data.test.__getitems__(list(range(len(data.test))))
    xd, y, xc = train_b.x, train_b.y, train_b.x_teacher
    td, ty, tc = test_b.x, test_b.y, test_b.x_teacher
    assert torch.equal(xd, degrade(xc, "mask", 4)) and not torch.equal(xd, xc)

    def ncm(train_x, test_x):
        means = torch.stack([train_x[y == c].flatten(1).mean(0) for c in range(10)])
        return float((torch.cdist(test_x.flatten(1), means).argmin(1) == ty).double().mean())

    clean, degraded = ncm(xc, tc), ncm(xd, td)
    assert clean > degraded + 0.05, (clean, degraded)


def test_codistill_terms_are_kl_between_peers(make_config):
    cfg = load_run_config([make_config(method="codistill", players={"peer": "copy"},
                                       objective={p: {"codistill": {"temperature": 2.0}} for p in ("student", "peer")})])
    m = Codistill(cfg, SPEC)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    terms = m.losses(Batch(x=x, y=y, x_teacher=x))
    zc, zp = m.players["classifier"](x).out.detach(), m.players["peer"](x).out.detach()
    pc, pp = torch.softmax(zc / 2, -1), torch.softmax(zp / 2, -1)
    kl_c = (pp * (pp.log() - pc.log())).sum(1).mean() * 4
    assert float(terms["c_codistill"].detach()) == pytest.approx(float(kl_c), rel=1e-4)
    m.players["peer"].load_state_dict(m.players["classifier"].state_dict())
    assert float(m.losses(Batch(x=x, y=y, x_teacher=x))["c_codistill"].detach()) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_errors(make_config, tmp_path):
    torch.manual_seed(0)
    teacher = save_classifier(build_model("lenet", channels=[8, 16], fc=64), tmp_path / "t.safetensors", data="fashion-mnist")
    base = dict(disc_kwargs={"channels": [8, 16], "fc": 64})

    def make(spec=SPEC, objective=None, **players):
        cfg = load_run_config([make_config(method="kdgan", teacher={"checkpoint": str(teacher)}, players={**base, **players},
                                           **({"objective": objective} if objective else {}))])
        return KDGAN(cfg, spec)

    with pytest.raises(ValueError, match=r"players\.alpha' = 1\.5 must be >= 0 and <= 1"):
        make(alpha=1.5)
    with pytest.raises(ValueError, match=r"players\.alpha' = -0\.1 must be >= 0 and <= 1"):
        make(alpha=-0.1)
    with pytest.raises(ValueError, match=r"players\.tau_start' = 0\.0 must be >= 0\.001"):
        make(tau_start=0.0)
    with pytest.raises(ValueError, match=r"players\.k' = 0 must be >= 1"):
        make(k=0)
    with pytest.raises(TeacherMismatchError, match=r"\(10, 1, 28\).*\(100, 3, 32\)"):
        make(spec=dataset_spec("cifar100"))
    # the estimator is a key of each player's kdgan_adversarial term
    with pytest.raises(ValueError, match=r"objective\.student\.kdgan_adversarial\.estimator' = 'nope'; accepted: paper, code, exact"):
        make(objective={"student": {"kdgan_adversarial": {"estimator": "nope"}}})
    with pytest.raises(ValueError, match=r"objective\.teacher\.kdgan_adversarial\.estimator' = 'nope'; accepted: paper, code, exact"):
        make(objective={"teacher": {"kdgan_adversarial": {"estimator": "nope"}}})
    with pytest.raises(ValueError, match=r"objective\.student\.kdgan_adversarial\.baseline = 'loo' needs players\.k >= 2, got k = 1"):
        make(k=1, objective={"student": {"kdgan_adversarial": {"baseline": "loo"}}})
    with pytest.raises(ValueError, match=r"objective\.teacher\.kdgan_adversarial\.score = 'concrete' .*needs players\.sampler = 'gumbel'"):
        make(sampler="categorical", objective={"teacher": {"kdgan_adversarial": {"score": "concrete"}}})
    with pytest.raises(ValueError, match=r"players\.estimator is now objective\.student\.kdgan_adversarial\.estimator"):
        make(estimator="paper")  # no longer a game setting: refused with its new place
    with pytest.raises(ValueError, match="disc_init = 'teacher' needs"):
        make(disc_kwargs={})
    other = save_classifier(build_model("lenet", channels=[4, 8], fc=32), tmp_path / "d.safetensors", data="fashion-mnist")
    with pytest.raises(ValueError, match=r"disc_init = .*d\.safetensors' holds lenet .*not the discriminator's lenet"):
        make(disc_init=str(other))
    with pytest.raises(FileNotFoundError):
        make(disc_init=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"tau.*-1"):
        K.gumbel_softmax_sample(torch.zeros(2, 3), tau=-1.0)
    with pytest.raises(ValueError, match=r"k \(samples per input\).*0"):
        K.gumbel_softmax_sample(torch.zeros(2, 3), tau=1.0, k=0)
    with pytest.raises(ValueError, match="alpha"):
        K.mixture(torch.ones(1), torch.ones(1), 2.0)


def test_appendix_c_architectures_and_cifar_recipes():
    from kdlab.cli import resolve_config

    mi = lambda m: sum(p.numel() for p in m.parameters()) / 2**20  # noqa: E731
    assert [round(mi(build_model("mlp", hidden=[h, h])), 2) for h in (100, 200, 800, 1200)] == [0.09, 0.19, 1.22, 2.28]
    assert round(mi(build_model("lenet")), 2) == 3.12
    r = build_model("resnet101_bottleneck", 10, 3, 32)
    main_path = sum(1 for name, m in r.named_modules()
                    if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and "shortcut" not in name)
    assert main_path == 101  # stem + 33 blocks x 3 + fc
    assert r(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    for recipe in ("kdgan_cifar10", "kdgan_cifar10_teacher", "kdgan", "kdgan_codis", "kdgan_distn_code"):
        cfg = load_run_config([resolve_config(recipe)])
        assert cfg.method in ("kdgan", "teacher", "codistill", "distill")


def test_kdgan_resume_ends_where_an_uninterrupted_run_ends(make_config, small_teacher, tmp_path):
    from kdlab.engine import load_checkpoint

    def cfg(epochs, out):
        c = _kdgan_cfg(make_config, small_teacher)
        from omegaconf import OmegaConf

        d = OmegaConf.to_container(c)
        d["trainer"]["epochs"], d["out_dir"], d["data"]["n_per_class"] = epochs, str(out), 20
        d["optim"]["scheduler"] = "none"  # a cosine schedule depends on the total number of epochs
        return load_run_config([d])

    straight = train(cfg(2, tmp_path / "a"))
    train(cfg(1, tmp_path / "b"))
    resumed = train(cfg(2, tmp_path / "b"), resume=True)
    sa = load_checkpoint(straight / "checkpoints" / "last.ckpt")
    sb = load_checkpoint(resumed / "checkpoints" / "last.ckpt")
    for player in ("classifier", "teacher", "discriminator"):
        for k, v in sa["method"]["players"][player].items():
            assert torch.equal(v, sb["method"]["players"][player][k]), (player, k)
    assert sa["method"]["kdgan"]["epoch"] == sb["method"]["kdgan"]["epoch"] == 2


def test_code_estimator_is_bce_of_own_logit_towards_discriminator_score():
    logits = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    d_logits = torch.tensor([[0.0, 3.0, -1.0]], dtype=torch.float64)
    z = torch.tensor([[1], [2]])  # k = 2 samples for one input
    got = float(K.code_surrogate(logits, z, d_logits))
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want = 0.0
    for lab in (1, 2):
        q, t = sig(float(logits[0, lab])), sig(float(d_logits[0, lab]))
        want += -(t * math.log(q) + (1 - t) * math.log(1 - q)) / 2
    assert got == pytest.approx(want, rel=1e-10)


def test_kdgan_with_privileged_clean_view_end_to_end(make_config, small_teacher):
    """Real data: the classifier sees the top half of each image, the teacher the whole image."""
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(_kdgan_cfg(make_config, small_teacher))
    d["data"].update({"privileged": "mask", "privileged_factor": 2})
    d["trainer"]["epochs"] = 10
    run = train(load_run_config([d]))
    s = json.loads((run / "summary.json").read_text())
    # the teacher is scored on the clean view it is given; the classifier on the masked view
    assert s["teacher"]["test_acc"] > s["test_acc_best"] + 5.0
    assert s["test_acc_best"] > 25.0
