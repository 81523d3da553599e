"""Checks for the course's exercises: each takes the learner's answer and says right or wrong, and why.

A check never raises on a wrong or missing answer: it returns a ``Verdict``, which a notebook shows
as one line (green when right). ``None`` means "not answered yet", so the committed notebooks run
from top to bottom with every answer still open. Right answers are computed by segkit's own code
(the label table, the metrics, the losses, the inference recipes), never typed in here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segkit import labels, layout
from segkit.pictures import resampled_labels

#: Relative tolerance of numeric answers: a learner rounding to three digits is right.
RELATIVE_TOLERANCE = 5e-3


@dataclass(frozen=True)
class Verdict:
    """Right or wrong, and why; shows as one line in a notebook."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return f"{'✓ right' if self.ok else '✗ not yet'}: {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.ok else "#b35900"
        return f'<p style="color:{colour};font-weight:600">{html.escape(str(self))}</p>'


def _open(question: str) -> Verdict:
    return Verdict(False, f"no answer yet. {question}")


def _close(answer: float, expected: float, tolerance: float = RELATIVE_TOLERANCE) -> bool:
    return math.isclose(float(answer), float(expected), rel_tol=tolerance, abs_tol=1e-9)


def _number(answer, expected: float, what: str, *, hints: Mapping[str, float] = (),
            unit: str = "") -> Verdict:
    """Compare a numeric answer; when it matches a known slip (``hints``: why -> that wrong
    value), say which."""
    if answer is None:
        return _open(f"Give {what}.")
    if _close(answer, expected):
        return Verdict(True, f"{what} is {expected:.4g}{unit}.")
    for why, wrong in dict(hints).items():
        if _close(answer, wrong):
            return Verdict(False, f"{answer:.4g}{unit} is what you get {why}.")
    return Verdict(False, f"{answer:.4g}{unit} is not {what}; look at the formula again.")


# --- 01: the data ---------------------------------------------------------------------------------

def train_ids(answers: Mapping[int, int] | None) -> Verdict:
    """01: the trainId of each label id in ``answers`` (255 for void)."""
    if not answers or any(given is None for given in answers.values()):
        return _open("Map each label id to its trainId (255 when the class is void).")
    lut = labels.id_to_train_id_lut()
    names = {c.id: c.name for c in labels.CLASSES}
    wrong = []
    for label_id, given in answers.items():
        expected = int(lut[label_id])
        if given != expected:
            kind = "void, so 255" if expected == labels.IGNORE_INDEX else f"trainId {expected}"
            wrong.append(f"id {label_id} ({names[label_id]}) is {kind}, not {given}")
    if wrong:
        return Verdict(False, "; ".join(wrong) + ".")
    return Verdict(True, f"all {len(answers)} label ids map as the official table says.")


def void_share(train_id_mask, answer: float | None) -> Verdict:
    """01: the fraction (0-1) of a trainId mask's pixels that are void (255)."""
    mask = np.asarray(train_id_mask)
    expected = float((mask == labels.IGNORE_INDEX).mean())
    return _number(answer, expected, "the void share of this frame",
                   hints={"as a percentage: give a fraction between 0 and 1": 100 * expected,
                          "by counting the labelled pixels instead of the void ones": 1 - expected})


def label_file(root: str | Path, stem: str, split: str, answer: str | Path | None) -> Verdict:
    """01: the path of the official labelIds file of frame ``stem`` (relative to ``root`` or not)."""
    if answer is None:
        return _open("Write the path of the frame's labelIds file.")
    city = stem.split("_")[0]
    expected = layout.label_path(Path(root), split, city, stem)
    given = Path(answer)
    if given == expected or Path(root) / given == expected:
        return Verdict(True, f"{expected.relative_to(root)}.")
    if given.name != expected.name:
        return Verdict(False, f"the file is named {expected.name}: stem, then _gtFine_labelIds.png.")
    return Verdict(False, f"the name is right; the folders are gtFine/{split}/{city}/.")


# --- 02: class balance ----------------------------------------------------------------------------

def _labelled(class_pixels: Sequence[int]) -> np.ndarray:
    """The C class counts of a manifest's ``class_pixels`` (C classes, then void), as floats."""
    counts = np.asarray(class_pixels, dtype=np.float64)
    return counts[:labels.NUM_CLASSES]


def always_road(class_pixels: Sequence[int], pixel_acc: float | None, miou: float | None) -> Verdict:
    """02: pixel accuracy and mIoU of a model that says "road" for every pixel.

    Scores follow the official rules: void pixels count nowhere, and a class absent from both the
    ground truth and the prediction is left out of the mean.
    """
    if pixel_acc is None or miou is None:
        return _open("Give the pixel accuracy and the mIoU of the always-road model.")
    counts = _labelled(class_pixels)
    road = labels.CLASS_NAMES.index("road")
    share = counts[road] / counts.sum()
    present = int((counts > 0).sum())
    accuracy = _number(pixel_acc, share, "the pixel accuracy",
                       hints={"with the void pixels counted": counts[road] / np.sum(class_pixels)})
    score = _number(miou, share / present, "the mIoU",
                    hints={f"dividing by 19 although only {present} classes occur": share / 19,
                           "taking road's IoU as the mean": share})
    if accuracy and score:
        return Verdict(True, f"pixel accuracy {share:.3f} (road's share) but mIoU only "
                             f"{share / present:.3f}: road's IoU is its share, the other "
                             f"{present - 1} classes present score 0.")
    return Verdict(False, " ".join(v.message for v in (accuracy, score) if not v))


def rare_classes(class_pixels: Sequence[int], answer: Collection[str] | None,
                 below: float = 0.01) -> Verdict:
    """02: the classes present that cover less than ``below`` of the labelled pixels."""
    if answer is None:
        return _open(f"Name the classes present with less than {below:.0%} of the labelled pixels.")
    counts = _labelled(class_pixels)
    shares = counts / counts.sum()
    expected = {name for name, s in zip(labels.CLASS_NAMES, shares, strict=True) if 0 < s < below}
    given = set(answer)
    if given == expected:
        return Verdict(True, f"{len(expected)} classes: {', '.join(sorted(expected))}.")
    parts = []
    if missing := expected - given:
        parts.append(f"also rare: {', '.join(sorted(missing))}")
    if extra := given - expected:
        why = ", ".join(f"{name} ({_share(shares, name)})" for name in sorted(extra))
        parts.append(f"not rare (or absent): {why}")
    return Verdict(False, "; ".join(parts) + ".")


def _share(shares: np.ndarray, name: str) -> str:
    return f"{shares[labels.CLASS_NAMES.index(name)]:.1%}" if name in labels.CLASS_NAMES else "no class"


def largest_right(class_pixels: Sequence[int], k: int, answer: float | None) -> Verdict:
    """02: the pixel accuracy of a model right on every pixel of the ``k`` largest classes and
    wrong everywhere else."""
    counts = np.sort(_labelled(class_pixels))[::-1]
    expected = counts[:k].sum() / counts.sum()
    return _number(answer, expected, f"the pixel accuracy when only the {k} largest classes are right",
                   hints={"with the void pixels counted": counts[:k].sum() / np.sum(class_pixels)})


# --- 03: augmentation -----------------------------------------------------------------------------

#: Candidate augmentations for street scenes, and why each is safe or not.
AUGMENTATIONS = {
    "horizontal flip": (True, "a mirrored street is still a street, and the mask is mirrored with it"),
    "vertical flip": (False, "it puts the sky under the road, a scene the model will never be shown"),
    "random crop": (True, "image and mask are cut at the same place"),
    "random scale 0.5-2": (True, "near and far objects; the mask is resized nearest-neighbour"),
    "colour jitter on the image": (True, "light changes, the classes do not"),
    "colour jitter on the mask": (False, "it changes class ids: a mask holds labels, not colours"),
    "bilinear resize of the mask": (False, "it blends class ids into ids of other classes"),
    "nearest resize of the mask": (True, "every output pixel takes one input pixel's class"),
    "rotation by 90 degrees": (False, "the horizon becomes vertical: no camera on a car sees that"),
    "normalising the mask with ImageNet mean and std": (False, "class ids are not intensities"),
}


def safe_augmentations(answer: Collection[str] | None) -> Verdict:
    """03: which of ``AUGMENTATIONS`` keep image and mask consistent and the scene plausible."""
    if answer is None:
        return _open(f"Pick the safe ones among: {', '.join(AUGMENTATIONS)}.")
    unknown = set(answer) - set(AUGMENTATIONS)
    if unknown:
        return Verdict(False, f"not among the candidates: {', '.join(sorted(unknown))}.")
    wrong = [f"{name}: {why}" for name, (safe, why) in AUGMENTATIONS.items()
             if (name in answer) != safe]
    if wrong:
        return Verdict(False, f"{len(wrong)} to rethink. " + "; ".join(wrong) + ".")
    return Verdict(True, "every safe augmentation, and none of the others.")


def invented_classes(mask, size: tuple[int, int], answer: int | None) -> Verdict:
    """03: how many class values a *bilinear* resize of ``mask`` to ``size`` (width, height)
    creates that the mask did not hold."""
    blended = resampled_labels(mask, size, "bilinear")
    expected = len(set(np.unique(blended).tolist()) - set(np.unique(np.asarray(mask)).tolist()))
    return _number(answer, expected, "the number of invented class values")


def padded_share(frame: tuple[int, int], crop: tuple[int, int], base_height: int, scale: float,
                 answer: float | None) -> Verdict:
    """03: the share of a training crop that is padding (255), for a frame (width, height) resized
    so that its height is ``base_height * scale``, then cropped to ``crop`` (width, height)."""
    height = round(base_height * scale)
    width = round(frame[0] * height / frame[1])
    covered = min(width, crop[0]) * min(height, crop[1])
    expected = 1 - covered / (crop[0] * crop[1])
    return _number(answer, expected, "the padded share of the crop",
                   hints={"as a percentage: give a fraction between 0 and 1": 100 * expected,
                          "counting the covered part instead": 1 - expected})

