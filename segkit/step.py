"""The one training step: forward under autocast, the loss in fp32, backward, the optimizer step.

Everything that trains, or measures training, runs these functions: ``engine.fit`` (batch by
batch, in chunks after an out-of-memory error, over accumulation windows), the planner's memory
calibration, the benchmarks, the run record's memory figure, the batch probe of ``--batch-size
auto``, the fp16 trial, the learning-rate range test and the labs. So a change to how segkit trains
(a precision, loss scaling, clipping) reaches all of them at once.

Also here, because a run needs them before ``fit`` starts (``segkit.context.resolve_run``): the
step of a ``TrainConfig`` on a random batch (``config_step``), the measurement that settles
``channels_last="auto"`` with it (``resolve_channels_last``), the probe that confirms a planned
batch fits (``probe_step``) and the trial of fp16 on the GPU at hand (``fp16_trial``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from segkit import distributed
from segkit.config import TrainConfig
from segkit.labels import NUM_CLASSES
from segkit.losses import build_loss
from segkit.models import build_model
from segkit.models.registry import INIT_ONLY_OPTIONS, min_train_batch

Criterion = Callable[[Tensor, Tensor], Tensor]  # (logits (N, C, H, W) fp32, masks (N, H, W)) -> loss


def forward_backward(model: nn.Module, images: Tensor, masks: Tensor, criterion: Criterion, *,
                     dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
                     scale: float = 1.0) -> Tensor:
    """The loss of one batch, and its gradients added to the parameters' ``.grad``.

    Args:
        model: maps images (N, 3, H, W) to class scores (N, C, H, W).
        images: (N, 3, H, W) float, on the model's device.
        masks: (N, H, W) int64 class indices (255: ignored, if ``criterion`` says so).
        criterion: the loss of fp32 logits against the masks, e.g. ``segkit.losses.build_loss``.
        dtype: the autocast precision of the forward pass (bf16 or fp16), None for fp32.
        scaler: fp16 loss scaling; the gradients stay scaled until ``optimizer_step`` unscales.
        scale: a factor on the gradients only, e.g. a chunk's share of an accumulation window.

    Returns:
        The loss (a scalar), unscaled and detached, still on the device: reading it back
        (``.item()``) would wait for the GPU, so callers do that only when they must.
    """
    with torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(images)  # (N, C, H, W)
        # softmax over 16-bit logits loses precision that the loss needs: fp32 from here on
        loss = criterion(logits.float(), masks)
    scaled = loss * scale
    (scaled if scaler is None else scaler.scale(scaled)).backward()
    return loss.detach()


def optimizer_step(optimizer: torch.optim.Optimizer, *, scaler: torch.amp.GradScaler | None = None,
                   grad_clip: float | None = None) -> None:
    """Apply the gradients and clear them (``set_to_none``, as ``fit`` has always done).

    Gradients are unscaled before clipping (``grad_clip``: the largest norm over all parameters),
    else fp16 loss scaling would make the clip 65536 times too hard; with ``scaler`` a step whose
    gradients overflowed is skipped and the scale lowered.
    """
    if grad_clip:
        if scaler is not None:
            scaler.unscale_(optimizer)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(parameters, grad_clip)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)


def gradient_pass(model: nn.Module, images: Tensor, masks: Tensor, criterion: Criterion, *,
                  dtype: torch.dtype | None = None) -> Tensor:
    """``forward_backward`` with the gradients cleared after: a step's work and memory without the
    optimizer's update (what the benchmarks time and the run record profiles); returns the loss."""
    loss = forward_backward(model, images, masks, criterion, dtype=dtype)
    model.zero_grad(set_to_none=True)
    return loss


def finite_pass(model: nn.Module, images: Tensor, masks: Tensor, criterion: Criterion, *,
                dtype: torch.dtype | None) -> bool:
    """Whether one forward and backward in ``dtype``, without loss scaling, gives a finite loss and
    finite gradients: whether the hardware computes that precision, not whether a run converges.
    The gradients are cleared after."""
    loss = forward_backward(model, images, masks, criterion, dtype=dtype)
    checks = [loss.isfinite(), *(p.grad.isfinite().all() for p in model.parameters() if p.grad is not None)]
    model.zero_grad(set_to_none=True)
    return bool(torch.stack(checks).all())


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor, masks: Tensor,
               criterion: Criterion, *, dtype: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None, grad_clip: float | None = None) -> Tensor:
    """One optimizer step on one batch: ``forward_backward`` then ``optimizer_step``.

    Shapes as for ``forward_backward``; returns the batch's loss, detached, on the device. The
    gradients are cleared after the step, so the next call starts from none.
    """
    loss = forward_backward(model, images, masks, criterion, dtype=dtype, scaler=scaler)
    optimizer_step(optimizer, scaler=scaler, grad_clip=grad_clip)
    return loss


# --- a config's step on a random batch: timing and probing before a run ------------------------

def random_batch(batch: int, size: tuple[int, int], device: torch.device, *,
                 channels_last: bool = False, num_classes: int = NUM_CLASSES) -> tuple[Tensor, Tensor]:
    """Random images (N, 3, H, W) in the given memory layout and random class masks (N, H, W) on
    ``device``, for ``size`` (W, H): what timing, profiling and probing a step needs."""
    width, height = size
    images = torch.randn(batch, 3, height, width, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, torch.randint(0, num_classes, (batch, height, width), device=device)


def config_model(config: TrainConfig, device: torch.device) -> nn.Module:
    """``config``'s model from ``config.model_options`` (the options that only pick initial
    weights left out), seeded, on ``device`` in its memory layout, in training mode."""
    torch.manual_seed(0)
    # initial weights change neither a step's work nor its memory: never load or download them
    options = {k: v for k, v in config.model_options.items() if k not in INIT_ONLY_OPTIONS}
    model = build_model(config.model, **options).to(device).train()
    return model.to(memory_format=torch.channels_last) if config.channels_last is True else model


def config_step(config: TrainConfig, device: torch.device, batch_size: int | None = None, *,
                dtype: torch.dtype | None = None) -> Callable[[], None]:
    """One optimizer step of ``config``'s model as ``fit`` runs it (autocast ``dtype``, memory
    layout, fp16 loss scaling, Adam) on a random batch of ``config.size``, repeated by each call of
    what it returns.

    The batch is ``batch_size`` (default ``config.batch_size``) images (N, 3, H, W) and random class
    masks (N, H, W); the model is built by ``config_model`` (initial-weight options left out).
    """
    model = config_model(config, device)
    images, masks = random_batch(batch_size or config.batch_size, config.size, device,
                                 channels_last=config.channels_last is True)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    criterion = build_loss("ce")

    def step() -> None:
        train_step(model, optimizer, images, masks, criterion, dtype=dtype, scaler=scaler)

    return step


def fp16_trial(config: TrainConfig, device: torch.device, model: nn.Module | None = None) -> bool:
    """Whether one fp16 forward and backward (``finite_pass``) on a random batch of ``config.size``
    at the smallest batch the model trains on is finite on ``device``: some cuDNN versions return
    NaN from fp16 convolutions on GTX 16xx cards. The model is a copy of ``model``, else
    ``config``'s, built with random weights."""
    model = config_model(config, device) if model is None else copy.deepcopy(model).to(device).train()
    images, masks = random_batch(min_train_batch(model), config.size, device,
                                 channels_last=config.channels_last is True)
    finite = finite_pass(model, images, masks, build_loss("ce"), dtype=torch.float16)
    del model, images, masks
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return finite


def best_seconds(fn: Callable[[], None], repeats: int, warmup: bool = True) -> float:
    """Seconds of the fastest of ``repeats`` calls (the least disturbed by other processes), after
    one warm-up call unless ``warmup`` is False."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def synchronized(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """``step``, waiting for a CUDA device to finish it (else its time is only the launch)."""
    if device.type != "cuda":
        return step

    def run() -> None:
        step()
        torch.cuda.synchronize(device)

    return run


def resolve_channels_last(config: TrainConfig, device: torch.device, dtype: torch.dtype | None = None,
                          steps: int = 3) -> TrainConfig:
    """``config`` with ``channels_last="auto"`` settled by measurement; other values unchanged.

    Times ``steps`` optimizer steps of the config's model at its batch and crop size in autocast
    ``dtype`` (the run's precision) in each memory layout (``config_step``, best of, after one
    warm-up step each; ImageNet weights are not loaded for this) and keeps the faster as True or
    False, so that checkpoints record a bool and ``-c`` continues without measuring again. The
    caller sets the run's determinism first (``segkit.context.resolve_run`` does): with cuDNN's
    autotuner on, as training has it, each layout is timed with its own best kernels. Under
    torchrun every process measures and all keep process 0's choice. Prints the choice and both
    times in one line.
    """
    if config.channels_last != "auto":
        return config
    seconds = {}
    for layout in (False, True):
        step = config_step(config.replace(channels_last=layout), device, dtype=dtype)
        seconds[layout] = best_seconds(synchronized(step, device), steps)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    chosen = distributed.first_set(seconds[True] < seconds[False])
    faster, slower = sorted(seconds.values())
    if distributed.is_main_process():
        print(f"channels_last: {'on' if chosen else 'off'} ({'' if chosen else 'contiguous '}"
              f"{slower / faster:.2f}x faster than {'contiguous' if chosen else 'channels_last'}: "
              f"{seconds[chosen]:.2f} s vs {seconds[not chosen]:.2f} s a step, measured on {device})",
              flush=True)
    return config.replace(channels_last=chosen)


def probe_step(config: TrainConfig, device: torch.device, batch: int, *,
               dtype: torch.dtype | None = None) -> None:
    """One training step of ``config``'s model at ``batch`` in autocast ``dtype`` on random data;
    its memory freed after (what ``planner.confirm_batch_size`` runs to confirm a planned batch on
    a GPU)."""
    config_step(config, device, batch, dtype=dtype)()
    if device.type == "cuda":
        torch.cuda.empty_cache()
