"""One training configuration, and the named profiles that scale it to the machine at hand.

``TrainConfig`` holds every knob of ``segkit.engine.fit`` with its default from the original study's
Table 1 (Adam, lr 1e-3, weight decay 1e-5, batch 8). Notebooks use ``dataclasses.replace(cfg, …)``;
the command line is built from the same fields; ``asdict(cfg)`` goes into every checkpoint.

Profiles (``ci``, ``cpu``, ``laptop``, ``gpu``) choose data size, resolution and how long each model
trains (epochs, or a time budget) so that one notebook runs in minutes on two CPU cores for CI, gives
a real result in minutes on a laptop CPU, fits a 6 GB laptop GPU, or follows the original study on
a large GPU. Pick one by argument or with the
``SEGKIT_PROFILE`` environment variable; ``auto`` (the default) picks ``cpu``, ``laptop`` or ``gpu``
from the device and its memory.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from segkit.budget import format_duration
from segkit.io import parse_size

SCHEDULERS = ("none", "linear", "poly", "cosine", "step")
OPTIMIZERS = ("adam", "adamw", "sgd")
AMP_MODES = ("auto", "off", "fp16", "bf16")


@dataclass
class TrainConfig:
    """Everything a training run needs besides the model and the data loaders."""

    model: str = "my_fcn"  # registry name (segkit.models.list_models())
    model_options: dict[str, Any] = field(default_factory=dict)  # keyword options of build_model
    data: str | None = None  # prepared or official root; None: the synthetic default set
    size: tuple[int, int] = (512, 256)  # training crop (width, height)
    base_height: int | None = None  # frame height at scale 1 before the crop (None: crop height)
    val_size: tuple[int, int] | None = None  # validation resolution (None: size)
    epochs: int = 500  # the original study trained 500 epochs
    time_budget: float | None = None  # seconds of training and validation, instead of epochs
    batch_size: int = 8  # per process: under torchrun the global batch is batch_size x processes
    lr: float = 1e-3
    backbone_lr: float = 0.1  # a pretrained backbone learns at lr x this (1.0: at lr, like the rest)
    weight_decay: float = 1e-5
    optimizer: str = "adam"  # adam | adamw | sgd (momentum 0.9)
    scheduler: str = "none"  # none | linear | poly | cosine | step (lr decays per iteration)
    warmup_iters: int = 0  # linear warm-up iterations before the scheduler
    poly_power: float = 0.9
    step_epochs: int = 30  # step scheduler: decay every so many epochs
    step_gamma: float = 0.1
    loss: str = "ce"  # ce | focal
    gamma: float = 2.0  # focal loss focusing parameter
    class_weights: bool = False  # weight classes by the training label histogram
    amp: str = "auto"  # auto (bf16 where native; older GPUs fp16, other CPUs fp32) | off | fp16 | bf16
    # True | False | "auto": time a few steps both ways before training, keep the faster (as a bool)
    channels_last: bool | str = False
    sync_bn: bool = False  # under torchrun on GPUs: BatchNorm statistics of the global batch
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    grad_clip: float | None = None  # max gradient norm, None = no clipping
    num_workers: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    seed: int = 0
    deterministic: bool = False  # deterministic kernels (slower on GPUs; the ci profile's choice)
    log_every: int = 20  # batches between loss read-backs (each waits for the GPU)
    gpu_memory: float | None = None  # GiB: imitate a card this large (its CUDA context included)
    max_iters: int | None = None  # cap on training iterations per epoch (quick runs)
    max_val_batches: int | None = None  # cap on validation batches (quick runs)
    val_every: int = 1  # validate every so many epochs
    out: str = "checkpoints"  # folder for last.pt / best.pt (never inside the package)
    log_dir: str | None = None  # TensorBoard folder; None = no TensorBoard
    label_scheme: str = "cityscapes19"  # or "original20" (the original study's 20 classes)
    oom: str = "fail"  # on CUDA out-of-memory: fail (with advice) | retry (halve the batch)

    def __post_init__(self) -> None:
        if isinstance(self.size, str):
            self.size = parse_size(self.size)
        self.size = tuple(self.size)
        if isinstance(self.val_size, str):
            self.val_size = parse_size(self.val_size)
        if self.val_size is not None:
            self.val_size = tuple(self.val_size)
        for name, value, choices in (("scheduler", self.scheduler, SCHEDULERS),
                                     ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("amp", self.amp, AMP_MODES),
                                     ("oom", self.oom, ("fail", "retry")),
                                     ("loss", self.loss, ("ce", "focal"))):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if not self.backbone_lr > 0:
            raise ValueError(f"backbone_lr is a factor of lr and must be positive, got {self.backbone_lr}")
        if self.channels_last not in (True, False, "auto"):
            raise ValueError(f"channels_last {self.channels_last!r}: choose True, False or 'auto'")
        for name in ("epochs", "batch_size", "accumulate", "log_every", "val_every"):
            if getattr(self, name) < 1:  # named alone: the message says which one to change
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError("time_budget must be more than zero seconds")

    def summary(self, processes: int = 1) -> str:
        """The recipe in one line: epochs, crop, batch (per process when ``processes`` > 1),
        optimiser, learning-rate schedule (``describe_schedule``), loss."""
        width, height = self.size
        batch = f"batch {self.batch_size}" + (
            f" per process x {processes} processes = {self.batch_size * processes}" if processes > 1 else "")
        loss = f"{'class-weighted ' if self.class_weights else ''}{self.loss}"
        extras = [name for name, on in (("channels_last", self.channels_last is True),
                                        ("channels_last auto", self.channels_last == "auto"),
                                        ("deterministic", self.deterministic)) if on]
        if self.amp != "auto":
            extras.append(f"amp {self.amp}")
        if self.gpu_memory:
            extras.append(f"imitating a {self.gpu_memory:g} GiB card")
        length = (f"{self.epochs} epochs" if self.time_budget is None
                  else f"a {format_duration(self.time_budget)} budget")
        return (f"{length} of {width}x{height} crops, {batch}, "
                f"{self.optimizer}, {self.describe_schedule()}, "
                f"weight decay {self.weight_decay:g}, {loss} loss"
                + "".join(f", {extra}" for extra in extras))

    def describe_schedule(self) -> str:
        """The learning rate over the run in words: ``constant lr 0.001``, ``lr 0.002 decaying
        linearly to 0 after 20 warm-up steps``, ``lr 0.001 decaying to 0 by poly (power 0.9)``,
        ``… by cosine``, ``lr 0.001 decaying by step (x0.1 every 30 epochs)``.

        Warm-up steps are optimizer steps, over which the rate rises linearly to ``lr``; the decay
        reaches 0 at the last epoch, or with a time budget at the budget's end.
        """
        warmup = f" after {self.warmup_iters} warm-up steps" if self.warmup_iters else ""
        decay = {"none": None, "linear": "decaying linearly to 0",
                 "poly": f"decaying to 0 by poly (power {self.poly_power:g})",
                 "cosine": "decaying to 0 by cosine",
                 "step": f"decaying by step (x{self.step_gamma:g} every {self.step_epochs} epochs)",
                 }[self.scheduler]
        if decay is None:
            return f"constant lr {self.lr:g}{warmup}"
        return f"lr {self.lr:g} {decay}{warmup}"

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; unknown keys raise ``TypeError`` naming them."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from plain data (a checkpoint's config), rejecting unknown keys."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise KeyError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**values)


@dataclass(frozen=True)
class Profile:
    """How strongly to run: data to generate and the training settings per model."""

    name: str
    synth_size: tuple[int, int]  # synthetic frames are generated at this size
    synth_frames: int  # frames per split
    train: dict[str, Any]  # TrainConfig overrides for every model
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra overrides per model
    protocol_frames: int | None = None  # validation frames notebook 07's protocol table scores (None: all)


PROFILES = {
    # ci: deterministic kernels, so that notebook outputs compare equal under nbval
    "ci": Profile("ci", synth_size=(256, 128), synth_frames=8,
                  train={"size": (128, 64), "epochs": 2, "batch_size": 4, "num_workers": 0,
                         "max_val_batches": 2, "deterministic": True},
                  per_model={"deeplabv3plus": {"model_options": {"backbone": "resnet50",
                                                                  "pretrained_backbone": True}}}),
    # cpu: 2.5 minutes of training and validation per model whatever the CPU's speed (a faster one
    # learns more), so that the seven notebooks with their labs take at most 15 minutes on 2 cores;
    # the learning rate decays linearly to zero over them (Budgeted Training, Li et al., ICLR 2020).
    # Validating every second epoch leaves a tenth more of the budget to training (the last epoch is
    # always validated). Batch 4 gives twice the updates of batch 8 for the same images seen, and
    # class weights lift the thin classes that mIoU counts. Notebook 07 scores its four protocols
    # (14 times the pixels of the proxy alone) on every second validation frame: 24 of the 48.
    "cpu": Profile("cpu", synth_size=(512, 256), synth_frames=48, protocol_frames=24,
                   train={"size": (256, 128), "time_budget": 150.0, "val_every": 2, "batch_size": 4,
                          "num_workers": 2, "lr": 2e-3, "scheduler": "linear", "warmup_iters": 20,
                          "class_weights": True, "channels_last": "auto"},
                   per_model={"deeplabv3plus": {"lr": 1e-3,
                                                "model_options": {"backbone": "mobilenet_v3_large",
                                                                  "pretrained_backbone": True}}}),
    # gpu and laptop train for a time budget too, the poly schedule decaying to zero over it, so that
    # a learner knows how long the course takes on a card as on a CPU. Planned, not yet measured on
    # a GPU: 15 minutes a model on a large card, 10 on a 6 GB one.
    "gpu": Profile("gpu", synth_size=(2048, 1024), synth_frames=200,
                   train={"size": (1024, 512), "time_budget": 900.0, "batch_size": 8, "num_workers": 8,
                          "scheduler": "poly", "warmup_iters": 100, "amp": "auto",
                          "channels_last": True},
                   per_model={"deeplabv3plus": {"model_options": {"pretrained_backbone": True}}}),
    # laptop: a 6 GB card (GTX 1660 Ti, RTX 2060, 3050-3060 laptop). The largest shared crop and batch
    # that fit all three models with 10 % kept free (`segkit plan --profile laptop --gpu-memory 6`):
    # 1024x512 batch 8 in 16 bits (bf16 on the 30xx cards, which have it natively; fp16 on the
    # others, after a trial step shows it finite there), with activation checkpointing for my_fcn
    # (6.2 GiB without) and DeepLabV3+ ResNet-101 (7.8 GiB without); U-Net fits without it (4.2 GiB).
    "laptop": Profile("laptop", synth_size=(2048, 1024), synth_frames=100,
                      train={"size": (1024, 512), "time_budget": 600.0, "batch_size": 8,
                             "num_workers": 4, "scheduler": "poly", "warmup_iters": 100, "amp": "auto",
                             "channels_last": True},
                      per_model={"my_fcn": {"model_options": {"checkpointing": True}},
                                 "deeplabv3plus": {"model_options": {
                                     "backbone": "resnet101", "pretrained_backbone": True,
                                     "checkpoint_backbone": True}}}),
}


#: Below this much GPU memory (GiB) ``auto`` picks the ``laptop`` profile, from it on ``gpu``.
LARGE_GPU_GIB = 16.0


def auto_profile() -> tuple[str, str]:
    """The profile for this machine and why: ``cpu`` without CUDA, ``laptop`` for a GPU of less than
    16 GiB, ``gpu`` for larger ones."""
    from segkit.runtime import gpu_memory_gib

    memory = gpu_memory_gib()
    if memory is None:
        return "cpu", "no CUDA GPU"
    import torch

    name = "laptop" if memory < LARGE_GPU_GIB else "gpu"
    return name, f"{torch.cuda.get_device_name()}, {memory:.1f} GiB"


def resolve_profile(name: str | None = None) -> tuple[str, str]:
    """The profile ``name``, else ``$SEGKIT_PROFILE``, else the one ``auto`` picks for this machine
    (asking the GPU once), and why: ``("ci", "named")``, ``("laptop", "auto: NVIDIA GeForce GTX
    1660 Ti, 5.8 GiB")``."""
    name = name or os.environ.get("SEGKIT_PROFILE") or "auto"
    why = "named"
    if name == "auto":
        name, seen = auto_profile()
        why = f"auto: {seen}"
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; choose one of auto, {', '.join(PROFILES)}")
    return name, why


def profile_name(name: str | None = None) -> str:
    """The profile ``name``, else ``$SEGKIT_PROFILE``, else ``auto`` resolved for this machine."""
    return resolve_profile(name)[0]


def describe_profile(name: str | None = None) -> str:
    """``"profile laptop (auto: NVIDIA GeForce GTX 1660 Ti, 5.8 GiB)"``, or ``"profile ci"`` when named."""
    chosen, why = resolve_profile(name)
    return f"profile {chosen}" if why == "named" else f"profile {chosen} ({why})"


def get_profile(name: str | None = None) -> Profile:
    """The profile ``name``, else ``$SEGKIT_PROFILE``, else the one ``auto`` picks for this machine."""
    return PROFILES[profile_name(name)]


def profile_config(model: str, profile: str | None = None, **changes: Any) -> TrainConfig:
    """The ``TrainConfig`` of ``model`` under a profile, with ``changes`` applied last."""
    chosen = get_profile(profile)
    values = {**chosen.train, **chosen.per_model.get(model, {}), **changes}
    return TrainConfig(model=model, **values)
