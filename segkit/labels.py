"""The Cityscapes label table and everything derived from it.

The table is torchvision's ``Cityscapes.classes`` (the official ``labels.py`` of cityscapesScripts),
never retyped here. Two label schemes are derived from it:

* ``"cityscapes19"`` (default): the 19 official training classes, every other id maps to
  ``IGNORE_INDEX`` (255), as every Cityscapes benchmark reports.
* ``"original20"``: the original study's variant, class 0 = "unlabelled" pooling every void / ignored
  id, and the 19 training classes shifted to 1…19. Kept only to reproduce its figures: its class 0
  is a real class to the loss, which is why the default scheme does not use it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
import torch
from torchvision.datasets import Cityscapes

IGNORE_INDEX = 255
LABEL_SCHEMES = ("cityscapes19", "original20")

#: The official table: 34 label ids (0…33) and the license plate (id -1), with names, trainIds,
#: categories and colours, as namedtuples ``(name, id, train_id, category, category_id,
#: has_instances, ignore_in_eval, color)``.
CLASSES = tuple(Cityscapes.classes)

#: Rows that carry a valid label id (license plate has id -1 and never appears in labelIds PNGs).
_ID_ROWS = tuple(c for c in CLASSES if c.id >= 0)
#: The 19 training classes in trainId order.
TRAIN_CLASSES = tuple(sorted((c for c in CLASSES if c.train_id not in (-1, IGNORE_INDEX)),
                             key=lambda c: c.train_id))

NUM_CLASSES = len(TRAIN_CLASSES)
VALID_LABEL_IDS = frozenset(c.id for c in _ID_ROWS)
CLASS_NAMES = tuple(c.name for c in TRAIN_CLASSES)
#: trainId -> category name (flat, construction, object, nature, sky, human, vehicle).
CATEGORY_OF_CLASS = tuple(c.category for c in TRAIN_CLASSES)
CATEGORIES = tuple(OrderedDict.fromkeys(CATEGORY_OF_CLASS))

#: labelId (0…255) -> colour, for the official ``*_gtFine_color.png`` files.
LABEL_ID_PALETTE = np.zeros((256, 3), dtype=np.uint8)
for _c in _ID_ROWS:
    LABEL_ID_PALETTE[_c.id] = _c.color


def num_classes(scheme: str = "cityscapes19") -> int:
    """Number of classes the model predicts under ``scheme``."""
    _check_scheme(scheme)
    return NUM_CLASSES + (scheme == "original20")


def class_names(scheme: str = "cityscapes19") -> tuple[str, ...]:
    """Class names indexed by the scheme's class index."""
    _check_scheme(scheme)
    return ("unlabelled", *CLASS_NAMES) if scheme == "original20" else CLASS_NAMES


def id_to_train_id_lut(scheme: str = "cityscapes19") -> np.ndarray:
    """A 256-entry uint8 lookup table labelId -> class index (``lut[label_ids]`` converts a map).

    Ids outside the table map to ``IGNORE_INDEX``; callers that must reject them check against
    ``VALID_LABEL_IDS`` first.
    """
    _check_scheme(scheme)
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for c in _ID_ROWS:
        if c.train_id != IGNORE_INDEX:
            lut[c.id] = c.train_id
    if scheme == "original20":
        valid = lut != IGNORE_INDEX
        lut[valid] += 1
        lut[[c.id for c in _ID_ROWS if c.train_id == IGNORE_INDEX]] = 0
    return lut


def train_id_to_id_lut(scheme: str = "cityscapes19") -> np.ndarray:
    """A 256-entry uint8 lookup table class index -> labelId, for official-format predictions.

    ``IGNORE_INDEX`` (and, under "original20", class 0 "unlabelled") maps to 0 ("unlabeled"), as
    cityscapesScripts expects for void pixels.
    """
    _check_scheme(scheme)
    offset = int(scheme == "original20")
    lut = np.zeros(256, dtype=np.uint8)
    for c in TRAIN_CLASSES:
        lut[c.train_id + offset] = c.id
    return lut


def palette(scheme: str = "cityscapes19") -> np.ndarray:
    """A (256, 3) uint8 colour table indexed by class index; ignore (255) is black."""
    _check_scheme(scheme)
    colours = np.zeros((256, 3), dtype=np.uint8)
    offset = int(scheme == "original20")
    for c in TRAIN_CLASSES:
        colours[c.train_id + offset] = c.color
    return colours


def colorize(mask: np.ndarray | torch.Tensor, scheme: str = "cityscapes19") -> np.ndarray:
    """Colour a class-index map: (H, W) integers -> (H, W, 3) uint8 RGB.

    Values outside 0…255 (e.g. -1) are drawn like ignore, in black.
    """
    mask = mask.numpy(force=True) if isinstance(mask, torch.Tensor) else np.asarray(mask)
    index = np.where((mask >= 0) & (mask < 256), mask, IGNORE_INDEX).astype(np.uint8)
    return palette(scheme)[index]


def colorize_label_ids(label_ids: np.ndarray) -> np.ndarray:
    """Colour a labelId map the way the official ``*_gtFine_color.png`` does: (H, W) -> (H, W, 3)."""
    return LABEL_ID_PALETTE[np.asarray(label_ids, dtype=np.uint8)]


def label_histogram(masks: Iterable[np.ndarray | torch.Tensor], num_classes: int = NUM_CLASSES,
                    ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Pixels per class over integer class maps of any shape: (C + 1,) int64, the last one void.

    Void counts every value outside [0, C) and ``ignore_index`` (even one inside [0, C)). The one
    histogram of labels: ``segkit prepare`` writes it into the manifest, class weights and the
    class-balance figure read it. Counted with numpy, so it runs alike in ``prepare``'s worker
    processes and on masks from the GPU (copied back).
    """
    counts = np.zeros(num_classes + 1, dtype=np.int64)
    for mask in masks:
        values = mask.numpy(force=True) if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"masks must hold integer class indices, got {values.dtype}")
        values = values.ravel()
        inside = (values >= 0) & (values < num_classes) & (values != ignore_index)
        counts += np.bincount(np.where(inside, values, num_classes), minlength=num_classes + 1)
    return counts


def _check_scheme(scheme: str) -> None:
    if scheme not in LABEL_SCHEMES:
        raise KeyError(f"unknown label scheme {scheme!r}; choose one of {', '.join(LABEL_SCHEMES)}")
