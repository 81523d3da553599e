"""IoU by hand: paint a ground truth and a prediction cell by cell, and read TP, FP, FN and IoU.

Two small grids of buttons, ground truth and prediction, show each cell in its class's official
Cityscapes colour (void, 255, in black). A brush picks a class, or void, and a click on a cell of
either grid paints it. The readout fills each class's counts into ``IoU = TP / (TP + FP + FN)`` and
sets pixel accuracy beside mIoU; the counts come from ``segkit.metrics.ConfusionMatrix``, so a void
ground-truth cell counts nowhere and a class absent from both maps is n/a, left out of the mean.
Void can be painted on the ground truth only: a model always predicts some class.

``IoUPainter(goal="accurate but useless")`` adds the exercise "a prediction with over 90 % pixel
accuracy and an mIoU under 0.2", checked by ``check_accurate_but_useless``.

DOM classes, for browser tests: ``segkit-iou-painter`` (the whole lab), ``segkit-iou-brush`` (the
brush ToggleButtons, one button per class name, "void (ignore)" last), ``segkit-iou-cell`` on every
cell and ``segkit-iou-gt-R-C`` / ``segkit-iou-pred-R-C`` on the cell at row R, column C,
``segkit-iou-readout`` (the scores), ``segkit-iou-goal`` (the goal) and ``segkit-iou-status``
(why a paint was refused).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch

from segkit import labels
from segkit.metrics import ConfusionMatrix, tp_fp_fn
from segkit.pictures import error_map
from segkit.widgets import _Browser, compose, legend_html, to_png

VOID = labels.IGNORE_INDEX
VOID_NAME = "void (ignore)"
GRIDS = {"gt": "ground truth", "pred": "prediction"}
BRUSHES = ("road", "sidewalk", "car", "person", "sky")
CELL_PIXELS = 12  # side of one cell in the picture of wrong cells

# A street seen from a car: sky, a sidewalk, a car and a person on the road, and the car's own
# bonnet at the bottom, which Cityscapes labels void. The prediction makes the usual mistakes.
_LETTERS = {"r": "road", "s": "sidewalk", "c": "car", "p": "person", "k": "sky"}
EXAMPLE_GT = ("kkkkkkkkkk",
              "kkkkkkkpkk",
              "sscccsspss",
              "rrcccrrprr",
              "rrrrrrrrrr",
              "rrr....rrr")
EXAMPLE_PRED = ("kkkkkkkkkk",
                "kkkkkkkkkk",  # the person's head taken for sky
                "ssccccsprs",  # the car one cell too wide; a sidewalk cell taken for road
                "rrccrrrprr",  # the car's corner taken for road
                "rrrrrrrrrr",
                "rrrrrrrrrr")  # the bonnet predicted road: void in the ground truth, so no count


def class_index(cls: int | str) -> int:
    """A class index (0…18, or 255 for void) from an index, a class name, "void" or "void (ignore)"."""
    if isinstance(cls, str):
        if cls in ("void", VOID_NAME):
            return VOID
        if cls not in labels.CLASS_NAMES:
            raise KeyError(f"unknown class {cls!r}; choose one of {', '.join(labels.CLASS_NAMES)} or void")
        return labels.CLASS_NAMES.index(cls)
    if not (0 <= cls < labels.NUM_CLASSES or cls == VOID):
        raise ValueError(f"class {cls} is neither a class index 0…{labels.NUM_CLASSES - 1} nor void ({VOID})")
    return int(cls)


def parse_map(rows: Sequence[str]) -> np.ndarray:
    """A class map (R, C) int64 from strings of letters: r road, s sidewalk, c car, p person,
    k sky, "." void."""
    lookup = {letter: class_index(name) for letter, name in _LETTERS.items()} | {".": VOID}
    return np.array([[lookup[letter] for letter in row] for row in rows], dtype=np.int64)


def score_maps(gt: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Counts and scores of a prediction (R, C) against a ground truth (R, C), via ConfusionMatrix.

    Returns:
        ``classes``: class name -> {"tp", "fp", "fn" (ints), "iou" (float, NaN when the class is in
        neither map)} for all 19 classes; ``correct`` and ``labelled`` (cells right, and cells whose
        ground truth is not void); ``pixel_acc`` and ``miou`` as ``ConfusionMatrix.compute()``.
    """
    confusion = ConfusionMatrix(labels.NUM_CLASSES)
    confusion.update(torch.as_tensor(pred), torch.as_tensor(gt))
    result = confusion.compute()
    tp, fp, fn = (counts.tolist() for counts in tp_fp_fn(confusion.mat))
    classes = {name: {"tp": tp[k], "fp": fp[k], "fn": fn[k], "iou": result["iou"][k].item()}
               for k, name in enumerate(labels.CLASS_NAMES)}
    return {"classes": classes, "correct": sum(tp), "labelled": int(confusion.mat.sum()),
            "pixel_acc": result["pixel_acc"], "miou": result["miou"]}


def check_accurate_but_useless(scores: dict[str, Any], *, accuracy_over: float = 0.9,
                               miou_under: float = 0.2) -> tuple[bool, str]:
    """Whether ``scores`` (from ``score_maps``) show over 90 % pixel accuracy with an mIoU under 0.2,
    and a sentence saying why or why not."""
    acc, miou = scores["pixel_acc"], scores["miou"]
    if math.isnan(acc):
        return False, "No labelled cell yet: paint some ground truth that is not void."
    reasons = []
    if not acc > accuracy_over:
        reasons.append(f"pixel accuracy is {100 * acc:.1f} %, not over {100 * accuracy_over:.0f} %: "
                       "get more cells right")
    if not miou < miou_under:
        reasons.append(f"mIoU is {miou:.2f}, not under {miou_under}: every class counts as much as "
                       "road in the mean, so miss more small classes, or predict classes that are "
                       "not there (each scores IoU 0)")
    if reasons:
        return False, "Not yet: " + "; ".join(reasons) + "."
    scored = sum(not math.isnan(c["iou"]) for c in scores["classes"].values())
    return True, (f"Goal met: {100 * acc:.1f} % of the cells are right, yet mIoU is {miou:.2f}. "
                  f"Pixel accuracy is ruled by the big classes; mIoU averages all {scored} classes "
                  "in play, each counting as much as road.")


#: Goal name -> check of the scores, for ``IoUPainter(goal=…)``.
GOALS: dict[str, Callable[[dict[str, Any]], tuple[bool, str]]] = {
    "accurate but useless": check_accurate_but_useless,
}


def _checked_maps(gt: np.ndarray, pred: np.ndarray, shape: tuple[int, int] | None = None
                  ) -> dict[str, np.ndarray]:
    """{"gt", "pred"}: copies of two class maps (R, C) as int64, checked (and of ``shape`` if given)."""
    gt, pred = np.array(gt, dtype=np.int64), np.array(pred, dtype=np.int64)
    if gt.ndim != 2 or gt.shape != pred.shape or (shape is not None and gt.shape != shape):
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} must be class maps (R, C) of one size"
                         + ("" if shape is None else f", the grids' {shape}"))
    valid = (gt == VOID) | ((gt >= 0) & (gt < labels.NUM_CLASSES))
    if not valid.all() or not ((pred >= 0) & (pred < labels.NUM_CLASSES)).all():
        raise ValueError(f"gt holds classes 0…{labels.NUM_CLASSES - 1} or void ({VOID}); pred only "
                         "classes: a model always predicts one")
    return {"gt": gt, "pred": pred}


def _hex(colour: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def _iou_formula(name: str, counts: dict[str, Any]) -> str:
    """LaTeX: IoU(name) = TP / (TP + FP + FN) with the counts filled in."""
    tp, fp, fn, iou = counts["tp"], counts["fp"], counts["fn"], counts["iou"]
    value = r"\text{n/a}" if math.isnan(iou) else f"{iou:.2f}"
    return (rf"$\mathrm{{IoU}}(\text{{{name}}}) = \frac{{TP}}{{TP + FP + FN}} = "
            rf"\frac{{{tp}}}{{{tp} + {fp} + {fn}}} = {value}$")


def _summary(scores: dict[str, Any]) -> str:
    """LaTeX: pixel accuracy and mIoU with their numbers, side by side."""
    if math.isnan(scores["pixel_acc"]):
        return "<td>no labelled cell: pixel accuracy and mIoU are n/a</td>"
    ious = [c["iou"] for c in scores["classes"].values() if not math.isnan(c["iou"])]
    acc = (rf"$\text{{pixel accuracy}} = \frac{{\text{{correct}}}}{{\text{{labelled}}}} = "
           rf"\frac{{{scores['correct']}}}{{{scores['labelled']}}} = {scores['pixel_acc']:.2f}$")
    miou = (rf"$\mathrm{{mIoU}} = \frac{{{' + '.join(f'{v:.2f}' for v in ious)}}}{{{len(ious)}}} = "
            rf"{scores['miou']:.2f}$")
    return f"<td style='padding-right:3em'>{acc}</td><td>{miou}</td>"


class IoUPainter(_Browser):
    """Paint ground truth and prediction on two grids; read TP, FP, FN, IoU, pixel accuracy and mIoU.

    Args:
        gt, pred: starting class maps (R, C), 0…18 or 255 (void, ground truth only); default the
            6 × 10 street of ``EXAMPLE_GT`` / ``EXAMPLE_PRED``.
        brushes: class names offered by the brush, void added last.
        goal: None, or a name in ``GOALS`` whose check is shown under the scores.

    Controls: ``brush`` (ToggleButtons, value a class index), ``cells["gt"]`` / ``cells["pred"]``
    ((R, C) nested lists of Buttons; a click paints with the brush). Readouts: ``text`` (HTMLMath
    scores), ``goal_text``, ``status``; ``image`` shows the wrong cells in red.
    """

    def __init__(self, gt: np.ndarray | None = None, pred: np.ndarray | None = None, *,
                 brushes: Sequence[str] = BRUSHES, goal: str | None = None):
        super().__init__()
        if goal is not None and goal not in GOALS:
            raise KeyError(f"unknown goal {goal!r}; choose one of {', '.join(GOALS)}")
        self.goal = goal
        self.maps = _checked_maps(parse_map(EXAMPLE_GT) if gt is None else gt,
                                  parse_map(EXAMPLE_PRED) if pred is None else pred)
        self.brush_classes = [class_index(name) for name in brushes] + [VOID]
        self.brush = widgets.ToggleButtons(
            options=[(name, class_index(name)) for name in brushes] + [(VOID_NAME, VOID)],
            value=class_index(brushes[0]), description="brush",
            tooltips=[f"paint {name}" for name in brushes] + ["paint void: ignored by every score"],
            style={"button_width": "auto"})
        self.brush.add_class("segkit-iou-brush")
        self.cells = {grid: self._grid(grid) for grid in GRIDS}
        self.text = widgets.HTMLMath()
        self.text.add_class("segkit-iou-readout")
        self.goal_text, self.status = widgets.HTML(), widgets.HTML()
        self.goal_text.add_class("segkit-iou-goal")
        self.status.add_class("segkit-iou-status")
        self.widget = self._layout()
        self.widget.add_class("segkit-iou-painter")
        self.render()

    # --- building ---------------------------------------------------------------------------------

    def _grid(self, grid: str) -> list[list[widgets.Button]]:
        """One button per cell (R, C), coloured by class; a click paints it with the brush."""
        layout = widgets.Layout(width="24px", height="24px", padding="0", margin="0")  # shared
        rows, cols = self.maps[grid].shape
        buttons = [[widgets.Button(layout=layout) for _ in range(cols)] for _ in range(rows)]
        for r, c in np.ndindex(rows, cols):
            button = buttons[r][c]
            button.add_class("segkit-iou-cell")
            button.add_class(f"segkit-iou-{grid}-{r}-{c}")
            button.on_click(lambda _button, r=r, c=c: self._clicked(grid, r, c))
        return buttons

    def _layout(self) -> widgets.VBox:
        cols = self.maps["gt"].shape[1]
        grids = [widgets.VBox([widgets.HTML(f"<b>{title}</b>"),
                               widgets.GridBox([b for row in self.cells[grid] for b in row],
                                               layout=widgets.Layout(
                                                   grid_template_columns=f"repeat({cols}, 24px)",
                                                   grid_gap="1px"))])
                 for grid, title in GRIDS.items()]
        legend = widgets.HTML(legend_html([np.array(self.brush_classes)], labels.CLASS_NAMES,
                                          "cityscapes19"))
        return widgets.VBox([self.brush, legend, widgets.HBox([*grids, self.image],
                                                              layout=widgets.Layout(grid_gap="2em")),
                             self.status, self.text, self.goal_text])

    # --- painting ---------------------------------------------------------------------------------

    def paint(self, grid: str, row: int, col: int, cls: int | str) -> None:
        """Paint cell (row, col) of ``grid`` ("gt" or "pred") with a class index, name or "void"."""
        if grid not in GRIDS:
            raise KeyError(f"unknown grid {grid!r}; choose 'gt' or 'pred'")
        cls = class_index(cls)
        if grid == "pred" and cls == VOID:
            raise ValueError("void can be painted on the ground truth only: a model always predicts a class")
        self.maps[grid][row, col] = cls
        self.render()

    def _clicked(self, grid: str, row: int, col: int) -> None:
        try:
            self.paint(grid, row, col, self.brush.value)
        except ValueError as error:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(error))}</span>"

    def set_maps(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Replace both maps (R, C), of the grids' size, e.g. for an exercise's starting point."""
        self.maps = _checked_maps(gt, pred, self.maps["gt"].shape)
        self.render()

    def _colour(self, grid: str, row: int, col: int, colours: np.ndarray) -> None:
        cls = int(self.maps[grid][row, col])
        button = self.cells[grid][row][col]
        button.style.button_color = _hex(colours[cls])
        name = VOID_NAME if cls == VOID else labels.CLASS_NAMES[cls]
        button.tooltip = f"{GRIDS[grid]}, row {row}, column {col}: {name}"

    # --- reading ----------------------------------------------------------------------------------

    def scores(self) -> dict[str, Any]:
        """The counts and scores of the maps now, as ``score_maps``."""
        return score_maps(self.maps["gt"], self.maps["pred"])

    def render(self) -> None:
        """Recolour every cell, recount, and redraw the readouts and the picture of wrong cells."""
        colours = labels.palette()
        for grid in GRIDS:
            for row, col in np.ndindex(self.maps[grid].shape):
                self._colour(grid, row, col, colours)
        scores = self.scores()
        self.status.value = ""
        self.text.value = self._readout(scores)
        if self.goal is not None:
            ok, message = GOALS[self.goal](scores)
            mark = "<span style='color:#080'>✓</span>" if ok else "<span style='color:#b00'>✗</span>"
            self.goal_text.value = f"<b>goal: {self.goal}</b> {mark} {html.escape(message)}"
        wrong = error_map(np.full((*self.maps["gt"].shape, 3), 255, dtype=np.uint8),
                          self.maps["gt"], self.maps["pred"])
        cells = np.ones((CELL_PIXELS, CELL_PIXELS, 1), dtype=np.uint8)
        self.image.value = to_png(compose([("wrong cells", np.kron(wrong, cells))]))

    def _readout(self, scores: dict[str, Any]) -> str:
        shown = set(self.brush_classes) | set(np.unique(self.maps["gt"])) | set(np.unique(self.maps["pred"]))
        rows = ["<tr><th>class</th><th>TP</th><th>FP</th><th>FN</th>"
                "<th style='text-align:left'>IoU</th></tr>"]
        for k in sorted(shown - {VOID}):
            name = labels.CLASS_NAMES[k]
            counts = scores["classes"][name]
            note = " (in neither map: left out of the mean)" if math.isnan(counts["iou"]) else ""
            numbers = "".join(f"<td style='text-align:right;padding:0 0.6em'>{counts[key]}</td>"
                              for key in ("tp", "fp", "fn"))
            rows.append(f"<tr><td>{name}</td>{numbers}<td>{_iou_formula(name, counts)}{note}</td></tr>")
        return (f"<table>{''.join(rows)}</table>"
                f"<table style='margin-top:0.5em'><tr>{_summary(scores)}</tr></table>")
