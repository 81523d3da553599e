"""Segmentation scores from a confusion matrix, as the official Cityscapes evaluation computes them.

``ConfusionMatrix`` counts (ground truth, prediction) pairs with a single ``torch.bincount``, like
``ConfusionMatrix`` in torchvision's ``references/segmentation/utils.py``, and ``compute`` derives
every score from the matrix:

* ``pixel_acc``: correct pixels / valid pixels.
* ``iou`` per class: ``TP / (TP + FP + FN)``. As in cityscapesScripts, a class absent from both
  ground truth and prediction scores NaN and is left out of ``miou`` (a NaN-mean), while a class
  that is only predicted scores 0: every one of its pixels is a false positive.
* ``mean_acc``: the NaN-mean of per-class recall ``TP / (TP + FN)``, NaN for classes absent from
  the ground truth.
* ``tp_fp_fn``: the per-class counts these scores are made of, for showing the arithmetic.
* ``category_iou``: IoU of the matrix pooled over the 7 Cityscapes categories (flat, construction,
  object, nature, sky, human, vehicle), the official "categories" score.

``segkit.bench`` measures what bincount saves against a one-hot reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from segkit.labels import CATEGORY_OF_CLASS, CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES


class ConfusionMatrix:
    """Accumulates an int64 confusion matrix ``mat[target, pred]`` of shape (C, C) over batches.

    Target values outside ``[0, C)`` (``ignore_index`` 255, or any other out-of-range label) are
    dropped. ``ignore_index`` is dropped even if it lies inside ``[0, C)``.

    Args:
        num_classes: number of classes C.
        ignore_index: target value left out of the counts.
        device: where the matrix lives; None lets it follow the device of the first ``update``.
        class_categories: category name of each class (C,) for ``category_iou``; None means the
            Cityscapes categories when C is ``NUM_CLASSES``, and no category scores otherwise.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX,
                 device: torch.device | str | None = None, *,
                 class_categories: Sequence[str] | None = None) -> None:
        if class_categories is None and num_classes == NUM_CLASSES:
            class_categories = CATEGORY_OF_CLASS
        if class_categories is not None and len(class_categories) != num_classes:
            raise ValueError(f"class_categories names {len(class_categories)} classes, "
                             f"expected one category per class ({num_classes})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_categories = None if class_categories is None else tuple(class_categories)
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)
        self._follow_inputs = device is None

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch: ``pred`` and ``target`` are integer class maps of the same shape.

        ``pred`` may instead be logits or scores with one more dimension, the class dimension 1
        (e.g. (N, C, H, W) for a target (N, H, W)); it is reduced with ``argmax(dim=1)``.
        """
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)  # (N, C, H, W) -> (N, H, W)
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have "
                             "the same shape (or pred one extra class dimension at dim 1)")
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError("pred and target must hold integer class indices (or pass logits)")
        if self._follow_inputs:
            self.mat = self.mat.to(target.device)
            self._follow_inputs = False
        self.mat += self._count(pred.to(self.mat.device).flatten(),
                                target.to(self.mat.device).flatten())

    def _count(self, pred: Tensor, target: Tensor) -> Tensor:
        """Confusion counts (C, C) of flat class maps (P,), with one bincount."""
        n = self.num_classes
        drop = (target < 0) | (target >= n)  # (P,)
        if 0 <= self.ignore_index < n:
            drop |= target == self.ignore_index
        _check_pred(pred, drop, n)
        # int32 holds n * n for any realistic n: half the memory of int64, and a faster bincount.
        # Masking by filling (not by boolean indexing, which copies twice and is slower) sends
        # dropped pixels to a spare last bin; the casts only wrap values that are dropped.
        index = target.to(torch.int32, copy=True).mul_(n).add_(pred.to(torch.int32))
        index.masked_fill_(drop, n * n)
        return torch.bincount(index, minlength=n * n + 1)[: n * n].view(n, n)

    def reset(self) -> None:
        """Zero the counts, keeping the device."""
        self.mat.zero_()

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Merge the counts of another matrix over the same classes (e.g. from another worker)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class matrix into a "
                             f"{self.num_classes}-class one")
        self.mat += other.mat.to(self.mat.device)
        return self

    def all_reduce(self) -> None:
        """Sum the counts over all processes if ``torch.distributed`` is initialised, else no-op."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat)

    def compute(self) -> dict[str, Any]:
        """Scores of the counts so far.

        Returns:
            ``pixel_acc``, ``mean_acc``, ``miou``, ``category_miou`` (floats); ``iou`` and ``acc``
            (per-class float64 tensors (C,), NaN where undefined); ``category_iou`` (dict category
            name -> float, empty without ``class_categories``). With no valid pixel counted every
            score is NaN.
        """
        mat = self.mat.double()
        iou, acc = _iou_and_recall(mat)
        result = {
            "pixel_acc": (mat.diagonal().sum() / mat.sum()).item(),  # 0 / 0 = NaN when empty
            "mean_acc": torch.nanmean(acc).item(),
            "acc": acc,
            "iou": iou,
            "miou": torch.nanmean(iou).item(),
            "category_iou": {},
            "category_miou": math.nan,
        }
        if self.class_categories is not None:
            names, pooled = _pool_by_category(mat, self.class_categories)
            category_iou, _ = _iou_and_recall(pooled)
            result["category_iou"] = dict(zip(names, category_iou.tolist(), strict=True))
            result["category_miou"] = torch.nanmean(category_iou).item()
        return result


def _check_pred(pred: Tensor, drop: Tensor, num_classes: int) -> None:
    """Raise if ``pred`` (P,) holds a class outside [0, C) at a pixel that is not dropped (P,)."""
    if pred.numel() == 0:
        return
    low, high = torch.aminmax(pred)
    # One min/max pass settles the usual case (argmax output); only otherwise look per pixel,
    # since any value is fine where the target is ignored.
    if low < 0 or high >= num_classes:
        bad = ((pred < 0) | (pred >= num_classes)) & ~drop
        if bad.any():
            raise ValueError(f"pred holds class indices outside [0, {num_classes}) at labelled "
                             "pixels")


def tp_fp_fn(mat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """True positives, false positives and false negatives per class, each (C,), of a confusion
    matrix ``mat[target, pred]`` (C, C): the diagonal, the rest of each column (pixels predicted as
    the class that are not), and the rest of each row (pixels of the class predicted as another)."""
    tp = mat.diagonal()
    return tp, mat.sum(dim=0) - tp, mat.sum(dim=1) - tp


def _iou_and_recall(mat: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class IoU and recall (C,) of a float confusion matrix (C, C); 0 / 0 gives NaN."""
    tp, fp, fn = tp_fp_fn(mat)
    return tp / (tp + fp + fn), tp / (tp + fn)


def _pool_by_category(mat: Tensor,
                      class_categories: Sequence[str]) -> tuple[tuple[str, ...], Tensor]:
    """Sum a (C, C) matrix into a (K, K) matrix over the K categories, in first-seen order."""
    names = tuple(dict.fromkeys(class_categories))
    member = torch.zeros(len(class_categories), len(names), dtype=mat.dtype, device=mat.device)
    member[torch.arange(len(class_categories)), [names.index(c) for c in class_categories]] = 1
    return names, member.T @ mat @ member  # (K, C) @ (C, C) @ (C, K)


def per_image_iou(pred: Tensor, target: Tensor, num_classes: int = NUM_CLASSES,
                  ignore_index: int = IGNORE_INDEX) -> float:
    """mIoU of one image, pred (H, W) or logits (C, H, W) against target (H, W).

    Classes absent from both maps are left out, as in ``ConfusionMatrix``; NaN if no pixel is
    labelled. Used to rank images worst-first.
    """
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(dim=0)  # (C, H, W) -> (H, W)
    confmat = ConfusionMatrix(num_classes, ignore_index, device=target.device)
    confmat.update(pred, target)
    return confmat.compute()["miou"]


def format_table(result: dict[str, Any], class_names: Sequence[str] = CLASS_NAMES) -> str:
    """A plain-text table of ``ConfusionMatrix.compute()``: one row per class, then summary lines.

    Scores are fractions with three decimals (0.667, not 66.7 %), as the epoch lines, the README
    and the course's tables print them, and the first line says so; undefined (NaN) scores print
    as ``n/a``. With categories a last line says what category mIoU is.
    """
    if len(class_names) != len(result["iou"]):
        raise ValueError(f"{len(class_names)} class names for {len(result['iou'])} classes")
    width = max(len("category mIoU"), *(len(name) for name in class_names))
    lines = [FRACTIONS_NOTE, f"{'class':<{width}}  {'IoU':>5}  {'acc':>5}"]
    for name, iou, acc in zip(class_names, result["iou"].tolist(), result["acc"].tolist(),
                              strict=True):
        lines.append(f"{name:<{width}}  {_fraction(iou)}  {_fraction(acc)}")
    lines.append("")
    summary = [("global acc", "pixel_acc"), ("mean acc", "mean_acc"), ("mIoU", "miou")]
    if result["category_iou"]:
        summary.append(("category mIoU", "category_miou"))
    lines += [f"{label:<{width}}  {_fraction(result[key])}" for label, key in summary]
    if result["category_iou"]:
        names = list(result["category_iou"])
        lines.append(f"category mIoU: the mean IoU of the {len(names)} categories ({', '.join(names)}), "
                     "each pooling the pixels of its classes")
    return "\n".join(lines)


#: The first line of ``format_table``: how to read its numbers.
FRACTIONS_NOTE = "scores are fractions, 1.000 at best (not percentages); n/a: undefined (class absent)"


def _fraction(value: float) -> str:
    """A score in [0, 1] with three decimals, five characters wide; ``n/a`` for NaN."""
    return "  n/a" if math.isnan(value) else f"{value:5.3f}"


def format_categories(result: dict[str, Any]) -> str:
    """The category IoU of ``ConfusionMatrix.compute()`` as a plain-text table, one row per
    category, fractions as in ``format_table`` ("" without categories)."""
    if not result["category_iou"]:
        return ""
    width = max(len("category"), *(len(name) for name in result["category_iou"]))
    lines = [f"{'category':<{width}}  {'IoU':>5}"]
    lines += [f"{name:<{width}}  {_fraction(iou)}" for name, iou in result["category_iou"].items()]
    return "\n".join(lines)
