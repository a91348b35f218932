"""Training batches cut from a copy of the set on the training device (``data.on_device``,
:class:`kdlab.data.DeviceBatches`) equal the DataLoader's (:func:`kdlab.data.make_loader`) bit for bit:
same order, shards, values, labels, row indices and augmentation draws. The DataLoader path is the
independent reference; the tensor path (the one a GPU runs) is checked on the CPU against numpy's.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import Subset

from kdlab.data import DeviceBatches, InMemoryDataset, SeededSampler, in_memory_rows, make_loader


def _set(n: int = 53, c: int = 1, augment: bool = False, seed: int = 0) -> InMemoryDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, 12, 12), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return InMemoryDataset(images, labels, [0.3] * c, [0.2] * c, augment=augment, pad=2)


def _same(a, b) -> None:
    assert torch.equal(a.x, b.x) and torch.equal(a.index, b.index)
    assert (a.y is None and b.y is None) or torch.equal(a.y, b.y)


@pytest.mark.parametrize("replicas", [1, 2, 3])
@pytest.mark.parametrize("augment", [False, True])
def test_device_batches_equal_the_dataloaders_through_subsets_and_shards(replicas, augment):
    base = _set(augment=augment)
    data = Subset(Subset(base, list(range(40, 3, -1))), [0, 5, 7, 2, 30, 31, 11, 12, 13, 14, 3, 1, 36, 20])
    for rank in range(replicas):
        loader = make_loader(data, 4, shuffle=True, seed=3, epoch=2, num_replicas=replicas, rank=rank)
        mine = DeviceBatches(data, 4, SeededSampler(len(data), True, 3, 2, replicas, rank), "cpu")
        assert len(mine) == len(loader)
        torch.manual_seed(7)  # the augmentation draws come from the global generator
        ref = list(loader)
        torch.manual_seed(7)
        got = list(mine)
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            _same(a, b)


def test_the_tensor_path_equals_numpys_values_and_draws():
    """The path a GPU runs (``_batch_torch``), run on the CPU: float32 ``img * scale - shift`` and the
    crops/flips equal the numpy path's for the same random draws."""
    for augment in (False, True):
        data = _set(n=31, c=3, augment=augment)
        index = torch.tensor([5, 0, 30, 7, 7, 12])
        torch.manual_seed(1)
        ref = data.__getitems__(index.numpy())
        torch.manual_seed(1)
        got = data._batch_torch(torch.device("cpu"), index)
        _same(got, ref)
        assert torch.randint(0, 1000, (1,)).item() == (torch.manual_seed(1), data.__getitems__(index.numpy()),
                                                      torch.randint(0, 1000, (1,)).item())[2]  # same draws consumed


def test_in_memory_rows_composes_subsets_and_refuses_other_sets():
    base = _set(n=10)
    _, rows = in_memory_rows(Subset(Subset(base, [9, 8, 7, 6]), [3, 0]))
    assert rows.tolist() == [6, 9]
    assert in_memory_rows(base) == (base, None)
    assert in_memory_rows(torch.utils.data.TensorDataset(torch.zeros(3))) is None
    with pytest.raises(ValueError, match="InMemoryDataset"):
        DeviceBatches(torch.utils.data.TensorDataset(torch.zeros(3)), 2, SeededSampler(3), "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_the_cpu_ones():
    data = _set(n=40, c=3, augment=True)
    index = torch.arange(39, -1, -3)
    torch.manual_seed(2)
    ref = data.__getitems__(index.numpy())
    torch.manual_seed(2)
    got = data.batch_on(torch.device("cuda"), index)
    assert got.x.device.type == "cuda"
    _same(got.to("cpu"), ref)


def test_a_run_on_device_equals_a_run_through_the_dataloader(tmp_path, monkeypatch):
    """2 epochs of a teacher (its weights: teacher.safetensors) with augmentation, ``data.on_device`` true vs false: the same weights bit for bit."""
    from safetensors.torch import load_file

    from conftest import small_config
    from kdlab.runner import load_run_config, train

    import kdlab.engine.train_data as train_data

    used = []

    class Spy(DeviceBatches):
        def __iter__(self):
            used.append(True)
            return super().__iter__()

    monkeypatch.setattr(train_data, "DeviceBatches", Spy)
    out = {}
    for flag in (True, False):
        cfg = small_config(tmp_path, name=f"on{flag}", data={"augment": True, "on_device": flag},
                           trainer={"epochs": 2, "progress": False, "tensorboard": False})
        out[flag] = load_file(str(train(load_run_config([cfg])) / "teacher.safetensors"))
        assert bool(used) == flag, "data.on_device did not choose the path"
        used.clear()
    assert out[True].keys() == out[False].keys()
    assert all(torch.equal(out[True][k], out[False][k]) for k in out[True])
