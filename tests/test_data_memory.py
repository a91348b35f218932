"""Tests of kdlab.data's in-memory sets on the real Fashion-MNIST test split: normalisation and the batched path,
crop-and-flip augmentation, the loaders' order, input noise (the data sources: test_data.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kdlab.data as kd
from kdlab.data import Batch, DataNotFoundError, InMemoryDataset, add_gaussian_noise, collate_batched, load_split, make_loader


@pytest.fixture(scope="module")
def fashion_test(tmp_path_factory):
    """(x uint8 [10000, 28, 28], y int64 [10000]) from the Debian package; skipped without it."""
    try:
        return load_split("fashion-mnist", "test", root=tmp_path_factory.mktemp("kdlab_data"), download=False)
    except DataNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not installed ({exc})")


# ---------------------------------------------------------------- InMemoryDataset
def test_normalisation_and_batched_path(fashion_test):
    x, y = fashion_test
    ds = InMemoryDataset(x[:64], y[:64], (0.2860,), (0.3530,))
    xi, yi = ds[5]
    assert xi.dtype == torch.float32 and xi.shape == (1, 28, 28) and yi.dtype == torch.int64
    expected = (x[5].numpy().astype(np.float64) / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(xi.numpy(), expected, atol=1e-5)
    idx = [3, 0, 63, 17, 17]
    b = ds.__getitems__(idx)
    xb, yb = b.x, b.y
    assert isinstance(b, Batch) and len(b) == 5 and b.x_teacher is None
    assert torch.equal(b.index, torch.tensor(idx))
    assert xb.shape == (5, 1, 28, 28)
    assert torch.equal(xb, torch.stack([ds[i][0] for i in idx]))
    assert torch.equal(yb, torch.stack([ds[i][1] for i in idx]))
    # via a DataLoader with the identity collate
    loader = torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=collate_batched)
    bl = next(iter(loader))
    xl, yl = bl.x, bl.y
    assert torch.equal(xl, torch.stack([ds[i][0] for i in range(16)])) and torch.equal(yl, y[:16])
    # the whole normalised test set has mean ~0 and std ~1 (test split stats are close to train's)
    full = InMemoryDataset(x, y, (0.2860,), (0.3530,)).__getitems__(list(range(len(y)))).x
    assert abs(float(full.mean())) < 0.02 and abs(float(full.std()) - 1) < 0.02
    with pytest.raises(ValueError, match="uint8"):
        InMemoryDataset(x.float(), y, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="channels"):
        InMemoryDataset(x, y, (0.5, 0.5), (0.5, 0.5))
    with pytest.raises(ValueError, match="std"):
        InMemoryDataset(x, y, (0.5,), (0.0,))


def _candidates(img: np.ndarray, pad: int, flip: bool) -> list:
    """All padded crops (and their mirror images) of one [C, H, W] image, in numpy."""
    c, h, w = img.shape
    p = np.pad(img, ((0, 0), (pad, pad), (pad, pad)))
    out = []
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            crop = p[:, oy:oy + h, ox:ox + w]
            out.append(crop)
            if flip:
                out.append(crop[:, :, ::-1])
    return out


def test_augmentation_is_crop_and_flip(fashion_test):
    x, y = fashion_test
    torch.manual_seed(0)
    for hflip in (True, False):
        ds = InMemoryDataset(x[:12], y[:12], (0.0,), (1.0,), augment=True, hflip=hflip)
        assert ds.pad == 2  # 28x28
        xb = ds.__getitems__(list(range(12))).x
        pix = np.rint(xb.numpy() * 255).astype(np.uint8)
        flipped_somewhere = False
        for i in range(12):
            cands = _candidates(x[i].numpy(), 2, hflip)
            matches = [k for k, cnd in enumerate(cands) if np.array_equal(cnd, pix[i])]
            assert matches, f"sample {i} is no crop{'/flip' if hflip else ''} of its image"
            if hflip and all(k % 2 == 1 for k in matches):
                flipped_somewhere = True
        if hflip:
            assert flipped_somewhere  # P(no flip in 12 draws) = 2**-12
    assert kd.memory.default_pad(32) == 4 and kd.memory.default_pad(28) == 2


# ---------------------------------------------------------------- loaders
def _order(loader) -> list:
    return torch.cat([b.y for b in loader]).tolist()


def test_make_loader_order_is_function_of_seed_and_epoch():
    n = 103
    ds = InMemoryDataset(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), torch.arange(n), (0.0,), (1.0,))
    rng_before = torch.random.get_rng_state()
    a = make_loader(ds, 10, shuffle=True, seed=7, epoch=3)
    o = _order(a)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    expected = torch.randperm(n, generator=torch.Generator().manual_seed(7 * 1000003 + 3)).tolist()
    assert o == expected
    assert _order(a) == o  # iterating again gives the same order
    torch.manual_seed(12345)  # the global seed plays no part
    assert _order(make_loader(ds, 10, shuffle=True, seed=7, epoch=3)) == o
    assert _order(make_loader(ds, 10, shuffle=True, seed=7, epoch=4)) != o
    assert _order(make_loader(ds, 10, shuffle=True, seed=8, epoch=3)) != o
    a.sampler.set_epoch(4)
    assert _order(a) == _order(make_loader(ds, 10, shuffle=True, seed=7, epoch=4))
    assert _order(make_loader(ds, 10, shuffle=False, seed=7)) == list(range(n))
    batches = list(make_loader(ds, 10, shuffle=True, seed=0, drop_last=True))
    assert len(batches) == 10 and all(b.x.shape == (10, 1, 4, 4) for b in batches)
    # data-parallel shards are disjoint and cover one permutation
    shards = [_order(make_loader(ds, 8, True, seed=1, epoch=2, num_replicas=2, rank=r, drop_last=True))
              for r in range(2)]
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == len(shards[1]) == 48
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0, True, seed=0)


# ---------------------------------------------------------------- noise
def test_add_gaussian_noise():
    x = torch.full((400_000,), 2.0)
    g = torch.Generator().manual_seed(0)
    out = add_gaussian_noise(x, 0.3, generator=g)
    d = (out - x).double()
    # std of the sample std for n=4e5 is 0.3 / sqrt(2n) ~ 3.4e-4
    assert abs(float(d.std()) - 0.3) < 3e-3 and abs(float(d.mean())) < 3e-3
    out2 = add_gaussian_noise(x, 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, out2) and out.shape == x.shape and out.dtype == x.dtype
    assert add_gaussian_noise(x, 0.0) is x
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            add_gaussian_noise(x, bad)
