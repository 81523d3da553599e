"""``unet``: Ronneberger et al.'s U-Net (2015), in milesial/Pytorch-UNet's layout (Figure 4a)."""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from segkit.labels import NUM_CLASSES
from segkit.models.parts import DoubleConv, Down, OutConv, Up, run_block
from segkit.models.registry import ModelInfo, register_model


class UNet(nn.Module):
    """U-Net: four max-pool downsamplings, four upsamplings each concatenating the mirrored skip.

    Widths are ``c, 2c, 4c, 8c, 16c`` for ``c = base_channels`` (16-32-64-128-256 by default, the
    original study's reference UNet). ``bilinear=True`` upsamples without parameters and halves the
    bottleneck width, as milesial's implementation does, for a lighter model. Odd sizes are
    handled by padding each upsampled map to its skip's size.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        in_channels: int = 3,
        base_channels: int = 16,
        bilinear: bool = False,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        c = base_channels
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(in_channels, c)
        self.down1 = Down(c, 2 * c)
        self.down2 = Down(2 * c, 4 * c)
        self.down3 = Down(4 * c, 8 * c)
        self.down4 = Down(8 * c, 16 * c // factor)
        self.up1 = Up(16 * c, 8 * c // factor, bilinear)
        self.up2 = Up(8 * c, 4 * c // factor, bilinear)
        self.up3 = Up(4 * c, 2 * c // factor, bilinear)
        self.up4 = Up(2 * c, c, bilinear)
        self.head = OutConv(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        run = partial(run_block, recompute=self.checkpointing)
        x1 = run(self.inc, x)  # (N, c, H, W)
        x2 = run(self.down1, x1)  # (N, 2c, H/2, W/2)
        x3 = run(self.down2, x2)  # (N, 4c, H/4, W/4)
        x4 = run(self.down3, x3)  # (N, 8c, H/8, W/8)
        x5 = run(self.down4, x4)  # (N, 16c / factor, H/16, W/16)
        x = run(self.up1, x5, x4)  # (N, 8c / factor, H/8, W/8)
        x = run(self.up2, x, x3)  # (N, 4c / factor, H/4, W/4)
        x = run(self.up3, x, x2)  # (N, 2c / factor, H/2, W/2)
        x = run(self.up4, x, x1)  # (N, c, H, W)
        return self.head(x)  # (N, num_classes, H, W)


@register_model(info=ModelInfo(checkpoint_option="checkpointing"))
def unet(
    *, num_classes: int = NUM_CLASSES, base_channels: int = 16, bilinear: bool = False,
    checkpointing: bool = False,
) -> UNet:
    """U-Net with widths ``base_channels * (1, 2, 4, 8, 16)``; transposed-conv or bilinear up.

    ``checkpointing``: recompute each block during backward instead of keeping its activations.
    """
    return UNet(num_classes=num_classes, base_channels=base_channels, bilinear=bilinear,
                checkpointing=checkpointing)
