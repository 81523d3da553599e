"""Figures for the notebooks: samples, the label table, class balance, augmentations, curves, scores.

Every figure function returns a ``matplotlib.figure.Figure`` (end the cell with ``plt.show()``).
Label maps are always drawn pixel for pixel (``interpolation="nearest"``) in the official Cityscapes
colours, with void / ignore (255) in black and listed separately, never as a class. The pictures
themselves (``overlay``, ``boundaries``, ``error_map``) are plain arrays from ``segkit.pictures``.
``draw_live`` is what ``segkit.callbacks.LivePlot`` redraws after every epoch.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from matplotlib.ticker import MaxNLocator

from segkit.budget import format_duration
from segkit.labels import (
    CLASS_NAMES,
    CLASSES,
    IGNORE_INDEX,
    NUM_CLASSES,
    class_names,
    colorize,
    id_to_train_id_lut,
    palette,
)
from segkit.metrics import ConfusionMatrix, per_image_iou
from segkit.models.anatomy import INPUT, Stage, aspp_rates, dilated_taps, skip_connections, stage_graph
from segkit.pictures import (
    as_labels,
    as_rgb,
    boundaries,
    dimmed,
    overlay,
    real_classes,
    resampled_labels,
    to_png,
    void_pixels,
)
from segkit.transforms import denormalize

PANEL_INCHES = 3.2  # width of one picture in a grid
VOID_COLOUR = (0.0, 0.0, 0.0)  # how ignore (255) is drawn, as in the palette


def set_style(dpi: int = 100) -> None:
    """The course's plot defaults: seaborn's white-grid theme, ``dpi``, label maps drawn unblurred."""
    sns.set_theme(context="notebook", style="whitegrid")
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "image.interpolation": "nearest",
                         "figure.max_open_warning": 50})


# --- scores shown beside pictures -----------------------------------------------------------------

def image_scores(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
                 num_classes: int) -> tuple[float, float]:
    """(mIoU, pixel accuracy) of one image; NaN when it has no labelled pixel."""
    pred, target = torch.as_tensor(as_labels(pred)), torch.as_tensor(as_labels(target))
    valid = (target >= 0) & (target < num_classes) & (target != IGNORE_INDEX)
    acc = (pred[valid] == target[valid]).double().mean().item() if valid.any() else math.nan
    return per_image_iou(pred, target, num_classes=num_classes), acc


# --- small figure helpers ----------------------------------------------------------------------------

def _picture_grid(rows: int, cols: int, aspect: float, extra: float = 0.0) -> tuple[Figure, np.ndarray]:
    """A figure of rows x cols picture panels of height/width ``aspect``; axes (rows, cols)."""
    size = (cols * PANEL_INCHES, rows * (PANEL_INCHES * aspect + 0.35) + extra)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")
    return fig, axes


def short_name(path_or_name: str | Path) -> str:
    """A frame's name without folders and the ``_leftImg8bit.png`` suffix, for titles."""
    return Path(path_or_name).name.removesuffix(".png").removesuffix("_leftImg8bit")


def _show(ax: Axes, picture: np.ndarray, title: str = "") -> None:
    """Draw a picture pixel for pixel, without ticks or grid."""
    ax.imshow(picture, interpolation="nearest")
    ax.set_title(title, fontsize="medium")
    ax.axis("off")


def _class_legend(fig: Figure, masks: Iterable[np.ndarray], scheme: str) -> None:
    """A legend below the figure: the official colour of each class present, then void."""
    names = class_names(scheme)
    present = np.zeros(256, dtype=bool)
    void = False
    for mask in masks:
        present[np.unique(np.clip(mask, 0, 255))] = True
        void |= bool(void_pixels(mask, scheme).any())
    colours = palette(scheme) / 255
    handles = [Patch(facecolor=colours[k], edgecolor="0.3", label=names[k])
               for k in real_classes(scheme) if present[k]]
    if void:
        handles.append(Patch(facecolor=VOID_COLOUR, edgecolor="0.3", label="void (ignored)"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 7),
                   frameon=False, fontsize="small")


def _loader(dataset):
    """``dataset.load`` (the untransformed frame) where there is one, else ``dataset[i]``."""
    return dataset.load if hasattr(dataset, "load") else dataset.__getitem__


def _model_colours(names: Sequence[str]) -> dict[str, Any]:
    """One seaborn colour per model, in order, the same in every figure."""
    return dict(zip(names, sns.color_palette(n_colors=max(len(names), 1)), strict=False))


# --- Figure 1: samples -------------------------------------------------------------------------------

def sample_grid(dataset, indices: Sequence[int], *, scheme: str | None = None,
                alpha: float = 0.5) -> Figure:
    """One row per frame: image, colour label, overlay and class boundaries (white on the dim image).

    Args:
        dataset: a ``CityscapesSegmentation`` (or anything with ``load(i)`` or ``[i]`` giving
            image (3, H, W) and mask (H, W)).
        indices: the frames to show.
        scheme: label scheme for the colours; default the dataset's.
        alpha: label opacity in the overlay column.
    """
    scheme = scheme or getattr(dataset, "label_scheme", "cityscapes19")
    load = _loader(dataset)
    frames = [load(i) for i in indices]
    images, masks = [as_rgb(f[0]) for f in frames], [as_labels(f[1]) for f in frames]
    fig, axes = _picture_grid(len(frames), 4, images[0].shape[0] / images[0].shape[1], extra=0.6)
    paths = getattr(dataset, "images", None)
    for row, (index, image, mask) in enumerate(zip(indices, images, masks, strict=True)):
        edges = np.where(boundaries(mask)[..., None], 255.0, dimmed(image)).astype(np.uint8)
        name = short_name(paths[index]) if paths is not None else f"#{index}"
        panels = [(image, name), (colorize(mask, scheme), "label"),
                  (overlay(image, mask, alpha, scheme), "overlay"), (edges, "class boundaries")]
        for ax, (picture, title) in zip(axes[row], panels, strict=True):
            _show(ax, picture, title)
    _class_legend(fig, masks, scheme)
    return fig


# --- the label table ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelTable:
    """The Cityscapes label table: shows as HTML with colour swatches in a notebook, text elsewhere.

    ``rows`` holds ``(label id, name, category, class index or None when ignored, (r, g, b))``.
    """

    scheme: str
    rows: tuple[tuple[int, str, str, int | None, tuple[int, int, int]], ...]

    HEADER = ("id", "name", "category", "class", "colour")
    NOTE = "ignored labels (class '-') are void: drawn black in class maps, left out of every score"

    def _cells(self) -> list[tuple[str, ...]]:
        return [(str(i), name, category, "-" if index is None else str(index),
                 "#" + "".join(f"{v:02x}" for v in rgb)) for i, name, category, index, rgb in self.rows]

    def __str__(self) -> str:
        cells = [self.HEADER, *self._cells()]
        widths = [max(len(row[k]) for row in cells) for k in range(len(self.HEADER))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                 for row in cells]
        return "\n".join([f"Cityscapes labels, scheme {self.scheme!r}", *lines, self.NOTE])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in self.HEADER)
        body = []
        for (i, name, category, index, colour), (*_, hex_colour) in zip(self.rows, self._cells(),
                                                                       strict=True):
            swatch = (f'<span style="display:inline-block;width:2.5em;height:1em;background:'
                      f'rgb{colour};border:1px solid #555"></span> <code>{hex_colour}</code>')
            style = ' style="color:#888"' if index is None else ""
            body.append(f"<tr{style}><td>{i}</td><td>{html.escape(name)}</td><td>{category}</td>"
                        f"<td>{'-' if index is None else index}</td><td>{swatch}</td></tr>")
        return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
                f"<p><small>{self.NOTE}</small></p>")


def label_table(scheme: str = "cityscapes19") -> LabelTable:
    """The official label table (35 rows) with each label's class index under ``scheme``."""
    lut = id_to_train_id_lut(scheme)
    rows = []
    for c in CLASSES:
        index = int(lut[c.id]) if c.id >= 0 else IGNORE_INDEX
        void = index == IGNORE_INDEX or (scheme == "original20" and index == 0)
        rows.append((c.id, c.name, c.category, None if void else index, tuple(c.color)))
    return LabelTable(scheme, tuple(rows))


def label_encodings(image: np.ndarray | torch.Tensor, label_ids: np.ndarray | torch.Tensor) -> Figure:
    """One frame's label in its three encodings: the label ids as stored (grey levels 0-33), the
    19 training classes in their colours with void black, and where the void pixels are.

    Args:
        image: the camera image, uint8 (3, H, W) or (H, W, 3).
        label_ids: the official ``*_gtFine_labelIds.png`` values (H, W).
    """
    ids = as_labels(label_ids)
    train_ids = id_to_train_id_lut()[ids]
    void = train_ids == IGNORE_INDEX
    fig, axes = _picture_grid(1, 4, ids.shape[0] / ids.shape[1], extra=0.6)
    _show(axes[0, 0], as_rgb(image), "camera image")
    shown = axes[0, 1].imshow(ids, cmap="gray", vmin=0, vmax=33, interpolation="nearest")
    axes[0, 1].set_title("labelIds (0-33, as stored)", fontsize="medium")
    axes[0, 1].axis("off")
    fig.colorbar(shown, ax=axes[0, 1], shrink=0.6, label="label id")
    _show(axes[0, 2], colorize(train_ids), "trainIds: 19 classes, void black")
    _show(axes[0, 3], np.where(void[..., None], 255, dimmed(as_rgb(image))).astype(np.uint8),
          f"void: {void.mean():.1%} of pixels (white)")
    return fig


# --- Figure 2: class balance -------------------------------------------------------------------------

def _share_label(percent: float) -> str:
    """A bar's percentage with about two significant digits; exactly 0 for an absent class."""
    if percent == 0:
        return "0"
    return f"{percent:.0f}" if percent >= 10 else f"{percent:.1f}" if percent >= 1 else f"{percent:.2f}"


def class_distribution(pixels_per_split: Mapping[str, Sequence[int] | np.ndarray], *,
                       scheme: str = "cityscapes19", log: bool = False) -> Figure:
    """Share of pixels per class, one row per split, bars in the official colours.

    Args:
        pixels_per_split: split -> (C + 1,) pixel counts, the C classes then void (ignore), as in
            the manifest's ``class_pixels`` or from ``segkit.datasets.class_pixels(dataset)``.
        scheme: the label scheme the counts are in.
        log: a logarithmic share axis, to read the rare classes.

    Shares are of all pixels, void included, which gets its own bar to the right of the classes.
    Axes come in pairs per split: (classes, void).
    """
    names = list(class_names(scheme))
    colours = {name: tuple(palette(scheme)[k] / 255) for k, name in enumerate(names)}
    splits = list(pixels_per_split)
    fig, axes = plt.subplots(len(splits), 2, figsize=(13, 3.4 * len(splits)), squeeze=False,
                             sharey="row", layout="constrained", gridspec_kw={"width_ratios": [19, 1.4]})
    for (ax, ax_void), split in zip(axes, splits, strict=True):
        counts = np.asarray(pixels_per_split[split], dtype=np.float64)
        if counts.shape != (len(names) + 1,):
            raise ValueError(f"{split}: expected {len(names) + 1} counts ({len(names)} classes, then "
                             f"void), got shape {counts.shape}")
        shares = 100 * counts / max(counts.sum(), 1)
        sns.barplot(x=names, y=shares[:-1], hue=names, palette=colours, legend=False, saturation=1,
                    edgecolor="0.25", linewidth=0.6, ax=ax)
        sns.barplot(x=["void"], y=shares[-1:], color=VOID_COLOUR, saturation=1, ax=ax_void)
        for axis in (ax, ax_void):
            for bars in axis.containers:  # seaborn makes one container per hue level
                axis.bar_label(bars, labels=[_share_label(s) for s in bars.datavalues], fontsize=7,
                               padding=1)
        ax.set_title(f"{split}: {counts.sum() / 1e6:,.1f} M pixels", loc="left", fontsize="medium")
        ax.set_ylabel("share of pixels (%)")
        ax.tick_params(axis="x", labelrotation=45)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
        ax_void.set_title("ignored", fontsize="small")
        if log:
            ax.set_yscale("log")
    fig.suptitle("Cityscapes is imbalanced: share of pixels per class")
    return fig


def largest_right_scores(class_pixels: Sequence[int] | np.ndarray) -> list[dict[str, float]]:
    """Scores of imagined models that are right on every pixel of the k largest classes and say
    "the largest class" everywhere else, for k = 1 … classes present (k = 1: always the largest).

    ``class_pixels``: the C class counts (a manifest's ``class_pixels`` may keep void last; only
    the first C are read). Returns one row per k: ``k``, ``class`` (the k-th largest),
    ``pixel_acc`` and ``miou``, computed by ``ConfusionMatrix``.
    """
    counts = torch.as_tensor(np.asarray(class_pixels)[:NUM_CLASSES], dtype=torch.int64)
    order = [int(c) for c in torch.argsort(counts, descending=True, stable=True) if counts[c] > 0]
    rows = []
    for k in range(1, len(order) + 1):
        matrix = ConfusionMatrix(NUM_CLASSES)
        matrix.mat[:, order[0]] = counts  # every pixel predicted as the largest class …
        for c in order[1:k]:  # … except those of the k largest, predicted right
            matrix.mat[c, order[0]], matrix.mat[c, c] = 0, counts[c]
        scores = matrix.compute()
        rows.append({"k": k, "class": CLASS_NAMES[order[k - 1]], "pixel_acc": scores["pixel_acc"],
                     "miou": scores["miou"]})
    return rows


def imbalance_effect(class_pixels: Sequence[int] | np.ndarray) -> Figure:
    """Pixel accuracy against mIoU of models right on only the k largest classes (see
    ``largest_right_scores``): accuracy races ahead because it weighs each class by its pixels,
    mIoU climbs one class at a time."""
    rows = largest_right_scores(class_pixels)
    ks = [row["k"] for row in rows]
    fig, ax = plt.subplots(figsize=(10, 3.6), layout="constrained")
    ax.plot(ks, [row["pixel_acc"] for row in rows], marker="o", label="pixel accuracy")
    ax.plot(ks, [row["miou"] for row in rows], marker="s", label="mIoU")
    ax.set_xticks(ks, [f"{row['k']}: {row['class']}" for row in rows], fontsize=8, rotation=40,
                  ha="right", rotation_mode="anchor")
    ax.set(ylim=(0, 1.02), ylabel="score",
           xlabel="right on the k largest classes (the k-th named), the largest class predicted elsewhere")
    ax.legend(loc="lower right")
    return fig


# --- Figure 3: augmentations -------------------------------------------------------------------------

def augmentation_grid(image: torch.Tensor, mask: torch.Tensor, demos: Mapping[str, Any], *,
                      seed: int = 0, scheme: str = "cityscapes19") -> Figure:
    """Columns: the original, then each demo transform; rows: image and colour mask.

    Args:
        image, mask: uint8 (3, H, W) and class map (H, W), e.g. from ``dataset.load(i)``.
        demos: name -> ``torchvision.transforms.v2`` transform on (image, mask), e.g.
            ``segkit.transforms.demo_transforms()`` or the same training preset several times.
        seed: demo ``k`` (0, 1, …) draws its random parameters from ``seed + k``, so repeated draws
            of one preset differ (the global RNG is restored). Images a transform normalised
            (``v2.Normalize`` in it) are shown denormalised, as the eye sees the frame.
    """
    from torchvision import tv_tensors

    source = (tv_tensors.Image(torch.as_tensor(as_rgb(image)).permute(2, 0, 1)),
              tv_tensors.Mask(torch.as_tensor(as_labels(mask))))
    results = {"original": source}
    for k, (name, transform) in enumerate(demos.items()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + k)
            out_image, out_mask = transform(*source)
        results[name] = (denormalize(out_image) if normalises(transform) else out_image, out_mask)
    fig, axes = _picture_grid(2, len(results), image.shape[-2] / image.shape[-1])
    for col, (name, (out_image, out_mask)) in enumerate(results.items()):
        height, width = out_mask.shape[-2:]
        _show(axes[0, col], as_rgb(out_image), f"{name}\n{width}×{height}")
        _show(axes[1, col], colorize(out_mask, scheme))
    return fig


def mask_resampling(mask: np.ndarray | torch.Tensor, size: tuple[int, int]) -> Figure:
    """A class map resized to ``size`` (width, height) nearest-neighbour and bilinearly, and the
    pixels where bilinear resampling invented a class the map does not hold (white)."""
    source = as_labels(mask)
    nearest = resampled_labels(source, size, "nearest")
    blended = resampled_labels(source, size, "bilinear")
    invented = ~np.isin(blended, np.unique(source))
    changed = blended != nearest
    fig, axes = _picture_grid(1, 4, size[1] / size[0])
    _show(axes[0, 0], colorize(source), f"label {source.shape[1]}×{source.shape[0]}")
    _show(axes[0, 1], colorize(nearest), f"nearest {size[0]}×{size[1]}")
    _show(axes[0, 2], colorize(blended), f"bilinear: {changed.mean():.1%} of pixels differ")
    _show(axes[0, 3], np.where(invented[..., None], 255, dimmed(colorize(nearest))).astype(np.uint8),
          f"invented classes: {invented.sum()} pixels")
    return fig


def normalises(transform: Any) -> bool:
    """Whether a v2 transform (or a ``Compose`` of them, nested) ends its images normalised."""
    from torchvision.transforms import v2

    if isinstance(transform, v2.Normalize):
        return True
    return isinstance(transform, v2.Compose) and any(normalises(t) for t in transform.transforms)


# --- Figure 5: training curves and predictions ------------------------------------------------------

#: What a learning curve can be drawn against: axis label and the history row's value.
CURVE_AXES = {"epoch": ("epoch", lambda row: row.get("epoch")),
              "minutes": ("minutes of training and validation",
                          lambda row: row["seconds"] / 60 if "seconds" in row else None),
              "images": ("training images seen", lambda row: row.get("images_seen"))}


def _series(rows: Sequence[Mapping[str, Any]], key: str, x: str = "epoch") -> tuple[list, list[float]]:
    """(x values, values) of the history rows that hold a finite ``key`` (and an ``x`` value)."""
    position = CURVE_AXES[x][1]
    points = [(position(row), row[key]) for row in rows
              if key in row and row[key] is not None and math.isfinite(row[key])
              and position(row) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _line(ax: Axes, rows: Sequence[Mapping[str, Any]], key: str, x: str, **style: Any) -> bool:
    """Plot ``key`` of the rows against ``x`` if any row holds it; markers when points are few.
    Returns whether a line was drawn."""
    where, values = _series(rows, key, x)
    if where:
        ax.plot(where, values, marker="o" if len(where) <= 30 else None, markersize=4, **style)
    return bool(where)


def _plot_history(axes: Sequence[Axes], histories: Mapping[str, Sequence[Mapping[str, Any]]],
                  keys: Sequence[str], x: str = "epoch") -> None:
    """One line per model and key, ``keys[k]`` on ``axes[k]``; beside ``train_loss`` the
    validation loss, dashed, for the runs that recorded it."""
    colours = _model_colours(list(histories))
    for ax, key in zip(axes, keys, strict=True):
        validation = False
        for name, rows in histories.items():
            if not _line(ax, rows, key, x, label=name, color=colours[name]):
                ax.plot([], [], label=name, color=colours[name])  # in the legend all the same
            if key == "train_loss":
                validation |= _line(ax, rows, "val_loss", x, label=f"{name}, validation",
                                    color=colours[name], linestyle="--")
        ax.set_xlabel(CURVE_AXES[x][0])
        ax.set_ylabel("loss" if validation else _METRIC_LABELS.get(key, key))
        if x == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))


_METRIC_LABELS = {"train_loss": "training loss", "val_loss": "validation loss",
                  "val_miou": "validation mIoU", "val_pixel_acc": "validation global acc",
                  "val_mean_acc": "validation mean acc"}


def training_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], *,
                    keys: Sequence[str] = ("train_loss", "val_miou"), x: str = "epoch") -> Figure:
    """Training loss and validation mIoU, one line per model, one axes per metric.

    Args:
        histories: model name -> ``state.history`` (or a checkpoint's ``"history"``).
        keys: the history columns to plot, one axes each. Beside ``train_loss`` the validation
            loss (``val_loss``) is drawn dashed in the model's colour, where the run recorded it.
        x: against what: ``epoch``, ``minutes`` (of training and validation) or ``images`` (seen
            in training). Models that train different numbers of epochs in one time budget
            compare fairly only against minutes or images.
    """
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.8), squeeze=False,
                             layout="constrained")
    _plot_history(axes[0], histories, keys, x)
    for ax in axes[0]:
        ax.legend(fontsize="small")
    return fig


def predictions_grid(images: Sequence, targets: Sequence, predictions: Mapping[str, Sequence], *,
                     names: Sequence[str] | None = None, scheme: str = "cityscapes19") -> Figure:
    """One row per sample: image, ground truth, then each model's prediction with its image mIoU.

    Args:
        images: uint8 pictures (H, W, 3) or (3, H, W), e.g. ``denormalize(x)`` of normalised ones.
        targets: class maps (H, W).
        predictions: model name -> one class map per image (e.g. ``segkit.inference.predict``).
        names: a title for each image (file names); default its position.
    """
    num_classes = len(class_names(scheme))
    images, targets = [as_rgb(x) for x in images], [as_labels(t) for t in targets]
    fig, axes = _picture_grid(len(images), 2 + len(predictions),
                              images[0].shape[0] / images[0].shape[1], extra=0.6)
    shown = list(targets)
    for row, (image, target) in enumerate(zip(images, targets, strict=True)):
        _show(axes[row, 0], image, short_name(names[row]) if names is not None else f"image {row}")
        _show(axes[row, 1], colorize(target, scheme), "ground truth")
        for col, (model, maps) in enumerate(predictions.items(), start=2):
            pred = as_labels(maps[row])
            miou, _ = image_scores(pred, target, num_classes)
            _show(axes[row, col], colorize(pred, scheme), f"{model} · mIoU {miou:.3f}")
            shown.append(pred)
    _class_legend(fig, shown, scheme)
    return fig


# --- dilation and ASPP ----------------------------------------------------------------------------------

def dilation_figure(model: torch.nn.Module, *, kernel: int = 3, dilations: Sequence[int] = (1, 2, 4),
                    grid: int = 41) -> Figure:
    """Where a dilated kernel reads: one panel per dilation, then ASPP's branches of ``model``
    (each 3 × 3 at its rate, the 1 × 1 at the centre; the image-pooling branch reads every pixel),
    on a ``grid`` × ``grid`` patch of the feature map. The weights are the same nine per kernel:
    dilation widens the view without adding parameters or pooling."""
    rates = aspp_rates(model)
    fig, axes = plt.subplots(1, len(dilations) + 1, figsize=(3.0 * (len(dilations) + 1), 3.3),
                             layout="constrained")
    for ax, dilation in zip(axes, dilations, strict=False):
        taps = dilated_taps(grid, kernel, dilation)
        ax.imshow(taps, cmap="Blues", vmin=0, vmax=1.3)
        extent = (kernel - 1) * dilation + 1
        ax.set_title(f"{kernel}×{kernel}, dilation {dilation}:\nreads a {extent}×{extent} window",
                     fontsize="medium")
    aspp = np.zeros((grid, grid))
    for level, rate in enumerate(sorted(rates, reverse=True), start=1):
        aspp = np.where(dilated_taps(grid, kernel, rate), level, aspp)
    aspp[grid // 2, grid // 2] = len(rates) + 1  # the 1 × 1 branch
    axes[-1].imshow(aspp, cmap="viridis", vmin=0, interpolation="nearest")
    axes[-1].set_title(f"ASPP at output stride {model.output_stride}:\nrates {', '.join(map(str, rates))} "
                       "+ 1×1 + image pooling", fontsize="medium")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    return fig


# --- evaluation figures --------------------------------------------------------------------------------

def normalize_confusion(mat: np.ndarray | torch.Tensor, normalize: str | None = "true") -> np.ndarray:
    """A confusion matrix ``mat[target, pred]`` (C, C) as float64, normalised.

    ``normalize``: "true" (each ground-truth row sums to 1: recall), "pred" (columns: precision),
    "all" (the whole matrix) or None (counts). Empty rows / columns become NaN.
    """
    mat = getattr(mat, "mat", mat)  # a segkit.metrics.ConfusionMatrix works too
    mat = np.asarray(mat.numpy(force=True) if isinstance(mat, torch.Tensor) else mat, dtype=np.float64)
    totals = {"true": lambda: mat.sum(1, keepdims=True), "pred": lambda: mat.sum(0, keepdims=True),
              "all": lambda: mat.sum(), None: lambda: 1.0}
    if normalize not in totals:
        raise ValueError(f"normalize={normalize!r}: choose 'true', 'pred', 'all' or None")
    with np.errstate(invalid="ignore", divide="ignore"):
        return mat / totals[normalize]()


def confusion_matrix(mat: np.ndarray | torch.Tensor, class_names: Sequence[str] = CLASS_NAMES, *,
                     normalize: str | None = "true") -> Figure:
    """A heatmap of ``mat[target, pred]`` (C, C), row-normalised by default (recall per class).

    Cells of at least 1 % are annotated in percent; classes absent from the ground truth are blank.
    """
    values = normalize_confusion(mat, normalize)
    names = list(class_names)
    if len(names) != len(values):
        raise ValueError(f"{len(names)} class names for a {len(values)}-class matrix")
    scale = 100 if normalize else 1
    annot = np.where(values >= 0.01, np.char.mod("%.0f", np.nan_to_num(values * scale)), "")
    fig, ax = plt.subplots(figsize=(0.45 * len(names) + 3, 0.42 * len(names) + 1.5),
                           layout="constrained")
    sns.heatmap(values * scale, ax=ax, cmap="Blues", vmin=0, vmax=scale if normalize else None,
                square=True, annot=annot, fmt="", annot_kws={"fontsize": 6},
                xticklabels=names, yticklabels=names, linewidths=0.3, linecolor="0.9",
                cbar_kws={"label": "%" if normalize else "pixels", "shrink": 0.7})
    ax.grid(False)  # the theme's grid would cross the blank (NaN) rows
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title({"true": "recall: each ground-truth row sums to 100 %",
                  "pred": "precision: each predicted column sums to 100 %",
                  "all": "share of all pixels", None: "pixel counts"}[normalize], fontsize="medium")
    return fig


def per_class_iou(ious: Mapping[str, Sequence[float] | torch.Tensor],
                  class_names: Sequence[str] = CLASS_NAMES) -> Figure:
    """Grouped bars of per-class IoU, one colour per model; NaN (class absent) gets no bar.

    Args:
        ious: model name -> C IoUs in [0, 1] (``ConfusionMatrix.compute()["iou"]`` or a history
            row's ``val_iou``).
        class_names: the C class names; default the 19 Cityscapes classes.
    """
    names = list(class_names)
    data: dict[str, list] = {"class": [], "IoU": [], "model": []}
    legend = {}  # model -> its legend entry, with its mIoU
    for model, values in ious.items():
        values = [float(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
        finite = [v for v in values if math.isfinite(v)]
        legend[model] = f"{model} (mIoU {np.mean(finite):.3f})" if finite else model
        for name, value in zip(names, values, strict=True):
            if math.isfinite(value):
                data["class"].append(name)
                data["IoU"].append(value)
                data["model"].append(legend[model])
    fig, ax = plt.subplots(figsize=(max(10, 0.35 * len(names) * max(len(ious), 1) + 2), 4),
                           layout="constrained")
    sns.barplot(data=data, x="class", y="IoU", hue="model", order=names, hue_order=list(legend.values()),
                palette=dict(zip(legend.values(), _model_colours(list(ious)).values(), strict=True)),
                errorbar=None, ax=ax)
    ax.set_ylim(0, 1)
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelrotation=45)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.legend(title="no bar: class absent (IoU undefined)", fontsize="small", title_fontsize="small")
    return fig


# --- live training plot -----------------------------------------------------------------------------

def live_figure(figsize: tuple[float, float] = (10, 4)) -> Figure:
    """An empty two-panel figure for ``draw_live``; made without pyplot, so the inline backend does
    not show it again at the end of the cell."""
    fig = Figure(figsize=figsize, layout="constrained")
    fig.subplots(1, 2)
    return fig


def draw_live(fig: Figure, history: Sequence[Mapping[str, Any]], *, epochs: int | None = None,
              budget: float | None = None) -> None:
    """Redraw ``fig`` (from ``live_figure``) from a run's history rows: training and validation
    loss left, validation mIoU and global acc right.

    Both panels run against minutes of training and validation (``row["seconds"]``), with the
    training images seen (``row["images_seen"]``) on a second axis on top: in a time budget what
    counts is how far the time went, and epochs hide that. One point per epoch, where it ended; the
    validation lines have points only for validated epochs, and a run without validation draws
    none. Titled with the epoch reached, of ``epochs`` if given, and for a time-budget run the time
    spent of ``budget`` (seconds).
    """
    loss_ax, score_ax = fig.axes
    panels = {loss_ax: (("train_loss", "training", "C0"), ("val_loss", "validation", "C1")),
              score_ax: (("val_miou", "mIoU", "C2"), ("val_pixel_acc", "global acc", "C4"))}
    for ax, lines in panels.items():
        ax.clear()  # also removes the images axis of the last drawing
        drawn = [_line(ax, history, key, "minutes", label=label, color=colour)
                 for key, label, colour in lines]
        ax.set_xlabel(CURVE_AXES["minutes"][0])
        _images_axis(ax, history)
        if any(drawn):
            ax.legend(fontsize="small")
    loss_ax.set_ylabel("loss")
    score_ax.set(ylabel="validation", ylim=(0, 1))
    fig.suptitle(_live_title(history, epochs, budget), fontsize="medium")


def _images_axis(ax: Axes, history: Sequence[Mapping[str, Any]]) -> None:
    """A second x-axis on top of ``ax`` (minutes): training images seen, through the rows' points
    (minutes, images) from (0, 0); none before a row has both."""
    points = [(0.0, 0)]
    for row in history:
        if "seconds" in row and "images_seen" in row:
            minutes, images = row["seconds"] / 60, row["images_seen"]
            if minutes > points[-1][0] and images > points[-1][1]:  # np.interp needs increasing points
                points.append((minutes, images))
    if len(points) < 2:
        return
    minutes, images = (np.array(values, dtype=np.float64) for values in zip(*points, strict=True))
    top = ax.secondary_xaxis("top", functions=(_through(minutes, images), _through(images, minutes)))
    top.set_xlabel(CURVE_AXES["images"][0])


def _through(xs: np.ndarray, ys: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The broken line through the points (xs, ys), both increasing (K,), continued beyond the
    ends along the end segments: a secondary axis needs a mapping that inverts exactly over the
    whole view, margins included, where ``np.interp`` alone would stay flat."""

    def line(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        before = ys[0] + (x - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0])
        after = ys[-1] + (x - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return np.where(x < xs[0], before, np.where(x > xs[-1], after, np.interp(x, xs, ys)))

    return line


def _live_title(history: Sequence[Mapping[str, Any]], epochs: int | None, budget: float | None) -> str:
    """``"epoch 3/10"``, or ``"epoch 3 · 2.5 min of the 3.5 min budget"``."""
    last = history[-1] if history else {}
    title = f"epoch {last.get('epoch', 0)}" + (f"/{epochs}" if epochs else "")
    if budget is not None:
        title += f" · {format_duration(last.get('seconds', 0.0))} of the {format_duration(budget)} budget"
    return title


# --- architecture diagrams ----------------------------------------------------------------------------

_MERGE_MARKS = {"concat": "C", "add": "+"}


def _box_height(channels: int, widest: int) -> float:
    """Box height in level units: 0.3 for one channel up to 0.75 for the widest stage (log scale)."""
    return 0.3 + 0.45 * math.log2(channels + 1) / math.log2(widest + 1)


def _upsampling_factor(stage: Stage, source: Stage | None, input_height: int) -> int:
    """How many times the map from ``source`` (None: the input) is enlarged per side into ``stage``."""
    return round(stage.shape[1] / (source.shape[1] if source is not None else input_height))


def _draw_edge(ax: Axes, start: FancyBboxPatch, end: FancyBboxPatch, *, skip: bool, label: str) -> None:
    """An arrow from box to box: straight and solid for the main flow, a red dashed arc for a skip."""
    (x0, y0), (x1, y1) = _centre(start), _centre(end)
    bend = -0.9 / math.dist((x0, y0), (x1, y1)) if skip else 0.0  # the same rise for long and short
    ax.add_patch(FancyArrowPatch(patchA=start, patchB=end, posA=(x0, y0), posB=(x1, y1),
                                 arrowstyle="-|>", mutation_scale=12, shrinkA=1, shrinkB=1,
                                 connectionstyle=f"arc3,rad={bend:.3f}", linewidth=1.3,
                                 linestyle="--" if skip else "-", color="C3" if skip else "0.25",
                                 zorder=1))
    if label:
        ax.annotate(label, ((x0 + x1) / 2, (y0 + y1) / 2), xytext=(5, 0), textcoords="offset points",
                    fontsize=7.5, color="C0", va="center")


def _centre(box: FancyBboxPatch) -> tuple[float, float]:
    return box.get_x() + box.get_width() / 2, box.get_y() + box.get_height() / 2


def _draw_box(ax: Axes, centre: tuple[float, float], height: float, colour: Any, gid: str,
              title: str, shape: tuple[int, ...]) -> FancyBboxPatch:
    """A stage's box with its name and C×H×W; returns the box."""
    x, y = centre
    box = FancyBboxPatch((x - 0.4, y - height / 2), 0.8, height, gid=gid, facecolor=colour,
                         edgecolor="0.3", boxstyle="round,pad=0.02", zorder=2)
    ax.add_patch(box)
    ax.text(x, y, f"{title}\n{'×'.join(map(str, shape))}", ha="center", va="center", fontsize=7.5,
            zorder=3)
    return box


def _mark_merge(ax: Axes, box: FancyBboxPatch, kind: str, stage: str) -> None:
    """The "C" (concatenation) or "+" (addition) mark on a box's upper left corner."""
    ax.text(box.get_x(), box.get_y() + box.get_height(), _MERGE_MARKS[kind], gid=f"{kind}:{stage}",
            ha="center", va="center", fontsize=8, fontweight="bold", zorder=4,
            bbox={"boxstyle": "circle,pad=0.15", "facecolor": "white", "edgecolor": "C3"})


def architecture(model: torch.nn.Module, input_size: tuple[int, int]) -> Figure:
    """The model drawn from its own stages (``segkit.models.anatomy.stage_graph``), U-shaped.

    x is the order in which ``forward`` runs the stages, y the resolution level (halvings of the
    (H, W) = ``input_size`` input, finest on top); each box gives a stage's name and output
    C×H×W, and grows with its channels. Solid arrows are the main flow, red dashed arcs the skip
    connections (edges jumping over stages); "C" / "+" mark the stages whose sources are
    concatenated / added, "↑×k" the main-flow edges whose map is upsampled k times per side. The
    title gives the parameter count.
    """
    stages = stage_graph(model, input_size)
    widest = max(s.shape[0] for s in stages)
    levels = max(s.level for s in stages)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.05 * (len(stages) + 1)), 1.1 * levels + 2.0),
                           layout="constrained")
    colours = sns.color_palette("crest", n_colors=levels + 1)
    boxes = {INPUT: _draw_box(ax, (0, 0), _box_height(3, widest), "white", INPUT, INPUT,
                              (3, *input_size))}
    for x, stage in enumerate(stages, start=1):
        boxes[stage.name] = _draw_box(ax, (x, -stage.level), _box_height(stage.shape[0], widest),
                                      colours[stage.level], f"stage:{stage.name}", stage.name, stage.shape)
    by_name = {s.name: s for s in stages}
    skips = set(skip_connections(stages))
    for stage in stages:
        upsampled = {source for join in stage.joins if join.kind == "upsample" for source in join.sources}
        for source in stage.sources:
            skip = (source, stage.name) in skips
            factor = _upsampling_factor(stage, by_name.get(source), input_size[0])
            label = f"↑×{factor}" if source in upsampled and factor > 1 and not skip else ""
            _draw_edge(ax, boxes[source], boxes[stage.name], skip=skip, label=label)
        if stage.merges:
            _mark_merge(ax, boxes[stage.name], stage.merges[0].kind, stage.name)
    ax.set(xlim=(-0.6, len(stages) + 0.6), ylim=(-levels - 0.6, 0.8), xticks=[],
           yticks=[-level for level in range(levels + 1)],
           yticklabels=["H×W" if level == 0 else f"H/{2 ** level}" for level in range(levels + 1)])
    ax.set_xlabel("forward order →   (C: concatenation, +: addition, red dashed: skip connection, "
                  "↑×k: upsampling)", fontsize="small")
    ax.grid(False)
    ax.spines[:].set_visible(False)
    name = getattr(model, "segkit_name", type(model).__name__)
    parameters = sum(p.numel() for p in model.parameters())
    ax.set_title(f"{name}: {parameters / 1e6:.2f} M parameters, input 3×{input_size[0]}×{input_size[1]}",
                 fontsize="medium")
    return fig


# --- synthetic streets against real ones --------------------------------------------------------

def realism(measured: Any, real: Mapping[str, Any] | None = None) -> Figure:
    """Synthetic frames' realism measures beside real Cityscapes figures, in three panels.

    ``measured`` is a ``segkit.synthetic.realism.Realism`` (or its ``dataclasses.asdict``, as
    ``segkit bench synth --json`` prints it); ``real`` defaults to ``realism.REAL``. Left: grain,
    flat areas, saturation and RGB spread as synthetic / real (1: the middle of the real range,
    grey: the real range, green: the realism thresholds' band). Middle: each class's mean colour, synthetic
    beside real. Right: objects per frame, synthetic beside real, with median sizes in pixels.
    """
    import dataclasses

    from segkit.synthetic.realism import DONE, REAL

    real = REAL if real is None else real
    ours = measured if isinstance(measured, Mapping) else dataclasses.asdict(measured)
    fig, (pixels, colours, objects) = plt.subplots(
        1, 3, figsize=(14, 4.2), layout="constrained", gridspec_kw={"width_ratios": [1.3, 0.9, 1.1]})
    tol, factor = DONE["colour_tolerance"], DONE["factor"]
    rows = [("grain\n(Laplacian variance)", "laplacian_var", "{:.0f}", (1 / factor, factor)),
            ("flat 3x3 areas\n(std < 0.5)", "flat_share", "{:.1%}", (1 / factor, factor)),
            ("mean saturation", "saturation", "{:.0f}", (1 - tol, 1 + tol)),
            ("std of RGB", "rgb_std", "{:.0f}", None)]
    for y, (_, key, fmt, band) in enumerate(rows):
        low, high = real[key]
        middle = (low + high) / 2
        if band is not None:
            pixels.barh(y, (high * band[1] - low * band[0]) / middle, left=low * band[0] / middle,
                        height=0.8, color="tab:green", alpha=0.15)
        pixels.barh(y, max(high - low, 0.01 * middle) / middle, left=low / middle, height=0.8,
                    color="0.6", alpha=0.5)
        pixels.plot(ours[key] / middle, y, "o", color="tab:blue", markersize=9)
        span = fmt.format(low) if low == high else f"{fmt.format(low)}–{fmt.format(high)}"
        pixels.annotate(f"{fmt.format(ours[key])} (real {span})", (ours[key] / middle, y),
                        xytext=(0, 11), textcoords="offset points", ha="center", fontsize="small")
    ratios = [ours[key] / (sum(real[key]) / 2) for _, key, _, _ in rows]
    low_power = min(-2, math.floor(math.log2(max(min(ratios), 1e-3)) - 0.5))
    high_power = max(3, math.ceil(math.log2(max(ratios)) + 0.5))
    pixels.set_xscale("log", base=2)
    pixels.set_xlim(2.0**low_power, 2.0**high_power)
    powers = range(low_power, high_power + 1, 1 if high_power - low_power <= 6 else 2)
    pixels.set_xticks([2.0**p for p in powers],
                      [f"{2**p:g}" if p >= 0 else f"1/{2**-p}" for p in powers])
    pixels.xaxis.set_minor_locator(plt.NullLocator())
    pixels.set_yticks(range(len(rows)), [r[0] for r in rows])
    pixels.set_ylim(len(rows) - 0.4, -0.6)
    pixels.axvline(1, color="0.3", linewidth=0.8)
    pixels.set(xlabel="synthetic / real", title="pixels")
    names = list(real["colour"])
    swatches = np.array([[ours["colour"][n], real["colour"][n]] for n in names]) / 255
    colours.imshow(np.clip(swatches, 0, 1), aspect="auto")
    for y, name in enumerate(names):
        for x, rgb in enumerate((ours["colour"][name], real["colour"][name])):
            colours.text(x, y, ",".join(f"{c:.0f}" for c in rgb), ha="center", va="center",
                         fontsize="small", color="white" if np.mean(rgb) < 120 else "black")
    colours.set_xticks([0, 1], ["synthetic", "real"])
    colours.set_yticks(range(len(names)), names)
    colours.grid(False)
    colours.set_title("mean colour (RGB)")
    kinds = list(real["objects"])
    y = np.arange(len(kinds))
    counts = [ours["objects"][k][0] for k in kinds]
    objects.barh(y - 0.2, counts, height=0.4, color="tab:blue", label="synthetic")
    objects.barh(y + 0.2, [real["objects"][k][0] for k in kinds], height=0.4, color="0.6",
                 label="real")
    for k, kind in enumerate(kinds):
        size, real_size = ours["objects"][kind][1], real["objects"][kind][1]
        objects.annotate(f"median {size:.0f} px" + (f" (real {real_size:.0f})" if real_size else ""),
                         (counts[k], k - 0.2), xytext=(4, 0), textcoords="offset points",
                         va="center", fontsize="small")
    objects.set_yticks(y, kinds)
    objects.invert_yaxis()
    objects.set_xlim(0, 1.6 * max(counts + [v[0] for v in real["objects"].values()]))
    objects.set(xlabel="pieces per frame", title="objects")
    objects.legend(fontsize="small", loc="lower right")
    fig.suptitle(f"synthetic frames beside real Cityscapes ({real['source']})", fontsize="medium")
    return fig


# --- the labs: one batch overfitted, the learning-rate range test, a step's memory ---------------

def figure_png(fig: Figure) -> bytes:
    """A figure as PNG bytes (for an ``ipywidgets.Image``): drawn by Agg, compressed lightly, as
    a lab redraws on every slider move."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return to_png(np.asarray(canvas.buffer_rgba())[..., :3])


def loss_figure(figsize: tuple[float, float] = (6, 3.2)) -> Figure:
    """An empty one-panel figure for ``draw_step_losses``, made without pyplot (as ``live_figure``)."""
    fig = Figure(figsize=figsize, layout="constrained")
    fig.subplots()
    return fig


def draw_step_losses(fig: Figure, losses: Sequence[float], steps: int | None = None) -> None:
    """Redraw ``fig`` (from ``loss_figure``): the loss of every step so far, of ``steps`` planned."""
    ax = fig.axes[0]
    ax.clear()
    ax.plot(range(1, len(losses) + 1), losses, color="C0", marker="o" if len(losses) <= 30 else None,
            markersize=3)
    ax.set(xlabel="step", ylabel="training loss (one batch)", xlim=(0.5, (steps or len(losses)) + 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"step {len(losses)}" + (f"/{steps}" if steps else "")
                 + (f": loss {losses[-1]:.3f}" if losses else ""), fontsize="medium")


def lr_range_figure(lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float], *,
                    suggested: float, rule: str, config_lr: float,
                    course: tuple[Sequence[float], Sequence[float], str]) -> Figure:
    """The learning-rate range test beside the learning rate the run will follow.

    Left: the loss of each step of the sweep (faint) and its smoothed curve against the learning
    rate (log axis), the suggested rate (``rule`` says how it was found) and ``config_lr`` marked.
    Right: ``course`` = (x, learning rate, x label): the config's rate through warm-up and schedule
    over the run.
    """
    fig, (sweep_ax, course_ax) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    sweep_ax.plot(lrs, losses, color="0.75", linewidth=1, label="loss of each step")
    sweep_ax.plot(lrs, smoothed, color="C0", label="smoothed")
    sweep_ax.axvline(suggested, color="C2", linestyle="--", label=f"suggested {suggested:.1e} ({rule})")
    sweep_ax.axvline(config_lr, color="C3", linestyle=":", label=f"the config's lr {config_lr:.1e}")
    sweep_ax.set(xscale="log", xlabel="learning rate", ylabel="training loss",
                 title="range test: one step per rate")
    # from the lowest loss to a little above the smoothed curve before its minimum: the blow-up
    # after it may be many times larger and would flatten everything else
    low = min(*losses, *smoothed)
    high = max(smoothed[: int(np.argmin(smoothed)) + 1])
    sweep_ax.set_ylim(low - 0.05 * (high - low), high + 0.15 * (high - low))
    sweep_ax.legend(fontsize="small")
    x, course_lrs, xlabel = course
    course_ax.plot(x, course_lrs, color="C3", label=f"the config's lr {config_lr:.1e} x schedule")
    course_ax.set(xlabel=xlabel, ylabel="learning rate", title="the run's learning rate",
                  ylim=(0, 1.1 * max(course_lrs)))
    course_ax.legend(fontsize="small")
    return fig


#: The parts of a training step's peak memory, bottom to top, with their colours.
MEMORY_PARTS = {"weights": "C0", "gradients": "C1", "optimizer state": "C2",
                "activations and temporaries": "C4", "CUDA context and workspace": "0.6"}


def memory_bar(parts: Mapping[str, float], *, gpu_gib: float, margin: float, title: str) -> Figure:
    """One stacked horizontal bar of a step's memory (GiB, ``MEMORY_PARTS`` order) against the card.

    Lines mark the card's size and the part of it usable with ``margin`` kept free. Made without
    pyplot: it is drawn into a widget, not shown by the inline backend.
    """
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.subplots()
    left = 0.0
    for name, colour in MEMORY_PARTS.items():
        ax.barh(0, parts[name], left=left, color=colour, label=f"{name} {parts[name]:.2f} GiB")
        left += parts[name]
    ax.axvline(gpu_gib, color="black", label=f"the card, {gpu_gib:g} GiB")
    ax.axvline(gpu_gib * (1 - margin), color="black", linestyle="--",
               label=f"usable, {margin:.0%} kept free")
    ax.set(xlim=(0, 1.08 * max(left, gpu_gib)), yticks=[], xlabel="GiB", title=title)
    fig.legend(fontsize="small", ncol=3, loc="outside lower center", frameon=False)
    return fig
