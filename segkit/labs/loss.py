"""Loss lab: class weights against pixel shares, and the focal loss against p_t.

Part A, class weighting. Street scenes are mostly road, building and vegetation; an unweighted
cross-entropy spends its effort where the pixels are. For each method of
``segkit.losses.class_weights_from_histogram`` (a dropdown) the lab draws, per class in its official
colour, the share of the labelled pixels, the weight, and the share of the loss the class carries
(share × weight, normalised: the split of a weighted cross-entropy when every pixel costs the same,
as at initialisation, where each costs ln C), so the rare classes are seen to be lifted. Void pixels
are ignored by the loss and carry nothing.

Part B, the focal loss of Lin et al. ("Focal Loss for Dense Object Detection", ICCV 2017):
``−(1 − p_t)^γ log p_t`` against cross-entropy ``−log p_t`` over p_t ∈ (0, 1), with a γ slider. Both
curves are the outputs of ``segkit.losses.FocalLoss`` and ``CrossEntropyLoss`` on logits built to
give each p_t; the readout weighs an easy pixel (p_t = 0.9) against a hard one (p_t = 0.1).

DOM classes, for browser tests: ``segkit-loss-lab`` (the whole lab), ``segkit-loss-method``
(Dropdown), ``segkit-loss-gamma`` (FloatSlider), ``segkit-loss-weights-readout`` and
``segkit-loss-focal-readout`` (the captions), ``segkit-loss-weights-picture`` and
``segkit-loss-focal-picture``.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from torch import Tensor

from segkit import labels, viz
from segkit.losses import WEIGHT_METHODS, CrossEntropyLoss, FocalLoss, class_weights_from_histogram
from segkit.widgets import _Browser

EASY, HARD = 0.9, 0.1  # p_t of an easy and of a hard pixel, for the readout
P_T = torch.linspace(0.005, 0.995, 199, dtype=torch.float64)  # where the curves are evaluated
DPI = 80


def loss_shares(class_pixels: Sequence[int] | np.ndarray, method: str) -> dict[str, np.ndarray | float]:
    """Pixel share, class weight and loss share per class.

    Args:
        class_pixels: (C + 1,) pixel counts, the C classes then void, as the manifest's
            ``class_pixels`` or ``segkit.datasets.class_pixels(dataset)``.
        method: a method of ``class_weights_from_histogram`` (``segkit.losses.WEIGHT_METHODS``).

    Returns:
        ``pixel_share`` (C,) of the labelled pixels, ``weight`` (C,) from
        ``class_weights_from_histogram``, ``loss_share`` (C,) = share × weight normalised to sum 1,
        and ``void_share``, the ignored pixels' share of all pixels.
    """
    counts = np.asarray(class_pixels, dtype=np.float64)
    if counts.ndim != 1 or len(counts) < 2:
        raise ValueError(f"class_pixels must hold C class counts then void, got shape {counts.shape}")
    classes = counts[:-1]
    weight = class_weights_from_histogram(torch.as_tensor(classes), method=method).double().numpy()
    pixel_share = classes / classes.sum()
    carried = pixel_share * weight
    return {"pixel_share": pixel_share, "weight": weight, "loss_share": carried / carried.sum(),
            "void_share": counts[-1] / counts.sum()}


def logits_for(p_t: Tensor) -> Tensor:
    """Two-class logits (N, 2) whose softmax gives class 0 the probabilities ``p_t`` (N,)."""
    return torch.stack([torch.log(p_t), torch.log1p(-p_t)], dim=1)


def focal_curve(p_t: Tensor, gamma: float) -> Tensor:
    """``FocalLoss(gamma)`` of one pixel of target class 0 at each probability ``p_t`` (N,): (N,)."""
    target = torch.zeros(len(p_t), dtype=torch.long)
    return FocalLoss(gamma, reduction="none")(logits_for(p_t), target)


def ce_curve(p_t: Tensor) -> Tensor:
    """``CrossEntropyLoss`` of one pixel of target class 0 at each probability ``p_t`` (N,): (N,)."""
    loss, logits, target = CrossEntropyLoss(), logits_for(p_t), torch.zeros(len(p_t), dtype=torch.long)
    # one call per pixel: the module averages over its pixels, and each point is one pixel's loss
    return torch.stack([loss(logits[n:n + 1], target[n:n + 1]) for n in range(len(p_t))])


def easy_vs_hard(gamma: float, easy: float = EASY, hard: float = HARD) -> dict[str, float]:
    """Loss of an easy and of a hard pixel under cross-entropy and under focal loss at ``gamma``.

    Returns ``ce_easy``, ``ce_hard``, ``focal_easy``, ``focal_hard``, and ``ce_ratio`` /
    ``focal_ratio``: how many times the hard pixel outweighs the easy one.
    """
    p_t = torch.tensor([easy, hard], dtype=torch.float64)
    (ce_easy, ce_hard), (focal_easy, focal_hard) = ce_curve(p_t).tolist(), focal_curve(p_t, gamma).tolist()
    return {"ce_easy": ce_easy, "ce_hard": ce_hard, "focal_easy": focal_easy, "focal_hard": focal_hard,
            "ce_ratio": ce_hard / ce_easy, "focal_ratio": focal_hard / focal_easy}


def _share_text(share: float) -> str:
    """A share in percent: one decimal, or two significant digits below 1 %."""
    return f"{100 * share:.2g} %" if share < 0.01 else f"{100 * share:.1f} %"


class LossLab(_Browser):
    """Class weights against pixel shares (part A) and focal loss against cross-entropy (part B).

    Args:
        class_pixels: (C + 1,) pixel counts, the classes then void (a manifest's ``class_pixels``).
        scheme: the label scheme of the counts, for names and colours.
        method: the first weighting shown; gamma: the first focal γ.

    Controls: ``method`` (Dropdown over ``segkit.losses.WEIGHT_METHODS``) and ``gamma`` (FloatSlider
    0…5). Part A draws into ``image`` / ``text`` (``png``), part B into ``focal_image`` /
    ``focal_text`` (``focal_png``).
    """

    def __init__(self, class_pixels: Sequence[int] | np.ndarray, *, scheme: str = "cityscapes19",
                 method: str = "inverse_log", gamma: float = 2.0):
        super().__init__()
        self.class_pixels = np.asarray(class_pixels, dtype=np.int64)
        self.class_names = labels.class_names(scheme)
        if self.class_pixels.shape != (len(self.class_names) + 1,):
            raise ValueError(f"class_pixels: expected {len(self.class_names) + 1} counts "
                             f"({len(self.class_names)} classes, then void), got {self.class_pixels.shape}")
        self.colours = labels.palette(scheme)[:len(self.class_names)] / 255
        self.method = widgets.Dropdown(options=WEIGHT_METHODS, value=method, description="weights")
        self.gamma = widgets.FloatSlider(gamma, min=0, max=5, step=0.1, description="focal γ",
                                         continuous_update=False)
        self.focal_image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))
        self.focal_text = widgets.HTML()
        for widget, name in [(self.method, "method"), (self.gamma, "gamma"), (self.text, "weights-readout"),
                             (self.image, "weights-picture"), (self.focal_text, "focal-readout"),
                             (self.focal_image, "focal-picture")]:
            widget.add_class(f"segkit-loss-{name}")
        self.ce = ce_curve(P_T).numpy()  # does not depend on γ: computed once
        self._weights_figure, self._bars = self._weights_axes()
        self._focal_figure, self._focal_line, self._focal_marks = self._focal_axes()
        self.widget = widgets.VBox([widgets.HTML("<b>A · class weights against pixel shares</b>"),
                                    self.method, self.text, self.image,
                                    widgets.HTML("<b>B · focal loss against cross-entropy</b>"),
                                    self.gamma, self.focal_text, self.focal_image])
        self.widget.add_class("segkit-loss-lab")
        self.method.observe(lambda _change: self.render_weights(), names="value")
        self.gamma.observe(lambda _change: self.render_focal(), names="value")
        self.render()

    @property
    def focal_png(self) -> bytes:
        """Part B's picture now, as PNG bytes."""
        return bytes(self.focal_image.value)

    def render(self) -> None:
        """Redraw both parts."""
        self.render_weights()
        self.render_focal()

    # --- part A -------------------------------------------------------------------------------------

    def _weights_axes(self) -> tuple[Figure, dict[str, tuple[BarContainer, list[Text]]]]:
        """Three rows of bars over the classes, pixel share, weight and loss share, each bar with a
        value label; heights and labels are set by ``render_weights``."""
        figure = Figure(figsize=(10, 6), dpi=DPI)
        # fixed margins: a layout engine would cost more than the drawing on every change
        figure.subplots_adjust(left=0.08, right=0.99, top=0.94, bottom=0.16, hspace=0.12)
        axes: list[Axes] = figure.subplots(3, 1, sharex=True)
        positions = np.arange(len(self.class_names))
        bars = {}
        rows = {"pixel_share": "share of pixels (%)", "weight": "class weight",
                "loss_share": "share of the loss (%)"}
        for ax, (key, label) in zip(axes, rows.items(), strict=True):
            drawn = ax.bar(positions, np.zeros(len(positions)), color=self.colours, edgecolor="0.3",
                           linewidth=0.5)
            values = [ax.text(x, 0, "", ha="center", va="bottom", fontsize=7) for x in positions]
            bars[key] = (drawn, values)
            ax.set_ylabel(label)
        axes[2].set_xticks(positions, self.class_names, rotation=45, ha="right", rotation_mode="anchor")
        return figure, bars

    def shares(self) -> dict[str, np.ndarray | float]:
        """``loss_shares`` of the class pixels for the chosen method."""
        return loss_shares(self.class_pixels, self.method.value)

    def render_weights(self) -> None:
        """Set the bars to the chosen method's numbers and rewrite part A's readout."""
        shares = self.shares()
        # one scale for both shares, so that the lift from pixels to loss reads off the bars
        top = 100 * max(shares["pixel_share"].max(), shares["loss_share"].max()) * 1.15
        for key, (bars, texts) in self._bars.items():
            values = shares[key] * (1 if key == "weight" else 100)
            for bar, text, value in zip(bars, texts, values, strict=True):
                bar.set_height(value)
                text.set_y(value)
                text.set_text(f"{value:.0f}" if value >= 100 else f"{value:.3g}")
            bars[0].axes.set_ylim(0, top if key != "weight" else values.max() * 1.15)
        self._weights_figure.suptitle(f"class_weights_from_histogram(counts, method={self.method.value!r})")
        self.image.value = viz.figure_png(self._weights_figure)
        self.text.value = self._weights_caption(shares)

    def _weights_caption(self, shares: dict[str, np.ndarray | float]) -> str:
        present = np.flatnonzero(shares["pixel_share"] > 0)
        common = present[np.argmax(shares["pixel_share"][present])]
        rare = present[np.argmin(shares["pixel_share"][present])]
        lines = [f"<b>{self.class_names[k]}</b>: {_share_text(shares['pixel_share'][k])} of the labelled "
                 f"pixels, weight {shares['weight'][k]:.2f}, {_share_text(shares['loss_share'][k])} of the "
                 f"loss (×{shares['loss_share'][k] / shares['pixel_share'][k]:.2f})" for k in (common, rare)]
        absent = [self.class_names[k] for k in np.flatnonzero(shares["pixel_share"] == 0)]
        if absent:
            lines.append(f"no pixel of {', '.join(absent)}: weight 0")
        lines.append(f"void, {_share_text(shares['void_share'])} of all pixels, is ignored by the loss")
        return "<br>".join(lines)

    # --- part B -------------------------------------------------------------------------------------

    def _focal_axes(self) -> tuple[Figure, Line2D, Line2D]:
        """The cross-entropy curve, and a focal curve and its two marked points to be set later."""
        figure = Figure(figsize=(7, 3.6), dpi=DPI)
        figure.subplots_adjust(left=0.09, right=0.98, top=0.97, bottom=0.14)
        ax = figure.subplots()
        ax.plot(P_T, self.ce, color="0.4", label=r"cross-entropy $-\log p_t$")
        (line,) = ax.plot(P_T, self.ce, color="tab:red", linewidth=2)
        (marks,) = ax.plot([EASY, HARD], [0, 0], "o", color="tab:red")
        ax.plot([EASY, HARD], ce_curve(torch.tensor([EASY, HARD], dtype=torch.float64)), "o", color="0.4")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 4)
        ax.set_xlabel(r"$p_t$, the probability given to the true class")
        ax.set_ylabel("loss of one pixel")
        return figure, line, marks

    def render_focal(self) -> None:
        """Recompute the focal curve at the chosen γ and rewrite part B's readout."""
        gamma = self.gamma.value
        self._focal_line.set_ydata(focal_curve(P_T, gamma).numpy())
        self._focal_line.set_label(rf"focal $-(1 - p_t)^{{{gamma:g}}} \log p_t$")
        numbers = easy_vs_hard(gamma)
        self._focal_marks.set_ydata([numbers["focal_easy"], numbers["focal_hard"]])
        self._focal_line.axes.legend(loc="upper right")
        self.focal_image.value = viz.figure_png(self._focal_figure)
        self.focal_text.value = (
            f"cross-entropy: easy pixel (p_t = {EASY}) {numbers['ce_easy']:.3f}, hard pixel (p_t = {HARD}) "
            f"{numbers['ce_hard']:.3f}: the hard one weighs {numbers['ce_ratio']:,.1f}× as much<br>"
            f"focal, γ = {gamma:g}: easy {numbers['focal_easy']:.3g}, hard {numbers['focal_hard']:.3f}: "
            f"the hard one weighs {numbers['focal_ratio']:,.1f}× as much "
            f"(focal keeps {_share_text(numbers['focal_easy'] / numbers['ce_easy'])} of the easy pixel's "
            f"cross-entropy and {_share_text(numbers['focal_hard'] / numbers['ce_hard'])} of the hard one's)")
