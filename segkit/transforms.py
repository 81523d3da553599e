"""Joint image + mask transform presets built on ``torchvision.transforms.v2``.

Images travel as ``tv_tensors.Image`` and labels as ``tv_tensors.Mask``, so every geometric
transform moves both together and v2 resizes masks with nearest-neighbour only; photometric
transforms (colour jitter, normalisation) touch images only; padding fills masks with 255 (ignore).
Sizes are given as ``(width, height)``, like ``--size 512x256`` on the command line.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from segkit.labels import IGNORE_INDEX

#: ImageNet statistics, which the pretrained torchvision backbones expect.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: Padding values per type: black image, ignored mask.
PAD_FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}


def to_model_input(*, inplace: bool = False) -> v2.Compose:
    """uint8 image -> float32 in [0, 1] -> normalised; masks stay int64.

    ``inplace`` normalises the float copy in place, so a large photo needs one float copy (12 bytes
    a pixel), not two; only for uint8 images, whose float copy is new (a float image would change).
    """
    return v2.Compose([
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(MEAN, STD, inplace=inplace),
    ])


def train_transforms(*, size: tuple[int, int] = (512, 256), base_height: int | None = None,
                     scale: tuple[float, float] = (0.5, 2.0), hflip: float = 0.5,
                     jitter: float = 0.3) -> v2.Compose:
    """Training preset: random scale, random crop to ``size``, flip, colour jitter, normalise.

    The frame's shorter side is resized to ``base_height × s`` with ``s`` uniform in ``scale``
    (``base_height`` defaults to the crop height), then a ``size`` crop is taken (padded with ignore
    where the scaled frame is smaller), so the same preset serves prepared 512×256 files and raw
    2048×1024 ones. A ``base_height`` above the crop height trains on crops nearer full resolution,
    which keeps thin objects visible. ``jitter`` = 0 disables colour jitter.
    """
    width, height = size
    base = base_height or height
    steps = [
        v2.RandomResize(round(base * scale[0]), round(base * scale[1]) + 1),
        v2.RandomCrop((height, width), pad_if_needed=True, fill=PAD_FILL),
        v2.RandomHorizontalFlip(hflip),
    ]
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    if jitter:  # on float images: no uint8 round trip per colour operation (twice as fast)
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    return v2.Compose([*steps, v2.Normalize(MEAN, STD)])


def eval_transforms(*, size: tuple[int, int] | None = None) -> v2.Compose:
    """Evaluation preset: resize to ``size`` (mask nearest) when given, then normalise."""
    steps = [v2.Resize((size[1], size[0]))] if size is not None else []
    return v2.Compose([*steps, to_model_input()])


def demo_transforms(*, size: tuple[int, int] = (512, 256), crop: float = 0.5,
                    jitter: float = 0.5) -> dict[str, v2.Transform]:
    """The augmentation demos of notebook 03, each on uint8 image + mask (no normalisation).

    Returns ``{"resize", "random crop", "colour jitter", "flip", "all"}``: ``random crop`` keeps a
    ``crop`` fraction of each side; ``all`` chains the four.
    """
    width, height = size
    demos = {
        "resize": v2.Resize((height, width)),
        "random crop": v2.RandomResizedCrop((height, width), scale=(crop**2, crop**2),
                                            ratio=(width / height, width / height)),
        "colour jitter": v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter,
                                        hue=min(jitter, 0.5) / 5),
        "flip": v2.RandomHorizontalFlip(p=1.0),
    }
    demos["all"] = v2.Compose(list(demos.values()))
    return demos


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Undo ``to_model_input``: normalised float (…, 3, H, W) -> uint8, for display."""
    mean = torch.tensor(MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(STD, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
