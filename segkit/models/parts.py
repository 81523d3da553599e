"""Blocks shared by the U-Net-like models (``my_fcn``, ``unet``), in milesial/Pytorch-UNet style."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def run_block(block: nn.Module, *args: Tensor, recompute: bool, **kwargs: Tensor) -> Tensor:
    """``block(*args, **kwargs)``; with ``recompute`` while training, through activation
    checkpointing (``checkpointed``): nothing inside is kept for backward, which runs the block
    again instead."""
    if recompute and block.training and torch.is_grad_enabled():
        return checkpointed(block, *args, **kwargs)
    return block(*args, **kwargs)


def checkpointed(block: nn.Module, *args: Tensor, **kwargs: Tensor) -> Tensor:
    """``block(*args, **kwargs)`` through activation checkpointing, its recomputation in backward
    leaving batch norm's running statistics alone.

    The recomputed forward normalises by the batch's statistics as the first one did (so its
    outputs are the same), but a second update of the running averages would count every batch
    twice: momentum 0.19 instead of 0.1, and other statistics than the same model trained without
    checkpointing.
    """
    return checkpoint(block, *args, use_reentrant=False,
                      context_fn=partial(_recomputed_without_statistics, block), **kwargs)


def _recomputed_without_statistics(block: nn.Module) -> tuple[contextlib.AbstractContextManager, ...]:
    """The contexts ``torch.utils.checkpoint`` runs the first forward and the recomputation in."""
    return contextlib.nullcontext(), running_statistics_frozen(block)


@contextlib.contextmanager
def running_statistics_frozen(module: nn.Module) -> Iterator[None]:
    """Batch norm layers in ``module`` normalise by the batch in training without moving their
    running mean, variance or count until the block ends.

    Their momentum is 0 meanwhile (the running averages then take none of the batch) rather than
    their running statistics switched off, which would change what batch norm saves for backward
    and fail checkpointing's check that the recomputation saves what the first pass did.
    """
    layers = [m for m in module.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    kept = [(layer.momentum, layer.num_batches_tracked.clone()) for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, (momentum, count) in zip(layers, kept, strict=True):
            layer.momentum = momentum
            layer.num_batches_tracked.copy_(count)


def match_size(x: Tensor, like: Tensor) -> Tensor:
    """Zero-pad (or crop) ``x`` at the bottom/right so its H, W equal those of ``like``.

    Max-pooling floors odd sizes and a stride-2 transposed conv doubles them, so an upsampled map
    is up to one pixel smaller than its skip; padding keeps every skip pixel, unlike cropping the
    skip, and negative pads crop in the rare opposite case.
    """
    dh, dw = like.shape[-2] - x.shape[-2], like.shape[-1] - x.shape[-1]
    # Exporters (ONNX, torch.export) record one example size: always padding, even by zero, keeps
    # the recorded graph right for every input size (``segkit.export``).
    exporting = torch.jit.is_tracing() or torch.compiler.is_compiling()
    if dh == 0 and dw == 0 and not exporting:
        return x
    return F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])


class ConvBNReLU(nn.Sequential):
    """3x3 conv (no bias, BN follows) -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BN -> ReLU) x 2, keeping H, W."""

    def __init__(
        self, in_channels: int, out_channels: int, mid_channels: int | None = None
    ) -> None:
        mid = mid_channels or out_channels
        super().__init__(ConvBNReLU(in_channels, mid), ConvBNReLU(mid, out_channels))


class Down(nn.Sequential):
    """2x2 max-pool (H, W halved, floored) then a double conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class UpConv(nn.Module):
    """2x2 stride-2 transposed conv, output padded to the size of a reference map (its skip)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x: Tensor, like: Tensor) -> Tensor:
        return match_size(self.up(x), like)  # (N, out, H_like, W_like)


class Up(nn.Module):
    """Upsample x2, pad to the skip's size, concatenate the skip, double conv (a U-Net up step)."""

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool = False) -> None:
        super().__init__()
        if bilinear:
            # Parameter-free upsampling keeps all channels; the double conv halves them on its way.
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = match_size(self.up(x), skip)
        return self.conv(torch.cat([skip, x], dim=1))  # cat: (N, C_skip + C_up, H_skip, W_skip)


class OutConv(nn.Conv2d):
    """1x1 conv from features to per-class logits."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes, kernel_size=1)

