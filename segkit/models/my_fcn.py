"""``my_fcn``: the original study's shallow home-made FCN (Figure 4b), with its defects fixed."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from segkit.labels import NUM_CLASSES
from segkit.models.parts import ConvBNReLU, DoubleConv, Down, OutConv, UpConv, run_block
from segkit.models.registry import ModelInfo, register_model


class MyFCN(nn.Module):
    """A shallow U-shaped FCN: encoder 32-64-128, 256 bottleneck, skips from the 128 and 32 levels.

    Layout (Figure 4b; sizes for an H x W input)::

        inc   3 -> 32          H     ─────────────────────────────────┐ skip
        down1 32 -> 64         H/2                                    │
        down2 64 -> 128        H/4   ──────────────┐ skip             │
        bottleneck 128 -> 256  H/8                 │                  │
        up1   256 -> 128       H/4   cat 128 -> 256                   │
        up2   256 -> 128       H/2                                    │
        conv2 128 -> 64        H/2                                    │
        up3   64 -> 32         H     cat 32 -> 64 ────────────────────┘
        fuse  64 -> 32         H
        head  32 -> num_classes (1x1)

    The 64-channel level feeds no skip, as in the original. Two departures from the original code:

    * The original ran the 256 double conv *before* pooling, so its bottleneck sat at H/4 and cost
      four times the compute for no extra receptive field; here it pools first, then convolves.
    * The original "cropped" skips to the upsampled size with ``AdaptiveMaxPool2d``, which resamples
      the skip (shifting and duplicating pixels) whenever sizes differ. Here the upsampled map is
      zero-padded to the skip's exact size, so any H x W works and skip pixels stay in place.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3,
                 checkpointing: bool = False) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        self.inc = DoubleConv(in_channels, 32)
        self.down1 = Down(32, 64)
        self.down2 = Down(64, 128)
        self.bottleneck = Down(128, 256)
        self.up1 = UpConv(256, 128)
        self.up2 = UpConv(256, 128)
        self.conv2 = DoubleConv(128, 64)
        self.up3 = UpConv(64, 32)
        self.fuse = ConvBNReLU(64, 32)
        self.head = OutConv(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        run = partial(run_block, recompute=self.checkpointing)
        x1 = run(self.inc, x)  # (N, 32, H, W)
        x2 = run(self.down1, x1)  # (N, 64, H/2, W/2)
        x3 = run(self.down2, x2)  # (N, 128, H/4, W/4)
        x4 = run(self.bottleneck, x3)  # (N, 256, H/8, W/8)
        x = torch.cat([x3, run(self.up1, x4, like=x3)], dim=1)  # (N, 128 + 128, H/4, W/4)
        x = run(self.conv2, run(self.up2, x, like=x2))  # (N, 64, H/2, W/2)
        x = torch.cat([x1, run(self.up3, x, like=x1)], dim=1)  # (N, 32 + 32, H, W)
        return self.head(run(self.fuse, x))  # (N, num_classes, H, W)


@register_model(info=ModelInfo(checkpoint_option="checkpointing"))
def my_fcn(*, num_classes: int = NUM_CLASSES, checkpointing: bool = False) -> MyFCN:
    """The original study's shallow FCN (Figure 4b), about 1.6M parameters.

    ``checkpointing``: recompute each block during backward instead of keeping its activations.
    """
    return MyFCN(num_classes=num_classes, checkpointing=checkpointing)
