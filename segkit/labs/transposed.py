"""Transposed convolution, one input element at a time.

A transposed convolution with stride s scatters: input element (i, j) adds a copy of the k × k
kernel, scaled by its value, to the output at rows i·s … i·s + k − 1 and columns j·s … j·s + k − 1;
overlapping copies sum, and padding p then crops p rows and columns from every side, so an input
H high gives an output (H − 1)·s − 2p + k high (likewise wide). Step n of the lab adds the n-th
element's copy (row by row), drawn on the uncropped output with the cropped border in grey. The
partial sums are that scatter; the last step shows ``torch.nn.functional.conv_transpose2d`` itself,
which the tests check the scatter against.

With stride 2, a 2 × 2 kernel's copies tile the output exactly, one product per cell, while a 3 × 3
kernel's copies overlap by a row and a column, so neighbouring cells sum one, two or four products:
the uneven weighting behind the checkerboard artefacts of learned upsampling (Odena et al., 2016,
"Deconvolution and Checkerboard Artifacts"), which the "contributions" view shows as counts.

DOM classes, for browser tests: ``segkit-tconv`` (the whole lab), ``segkit-tconv-input`` and
``segkit-tconv-kernel`` (every value slider, plus ``segkit-tconv-input-I-J`` /
``segkit-tconv-kernel-I-J``), ``segkit-tconv-kernel-size`` (Dropdown), ``segkit-tconv-stride``,
``segkit-tconv-padding`` (ToggleButtons), ``segkit-tconv-step`` (sliders) and
``segkit-tconv-contributions`` (ToggleButton).
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from segkit.widgets import _Browser, _font, compose, to_png

VALUE_RANGE = (-3, 3)  # slider range of input and kernel values
KERNEL_SIZES = (2, 3)
PADDINGS = (0, 1, 2)
CELL = 34  # pixels per drawn cell
TOUCHED = (255, 140, 0)  # border of the cells the current step touches
CROPPED = (215, 215, 215)  # cells that padding crops away


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a transposed convolution: ``(size − 1)·stride − 2·padding + kernel``."""
    return (size - 1) * stride - 2 * padding + kernel


def scatter(x: Tensor, kernel: Tensor, stride: int, steps: int) -> Tensor:
    """The uncropped output (Hf, Wf) after adding the first ``steps`` products, row by row.

    Args:
        x: input (H, W); kernel: (k, k). Hf = (H − 1)·stride + k, likewise Wf.
    """
    (height, width), k = x.shape, kernel.shape[0]
    out = torch.zeros(output_size(height, k, stride, 0), output_size(width, k, stride, 0), dtype=x.dtype)
    for step in range(steps):
        i, j = divmod(step, width)
        out[i * stride:i * stride + k, j * stride:j * stride + k] += x[i, j] * kernel
    return out


def conv_transpose(x: Tensor, kernel: Tensor, stride: int, padding: int) -> Tensor:
    """``F.conv_transpose2d`` of one channel: x (H, W), kernel (k, k) -> (H', W')."""
    return F.conv_transpose2d(x[None, None], kernel[None, None], stride=stride, padding=padding)[0, 0]


def partial_output(x: Tensor, kernel: Tensor, stride: int, steps: int) -> Tensor:
    """The uncropped output (Hf, Wf) after ``steps`` products: the scatter while products are
    missing, ``F.conv_transpose2d`` (without padding) once all are in."""
    if steps == x.numel():
        return conv_transpose(x, kernel, stride, 0)
    return scatter(x, kernel, stride, steps)


def contributions(input_shape: tuple[int, int], kernel_size: int, stride: int, steps: int) -> Tensor:
    """How many products the first ``steps`` steps add to each uncropped output cell (Hf, Wf)."""
    ones = torch.ones(kernel_size, kernel_size, dtype=torch.float64)
    return partial_output(torch.ones(input_shape, dtype=torch.float64), ones, stride, steps)


def touched(input_shape: tuple[int, int], kernel_size: int, stride: int, step: int) -> np.ndarray:
    """(Hf, Wf) bool: the uncropped output cells step ``step`` (1-based) adds to."""
    height, width = input_shape
    mask = np.zeros((output_size(height, kernel_size, stride, 0),
                     output_size(width, kernel_size, stride, 0)), dtype=bool)
    i, j = divmod(step - 1, width)
    mask[i * stride:i * stride + kernel_size, j * stride:j * stride + kernel_size] = True
    return mask


def crop(full: Tensor, padding: int) -> Tensor:
    """What padding keeps of an uncropped output (Hf, Wf): (Hf − 2p, Wf − 2p)."""
    return full[padding:full.shape[0] - padding, padding:full.shape[1] - padding]


def number_grid(values: np.ndarray, *, marked: np.ndarray | None = None,
                greyed: np.ndarray | None = None) -> np.ndarray:
    """A table of numbers (R, C) drawn as cells: (R·CELL + 1, C·CELL + 1, 3) uint8.

    Positive values are tinted red, negative blue; ``marked`` (R, C) cells get an orange border,
    ``greyed`` (R, C) cells a grey fill.
    """
    rows, cols = values.shape
    scale = max(float(np.abs(values).max()), 1.0)
    sheet = Image.new("RGB", (cols * CELL + 1, rows * CELL + 1), "white")
    draw = ImageDraw.Draw(sheet)
    for r, c in np.ndindex(rows, cols):
        box = (c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL)
        draw.rectangle(box, fill=_tint(values[r, c] / scale), outline=(120, 120, 120))
        if greyed is not None and greyed[r, c]:
            draw.rectangle(box, fill=CROPPED, outline=(120, 120, 120))
        draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), f"{values[r, c]:g}", fill=(20, 20, 20),
                  font=_font(), anchor="mm")
    if marked is not None:  # drawn last so that neighbours' outlines do not cover the border
        for r, c in zip(*np.nonzero(marked), strict=True):
            draw.rectangle((c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL), outline=TOUCHED, width=3)
    return np.asarray(sheet)


def _tint(share: float) -> tuple[int, int, int]:
    """White for 0, towards red for +1 and blue for −1."""
    strength = min(abs(share), 1.0) * 0.6
    fade = round(255 * (1 - strength))
    return (255, fade, fade) if share > 0 else (fade, fade, 255)


class TransposedConvToy(_Browser):
    """Build a transposed convolution's output product by product, with sliders for every number.

    Args:
        x: the input (H, W), integers in −3…3 (default ``[[1, 2], [-1, 3]]``).
        kernel: the kernel (k, k), k 2 or 3 (default a 3 × 3 of ones and twos).
        stride: 1…3; padding: 0, 1 or 2.

    Controls: ``inputs`` and ``kernel_sliders`` ((rows, cols) nested lists of IntSliders; the
    kernel's third row and column hide for k = 2), ``kernel_size`` (Dropdown), ``stride``
    (IntSlider), ``padding`` (ToggleButtons), ``step`` (IntSlider, 1…H·W) and ``show_contributions``
    (ToggleButton: counts of products per cell instead of values).
    """

    def __init__(self, x: Sequence[Sequence[int]] = ((1, 2), (-1, 3)),
                 kernel: Sequence[Sequence[int]] = ((1, 2, 1), (2, 1, 2), (1, 2, 1)), *,
                 stride: int = 2, padding: int = 0):
        super().__init__()
        x, kernel = np.asarray(x, dtype=int), np.asarray(kernel, dtype=int)
        if x.ndim != 2 or min(x.shape) < 2 or kernel.shape not in {(k, k) for k in KERNEL_SIZES}:
            raise ValueError(f"need an input of at least 2 × 2 and a kernel of 2 × 2 or 3 × 3; got "
                             f"{x.shape} and {kernel.shape}")
        self.inputs = self._sliders(x, "input", "x")
        self.kernel_sliders = self._sliders(np.pad(kernel, (0, max(KERNEL_SIZES) - len(kernel))),
                                            "kernel", "w")
        self.kernel_size = widgets.Dropdown(options=KERNEL_SIZES, value=len(kernel), description="kernel")
        self.stride = widgets.IntSlider(stride, min=1, max=3, description="stride", continuous_update=False)
        self.padding = widgets.ToggleButtons(options=PADDINGS, value=padding, description="padding",
                                             tooltips=[f"crop {p} from every side" for p in PADDINGS],
                                             style={"button_width": "3em"})
        self.step = widgets.IntSlider(1, min=1, max=x.size, description="step", continuous_update=False)
        self.show_contributions = widgets.ToggleButton(
            False, description="contributions", tooltip="count the products summed into each output cell")
        for control, name in [(self.kernel_size, "kernel-size"), (self.stride, "stride"),
                              (self.padding, "padding"), (self.step, "step"),
                              (self.show_contributions, "contributions")]:
            control.add_class(f"segkit-tconv-{name}")
        self.widget = self._layout()
        self.widget.add_class("segkit-tconv")
        self._rerender_on(*self._all_sliders(), self.kernel_size, self.stride, self.padding, self.step,
                          self.show_contributions)
        self.render()

    def _sliders(self, values: np.ndarray, role: str, symbol: str) -> list[list[widgets.IntSlider]]:
        low, high = VALUE_RANGE
        sliders = [[widgets.IntSlider(int(values[i, j]), min=low, max=high, description=f"{symbol}[{i},{j}]",
                                      continuous_update=False, layout=widgets.Layout(width="190px"),
                                      style={"description_width": "3em"})
                    for j in range(values.shape[1])] for i in range(values.shape[0])]
        for (i, j), slider in np.ndenumerate(np.array(sliders, dtype=object)):
            slider.add_class(f"segkit-tconv-{role}")
            slider.add_class(f"segkit-tconv-{role}-{i}-{j}")
        return sliders

    def _all_sliders(self) -> list[widgets.IntSlider]:
        return [s for row in self.inputs + self.kernel_sliders for s in row]

    def _layout(self) -> widgets.VBox:
        def block(title: str, sliders: list[list[widgets.IntSlider]]) -> widgets.VBox:
            return widgets.VBox([widgets.HTML(f"<b>{title}</b>"), *(widgets.HBox(row) for row in sliders)])

        settings = widgets.VBox([self.kernel_size, self.stride, self.padding, self.step,
                                 self.show_contributions])
        controls = widgets.HBox([block("input x", self.inputs), block("kernel w", self.kernel_sliders),
                                 settings], layout=widgets.Layout(grid_gap="1.5em"))
        return widgets.VBox([controls, self.text, self.image])

    # --- the numbers --------------------------------------------------------------------------------

    def x(self) -> Tensor:
        """The input (H, W) the sliders set, float64."""
        return torch.tensor([[s.value for s in row] for row in self.inputs], dtype=torch.float64)

    def kernel(self) -> Tensor:
        """The kernel (k, k) the sliders set, float64."""
        k = self.kernel_size.value
        values = [[slider.value for slider in row[:k]] for row in self.kernel_sliders[:k]]
        return torch.tensor(values, dtype=torch.float64)

    def partial(self) -> Tensor:
        """The uncropped output (Hf, Wf) after the current step."""
        return partial_output(self.x(), self.kernel(), self.stride.value, self.step.value)

    def output(self) -> Tensor:
        """The finished output, ``F.conv_transpose2d`` with the current stride and padding (H', W')."""
        return conv_transpose(self.x(), self.kernel(), self.stride.value, self.padding.value)

    # --- drawing --------------------------------------------------------------------------------------

    def render(self) -> None:
        """Show or hide the kernel's third row and column, then redraw the picture and caption."""
        k, stride, step = self.kernel_size.value, self.stride.value, self.step.value
        for i, row in enumerate(self.kernel_sliders):
            for j, slider in enumerate(row):
                slider.layout.display = None if i < k and j < k else "none"
        x, kernel = self.x(), self.kernel()
        shape = tuple(x.shape)
        i, j = divmod(step - 1, shape[1])
        current = np.zeros(shape, dtype=bool)
        current[i, j] = True
        if self.show_contributions.value:
            shown, title = contributions(shape, k, stride, step), "products per cell"
        else:
            shown, title = self.partial(), f"output after step {step}"
        kept = np.zeros(tuple(shown.shape), dtype=bool)
        kept[self.padding.value:shown.shape[0] - self.padding.value,
             self.padding.value:shown.shape[1] - self.padding.value] = True
        panels = [("input x", number_grid(x.numpy(), marked=current)),
                  ("kernel w", number_grid(kernel.numpy())),
                  (f"x[{i},{j}]·w", number_grid((x[i, j] * kernel).numpy())),
                  (title, number_grid(shown.numpy(), marked=touched(shape, k, stride, step), greyed=~kept))]
        self.image.value = to_png(compose(panels))
        self.text.value = self._caption(shape, k, i, j)

    def _caption(self, shape: tuple[int, int], k: int, i: int, j: int) -> str:
        stride, padding, step = self.stride.value, self.padding.value, self.step.value
        value = self.inputs[i][j].value
        lines = [f"<b>step {step} of {shape[0] * shape[1]}</b>: adds x[{i},{j}] = {value} × w at rows "
                 f"{i * stride}–{i * stride + k - 1}, columns {j * stride}–{j * stride + k - 1} of the "
                 "uncropped output (orange)."]
        sizes = [output_size(n, k, stride, padding) for n in shape]
        for name, letter, n, size in zip(("height", "width"), "HW", shape, sizes, strict=True):
            lines.append(f"output {name}: ({letter} − 1)·s − 2p + k = ({n} − 1)·{stride} − 2·{padding} + {k} "
                         f"= {size}")
        if min(sizes) < 1:
            lines.append(f"padding {padding} crops away the whole output: choose less padding.")
        elif padding:
            lines.append(f"padding {padding} crops {padding} row(s) and column(s) from every side (grey).")
        if step == shape[0] * shape[1] and min(sizes) >= 1:
            lines.append(f"All products added: the output kept is <code>F.conv_transpose2d(x, w, "
                         f"stride={stride}, padding={padding})</code>, {sizes[0]} × {sizes[1]}.")
        if self.show_contributions.value:
            lines.append(_overlap_note(k, stride))
        return "<br>".join(lines)


def _overlap_note(kernel_size: int, stride: int) -> str:
    if kernel_size % stride == 0:
        return (f"Kernel {kernel_size} is a multiple of stride {stride}: away from the border every cell "
                "sums the same number of products.")
    return (f"Kernel {kernel_size} is not a multiple of stride {stride}: neighbouring cells sum different "
            "numbers of products even away from the border, the checkerboard pattern of transposed "
            "convolutions.")
