"""How a trained model is applied at test time: scores, class maps, and predictions as files.

``evaluate`` scores a model over a loader and ``predict`` gives class maps of image tensors, each
as the model comes or through a test-time recipe. ``Inference`` is one recipe: the whole frame at
a chosen size (fast) or a sliding window over the frame (the official protocol at full
resolution), optionally with horizontal-flip and multi-scale test-time augmentation. Called on a
batch, it returns class scores at whatever size the caller asks for, so scores are always taken
against labels at their own resolution::

    from segkit.inference import Inference, evaluate
    scores = evaluate(model, loader, inference=Inference("slide", window=(512, 256), flip=True))

``compare_protocols`` sets these recipes side by side for one model: the fast proxy that training
validates with (labels resized) against the whole frame, sliding windows and flip scored on
labels at their own resolution.

``predict_files`` runs a model on image files of any size (a notebook's or ``segkit predict``'s);
``LabelIdWriter`` writes predictions in the official benchmark format (labelIds PNGs named after
the frame), which ``segkit test --save-labelids`` uses. This module builds on ``segkit.engine``
(whose scoring loop ``evaluate`` runs) and draws nothing: no plotting library is imported here.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor, nn
from torchvision import tv_tensors
from tqdm.auto import tqdm

from segkit import labels, layout
from segkit.config import TrainConfig
from segkit.datasets import CityscapesSegmentation, check_has_labels
from segkit.engine import validate
from segkit.io import DataError, check_frame_size, claim_output_dir, write_png
from segkit.loaders import scoring_loader
from segkit.models import model_spec
from segkit.models.registry import MIN_INPUT_SIDE
from segkit.pictures import overlay
from segkit.planner import peak_bytes
from segkit.runtime import autocast_dtype
from segkit.transforms import eval_transforms, to_model_input

if TYPE_CHECKING:  # pandas is imported when a table is made: `segkit predict` starts without it
    import pandas as pd

MODES = ("whole", "slide")
TTA = ("flip", "ms")
#: Multi-scale factors when none are given: a light set for modest hardware (the DeepLab papers
#: use 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, about 9x the work of one pass).
DEFAULT_SCALES = (0.75, 1.0, 1.25)
#: Files a folder given to ``predict_files`` is searched for (any image Pillow reads works by name).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PREDICT_MARKER = ".segkit-predict.json"
LABEL_IDS_MARKER = ".segkit-labelids.json"


@dataclass(frozen=True)
class Inference:
    """How a model sees a frame at test time; calling it gives class scores at a chosen size.

    Sizes are ``(width, height)``, like ``--size 512x256``.
    """

    mode: str = "whole"  # whole: one pass over the (resized) frame | slide: windows over it
    size: tuple[int, int] | None = None  # the frame is resized to this first (None: as given)
    keep_ratio: bool = False  # with size: fit the frame inside it, keeping its aspect ratio
    window: tuple[int, int] | None = None  # slide: window size
    stride: tuple[int, int] | None = None  # slide: window step (None: 2/3 of the window)
    flip: bool = False  # also predict the mirrored frame and average
    scales: tuple[float, ...] = (1.0,)  # one pass per factor of the frame size, averaged
    min_side: int = 1  # smaller frames are padded up to this (the registry's models need 32)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown inference mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode == "slide" and self.window is None:
            raise ValueError("sliding-window inference needs a window size (e.g. window=(512, 256))")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive factors, got {self.scales}")
        if self.size is not None:  # the largest frame a pass sees, refused before any work
            self._scaled(self.size[::-1], max(self.scales))
        if self.stride is not None and self.window is not None and any(
                s < 1 or s > w for s, w in zip(self.stride, self.window, strict=True)):
            raise ValueError(f"stride {self.stride} must be between 1 and the window {self.window} "
                             "(a larger step would leave pixels unseen)")

    @classmethod
    def for_checkpoint(cls, config: TrainConfig, *, mode: str = "whole",
                       size: tuple[int, int] | None = None, window: tuple[int, int] | None = None,
                       stride: tuple[int, int] | None = None, tta: Sequence[str] = (),
                       scales: Sequence[float] | None = None, keep_ratio: bool = False) -> Inference:
        """The recipe for a model trained with ``config``, defaults filled from it.

        ``whole`` resizes frames to ``size`` (default: the validation size the model was trained
        with); ``slide`` keeps the frame's resolution unless ``size`` is given and slides windows of
        the training crop size (default) over it. ``tta`` holds "flip" and/or "ms" (multi-scale,
        ``scales`` default ``DEFAULT_SCALES``).
        """
        unknown = set(tta) - set(TTA)
        if unknown:
            raise ValueError(f"unknown test-time augmentation {sorted(unknown)}; choose from {TTA}")
        if scales is not None and "ms" not in tta:
            raise ValueError("scales are used by multi-scale test-time augmentation: add --tta ms")
        for name, value in (("window", window), ("size", size)):
            if value is not None and min(value) < MIN_INPUT_SIDE:
                raise ValueError(f"{name} {_wxh(value)} is too small: the models need at least "
                                 f"{MIN_INPUT_SIDE} pixels a side (e.g. --{name} 512x256)")
        if mode == "whole":
            if window is not None or stride is not None:
                raise ValueError("a window and a stride are for sliding-window inference "
                                 "(--mode slide)")
            size = size or config.val_size or config.size
        return cls(mode=mode, size=size, keep_ratio=keep_ratio,
                   window=(window or config.size) if mode == "slide" else None, stride=stride,
                   flip="flip" in tta,
                   scales=tuple(scales or DEFAULT_SCALES) if "ms" in tta else (1.0,),
                   min_side=MIN_INPUT_SIDE)

    @property
    def passes(self) -> int:
        """Forward passes over each frame (times the windows in slide mode)."""
        return len(self.scales) * (2 if self.flip else 1)

    def describe(self) -> str:
        """One line for logs, e.g. ``slide 512x256 windows, stride 342x171, flip, scales 0.75/1/1.25``."""
        text = f"whole frame at {_wxh(self.size)}" if self.mode == "whole" else (
            f"slide {_wxh(self.window)} windows, stride {_wxh(self.stride_of())}"
            + (f" over frames at {_wxh(self.size)}" if self.size else " at full resolution"))
        if self.size and self.keep_ratio:
            text += " (fitted inside, aspect ratio kept)"
        if self.flip:
            text += ", flip"
        if len(self.scales) > 1 or self.scales[0] != 1:
            text += ", scales " + "/".join(f"{s:g}" for s in self.scales)
        return text

    def stride_of(self) -> tuple[int, int] | None:
        """The slide step: ``stride``, or two thirds of the window (a third of overlap)."""
        if self.window is None:
            return None
        return self.stride or tuple(max(1, math.ceil(2 * w / 3)) for w in self.window)

    def base_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) a frame of ``height`` x ``width`` is brought to before scaling."""
        if self.size is None:
            return height, width
        target_w, target_h = self.size
        if not self.keep_ratio:
            return target_h, target_w
        factor = min(target_w / width, target_h / height)
        return max(1, round(height * factor)), max(1, round(width * factor))

    def __call__(self, model: nn.Module, images: Tensor,
                 out_size: Sequence[int] | None = None) -> Tensor:
        """Class scores of normalised images (N, 3, H, W) at ``out_size`` (default (H, W)).

        Returns (N, C, *out_size) float32: the logits of a single pass, or the mean of the softmax
        probabilities of several (flip, scales). Logits are resized bilinearly to ``out_size``, so
        labels are never resized for scoring. Call it under ``torch.inference_mode()``.
        """
        out_size = tuple(out_size or images.shape[-2:])
        total = None
        for logits in self._passes(model, images):
            logits = _resize(logits, out_size)
            if self.passes == 1:
                return logits
            probabilities = logits.softmax(1)
            total = probabilities if total is None else total.add_(probabilities)
        return total / self.passes

    def classes(self, model: nn.Module, images: Tensor,
                out_size: Sequence[int] | None = None) -> Tensor:
        """Class maps (N, *out_size) uint8 of normalised images: the argmax of ``self(model,
        images, out_size)``, without ever holding every class's score at ``out_size``.

        A photo of 10000x10000 pixels would need 19 x 4 bytes a pixel (7.6 GB) of scores enlarged to
        its size; here they are enlarged and their argmax taken a band of rows at a time
        (``BAND_PIXELS``), and a sliding window over the full frame gives its averaged scores band by
        band too (with flip, the mirrored frame's slide beside it, band by band), so memory grows
        with the image, not with the classes times it. (Only multi-scale slides over the full frame
        still hold its scores whole.)
        """
        out_size = tuple(out_size or images.shape[-2:])
        if self._slides_at(images, out_size):
            bands = slide_bands(model, images, self.window, self.stride_of())
            if self.flip:  # flip mirrors columns only: the two slides' bands hold the same rows
                mirrored = slide_bands(model, images.flip(-1), self.window, self.stride_of())
                bands = (band.softmax(1).add_(other.softmax(1).flip(-1))
                         for band, other in zip(bands, mirrored, strict=True))
            return _argmax_of_bands(images.shape[0], out_size, bands)
        passes = list(self._passes(model, images))
        if all(p.shape[-2] <= out_size[0] and p.shape[-1] <= out_size[1] for p in passes):
            return upsampled_argmax(passes, out_size)
        # a pass larger than the labels (a scale above 1): shrink the scores already computed
        scores = [_resize(p, out_size) for p in passes]
        if len(scores) > 1:
            scores = [sum(score.softmax(1) for score in scores)]
        return scores[0].argmax(1).to(torch.uint8)

    def _slides_at(self, images: Tensor, out_size: tuple[int, int]) -> bool:
        """Whether a slide over ``images`` as they are (and, with flip, one over their mirror) gives
        the scores at ``out_size`` (no resize or scale before it), so they can be taken a band of
        rows at a time."""
        size = tuple(images.shape[-2:])
        return (self.mode == "slide" and self.scales == (1.0,)
                and size == out_size == self._base(images) and min(size) >= self.min_side)

    def _passes(self, model: nn.Module, images: Tensor) -> Iterator[Tensor]:
        """The logits (N, C, h, w) of every pass (scale and flip) at the size the model saw the
        frame, mirrored passes mirrored back."""
        for scale in self.scales:
            scaled = _resize(images, self._scaled(self._base(images), scale))
            for flipped in (False, True)[: 1 + self.flip]:
                logits = self._forward(model, scaled.flip(-1) if flipped else scaled)
                yield logits.flip(-1) if flipped else logits

    def _base(self, images: Tensor) -> tuple[int, int]:
        return self.base_size(*images.shape[-2:])

    def _scaled(self, base: tuple[int, int], scale: float) -> tuple[int, int]:
        """(height, width) of ``base`` at ``scale``, refused where it is too large to hold."""
        size = (max(1, round(base[0] * scale)), max(1, round(base[1] * scale)))
        try:
            check_frame_size(size[::-1])
        except ValueError as error:
            raise ValueError(f"scale {scale:g} of a {base[1]}x{base[0]} frame: {error}") from None
        return size

    def _forward(self, model: nn.Module, images: Tensor) -> Tensor:
        if self.mode == "whole":
            height, width = images.shape[-2:]
            return model(self._padded(images)).float()[..., :height, :width]
        return slide(model, self._padded(images), self.window, self.stride_of())[
            ..., :images.shape[-2], :images.shape[-1]]

    def _padded(self, images: Tensor) -> Tensor:
        """``images`` padded at the bottom and right (edge pixels repeated) to ``min_side`` where a
        side is shorter, as a thin photo or a small scale gives; the scores are cropped back."""
        pad_h, pad_w = (max(0, self.min_side - side) for side in images.shape[-2:])
        return F.pad(images, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else images


def slide(model: nn.Module, images: Tensor, window: tuple[int, int],
          stride: tuple[int, int]) -> Tensor:
    """Logits (N, C, H, W) of images (N, 3, H, W) stitched from windows; overlaps averaged.

    Windows of ``window`` (width, height) step by ``stride``; the last row and column are moved
    back to end at the frame's edge (as mmsegmentation's slide inference does), so every pixel is
    covered and no window is padded. A frame smaller than the window is one window.
    """
    height, width = images.shape[-2:]
    total = count = None
    for top, left, logits in _windows(model, images, window, stride):
        if total is None:
            total = logits.new_zeros((*logits.shape[:2], height, width))
            count = logits.new_zeros((1, 1, height, width))
        h, w = logits.shape[-2:]
        total[..., top:top + h, left:left + w] += logits
        count[..., top:top + h, left:left + w] += 1
    return total.div_(count)  # in place: a second copy of every score would double the memory


def slide_bands(model: nn.Module, images: Tensor, window: tuple[int, int],
                stride: tuple[int, int]) -> Iterator[Tensor]:
    """``slide``'s logits a band of rows at a time, (N, C, rows, W) top to bottom, each valid until
    the next is asked for: rows above the next row of windows are final once a row of windows is
    added, so only a window's height of rows is ever held, whatever the frame's height."""
    height, width = images.shape[-2:]
    tops = _starts(height, window[1], stride[1])
    total = count = None  # the rows from ``tops[row]`` down, a window's height of them
    row = 0
    for top, left, logits in _windows(model, images, window, stride):
        if total is None:
            total = logits.new_zeros((*logits.shape[:2], min(height, window[1]), width))
            count = logits.new_zeros((1, 1, total.shape[-2], width))
        if top != tops[row]:  # a new row of windows: the rows above it are final
            yield from _final_rows(total, count, tops[row + 1] - tops[row])
            row += 1
        h, w = logits.shape[-2:]
        total[..., :h, left:left + w] += logits
        count[..., :h, left:left + w] += 1
    yield total[..., :height - tops[row], :].div_(count[..., :height - tops[row], :])


def _final_rows(total: Tensor, count: Tensor, rows: int) -> Iterator[Tensor]:
    """Yield the first ``rows`` rows of ``total`` averaged, then move the rest to the top."""
    yield total[..., :rows, :].div_(count[..., :rows, :])
    for buffer in (total, count):
        carried = buffer[..., rows:, :].clone()  # the rows the next windows overlap
        buffer.zero_()[..., :carried.shape[-2], :] = carried


def _windows(model: nn.Module, images: Tensor, window: tuple[int, int],
             stride: tuple[int, int]) -> Iterator[tuple[int, int, Tensor]]:
    """(top, left, logits (N, C, h, w)) of every window, row by row."""
    height, width = images.shape[-2:]
    for top in _starts(height, window[1], stride[1]):
        for left in _starts(width, window[0], stride[0]):
            yield top, left, model(images[..., top:top + window[1], left:left + window[0]]).float()


#: Output pixels whose class scores are enlarged at a time before their argmax (76 MB of 19 scores).
BAND_PIXELS = 2**20


def upsampled_argmax(passes: Sequence[Tensor], out_size: tuple[int, int]) -> Tensor:
    """The classes (N, H, W) uint8 of scores (N, C, h, w), one tensor per pass, enlarged bilinearly
    to ``out_size`` (H, W) as ``_resize`` would (several: their softmax probabilities averaged),
    a band of ``BAND_PIXELS`` at a time."""
    def bands() -> Iterator[Tensor]:
        rows = max(1, BAND_PIXELS // (out_size[1] * passes[0].shape[0]))
        for top in range(0, out_size[0], rows):
            enlarged = [_resized_rows(p, out_size, top, min(out_size[0], top + rows)) for p in passes]
            yield enlarged[0] if len(passes) == 1 else sum(band.softmax(1) for band in enlarged)
    return _argmax_of_bands(passes[0].shape[0], out_size, bands())


def _argmax_of_bands(batch: int, out_size: tuple[int, int], bands: Iterable[Tensor]) -> Tensor:
    """(N, H, W) uint8 classes from scores (N, C, rows, W) given top to bottom, on the scores'
    device (no copy back to the CPU per band)."""
    classes = None
    top = 0
    for band in bands:
        if classes is None:
            classes = torch.empty((batch, *out_size), dtype=torch.uint8, device=band.device)
        classes[:, top:top + band.shape[-2]] = band.argmax(1)
        top += band.shape[-2]
    return classes


def _resized_rows(x: Tensor, size: tuple[int, int], top: int, bottom: int) -> Tensor:
    """Rows ``top:bottom`` of ``x`` (N, C, h, w) enlarged bilinearly to ``size`` (H, W) (no
    dimension shrinks): the numbers ``F.interpolate`` gives for those rows, to rounding (1e-6).

    Bilinear interpolation is separable: each output row mixes two input rows, each enlarged along
    its width first. Source rows follow ``align_corners=False``: (y + 0.5) h / H - 0.5, at least 0.
    """
    h = x.shape[-2]
    # The row arithmetic stays on the CPU: reading indices back from a GPU would wait for it
    rows = torch.arange(top, bottom, dtype=torch.float64)
    source = ((rows + 0.5) * (h / size[0]) - 0.5).clamp(min=0).float()
    first = source.floor().long()  # (rows,)
    second = (first + 1).clamp(max=h - 1)
    weight = (source - first)[:, None].to(x.device)  # (rows, 1): the second row's share
    low, high = int(first[0]), int(second[-1]) + 1
    wide = _resize(x[..., low:high, :], (high - low, size[1]))  # (N, C, rows needed, W)
    first, second = (first - low).to(x.device), (second - low).to(x.device)
    return wide[..., first, :] * (1 - weight) + wide[..., second, :] * weight


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: every ``stride``, the last one flush with the end."""
    if length <= window:
        return [0]
    steps = math.ceil((length - window) / stride)
    return sorted({min(i * stride, length - window) for i in range(steps + 1)})


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of (N, C, H, W) to ``size`` (h, w); antialiased when shrinking (like
    torchvision's Resize); unchanged when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=shrink)


def _wxh(size: Sequence[int] | None) -> str:
    return "its own size" if size is None else f"{size[0]}x{size[1]}"


# --- scores and class maps ----------------------------------------------------------------------

def evaluate(model: nn.Module, loader: Iterable, *, num_classes: int | None = None,
             device: torch.device | str | None = None, amp: str = "off",
             max_batches: int | None = None, inference: Inference | None = None,
             on_batch: Callable[[int, Tensor], None] | None = None) -> dict[str, Any]:
    """Score ``model`` on ``loader``: pixel_acc, mean_acc, iou (per class), miou, category scores,
    and the confusion matrix itself (``confusion``, (C, C) counts ``[target, prediction]``).

    Refuses (``DataError``) a split whose labels are all ignore. ``inference`` (whole frame at a
    size, sliding window, flip and multi-scale augmentation) says how the model sees each batch;
    its scores are resized to the labels' size, so labels are never resized. Without it, the
    model's output on the batch as it comes is scored. ``on_batch(first, pred)`` receives every
    batch's predictions (N, H, W) and the loader position of its first frame (e.g. a
    ``LabelIdWriter``). ``num_classes`` defaults to the model's, ``device`` to its parameters'.
    The loop is ``segkit.engine.validate``, the one ``fit`` validates with.
    """
    check_has_labels(getattr(loader, "dataset", None))
    num_classes = num_classes or model_spec(model)["options"]["num_classes"]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return validate(model, loader, num_classes=num_classes, device=device,
                    dtype=autocast_dtype(amp, device), max_batches=max_batches, forward=inference,
                    on_batch=on_batch)


@torch.inference_mode()
def predict(model: nn.Module, images: Tensor, *, batch_size: int = 8,
            device: torch.device | str | None = None, amp: str = "off",
            inference: Inference | None = None) -> Tensor:
    """Class maps for normalised images: (N, 3, H, W) float -> (N, H, W) int64 on the CPU.

    ``inference`` as in ``evaluate`` (maps come back at the images' size). For image files of any
    size, with colour and overlay pictures, see ``predict_files``.
    """
    return torch.cat([_classes(model, chunk, device=device, amp=amp, inference=inference).long()
                      for chunk in images.split(batch_size)])


def _classes(model: nn.Module, images: Tensor, *, device: torch.device | str | None, amp: str,
             inference: Inference | None) -> Tensor:
    """(N, H, W) uint8 class maps of a batch, on the CPU (``Inference.classes``: memory grows with
    the images, not with their class scores)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = autocast_dtype(amp, device)
    model.eval()
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        images = images.to(device)
        if inference is None:
            return model(images).argmax(1).to(torch.uint8).cpu()
        return inference.classes(model, images).cpu()


def frame_peak_bytes(model: nn.Module, image: Tensor, out_size: Sequence[int], inference: Inference,
                     device: torch.device, amp: str = "off") -> int:
    """Peak bytes torch allocates to score one normalised frame (3, H, W) at ``out_size`` (h, w)
    through ``inference`` on ``device``: the CUDA allocator's peak, or on the CPU the profiler's
    (``segkit.planner.peak_bytes``)."""
    batch = image[None].to(device)  # (1, 3, H, W)
    dtype = autocast_dtype(amp, device)

    def score() -> None:  # what scoring runs: class maps in bands (``Inference.classes``)
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            inference.classes(model.eval(), batch, out_size)

    return peak_bytes(score, device)


# --- the official protocol beside the fast proxy -------------------------------------------------

def spread_indices(total: int, count: int) -> list[int]:
    """``count`` indices of ``range(total)`` spread evenly from the first (every second of 48 for 24)."""
    if not 0 < count <= total:
        raise ValueError(f"cannot pick {count} of {total} frames")
    return [index * total // count for index in range(count)]


def compare_protocols(model: nn.Module, config: TrainConfig, root: str | os.PathLike, *,
                      split: str = "val", device: torch.device | str | None = None,
                      amp: str | None = None, stride: tuple[int, int] | None = None,
                      batch_size: int = 4, num_workers: int = 0, frames: int | None = None
                      ) -> pd.DataFrame:
    """Score ``model``, trained with ``config``, on ``root``'s ``split`` four ways, side by side,
    on every frame of the split or on ``frames`` of them spread evenly over it (the same in each row).

    Rows (pandas index):

    * ``proxy``: frames and labels resized to the validation size (``config.val_size``, else
      ``config.size``; labels nearest), scored as ``fit`` validates (but on every frame): fast,
      and the score every training curve shows.
    * ``whole``: the frame resized to that size, its class scores enlarged to the labels as stored
      (``segkit test``'s default): nearly the proxy's predictions, scored against every label
      pixel. The labels' full resolution is the root's: a copy resized by ``segkit prepare``
      holds them at its size.
    * ``slide``: windows of the training crop slid over the full-resolution frame by ``stride``
      (default: two thirds of the window, as ``segkit test --mode slide``; the window itself
      tiles the frame without overlap, in half the passes or fewer).
    * ``slide + flip``: the same, averaged with the mirrored frame.

    Columns: ``mIoU``, ``global acc`` (fractions), ``s/frame`` (reading included),
    ``peak MB`` (torch's peak to score one frame, ``frame_peak_bytes``), ``labels`` (the label
    resolution scored, ``WxH``) and ``how`` (the recipe in words). Every row goes through
    ``evaluate``, in the precision ``amp`` (default ``config.amp``, as ``fit`` validated).
    """
    import pandas as pd

    device = torch.device(device) if device is not None else next(model.parameters()).device
    amp = config.amp if amp is None else amp
    proxy_size = config.val_size or config.size
    protocols = {  # name: (the size frames and labels are resized to (None: as stored), recipe)
        "proxy": (proxy_size, Inference()),
        "whole": (None, Inference.for_checkpoint(config)),
        "slide": (None, Inference.for_checkpoint(config, mode="slide", stride=stride)),
        "slide + flip": (None, Inference.for_checkpoint(config, mode="slide", stride=stride,
                                                        tta=("flip",))),
    }
    read = {}  # size -> (loader, first image, first mask): the full-resolution rows share one
    rows = {}
    for name, (size, inference) in protocols.items():
        if size not in read:
            dataset = CityscapesSegmentation(root, split, eval_transforms(size=size),
                                             label_scheme=config.label_scheme)
            if frames is not None and frames < len(dataset):
                dataset = dataset.subset(spread_indices(len(dataset), frames))
            read[size] = (scoring_loader(dataset, batch_size=batch_size, num_workers=num_workers),
                          *dataset[0])
        loader, image, mask = read[size]
        scores = evaluate(model, loader, device=device, amp=amp, inference=inference)
        height, width = mask.shape[-2:]
        how = (f"frame and labels resized to {_wxh(proxy_size)}, as fit validates" if size
               else inference.describe())
        rows[name] = {"mIoU": scores["miou"], "global acc": scores["pixel_acc"],
                      "s/frame": scores["seconds"] / scores["images"],
                      "peak MB": frame_peak_bytes(model, image, (height, width), inference, device,
                                                  amp) / 2**20,
                      "labels": f"{width}x{height}", "how": how}
    return pd.DataFrame.from_dict(rows, orient="index")


# --- official benchmark format -------------------------------------------------------------------

def frame_stem(image_path: str | os.PathLike) -> str:
    """``frankfurt_000000_000294`` of ``…/frankfurt_000000_000294_leftImg8bit.png``; other names
    lose only their extension."""
    return Path(image_path).stem.removesuffix(Path(layout.IMAGE_SUFFIX).stem)


class LabelIdWriter:
    """Writes predictions of a dataset's frames as official labelIds PNGs, one per frame.

    Files are named ``{city}_{seq}_{frame}_gtFine_labelIds.png`` (the cityscapesScripts evaluator
    finds a frame's prediction by its ``{city}_{seq}_{frame}*.png`` name, anywhere under its results
    folder): single-channel uint8 label ids at the prediction's (the label's) resolution, void
    mapped to 0 ("unlabeled"). ``out`` must be new, empty or an earlier run of the same options.

    Call it as ``writer(first_index, predictions)`` with the dataset index of the batch's first frame
    and class maps (N, H, W): it is the ``on_batch`` hook of ``evaluate``.
    """

    def __init__(self, out: str | os.PathLike, image_paths: Sequence[str | os.PathLike], *,
                 scheme: str = "cityscapes19", options: dict[str, Any] | None = None):
        self.out, self.image_paths = Path(out), list(image_paths)
        self.lut = torch.from_numpy(labels.train_id_to_id_lut(scheme))
        claim_output_dir(self.out, LABEL_IDS_MARKER, _plain({"scheme": scheme, **(options or {})}))
        self.written = 0

    def path(self, index: int) -> Path:
        """Where frame ``index``'s prediction goes."""
        return self.out / (frame_stem(self.image_paths[index]) + layout.LABEL_IDS_SUFFIX)

    def __call__(self, first_index: int, predictions: Tensor) -> None:
        ids = self.lut[predictions.cpu().long().clamp(0, 255)]  # (N, H, W) uint8 label ids
        for offset, label_ids in enumerate(ids.numpy()):
            write_png(self.path(first_index + offset), label_ids)
            self.written += 1


def write_label_ids(model: nn.Module, loader: Iterable, writer: LabelIdWriter, *,
                    inference: Inference | None = None, device: torch.device | str | None = None,
                    amp: str = "off") -> int:
    """Predict every batch of an unshuffled, possibly unlabelled, loader into ``writer`` (the test
    split for the benchmark server, which ``evaluate`` refuses to score); returns frames written."""
    first = 0
    for images, _masks in loader:
        writer(first, predict(model, images, batch_size=len(images), device=device, amp=amp,
                              inference=inference))
        first += len(images)
    return first


# --- predictions on image files -------------------------------------------------------------------

@dataclass
class PredictionReport:
    """What ``predict_files`` did: the output stems written, and the inputs it could not read."""

    written: list[Path] = field(default_factory=list)  # out / stem; files are stem + OUTPUT_SUFFIXES
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, reason naming it)


#: The three files written per input image, by what they hold.
OUTPUT_SUFFIXES = {"color": "_color.png", "overlay": "_overlay.png", "trainIds": "_trainIds.png"}


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, upright as viewers show it (EXIF orientation applied);
    greyscale (8 or 16 bits), palette and RGBA (alpha dropped) images are converted. ``DataError``
    naming the file when it cannot be read."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I;16"):  # Pillow's RGB conversion would clip, not scale
                image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
            return np.array(image.convert("RGB"))
    except Exception as error:  # Pillow raises many kinds for damaged or foreign files
        raise DataError(f"{path}: cannot read image ({error})") from error


def find_images(inputs: Iterable[str | os.PathLike], *,
                exclude: str | os.PathLike | None = None) -> list[tuple[Path, Path]]:
    """(image, output stem) pairs of image files and folders (searched recursively, in order).

    A file's outputs are named after it; a folder's keep their subfolders. Files under ``exclude``
    (the output folder) are skipped; a path that does not exist is kept, to be reported by name.
    ``DataError`` when two inputs would write the same outputs or when nothing is found.
    """
    inputs = [Path(item) for item in inputs]
    skip = Path(exclude).resolve() if exclude is not None else None
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir() and skip is not None and skip in (item.resolve(), *item.resolve().parents):
            raise DataError(f"{item}: is the output folder {exclude} (or inside it), where the "
                            "predictions go; choose another --out, e.g. a new folder beside it")
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                           and p.is_file() and (skip is None or skip not in p.resolve().parents))
            pairs += [(p, p.relative_to(item).parent / frame_stem(p)) for p in found]
        else:
            pairs.append((item, Path(frame_stem(item))))
    if not pairs:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in "
                        f"{', '.join(map(str, inputs))}")
    seen: dict[Path, Path] = {}
    for image, stem in pairs:
        if stem in seen:
            raise DataError(f"{seen[stem]} and {image} would both write {stem}{OUTPUT_SUFFIXES['color']}; "
                            "rename one or predict them into separate folders")
        seen[stem] = image
    return pairs


def predict_files(model: nn.Module, inputs: Iterable[str | os.PathLike], out: str | os.PathLike,
                  *, inference: Inference | None = None, scheme: str = "cityscapes19",
                  alpha: float = 0.5, device: torch.device | str | None = None, amp: str = "off",
                  progress: bool = True, options: dict[str, Any] | None = None) -> PredictionReport:
    """Segment image files (PNG, JPEG, … of any size) and write three PNGs per image into ``out``.

    ``{stem}_color.png``: class colours; ``{stem}_overlay.png``: colours blended over the image
    (``alpha``); ``{stem}_trainIds.png``: the raw class indices (uint8, one channel). All are at
    the input's size. ``inference`` says how the model sees each image (default: as it is, one
    pass). Unreadable files are skipped and listed in the report; the rest are still written.
    ``out`` must be new, empty or hold an earlier run with the same ``options`` (which describe the
    model) and inference, so a user's folder is never overwritten.

    Returns:
        A ``PredictionReport``.
    """
    out = Path(out)
    pairs = find_images(inputs, exclude=out)
    inference = inference or Inference(min_side=MIN_INPUT_SIDE)
    claim_output_dir(out, PREDICT_MARKER, _plain({"scheme": scheme, "alpha": alpha,
                                                  "inference": asdict(inference),
                                                  **(options or {})}))
    to_input = to_model_input(inplace=True)  # images are read as uint8
    report = PredictionReport()
    bar = tqdm(pairs, desc="predict", unit="image", disable=not progress or len(pairs) < 2)
    for image_path, stem in bar:
        try:
            image = read_image(image_path)  # (H, W, 3) uint8
        except DataError as error:
            report.failed.append((image_path, str(error)))
            continue
        batch = to_input(tv_tensors.Image(image.transpose(2, 0, 1)))[None]  # (1, 3, H, W) float
        with torch.inference_mode():
            classes = _classes(model, batch, device=device, amp=amp, inference=inference)[0]
        del batch  # 12 bytes a pixel, not needed for the pictures
        _write_prediction(out / stem, image, classes.numpy(), scheme, alpha)
        report.written.append(out / stem)
    return report


def _write_prediction(stem: Path, image: np.ndarray, classes: np.ndarray, scheme: str,
                      alpha: float) -> None:
    """The three PNGs of one image (H, W, 3) and its class map (H, W)."""
    write_png(stem.with_name(stem.name + OUTPUT_SUFFIXES["color"]), labels.colorize(classes, scheme))
    write_png(stem.with_name(stem.name + OUTPUT_SUFFIXES["overlay"]),
              _overlay_in_bands(image, classes, alpha, scheme))
    write_png(stem.with_name(stem.name + OUTPUT_SUFFIXES["trainIds"]), classes)


def _overlay_in_bands(image: np.ndarray, classes: np.ndarray, alpha: float, scheme: str) -> np.ndarray:
    """``overlay`` (H, W, 3) uint8, blended a band of rows at a time: its float32 working copies
    would otherwise need about 50 bytes a pixel of a large photo."""
    pictured = np.empty_like(image)
    rows = max(1, BAND_PIXELS // image.shape[1])
    for top in range(0, image.shape[0], rows):
        pictured[top:top + rows] = overlay(image[top:top + rows], classes[top:top + rows],
                                           alpha=alpha, scheme=scheme)
    return pictured


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """Options as JSON gives them back (tuples become lists), so a re-run's marker compares equal."""
    return json.loads(json.dumps(options, default=str))
