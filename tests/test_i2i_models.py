"""pix2pix U-Net, CycleGAN ResNet generator, PatchGAN and SAGAN (VEM paper's architectures)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from kdlab.engine.generators import load_generator, save_generator
from kdlab.metrics import count_parameters
from kdlab.models import (GENERATOR_PRESETS, SelfAttention, build_discriminator, build_generator,
                          generator_preset)


def unet_params(ngf: int, n: int, cin: int, cout: int) -> int:
    """Independent count from the pix2pix layer table (BatchNorm: convs without bias, 2 params per channel).
    Encoder conv i: 4x4, c_{i-1} -> c_i with c_i = ngf * min(2^i, 8); norm on 1 <= i <= n-2. Decoder conv i:
    4x4 transposed, (c_i at the bottleneck, else 2 c_i for skip + below) -> c_{i-1}, norm after it, except
    the outermost: -> cout with bias, Tanh."""
    c = [ngf * min(2 ** i, 8) for i in range(n)]
    prev = [cin] + c[:-1]
    down = sum(16 * prev[i] * c[i] for i in range(n)) + sum(2 * c[i] for i in range(1, n - 1))
    up = 16 * c[n - 1] * c[n - 2] + 2 * c[n - 2]
    up += sum(16 * 2 * c[i] * c[i - 1] + 2 * c[i - 1] for i in range(1, n - 1))
    up += 16 * 2 * c[0] * cout + cout
    return down + up


def resnet_params(g: int, blocks: int, cin: int, cout: int) -> int:
    """Independent count of CycleGAN's ResnetGenerator with InstanceNorm (no affine, so every conv has a bias):
    c7s1-g, d2g, d4g, blocks x (two 3x3 4g -> 4g), u2g, ug, c7s1-cout."""
    stem = 49 * cin * g + g
    downs = (9 * g * 2 * g + 2 * g) + (9 * 2 * g * 4 * g + 4 * g)
    res = blocks * 2 * (9 * 16 * g * g + 4 * g)
    ups = (9 * 4 * g * 2 * g + 2 * g) + (9 * 2 * g * g + g)
    head = 49 * g * cout + cout
    return stem + downs + res + ups + head


@pytest.mark.parametrize("name", ["unet", "resnet_gen"])
@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("c", [1, 3])
def test_image_generators_keep_size_and_range(name, size, c):
    kw = {"ngf": 4} if name == "unet" else {"ngf": 4, "n_blocks": 2}
    g = build_generator(name, out_channels=c, image_size=size, in_channels=c, **kw)
    assert g.input_kind == "image" and g.latent_dim is None
    x = torch.randn(2, c, size, size) * 3
    y = g(x)
    assert y.shape == x.shape
    assert float(y.detach().abs().max()) <= 1.0
    y.mean().backward()  # the whole graph is differentiable (crops, output_size, skips)


def test_odd_and_non_square_sizes_come_back_exactly():
    r = build_generator("resnet_gen", 3, 30, ngf=4, n_blocks=1)
    u = build_generator("unet", 3, 30, ngf=4)
    for h, w in [(30, 30), (29, 31), (28, 44)]:
        x = torch.randn(1, 3, h, w)
        assert r(x).shape == x.shape and u(x).shape == x.shape


def test_published_parameter_counts():
    # pix2pix unet_256 ngf 64: 54.41M (VEM Table 1: 54.40M); OMGD's student 3.40M; CycleGAN resnet_9blocks 11.38M
    assert count_parameters(build_generator("unet", 3, 256, ngf=64)) == unet_params(64, 8, 3, 3)
    assert abs(unet_params(64, 8, 3, 3) / 1e6 - 54.41) < 0.01
    assert abs(unet_params(16, 8, 3, 3) / 1e6 - 3.40) < 0.01
    assert abs(resnet_params(64, 9, 3, 3) / 1e6 - 11.38) < 0.01
    assert abs(count_parameters(build_discriminator("patchgan", 6, 256)) / 1e6 - 2.77) < 0.01


@pytest.mark.parametrize("cin,cout,size", [(1, 1, 28), (3, 3, 64), (1, 3, 32)])
def test_parameter_counts_follow_the_closed_forms(cin, cout, size):
    for ngf in (8, 16):
        u = build_generator("unet", cout, size, in_channels=cin, ngf=ngf)
        assert count_parameters(u) == unet_params(ngf, u.num_downs, cin, cout)
        for blocks in (6, 9):
            r = build_generator("resnet_gen", cout, size, in_channels=cin, ngf=ngf, n_blocks=blocks)
            assert count_parameters(r) == resnet_params(ngf, blocks, cin, cout)
    # doubling ngf: the ngf^2 part quadruples, the linear part (biases, norms, image layers) doubles
    for count in (lambda g: unet_params(g, 5, cin, cout), lambda g: resnet_params(g, 9, cin, cout)):
        ratio = count(32) / count(16)
        assert 3.5 < ratio < 4.0


def test_unet_depth_from_image_size():
    assert [build_generator("unet", 1, s, ngf=2).num_downs for s in (28, 32, 64, 256)] == [5, 5, 6, 8]


@pytest.mark.parametrize("size,n_layers", [(256, 3), (64, 3), (32, 2), (28, 2), (64, 4)])
def test_patchgan_map_size(size, n_layers):
    d = build_discriminator("patchgan", in_channels=4, image_size=size, ndf=4, n_layers=n_layers)
    out = d(torch.randn(2, 4, size, size))
    side = size // 2 ** n_layers - 2  # stride-2 4x4 p1 halves (floor); the two stride-1 4x4 p1 convs take 1 each
    assert out.shape == (2, 1, side, side) and d.output_shape == (1, side, side)


def test_patchgan_receptive_field_is_70():
    d = build_discriminator("patchgan", in_channels=1, image_size=128, ndf=4).eval()
    assert d.geometry()[1] == 70
    x = torch.randn(1, 1, 128, 128, requires_grad=True)
    d(x)[0, 0, 7, 7].backward()
    rows, cols = np.nonzero(x.grad[0, 0].numpy())
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_self_attention_matches_numpy():
    torch.manual_seed(0)
    att = SelfAttention(16).eval()
    with torch.no_grad():
        att.gamma.fill_(0.7)
    x = torch.randn(2, 16, 3, 5)
    y = att(x).detach().numpy()

    def conv1x1(m):  # the spectrally normalised weight as the module uses it in eval mode
        return m.weight.detach().numpy()[:, :, 0, 0], m.bias.detach().numpy()

    xs = x.numpy().reshape(2, 16, 15)
    (wq, bq), (wk, bk), (wv, bv) = conv1x1(att.query), conv1x1(att.key), conv1x1(att.value)
    q = np.einsum("oc,bcn->bon", wq, xs) + bq[None, :, None]
    k = np.einsum("oc,bcn->bon", wk, xs) + bk[None, :, None]
    v = np.einsum("oc,bcn->bon", wv, xs) + bv[None, :, None]
    e = np.einsum("bcj,bci->bji", q, k)  # energy[j, i] = q_j . k_i
    a = np.exp(e - e.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = np.einsum("bci,bji->bcj", v, a)
    np.testing.assert_allclose(y, (0.7 * o + xs).reshape(2, 16, 3, 5), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        att.gamma.zero_()
    assert torch.equal(att(x), x)  # gamma starts at 0: the block starts as the identity


def test_sagan_spectral_norm_and_shapes():
    for size in (28, 32, 64):
        g = build_generator("sagan", 3, size, ngf=8, latent_dim=16)
        d = build_discriminator("sagan", 3, size, ndf=8)
        assert g.input_kind == "latent"
        x = g(torch.randn(2, 16))
        assert x.shape == (2, 3, size, size) and float(x.detach().abs().max()) <= 1.0
        assert d(x).shape == (2,)
        for net in (g, d):
            convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
            assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)
            assert sum(isinstance(m, SelfAttention) for m in net.modules()) == 2
    # after power iterations the largest singular value of a normalised weight is 1
    conv = build_discriminator("sagan", 3, 32, ndf=8).net[0]
    for _ in range(50):
        conv(torch.randn(1, 3, 8, 8))
    conv.eval()
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert abs(float(sigma) - 1.0) < 0.02


@pytest.mark.parametrize("name,kw", [("unet", {"ngf": 4, "in_channels": 1, "dropout": True}),
                                     ("resnet_gen", {"ngf": 4, "n_blocks": 2, "in_channels": 1}),
                                     ("sagan", {"ngf": 8, "latent_dim": 10})])
def test_save_load_round_trip(tmp_path, name, kw):
    torch.manual_seed(1)
    g = build_generator(name, 3, 28, **kw)
    g.train()
    x = torch.randn(4, 1, 28, 28) if g.input_kind == "image" else torch.randn(4, 10)
    g(x)  # update BatchNorm statistics and the spectral-norm power-iteration vectors before saving
    g.eval()
    path = save_generator(g, tmp_path / "generator.safetensors", dataset="fashion-mnist")
    h = load_generator(path)
    assert type(h) is type(g) and h.arch_kwargs == g.arch_kwargs
    with torch.no_grad():
        assert torch.equal(g(x), h(x))


def test_presets_build():
    assert generator_preset("pix2pix-student") == ("unet", {"ngf": 16})
    for name in sorted(GENERATOR_PRESETS):
        arch, kw = generator_preset(name)
        assert build_generator(arch, 1, 32, **kw).arch == arch
    with pytest.raises(ValueError, match="cyclegan-teacher"):
        generator_preset("cyclegan")


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="ngf must be an integer > 0, got 0"):
        build_generator("unet", 3, 32, ngf=0)
    with pytest.raises(ValueError, match=r"num_downs 7 for image_size 32; accepted: an integer in 2\.\.5"):
        build_generator("unet", 3, 32, num_downs=7)
    with pytest.raises(ValueError, match="image_size 6 is too small.*>= 8"):
        build_generator("resnet_gen", 3, 6)
    with pytest.raises(ValueError, match="norm 'group'; accepted: batch, instance"):
        build_generator("resnet_gen", 3, 32, norm="group")
    with pytest.raises(ValueError, match=r"image_size 16 gives no output patch with n_layers 3.*>= 24"):
        build_discriminator("patchgan", 6, 16)
    with pytest.raises(ValueError, match=r"expects images \[B, 3, H, W\]"):
        build_generator("unet", 3, 32, ngf=2)(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="ngf 4 is too narrow for self-attention; accepted: >= 8"):
        build_generator("sagan", 3, 32, ngf=4)
    with pytest.raises(ValueError, match="image_size 48 has no SAGAN layer plan; accepted: 28, 32, 64"):
        build_generator("sagan", 3, 48)
