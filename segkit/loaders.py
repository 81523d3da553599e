"""Training and validation loaders of a dataset root, single-process or one share per process,
and the loader ``segkit test`` scores a split with (frames of one size per batch).

Beside training rather than in ``segkit.datasets`` (which knows files, not training): under
torchrun each process loads its own share through ``segkit.distributed``'s samplers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, DistributedSampler

from segkit import distributed
from segkit.config import TrainConfig
from segkit.datasets import CityscapesSegmentation
from segkit.models.registry import model_info
from segkit.runtime import resolve_device
from segkit.transforms import eval_transforms, train_transforms


def build_loaders(root: str | os.PathLike, config: TrainConfig, device: torch.device | None = None
                  ) -> tuple[DataLoader, DataLoader]:
    """Training and validation loaders of ``root`` for a ``TrainConfig`` training on ``device``
    (the run's, ``RunContext.device``; default ``config.device`` resolved).

    Training samples get ``train_transforms(size=config.size, base_height=config.base_height)``
    and are shuffled; validation samples are resized to ``config.val_size`` (default
    ``config.size``; labels nearest), a quick whole-image score.

    Under torchrun each process loads its own share, ``config.batch_size`` frames per batch: the
    training frames through a ``DistributedSampler`` (seeded by ``config.seed``, reshuffled by
    ``fit`` every epoch), the validation frames through a ``segkit.distributed.ShardSampler``
    (each frame in exactly one process). A last training batch smaller than the model trains on
    is dropped, and so is one of a single frame: batch norm over one frame is noise.
    """
    train_set = CityscapesSegmentation(
        root, "train", train_transforms(size=config.size, base_height=config.base_height),
        label_scheme=config.label_scheme)
    val_set = CityscapesSegmentation(root, "val", eval_transforms(size=config.val_size or config.size),
                                     label_scheme=config.label_scheme)
    # page-locked copies help CUDA transfers only
    pin = (device or resolve_device(config.device)).type == "cuda"
    train_sampler = val_sampler = None
    if distributed.is_initialized():
        train_sampler = DistributedSampler(train_set, shuffle=True, seed=config.seed)
        val_sampler = distributed.ShardSampler(val_set)
    per_process = len(train_set if train_sampler is None else train_sampler)
    smallest = max(2, model_info(config.model).min_batch)
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=train_sampler is None,
                              sampler=train_sampler, num_workers=config.num_workers, pin_memory=pin,
                              drop_last=0 < per_process % config.batch_size < smallest)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, shuffle=False, sampler=val_sampler,
                            num_workers=config.num_workers, pin_memory=pin)
    return train_loader, val_loader


def scoring_loader(dataset: CityscapesSegmentation, *, batch_size: int, num_workers: int) -> DataLoader:
    """The frames of ``dataset`` in order, in batches of at most ``batch_size`` consecutive frames
    of one size: a user's own frames may differ in size, and such frames cannot share a batch."""
    return DataLoader(dataset, batch_sampler=same_size_batches(dataset.image_sizes(), batch_size),
                      num_workers=num_workers)


def same_size_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices 0.. in order, cut into batches of at most ``batch_size`` whose ``sizes`` are equal
    (in order, so that a batch's predictions are the frames from its first index on)."""
    batches: list[list[int]] = []
    for index, size in enumerate(sizes):
        if batches and len(batches[-1]) < batch_size and sizes[batches[-1][0]] == size:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches
