"""What the course notebooks share: the one-line setup, their data, and their trained models.

Every notebook starts with ``course = setup()``: seeds and deterministic kernels, plot defaults,
quiet progress bars in the ``ci`` profile, and the profile itself (argument, ``SEGKIT_PROFILE``, or
``cpu``). Notebook 01 prepares the data; 04–06 train with ``train_model`` (which saves checkpoints,
history and timings under ``runs/course-{profile}/{model}``); 07 reads them with ``load_run``.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segkit import __version__, labels
from segkit.bench import measure_step, resolve_channels_last
from segkit.callbacks import Checkpointer
from segkit.checkpoints import model_from_checkpoint
from segkit.config import Profile, TrainConfig, get_profile, profile_config
from segkit.datasets import CityscapesSegmentation, build_loaders, ensure_synthetic
from segkit.engine import FitState, fit
from segkit.models import PretrainedWeightsWarning, build_model
from segkit.models.registry import INIT_ONLY_OPTIONS
from segkit.prepare import MANIFEST, read_manifest
from segkit.runtime import resolve_device, seed_everything, set_determinism
from segkit.transforms import eval_transforms
from segkit.viz import LivePlot, set_style

#: The real small subset, when notebook 01 prepared it from the official download.
REAL_DATA = "cityscapes-small"


@dataclass
class Course:
    """The profile and the folders of this course run."""

    profile: Profile
    root: Path  # the project folder: data/, runs/ and checkpoints live here
    device: torch.device

    @property
    def synthetic(self) -> Path:
        """Where the profile's synthetic set (official layout and zips) is generated."""
        return self.root / "data" / f"synthetic-{self.profile.name}" / "raw"

    @property
    def data(self) -> Path:
        """The prepared data the notebooks train on: the real subset if prepared, else synthetic."""
        real = self.root / "data" / REAL_DATA
        if (real / MANIFEST).is_file():
            return real
        return ensure_synthetic(self.profile, self.synthetic.parent, progress=False)

    def run_dir(self, model: str) -> Path:
        """Where ``model``'s course run keeps best.pt, last.pt and run.json."""
        return self.root / "runs" / f"course-{self.profile.name}" / model

    def config(self, model: str, **changes: Any) -> TrainConfig:
        """The profile's training config of ``model``, with the course's folders."""
        return profile_config(model, self.profile.name, out=str(self.run_dir(model)), **changes)

    def validation_set(self, size: tuple[int, int] | None = None) -> CityscapesSegmentation:
        """The validation split at the profile's validation size, normalised for models."""
        size = size or self.profile.train.get("val_size") or self.profile.train["size"]
        return CityscapesSegmentation(self.data, "val", eval_transforms(size=size))


def project_root(start: Path | None = None) -> Path:
    """``$SEGKIT_HOME`` if set, else the nearest folder at or above ``start`` holding this project
    (pyproject.toml + segkit/), else ``start`` (default: the working folder)."""
    if os.environ.get("SEGKIT_HOME"):
        return Path(os.environ["SEGKIT_HOME"])
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "segkit").is_dir():
            return folder
    return start


#: (category, message regex) of the warnings the ``ci`` profile silences: expected noise only.
#: Everything else stays visible, e.g. a backbone falling back to random weights.
CI_SILENCED_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # seed_everything asks for deterministic kernels with warn_only=True: torch names each
    # backward kernel (e.g. bilinear upsampling on the CPU) that has no deterministic version.
    (UserWarning, ".*does not have a deterministic implementation"),
)


def _one_line_warnings(*categories: type[Warning]) -> None:
    """Show warnings of ``categories`` as one line ``Category: message`` (no source line)."""
    previous = warnings.formatwarning
    if getattr(previous, "one_line", None) == categories:
        return  # setup() ran before in this kernel

    def formatwarning(message, category, filename, lineno, line=None):
        if issubclass(category, categories):
            return f"{category.__name__}: {message}\n"
        return previous(message, category, filename, lineno, line)

    formatwarning.one_line = categories
    warnings.formatwarning = formatwarning


def setup(profile: str | None = None, *, seed: int = 0) -> Course:
    """Seeds, determinism, plot style and the profile; returns the ``Course``. Prints one line."""
    chosen = get_profile(profile)
    set_determinism(chosen.train.get("deterministic", False))
    seed_everything(seed)
    set_style()
    if chosen.name == "ci":  # nbval compares outputs: no progress bars, none of the named warnings
        os.environ["TQDM_DISABLE"] = "1"
        for category, message in CI_SILENCED_WARNINGS:
            warnings.filterwarnings("ignore", message, category)
    _one_line_warnings(PretrainedWeightsWarning)
    course = Course(chosen, project_root(), resolve_device("auto"))
    print(f"segkit {__version__} | profile {chosen.name} | device {course.device.type}")
    return course


def train_model(course: Course, model: str, *, live: bool = True, **changes: Any
                ) -> tuple[torch.nn.Module, FitState]:
    """Train ``model`` with the profile's settings on ``course.data``; save the run for notebook 07.

    Shows a live loss / IoU plot (``live``), keeps ``best.pt`` and ``last.pt``, and writes
    ``run.json`` (history, training time, parameters, img/s and peak memory of a training step).
    An earlier run of the same profile is replaced.
    """
    config = course.config(model, **changes)
    if "pretrained_backbone" in config.model_options:  # a course goes on without the download
        config = config.replace(model_options={**config.model_options, "allow_random_init": True})
    config = resolve_channels_last(config, course.device)
    print(f"{config.model}, profile {course.profile.name}: {config.summary()}")
    seed_everything(config.seed)
    train_loader, val_loader = build_loaders(course.data, config)
    net = build_model(config.model, num_classes=labels.NUM_CLASSES, **config.model_options)
    out = Path(config.out)
    for stale in ("last.pt", "best.pt", "run.json"):
        (out / stale).unlink(missing_ok=True)
    started = time.perf_counter()
    state = fit(net, train_loader, val_loader, config,
                [*([LivePlot()] if live else []), Checkpointer(out)])
    seconds = time.perf_counter() - started
    # A timed step needs no ImageNet weights: building it without them never downloads twice.
    timed_options = {k: v for k, v in config.model_options.items() if k not in INIT_ONLY_OPTIONS}
    step = measure_step(config.model, config.size, config.batch_size, course.device,
                        config.channels_last, None, **timed_options)
    run = {"model": config.model, "profile": course.profile.name, "history": state.history,
           "train_seconds": seconds, "parameters": sum(p.numel() for p in net.parameters()),
           "img_per_s": step["img_per_s"], "peak_mb": step["peak_mb"],
           "stopped": state.stop}
    (out / "run.json").write_text(json.dumps(run, indent=1))
    best, _ = model_from_checkpoint(out / "best.pt", course.device)
    return best, state


def load_run(course: Course, model: str) -> tuple[torch.nn.Module, dict] | None:
    """The best model and ``run.json`` of an earlier ``train_model`` run, or None if there is none."""
    out = course.run_dir(model)
    if not ((out / "run.json").is_file() and (out / "best.pt").is_file()):
        return None
    net, _ = model_from_checkpoint(out / "best.pt", course.device)
    return net, json.loads((out / "run.json").read_text())


def best_epoch(run: dict) -> dict:
    """The history row of ``run`` with the best validation mIoU."""
    return max(run["history"], key=lambda row: row.get("val_miou", -1.0))


#: Classes that cover much of every street scene, and thin or small ones that separate the models.
LARGE_CLASSES = ("road", "building", "vegetation", "sky")
THIN_CLASSES = ("pole", "traffic sign", "person", "bicycle")


def group_iou(ious, names: tuple[str, ...]) -> float:
    """Mean IoU over the classes ``names`` (absent classes, None or NaN, left out)."""
    picked = [ious[labels.CLASS_NAMES.index(name)] for name in names]
    values = [v for v in picked if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def comparison_table(runs: dict[str, dict]):
    """A pandas table, one row per model: size, cost, speed, memory and best validation scores,
    with the mean IoU of the large and of the thin classes."""
    import pandas as pd

    return pd.DataFrame({name: {
        "parameters (M)": run["parameters"] / 1e6,
        "training time (s)": run["train_seconds"],
        "img/s (train step)": run["img_per_s"],
        "peak memory (MB)": run["peak_mb"],
        "global acc": best_epoch(run)["val_pixel_acc"],
        "mean acc": best_epoch(run)["val_mean_acc"],
        "mIoU": best_epoch(run)["val_miou"],
        "IoU large classes": group_iou(best_epoch(run)["val_iou"], LARGE_CLASSES),
        "IoU thin classes": group_iou(best_epoch(run)["val_iou"], THIN_CLASSES),
    } for name, run in runs.items()}).T


def write_figures(course: Course, out: str | os.PathLike = "pics") -> list[Path]:
    """Write the README's figures (PNG) from ``course.data`` and, where they exist, its trained runs.

    Returns the paths written; the figures of notebooks 04–07 need their runs (``train_model``):
    my_fcn's learning curves, U-Net's confusion matrix, DeepLabV3+'s mask browser on its worst
    validation frame, and 07's curves, per-class IoU and predictions side by side.
    """
    import matplotlib.pyplot as plt
    from torch.utils.data import DataLoader

    from segkit import viz
    from segkit.engine import evaluate
    from segkit.transforms import demo_transforms
    from segkit.widgets import MaskBrowser, predict_samples

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = CityscapesSegmentation(course.data, "train")
    manifest = read_manifest(course.data)
    figures = {
        "02_samples.png": viz.sample_grid(train, [0, 1]),
        "02_class_distribution.png": viz.class_distribution(
            {split: manifest["class_pixels"][split] for split in ("train", "val")}),
        "03_augmentation.png": viz.augmentation_grid(*train.load(1), demo_transforms(size=(256, 128))),
    }
    runs = {name: load_run(course, name) for name in ("my_fcn", "unet", "deeplabv3plus")}
    runs = {name: run for name, run in runs.items() if run is not None}
    val = course.validation_set()
    if "my_fcn" in runs:
        figures["04_my_fcn_curves.png"] = viz.training_curves({"my_fcn": runs["my_fcn"][1]["history"]})
    if "unet" in runs:
        scores = evaluate(runs["unet"][0], DataLoader(val, batch_size=4))
        figures["05_unet_confusion.png"] = viz.confusion_matrix(scores["confusion"])
    if "deeplabv3plus" in runs:
        figures["06_deeplabv3plus_browser.png"] = MaskBrowser.from_model(
            runs["deeplabv3plus"][0], val, order="worst").png
    if runs:
        figures["07_training_curves.png"] = viz.training_curves(
            {name: run["history"] for name, (_, run) in runs.items()})
        figures["07_per_class_iou.png"] = viz.per_class_iou(
            {name: best_epoch(run)["val_iou"] for name, (_, run) in runs.items()})
        outputs = {name: predict_samples(model, val, count=3) for name, (model, _) in runs.items()}
        images, targets, _ = next(iter(outputs.values()))
        figures["07_predictions.png"] = viz.predictions_grid(
            images, targets, {name: predicted for name, (_, _, predicted) in outputs.items()})
    written = []
    for name, figure in figures.items():
        if isinstance(figure, bytes):  # a widget's picture, already PNG
            (out / name).write_bytes(figure)
        else:
            figure.savefig(out / name, dpi=80, bbox_inches="tight")
            plt.close(figure)
        written.append(out / name)
    return written
