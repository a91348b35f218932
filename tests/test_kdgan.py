"""KDGAN (Wang et al. 2018): the method on real Fashion-MNIST, CODIS, privileged inputs, resume, bad input (the
theory and the estimators: test_kdgan_theory.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from kdlab.data import Batch, dataset_spec, degrade, build_datasets
from kdlab.engine import save_classifier
from kdlab.losses import kdgan as K
from kdlab.methods import KDGAN, Codistill, TeacherMismatchError
from kdlab.games.base import unwrap
from kdlab.models import build_model
from kdlab.runner import load_run_config, train

SPEC = dataset_spec("fashion-mnist")


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
