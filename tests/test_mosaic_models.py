"""MosaicKD's generator and patch discriminator (supplement Tables 2-4): shapes, output range, patch map
size and receptive field from independent conv arithmetic and from gradients, parameter counts."""
from __future__ import annotations

import pytest
import torch

from kdlab.engine.generators import load_generator, save_generator
from kdlab.metrics import count_parameters
from kdlab.models import (
    DISCRIMINATORS,
    GENERATORS,
    MosaicGenerator,
    PatchDiscriminator,
    build_discriminator,
    build_generator,
)

SHAPES = [(28, 1), (32, 3), (64, 3), (128, 3)]


def conv_out(n: int, k: int, s: int, p: int) -> int:
    """Output side of a convolution (Dumoulin & Visin 2016, relationship 6)."""
    return (n + 2 * p - k) // s + 1


def expected_map(size: int, kernel: int, final_kernel: int, final_stride: int) -> int:
    """Patch map side: stride-2 pad-1 convolutions down to 7 (28 px) or 8, then the prediction conv."""
    n = size
    for _ in range({28: 2, 32: 2, 64: 3, 128: 4}[size]):
        n = conv_out(n, kernel, 2, 1)
    return conv_out(n, final_kernel, final_stride, final_kernel // 2)


def paper_generator_params(nz: int, c: int, size: int, ngf: int = 64) -> int:
    """Table 2 counted by hand: Linear (with bias) to 2ngf x s x s, BN, then n_up bias-free 3x3 convs
    (2ngf -> 2ngf ..., the last to ngf) each with BN, and a 3x3 conv ngf -> C with bias."""
    s, n_up = (7, 2) if size == 28 else (8, {32: 2, 64: 3, 128: 4}[size])
    c0 = 2 * ngf
    n = nz * c0 * s * s + c0 * s * s + 2 * c0
    widths = [c0] + [2 * ngf] * (n_up - 1) + [ngf]
    for cin, cout in zip(widths[:-1], widths[1:]):
        n += cin * cout * 9 + 2 * cout
    return n + ngf * c * 9 + c


def paper_discriminator_params(c: int, size: int, ndf: int = 64) -> int:
    """Table 3 counted by hand: bias-free 3x3 stride-2 convs C -> ndf -> 2ndf (-> 2ndf for larger images),
    each with BN, and a 3x3 conv to one logit with bias."""
    n_down = {28: 2, 32: 2, 64: 3, 128: 4}[size]
    widths = [c, ndf] + [2 * ndf] * (n_down - 1)
    n = sum(i * o * 9 + 2 * o for i, o in zip(widths[:-1], widths[1:]))
    return n + 2 * ndf * 9 + 1


@pytest.mark.parametrize("size,c", SHAPES)
@pytest.mark.parametrize("widths", ["paper", "code"])
def test_shapes_and_generator_range(size, c, widths):
    torch.manual_seed(0)
    g = build_generator("mosaic", c, size, latent_dim=100, widths=widths)
    assert isinstance(g, MosaicGenerator) and g.output_range == (0.0, 1.0) and g.latent_dim == 100
    assert g.output_shape == (c, size, size) and g.config()["kwargs"]["widths"] == widths
    x = g(torch.randn(4, 100) * 5).detach()  # large z: the Sigmoid must still bound the images
    assert x.shape == (4, c, size, size)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert g(torch.randn(2, 100, 1, 1)).shape == (2, c, size, size)
    d = build_discriminator("patch", c, size, widths=widths)
    assert isinstance(d, PatchDiscriminator)
    out = d(x)
    side = 7 if size == 28 else 8
    assert out.shape == (4, 1, side, side) and d.output_shape == (1, side, side)
    assert bool((out < 0).any())  # raw logits: a Sigmoid output is never negative
    assert not isinstance(d.net[-1], torch.nn.Sigmoid)


@pytest.mark.parametrize("size,c", SHAPES)
@pytest.mark.parametrize("kernel,final_kernel", [(3, 3), (4, 1), (4, 3), (3, 1)])
def test_patch_map_size_follows_the_strides(size, c, kernel, final_kernel):
    sides = {}
    for stride in (1, 2, 3, 4):
        d = PatchDiscriminator(c, size, kernel=kernel, final_kernel=final_kernel, final_stride=stride, ndf=4)
        out = d(torch.rand(2, c, size, size))
        want = expected_map(size, kernel, final_kernel, stride)
        assert out.shape == (2, 1, want, want) and d.geometry().map_size == want
        sides[stride] = want
    # Table 4: a larger final stride = fewer, less overlapping patches; stride 2 about halves each side
    assert sides[1] > sides[2] > sides[3] >= sides[4]
    assert sides[2] == -(-sides[1] // 2)


def test_paper_plan_is_table_3_and_code_plan_is_the_published_one():
    paper = PatchDiscriminator(3, 32, widths="paper")
    convs = [m for m in paper.net if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for m in convs] == [
        (3, 64, 3, 2), (64, 128, 3, 2), (128, 1, 3, 1)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in paper.net) == 2
    code = PatchDiscriminator(3, 32, widths="code", final_stride=2)
    convs = [m for m in code.net if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for m in convs] == [
        (3, 128, 4, 2), (128, 256, 4, 2), (256, 1, 1, 2)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in code.net) == 1  # none after the first conv
    assert code.geometry().patch_size == 10  # NOTES: "each cell sees a ~10 px patch"
    g = MosaicGenerator(3, 32, widths="code")
    assert g.project.out_features == 256 * 8 * 8
    assert [(m.in_channels, m.out_channels) for m in g.net if isinstance(m, torch.nn.Conv2d)] == [
        (256, 128), (128, 64), (64, 3)]


@pytest.mark.parametrize("size,c", SHAPES)
@pytest.mark.parametrize("widths,kernel", [("paper", None), ("code", None), ("code", 3)])
def test_receptive_field_matches_the_gradient_support(size, c, widths, kernel):
    torch.manual_seed(0)
    d = PatchDiscriminator(c, size, widths=widths, kernel=kernel, ndf=4).eval()  # eval: BN mixes no samples
    geo = d.geometry()
    x = torch.randn(1, c, size, size, requires_grad=True)
    out = d(x)
    i = geo.map_size // 2  # an interior cell: its patch is not clipped by the zero padding
    out[0, 0, i, i].backward()
    support = x.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = support.any(dim=1).nonzero().flatten(), support.any(dim=0).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == geo.patch_size
    assert cols.max() - cols.min() + 1 == geo.patch_size
    assert int(support.sum()) == geo.patch_size ** 2  # the whole square, nothing outside it
    # and the same from the closed form: rf = 1 + sum_l (k_l - 1) * prod_{j<l} s_j
    k, fk = d.kernel, d.final_kernel
    n_down = {28: 2, 32: 2, 64: 3, 128: 4}[size]
    assert geo.patch_size == 1 + sum((k - 1) * 2 ** j for j in range(n_down)) + (fk - 1) * 2 ** n_down
    assert geo.jump == 2 ** n_down


@pytest.mark.parametrize("size,c", SHAPES)
def test_paper_parameter_counts(size, c):
    assert count_parameters(MosaicGenerator(c, size, 100, widths="paper")) == paper_generator_params(100, c, size)
    assert count_parameters(PatchDiscriminator(c, size, widths="paper")) == paper_discriminator_params(c, size)
    assert count_parameters(MosaicGenerator(c, size, 100, widths="paper", ngf=8)) == paper_generator_params(
        100, c, size, 8)
    if size == 32:  # Table 2 / 3 for CIFAR-100, ngf = ndf = 64
        assert paper_generator_params(100, 3, 32) == 1_050_947
        assert paper_discriminator_params(3, 32) == 76_993


def test_registry_save_load_and_bad_arguments(tmp_path):
    assert "mosaic" in GENERATORS and "patch" in DISCRIMINATORS
    torch.manual_seed(0)
    g = build_generator("mosaic", 1, 28, latent_dim=16, widths="paper", ngf=4).eval()
    back = load_generator(save_generator(g, tmp_path / "g.safetensors"))
    z = torch.randn(3, 16)
    assert back.arch == "mosaic" and back.arch_kwargs == g.arch_kwargs and torch.equal(back(z), g(z))
    assert build_discriminator("dcgan", 1, 28, d=4)(torch.rand(2, 1, 28, 28)).shape == (2,)  # DCGAN calls unchanged
    with pytest.raises(TypeError, match="accepted: latent_dim, widths, ngf"):
        build_generator("mosaic", 1, 28, d=4)
    with pytest.raises(TypeError, match="accepted: widths, kernel, final_kernel, final_stride, ndf"):
        build_discriminator("patch", 1, 28, d=4)
    with pytest.raises(ValueError, match=r"image_size 48.*28, 32, 64, 128"):
        MosaicGenerator(3, 48)
    with pytest.raises(ValueError, match=r"widths 'table'.*'paper'.*'code'"):
        PatchDiscriminator(3, 32, widths="table")
    with pytest.raises(ValueError, match=r"final_stride 5.*1, 2, 3, 4"):
        PatchDiscriminator(3, 32, final_stride=5)
    with pytest.raises(ValueError, match=r"kernel 5"):
        PatchDiscriminator(3, 32, kernel=5)
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\].*\(2, 1, 32, 32\)"):
        PatchDiscriminator(3, 32)(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 100\]"):
        MosaicGenerator(3, 32)(torch.randn(2, 99))
