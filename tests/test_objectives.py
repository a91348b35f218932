"""Every player's objective from registered terms, and the synthesizer as a transfer source.

Config checks (each player's objective is checked like the student's; bad input is refused before
anything is built), the synthesizer's images (shape and normalisation against an independent
computation), a new generator term in a temporary module composing with MosaicKD's generator from YAML
alone (its gradient against the same loss computed by hand), and a bit-exact resume of a ``synth`` run.
"""
from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest
import torch

from conftest import small_config
from kdlab.config import ConfigError
from kdlab.data.batch import Batch
from kdlab.engine import load_checkpoint
from kdlab.runner import load_run_config, train

TINY_GEN = {"generator": "mosaic", "generator_kwargs": {"ngf": 8}, "latent_dim": 16}
SYNTH = {"transfer": "synth", "steps_per_epoch": 3, "batch_size": 16}
GEN_TERMS = {"adversarial": {"weight": 1.0}, "entropy_balance": {"weight": 1.0}}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("obj_teacher")
    return train(load_run_config([small_config(tmp, name="teacher", trainer={"epochs": 1})]))


def _refused(cfg, *needles):
    with pytest.raises(ConfigError) as err:
        load_run_config([cfg])
    for needle in needles:
        assert needle in str(err.value), str(err.value)
    return str(err.value)


# ------------------------------------------------------------------------------------------- config checks
def test_each_players_objective_is_checked_like_the_students(tmp_path):
    base = dict(method="distill", data=SYNTH, players=TINY_GEN)
    # unknown term, named with the player and the accepted terms
    _refused(small_config(tmp_path, **base, objective={"generator": {"nope": {}}}), "objective.generator", "'nope'")
    # unknown key of a term
    _refused(small_config(tmp_path, **base, objective={"generator": {"align": {"wieght": 1}}}),
             "objective.generator.align: unknown key 'wieght'")
    # negative weight
    _refused(small_config(tmp_path, **base, objective={"generator": {"align": {"weight": -1.0}}}),
             "objective.generator.align.weight")
    # a student term on the generator, and a generator term on the student, refused by name
    _refused(small_config(tmp_path, **base, objective={"generator": {"kd": {}}}),
             "term 'kd' cannot be on player 'generator'", "Terms for a generator:", "entropy_balance")
    _refused(small_config(tmp_path, **base, objective={"student": {"align": {}}}),
             "term 'align' cannot be on player 'student'")
    # a player the method does not have: names the method's players
    _refused(small_config(tmp_path, method="distill", objective={"generator": GEN_TERMS}),
             "method 'distill' has no player 'generator'", "its players: student")
    _refused(small_config(tmp_path, method="kdgan", objective={"peer": {"ce": {}}}),
             "its players: student, teacher, discriminator")


def test_old_loss_keys_are_refused_with_their_new_place(tmp_path):
    msg = _refused(small_config(tmp_path, method="distill", loss={"terms": {"kd": {"weight": 1}}, "input_noise": 0.1}),
                   "config section 'loss' is gone", "loss.terms is now objective.student",
                   "loss.input_noise is now players.input_noise")
    assert "objective, players, eval" in msg
    _refused(small_config(tmp_path, method="teacher", loss={"jacobian_penalty": 0.1}),
             "loss.jacobian_penalty is now objective.teacher.jacobian_penalty.weight")
    _refused(small_config(tmp_path, method="kdgan", loss={"gamma": 1.0, "alpha": 0.3}),
             "loss.gamma is now objective.teacher.kdgan_distill.weight", "loss.alpha is now players.alpha")
    _refused(small_config(tmp_path, method="gan-compression", loss={"n_samples": 10}), "loss.n_samples is now eval.n_samples")
    _refused(small_config(tmp_path, method="distill", loss={"kd": 1.0}), "loss.kd is now objective.student.kd.weight")


def test_retired_methods_name_their_recipe(tmp_path):
    for name in ("mosaickd", "dfad", "dafl", "deepinversion"):
        _refused(small_config(tmp_path, method=name), f"method {name!r} is now the recipe {name}", "data.transfer=synth")


def test_synthetic_source_refused_where_it_cannot_serve(tmp_path, teacher):
    # a method whose student is no classifier
    _refused(small_config(tmp_path, method="gan-compression", data=SYNTH), "data.transfer = 'synth'",
             "method 'gan-compression' cannot train on synthetic images", "methods that can:", "distill")
    # synth_real without synth
    _refused(small_config(tmp_path, method="distill", data={"synth_real": "mnist-digits"}),
             "data.synth_real = 'mnist-digits'", "needs data.transfer = 'synth'")
    # a term that needs labels on a synthetic source: refused when the method is built (before training)
    cfg = load_run_config([small_config(tmp_path, name="lab", method="distill", teacher={"checkpoint": str(teacher)},
                                        data=SYNTH, players=TINY_GEN, objective={"generator": GEN_TERMS})])
    with pytest.raises(ConfigError, match="term 'ce' needs labels.*synthetic images, which have no labels"):
        train(cfg)
    assert not (tmp_path / "lab" / "checkpoints").exists()
    # no generator objective: the generator would not train
    cfg = load_run_config([small_config(tmp_path, name="nog", method="distill", teacher={"checkpoint": str(teacher)},
                                        data=SYNTH, players=TINY_GEN, objective={"student": {"ce": {"weight": 0}, "kd": {}}})])
    with pytest.raises(ConfigError, match="objective.generator has no term with a weight > 0"):
        train(cfg)
    # a discriminator without real images
    _cfg = small_config(tmp_path, name="nod", method="distill", teacher={"checkpoint": str(teacher)}, data=SYNTH,
                        players={**TINY_GEN, "discriminator": "patch"},
                        objective={"student": {"ce": {"weight": 0}, "kd": {}}, "generator": GEN_TERMS,
                                   "discriminator": {"gan": {}}})
    with pytest.raises(ConfigError, match="players.discriminator = 'patch'.*set data.synth_real"):
        train(load_run_config([_cfg]))


# ------------------------------------------------------------------------------- the synthesizer itself
def _built(tmp_path, teacher, **sections):
    from kdlab.methods import METHODS
    from kdlab.runner import datasets_for

    from conftest import ready

    cfg = load_run_config([small_config(tmp_path, method="distill", teacher={"checkpoint": str(teacher)}, data=SYNTH,
                                        **{"players": TINY_GEN, **sections})])
    data = datasets_for(cfg)
    from kdlab.data import transfer_info

    return ready(METHODS.get("distill")(cfg, data.spec, transfer_info(data.transfer))), data


def test_synthetic_batches_have_the_teachers_shape_and_normalisation(tmp_path, teacher):
    m, data = _built(tmp_path, teacher, objective={"student": {"ce": {"weight": 0}, "kd": {}}, "generator": GEN_TERMS})
    spec = data.spec
    synth = m.synthesizer
    torch.manual_seed(5)
    batch = synth.student_batch(Batch(size=16))
    assert batch.x.shape == (16, spec.in_channels, spec.image_size, spec.image_size) and batch.y is None
    assert batch.index is None and not batch.x.requires_grad
    # the same latents through the generator by hand: [lo, hi] -> [0, 1] -> (v - mean) / std
    torch.manual_seed(5)
    z = torch.randn(16, 16)
    with torch.no_grad():
        g = m.players["generator"](z)
    lo, hi = m.players["generator"].output_range
    want = ((g - lo) / (hi - lo) - spec.mean[0]) / spec.std[0]
    torch.testing.assert_close(batch.x, want, rtol=1e-6, atol=1e-6)
    # the transfer source serves row indices only (data-free)
    assert len(data.transfer) == 3 * 16


NEW_TERM = '''
    """A test generator term: the mean squared pixel of the generator's (normalised) images."""
    from kdlab.terms.base import TERMS, Term


    @TERMS.register("test_pixel_energy")
    class PixelEnergy(Term):
        requires = frozenset({"images"})
        roles = frozenset({"generator"})

        def forward(self, s, t, batch):
            return batch.x.pow(2).mean()
'''


def test_a_new_generator_term_is_one_file_and_composes_with_mosaickd_from_yaml(tmp_path, teacher):
    from kdlab.cli import resolve_config
    from kdlab.methods import METHODS
    from kdlab.runner import datasets_for
    from kdlab.data import transfer_info
    from conftest import ready

    path = tmp_path / "my_terms.py"
    path.write_text(textwrap.dedent(NEW_TERM))
    spec = importlib.util.spec_from_file_location("my_terms_for_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["my_terms_for_test"] = module
    spec.loader.exec_module(module)  # registers the term, as a plugin import would
    overrides = [f"teacher.checkpoint={teacher}", f"out_dir={tmp_path}", "data.transfer_n=32", "data.batch_size=16",
                 "data.val_size=200", "data.max_test=200", "model.kwargs={channels: [4, 8], fc: 16}",
                 "players.generator_kwargs={ngf: 8}", "players.latent_dim=16", "players.disc_kwargs={ndf: 8}",
                 "objective.generator.test_pixel_energy.weight=0.5"]
    cfg = load_run_config([resolve_config("mosaickd")], overrides)
    assert list(cfg.objective.generator) == ["align", "entropy_balance", "adversarial", "gan", "test_pixel_energy"]
    data = datasets_for(cfg)
    m = ready(METHODS.get(cfg.method)(cfg, data.spec, transfer_info(data.transfer)))
    steps = []

    def backward_only(name, loss):  # in place of the optimizer step: keep the gradients to inspect them
        steps.append(name)
        loss.backward()

    m.step_optimizer = backward_only
    synth = m.synthesizer
    gen = m.players["generator"]
    # the generator's gradient of its objective = the recipe's four terms + 0.5 * the new term, recomputed by hand
    torch.manual_seed(11)
    logs = synth.g_step(synth.generate(16, torch.device("cpu")))
    got = [p.grad.clone() for p in gen.parameters()]
    assert steps == ["generator"] and "g_test_pixel_energy" in logs
    for p in gen.parameters():
        p.grad = None
    from kdlab.losses.mosaic import adversarial_kl, align_loss, balance_loss, patch_bce

    torch.manual_seed(11)
    x = synth.generate(16, torch.device("cpu"))
    tl = m.frozen["teacher"](x)
    student, disc = m.players["student"].net, m.players["discriminator"]
    for p in list(student.parameters()) + list(disc.parameters()):
        p.requires_grad_(False)
    loss = (align_loss(tl) + 10.0 * balance_loss(tl, log_base="2") + adversarial_kl(student(x), tl)
            + patch_bce(disc(x), 1.0) + 0.5 * x.pow(2).mean())
    want = torch.autograd.grad(loss, list(gen.parameters()))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert float(logs["g_test_pixel_energy"]) == pytest.approx(0.5 * float(x.detach().pow(2).mean()), rel=1e-5)


def test_a_synth_run_resumes_bit_exactly(tmp_path, teacher):
    def cfg(epochs, out):
        return load_run_config([small_config(out, name="syn", method="distill", teacher={"checkpoint": str(teacher)},
                                             data=SYNTH, players={**TINY_GEN, "synth_every": 2},
                                             objective={"student": {"ce": {"weight": 0}, "kd": {}}, "generator": GEN_TERMS},
                                             optim={"scheduler": "none"}, trainer={"epochs": epochs})])

    straight = train(cfg(2, tmp_path / "a"))
    train(cfg(1, tmp_path / "b"))
    resumed = train(cfg(2, tmp_path / "b"), resume=True)
    sa = load_checkpoint(straight / "checkpoints" / "last.ckpt")["method"]["players"]
    sb = load_checkpoint(resumed / "checkpoints" / "last.ckpt")["method"]["players"]
    assert set(sa) == {"student", "generator"}
    for player in sa:
        for k, v in sa[player].items():
            assert torch.equal(v, sb[player][k]), (player, k)
    assert (straight / "samples" / "epoch_002.png").is_file()


def test_the_loss_section_is_refused_with_each_keys_new_place() -> None:
    def refused(method, loss, **sections):
        with pytest.raises(ConfigError) as err:
            load_run_config([{"method": method, **sections, "loss": loss}])
        msg = str(err.value)
        assert "section 'loss' is gone" in msg
        return msg

    # a synthesizer's key (MosaicKD's generator is now a recipe of distill with data.transfer=synth)
    msg = refused("distill", {"terms": {"kd": {"weight": 1}}, "generator": "mosaic"}, data={"transfer": "synth"})
    for old, new in (("terms", "objective.student"),
                     ("generator", "players.generator (a key of the synthesizer: with data.transfer=synth)")):
        assert f"loss.{old} is now {new}" in msg, msg
    # an eval key (only methods whose eval section has it), and a game key that became a term's weight
    msg = refused("gan-compression", {"n_samples": 5, "adv_weight": 0.7})
    for old, new in (("n_samples", "eval.n_samples"), ("adv_weight", "objective.student.gan.weight")):
        assert f"loss.{old} is now {new}" in msg, msg


def test_an_objective_for_a_player_the_method_lacks_names_its_players() -> None:
    with pytest.raises(ConfigError, match=r"objective.generator: method 'distill' has no player 'generator'.*"
                                          r"its players: student"):
        load_run_config([{"method": "distill", "objective": {"generator": {"kd": {}}}}])
