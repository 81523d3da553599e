"""Blocks shared by the U-Net-like models (``my_fcn``, ``unet``), in milesial/Pytorch-UNet style."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def run_block(block: nn.Module, *args: Tensor, recompute: bool, **kwargs: Tensor) -> Tensor:
    """``block(*args, **kwargs)``; with ``recompute`` while training, through activation
    checkpointing: nothing inside is kept for backward, which runs the block again instead."""
    if recompute and block.training and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False, **kwargs)
    return block(*args, **kwargs)


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

