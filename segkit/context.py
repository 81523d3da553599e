"""A run resolved once: where and how it trains, asked of the hardware before training starts.

``resolve_run`` decides, in this order, and keeps the answers in one immutable ``RunContext``:

1. determinism, first, so that whatever is timed next runs as training will (cuDNN's autotuner);
2. the device, a CUDA one always with its index, and whether the profile was made for it;
3. the memory cap of ``--gpu-memory``, which imitates a whole card (``runtime.cap_gpu_memory``);
4. the precision: bf16 where the GPU or CPU has it natively, on older GPUs fp16 with loss scaling
   once a trial step shows that the card computes it finitely (else fp32, said in one line);
5. the batch, for ``--batch-size auto`` (planned for that precision, confirmed on CUDA);
6. the memory layout, for ``channels_last="auto"`` (timed in that precision).

The loop and its validation (``engine.fit``), checkpoints (the precision and process count they
were saved with) and the run record (``run.RunRecord``) read the context instead of asking the
hardware again; the header line and ``run.json`` say what it holds and why. Under torchrun every
process resolves its own context and all keep one batch, one precision and one layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from segkit import distributed, planner
from segkit.config import PROFILES, TrainConfig
from segkit.io import DataError
from segkit.models.registry import min_train_batch, model_info
from segkit.runtime import (
    MemoryCap,
    autocast_dtype,
    cap_gpu_memory,
    describe_dtype,
    gpu_memory_gib,
    precision_name,
    precision_reason,
    resolve_device,
    set_determinism,
)
from segkit.step import fp16_trial, probe_step, resolve_channels_last

#: Profiles made for a CUDA GPU: on a CPU one of their steps takes minutes.
GPU_PROFILES = ("laptop", "gpu")


@dataclass(frozen=True)
class RunContext:
    """How one run trains, resolved once (``resolve_run``); every part of the run reads it."""

    device: torch.device  # a CUDA device always with its index (cuda:0)
    dtype: torch.dtype | None = None  # autocast precision of training and validation; None: fp32
    precision_why: str = "--amp off"  # e.g. "auto: native bf16 on this GPU"
    channels_last: bool = False  # the memory layout of the model and its batches
    memory_cap: MemoryCap | None = None  # the card ``--gpu-memory`` imitates, as applied
    profile: str | None = None  # the profile the run's config came from (None: a config as given)
    profile_why: str = ""  # "named", or what ``auto`` saw
    batch_why: str = ""  # how ``--batch-size auto`` chose the batch ("" when it was given)
    processes: int = 1  # processes training together (torchrun), one GPU each on CUDA

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``, in the words of ``--amp``."""
        return precision_name(self.dtype)

    @property
    def scaler(self) -> bool:
        """Whether gradients are loss-scaled: fp16's narrow range underflows without it."""
        return self.dtype is torch.float16

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled for fp16 only."""
        return torch.amp.GradScaler(self.device.type, enabled=self.scaler)

    def describe(self) -> str:
        """The header line's part, e.g. ``device cuda:0, precision fp16 autocast with loss scaling
        (auto: this GPU only emulates bf16), CUDA allocator capped at …``."""
        line = (f"device {self.device}, precision {describe_dtype(self.dtype, self.device)} "
                f"({self.precision_why})")
        return line + (f", {self.memory_cap}" if self.memory_cap is not None else "")

    def record(self) -> dict[str, Any]:
        """Plain data for ``run.json``."""
        return {"device": str(self.device), "precision": self.precision,
                "precision_why": self.precision_why, "loss_scaling": self.scaler,
                "channels_last": self.channels_last,
                "memory_cap": None if self.memory_cap is None else asdict(self.memory_cap),
                "profile": self.profile, "profile_why": self.profile_why,
                "batch_why": self.batch_why, "processes": self.processes}


FP16_FALLBACK = ("precision: one fp16 forward and backward on {device} gave non-finite values (some "
                 "cuDNN versions do so on GTX 16xx cards): training in fp32 instead, which needs "
                 "more memory (see segkit plan --amp off)")


def resolve_run(config: TrainConfig, *, model: nn.Module | None = None, profile: str | None = None,
                profile_why: str = "", auto_batch: bool = False,
                trial: Callable[[], bool] | None = None) -> tuple[TrainConfig, RunContext]:
    """The run of ``config``, resolved once: the config with its batch (``auto_batch``) and memory
    layout (``channels_last="auto"``) settled, and the ``RunContext`` every part reads.

    ``model`` is the one to train where it is built already (``fit``'s), else the config's is
    built from the registry for the trial step. ``profile`` and ``profile_why`` say where the
    config came from (``config.resolve_profile``); a profile made for a GPU is refused where
    ``--device auto`` finds none. ``trial`` stands in for the fp16 trial step
    (``step.fp16_trial``) in tests.
    """
    set_determinism(config.deterministic)
    device = resolve_device(config.device)
    check_device_fits_profile(profile, config.device, device)
    cap = cap_gpu_memory(config.gpu_memory, device)
    trial = trial or (lambda: fp16_trial(config, device, model))
    dtype, why = choose_precision(config.amp, device, trial)
    batch_why = ""
    if auto_batch:
        batch, batch_why = auto_batch_size(config, device, dtype)
        config = config.replace(batch_size=batch)
    check_trainable_batch(config, model)
    config = resolve_channels_last(config, device, dtype)
    return config, RunContext(device, dtype, why, config.channels_last, cap, profile, profile_why,
                              batch_why, distributed.world_size())


def choose_precision(amp: str, device: torch.device, trial: Callable[[], bool]
                     ) -> tuple[torch.dtype | None, str]:
    """The autocast dtype of ``amp`` on ``device`` and why; fp16 on a GPU only where ``trial()``
    (one fp16 forward and backward) is finite in every process, else fp32 with a line saying so."""
    dtype = autocast_dtype(amp, device)
    why = precision_reason(amp, device, dtype)
    tried = dtype is torch.float16 and device.type == "cuda"
    if distributed.smallest(int(trial() if tried else True)):  # every process asks, none waits
        return dtype, why
    if distributed.is_main_process():
        print(FP16_FALLBACK.format(device=device), flush=True)
    return None, f"{why}; fp16 was not finite in a trial step, so fp32"


def auto_batch_size(config: TrainConfig, device: torch.device, dtype: torch.dtype | None
                    ) -> tuple[int, str]:
    """The largest batch that ``segkit plan`` says fits the card (the one ``config.gpu_memory``
    imitates, else the GPU, else a 6 GiB card) in precision ``dtype``, and a note saying how it
    was chosen.

    On CUDA one real step at that batch confirms it, halving on out-of-memory (as Lightning's
    batch-size finder does). Under torchrun every process takes the smallest batch any of them
    chose, so that all have the same number of batches an epoch.
    """
    on_gpu = gpu_memory_gib(device) if device.type == "cuda" else None
    memory = config.gpu_memory or on_gpu or planner.DEFAULT_GPU_GIB
    planned = planner.choose_batch_size(config, memory, precision=precision_name(dtype))
    note = f"batch {planned} planned for {memory:.1f} GiB by segkit plan"
    if device.type != "cuda":
        chosen, note = planned, note + " (not confirmed: no CUDA device)"
    else:
        chosen = planner.confirm_batch_size(
            lambda batch: probe_step(config, device, batch, dtype=dtype), planned,
            model_info(config.model).min_batch)
        note += f", {chosen} confirmed by a forward+backward pass on {device}"
    agreed = distributed.smallest(chosen)
    if agreed != chosen:
        note += f"; {agreed}, the smallest any process confirmed"
    return agreed, note


def check_trainable_batch(config: TrainConfig, model: nn.Module | None = None) -> None:
    """Refuse a batch smaller than the model trains on (``ModelInfo.min_batch`` of ``model``, else
    of the config's) before training."""
    smallest = model_info(config.model).min_batch if model is None else min_train_batch(model)
    if config.batch_size < smallest:
        raise DataError(f"--batch-size {config.batch_size}: {config.model} trains on no fewer than "
                        f"{smallest} frames a batch; give --batch-size {smallest} or more")


def check_device_fits_profile(profile: str | None, asked: str, device: torch.device) -> None:
    """Refuse a GPU profile that ``--device auto`` resolved to the CPU, saying what to use; with an
    explicit ``--device cpu`` it runs, said loudly."""
    if profile not in GPU_PROFILES or device.type != "cpu":
        return
    recipe = PROFILES[profile].train
    width, height = recipe["size"]
    what = (f"--profile {profile} is made for a CUDA GPU ({width}x{height} crops, batch "
            f"{recipe['batch_size']}, amp {recipe['amp']}), and on this machine's CPU one of its "
            "steps takes minutes")
    if asked == "auto":
        raise DataError(f"{what}: use --profile cpu (or auto), or give --device cpu to train it on "
                        "the CPU all the same")
    if distributed.is_main_process():
        print(f"note: {what}; training it on the CPU as --device {asked} asks", flush=True)
