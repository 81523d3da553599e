"""A confusion matrix you can click: which frames, and which pixels, make each cell.

The matrix ``mat[true, predicted]`` of a set of frames is drawn as a grid of buttons over the
classes present in ground truth or prediction (rows: ground truth, columns: prediction), each
shaded by its share of the row, the recall reading. Clicking the cell (t, p) shows the frames with
the most pixels of true t predicted p, those pixels in a bright colour over the dimmed image
(magenta for a confusion, green on the diagonal, where the pixels are right), beside ground truth
and prediction, and a caption that reads the cell: the row sums to the ground-truth pixels of t
(recall = diagonal / row), the column to the pixels predicted p (precision = diagonal / column),
and IoU(t) = diagonal / (row + column − diagonal). Every count comes from
``segkit.metrics.ConfusionMatrix``, one per frame; their sum is the whole matrix.

DOM classes, for browser tests: ``segkit-confusion-explorer`` (the whole lab),
``segkit-confusion-cell`` on every cell and ``segkit-confusion-cell-T-P`` on the cell of true
class index T and predicted class index P, ``segkit-confusion-selected`` on the cell shown,
``segkit-confusion-caption`` (the reading) and ``segkit-confusion-picture`` (the frames).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch

from segkit import labels
from segkit.metrics import ConfusionMatrix, tp_fp_fn
from segkit.pictures import dimmed
from segkit.widgets import (
    GAP,
    _as_inputs,
    _as_maps,
    _Browser,
    _score,
    compose,
    predict_samples,
    sample_names,
    to_png,
)

TOP_FRAMES = 3  # frames shown for a clicked cell
CONFUSED = np.array([255, 0, 255], dtype=np.uint8)  # magenta: true t predicted p, t != p
CORRECT = np.array([0, 255, 0], dtype=np.uint8)  # green: the diagonal, pixels predicted right
LIGHT, DARK = np.array([247, 251, 255]), np.array([8, 48, 107])  # ends of matplotlib's "Blues"


def per_frame_confusion(targets: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                        num_classes: int = labels.NUM_CLASSES) -> list[ConfusionMatrix]:
    """One ``ConfusionMatrix`` (C, C) per frame, void dropped.

    Args:
        targets, predictions: N class maps (H, W) each, pairwise of one size.
    """
    frames = []
    for target, pred in zip(targets, predictions, strict=True):
        confusion = ConfusionMatrix(num_classes, device="cpu")
        confusion.update(torch.as_tensor(pred), torch.as_tensor(target))
        frames.append(confusion)
    return frames


def top_frames(frame_mats: torch.Tensor, true: int, predicted: int,
               count: int = TOP_FRAMES) -> list[tuple[int, int]]:
    """(frame, pixels) of the ``count`` frames with the most pixels of ``true`` predicted
    ``predicted``, most first, ties by frame index; frames without such a pixel are left out.

    Args:
        frame_mats: (N, C, C) per-frame confusion counts, as ``per_frame_confusion``.
    """
    pixels = frame_mats[:, true, predicted].tolist()
    ranked = sorted(range(len(pixels)), key=lambda i: (-pixels[i], i))
    return [(i, pixels[i]) for i in ranked[:count] if pixels[i] > 0]


def cell_mask(target: np.ndarray, pred: np.ndarray, true: int, predicted: int) -> np.ndarray:
    """(H, W) bool: the pixels of ground truth ``true`` predicted ``predicted``."""
    return (target == true) & (pred == predicted)


def read_cell(confusion: ConfusionMatrix, true: int, predicted: int) -> dict[str, Any]:
    """The numbers that explain cell (true, predicted) of a confusion matrix.

    Returns:
        ``pixels`` (the cell); for ``true``: ``row`` (its ground-truth pixels), ``diagonal_true``,
        ``column_true``, ``recall`` and ``iou_true``; for ``predicted``: ``column`` (its predicted
        pixels), ``diagonal_pred``, ``row_pred``, ``precision`` and ``iou_pred``. Recall and IoU are
        ``confusion.compute()``'s; precision is TP / (TP + FP) from ``tp_fp_fn``. 0 / 0 is NaN.
    """
    result = confusion.compute()
    tp, fp, fn = (counts.tolist() for counts in tp_fp_fn(confusion.mat))
    column = tp[predicted] + fp[predicted]
    return {"pixels": int(confusion.mat[true, predicted]),
            "row": tp[true] + fn[true], "diagonal_true": tp[true], "column_true": tp[true] + fp[true],
            "recall": result["acc"][true].item(), "iou_true": result["iou"][true].item(),
            "column": column, "diagonal_pred": tp[predicted], "row_pred": tp[predicted] + fn[predicted],
            "precision": tp[predicted] / column if column else math.nan,
            "iou_pred": result["iou"][predicted].item()}


def highlighted(image: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``mask`` (H, W) in ``colour`` over the dimmed image (H, W, 3): (H, W, 3) uint8."""
    return np.where(mask[..., None], colour, dimmed(image)).round().astype(np.uint8)


def stack(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Pictures (H_k, W_k, 3) one above the other, ``GAP`` apart, left-aligned on white."""
    width = max(row.shape[1] for row in rows)
    height = sum(row.shape[0] for row in rows) + GAP * (len(rows) - 1)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    y = 0
    for row in rows:
        canvas[y:y + row.shape[0], :row.shape[1]] = row
        y += row.shape[0] + GAP
    return canvas


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f} %"


def _shade(share: float) -> tuple[str, str]:
    """(background, text) colours of a cell holding ``share`` of its row; grey where undefined."""
    if math.isnan(share):
        return "#e0e0e0", "#555555"
    rgb = np.round(LIGHT + share * (DARK - LIGHT)).astype(int)
    return "#{:02x}{:02x}{:02x}".format(*rgb), "#ffffff" if share > 0.5 else "#000000"


def _cell_text(pixels: int, share: float) -> str:
    if math.isnan(share):
        return "–"
    if pixels == 0:
        return "·"
    return "<1%" if share < 0.005 else f"{100 * share:.0f}%"


class ConfusionExplorer(_Browser):
    """Click a cell of the confusion matrix to see the frames and pixels behind it, and read it.

    Args:
        images: uint8 pictures, (H, W, 3) arrays or (3, H, W) tensors.
        targets: ground-truth class maps (H, W).
        predictions: predicted class maps (H, W), one per image.
        names: a name per image, for the panel titles.
        scheme: label scheme of the maps, for class names and colours.

    Controls: ``cells`` ((true, predicted) class indices -> Button; a click selects it), ``select``
    to do the same from code. ``image`` shows the top frames, ``text`` the reading of the cell.
    Attributes: ``confusion`` (the whole ``ConfusionMatrix``), ``frame_mats`` (N, C, C), ``classes``
    (the class indices shown), ``selected`` ((true, predicted)).
    """

    def __init__(self, images: Sequence, targets: Sequence, predictions: Sequence, *,
                 names: Sequence[str] | None = None, scheme: str = "cityscapes19"):
        super().__init__()
        self.images, self.targets, self.names = _as_inputs(images, targets, names)
        self.predictions = _as_maps(predictions, self.targets, "predictions")
        self.scheme = scheme
        self.class_names = labels.class_names(scheme)
        frames = per_frame_confusion(self.targets, self.predictions, len(self.class_names))
        self.frame_mats = torch.stack([frame.mat for frame in frames])  # (N, C, C)
        self.confusion = ConfusionMatrix(len(self.class_names), device="cpu")
        for frame in frames:
            self.confusion += frame
        mat = self.confusion.mat
        self.classes = [k for k in range(len(self.class_names)) if mat[k].sum() + mat[:, k].sum() > 0]
        if not self.classes:
            raise ValueError("no labelled pixel: every ground-truth pixel is void")
        self._cell_layout = widgets.Layout(width="46px", height="26px", padding="0", margin="0")  # shared
        self.cells = {(t, p): self._cell(t, p) for t in self.classes for p in self.classes}
        self.image.add_class("segkit-confusion-picture")
        self.text.add_class("segkit-confusion-caption")
        self.widget = widgets.VBox([self._grid(), self.text, self.image])
        self.widget.add_class("segkit-confusion-explorer")
        self.selected = self._first_cell()
        self.select(*self.selected)

    # --- the matrix -------------------------------------------------------------------------------

    def _cell(self, true: int, predicted: int) -> widgets.Button:
        """The button of cell (true, predicted): its row share as text and shade, a tooltip."""
        mat = self.confusion.mat
        pixels, row = int(mat[true, predicted]), int(mat[true].sum())
        share = pixels / row if row else math.nan
        background, ink = _shade(share)
        t_name, p_name = self.class_names[true], self.class_names[predicted]
        tooltip = (f"true {t_name} → predicted {p_name}: {_percent(share)} of {t_name} pixels "
                   f"({pixels:,} px)" if row else f"no {t_name} pixel in the ground truth")
        button = widgets.Button(description=_cell_text(pixels, share), tooltip=tooltip,
                                layout=self._cell_layout,
                                style={"button_color": background, "text_color": ink, "font_size": "11px"})
        button.add_class("segkit-confusion-cell")
        button.add_class(f"segkit-confusion-cell-{true}-{predicted}")
        button.on_click(lambda _button: self.select(true, predicted))
        return button

    def _header(self, k: int, vertical: bool) -> widgets.HTML:
        colour = "rgb({},{},{})".format(*labels.palette(self.scheme)[k])
        style = "writing-mode:vertical-rl;transform:rotate(180deg);" if vertical else "text-align:right;"
        return widgets.HTML(f"<div style='{style}white-space:nowrap;font-size:11px'>"
                            f"<span style='display:inline-block;width:0.8em;height:0.8em;"
                            f"background:{colour};border:1px solid #555'></span> "
                            f"{html.escape(self.class_names[k])}</div>")

    def _grid(self) -> widgets.VBox:
        """Headers and cells: rows are ground truth, columns prediction."""
        children = [widgets.HTML("<i>true ↓ · predicted →</i>")]
        children += [self._header(p, vertical=True) for p in self.classes]
        for t in self.classes:
            children += [self._header(t, vertical=False)] + [self.cells[(t, p)] for p in self.classes]
        grid = widgets.GridBox(children, layout=widgets.Layout(
            grid_template_columns=f"max-content repeat({len(self.classes)}, 46px)", grid_gap="1px"))
        note = widgets.HTML("Each row is one ground-truth class; a cell's shade and number are its "
                            "share of the row (recall reading). Click a cell.")
        return widgets.VBox([note, grid])

    def _first_cell(self) -> tuple[int, int]:
        """The largest confusion (off the diagonal), or the largest diagonal cell if there is none."""
        mat = self.confusion.mat.clone()
        if (mat - torch.diag(mat.diagonal())).any():
            mat.fill_diagonal_(-1)
        index = int(mat.argmax())
        return divmod(index, mat.shape[1])

    # --- a cell -----------------------------------------------------------------------------------

    def select(self, true: int, predicted: int) -> None:
        """Show cell (true, predicted): its top frames and its reading."""
        if (true, predicted) not in self.cells:
            raise KeyError(f"cell ({true}, {predicted}) is not shown; classes: {self.classes}")
        self.cells[self.selected].remove_class("segkit-confusion-selected")
        self.cells[self.selected].style.font_weight = "normal"
        self.selected = (true, predicted)
        self.cells[self.selected].add_class("segkit-confusion-selected")
        self.cells[self.selected].style.font_weight = "bold"
        self.render()

    def frames(self) -> list[tuple[int, int]]:
        """(frame, pixels) of the frames shown for the selected cell, as ``top_frames``."""
        return top_frames(self.frame_mats, *self.selected)

    def render(self) -> None:
        """Redraw the picture and the caption for the selected cell."""
        frames = self.frames()
        rows = [self._frame_row(i, pixels) for i, pixels in frames]
        if not rows:
            rows = [compose([("no such pixel in any frame", np.full((32, 256, 3), 255, dtype=np.uint8))])]
        self.image.value = to_png(stack(rows))
        self.text.value = self._caption(frames)

    def _frame_row(self, index: int, pixels: int) -> np.ndarray:
        """Frame ``index`` with the selected cell's pixels highlighted, its ground truth, its prediction."""
        true, predicted = self.selected
        mask = cell_mask(self.targets[index], self.predictions[index], true, predicted)
        colour = CORRECT if true == predicted else CONFUSED
        return compose([(f"frame {index}: {pixels:,} px", highlighted(self.images[index], mask, colour)),
                        ("ground truth", labels.colorize(self.targets[index], self.scheme)),
                        ("prediction", labels.colorize(self.predictions[index], self.scheme))])

    def _frame_name(self, index: int) -> str:
        name = "" if self.names is None else f" <code>{html.escape(self.names[index])}</code>"
        return f"frame {index}{name}"

    def _caption(self, frames: list[tuple[int, int]]) -> str:
        true, predicted = self.selected
        reading = read_cell(self.confusion, true, predicted)
        t_name, p_name = (html.escape(self.class_names[k]) for k in self.selected)
        in_frames = int((self.frame_mats[:, true, predicted] > 0).sum())
        head = (f"<b>true {t_name} → predicted {p_name}</b>: {reading['pixels']:,} px in {in_frames} of "
                f"{len(self.images)} frames; shown: " +
                (", ".join(f"{self._frame_name(i)} ({n:,} px)" for i, n in frames) or "none"))
        if true == predicted:
            meaning = (f"The diagonal: {t_name} pixels predicted {t_name}, the true positives, "
                       "numerator of every score below.")
        else:
            row_share = _share(reading["pixels"], reading["row"])
            column_share = _share(reading["pixels"], reading["column"])
            meaning = (f"These pixels are false negatives of {t_name} ({row_share} of its row) and "
                       f"false positives of {p_name} ({column_share} of its column).")
        lines = [_recall_line(t_name, reading), _precision_line(p_name, reading),
                 _iou_line(t_name, reading["diagonal_true"], reading["row"], reading["column_true"],
                           reading["iou_true"])]
        if true != predicted:
            lines.append(_iou_line(p_name, reading["diagonal_pred"], reading["row_pred"], reading["column"],
                                   reading["iou_pred"]))
        return f"{head}<br>{meaning}<ul>{''.join(f'<li>{line}</li>' for line in lines)}</ul>"

    @classmethod
    def from_model(cls, model: torch.nn.Module, dataset, count: int | None = None, *, batch_size: int = 4,
                   device: torch.device | str | None = None) -> ConfusionExplorer:
        """Predict the first ``count`` samples of ``dataset`` with ``model`` and explore their matrix.

        ``dataset`` yields (normalised float image (3, H, W), mask (H, W)), as for
        ``segkit.widgets.MaskBrowser.from_model`` (``predict_samples`` does the predicting).
        """
        images, targets, predictions = predict_samples(model, dataset, count=count,
                                                       batch_size=batch_size, device=device)
        return cls(images, targets, predictions, names=sample_names(dataset, len(images)),
                   scheme=getattr(dataset, "label_scheme", "cityscapes19"))


def _share(part: int, whole: int) -> str:
    return _percent(part / whole if whole else math.nan)


def _recall_line(name: str, reading: dict[str, Any]) -> str:
    return (f"row {name} sums to the {reading['row']:,} ground-truth pixels of {name}: recall({name}) "
            f"= diagonal / row = {reading['diagonal_true']:,} / {reading['row']:,} = "
            f"{_score(reading['recall'])}")


def _precision_line(name: str, reading: dict[str, Any]) -> str:
    return (f"column {name} sums to the {reading['column']:,} pixels predicted {name}: precision({name}) "
            f"= diagonal / column = {reading['diagonal_pred']:,} / {reading['column']:,} = "
            f"{_score(reading['precision'])}")


def _iou_line(name: str, diagonal: int, row: int, column: int, iou: float) -> str:
    return (f"IoU({name}) = diagonal / (row + column − diagonal) = {diagonal:,} / ({row:,} + {column:,} "
            f"− {diagonal:,}) = {_score(iou)}")
