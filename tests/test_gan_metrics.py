"""Generative metrics on real Fashion-MNIST: FID/KID/IS against independent numpy computations and
known properties, variance of the Laplacian, and their bad-input errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from kdlab.data import build_datasets
from kdlab.metrics.generative import (
    ClassifierFeatures,
    FeatureSet,
    fid_from_features,
    frechet_distance,
    inception_score,
    is_from_logits,
    kernel_inception_distance,
    kid_from_features,
    variance_of_laplacian,
)
from kdlab.models import build_model


@pytest.fixture(scope="module")
def real():
    """1,600 real test images in [0, 1] and a small LeNet trained 80 steps on the training split."""
    torch.manual_seed(0)
    data = build_datasets("fashion-mnist", val_size=0, n_per_class=200, max_test=1600)
    net = build_model("lenet", channels=[8, 16], fc=64)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(80):
        idx = torch.randint(0, len(data.train), (100,), generator=g)
        b = data.train.__getitems__(idx.tolist())
        x, y = b.x, b.y
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    spec = data.spec
    feats = ClassifierFeatures(net, spec.mean, spec.std, "features")
    logits = ClassifierFeatures(net, spec.mean, spec.std, "logits")
    imgs = data.test.images.float() / 255.0
    return imgs, feats, logits


def numpy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance of Gaussians fitted to feature rows (unbiased covariances), via eigenvalues:
    Tr (S_a S_b)^(1/2) = sum sqrt(eig(S_a S_b))."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(sa @ sb)
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * tr_sqrt)


def numpy_kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3 on all rows (one subset = the whole sets)."""
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    m = a.shape[0]
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
                 - 2 * kab.mean())


def test_fid_and_kid_match_numpy(real):
    imgs, feats, _ = real
    a, b = imgs[:800], imgs[800:]
    fa, fb = feats(a).double().numpy(), feats(b).double().numpy()
    fid = frechet_distance(a, b, feats)
    assert fid == pytest.approx(numpy_fid(fa, fb), rel=1e-3, abs=1e-3)
    kid, _ = kernel_inception_distance(a, b, feats, subset_size=800, subsets=1)
    assert kid == pytest.approx(numpy_kid(fa, fb), rel=1e-3, abs=1e-5)
    # the features-once path gives the same numbers
    sa, sb = FeatureSet.from_batches([a], feats), FeatureSet.from_batches([b], feats)
    assert fid_from_features(sa, sb) == pytest.approx(fid, rel=1e-6, abs=1e-6)
    assert kid_from_features(sa, sb, 800, 1)[0] == pytest.approx(kid, rel=1e-4, abs=1e-7)


def test_fid_kid_of_a_set_with_itself_are_zero_and_grow_with_noise_and_blur(real):
    imgs, feats, _ = real
    x = imgs[:1000]
    ref = FeatureSet.from_batches([x], feats)
    assert abs(fid_from_features(ref, ref)) < 1e-6
    # KID is an unbiased MMD^2 estimate: about 0 (either sign) for the same distribution, on the scale
    # of the kernel values; compare with its value for a visibly corrupted copy
    noisy = FeatureSet.from_batches([(x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)], feats)
    scale = kid_from_features(ref, noisy, 500, 8)[0]
    other = FeatureSet.from_batches([imgs[1000:1600]], feats)
    assert abs(kid_from_features(ref, ref, 500, 8)[0]) < 0.1 * scale
    assert abs(kid_from_features(ref, other, 500, 8)[0]) < 0.1 * scale
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    for corrupt in ([(x + s * noise).clamp(0, 1) for s in (0.05, 0.1, 0.2, 0.4)],
                    [TF.gaussian_blur(x, kernel_size=9, sigma=s) for s in (0.5, 1.0, 1.5, 2.5)]):
        sets = [FeatureSet.from_batches([c], feats) for c in corrupt]
        fids = [fid_from_features(ref, s) for s in sets]
        kids = [kid_from_features(ref, s, 500, 8, seed=0)[0] for s in sets]
        assert fids[0] > 0.01 and all(a < b for a, b in zip(fids, fids[1:])), fids
        assert all(a < b for a, b in zip(kids, kids[1:])), kids


def test_inception_score_closed_forms(real):
    k, n = 10, 1000
    onehot = torch.nn.functional.one_hot(torch.arange(n) % k, k).double() * 100.0  # confident, uniformly spread
    assert is_from_logits(onehot, splits=1)[0] == pytest.approx(k, rel=1e-5)
    assert is_from_logits(torch.zeros(n, k), splits=1)[0] == pytest.approx(1.0, abs=1e-6)  # constant prediction
    const = torch.nn.functional.one_hot(torch.zeros(n, dtype=torch.long), k).double() * 100.0
    assert is_from_logits(const, splits=1)[0] == pytest.approx(1.0, abs=1e-6)
    # general logits: exp(mean_x KL(p(y|x) || p(y))) computed with numpy
    logits = torch.randn(n, k, generator=torch.Generator().manual_seed(1)).double() * 3
    p = torch.softmax(logits, 1).numpy()
    py = p.mean(0)
    want = np.exp((p * (np.log(p) - np.log(py))).sum(1).mean())
    assert is_from_logits(logits, splits=1)[0] == pytest.approx(want, rel=1e-6)
    # through a classifier: the IS of real images lies in [1, K]
    imgs, _, clf = real
    score, std = inception_score(imgs[:500], clf, splits=5)
    assert 1.0 < score <= k and std >= 0


def numpy_vol(gray255: np.ndarray) -> float:
    """OpenCV's Laplacian (ksize 1, BORDER_REFLECT_101) then population variance."""
    p = np.pad(gray255, 1, mode="reflect")
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * p[1:-1, 1:-1]
    return float(lap.var())


def test_variance_of_laplacian_matches_numpy_and_decreases_under_blur(real):
    imgs, _, _ = real
    x = imgs[:200]
    vol = variance_of_laplacian(x)
    want = [numpy_vol(img[0].double().numpy() * 255.0) for img in x[:5]]
    assert vol[:5].tolist() == pytest.approx(want, rel=1e-4)
    means = [float(variance_of_laplacian(TF.gaussian_blur(x, 9, s)).mean()) for s in (0.5, 1.0, 2.0, 3.0)]
    assert float(vol.mean()) > means[0] and all(a > b for a, b in zip(means, means[1:])), means
    # RGB goes through BT.601 luma: a grey RGB image scores as its grey version
    rgb = x[:3].repeat(1, 3, 1, 1)
    assert torch.allclose(variance_of_laplacian(rgb), vol[:3], rtol=1e-4)


def test_metric_bad_input(real):
    imgs, feats, _ = real
    with pytest.raises(ValueError, match=r"subset size 1000 is larger than the samples available \(300 real, 300"):
        kernel_inception_distance(imgs[:300], imgs[300:600], feats, subset_size=1000)
    with pytest.raises(ValueError, match="at least 10 images"):
        is_from_logits(torch.zeros(5, 10), splits=10)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        frechet_distance(imgs[0], imgs[:5], feats)
    with pytest.raises(ValueError, match="mode"):
        ClassifierFeatures(build_model("mlp", hidden=[4]), (0.5,), (0.5,), "softmax")


def test_paired_sets_generate_each_generator_once_and_equal_separate_sets(real):
    """The end-of-run student and teacher sets and the MSE between them come from one pass of each generator, and
    equal the sets built separately and the MSE written out here, in [-1, 1] units."""
    from types import SimpleNamespace

    from kdlab.games.gan_eval import paired_sets
    from kdlab.metrics.generative import generator_batches
    from kdlab.models.gan import build_generator

    _, feats, logits = real
    torch.manual_seed(0)
    student, teacher = build_generator("dcgan", 1, 28, d=4, latent_dim=8), build_generator("dcgan", 1, 28, d=8, latent_dim=8)
    calls = []
    for g in (student, teacher):
        g.register_forward_hook(lambda m, i, o, g=g: calls.append(g))
    lc = SimpleNamespace(n_samples=130, sample_seed=3)
    s_set, t_set, mse = paired_sets(student, teacher, lc, 50, feats, logits, "cpu")
    assert calls.count(student) == 3 and calls.count(teacher) == 3  # ceil(130 / 50) batches each
    for got, g in ((s_set, student), (t_set, teacher)):
        want = FeatureSet.from_batches(generator_batches(g, 130, 8, 3, 50), feats, logits)
        assert torch.equal(got.features, want.features) and torch.equal(got.logits, want.logits)
        assert torch.equal(got.vol, want.vol)
    s_img = torch.cat(list(generator_batches(student, 130, 8, 3, 50))) * 2 - 1
    t_img = torch.cat(list(generator_batches(teacher, 130, 8, 3, 50))) * 2 - 1
    assert mse == pytest.approx(float(((s_img - t_img) ** 2).mean()), rel=1e-6)
