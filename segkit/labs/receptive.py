"""Receptive fields of a model's stages: which input pixels can, and which do, sway one output.

* The *theoretical* field of a stage at a point: every input pixel with a path to that output.
  It is read off a linearised copy of the model (``linearise``: no ReLU, average- for max-pooling,
  no batch norm, every convolution a positive average), where every path carries a positive
  gradient, so the support of the input gradient is exactly the set of connected pixels. This
  handles skips, ASPP and dilations without any formula; on plain stacks it agrees with
  r_out = r_in + (k - 1)·d·j_in, j_out = j_in·s.
* The *effective* field (Luo et al., 2016, "Understanding the Effective Receptive Field in Deep
  Convolutional Neural Networks"): |∂ output(point) / ∂ input| of the real model in eval mode,
  from one backward pass. It depends on the weights: a randomly initialised model's effective
  field is a narrow Gaussian-like blob, a trained model's is usually wider and follows the
  scene, so compare trained models to see what training does to it.

Global pooling (MobileNetV3's squeeze-and-excitation blocks, ASPP's image-pooling branch) links
every output to every pixel, so the theoretical field after it is the whole frame; the effective
field shows how much of that reach is used.
Points are (y, x) in input pixels; a stage's output at a point is the stage pixel covering it.
"""

from __future__ import annotations

import copy
import html
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib
import numpy as np
import torch
from ipyevents import Event
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from segkit.models.anatomy import Stage, evaluating, forward_stages, model_device, stage_graph
from segkit.pictures import as_rgb, dimmed
from segkit.transforms import denormalize, to_model_input
from segkit.widgets import _Browser, to_png

#: Elementwise nonlinearities; each becomes the identity in the linearised copy.
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
                nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish)
#: The share of the effective field's gradient mass its summary square holds.
MASS = 0.95


# --- the linearised copy ------------------------------------------------------------------------

class _ChannelMeanConv(nn.Module):
    """A convolution's spatial reach with one channel: the channel mean, then a 1-channel conv
    (or transposed conv) with the same geometry whose kernel is a positive average.

    With constant positive weights every channel of a layer carries the same values, so one
    channel has the same gradient support as all of them, at a fraction of the cost.
    """

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
        super().__init__()
        geometry = {"kernel_size": conv.kernel_size, "stride": conv.stride, "padding": conv.padding,
                    "dilation": conv.dilation, "bias": False, "padding_mode": conv.padding_mode}
        if isinstance(conv, nn.ConvTranspose2d):
            self.conv = nn.ConvTranspose2d(1, 1, output_padding=conv.output_padding, **geometry)
        else:
            self.conv = nn.Conv2d(1, 1, **geometry)
        self.conv.weight.data.fill_(1 / self.conv.weight.numel())

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x.mean(1, keepdim=True))  # (N, C, H, W) -> (N, 1, H', W')


def _stand_in(module: nn.Module) -> nn.Module | None:
    """The linearised replacement of ``module``, or None to keep it (containers, linear ops)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        return _ChannelMeanConv(module)
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, *_ACTIVATIONS)):
        return nn.Identity()
    if isinstance(module, nn.MaxPool2d):
        if module.dilation not in (1, (1, 1)):
            raise ValueError(f"cannot linearise a dilated max-pool ({module})")
        return nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode)
    if isinstance(module, nn.AdaptiveMaxPool2d):
        return nn.AdaptiveAvgPool2d(module.output_size)
    return None


def linearise(model: nn.Module) -> nn.Module:
    """A float64 CPU copy of ``model`` in eval mode whose input gradient at an output is positive
    exactly on that output's theoretical receptive field.

    ReLUs and other activations become identities, max-pools average-pools, batch norms
    identities, every convolution a one-channel positive average (``_ChannelMeanConv``) without
    bias. Module paths stay the same, so the model's stages (``stage_graph``) name the copy's too.
    """
    linear = copy.deepcopy(model).cpu()
    for path, module in list(linear.named_modules()):
        replacement = _stand_in(module) if path else None
        if replacement is not None:
            parent, _, name = path.rpartition(".")
            setattr(linear.get_submodule(parent), name, replacement)
    return linear.double().eval()


# --- fields ---------------------------------------------------------------------------------------

def stage_position(point: tuple[int, int], input_size: tuple[int, int], stage_size: tuple[int, int]
                   ) -> tuple[int, int]:
    """The pixel (row, column) of an (h, w) = ``stage_size`` map covering input pixel ``point`` =
    (y, x) of an (H, W) = ``input_size`` input."""
    (y, x), (height, width), (rows, cols) = point, input_size, stage_size
    return min(rows - 1, y * rows // height), min(cols - 1, x * cols // width)


def _input_gradients(model: nn.Module, x: Tensor, point: tuple[int, int], stages: list[Stage]
                     ) -> dict[str, Tensor]:
    """stage name -> ∂ (sum over channels of the stage's output at ``point``) / ∂ x, (C, H, W).

    One forward pass, then one backward pass per stage through the part of the graph it needs.
    The stages only name the modules: positions come from the maps ``x`` gives, at any size.
    """
    x = x.detach().requires_grad_()
    with torch.enable_grad():
        outputs = forward_stages(model, x, stages)
        grads = {}
        for k, stage in enumerate(stages):
            out = outputs[stage.name]  # (1, C, h, w)
            row, col = stage_position(point, tuple(x.shape[-2:]), tuple(out.shape[-2:]))
            (grads[stage.name],) = torch.autograd.grad(out[0, :, row, col].sum(), x,
                                                       retain_graph=k < len(stages) - 1)
    return {name: grad[0] for name, grad in grads.items()}


def _supports(linear: nn.Module, input_size: tuple[int, int], point: tuple[int, int],
              stages: list[Stage]) -> dict[str, np.ndarray]:
    """stage name -> (H, W) bool theoretical field, from a copy made by ``linearise``."""
    ones = torch.ones(1, 3, *input_size, dtype=torch.float64)  # positive everywhere: no path is 0
    grads = _input_gradients(linear, ones, point, stages)
    return {name: (grad.sum(0) > 0).numpy() for name, grad in grads.items()}


def theoretical_fields(model: nn.Module, input_size: tuple[int, int], point: tuple[int, int], *,
                       stages: list[Stage] | None = None) -> dict[str, np.ndarray]:
    """stage name -> (H, W) bool: the input pixels that can influence the stage's output at
    ``point`` = (y, x), for an (H, W) = ``input_size`` input. ``stages`` default to
    ``stage_graph(model, input_size)`` (a graph made at any size names the same stages)."""
    stages = stage_graph(model, input_size) if stages is None else stages
    return _supports(linearise(model), input_size, point, stages)


def _stage_named(model: nn.Module, stage: str, input_size: tuple[int, int]) -> list[Stage]:
    """[the stage called ``stage``] of ``stage_graph(model, input_size)``; KeyError listing them."""
    stages = stage_graph(model, input_size)
    named = [s for s in stages if s.name == stage]
    if not named:
        raise KeyError(f"unknown stage {stage!r}; the model's stages are {[s.name for s in stages]}")
    return named


def theoretical_receptive_field(model: nn.Module, stage: str, input_size: tuple[int, int],
                                point: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the input pixels that can influence stage ``stage``'s output at ``point`` =
    (y, x). Its extent: ``bounding_box``."""
    stages = _stage_named(model, stage, input_size)
    return theoretical_fields(model, input_size, point, stages=stages)[stage]


def effective_fields(model: nn.Module, image: Tensor, point: tuple[int, int], *,
                     stages: list[Stage] | None = None) -> dict[str, np.ndarray]:
    """stage name -> (H, W) float: |∂ output(point) / ∂ input| summed over colour channels, for
    the stage's output channels summed at ``point`` = (y, x); the model in eval mode (restored
    after) on ``image``, a normalised (3, H, W) model input."""
    stages = stage_graph(model, tuple(image.shape[-2:])) if stages is None else stages
    with evaluating(model):
        grads = _input_gradients(model, image[None].to(model_device(model)), point, stages)
    return {name: grad.abs().sum(0).numpy(force=True) for name, grad in grads.items()}


def effective_receptive_field(model: nn.Module, stage: str, image: Tensor, point: tuple[int, int]
                              ) -> np.ndarray:
    """(H, W) float: |∂ stage output(point) / ∂ input| (see ``effective_fields``); its extent:
    ``mass_side``."""
    stages = _stage_named(model, stage, tuple(image.shape[-2:]))
    return effective_fields(model, image, point, stages=stages)[stage]


# --- summaries ------------------------------------------------------------------------------------

def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the True pixels of an (H, W) mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        raise ValueError("the mask is empty")
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def mass_side(field: np.ndarray, point: tuple[int, int], mass: float = MASS) -> int:
    """The side of the smallest square centred on ``point`` = (y, x) that holds ``mass`` of the
    (H, W) field's total (parts outside the frame hold nothing)."""
    rows, cols = np.indices(field.shape)
    rings = np.maximum(abs(rows - point[0]), abs(cols - point[1]))  # Chebyshev distance
    per_ring = np.bincount(rings.ravel(), weights=np.asarray(field, dtype=np.float64).ravel())
    held = np.cumsum(per_ring)
    return 2 * int(np.searchsorted(held, mass * held[-1] * (1 - 1e-12))) + 1


# --- the explorer -------------------------------------------------------------------------------------

ZOOM_WIDTH = 768  # the frame is enlarged pixel for pixel to about this width
CACHED_POINTS = 32  # (model, point) results kept, most recent first
THEORETICAL_COLOUR = (0, 220, 255)  # outline of the theoretical field
POINT_COLOUR = (255, 255, 255)


@dataclass(frozen=True)
class StageFields:
    """A stage's receptive fields at one point."""

    stage: Stage
    theoretical: tuple[int, int, int, int]  # its bounding box (top, left, height, width)
    theoretical_side: int  # side of the square centred on the point that holds all of it
    effective: np.ndarray  # (H, W) |∂ output / ∂ input|
    effective_side: int  # side of the square centred on the point holding MASS of ``effective``


def model_input(image: np.ndarray | Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """A uint8 picture ((3, H, W) or (H, W, 3)) as the models take it: normalised float (3, H, W),
    resized first to ``size`` = (width, height) when given."""
    picture = tv_tensors.Image(torch.from_numpy(as_rgb(image)).permute(2, 0, 1))  # (3, H, W) uint8
    if size is not None:
        picture = v2.Resize((size[1], size[0]), antialias=True)(picture)
    return to_model_input()(picture).as_subclass(Tensor)


def heat(frame: np.ndarray, field: np.ndarray) -> np.ndarray:
    """``field`` (H, W) >= 0 as a heat map over the dimmed frame: (H, W, 3) uint8.

    The square root of the normalised field sets colour and opacity, so the faint tails where
    most of a wide field lies stay visible beside the peak.
    """
    level = np.sqrt(field / field.max()) if field.max() > 0 else np.zeros_like(field)
    colours = matplotlib.colormaps["inferno"](level)[..., :3] * 255  # (H, W, 3)
    alpha = 0.85 * level[..., None]
    return ((1 - alpha) * dimmed(frame) + alpha * colours).round().astype(np.uint8)


def _outline(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], zoom: int,
             colour: tuple[int, int, int]) -> None:
    top, left, height, width = box
    draw.rectangle((left * zoom, top * zoom, (left + width) * zoom - 1, (top + height) * zoom - 1),
                   outline=colour, width=2)


def field_picture(frame: np.ndarray, fields: StageFields, point: tuple[int, int], zoom: int
                  ) -> np.ndarray:
    """The frame under the effective field's heat, the theoretical field outlined, the point
    marked; enlarged ``zoom`` times."""
    picture = np.repeat(np.repeat(heat(frame, fields.effective), zoom, axis=0), zoom, axis=1)
    sheet = Image.fromarray(picture)
    draw = ImageDraw.Draw(sheet)
    _outline(draw, fields.theoretical, zoom, THEORETICAL_COLOUR)
    y, x = (zoom * p + zoom // 2 for p in point)
    arm = max(4, zoom)
    draw.line((x - arm, y, x + arm, y), fill=POINT_COLOUR, width=2)
    draw.line((x, y - arm, x, y + arm), fill=POINT_COLOUR, width=2)
    return np.asarray(sheet)


def _size(box: tuple[int, int, int, int]) -> str:
    return f"{box[2]}×{box[3]}"


def _shape(stage: Stage) -> str:
    return "×".join(map(str, stage.shape))


def fields_table(rows: Mapping[str, StageFields], current: str) -> str:
    """HTML: per stage, its output, its theoretical field and the sides of the squares around the
    pixel that hold all of the theoretical field and MASS of the effective one."""
    head = ("<tr><th>stage</th><th>output C×H×W</th><th>theoretical field</th>"
            f"<th>square: theoretical</th><th>square: effective ({MASS:.0%})</th></tr>")
    body = "".join(
        f"<tr style=\"{'font-weight:bold' if name == current else ''}\"><td>{html.escape(name)}</td>"
        f"<td>{_shape(row.stage)}</td><td>{_size(row.theoretical)}</td>"
        f"<td>{row.theoretical_side}</td><td>{row.effective_side}</td></tr>"
        for name, row in rows.items())
    return f"<table style=\"font-size:small\">{head}{body}</table>"


class ReceptiveFieldExplorer(_Browser):
    """Pick a model, a stage and a pixel: see which input pixels can sway that stage's output
    there (outlined) and which do (heat: the effective field of the model's current weights).

    Args:
        models: name -> model, e.g. ``{"my_fcn": ..., "U-Net": ..., "DeepLabV3+ OS16": ...,
            "DeepLabV3+ OS8": ...}``, trained or not. An untrained model's effective field is a
            narrow blob around the pixel; training usually widens it and bends it to the scene.
        image: one frame, a uint8 picture (3, H, W) or (H, W, 3), e.g. ``dataset.load(i)[0]``.
        size: (width, height) the frame is resized to first (the profile's size); None keeps it.

    Controls: ``model`` and ``stage`` (Dropdowns), ``x`` and ``y`` (IntSliders, the pixel). A
    click on the picture sets the sliders (through ``ipyevents``; ``on_click`` handles it). The
    caption compares the chosen stage's theoretical and effective field sizes, ``table`` every
    stage's; all stages' fields are computed once per (model, pixel) and kept, so changing the
    stage is instant, and so is going back to a pixel seen before. A new pixel costs one forward
    pass and one backward pass per stage: at 256×128 on one core of an AMD EPYC, about 0.4 s of
    CPU time for U-Net, 0.9 s for my_fcn, 0.6 / 1.4 s for DeepLabV3+ MobileNetV3 at output stride
    16 / 8 and 2.4 / 6 s for ResNet-101.
    """

    def __init__(self, models: Mapping[str, nn.Module], image: np.ndarray | Tensor, *,
                 size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if not models:
            raise ValueError("give at least one model, as {name: model}")
        self.models = dict(models)
        self.input = model_input(image, size)  # (3, H, W) normalised
        self.frame = as_rgb(denormalize(self.input))  # (H, W, 3) uint8: what the models see
        height, width = self.frame.shape[:2]
        self.zoom = max(1, ZOOM_WIDTH // width)
        self._graphs: dict[str, list[Stage]] = {}
        self._linear: dict[str, nn.Module] = {}
        self._cache: OrderedDict[tuple[str, int, int], dict[str, StageFields]] = OrderedDict()
        self._paused = False
        self.model = widgets.Dropdown(options=list(self.models), description="model")
        self.stage = widgets.Dropdown(description="stage")
        slider = {"continuous_update": False}
        self.x = widgets.IntSlider(width // 2, min=0, max=width - 1, description="x", **slider)
        self.y = widgets.IntSlider(height // 2, min=0, max=height - 1, description="y", **slider)
        self.table = widgets.HTML()
        self.clicks = Event(source=self.image, watched_events=["click"])
        self.clicks.on_dom_event(self.on_click)
        self.widget = widgets.VBox([widgets.HBox([self.model, self.stage]),
                                    widgets.HBox([self.x, self.y]), self.text, self.image, self.table])
        self.widget.add_class("segkit-receptive-explorer")
        self.model.observe(lambda _change: self._show_model(), names="value")
        self._rerender_on(self.stage, self.x, self.y)
        self._show_model()

    @contextmanager
    def _rendering_once(self) -> Iterator[None]:
        """Change several controls inside the block; render once after it."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False
        self.render()

    def _show_model(self) -> None:
        """Offer the chosen model's stages, keeping the stage if it has one of that name, else
        its deepest (coarsest) stage."""
        stages = self.stages(self.model.value)
        names = [stage.name for stage in stages]
        keep = self.stage.value if self.stage.value in names else max(stages, key=lambda s: s.level).name
        with self._rendering_once():
            self.stage.options = names
            self.stage.value = keep

    def stages(self, name: str) -> list[Stage]:
        """The stages of model ``name`` at the frame's size (traced once)."""
        if name not in self._graphs:
            self._graphs[name] = stage_graph(self.models[name], tuple(self.input.shape[-2:]))
        return self._graphs[name]

    def fields(self, name: str, point: tuple[int, int]) -> dict[str, StageFields]:
        """stage name -> its fields at ``point`` = (y, x) for model ``name``; kept for later."""
        key = (name, *point)
        if key not in self._cache:
            self._cache[key] = self._compute(name, point)
            while len(self._cache) > CACHED_POINTS:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def _compute(self, name: str, point: tuple[int, int]) -> dict[str, StageFields]:
        stages, size = self.stages(name), tuple(self.input.shape[-2:])
        if name not in self._linear:
            self._linear[name] = linearise(self.models[name])
        theoretical = _supports(self._linear[name], size, point, stages)
        effective = effective_fields(self.models[name], self.input, point, stages=stages)
        return {s.name: StageFields(s, bounding_box(theoretical[s.name]),
                                    mass_side(theoretical[s.name], point, 1.0),
                                    effective[s.name], mass_side(effective[s.name], point))
                for s in stages}

    def on_click(self, event: Mapping) -> None:
        """An ipyevents click: ``dataX``, ``dataY`` are pixels of the enlarged picture."""
        height, width = self.frame.shape[:2]
        with self._rendering_once():
            self.x.value = min(width - 1, max(0, int(event["dataX"]) // self.zoom))
            self.y.value = min(height - 1, max(0, int(event["dataY"]) // self.zoom))

    def render(self) -> None:
        """Draw the chosen stage's fields at the chosen pixel, computing them if new."""
        if self._paused or self.stage.value is None:
            return
        point = (self.y.value, self.x.value)
        rows = self.fields(self.model.value, point)
        row = rows[self.stage.value]
        self.image.value = to_png(field_picture(self.frame, row, point, self.zoom))
        self.text.value = self._caption(row)
        self.table.value = fields_table(rows, self.stage.value)

    def _caption(self, row: StageFields) -> str:
        stage = row.stage
        level = "H×W" if stage.level == 0 else f"H/{2 ** stage.level}"
        return (f"<b>{html.escape(self.model.value)}</b> · stage <b>{html.escape(stage.name)}</b> "
                f"{_shape(stage)} ({level}) · pixel x={self.x.value}, y={self.y.value}<br>"
                f"theoretical field {_size(row.theoretical)} px, all of it within a "
                f"<b>{row.theoretical_side}</b> px square around the pixel · effective field: "
                f"{MASS:.0%} of |∂ output / ∂ input| within a <b>{row.effective_side}</b> px square")
