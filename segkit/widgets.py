"""Interactive browsers for the notebooks: masks and predictions, model comparisons, augmentations.

Each browser composes its panels with numpy into one PNG shown in an ``ipywidgets.Image`` and its
caption in an ``ipywidgets.HTML``, so it renders the same with or without a live kernel (tests
change a control's ``.value`` and read ``browser.png`` and ``browser.text.value``). A cell ending in
a browser displays its ``widget``. Label maps are drawn pixel for pixel in the official colours,
void (ignore) in black.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision import tv_tensors
from torchvision.transforms import v2

from segkit import labels
from segkit.pictures import (
    as_labels,
    as_rgb,
    compact_labels,
    dimmed,
    error_map,
    overlay,
    real_classes,
    to_png,
)
from segkit.viz import image_scores

GAP = 4  # white pixels between panels
TITLE_HEIGHT = 18  # pixels of the title strip above the panels


# --- composing pictures ----------------------------------------------------------------------------

@cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=13)


def compose(panels: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """Titled (H, W, 3) uint8 panels side by side, ``GAP`` apart, on white: (T + H, sum W + gaps, 3)."""
    height = max(picture.shape[0] for _, picture in panels)
    width = sum(picture.shape[1] for _, picture in panels) + GAP * (len(panels) - 1)
    canvas = np.full((TITLE_HEIGHT + height, width, 3), 255, dtype=np.uint8)
    x = 0
    for _, picture in panels:
        canvas[TITLE_HEIGHT:TITLE_HEIGHT + picture.shape[0], x:x + picture.shape[1]] = picture
        x += picture.shape[1] + GAP
    sheet = Image.fromarray(canvas)
    draw, x = ImageDraw.Draw(sheet), 0
    for title, picture in panels:
        draw.text((x + 2, 2), title, fill=(40, 40, 40), font=_font())
        x += picture.shape[1] + GAP
    return np.asarray(sheet)


def highlight(image: np.ndarray, mask: np.ndarray, focus: int | None, scheme: str) -> np.ndarray:
    """The colour map of ``mask``; with ``focus`` only that class in colour, the rest dimmed image."""
    colours = labels.colorize(mask, scheme)
    if focus is None:
        return colours
    return np.where((mask == focus)[..., None], colours, dimmed(image)).round().astype(np.uint8)


def legend_html(masks: Sequence[np.ndarray], class_names: Sequence[str], scheme: str) -> str:
    """Colour swatches of the classes present in ``masks`` (and void, when present), as HTML."""
    present = np.zeros(256, dtype=bool)
    for mask in masks:
        present[np.unique(np.clip(mask, 0, 255))] = True
    colours = labels.palette(scheme).tolist()
    classes = real_classes(scheme)
    entries = [(tuple(colours[k]), class_names[k]) for k in classes if present[k]]
    if present[: classes.start].any() or present[classes.stop:].any():
        entries.append(((0, 0, 0), "void (ignored)"))
    return " ".join(f'<span style="white-space:nowrap"><span style="display:inline-block;width:1em;'
                    f'height:1em;vertical-align:middle;background:rgb{rgb};border:1px solid #555">'
                    f"</span> {html.escape(name)}</span>" for rgb, name in entries)


def _score(value: float) -> str:
    """A score as the course prints scores: a fraction with three decimals, 1.000 at best."""
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _button_row(names: Sequence[str], on: Sequence[str]) -> dict[str, widgets.ToggleButton]:
    return {name: widgets.ToggleButton(value=name in on, description=name,
                                       layout=widgets.Layout(width="auto")) for name in names}


class _Browser:
    """What every browser shares: the picture, the caption, display and re-rendering on change."""

    widget: widgets.VBox

    def __init__(self) -> None:
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))
        self.text = widgets.HTML()

    @property
    def png(self) -> bytes:
        """The picture shown now, as PNG bytes."""
        return bytes(self.image.value)

    def render(self) -> None:
        raise NotImplementedError

    def _rerender_on(self, *controls: widgets.ValueWidget) -> None:
        for control in controls:
            control.observe(lambda _change: self.render(), names="value")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _as_inputs(images: Sequence, targets: Sequence, names: Sequence[str] | None
               ) -> tuple[list[np.ndarray], list[np.ndarray], list[str] | None]:
    """Images as (H, W, 3) uint8, targets as (H, W) class maps (``compact_labels``: uint8 where the
    classes fit); checks counts and sizes."""
    images, targets = [as_rgb(x) for x in images], [compact_labels(t) for t in targets]
    if not images or len(images) != len(targets) or (names is not None and len(names) != len(images)):
        raise ValueError(f"need as many targets (got {len(targets)}) and names as images "
                         f"(got {len(images)}), and at least one image")
    for k, (image, target) in enumerate(zip(images, targets, strict=True)):
        if image.shape[:2] != target.shape:
            raise ValueError(f"sample {k}: image {image.shape[:2]} and target {target.shape} differ in size")
    return images, targets, None if names is None else [str(n) for n in names]


def _as_maps(maps: Sequence, targets: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    maps = [compact_labels(m) for m in maps]
    if len(maps) != len(targets) or any(m.shape != t.shape for m, t in zip(maps, targets, strict=False)):
        raise ValueError(f"{what}: need one map of the target's size per image")
    return maps


# --- masks and predictions -------------------------------------------------------------------------

class MaskBrowser(_Browser):
    """Browse images with their ground truth and (optionally) predictions, layer by layer.

    Args:
        images: uint8 pictures, (H, W, 3) arrays or (3, H, W) tensors.
        targets: ground-truth class maps (H, W).
        predictions: predicted class maps (H, W), one per image, or None.
        names: a name per image (e.g. file names), shown in the caption.
        class_names: the class names (default: those of ``scheme``).
        scheme: label scheme of the maps, for colours.
        order: "index" (as given) or "worst" (lowest per-image mIoU first; needs predictions).
        layers: the layers shown first (default: image, ground truth, prediction, errors; or
            image, ground truth, overlay without predictions).
        alpha: the overlay's label opacity.

    Controls: ``slider`` (position in the current order), ``toggles`` (layer -> ToggleButton),
    ``opacity``, ``class_filter`` (-1 = all classes, or one class index to highlight), ``order``.
    """

    LAYERS = ("image", "ground truth", "prediction", "overlay", "errors")

    def __init__(self, images: Sequence, targets: Sequence, predictions: Sequence | None = None, *,
                 names: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
                 scheme: str = "cityscapes19", order: str = "index",
                 layers: Sequence[str] | None = None, alpha: float = 0.5):
        super().__init__()
        self.images, self.targets, self.names = _as_inputs(images, targets, names)
        self.predictions = None if predictions is None else _as_maps(predictions, self.targets,
                                                                     "predictions")
        self.scheme = scheme
        self.class_names = tuple(class_names or labels.class_names(scheme))
        has_pred = self.predictions is not None
        self.scores = [image_scores(p, t, len(self.class_names))
                       for p, t in zip(self.predictions, self.targets, strict=True)] if has_pred else None
        if order not in ("index", "worst") or (order == "worst" and not has_pred):
            raise ValueError(f"order={order!r}: choose 'index', or 'worst' (which needs predictions)")
        if layers is None:
            layers = ("image", "ground truth", "prediction", "errors") if has_pred else (
                "image", "ground truth", "overlay")
        self._build_controls(layers, order, alpha, has_pred)
        self.render()

    def _build_controls(self, layers: Sequence[str], order: str, alpha: float, has_pred: bool) -> None:
        unknown = set(layers) - set(self.LAYERS)
        if unknown:
            raise ValueError(f"unknown layers {sorted(unknown)}; choose from {', '.join(self.LAYERS)}")
        self.slider = widgets.IntSlider(0, min=0, max=len(self.images) - 1, description="sample",
                                        continuous_update=False)
        self.order = widgets.Dropdown(options=[("dataset order", "index"), ("worst mIoU first", "worst")],
                                      value=order, description="order", disabled=not has_pred)
        self.toggles = _button_row(self.LAYERS, layers)
        for name in ("prediction", "errors"):
            self.toggles[name].disabled = not has_pred
        self.opacity = widgets.FloatSlider(alpha, min=0, max=1, step=0.05, description="opacity",
                                           continuous_update=False)
        self.class_filter = widgets.Dropdown(
            options=[("all classes", -1)] + [(self.class_names[k], k) for k in real_classes(self.scheme)],
            value=-1, description="classes")
        self.legend = widgets.HTML()
        self.widget = widgets.VBox([widgets.HBox([self.slider, self.order]),
                                    widgets.HBox(list(self.toggles.values())),
                                    widgets.HBox([self.opacity, self.class_filter]),
                                    self.text, self.image, self.legend])
        self.ranking = self._ranking(order)
        self.order.observe(self._reorder, names="value")
        self._rerender_on(self.slider, self.opacity, self.class_filter, *self.toggles.values())

    def _ranking(self, order: str) -> list[int]:
        """Sample indices in display order; "worst": by per-image mIoU, NaN last, ties by index."""
        if order == "index":
            return list(range(len(self.images)))
        return sorted(range(len(self.images)),
                      key=lambda i: (math.isnan(self.scores[i][0]), self.scores[i][0], i))

    def _reorder(self, change) -> None:
        self.ranking = self._ranking(change["new"])
        if self.slider.value == 0:
            self.render()
        else:
            self.slider.value = 0  # renders through the slider's observer

    @property
    def current(self) -> int:
        """The original index of the sample shown."""
        return self.ranking[self.slider.value]

    def render(self) -> None:
        """Redraw the picture, caption and legend for the current controls."""
        index = self.current
        panels = [(name, self._layer(name, index)) for name, toggle in self.toggles.items()
                  if toggle.value and not toggle.disabled]
        if not panels:
            panels = [("select a layer", np.full((32, 128, 3), 255, dtype=np.uint8))]
        self.image.value = to_png(compose(panels))
        self.text.value = self._caption(index)
        shown = [self.targets[index]] + ([self.predictions[index]] if self.predictions is not None else [])
        self.legend.value = legend_html(shown, self.class_names, self.scheme)

    def _layer(self, name: str, index: int) -> np.ndarray:
        image, target = self.images[index], self.targets[index]
        focus = self.class_filter.value if self.class_filter.value >= 0 else None
        pred = self.predictions[index] if self.predictions is not None else None
        if name == "image":
            return image
        if name in ("ground truth", "prediction"):
            return highlight(image, target if name == "ground truth" else pred, focus, self.scheme)
        if name == "overlay":
            shown = target if pred is None else pred
            if focus is not None:
                shown = np.where(shown == focus, shown, labels.IGNORE_INDEX)
            return overlay(image, shown, self.opacity.value, self.scheme)
        return error_map(image, target, pred, focus=focus, scheme=self.scheme)

    def _caption(self, index: int) -> str:
        parts = [f"<b>sample {self.slider.value + 1}/{len(self.images)}</b>", f"index {index}"]
        if self.names is not None:
            parts.append(f"<code>{html.escape(self.names[index])}</code>")
        if self.scores is not None:
            miou, acc = self.scores[index]
            parts += [f"mIoU {_score(miou)}", f"pixel acc {_score(acc)}"]
        if "overlay" in self.toggles and self.toggles["overlay"].value:
            parts.append("overlay: " + ("prediction" if self.predictions is not None else "ground truth"))
        return " · ".join(parts)

    @classmethod
    def from_model(cls, model: torch.nn.Module, dataset, *, count: int | None = None,
                   batch_size: int = 4, device: torch.device | str | None = None, **options) -> MaskBrowser:
        """Predict the first ``count`` samples of ``dataset`` with ``model`` and browse them.

        ``dataset`` yields (normalised float image (3, H, W), mask (H, W)), e.g. a
        ``CityscapesSegmentation`` with ``eval_transforms()``; uint8 images are normalised here.
        Images are shown denormalised. ``device`` moves the model there. ``options`` go to the
        constructor (e.g. ``order="worst"``).
        """
        images, targets, predictions = predict_samples(model, dataset, count=count,
                                                       batch_size=batch_size, device=device)
        scheme = getattr(dataset, "label_scheme", "cityscapes19")
        return cls(images, targets, predictions, names=sample_names(dataset, len(images)), scheme=scheme,
                   **options)


def sample_names(dataset, count: int) -> list[str] | None:
    """The file names of the first ``count`` samples of ``dataset`` (its ``images`` paths), or None."""
    paths = getattr(dataset, "images", None)
    return None if paths is None else [Path(p).name for p in paths[:count]]


def predict_samples(model: torch.nn.Module, dataset, *, count: int | None = None, batch_size: int = 4,
                    device: torch.device | str | None = None
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """(uint8 images (3, H, W), targets (H, W), predictions (H, W)) of the first ``count`` samples.

    Samples are read and predicted ``batch_size`` at a time (one at a time when their sizes
    differ), and only one byte a pixel is kept of each map and three of each image: a split of 200
    frames of 1024×512 takes 0.5 GB with its predictions; pass ``count`` for larger splits.
    """
    from segkit.inference import predict
    from segkit.transforms import denormalize, to_model_input

    count = len(dataset) if count is None else min(count, len(dataset))
    if device is not None:
        model.to(device)
    images, targets, predictions = [], [], []
    for start in range(0, count, batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, count))]
        inputs = [to_model_input()(tv_tensors.Image(x)) if x.dtype == torch.uint8 else x for x, _ in samples]
        if len({tuple(x.shape) for x in inputs}) == 1:
            maps = list(predict(model, torch.stack(inputs), batch_size=batch_size, device=device))
        else:  # frames of different sizes cannot share a batch
            maps = [predict(model, x[None], device=device)[0] for x in inputs]
        predictions += [torch.from_numpy(compact_labels(m)) for m in maps]
        images += [denormalize(x) for x in inputs]
        targets += [torch.from_numpy(compact_labels(m)) for _, m in samples]
    return images, targets, predictions


# --- several models -------------------------------------------------------------------------------

class ComparisonBrowser(_Browser):
    """The same sample across models: image, ground truth and one panel per model.

    Args:
        images, targets, names, class_names, scheme: as for ``MaskBrowser``.
        predictions: model name -> one class map per image.

    Controls: ``slider`` (sample) and ``errors`` (show each model's error map instead of its
    colour prediction). The caption gives each model's per-image mIoU.
    """

    def __init__(self, images: Sequence, targets: Sequence, predictions: Mapping[str, Sequence], *,
                 names: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
                 scheme: str = "cityscapes19"):
        super().__init__()
        self.images, self.targets, self.names = _as_inputs(images, targets, names)
        self.predictions = {model: _as_maps(maps, self.targets, model) for model, maps in predictions.items()}
        self.scheme = scheme
        self.class_names = tuple(class_names or labels.class_names(scheme))
        self.scores = {model: [image_scores(p, t, len(self.class_names))[0]
                               for p, t in zip(maps, self.targets, strict=True)]
                       for model, maps in self.predictions.items()}
        self.slider = widgets.IntSlider(0, min=0, max=len(self.images) - 1, description="sample",
                                        continuous_update=False)
        self.errors = widgets.ToggleButton(False, description="error maps")
        self.legend = widgets.HTML()
        self.widget = widgets.VBox([widgets.HBox([self.slider, self.errors]), self.text, self.image,
                                    self.legend])
        self._rerender_on(self.slider, self.errors)
        self.render()

    def render(self) -> None:
        """Redraw the picture, caption and legend for the current sample."""
        index = self.slider.value
        image, target = self.images[index], self.targets[index]
        panels = [("image", image), ("ground truth", labels.colorize(target, self.scheme))]
        for model, maps in self.predictions.items():
            pred = maps[index]
            picture = (error_map(image, target, pred, scheme=self.scheme) if self.errors.value
                       else labels.colorize(pred, self.scheme))
            panels.append((f"{model} ({_score(self.scores[model][index])})", picture))
        self.image.value = to_png(compose(panels))
        parts = [f"<b>sample {index + 1}/{len(self.images)}</b>"]
        if self.names is not None:
            parts.append(f"<code>{html.escape(self.names[index])}</code>")
        parts += [f"{html.escape(model)} mIoU {_score(scores[index])}"
                  for model, scores in self.scores.items()]
        self.text.value = " · ".join(parts)
        shown = [target] + [maps[index] for maps in self.predictions.values()]
        self.legend.value = legend_html(shown, self.class_names, self.scheme)


# --- augmentations ------------------------------------------------------------------------------------

class AugmentationExplorer(_Browser):
    """Try the training augmentations on one frame: the transformed image and mask side by side.

    Sliders set ``resize``, the factor this frame's sides are multiplied by (1 = as it is; unlike
    the training preset's random scale, which is relative to the crop height), the ``crop`` fraction
    of each side kept by a random crop, the
    colour jitter strengths (``brightness``, ``contrast``, ``saturation``, ``hue``) and the
    horizontal ``flip`` probability; random draws come from ``seed``, and ``resample`` draws anew
    (seed + 1). The mask goes through the same geometry with nearest-neighbour resampling, so it
    keeps pure class colours; colour jitter touches the image only.

    Args:
        image: uint8 (3, H, W) or (H, W, 3), e.g. ``dataset.load(i)[0]``.
        mask: class map (H, W).
        scheme: label scheme of the mask, for colours.
        seed: the first random seed.
    """

    def __init__(self, image, mask, *, scheme: str = "cityscapes19", seed: int = 0):
        super().__init__()
        self.source = (tv_tensors.Image(torch.from_numpy(as_rgb(image)).permute(2, 0, 1)),
                       tv_tensors.Mask(torch.from_numpy(as_labels(mask).copy())))
        self.scheme = scheme
        slider = dict(step=0.05, continuous_update=False)
        self.resize = widgets.FloatSlider(1.0, min=0.25, max=2.0, description="resize ×", **slider)
        self.crop = widgets.FloatSlider(1.0, min=0.2, max=1.0, description="crop", **slider)
        self.brightness = widgets.FloatSlider(0.0, min=0, max=1, description="brightness", **slider)
        self.contrast = widgets.FloatSlider(0.0, min=0, max=1, description="contrast", **slider)
        self.saturation = widgets.FloatSlider(0.0, min=0, max=1, description="saturation", **slider)
        self.hue = widgets.FloatSlider(0.0, min=0, max=0.5, step=0.01, description="hue",
                                       continuous_update=False)
        self.flip = widgets.FloatSlider(0.5, min=0, max=1, description="flip p", **slider)
        self.seed = widgets.IntText(seed, description="seed")
        self.resample = widgets.Button(description="resample", icon="refresh")
        self.resample.on_click(lambda _button: setattr(self.seed, "value", self.seed.value + 1))
        geometry = [self.resize, self.crop, self.flip]
        colour = [self.brightness, self.contrast, self.saturation, self.hue]
        self.widget = widgets.VBox([widgets.HBox([widgets.VBox([*geometry, self.seed, self.resample]),
                                                  widgets.VBox(colour)]),
                                    self.text, self.image])
        self._rerender_on(*geometry, *colour, self.seed)
        self.render()

    def transform(self) -> v2.Compose:
        """The v2 transform the controls describe, on (image, mask)."""
        height, width = self.source[1].shape
        size = (max(1, round(height * self.resize.value)), max(1, round(width * self.resize.value)))
        steps = [v2.Resize(size)] if size != (height, width) else []
        if self.crop.value < 1:
            steps.append(v2.RandomCrop((max(1, round(size[0] * self.crop.value)),
                                        max(1, round(size[1] * self.crop.value)))))
        steps.append(v2.RandomHorizontalFlip(self.flip.value))
        jitter = {"brightness": self.brightness.value, "contrast": self.contrast.value,
                  "saturation": self.saturation.value, "hue": self.hue.value}
        if any(jitter.values()):
            steps.append(v2.ColorJitter(**{k: v for k, v in jitter.items() if v}))
        return v2.Compose(steps)

    def render(self) -> None:
        """Apply the transform with the current seed and redraw."""
        transform = self.transform()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed.value)
            self.result = transform(*self.source)  # (image (3, h, w) uint8, mask (h, w))
        image, mask = as_rgb(self.result[0]), as_labels(self.result[1])
        self.image.value = to_png(compose([("image", image), ("mask", labels.colorize(mask, self.scheme))]))
        steps = " → ".join(type(t).__name__ for t in transform.transforms)
        self.text.value = (f"output {mask.shape[1]}×{mask.shape[0]} · seed {self.seed.value} · "
                           f"<code>{steps}</code>")
