"""The appendix-A.2 student terms (VEM paper eqs. 11-27) built from config: each against an independent
recomputation of its equation (numpy / plain torch written here), zero when the student equals the teacher
where that holds, and their build-time errors."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from kdlab.config import ConfigError
from kdlab.data import Batch
from kdlab.data.sets import DataSpec
from kdlab.engine.checkpoint import save_classifier
from kdlab.losses.cagc import SALIENCY
from kdlab.models import build_discriminator, build_generator, build_model
from kdlab.terms import CriticView, Outputs, TermContext, build_objective

S = 16
PAIRED = DataSpec(name="toy", num_classes=10, in_channels=1, image_size=S, mean=(0.5,), std=(0.5,),
                  pairing="paired", target_channels=1)


def nets(ngf_s=4, ngf_t=8, arch="unet", **kw):
    torch.manual_seed(0)
    s = build_generator(arch, 1, S, in_channels=1, ngf=ngf_s, **kw)
    t = build_generator(arch, 1, S, in_channels=1, ngf=ngf_t, **kw)
    return s, t


def context(student, teacher, critic=None, spec=PAIRED, teacher_critic=None):
    provides = {"teacher", "images", "features", "targets"} | ({"critic"} if critic is not None else set()) | \
        ({"teacher_critic"} if teacher_critic is not None else set())
    return TermContext(method="i2i-distill", kind="generator", student=student, teacher=teacher,
                       student_input=(1, S, S), teacher_input=(1, S, S), provides=frozenset(provides),
                       why_not={"critic": "no discriminator", "teacher_critic": "no teacher discriminator"}, spec=spec,
                       critic=critic, teacher_critic=teacher_critic)


def outputs(obj, student, teacher, x):
    from kdlab.terms.objective import forward_features

    out, feats = forward_features(student, x, obj.student_features)
    s = Outputs(out=out, features=feats, x=x)
    t = obj.teacher_outputs(teacher, x, Batch(x=x))
    return s, t


def value(terms, student, teacher, x, target=None, critic=None, teacher_critic=None):
    obj = build_objective(terms, context(student, teacher, critic, teacher_critic=teacher_critic))
    s, t = outputs(obj, student, teacher, x)
    name = next(iter(terms))
    return float(obj(s, t, Batch(x=x, target=target))[name].detach()), obj, s, t


@pytest.fixture()
def x():
    return torch.rand(4, 1, S, S, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_l1_ssim_tv_against_numpy(x):
    s, t = nets()
    s.eval(), t.eval()
    y = torch.rand(4, 1, S, S, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        a, b = s(x).numpy(), t(x).numpy()
    v, *_ = value({"l1_image": {"weight": 1.0}}, s, t, x)
    assert v == pytest.approx(np.abs(a - b).mean(), rel=1e-5)
    v, *_ = value({"l1_image": {"weight": 1.0, "target": "ground_truth", "reduction": "sum"}}, s, t, x, target=y)
    assert v == pytest.approx(np.abs(a - y.numpy()).reshape(4, -1).sum(1).mean(), rel=1e-5)
    v, *_ = value({"tv": {"weight": 1.0, "reduction": "sum"}}, s, t, x)
    tv = np.abs(np.diff(a, axis=2)).reshape(4, -1).sum(1) + np.abs(np.diff(a, axis=3)).reshape(4, -1).sum(1)
    assert v == pytest.approx(tv.mean(), rel=1e-5)
    # SSIM: scikit-image with a Gaussian window on [0, 1] images; it crops the borders, torchmetrics pads them
    v, *_ = value({"ssim": {"weight": 1.0, "kernel_size": 7}}, s, t, x)
    ref = np.mean([structural_similarity((a[i, 0] + 1) / 2, (b[i, 0] + 1) / 2, data_range=1.0, gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False, win_size=7) for i in range(4)])
    assert v == pytest.approx(1 - ref, abs=0.05)


def test_tv_of_constant_image_and_ssim_of_equal_images_are_zero(x):
    s, _ = nets()
    v, obj, so, to = value({"ssim": {"weight": 1.0, "kernel_size": 7}}, s, s, x)
    assert v == pytest.approx(0.0, abs=1e-5)
    tv = build_objective({"tv": {"weight": 1.0}}, context(s, s))
    const = Outputs(out=torch.full((2, 1, S, S), 0.3))
    assert float(tv(const, None, Batch(x=x[:2]))["tv"]) == 0.0


def test_channel_distill_against_its_equation(x):
    s, t = nets()
    v, obj, so, to = value({"channel_distill": {"weight": 1.0, "layers": [["dec1", "dec1"], ["enc2", "enc2"]]}}, s, t, x)
    conv = obj.terms["channel_distill"].adapters.adapters
    ref = 0.0
    for k, name in enumerate(["dec1", "enc2"]):
        fs = so.features[name].detach()
        w, bias = conv[k].weight.detach()[:, :, 0, 0], conv[k].bias.detach()
        adapted = torch.einsum("oc,bchw->bohw", w, fs) + bias[None, :, None, None]
        gs, gt = adapted.mean((2, 3)).numpy(), to.features[name].mean((2, 3)).numpy()
        ref += (((gs - gt) ** 2).sum(1) / gt.shape[1]).mean()
    assert v == pytest.approx(ref, rel=1e-4)


def test_gc_distill_against_eq21_and_zero_for_identity_adapter(x):
    s, t = nets()
    v, obj, so, to = value({"gc_distill": {"weight": 1.0, "reduction": "sum", "layers": [["dec2", "dec2"]]}}, s, t, x)
    conv = obj.terms["gc_distill"].loss.adapters[0]
    fs = so.features["dec2"].detach()
    adapted = torch.einsum("oc,bchw->bohw", conv.weight.detach()[:, :, 0, 0], fs) + conv.bias.detach()[None, :, None, None]
    ref = ((adapted - to.features["dec2"]) ** 2).reshape(4, -1).sum(1).mean()
    assert v == pytest.approx(float(ref), rel=1e-4)
    # student = teacher, adapters set to the identity: 0
    obj = build_objective({"gc_distill": {"weight": 1.0}}, context(t, t))
    with torch.no_grad():
        for conv in obj.terms["gc_distill"].loss.adapters:
            conv.weight.copy_(torch.eye(conv.in_channels)[:, :, None, None])
            conv.bias.zero_()
    so, to = outputs(obj, t, t, x)
    assert float(obj(so, to, Batch(x=x))["gc_distill"]) == pytest.approx(0.0, abs=1e-7)


def test_kernel_alignment_against_numpy_and_minus_L_for_self(x):
    s, t = nets()
    v, obj, so, to = value({"kernel_alignment": {"weight": 1.0, "layers": [["enc1", "enc1"], ["dec1", "dec1"]]}}, s, t, x)
    ref = 0.0
    for name in ("enc1", "dec1"):
        a = so.features[name].detach().reshape(4, -1).double().numpy()
        b = to.features[name].reshape(4, -1).double().numpy()
        ref -= np.linalg.norm(a.T @ b) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
    assert v == pytest.approx(ref, rel=1e-4)
    v, *_ = value({"kernel_alignment": {"weight": 1.0}}, t, t, x)
    assert v == pytest.approx(-len(t.distill_layers), rel=1e-5)


def _gram(f):
    f = f.reshape(f.shape[0], f.shape[1], -1)
    return f @ f.transpose(1, 2) / (f.shape[1] * f.shape[2])


def test_gcc_against_eqs_17_18_and_zero_for_equal_generators(x):
    """eq. 17 on the TEACHER's discriminator (``teacher_critic``): with ``distance: squared`` the equation's squared
    norms, with ``distance: root`` GCC's ``sqrt(MSE)`` (SJLeo/GCC models/Pix2Pix.py ``backward_G``), recomputed here."""
    s, t = nets()
    torch.manual_seed(3)
    disc = build_discriminator("patchgan", in_channels=2, image_size=S, ndf=8, n_layers=2).eval()
    d_t = CriticView(lambda: disc, (1, S, S), condition_channels=1)
    terms = {"gcc": {"weight": 1.0, "layers": [], "d_layers": ["layer2"], "lambda_mse": 0.5,
                     "lambda_style": 2.0, "lambda_recon": 3.0, "reduction": "sum", "distance": "squared"}}
    v, obj, so, to = value(terms, s, t, x, teacher_critic=d_t)
    with torch.no_grad():
        fs = disc.net[:5](torch.cat([x, so.out], 1))  # through layer2's activation (net.4)
        ft = disc.net[:5](torch.cat([x, to.out], 1))
    d = 0.5 * ((fs - ft) ** 2).reshape(4, -1).sum(1).mean() + 2.0 * ((_gram(fs) - _gram(ft)) ** 2).reshape(4, -1).sum(1).mean()
    ref = d + 3.0 * (so.out.detach() - to.out).abs().reshape(4, -1).sum(1).mean()
    assert v == pytest.approx(float(ref), rel=1e-4)
    terms["gcc"].update(distance="root", reduction="mean")
    v2, *_ = value(terms, s, t, x, teacher_critic=d_t)
    root = 0.5 * ((fs - ft) ** 2).mean().sqrt() + 2.0 * ((_gram(fs) - _gram(ft)) ** 2).mean().sqrt()
    assert v2 == pytest.approx(float(root + 3.0 * (so.out.detach() - to.out).abs().mean()), rel=1e-4)
    v0, *_ = value({"gcc": {"weight": 1.0, "layers": [], "lambda_recon": 1.0}}, t, t, x, teacher_critic=d_t)
    assert v0 == pytest.approx(0.0, abs=1e-6)


def test_cagc_against_eqs_25_26_and_saliency(x):
    s, t = nets()
    terms = {"cagc": {"weight": 1.0, "lambda_recon": 2.0, "lambda_distill": 0.5, "lambda_lpips": 0.0,
                      "layers": [["dec1", "dec1"]], "reduction": "sum"}}
    v, obj, so, to = value(terms, s, t, x)
    img = to.out
    border = torch.cat([img[:, :, 0, :], img[:, :, -1, :], img[:, :, :, 0], img[:, :, :, -1]], 2)
    dev = (img - border.median(2).values[:, :, None, None]).abs().mean(1, keepdim=True)
    m = (dev > 0.1 * dev.flatten(1).max(1).values[:, None, None, None]).float()
    conv = obj.terms["cagc"].adapters.adapters[0]
    fs = so.features["dec1"].detach()
    adapted = torch.einsum("oc,bchw->bohw", conv.weight.detach()[:, :, 0, 0], fs) + conv.bias.detach()[None, :, None, None]
    mf = torch.nn.functional.interpolate(m, size=adapted.shape[2:], mode="nearest")
    ref = 2.0 * (m * (so.out.detach() - img)).abs().reshape(4, -1).sum(1).mean() + \
        0.5 * (mf * (adapted - to.features["dec1"])).abs().reshape(4, -1).sum(1).mean()
    assert v == pytest.approx(float(ref), rel=1e-4)
    v1, *_ = value({"cagc": {"weight": 1.0, "saliency": "ones", "lambda_recon": 1.0, "lambda_lpips": 0.0}}, s, t, x)
    assert v1 == pytest.approx(float((so.out.detach() - img).abs().mean()), rel=1e-5)  # M = 1: plain L1
    v0, *_ = value({"cagc": {"weight": 1.0, "lambda_lpips": 0.0}}, t, t, x)
    assert v0 == 0.0


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    torch.manual_seed(0)
    clf = build_model("lenet", num_classes=10, in_channels=1, image_size=S, channels=[4, 8], fc=16)
    return save_classifier(clf, tmp_path_factory.mktemp("clf") / "c.safetensors", data="fashion-mnist"), clf.eval()


def test_perceptual_and_lpips_against_the_classifier(x, classifier):
    path, clf = classifier
    s, t = nets()
    from kdlab.models.base import extract_features

    def feats(img):  # the classifier's own normalisation: Fashion-MNIST mean/std on [0, 1] images
        from kdlab.data import dataset_spec

        spec = dataset_spec("fashion-mnist")
        z = ((img + 1) / 2 - spec.mean[0]) / spec.std[0]
        return extract_features(clf, z, ["conv1", "fc1"])[1]

    v, obj, so, to = value({"perceptual": {"weight": 1.0, "extractor": str(path), "layers": ["conv1", "fc1"],
                                           "layer_weights": [1.0, 2.0]}}, s, t, x)
    a, b = feats(so.out.detach()), feats(to.out)
    ref = float(((a["conv1"] - b["conv1"]) ** 2).mean() + 2 * ((a["fc1"] - b["fc1"]) ** 2).mean())
    assert v == pytest.approx(ref, rel=1e-4)
    rec = obj.terms["perceptual"].record()["extractor"]
    assert len(rec["sha256"]) == 64 and rec["normalisation"] == "fashion-mnist"
    v, *_ = value({"lpips": {"weight": 1.0, "extractor": str(path), "layers": ["conv1"]}}, s, t, x)
    u = lambda f: f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # noqa: E731
    assert v == pytest.approx(float((u(a["conv1"]) - u(b["conv1"])).pow(2).sum(1).mean()), rel=1e-4)
    v0, *_ = value({"lpips": {"weight": 1.0, "extractor": str(path)}}, t, t, x)
    assert v0 == pytest.approx(0.0, abs=1e-8)


def test_resnet_generator_default_layers_are_gan_compressions(x):
    s, t = nets(arch="resnet_gen", n_blocks=9)
    assert t.distill_layers == ["down2", "block3", "block6", "block9"]
    v, *_ = value({"gc_distill": {"weight": 1.0}}, s, t, x)
    assert v > 0


def test_build_errors():
    s, t = nets()
    ctx = context(s, t)
    with pytest.raises(ConfigError, match="unknown feature 'nope'.*known features: enc1"):
        build_objective({"channel_distill": {"layers": [["nope", "dec1"]]}}, ctx)
    with pytest.raises(ConfigError, match="saliency function.*'nope'.*foreground"):
        build_objective({"cagc": {"saliency": "nope"}}, ctx)
    SALIENCY.add("test-bad-shape", lambda img: torch.ones(img.shape[0], 1, 3, 3))
    try:
        with pytest.raises(ConfigError, match=r"saliency = 'test-bad-shape'.*must return a mask \[2, 1, 16, 16\].*got \(2, 1, 3, 3\)"):
            build_objective({"cagc": {"saliency": "test-bad-shape"}}, ctx)
    finally:
        SALIENCY._entries.pop("test-bad-shape", None)
    with pytest.raises(ConfigError, match="needs teacher_critic"):
        build_objective({"gcc": {}}, ctx)
    with pytest.raises(ConfigError, match="needs a feature network"):
        build_objective({"perceptual": {}}, ctx)
    with pytest.raises(ConfigError, match="kernel_size = 8 must be odd"):
        build_objective({"ssim": {"kernel_size": 8}}, ctx)
    unpaired = context(s, t, spec=None)
    unpaired.provides = unpaired.provides - {"targets"}
    with pytest.raises(ConfigError, match="target = 'ground_truth' needs targets"):
        build_objective({"l1_image": {"target": "ground_truth"}}, unpaired)
    disc = build_discriminator("patchgan", in_channels=1, image_size=S, ndf=8, n_layers=2)
    with pytest.raises(ConfigError, match="discriminator unknown feature 'layer9'.*layer1"):
        build_objective({"gcc": {"d_layers": ["layer9"]}}, context(s, t, teacher_critic=CriticView(lambda: disc, (1, S, S))))
