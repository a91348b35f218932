"""The training batches of one epoch, as the shared loop (:class:`kdlab.engine.Trainer`) iterates them."""
from __future__ import annotations

from typing import Any

from kdlab.data import DeviceBatches, SeededSampler, make_loader
from kdlab.engine.speed import data_on_device, pin_memory_for

__all__ = ["train_loader"]


def train_loader(cfg: Any, fabric: Any, train_set: Any, epoch: int):
    """Epoch ``epoch``'s shuffled training batches (``cfg.data``, ``cfg.seed``), as the loop iterates them;
    under DDP each rank (``fabric``) takes its shard of the same order. An in-memory set is served from the
    training device where ``data.on_device`` says so (:func:`kdlab.engine.speed.data_on_device`): the same
    batches, without a DataLoader."""
    data = cfg.data
    if data_on_device(getattr(data, "on_device", None), data.num_workers, train_set, fabric.device):
        sampler = SeededSampler(len(train_set), shuffle=True, seed=cfg.seed, epoch=epoch,
                                num_replicas=fabric.world_size, rank=fabric.global_rank)
        return DeviceBatches(train_set, data.batch_size, sampler, fabric.device)
    return make_loader(
        train_set,
        cfg.data.batch_size,
        shuffle=True,
        seed=cfg.seed,
        epoch=epoch,
        num_workers=cfg.data.num_workers,
        pin_memory=pin_memory_for(cfg.data.pin_memory, fabric.device),
        num_replicas=fabric.world_size,
        rank=fabric.global_rank,
    )
