"""DCGAN/WDCGAN generators and discriminators (depth scale factor d) and the GAN losses."""
from __future__ import annotations

import math

import pytest
import torch

from kdlab.engine import save_classifier
from kdlab.engine.generators import load_generator, save_generator
from kdlab.losses import (
    bce_discriminator_loss,
    bce_generator_loss,
    generator_mse,
    gradient_penalty,
    joint_student_loss,
    wgan_critic_loss,
    wgan_generator_loss,
)
from kdlab.metrics import count_parameters
from kdlab.models import build_discriminator, build_generator, build_model


def expected_generator_params(d: int, nz: int, c: int, size: int) -> int:
    """Independent count from the layer plan: ConvT weights (no bias) + BN (2 per channel)."""
    if size == 28:
        convs = [(nz, 4 * d, 3), (4 * d, 2 * d, 3), (2 * d, d, 4)]
    elif size == 32:
        convs = [(nz, 4 * d, 4), (4 * d, 2 * d, 4), (2 * d, d, 4)]
    else:
        convs = [(nz, 8 * d, 4), (8 * d, 4 * d, 4), (4 * d, 2 * d, 4), (2 * d, d, 4)]
    n = sum(i * o * k * k + 2 * o for i, o, k in convs)
    return n + d * c * 16  # output layer, no BN


@pytest.mark.parametrize("size,c", [(28, 1), (32, 3), (64, 3)])
def test_generator_shapes_range_and_parameter_count(size, c):
    for d in (2, 8, 16):
        g = build_generator("dcgan", out_channels=c, image_size=size, d=d, latent_dim=20)
        x = g(torch.randn(3, 20))
        assert x.shape == (3, c, size, size)
        assert float(x.detach().abs().max()) <= 1.0
        assert count_parameters(g) == expected_generator_params(d, 20, c, size)
        for name in ("dcgan", "wdcgan"):
            disc = build_discriminator(name, in_channels=c, image_size=size, d=d)
            assert disc(x).shape == (3,)


def test_parameters_grow_as_d_squared():
    counts = {d: count_parameters(build_generator("dcgan", 1, 28, d=d, latent_dim=100)) for d in (32, 64, 128, 256)}
    slopes = [math.log(counts[2 * d] / counts[d], 2) for d in (32, 64, 128)]
    # the latent projection adds a term linear in d, so the log-log slope rises towards 2 from below
    assert all(1.5 < s <= 2.0 for s in slopes), slopes
    assert slopes == sorted(slopes) and slopes[-1] > 1.8
    # and for large d the count is close to the d^2 coefficient of the layer plan: (4*2*9 + 2*16) d^2 = 104 d^2
    assert abs(counts[256] / (104 * 256 ** 2) - 1) < 0.16


def test_wdcgan_critic_has_no_batchnorm_and_is_per_sample():
    critic = build_discriminator("wdcgan", 1, 28, d=4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in critic.modules())
    x = torch.randn(5, 1, 28, 28)
    critic.train()
    assert torch.allclose(critic(x)[:2], critic(x[:2]), atol=1e-6)  # a sample's score ignores its batch


def test_bad_generator_arguments():
    for kw, word in (({"d": 0}, "d"), ({"d": -3}, "d"), ({"latent_dim": 0}, "latent_dim"), ({"d": 2.5}, "d")):
        with pytest.raises(ValueError, match=word):
            build_generator("dcgan", 1, 28, **{"d": 4, "latent_dim": 8, **kw})
    with pytest.raises(ValueError, match=r"image_size 30.*28, 32, 64"):
        build_generator("dcgan", 1, 30, d=4)
    with pytest.raises(TypeError, match="accepted: d, latent_dim"):
        build_generator("dcgan", 1, 28, width=3)
    with pytest.raises(KeyError, match="known generators: dcgan, mosaic, resnet_gen, sagan, unet, unet_deep, wdcgan"):
        build_generator("stylegan", 1, 28)
    g = build_generator("dcgan", 1, 28, d=2, latent_dim=8)
    with pytest.raises(ValueError, match=r"\[B, 8\]"):
        g(torch.randn(2, 9))


def test_generator_safetensors_roundtrip_and_classifier_rejected(tmp_path):
    torch.manual_seed(0)
    g = build_generator("wdcgan", 3, 32, d=3, latent_dim=7).eval()
    path = save_generator(g, tmp_path / "g.safetensors", data="cifar10")
    back = load_generator(path)
    z = torch.randn(4, 7)
    assert back.arch == "wdcgan" and back.latent_dim == 7 and back.output_shape == (3, 32, 32)
    assert torch.equal(back(z), g(z))
    clf = save_classifier(build_model("mlp", hidden=[4]), tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="not a kdlab generator"):
        load_generator(clf)


def test_gan_losses_closed_forms():
    zeros = torch.zeros(6)
    assert torch.isclose(bce_discriminator_loss(zeros, zeros), torch.tensor(2 * math.log(2.0)))
    r, f = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0, -2.0])
    sig = torch.sigmoid
    want = -torch.log(sig(r)).mean() - torch.log(1 - sig(f)).mean()
    assert torch.isclose(bce_discriminator_loss(r, f), want, atol=1e-6)
    assert torch.isclose(bce_generator_loss(f), -torch.log(sig(f)).mean(), atol=1e-6)
    assert torch.isclose(wgan_critic_loss(r, f), f.mean() - r.mean())
    assert torch.isclose(wgan_generator_loss(f), -f.mean())
    a, b = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    assert torch.isclose(generator_mse(a, b), ((a - b) ** 2).sum() / a.numel())
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\).*\(2, 1, 4, 5\)"):
        generator_mse(a, torch.randn(2, 1, 4, 5))


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = <w, x>: grad_x D = w everywhere, so the penalty is (||w|| - 1)^2 for any interpolate
    w = torch.randn(1, 2, 3, 3)

    def critic(x):
        return (x * w).flatten(1).sum(1)

    gp = gradient_penalty(critic, torch.randn(5, 2, 3, 3), torch.randn(5, 2, 3, 3))
    assert torch.isclose(gp, (w.norm() - 1) ** 2, rtol=1e-5)


def test_joint_loss_weights_are_separate():
    s, t = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    adv = torch.tensor(-0.7)
    total, mse, a = joint_student_loss(s, t, adv, mse_weight=0.0, adv_weight=1.0)
    assert float(total) == pytest.approx(-0.7) and float(mse) == pytest.approx(1.0)
    total, _, _ = joint_student_loss(s, t, adv, mse_weight=0.3, adv_weight=0.7)
    assert float(total) == pytest.approx(0.3 * 1.0 + 0.7 * -0.7)


@pytest.mark.parametrize("recipe,data,shape", [("gan_teacher_cifar10", "cifar10", (3, 32, 32)),
                                               ("gan_teacher", "mnist", (1, 28, 28))])
def test_recipes_build_generators_for_other_data_sets(recipe, data, shape, tmp_path):
    """The packaged configs build the right generator for a data set's spec (no data is read)."""
    from kdlab.cli import resolve_config
    from kdlab.data import dataset_spec
    from kdlab.methods import METHODS
    from kdlab.runner import load_run_config

    cfg = load_run_config([resolve_config(recipe)], [f"data.name={data}", "eval.extractor=null", f"out_dir={tmp_path}"])
    m = METHODS.get(cfg.method)(cfg, dataset_spec(data))
    assert tuple(m.eval_model().output_shape) == shape
