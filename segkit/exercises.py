"""Checks for the course's exercises: each takes the learner's answer and says right or wrong, and why.

A check never raises on a wrong, missing or malformed answer (a string, a list for a number): it
returns a ``Verdict``, which a notebook shows as one line (green when right). ``None`` means "not
answered yet", so the committed notebooks run from top to bottom with every answer still open. Right
answers are computed by segkit's own code (the label table, the metrics, the losses, the inference
recipes), never typed in here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segkit import labels, layout
from segkit.losses import build_loss, class_weights_from_histogram
from segkit.metrics import ConfusionMatrix
from segkit.models import anatomy
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


def _numbers(answer, count: int) -> list[float] | None:
    """``answer``'s ``count`` numbers as floats, or None when it is not a sequence of that many
    numbers (a string of digits is not)."""
    if isinstance(answer, (str, bytes)):
        return None
    try:
        values = [float(v) for v in answer]
    except (TypeError, ValueError):
        return None
    return values if len(values) == count else None


def _close(answer: float, expected: float, tolerance: float = RELATIVE_TOLERANCE) -> bool:
    return math.isclose(float(answer), float(expected), rel_tol=tolerance, abs_tol=1e-9)


def _number(answer, expected: float, what: str, *, hints: Mapping[str, float] = (),
            unit: str = "") -> Verdict:
    """Compare a numeric answer; when it matches a known slip (``hints``: why -> that wrong
    value), say which."""
    if answer is None:
        return _open(f"Give {what}.")
    try:
        answer = float(answer)
    except (TypeError, ValueError):
        return Verdict(False, f"{answer!r} is not a number: give {what} as a number.")
    if _close(answer, expected):
        return Verdict(True, f"{what} is {expected:.4g}{unit}.")
    for why, wrong in dict(hints).items():
        if _close(answer, wrong):
            return Verdict(False, f"{answer:.4g}{unit} is what you get {why}.")
    return Verdict(False, f"{answer:.4g}{unit} is not {what}; look at the formula again.")


# --- 01: the data ---------------------------------------------------------------------------------

def train_ids(answers: Mapping[int, int] | None) -> Verdict:
    """01: the trainId of each label id in ``answers`` (255 for void)."""
    if not isinstance(answers, Mapping):
        return Verdict(False, f"{answers!r}: give a dict, label id -> trainId.") if answers else \
            _open("Map each label id to its trainId (255 when the class is void).")
    if not answers or any(given is None for given in answers.values()):
        return _open("Map each label id to its trainId (255 when the class is void).")
    names = {c.id: c.name for c in labels.CLASSES}
    if not all(isinstance(label_id, (int, np.integer)) and label_id in names for label_id in answers):
        return Verdict(False, f"{answers!r}: the keys are label ids, whole numbers from 0 to 33.")
    lut = labels.id_to_train_id_lut()
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
    if not isinstance(answer, str | Path):
        return Verdict(False, f"{answer!r}: give the path as a string.")
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
    if isinstance(answer, str) or not isinstance(answer, Collection):
        return Verdict(False, f"{answer!r}: give the class names as a set, e.g. {{\"pole\"}}.")
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



# --- 04: convolution, loss and scores -------------------------------------------------------------

def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                     answer: int | None = None) -> Verdict:
    """04: the output side of a convolution over ``size`` pixels, as torch computes it."""
    probe = torch.zeros(1, 1, size, 1)
    weight = torch.zeros(1, 1, kernel, 1)
    expected = torch.nn.functional.conv2d(probe, weight, stride=(stride, 1), padding=(padding, 0),
                                          dilation=(dilation, 1)).shape[2]
    floor_free = (size + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1
    return _number(answer, expected, "the output size",
                   hints={"without the dilation": (size + 2 * padding - kernel) // stride + 1,
                          "without rounding down": floor_free,
                          "without the final + 1": expected - 1})


def receptive_field(layers: Sequence[tuple[int, int, int]], answer: int | None) -> Verdict:
    """04: the receptive field (pixels a side) after ``layers``, each (kernel, stride, dilation),
    by the recurrence r_l = r_{l-1} + (k_l - 1) d_l j_{l-1}, j_l = j_{l-1} s_l, from r_0 = j_0 = 1."""
    field, jump, unstrided = 1, 1, 1
    for kernel, stride, dilation in layers:
        field += (kernel - 1) * dilation * jump
        unstrided += (kernel - 1) * dilation
        jump *= stride
    return _number(answer, field, "the receptive field",
                   hints={"forgetting that each stride multiplies the step of later layers": unstrided})


def cross_entropy(logits, target, answer: float | None) -> Verdict:
    """04: the mean cross-entropy of ``logits`` (P, C), one row of class scores per pixel, against
    ``target`` (P,), void (255) pixels left out, as segkit's loss computes it."""
    scores = torch.as_tensor(logits, dtype=torch.float64).T[None, :, :, None]  # (1, C, P, 1)
    classes = torch.as_tensor(target, dtype=torch.int64)[None, :, None]  # (1, P, 1)
    expected = float(build_loss("ce")(scores, classes))
    valid = classes != labels.IGNORE_INDEX
    per_pixel = torch.nn.functional.cross_entropy(scores, classes.clamp(max=scores.shape[1] - 1),
                                                  reduction="none")
    return _number(answer, expected, "the mean cross-entropy of the labelled pixels",
                   hints={"averaging over every pixel, void included":
                          float((per_pixel * valid).sum() / valid.numel()),
                          "with log base 2": expected / math.log(2)})


def iou_of_class(matrix, index: int, answer: float | None) -> Verdict:
    """04: IoU of class ``index`` from a confusion matrix ``[ground truth, prediction]``."""
    counts = torch.as_tensor(np.asarray(matrix), dtype=torch.int64)
    confusion = ConfusionMatrix(len(counts), class_categories=None)
    confusion.mat += counts
    expected = float(confusion.compute()["iou"][index])
    tp = float(counts[index, index])
    return _number(answer, expected, f"the IoU of class {index}",
                   hints={"dividing by the row only (that is the recall)": tp / float(counts[index].sum()),
                          "dividing by the column only (that is the precision)":
                          tp / float(counts[:, index].sum()),
                          "with the diagonal counted twice in the denominator":
                          tp / float(counts[index].sum() + counts[:, index].sum())})


# --- 05: depth, memory and the loss ---------------------------------------------------------------

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2}


def activation_mib(shape: Sequence[int], precision: str, answer: float | None) -> Verdict:
    """05: MiB (2**20 bytes) of one feature map of ``shape`` (N, C, H, W) stored in ``precision``."""
    elements = math.prod(shape)
    size = BYTES_PER_ELEMENT[precision]
    expected = elements * size / 2**20
    return _number(answer, expected, "its size in MiB",
                   hints={"in fp32 (4 bytes an element)": elements * 4 / 2**20,
                          "forgetting the bytes per element": elements / 2**20,
                          "in MB (10**6 bytes) instead of MiB": elements * size / 1e6,
                          "for one image instead of the batch": expected / shape[0]})


def class_weight(class_pixels: Sequence[int], name: str, answer: float | None) -> Verdict:
    """05: the ENet class weight 1 / ln(1.02 + p) of class ``name``, as the training loss uses it
    (``segkit.losses.class_weights_from_histogram`` over the manifest's class counts)."""
    counts = torch.as_tensor(_labelled(class_pixels))
    index = labels.CLASS_NAMES.index(name)
    expected = float(class_weights_from_histogram(counts)[index])
    share = float(counts[index] / counts.sum())
    return _number(answer, expected, f"the weight of {name}",
                   hints={"with the share in percent": 1 / math.log(1.02 + 100 * share),
                          "with the share of all pixels, void included":
                          1 / math.log(1.02 + float(counts[index]) / float(np.sum(class_pixels)))})


def focal_factor(p_t: float, gamma: float, answer: float | None) -> Verdict:
    """05: how much less a pixel with probability ``p_t`` of its true class weighs under the focal
    loss than under cross-entropy: focal / CE, measured on segkit's two losses."""
    logits = torch.tensor([[math.log(p_t), math.log1p(-p_t)]], dtype=torch.float64)[..., None, None]
    target = torch.zeros(1, 1, 1, dtype=torch.int64)
    expected = float(build_loss("focal", gamma=gamma)(logits, target)
                     / build_loss("ce")(logits, target))
    return _number(answer, expected, f"the focal loss's share of cross-entropy at p_t = {p_t}",
                   hints={"with p_t instead of 1 - p_t": p_t**gamma,
                          "without the power gamma": 1 - p_t})


# --- 06: dilation, output stride, ASPP ------------------------------------------------------------

def dilated_extent(kernel: int, dilation: int, answer: int | None) -> Verdict:
    """06: the side of the window a ``kernel`` × ``kernel`` convolution with ``dilation`` reads,
    measured as the pixels one output takes from an impulse (``anatomy.dilated_taps``)."""
    columns = np.nonzero(anatomy.dilated_taps(4 * kernel * dilation + 1, kernel, dilation).any(axis=0))[0]
    expected = int(columns.max() - columns.min()) + 1
    return _number(answer, expected, "the window side",
                   hints={"with the dilation multiplying the whole kernel": kernel * dilation,
                          "without dilation": kernel})


def _deeplab(output_stride: int):
    from segkit.models import build_model

    return build_model("deeplabv3plus", backbone="mobilenet_v3_large", output_stride=output_stride)


def aspp_rates(output_stride: int, answer: Sequence[int] | None) -> Verdict:
    """06: the dilation rates of ASPP's three 3×3 branches at ``output_stride``, read from the model."""
    if answer is None:
        return _open("Give the three rates.")
    values = _numbers(answer, 3)
    if values is None:
        return Verdict(False, f"{answer!r}: give the three rates, e.g. (a, b, c).")
    expected = sorted(rate for rate in anatomy.aspp_rates(_deeplab(output_stride)) if rate > 1)
    if sorted(values) == expected:
        return Verdict(True, f"rates {tuple(expected)}: the same field of view in input pixels.")
    return Verdict(False, f"{tuple(answer)} is not it: at output stride {output_stride} neighbouring "
                          f"feature pixels are {output_stride} input pixels apart, and the rates "
                          "must reach as far in the input as (6, 12, 18) do at output stride 16.")


def feature_size(input_size: tuple[int, int], output_stride: int,
                 answer: tuple[int, int] | None) -> Verdict:
    """06: (width, height) of the backbone's deepest features for an input (width, height), from a
    forward pass."""
    if answer is None:
        return _open("Give (width, height) of the deep features.")
    values = _numbers(answer, 2)
    if values is None:
        return Verdict(False, f"{answer!r}: give two numbers, (width, height).")
    net = _deeplab(output_stride).eval()
    with torch.inference_mode():
        deep = net.backbone(torch.zeros(1, 3, input_size[1], input_size[0]))["out"]
    expected = (deep.shape[-1], deep.shape[-2])
    if tuple(values) == expected:
        return Verdict(True, f"{expected[0]}×{expected[1]}: the input divided by {output_stride}, "
                             "rounded up.")
    return Verdict(False, f"{tuple(answer)} is not it; divide each side by the output stride "
                          "(rounding up).")


def backbone_lr(model, config, answer: float | None) -> Verdict:
    """06: the learning rate the backbone of ``model`` starts with under ``config``."""
    loaded = bool(getattr(model.backbone, "pretrained", False))
    expected = config.lr * (config.backbone_lr if loaded else 1.0)
    why = (f"lr {config.lr:g} × backbone factor {config.backbone_lr:g}: the ImageNet weights loaded"
           if loaded else f"lr {config.lr:g}: the backbone starts from random weights, so it has "
                          "nothing to preserve and learns at the full rate")
    verdict = _number(answer, expected, "the backbone's learning rate",
                      hints={"as if the ImageNet weights had loaded": config.lr * config.backbone_lr,
                             "as if they had not": config.lr})
    return Verdict(verdict.ok, f"{verdict.message} ({why})" if verdict.ok else verdict.message)


# --- 07: the protocol and the spread --------------------------------------------------------------

def windows(frame: tuple[int, int], window: tuple[int, int], answer: int | None) -> Verdict:
    """07: how many sliding windows cover a frame (width, height), at segkit's default stride."""
    from segkit.inference import Inference, _starts

    stride = Inference(mode="slide", window=window).stride_of()
    rows, columns = (_starts(frame[k], window[k], stride[k]) for k in (1, 0))
    expected = len(rows) * len(columns)
    side_by_side = math.ceil(frame[0] / window[0]) * math.ceil(frame[1] / window[1])
    return _number(answer, expected, "the number of windows", hints={"without overlap": side_by_side})


def ahead_beyond_spread(best_per_seed: Mapping[str, Sequence[float]], answer: str | None) -> Verdict:
    """07: which model is ahead beyond the seed-to-seed spread (``"none"`` if none is), given each
    model's best validation mIoU per seed; decided as ``segkit.course.best_model`` does."""
    if answer is None:
        return _open('Name the model, or "none".')
    from segkit.course import best_model

    runs = {name: [{"history": [{"val_miou": value}]} for value in values]
            for name, values in best_per_seed.items()}
    leader, why = best_model(runs)
    expected = leader or "none"
    return Verdict(answer == expected, why if answer == expected else f"not {answer}: {why}")
