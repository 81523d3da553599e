"""What the course notebooks share: the one-line setup, their data, and their trained models.

Every notebook starts with ``course = setup()``: seeds, plot defaults, and the profile (argument,
``SEGKIT_PROFILE``, or ``auto``: ``cpu`` without a CUDA GPU, ``laptop`` on one of less than 16 GiB,
``gpu`` on a larger one); the ``ci`` profile also asks for deterministic kernels and quiets progress
bars, for nbval. Notebook 01 prepares the data; 04–06 show the recipe they run (``recipe``) and
train with ``train_model`` (which saves checkpoints, history and timings under
``runs/course-{profile}/{model}``); 07 reads them with ``load_run``.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from segkit import __version__, labels
from segkit.budget import format_duration
from segkit.callbacks import LivePlot
from segkit.checkpoints import model_from_checkpoint
from segkit.config import Profile, TrainConfig, get_profile, profile_config
from segkit.datasets import CityscapesSegmentation, ensure_synthetic
from segkit.engine import FitState
from segkit.inference import compare_protocols
from segkit.models import PretrainedWeightsWarning
from segkit.models.registry import model_info, model_options
from segkit.planner import checkpointing
from segkit.prepare import MANIFEST, read_manifest
from segkit.run import read_record, set_aside
from segkit.runtime import describe_precision, resolve_device, seed_everything, set_determinism
from segkit.training import train
from segkit.transforms import eval_transforms
from segkit.viz import set_style

if TYPE_CHECKING:  # pandas is imported when a table is made
    import pandas as pd

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

    def run_dir(self, model: str, seed: int = 0) -> Path:
        """Where ``model``'s course run with ``seed`` keeps best.pt, last.pt and run.json:
        ``runs/course-{profile}/{model}``, or ``{model}-seed{seed}`` for the other seeds."""
        return self.root / "runs" / f"course-{self.profile.name}" / (
            model if seed == 0 else f"{model}-seed{seed}")

    def config(self, model: str, **changes: Any) -> TrainConfig:
        """The profile's training config of ``model``, with the course's folders."""
        return profile_config(model, self.profile.name, out=str(self.run_dir(model)), **changes)

    def validation_set(self, size: tuple[int, int] | None = None) -> CityscapesSegmentation:
        """The validation split at the profile's validation size, normalised for models: frames and
        labels resized, the fast proxy training validates with (``protocol_table`` sets it beside
        scores on labels at full resolution)."""
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
    """Seeds, plot style and the profile, with deterministic kernels where the profile asks for them
    (``ci``, whose outputs nbval compares); returns the ``Course``. Prints one line."""
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


def train_model(course: Course, model: str, *, live: bool = True, minutes: float | None = None,
                resume: bool = False, seed: int = 0, **changes: Any) -> tuple[torch.nn.Module, FitState]:
    """Train ``model`` with the profile's settings on ``course.data``, as ``segkit train`` does
    (``segkit.training.train``); return the best model and the final state.

    ``minutes`` trains for that long (the learning rate decays to zero over it) instead of the
    profile's budget or epochs; ``changes`` are other ``TrainConfig`` fields. The run keeps
    ``best.pt``, ``last.pt``, ``run.json`` and its TensorBoard log in ``course.run_dir(model,
    seed)``: ``load_run`` reads them back, and ``seed_runs`` the other seeds' runs, which measure
    the seed-to-seed spread. ``resume`` continues that run: with more ``minutes`` (or ``epochs``)
    it trains on from where it stopped. Otherwise an earlier run is moved aside to a sibling
    folder named after its start time, never deleted. ``live`` shows a loss / IoU plot.
    """
    out = course.run_dir(model, seed)
    changes["seed"] = seed
    if minutes is not None:
        changes["time_budget"] = minutes * 60
    options = {}
    if "pretrained_backbone" in course.config(model).model_options:  # go on without the download
        options["allow_random_init"] = True
    if not resume and (earlier := set_aside(out)) is not None:
        print(f"an earlier {model} run was moved to {earlier}")
    state = train(model, profile=course.profile.name, data=course.data, out=out,
                  resume=resume, model_options=options,
                  callbacks=[LivePlot()] if live else [], progress=False, **changes)
    best, _ = model_from_checkpoint(out / "best.pt", course.device)
    return best, state


# --- the recipe in words -------------------------------------------------------------------------

#: The original study's recipe (its Table 1), which ``TrainConfig``'s defaults keep.
ORIGINAL = TrainConfig()
#: Why each profile departs from the original recipe where it does: one clause per setting
#: ("length" is the epochs or the time budget). Shown only where the profile's value differs.
WHY_THE_PROFILE_DIFFERS = {
    "ci": {"length": "enough to show that every step runs in minutes on two CPU cores (nbval checks "
                     "the notebooks; these scores mean nothing)",
           "batch_size": "two updates an epoch from its eight training frames, not one"},
    "cpu": {"length": "the course takes as long on a slow CPU as on a fast one, and a faster one "
                      "learns more (Budgeted Training, Li et al., 2020)",
            "batch_size": "twice the updates for the same images seen",
            "lr": "a rate that decays to zero over a short budget can start higher"},
    "laptop": {"length": "the course takes a known time on a 6 GB card (planned: not yet measured on "
                         "one), and the poly schedule brings the rate to zero at the budget's end, "
                         "so the run ends settled rather than cut off"},
    "gpu": {"length": "the course takes a known time on a large card (planned: not yet measured on "
                      "one), and the poly schedule brings the rate to zero at the budget's end, so "
                      "the run ends settled rather than cut off"},
}
OPTIMIZER_NAMES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD with momentum 0.9"}
BACKBONE_NAMES = {"mobilenet_v3_large": "MobileNetV3-Large", "resnet50": "ResNet-50",
                  "resnet101": "ResNet-101"}


def recipe(course: Course, model: str) -> str:
    """The recipe ``train_model(course, model)`` runs, in Markdown, for this profile and machine.

    Generated from ``course.config(model)`` and ``course.device``: length, data sizes, batch,
    optimizer, learning-rate schedule, loss, precision, memory layout, activation checkpointing, a
    backbone's weights and rate, and validation; then, only where they differ, how and why the
    profile departs from the original study (Adam, lr 0.001, weight decay 1e-05, batch 8, 500
    epochs). Notebooks 04–06 show it with ``IPython.display.Markdown``.
    """
    config = course.config(model)
    lines = [f"**The recipe of `{config.model}` in profile `{course.profile.name}`** "
             f"(on this machine: {course.device.type})", "",
             *(f"- **{name}**: {text}" for name, text in _recipe_items(config, course.device))]
    departures = _departures(config, WHY_THE_PROFILE_DIFFERS.get(course.profile.name, {}))
    original = (f"{OPTIMIZER_NAMES[ORIGINAL.optimizer]}, lr {ORIGINAL.lr:g}, weight decay "
                f"{ORIGINAL.weight_decay:g}, batch {ORIGINAL.batch_size}, {ORIGINAL.epochs} epochs")
    if departures:
        lines += ["", f"**Where it departs from the original study** ({original}):", "",
                  *(f"- {text}" for text in departures)]
    else:
        lines += ["", f"Otherwise as the original study ({original})."]
    return "\n".join(lines)


def _recipe_items(config: TrainConfig, device: torch.device) -> list[tuple[str, str]]:
    """(setting, what it is) pairs of ``config`` on ``device``, in the order a learner reads them."""
    width, height = config.size
    val_width, val_height = config.val_size or config.size
    accumulated = (f", {config.accumulate} batches accumulated: {config.batch_size * config.accumulate} "
                   "images per update" if config.accumulate > 1 else "")
    items = [
        ("Length", _length(config)),
        ("Data", f"random {width}×{height} crops of the training frames (random scale, flip, colour "
                 f"jitter); validation on whole frames resized to {val_width}×{val_height}"),
        ("Batch", f"batch {config.batch_size}{accumulated}"),
        ("Optimizer", f"{OPTIMIZER_NAMES[config.optimizer]}, weight decay {config.weight_decay:g} "
                      "(on weights, not on biases and norms)"),
        ("Learning rate", config.describe_schedule()),
        ("Loss", _loss_words(config)),
        ("Precision", describe_precision(config.amp, device).removeprefix("precision ")),
        ("Memory layout", {True: "channels-last",
                           "auto": "channels-last or not, whichever runs faster in a few steps "
                                   "timed before training",
                           False: "the default (channels-first)"}[config.channels_last]),
        ("Activation checkpointing", "on: activations are recomputed in backward, to save memory"
         if checkpointing(config) else "off"),
    ]
    if model_info(config.model).backbone:
        items.append(("Backbone", _backbone_words(config)))
    items.append(("Validation", _validation_words(config)))
    if config.deterministic:
        items.append(("Determinism", "deterministic kernels, so that a rerun gives the same numbers"))
    return items


def _length(config: TrainConfig) -> str:
    """``100 epochs``, or a time budget and what the schedule does over it."""
    if config.time_budget is None:
        return f"{config.epochs} epochs"
    budget = f"a time budget of {format_duration(config.time_budget)} of training and validation"
    if config.scheduler == "linear":
        return f"{budget}, the learning rate decaying linearly to zero over it"
    return f"{budget}, the learning-rate schedule spread over it"


def _loss_words(config: TrainConfig) -> str:
    loss = "cross-entropy" if config.loss == "ce" else f"focal loss (γ = {config.gamma:g})"
    if config.class_weights:
        loss += (", weighted towards the rare classes that mIoU counts (class weights from the "
                 "training labels' pixel counts)")
    return loss + "; void (255) pixels ignored"


def _backbone_words(config: TrainConfig) -> str:
    """Which backbone, whether it starts from ImageNet weights, and the rate it learns at."""
    options = {**model_options(config.model), **config.model_options}
    name = BACKBONE_NAMES.get(options["backbone"], options["backbone"])
    if not options["pretrained_backbone"]:
        return f"{name}, randomly initialised, learning at the full rate"
    return (f"{name}, ImageNet-pretrained where the weights are at hand (downloaded or in the "
            f"torch cache; otherwise random, with a warning), learning at {config.backbone_lr:g} × "
            f"the rate (lr {config.lr * config.backbone_lr:g}) so as to adjust its features, not "
            "wreck them")


def _validation_words(config: TrainConfig) -> str:
    every = "every epoch" if config.val_every == 1 else f"every {config.val_every} epochs and after the last"
    batches = (f" on the first {config.max_val_batches} batches of the split" if config.max_val_batches
               else "")
    return f"{every}{batches}: loss, global acc, mean acc and mIoU"


def _departures(config: TrainConfig, why: dict[str, str]) -> list[str]:
    """One line per setting of the original study's recipe that ``config`` changes, with the
    profile's reason (``why``, keyed by ``length`` or the field) where it gives one."""
    changed = []
    if config.time_budget is not None:
        changed.append(("length", f"a time budget of {format_duration(config.time_budget)} instead "
                                  f"of {ORIGINAL.epochs} epochs"))
    elif config.epochs != ORIGINAL.epochs:
        changed.append(("length", f"{config.epochs} epochs instead of {ORIGINAL.epochs}"))
    direction = "higher" if config.lr > ORIGINAL.lr else "lower"
    words = {  # field: how the change reads
        "batch_size": f"batch {config.batch_size} instead of {ORIGINAL.batch_size}",
        "lr": f"a {direction} learning rate, {config.lr:g} instead of {ORIGINAL.lr:g}",
        "optimizer": f"{OPTIMIZER_NAMES[config.optimizer]} instead of {OPTIMIZER_NAMES[ORIGINAL.optimizer]}",
        "weight_decay": f"weight decay {config.weight_decay:g} instead of {ORIGINAL.weight_decay:g}",
    }
    changed += [(name, text) for name, text in words.items()
                if getattr(config, name) != getattr(ORIGINAL, name)]
    return [f"{text}: {why[name]}" if name in why else text for name, text in changed]


def load_run(course: Course, model: str, seed: int = 0) -> tuple[torch.nn.Module, dict] | None:
    """The best model and ``run.json`` of an earlier ``train_model`` run, or None if there is none."""
    out = course.run_dir(model, seed)
    record = read_record(out)
    if record is None or not (out / "best.pt").is_file():
        return None
    net, _ = model_from_checkpoint(out / "best.pt", course.device)
    return net, record


def best_epoch(run: dict) -> dict:
    """The history row of ``run`` with the best validation mIoU."""
    return max(run["history"], key=lambda row: row.get("val_miou", -1.0))


def seed_runs(course: Course, model: str) -> list[dict]:
    """The finished runs (``run.json``) of ``model`` in this course, one per seed, by seed: seed 0
    from the notebooks, others from ``train_model(course, model, seed=…)`` or ``segkit train
    --seed … --out`` into ``course.run_dir(model, seed)``."""
    folder = course.run_dir(model).parent
    candidates = [folder / model, *folder.glob(f"{model}-seed*")]
    records = [record for path in candidates
               if (record := read_record(path)) is not None and record["status"] == "finished"]
    return sorted(records, key=lambda record: record["config"]["seed"])


def seed_spread(runs: dict[str, list[dict]]):
    """A pandas table, one row per model: how many seeds, and the mean, lowest and highest of their
    best validation mIoU."""
    import pandas as pd

    rows = {}
    for name, records in runs.items():
        best = [best_epoch(record)["val_miou"] for record in records]
        rows[name] = {"seeds": len(best), "mIoU mean": sum(best) / len(best) if best else math.nan,
                      "lowest": min(best, default=math.nan), "highest": max(best, default=math.nan)}
    return pd.DataFrame(rows).T


def best_model(runs: dict[str, list[dict]]) -> tuple[str | None, str]:
    """The model ahead of the others beyond the seed-to-seed spread (its worst seed beats every
    other model's best), or None; and a sentence saying why."""
    spread = seed_spread(runs)
    if (spread["seeds"] < 2).any():
        return None, ("with fewer than two seeds of a model the seed-to-seed spread is unknown, so no "
                      "model is named best; train seeds 1 and 2 (train_model(course, name, seed=1)) "
                      "to measure it")
    leader = spread["mIoU mean"].idxmax()
    others = spread.drop(leader)
    runner_up = others["highest"].idxmax()
    if spread.loc[leader, "lowest"] > others.loc[runner_up, "highest"]:
        return leader, (f"{leader}: its worst of {spread.loc[leader, 'seeds']:.0f} seeds "
                        f"({spread.loc[leader, 'lowest']:.3f} mIoU) beats every other model's best "
                        f"({runner_up}: {others.loc[runner_up, 'highest']:.3f})")
    return None, (f"no model is ahead beyond the seed-to-seed spread: {leader} (mean "
                  f"{spread.loc[leader, 'mIoU mean']:.3f}, lowest {spread.loc[leader, 'lowest']:.3f}) "
                  f"and {runner_up} (highest {others.loc[runner_up, 'highest']:.3f}) overlap")


#: Classes that cover much of every street scene, and thin or small ones that separate the models.
LARGE_CLASSES = ("road", "building", "vegetation", "sky")
THIN_CLASSES = ("pole", "traffic sign", "person", "bicycle")


def group_iou(ious, names: tuple[str, ...]) -> float:
    """Mean IoU over the classes ``names`` (absent classes, None or NaN, left out)."""
    picked = [ious[labels.CLASS_NAMES.index(name)] for name in names]
    values = [v for v in picked if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def comparison_table(runs: dict[str, dict]):
    """A pandas table, one row per model: size, cost, speed (images a second over the whole run, in
    the precision it trained in), memory of a step and best validation scores, with the mean IoU
    of the large and of the thin classes."""
    import pandas as pd

    return pd.DataFrame({name: {
        "parameters (M)": run["parameters"] / 1e6,
        "training time (s)": run["train_seconds"],
        "images seen": run["images_seen"],
        "img/s (training)": run["img_per_s"],
        "precision": run["precision"],
        "peak memory of a step (MB)": run["peak_mb"],
        "global acc": best_epoch(run)["val_pixel_acc"],
        "mean acc": best_epoch(run)["val_mean_acc"],
        "mIoU": best_epoch(run)["val_miou"],
        "IoU large classes": group_iou(best_epoch(run)["val_iou"], LARGE_CLASSES),
        "IoU thin classes": group_iou(best_epoch(run)["val_iou"], THIN_CLASSES),
    } for name, run in runs.items()}).T.infer_objects()  # numeric columns, so that .round() works


def protocol_table(course: Course, models: dict[str, torch.nn.Module],
                   runs: dict[str, dict]) -> pd.DataFrame:
    """Each model scored on ``course.data``'s val split four ways, one pandas table with rows
    (model, protocol): the training-time proxy every curve shows (labels resized to the validation
    size), the whole frame scored against full-resolution labels, sliding windows, and sliding
    windows with flip (``segkit.inference.compare_protocols``), on the profile's
    ``protocol_frames`` of the split (the ``cpu`` profile: every second frame, 24 of 48), or all.

    The windows (the training crop) tile the frame without overlap: 4 passes over a frame of
    twice the crop's width and height (the ``cpu`` profile's) instead of the 9 of ``segkit test
    --mode slide``'s third of overlap, about half the cost.

    ``models`` and ``runs`` as notebook 07 loads them (``load_run``): the trained models and their
    ``run.json``, whose recorded config says the crop and validation size each was trained with.
    """
    import pandas as pd

    configs = {name: TrainConfig.from_dict(runs[name]["config"]) for name in models}
    tables = {name: compare_protocols(model, configs[name], course.data, device=course.device,
                                      stride=configs[name].size, frames=course.profile.protocol_frames)
              for name, model in models.items()}
    return pd.concat(tables, names=["model", "protocol"])


def lesson_figures(course: Course, train: CityscapesSegmentation, manifest: dict) -> dict[str, Any]:
    """The figures the lessons explain with that need no training: the effect of class imbalance on
    pixel accuracy and mIoU, the synthetic frames' realism beside real Cityscapes, nearest against
    bilinear label resizing, my_FCN's architecture, and where dilated kernels and ASPP read."""
    from segkit import viz
    from segkit.models import build_model
    from segkit.step import config_model
    from segkit.synthetic import realism

    mask = train.load(0)[1].numpy()
    height, width = mask.shape
    deeplab = config_model(course.config("deeplabv3plus"), torch.device("cpu"))  # no weights loaded
    return {
        "02_imbalance_effect.png": viz.imbalance_effect(manifest["class_pixels"]["train"]),
        "02_realism.png": viz.realism(realism.measure(realism.official_frames(course.data, "train"))),
        "03_mask_resampling.png": viz.mask_resampling(mask, (width * 3 // 4, height * 3 // 4)),
        "04_my_fcn_architecture.png": viz.architecture(build_model("my_fcn"), (128, 256)),
        "06_dilation.png": viz.dilation_figure(deeplab),
    }


def write_figures(course: Course, out: str | os.PathLike = "pics") -> list[Path]:
    """Write the README's figures (PNG) from ``course.data`` and, where they exist, its trained runs.

    Returns the paths written: the data and lesson figures (``lesson_figures``) always; the figures
    of notebooks 04–07 need their runs (``train_model``):
    my_fcn's learning curves, U-Net's confusion matrix, DeepLabV3+'s mask browser on its worst
    validation frame, and 07's curves, per-class IoU and predictions side by side.
    """
    import matplotlib.pyplot as plt
    from torch.utils.data import DataLoader

    from segkit import viz
    from segkit.inference import evaluate
    from segkit.transforms import demo_transforms
    from segkit.widgets import MaskBrowser, predict_samples

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = CityscapesSegmentation(course.data, "train")
    manifest = read_manifest(course.data)
    figures = {
        "02_samples.png": viz.sample_grid(train, [0, 1]),
        "02_class_distribution.png": viz.class_distribution(
            {split: manifest["class_pixels"][split] for split in ("train", "val")}, log=True),
        "03_augmentation.png": viz.augmentation_grid(*train.load(1), demo_transforms(size=(256, 128))),
        **lesson_figures(course, train, manifest),
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
            {name: run["history"] for name, (_, run) in runs.items()}, x="minutes")
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
