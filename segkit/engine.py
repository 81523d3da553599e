"""The one training loop and the one scoring loop, shared by the notebooks and the command line.

``fit`` trains with a ``TrainConfig`` in a ``RunContext`` (``segkit.context``: the device,
precision, layout and memory cap resolved once for the run); progress bars, TensorBoard, live
plots and checkpoints are callbacks (``segkit.callbacks``) that observe a ``FitState``.
``validate`` is the one loop that scores a model over a loader under ``torch.inference_mode``:
``fit`` calls it each epoch on the batches as they come, and ``segkit.inference.evaluate`` through
a test-time recipe (sliding window, flip, multi-scale). This module never imports
``segkit.inference``: inference builds on it. Checkpoints hold plain data only and load with
``weights_only=True``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from segkit import budget, distributed, labels
from segkit.budget import StepPlan
from segkit.checkpoints import restore, unwrap
from segkit.config import TrainConfig
from segkit.context import RunContext, resolve_run
from segkit.datasets import check_has_labels, class_pixels
from segkit.io import DataError
from segkit.losses import build_loss, class_weights_from_histogram, pixel_weights
from segkit.metrics import ConfusionMatrix
from segkit.models.registry import min_train_batch
from segkit.runtime import seed_everything
from segkit.step import forward_backward, optimizer_step

OOM_ADVICE = ("CUDA ran out of memory. See what fits first with `segkit plan` (or --batch-size auto). "
              "Then try, in this order: a smaller --batch-size (with --accumulate to keep the "
              "effective batch), --amp fp16 or bf16, --checkpointing, a smaller --size, or --oom "
              "retry to split batches automatically.")
Batch = tuple[torch.Tensor, torch.Tensor]  # images (N, 3, H, W) float, masks (N, H, W) int64
#: How a model sees a batch at scoring time: ``forward(model, images (N, 3, H, W), (h, w))`` gives
#: class scores (N, C, h, w) at the labels' size, e.g. a ``segkit.inference.Inference``.
Forward = Callable[[nn.Module, torch.Tensor, Sequence[int]], torch.Tensor]


# --- the state callbacks observe ---------------------------------------------------------------

@dataclass
class FitState:
    """What a training run is doing; callbacks read it, and may set ``stop``."""

    model: nn.Module
    config: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    context: RunContext  # device, precision, layout, memory cap: resolved once for the run
    num_classes: int
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)  # one row of metrics per epoch
    best_miou: float = -math.inf
    stop: str | None = None  # why training stopped early, if it did
    batch_loss: float = math.nan  # mean loss of the batches since the last read-back (``on_log``)
    splits: int = 1  # chunks per batch: grows with ``oom="retry"`` after an out-of-memory error
    seconds: float = 0.0  # of training and validation, over every part of a continued run
    train_seconds: float = 0.0  # of training alone
    images_seen: int = 0  # training images, summed over processes
    plan: StepPlan | None = None  # the steps a ``config.time_budget`` turns into
    val_example: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # image, mask, pred
    min_batch: int = 1  # the smallest chunk ``oom="retry"`` may split a batch into (the registry's)

    @property
    def device(self) -> torch.device:
        """The run's device (``context.device``)."""
        return self.context.device

    @property
    def last(self) -> dict[str, Any]:
        """The latest history row (empty before the first epoch ends)."""
        return self.history[-1] if self.history else {}


class Callback:
    """Hooks called by ``fit``; override the ones you need.

    ``on_batch_end`` comes after every batch without waiting for the device; ``on_log`` after the
    loss has been read back (every ``config.log_every`` batches and at the end of each epoch), so
    that is where ``state.batch_loss`` is fresh.
    """

    def on_fit_start(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState) -> None: ...

    def on_log(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...


# --- building blocks ----------------------------------------------------------------------------

def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the original study), AdamW or SGD with momentum, with ``config.weight_decay``.

    As in nanoGPT and torchvision's references, weight decay applies to the weights of convolutions
    and linear layers only, not to biases and normalisation parameters (decaying a BatchNorm scale
    towards zero only fights the normalisation). A pretrained backbone (``model.backbone`` with
    ``pretrained`` set) learns at ``config.backbone_lr`` times the rate, as torchvision's reference
    recipes do: its ImageNet features need adjusting, not relearning, and the large early
    gradients of a freshly initialised head would wreck them. The schedule scales every group's
    rate alike, so the ratio holds throughout.

    Groups: the rest of the model (decay, no decay) first, so that ``param_groups[0]`` carries the
    run's ``lr``; then the backbone's (decay, no decay), for models with a backbone.
    """
    backbone = getattr(unwrap(model), "backbone", None)
    in_backbone = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
    # A backbone that fell back to random weights (allow_random_init) has nothing to preserve, so
    # it learns at the full rate. It still gets groups of its own: a resumed run must find the
    # checkpoint's groups (whose rates it restores) whether or not the weights load this time.
    factor = config.backbone_lr if getattr(backbone, "pretrained", False) else 1.0
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = _decay_groups([p for p in trainable if id(p) not in in_backbone], config, config.lr)
    if in_backbone:
        groups += _decay_groups([p for p in trainable if id(p) in in_backbone], config,
                                config.lr * factor)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer(groups, lr=config.lr)


def _decay_groups(params: list[nn.Parameter], config: TrainConfig, lr: float) -> list[dict]:
    """Two parameter groups at ``lr``: weights with ``config.weight_decay``, biases and norms without."""
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay, "lr": lr},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": lr}]


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int,
                    plan: StepPlan | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step learning-rate factor: linear warm-up, then none, linear, poly, cosine or step decay.

    The decay runs over ``config.epochs``, or with a time budget over the steps ``plan`` has
    planned so far (none yet: no decay), so each revision of the plan reshapes the rest of it.
    """

    def factor(step: int) -> float:
        total = plan.total_steps if plan is not None else max(1, config.epochs * steps_per_epoch)
        warmup = config.warmup_iters if total is None else min(config.warmup_iters, total - 1)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = 0.0 if total is None else min(1.0, (step - warmup) / max(1, total - warmup))
        if config.scheduler == "linear":
            return 1 - progress
        if config.scheduler == "poly":
            return (1 - progress) ** config.poly_power
        if config.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if config.scheduler == "step":
            return config.step_gamma ** (step // max(1, config.step_epochs * steps_per_epoch))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def dataset_class_weights(dataset, num_classes: int) -> torch.Tensor:
    """Class weights (C,) from the training labels' histogram, void excluded: the prepared root's
    manifest counts where they describe ``dataset``, else its untransformed labels, read once."""
    return class_weights_from_histogram(class_pixels(dataset, num_classes)[:-1])


def build_criterion(config: TrainConfig, dataset, device: torch.device) -> nn.Module:
    """The loss ``fit`` trains with: ``config.loss``, weighted by ``dataset``'s class histogram
    when ``config.class_weights`` (the weights (C,) on ``device``)."""
    num_classes = labels.num_classes(config.label_scheme)
    weights = dataset_class_weights(dataset, num_classes).to(device) if config.class_weights else None
    return build_loss(config.loss, gamma=config.gamma, class_weights=weights)


def steps_per_epoch(loader: DataLoader, config: TrainConfig) -> int:
    """Optimizer steps in one epoch of ``loader``: its batches (at most ``config.max_iters``) over
    ``config.accumulate``, a last shorter window counting as a step."""
    return math.ceil(_iters_per_epoch(loader, config) / config.accumulate)


# --- training ----------------------------------------------------------------------------------

def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None,
        config: TrainConfig, callbacks: Sequence[Callback] = (), *,
        resume: str | os.PathLike | None = None, context: RunContext | None = None) -> FitState:
    """Train ``model`` for ``config.epochs`` epochs; validate, call back and checkpoint each epoch.

    Args:
        model: a model from ``segkit.models.build_model`` (its spec goes into checkpoints).
        train_loader: yields ``(images (N, 3, H, W) float, masks (N, H, W) int64)``.
        val_loader: the same for validation, or None to skip validation.
        config: the run's settings.
        callbacks: observers (progress, TensorBoard, plots, checkpoints: ``segkit.callbacks``).
        resume: a checkpoint (e.g. ``last.pt``) to continue from exactly where it stopped; a
            change of precision or of the number of processes since it was saved is said in
            one line.
        context: the run resolved (``segkit.context.resolve_run(config)``, which ``segkit
            train`` calls once); None resolves it here, settling ``channels_last="auto"`` too.

    Under torchrun (``segkit.distributed.process_group``) the model is trained in
    DistributedDataParallel, each process on its own share of the batches; losses and scores are
    averaged or summed over processes, so every process holds the same history.

    Returns:
        The final ``FitState``; ``state.history`` holds one row of metrics per epoch (a validated
        one also the validation scores and ``val_loss``, the training loss's mean over the
        validation split: see ``validate``) and ``state.stop`` says why training ended early, if
        it did.
    """
    if context is None:
        config, context = resolve_run(config, model=model)
    seed_everything(config.seed)
    device = context.device
    smallest = min_train_batch(model)
    model.to(device)
    if context.channels_last:
        model.to(memory_format=torch.channels_last)
    model = distributed.wrap(model, device, sync_bn=config.sync_bn, oom=config.oom)  # DDP under torchrun
    num_classes = labels.num_classes(config.label_scheme)
    epoch_steps = steps_per_epoch(train_loader, config)
    optimizer = build_optimizer(model, config)
    plan = _step_plan(config, epoch_steps, val_loader)
    state = FitState(model, config, optimizer, build_scheduler(optimizer, config, epoch_steps, plan),
                     context.grad_scaler(), context, num_classes, plan=plan, min_batch=smallest)
    criterion = build_criterion(config, train_loader.dataset, device)
    if _iters_per_epoch(train_loader, config) == 0:
        dataset = train_loader.dataset
        raise DataError(f"{getattr(dataset, 'root', 'the dataset')} {getattr(dataset, 'split', '')}: "
                        f"{len(dataset)} training frames make no full batch of {config.batch_size} "
                        "(the last, smaller batch is dropped); give a smaller --batch-size or more frames")
    if val_loader is not None:
        check_has_labels(val_loader.dataset)  # before training, not after the first epoch
    if resume is not None and (changed := restore(state, resume)) and distributed.is_main_process():
        print(changed, flush=True)
    for callback in callbacks:
        callback.on_fit_start(state)
    while not _finished(state):
        started = budget.clock()
        _start_epoch(state, train_loader)
        train_loss, ending = _train_one_epoch(state, train_loader, criterion, callbacks, started)
        if state.stop is not None:
            break
        trained = budget.clock() - started
        row = {"epoch": state.epoch + 1, "train_loss": train_loss,
               "lr": optimizer.param_groups[0]["lr"], "train_seconds": trained}
        final = ending or (plan is None and state.epoch + 1 >= config.epochs)  # best.pt scores the end
        if val_loader is not None and ((state.epoch + 1) % config.val_every == 0 or final):
            validating = budget.clock()
            scores = validate(unwrap(model), val_loader, num_classes=num_classes, device=device,
                              dtype=context.dtype, max_batches=config.max_val_batches,
                              criterion=criterion, state=state)
            del scores["confusion"]  # kept by validate for callers; a history row stays small
            if not scores.pop("finite"):
                state.stop = (f"the model's outputs became non-finite by the end of epoch "
                              f"{state.epoch + 1} (validation); stopped without saving it "
                              f"({_kept(state)}); try a lower --lr or --amp off")
                break
            row.update({f"val_{k}": v for k, v in _plain(scores).items()})
            if plan is not None:
                plan.validated(budget.clock() - validating)
        state.epoch += 1
        state.seconds += budget.clock() - started
        state.train_seconds += trained
        row.update(step=state.step, images_seen=state.images_seen, seconds=state.seconds)
        if plan is not None:
            _revise_plan(state, 0.0)
            # just validated, with no time for another step and a validation: that one was the last
            # (process 0's clock decides, so that every process ends together)
            plan.done = ending or distributed.from_main(
                "val_miou" in row and _budget_spent(state, budget.clock()))
        state.history.append(row)
        for callback in callbacks:
            callback.on_epoch_end(state)
        state.stop = distributed.first_set(state.stop)  # all processes stop together
    for callback in callbacks:
        callback.on_fit_end(state)
    return state


def _step_plan(config: TrainConfig, steps_per_epoch: int,
               val_loader: DataLoader | None) -> StepPlan | None:
    """The plan of a ``config.time_budget`` run (None for a run of ``config.epochs``)."""
    if config.time_budget is None:
        return None
    val_batches = 0 if val_loader is None else min(len(val_loader), config.max_val_batches or len(val_loader))
    return StepPlan(config.time_budget, steps_per_epoch=steps_per_epoch,
                    val_every=None if val_loader is None else config.val_every, val_batches=val_batches)


def _finished(state: FitState) -> bool:
    if state.stop is not None:
        return True
    return state.plan.done if state.plan is not None else state.epoch >= state.config.epochs


def _budget_spent(state: FitState, started: float) -> bool:
    """Whether the time budget is spent after this optimizer step (one validation kept in hand)."""
    elapsed = budget.clock() - started
    return state.plan.out_of_time(state.step, state.train_seconds + elapsed, state.seconds + elapsed)


def _revise_plan(state: FitState, elapsed: float) -> None:
    """Re-plan the steps from the measured pace (saying when it has slowed far down); under torchrun
    every process takes process 0's plan, so that all follow one learning-rate curve."""
    note = state.plan.revise(state.step, state.train_seconds + elapsed, state.seconds + elapsed)
    state.plan.total_steps = distributed.from_main(state.plan.total_steps)
    if note and distributed.is_main_process():
        print(note, flush=True)


def _plain(value: Any) -> Any:
    """Metrics as plain data for history rows and checkpoints: tensors become lists of floats."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _start_epoch(state: FitState, loader: DataLoader) -> None:
    """Reshuffle a distributed sampler for this epoch; under torchrun, reseed each process apart.

    Every process starts from the same seed (the same initial weights), but augmentation and
    DataLoader workers need different random streams per process; a seed of (seed, epoch, rank)
    also makes a resumed multi-process run continue exactly.
    """
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(state.epoch)
    if distributed.is_initialized():
        seed_everything(distributed.process_seed(state.config.seed, state.epoch))


def _iters_per_epoch(loader: DataLoader, config: TrainConfig) -> int:
    return min(len(loader), config.max_iters) if config.max_iters else len(loader)


def _train_one_epoch(state: FitState, loader: DataLoader, criterion: nn.Module,
                     callbacks: Sequence[Callback], started: float) -> tuple[float, bool]:
    """One pass over ``loader`` (begun at ``started``); returns the mean training loss (NaN if it
    stopped early) and whether the time budget ended it.

    Losses stay on the device and are read back only every ``config.log_every`` batches and at the
    end of the epoch: each read-back waits for the GPU to finish all queued work. The budget is
    checked after every optimizer step; under torchrun at read-backs only, by all processes
    together, so that they stop at the same step. An accumulation window is ``config.accumulate``
    batches, the epoch's last one what is left; each window's gradient is the mean of its own
    batches' gradients.
    """
    config, model = state.config, state.model
    model.train()
    limit = _iters_per_epoch(loader, config)
    window: list[Batch] = []  # this accumulation window's batches (on the CPU), kept for an OOM redo
    window_losses: list[torch.Tensor] = []
    unread, unread_batches, read_batches, total = torch.zeros((), device=state.device), 0, 0, 0.0
    state.optimizer.zero_grad(set_to_none=True)
    for index, batch in enumerate(loader):
        if index == limit:
            break
        window.append(batch)
        state.images_seen += len(batch[0]) * distributed.world_size()
        # the batches of this window: accumulate of them, or what the epoch has left
        window_size = min(config.accumulate, limit - (index + 1 - len(window)))
        last_in_window = len(window) == window_size
        # under DDP, gradients are averaged between processes once per optimizer step, not per batch
        with distributed.no_sync(model, skip=not last_in_window):
            window_losses = _backward_newest(state, window, window_losses, criterion, window_size)
        if last_in_window:
            _optimizer_step(state)
            unread = unread + torch.stack(window_losses).sum()
            unread_batches += len(window)
            window, window_losses = [], []
        ending = (state.plan is not None and last_in_window and not distributed.is_initialized()
                  and _budget_spent(state, started))
        for callback in callbacks:
            callback.on_batch_end(state)
        if unread_batches and (unread_batches >= config.log_every or index + 1 == limit or ending):
            state.batch_loss = distributed.all_reduce_mean(unread.item() / unread_batches)
            total, read_batches = total + state.batch_loss * unread_batches, read_batches + unread_batches
            unread, unread_batches = torch.zeros((), device=state.device), 0
            if _diverged(state, index):
                return math.nan, False
            if state.plan is not None:
                if distributed.is_initialized():
                    ending = distributed.all_reduce_sum(int(_budget_spent(state, started))) > 0
                _revise_plan(state, budget.clock() - started)
            for callback in callbacks:
                callback.on_log(state)
        if ending:
            break
    return total / max(1, read_batches), ending


def _diverged(state: FitState, index: int) -> bool:
    """Stop (``state.stop``) if the loss or any weight is no longer finite."""
    weights = [t for t in unwrap(state.model).state_dict().values() if t.is_floating_point()]
    finite_weights = bool(torch.stack([t.isfinite().all() for t in weights]).all())
    if math.isfinite(state.batch_loss) and finite_weights:
        return False
    what = (f"the loss became {state.batch_loss}" if not math.isfinite(state.batch_loss)
            else "a weight became non-finite")
    state.stop = (f"{what} in epoch {state.epoch + 1} by batch {index + 1}; stopped without saving "
                  f"this epoch ({_kept(state)}); try a lower --lr or --amp off")
    return True


def _kept(state: FitState) -> str:
    return (f"the checkpoints of epoch {state.epoch} and before are kept" if state.epoch
            else "no checkpoint was written")


def _backward_newest(state: FitState, window: list[Batch], losses: list[torch.Tensor],
                     criterion: nn.Module, window_size: int) -> list[torch.Tensor]:
    """Forward and backward of the newest batch of a window of ``window_size`` batches; returns the
    window's losses so far.

    After an out-of-memory error with ``oom="retry"`` the gradients are zeroed and the whole
    accumulation window is done again in twice as many chunks per batch, so that no batch of the
    window counts twice or is lost.
    """
    todo = window[-1:]
    while True:
        try:
            return [*losses, *(_batch_backward(state, *batch, criterion, window_size) for batch in todo)]
        except torch.OutOfMemoryError as error:
            _after_oom(state, window[-1][0], error)
            todo, losses = window, []


def to_device(images: torch.Tensor, masks: torch.Tensor, device: torch.device,
              channels_last: bool) -> Batch:
    """A batch on ``device`` as the step takes it: images (N, 3, H, W) in the run's memory layout."""
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, masks.to(device, non_blocking=True)


def _batch_backward(state: FitState, images: torch.Tensor, masks: torch.Tensor,
                    criterion: nn.Module, window_size: int) -> torch.Tensor:
    """Loss and gradients of one batch in ``state.splits`` chunks (``_chunks``: none smaller than
    the model trains on); returns the loss, on the device.

    Each chunk's gradients count by its share of the batch, and the batch's by its share of the
    accumulation window (one of ``window_size`` batches), so that the step sees the gradient of
    the window's mean loss.
    """
    images, masks = to_device(images, masks, state.device, state.context.channels_last)
    total = torch.zeros((), device=state.device)
    parts = _chunks(state.splits, len(images), state.min_batch)
    for chunk_images, chunk_masks in zip(images.tensor_split(parts), masks.tensor_split(parts),
                                         strict=True):
        share = len(chunk_images) / len(images)
        loss = forward_backward(state.model, chunk_images, chunk_masks, criterion,
                                dtype=state.context.dtype, scaler=state.scaler,
                                scale=share / window_size)
        total = total + loss * share
    return total


def _chunks(splits: int, batch: int, smallest: int = 1) -> int:
    """How many chunks a batch of ``batch`` frames is split into: ``splits``, but none smaller than
    ``smallest``, the smallest batch the model trains on (DeepLabV3+'s image pooling cannot train
    on one frame: 3 frames of it stay whole, 7 go in 3 chunks of 3, 2 and 2, never 2, 2, 2, 1)."""
    return max(1, min(splits, batch // smallest))


def _after_oom(state: FitState, images: torch.Tensor, error: Exception) -> None:
    """Advise and stop, or (``oom="retry"``) zero the gradients and double ``state.splits``."""
    state.optimizer.zero_grad(set_to_none=True)
    if state.device.type == "cuda":
        torch.cuda.empty_cache()
    done, more = (_chunks(splits, len(images), state.min_batch)
                  for splits in (state.splits, 2 * state.splits))
    if state.config.oom != "retry" or more == done:
        smallest = (f"; the model trains on no fewer than {state.min_batch} frames at once"
                    if state.config.oom == "retry" and state.min_batch > 1 else "")
        raise RuntimeError(f"{OOM_ADVICE} (batch {len(images)}, size {tuple(images.shape[-2:])}, "
                           f"split in {done}{smallest})") from error
    state.splits *= 2
    print(f"out of memory with batch {len(images)} in {done} chunk(s): redoing the "
          f"accumulation window in {more}", flush=True)


def _optimizer_step(state: FitState) -> None:
    """The step of ``segkit.step`` (unscale, clip, step, clear), then the schedule's next rate."""
    optimizer_step(state.optimizer, scaler=state.scaler, grad_clip=state.config.grad_clip)
    state.scheduler.step()
    state.step += 1


# --- scoring ------------------------------------------------------------------------------------

@torch.inference_mode()
def validate(model: nn.Module, loader: Iterable, *, num_classes: int, device: torch.device,
             dtype: torch.dtype | None = None, max_batches: int | None = None,
             forward: Forward | None = None,
             criterion: nn.Module | None = None,
             on_batch: Callable[[int, torch.Tensor], None] | None = None,
             state: FitState | None = None) -> dict[str, Any]:
    """Score ``model`` on ``loader``: pixel_acc, mean_acc, iou (per class), miou, category scores,
    and the confusion matrix itself (``confusion``, (C, C) counts ``[target, prediction]``).

    The one scoring loop: ``fit`` validates with it, ``segkit.inference.evaluate`` (which checks
    the labels first and fills in the defaults) evaluates with it. ``forward`` says how the model
    sees each batch (default: ``model(images)``, the batch as it comes); ``on_batch(first, pred)``
    receives every batch's predictions (N, H, W) and the loader position of its first frame (e.g.
    to write them as files). With ``state`` (during ``fit``), the first batch's first image, mask
    and prediction are kept for pictures (TensorBoard). Also returned: ``seconds``, ``images`` and
    ``finite`` (no NaN or inf logits in any process). A ``forward`` with a ``classes`` method (a
    ``segkit.inference.Inference``) gives the class maps directly when neither a loss nor ``state``
    asks for the scores, so that memory grows with the labels, not with the classes times them;
    ``finite`` is then not checked. ``dtype`` is the autocast precision, resolved by the caller
    (``fit`` passes its run's, ``RunContext.dtype``); None scores in fp32.

    With ``criterion`` (a loss of ``segkit.losses.build_loss``: ``fit`` passes the one it trains
    with, class weights included) also ``loss``, its mean over the whole split::

        loss = sum(w[y] * loss_of_pixel) / sum(w[y])

    over every labelled pixel of every batch and every process, ``w[y]`` being the class weight of
    the pixel's label (1 without weights) and ignored pixels (255) counting in neither sum: the
    criterion's own mean as if the split were one batch. A mean of batch means would not be: it
    gives the pixels of a small last batch, or of a batch that is mostly void, more say than the
    rest. NaN when the labelled pixels weigh nothing (all of classes with weight 0). The loss is
    of logits, so ``forward`` must be a single pass (flip and multi-scale average probabilities).
    """
    if criterion is not None and getattr(forward, "passes", 1) > 1:
        raise ValueError("a validation loss needs logits, and a forward of several passes (flip, "
                         "scales) averages probabilities: score its loss with a single pass")
    # Scores are needed for a loss and for training's finite check; scoring alone needs classes
    classes_only = criterion is None and state is None and hasattr(forward, "classes")
    model.eval()
    matrix = ConfusionMatrix(num_classes, device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)  # no NaN or inf logits so far
    loss_terms = torch.zeros(2, device=device)  # (weighted loss sum, weight sum), read back once
    started, images_seen = time.perf_counter(), 0
    for index, (images, masks) in enumerate(loader):
        if max_batches is not None and index == max_batches:
            break
        images, masks = images.to(device), masks.to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if classes_only:  # class maps in bands: the scores never held at the labels' full size
                pred = forward.classes(model, images, masks.shape[-2:]).to(device, torch.int64)
            else:
                logits = model(images) if forward is None else forward(model, images, masks.shape[-2:])
                pred = logits.argmax(1)  # (N, H, W)
                finite &= logits.isfinite().all()
        if criterion is not None:
            loss_terms += _loss_terms(criterion, logits.float(), masks)
        if on_batch is not None:
            on_batch(images_seen, pred)
        matrix.update(pred, masks)
        images_seen += len(images)
        if state is not None and index == 0:
            state.val_example = (images[0].cpu(), masks[0].cpu(), pred[0].cpu())
    matrix.all_reduce()
    if matrix.mat.sum() == 0:
        raise DataError("every label of this split is 'ignore': nothing to score "
                        "(the Cityscapes test split has no public labels; use val)")
    scores = matrix.compute()
    scores["confusion"] = matrix.mat.cpu()
    if criterion is not None:
        # means over processes: the number of processes cancels in the ratio of the two sums
        loss_sum, weight_sum = (distributed.all_reduce_mean(term) for term in loss_terms.tolist())
        scores["loss"] = loss_sum / weight_sum if weight_sum > 0 else math.nan
    scores["seconds"] = time.perf_counter() - started
    scores["images"] = distributed.all_reduce_sum(images_seen)
    scores["finite"] = distributed.all_reduce_sum(int(not finite)) == 0  # every process's logits
    return scores


def _loss_terms(criterion: nn.Module, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(2,): the numerator and the denominator of ``criterion``'s weighted mean over the labelled
    pixels of one batch, logits (N, C, H, W) and masks (N, H, W), so that batches add up exactly.

    The criterion's mean times the weight sum it divided by is its weighted loss sum.
    """
    total = pixel_weights(masks, getattr(criterion, "weight", None), criterion.ignore_index).sum()
    return torch.stack([criterion(logits, masks) * total, total])
