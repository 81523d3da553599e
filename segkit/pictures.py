"""Pictures of class maps as plain (H, W, 3) uint8 arrays: colour overlays, boundaries, error maps.

numpy only (no plotting library), so ``segkit.inference`` writes its overlay PNGs with the same
blending that ``segkit.viz`` draws and ``segkit.widgets`` shows. Void (ignore, out of range, or the
original scheme's "unlabelled") is never coloured as a class.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from segkit.labels import class_names, colorize

ERROR_COLOUR = np.array([230, 25, 25], dtype=np.float32)


def as_rgb(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """A picture as (H, W, 3) uint8: accepts (H, W, 3) or (3, H, W), uint8 or float in [0, 1]."""
    array = image.numpy(force=True) if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3) or (3, H, W), got shape {array.shape}")
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def as_labels(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """A class map as an (H, W) int64 array."""
    array = mask.numpy(force=True) if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"expected a class map (H, W), got shape {array.shape}")
    return array.astype(np.int64, copy=False)


def compact_labels(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """A class map (H, W) held in one byte a pixel (uint8) when its values fit, as the browsers
    keep whole splits of them (an eighth of int64's memory); ``as_labels`` widens one when needed."""
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.uint8 and mask.dim() == 2:
        return mask.numpy(force=True)
    if isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.ndim == 2:
        return mask
    array = as_labels(mask)
    if array.size and (array.min() < 0 or array.max() > 255):
        return array
    return array.astype(np.uint8)


def real_classes(scheme: str = "cityscapes19") -> range:
    """The class indices of ``scheme`` that are real classes (not the original's "unlabelled")."""
    first = int(scheme == "original20")  # class 0 of the original scheme pools the void ids
    return range(first, len(class_names(scheme)))


def void_pixels(mask: np.ndarray, scheme: str = "cityscapes19") -> np.ndarray:
    """(H, W) bool: pixels that belong to no class (ignore, out of range, or "unlabelled")."""
    classes = real_classes(scheme)
    return (mask < classes.start) | (mask >= classes.stop)


def overlay(image: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor, alpha: float = 0.5,
            scheme: str = "cityscapes19") -> np.ndarray:
    """Class colours blended over the image: (H, W, 3) uint8; void pixels keep the image."""
    rgb, mask = as_rgb(image).astype(np.float32), as_labels(mask)
    blended = (1 - alpha) * rgb + alpha * colorize(mask, scheme)
    return np.where(void_pixels(mask, scheme)[..., None], rgb, blended).round().astype(np.uint8)


def boundaries(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H, W) bool: pixels whose right, left, upper or lower neighbour has another label."""
    mask = as_labels(mask)
    edge = np.zeros(mask.shape, dtype=bool)
    across = mask[:, 1:] != mask[:, :-1]  # (H, W - 1): pairs of horizontal neighbours that differ
    edge[:, 1:] |= across
    edge[:, :-1] |= across
    down = mask[1:] != mask[:-1]  # (H - 1, W)
    edge[1:] |= down
    edge[:-1] |= down
    return edge


def dimmed(image: np.ndarray | torch.Tensor, level: float = 0.45) -> np.ndarray:
    """A dark grey version of the image, (H, W, 3) float32, as a background for highlights."""
    grey = as_rgb(image).astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat(level * grey[..., None], 3, axis=-1)


def error_map(image: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
              pred: np.ndarray | torch.Tensor, *, focus: int | None = None,
              scheme: str = "cityscapes19") -> np.ndarray:
    """Wrong pixels in red on the dimmed image: (H, W, 3) uint8; void pixels are never errors.

    With ``focus`` = a class index, only that class's errors (missed or wrongly predicted) are red.
    """
    target, pred = as_labels(target), as_labels(pred)
    wrong = (pred != target) & ~void_pixels(target, scheme)
    if focus is not None:
        wrong &= (target == focus) | (pred == focus)
    return np.where(wrong[..., None], ERROR_COLOUR, dimmed(image)).round().astype(np.uint8)


def resampled_labels(mask: np.ndarray | torch.Tensor, size: tuple[int, int],
                     mode: str = "nearest") -> np.ndarray:
    """A class map (H, W) resized to ``size`` (width, height): ``"nearest"`` as segkit does, or
    ``"bilinear"``, the mistake notebook 03 shows (class ids blended, then rounded)."""
    source = torch.as_tensor(as_labels(mask), dtype=torch.float32)[None, None]
    options = {"align_corners": False} if mode == "bilinear" else {}
    resized = torch.nn.functional.interpolate(source, size=(size[1], size[0]), mode=mode, **options)
    return resized[0, 0].round().long().numpy()


def to_png(picture: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (fast compression: widgets and labs redraw on every slider move)."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
