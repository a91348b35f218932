"""Tests of kdlab.data on the real Fashion-MNIST (Debian package dataset-fashion-mnist)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import kdlab.data as kd
import kdlab.data.fashion as fashion_mod
from kdlab.data import (
    DATASETS,
    DataNotFoundError,
    InMemoryDataset,
    build_datasets,
    data_root,
    dataset_spec,
    load_split,
    make_loader,
    stratified_subset,
    train_val_split,
)
from kdlab.registry import UnknownNameError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
HAVE_FASHION = all((DEBIAN / f"{f}.gz").is_file() for f in (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason="sudo apt-get install dataset-fashion-mnist")


# ---------------------------------------------------------------- independent IDX decoding
def np_read_idx_gz(path: Path) -> np.ndarray:
    """Decode an IDX file with gzip + numpy only (independent of kdlab and torchvision)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    assert raw[:3] == b"\x00\x00\x08"
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("kdlab_data")


@pytest.fixture(scope="module")
def fashion_train(root):
    if not HAVE_FASHION:
        pytest.skip("Fashion-MNIST Debian package not installed")
    return load_split("fashion-mnist", "train", root=root, download=False)


@pytest.fixture(scope="module")
def fashion_test(root):
    if not HAVE_FASHION:
        pytest.skip("Fashion-MNIST Debian package not installed")
    return load_split("fashion-mnist", "test", root=root, download=False)


# ---------------------------------------------------------------- Fashion-MNIST loader
@needs_fashion
def test_fashion_mnist_shapes_and_labels(fashion_train, fashion_test):
    x, y = fashion_train
    xt, yt = fashion_test
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8
    assert xt.shape == (10000, 1, 28, 28) and xt.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64 and yt.shape == (10000,)
    # Fashion-MNIST is balanced: 6000 / 1000 per class (Xiao et al. 2017)
    assert torch.bincount(y).tolist() == [6000] * 10
    assert torch.bincount(yt).tolist() == [1000] * 10
    # first training label is 9, "Ankle boot": check against an independent decode of the .gz
    labels_np = np_read_idx_gz(DEBIAN / "train-labels-idx1-ubyte.gz")
    assert labels_np[0] == 9 and int(y[0]) == 9
    assert dataset_spec("fashion-mnist").class_names[9] == "Ankle boot"
    np.testing.assert_array_equal(y.numpy(), labels_np)
    np.testing.assert_array_equal(x[:100, 0].numpy(), np_read_idx_gz(DEBIAN / "train-images-idx3-ubyte.gz")[:100])
    np.testing.assert_array_equal(xt[:, 0].numpy(), np_read_idx_gz(DEBIAN / "t10k-images-idx3-ubyte.gz"))
    np.testing.assert_array_equal(yt.numpy(), np_read_idx_gz(DEBIAN / "t10k-labels-idx1-ubyte.gz"))


@needs_fashion
def test_fashion_mnist_torchvision_layout_and_debian_dir_untouched(root, fashion_train):
    raw = root / "FashionMNIST" / "raw"
    before = sorted(os.listdir(DEBIAN))
    for f in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert (raw / f).is_file()  # decompressed, what torchvision.datasets.FashionMNIST reads
        gz = raw / f"{f}.gz"
        assert gz.is_file() and (not gz.is_symlink() or gz.resolve() == (DEBIAN / f"{f}.gz").resolve())
    # torchvision itself can read the layout
    from torchvision.datasets import FashionMNIST

    assert len(FashionMNIST(str(root), train=False, download=False)) == 10000
    # loading again reuses the files; the Debian directory was never written
    load_split("fashion-mnist", "test", root=root, download=False)
    assert sorted(os.listdir(DEBIAN)) == before


def test_data_root_must_not_be_inside_debian_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mod, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "deb")
    (tmp_path / "deb").mkdir()
    with pytest.raises(ValueError, match="read-only"):
        load_split("fashion-mnist", "train", root=tmp_path / "deb" / "x", download=False)


def test_offline_error_names_apt_package_and_root(tmp_path, monkeypatch):
    empty_deb = tmp_path / "debian_empty"
    empty_root = tmp_path / "root_empty"
    empty_deb.mkdir()
    empty_root.mkdir()
    monkeypatch.setattr(fashion_mod, "FASHION_MNIST_DEBIAN_DIR", empty_deb)
    with pytest.raises(DataNotFoundError) as ei:
        load_split("fashion-mnist", "train", root=empty_root, download=False)
    msg = str(ei.value)
    assert isinstance(ei.value, FileNotFoundError)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(empty_root) in msg and "KDLAB_DATA" in msg and str(empty_deb) in msg
    # the root from $KDLAB_DATA, and $KDLAB_OFFLINE stopping the default download attempt
    env_root = tmp_path / "env_root"
    monkeypatch.setenv("KDLAB_DATA", str(env_root))
    monkeypatch.setenv("KDLAB_OFFLINE", "1")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist") as ei:
        build_datasets("fashion-mnist")
    assert str(env_root) in str(ei.value)


def test_other_sets_offline_error(tmp_path):
    with pytest.raises(DataNotFoundError) as ei:
        load_split("mnist", "train", root=tmp_path, download=False)
    assert str(tmp_path) in str(ei.value)


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("KDLAB_DATA", raising=False)
    assert data_root() == Path("~/.cache/kdlab/data").expanduser().absolute()
    monkeypatch.setenv("KDLAB_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"


def test_registry_and_bad_names():
    assert {"fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "imagefolder"} <= set(DATASETS.names())
    with pytest.raises(UnknownNameError, match="fashion-mnist"):
        dataset_spec("imagenet")
    with pytest.raises(ValueError, match="imagefolder:"):
        dataset_spec("imagefolder")
    with pytest.raises(ValueError, match="split"):
        load_split("fashion-mnist", "val")
    with pytest.raises(ValueError, match="image_size"):
        dataset_spec("cifar10", image_size=0)
    names = dataset_spec("cifar100").class_names
    assert len(names) == 100 and len(set(names)) == 100 and names == sorted(names)
    assert dataset_spec("fashion_mnist").name == "fashion-mnist"
    assert kd.hflip_ok("fashion-mnist") and kd.hflip_ok("cifar10")
    assert not kd.hflip_ok("mnist") and not kd.hflip_ok("svhn")


@pytest.mark.parametrize("name, c, size, k, mean, std", [
    ("fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,)),
    ("mnist", 1, 28, 10, (0.1307,), (0.3081,)),
    ("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ("cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    ("svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
])
def test_spec_constants(name, c, size, k, mean, std):
    s = dataset_spec(name)
    assert (s.in_channels, s.image_size, s.num_classes, len(s.class_names)) == (c, size, k, k)
    np.testing.assert_allclose(s.mean, mean, atol=1e-6)
    np.testing.assert_allclose(s.std, std, atol=1e-6)


@needs_fashion
def test_fashion_mean_std_from_data(fashion_train):
    # exact mean/std from the histogram of pixel values of the independently decoded file
    counts = np.bincount(np_read_idx_gz(DEBIAN / "train-images-idx3-ubyte.gz").reshape(-1), minlength=256)
    v = np.arange(256) / 255.0
    mean = (counts * v).sum() / counts.sum()
    std = np.sqrt((counts * (v - mean) ** 2).sum() / counts.sum())
    assert abs(mean - 0.2860) < 5e-4 and abs(std - 0.3530) < 5e-4
    s = dataset_spec("fashion-mnist")
    assert abs(s.mean[0] - mean) < 5e-4 and abs(s.std[0] - std) < 5e-4


# ---------------------------------------------------------------- subsets and splits
@needs_fashion
def test_stratified_subset_exact_and_reproducible(fashion_train):
    _, y = fashion_train
    a = stratified_subset(y, 7, seed=3)
    assert a.dtype == torch.int64 and len(a) == 70 and len(torch.unique(a)) == 70
    assert np.bincount(y[a].numpy(), minlength=10).tolist() == [7] * 10
    assert torch.equal(a, stratified_subset(y, 7, seed=3))
    assert not torch.equal(a, stratified_subset(y, 7, seed=4))
    # subsets of one seed are nested
    small = set(stratified_subset(y, 3, seed=3).tolist())
    assert small <= set(a.tolist())


def test_stratified_subset_errors_name_class_and_count():
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 3)
    with pytest.raises(ValueError, match=r"class 2 has only 3"):
        stratified_subset(labels, 5, seed=0)
    cand = torch.arange(15)  # class 1 has 5 candidates, class 2 none
    with pytest.raises(ValueError, match=r"class 2 has only 0"):
        stratified_subset(labels, 2, seed=0, candidates=cand)
    with pytest.raises(ValueError, match="n_per_class"):
        stratified_subset(labels, -1, seed=0)
    with pytest.raises(ValueError, match="duplicate"):
        stratified_subset(labels, 1, seed=0, candidates=torch.tensor([0, 0, 10, 20]))
    with pytest.raises(ValueError, match="candidates"):
        stratified_subset(labels, 1, seed=0, candidates=torch.tensor([0, 10, 23]))


@needs_fashion
def test_train_val_split_stratified_disjoint(fashion_train):
    _, y = fashion_train
    tr, va = train_val_split(y, 5000, seed=0)
    assert len(va) == 5000 and len(tr) == 55000
    assert np.bincount(y[va].numpy(), minlength=10).tolist() == [500] * 10  # 5000 * 6000 / 60000
    assert len(np.intersect1d(tr.numpy(), va.numpy())) == 0
    assert np.array_equal(np.union1d(tr.numpy(), va.numpy()), np.arange(60000))
    tr2, va2 = train_val_split(y, 5000, seed=0)
    assert torch.equal(va, va2) and torch.equal(tr, tr2)
    assert not torch.equal(va, train_val_split(y, 5000, seed=1)[1])
    assert len(train_val_split(y, 0.1, seed=0)[1]) == 6000
    tr0, va0 = train_val_split(y, 0, seed=0)
    assert len(va0) == 0 and len(tr0) == 60000
    # the n-per-class training subset never overlaps validation
    sub = stratified_subset(y, 50, seed=0, candidates=tr)
    assert len(np.intersect1d(sub.numpy(), va.numpy())) == 0
    assert np.bincount(y[sub].numpy(), minlength=10).tolist() == [50] * 10


def test_train_val_split_proportional_on_imbalanced_labels():
    labels = torch.tensor([0] * 100 + [1] * 50 + [2] * 30)
    _, va = train_val_split(labels, 18, seed=5)  # 18 * (100, 50, 30) / 180 = (10, 5, 3)
    assert np.bincount(labels[va].numpy()).tolist() == [10, 5, 3]
    # 10 * (100, 50, 30) / 180 = (5.56, 2.78, 1.67): floors (5, 2, 1), the 2 left over go to the
    # largest remainders -> (5, 3, 2), and the total is exact
    _, va = train_val_split(labels, 10, seed=5)
    assert len(va) == 10 and np.bincount(labels[va].numpy()).tolist() == [5, 3, 2]
    for bad in (-1, 180, 1.5, -0.2, True, "10"):
        with pytest.raises(ValueError, match="val_size"):
            train_val_split(labels, bad, seed=0)


@needs_fashion
def test_build_datasets(root, fashion_train):
    x, y = fashion_train
    ds = build_datasets("fashion-mnist", root=root, val_size=1000, n_per_class=20, subset_seed=1,
                        download=False, max_test=500)
    assert len(ds.train) == 200 and len(ds.val) == 1000 and len(ds.test) == 500
    assert np.bincount(ds.train.labels.numpy()).tolist() == [20] * 10
    assert np.bincount(ds.val.labels.numpy()).tolist() == [100] * 10
    assert np.bincount(ds.test.labels.numpy()).tolist() == [50] * 10
    # composition: val first from the full split, then the subset from the rest
    tr, va = train_val_split(y, 1000, seed=1)
    sub = stratified_subset(y, 20, seed=1, candidates=tr)
    assert torch.equal(ds.val.images, x[va]) and torch.equal(ds.train.images, x[sub])
    assert ds.spec.mean == (0.2860,) and ds.train.mean == (0.2860,) and ds.test.std == (0.3530,)
    assert not ds.val.augment and not ds.test.augment
    assert build_datasets(root=root, val_size=0, n_per_class=1, download=False, max_test=10).val is None


# ---------------------------------------------------------------- image folders
def _write_pngs(folder: Path, color, n: int, size=(40, 20), mode="RGB"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new(mode, size, color).save(folder / f"{i}.png")


def test_imagefolder_single_folder(tmp_path):
    _write_pngs(tmp_path / "imgs" / "dog", (0, 0, 255), 10, size=(16, 16))
    _write_pngs(tmp_path / "imgs" / "cat", (255, 0, 0), 10, size=(40, 20))
    _write_pngs(tmp_path / "imgs" / "emu", 128, 5, size=(30, 30), mode="L")  # grey -> RGB
    name = f"imagefolder:{tmp_path / 'imgs'}"
    xtr, ytr = load_split(name, "train")
    xte, yte = load_split(name, "test")
    assert xtr.shape[1:] == (3, 32, 32) and xtr.dtype == torch.uint8
    # 20% stratified hold-out: 2 of 10 cats, 2 of 10 dogs, 1 of 5 emus
    assert np.bincount(yte.numpy()).tolist() == [2, 2, 1] and np.bincount(ytr.numpy()).tolist() == [8, 8, 4]
    # labels follow sorted class names; colours survive the resize
    cat = xtr[ytr == 0]
    assert (cat[:, 0] == 255).all() and (cat[:, 1:] == 0).all()
    assert (xtr[ytr == 1][:, 2] == 255).all() and (xtr[ytr == 2] == 128).all()
    spec = dataset_spec(name, image_size=16)
    assert (spec.num_classes, spec.in_channels, spec.image_size) == (3, 3, 16)
    assert spec.class_names == ["cat", "dog", "emu"]
    expected_mean = (np.array([[255, 0, 0]] * 8 + [[0, 0, 255]] * 8 + [[128, 128, 128]] * 4) / 255).mean(0)
    np.testing.assert_allclose(spec.mean, expected_mean, atol=1e-6)
    assert load_split(name, "train", image_size=16)[0].shape[1:] == (3, 16, 16)
    ds = build_datasets(name, val_size=0.25, download=False)
    assert len(ds.train) + len(ds.val) == 20 and len(ds.test) == 5 and ds.spec.num_classes == 3


def test_imagefolder_train_test_layout(tmp_path):
    _write_pngs(tmp_path / "d" / "train" / "a", (10, 20, 30), 3)
    _write_pngs(tmp_path / "d" / "train" / "b", (200, 100, 50), 3)
    _write_pngs(tmp_path / "d" / "test" / "b", (200, 100, 50), 2)  # test may lack a class
    x, y = load_split(f"imagefolder:{tmp_path / 'd'}", "test", image_size=8)
    assert x.shape == (2, 3, 8, 8) and y.tolist() == [1, 1]  # 'b' keeps the training label 1
    assert (x[:, 0] == 200).all() and (x[:, 2] == 50).all()
    _write_pngs(tmp_path / "d" / "test" / "zebra", (0, 0, 0), 1)
    with pytest.raises(ValueError, match="zebra"):
        load_split(f"imagefolder:{tmp_path / 'd'}", "test")
    with pytest.raises(DataNotFoundError):
        load_split(f"imagefolder:{tmp_path / 'missing'}", "train")


@needs_fashion
def test_resize_option(root, fashion_test):
    x32, y32 = load_split("fashion-mnist", "test", root=root, download=False, image_size=32)
    x, _ = fashion_test
    assert x32.shape == (10000, 1, 32, 32) and x32.dtype == torch.uint8
    assert abs(x32.double().mean() - x.double().mean()) < 1.0  # mean brightness kept (0..255 units)
    assert dataset_spec("fashion-mnist", image_size=32).image_size == 32


@needs_fashion
def test_unwritable_root_falls_back_to_reading_the_gz(tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    with pytest.warns(RuntimeWarning, match="cannot set Fashion-MNIST up"):
        x, y = load_split("fashion-mnist", "test", root=tmp_path / "a_file" / "data", download=False)
    np.testing.assert_array_equal(y.numpy(), np_read_idx_gz(DEBIAN / "t10k-labels-idx1-ubyte.gz"))
    np.testing.assert_array_equal(x[:, 0].numpy(), np_read_idx_gz(DEBIAN / "t10k-images-idx3-ubyte.gz"))


def test_in_memory_dataset_pickles_and_works_with_workers():
    import pickle

    imgs = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    ds = InMemoryDataset(imgs, torch.arange(40) % 4, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    ds2 = pickle.loads(pickle.dumps(ds))
    assert torch.equal(ds2.__getitems__([1, 2]).x, ds.__getitems__([1, 2]).x)
    expected = (imgs[7].double() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]).view(3, 1, 1)
    torch.testing.assert_close(ds[7][0].double(), expected, atol=1e-5, rtol=0)
    ys = torch.cat([b.y for b in make_loader(ds, 8, shuffle=True, seed=2, num_workers=2)])
    ys0 = torch.cat([b.y for b in make_loader(ds, 8, shuffle=True, seed=2, num_workers=0)])
    assert torch.equal(ys, ys0)
