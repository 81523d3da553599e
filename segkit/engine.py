"""The one training and evaluation loop, shared by the notebooks and the command line.

``fit`` trains with a ``TrainConfig``; progress bars, TensorBoard, live plots and checkpoints are
callbacks (``segkit.callbacks``) that observe a ``FitState``. ``evaluate`` scores a model under
``torch.inference_mode``, as it comes or through a test-time recipe (``segkit.inference.Inference``:
sliding window, flip, multi-scale); ``predict`` gives class maps of image tensors, and
``segkit.inference.predict_files`` of image files. Checkpoints hold plain data only and load with
``weights_only=True``.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from segkit import distributed, labels
from segkit.config import TrainConfig
from segkit.io import DataError, atomic_write
from segkit.labels import IGNORE_INDEX
from segkit.losses import build_loss, class_weights_from_histogram, label_histogram
from segkit.metrics import ConfusionMatrix
from segkit.models import build_model, model_spec
from segkit.models.registry import resolve_name

if TYPE_CHECKING:  # segkit.inference builds on this module
    from segkit.inference import Inference

CHECKPOINT_FORMAT = "segkit-checkpoint/1"
OOM_ADVICE = ("CUDA ran out of memory. Try, in this order: a smaller --batch-size (with --accumulate "
              "to keep the effective batch), a smaller --size, --amp fp16 or bf16, "
              "--checkpoint-backbone (DeepLab), or --oom retry to split batches automatically.")


# --- devices, seeds, precision ---------------------------------------------------------------

def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; under torchrun, this process's GPU or the CPU."""
    if distributed.is_initialized():
        return distributed.process_device(name)
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; ask for deterministic kernels where they exist."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``; None means full fp32.

    ``auto`` uses bf16 on CUDA GPUs that support it (no loss scaling needed), fp16 on older ones,
    and fp32 on the CPU, where bf16 is only faster on CPUs with native bf16 units (see
    ``segkit bench train``); ask for ``bf16`` explicitly there.
    """
    if amp == "off":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if amp == "fp16" else torch.bfloat16


# --- the state callbacks observe ---------------------------------------------------------------

@dataclass
class FitState:
    """What a training run is doing; callbacks read it, and may set ``stop``."""

    model: nn.Module
    config: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    num_classes: int
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)  # one row of metrics per epoch
    best_miou: float = -math.inf
    stop: str | None = None  # why training stopped early, if it did
    batch_loss: float = math.nan
    val_example: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # image, mask, pred

    @property
    def last(self) -> dict[str, Any]:
        """The latest history row (empty before the first epoch ends)."""
        return self.history[-1] if self.history else {}


class Callback:
    """Hooks called by ``fit``; override the ones you need."""

    def on_fit_start(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...


# --- building blocks ----------------------------------------------------------------------------

def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the original study), AdamW or SGD with momentum, with ``config.weight_decay``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer(params, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step learning-rate factor: linear warm-up, then none, poly, cosine or step decay."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(config.warmup_iters, total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if config.scheduler == "poly":
            return (1 - progress) ** config.poly_power
        if config.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if config.scheduler == "step":
            return config.step_gamma ** (step // max(1, config.step_epochs * steps_per_epoch))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def dataset_class_weights(dataset, num_classes: int) -> torch.Tensor:
    """Class weights from the training labels' histogram (void excluded), read once, untransformed."""
    load = getattr(dataset, "load", None)
    masks = (load(i)[1] for i in range(len(dataset))) if load else (m for _, m in dataset)
    return class_weights_from_histogram(label_histogram(masks, num_classes))


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


# --- checkpoints ----------------------------------------------------------------------------------

def _rng_state() -> dict[str, Any]:
    """Every random state a resumed run must continue from, as plain data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    """Metrics as plain data for history rows and checkpoints: tensors become lists of floats."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def save_checkpoint(path: str | os.PathLike, state: FitState) -> Path:
    """Write ``state`` to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    spec = model_spec(state.model)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model_name": spec["name"],
        "model_options": spec["options"],
        "state_dict": _unwrap(state.model).state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "best_miou": state.best_miou,
        "rng": _rng_state(),
        "config": asdict(state.config),
        "metrics": state.last,
        "history": state.history,
    }
    with atomic_write(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a segkit checkpoint safely (``weights_only=True``), naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds for damaged or foreign files
        raise DataError(f"{path}: not a readable segkit checkpoint ({error})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a segkit checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return checkpoint


def model_from_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                          *, expected: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint through the registry, with its weights; in eval mode.

    ``expected`` (a model name or alias, e.g. from ``-m``) must name the checkpoint's model.
    """
    checkpoint = load_checkpoint(path, map_location)
    if expected is not None and resolve_name(expected) != checkpoint["model_name"]:
        raise DataError(f"{path}: holds a {checkpoint['model_name']} model, not {expected}")
    model = build_model(checkpoint["model_name"], **checkpoint["model_options"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def check_checkpoint_dir(out: Path) -> None:
    """Refuse to write checkpoints inside the installed package."""
    package = Path(__import__("segkit").__path__[0]).resolve()
    if out.resolve() == package or package in out.resolve().parents:
        raise ValueError(f"{out}: checkpoints are never written into the segkit package; "
                         "choose another --out")


# --- training ----------------------------------------------------------------------------------

def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None,
        config: TrainConfig, callbacks: Sequence[Callback] = (), *,
        resume: str | os.PathLike | None = None) -> FitState:
    """Train ``model`` for ``config.epochs`` epochs; validate, call back and checkpoint each epoch.

    Args:
        model: a model from ``segkit.models.build_model`` (its spec goes into checkpoints).
        train_loader: yields ``(images (N, 3, H, W) float, masks (N, H, W) int64)``.
        val_loader: the same for validation, or None to skip validation.
        config: the run's settings.
        callbacks: observers (progress, TensorBoard, plots, checkpoints: ``segkit.callbacks``).
        resume: a checkpoint (e.g. ``last.pt``) to continue from exactly where it stopped.

    Under torchrun (``segkit.distributed.process_group``) the model is trained in
    DistributedDataParallel, each process on its own share of the batches; losses and scores are
    averaged or summed over processes, so every process holds the same history.

    Returns:
        The final ``FitState``; ``state.history`` holds one row of metrics per epoch and
        ``state.stop`` says why training ended early, if it did.
    """
    seed_everything(config.seed, config.deterministic)
    device = resolve_device(config.device)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    model = distributed.wrap(model, device, sync_bn=config.sync_bn, oom=config.oom)  # DDP under torchrun
    num_classes = labels.num_classes(config.label_scheme)
    dtype = autocast_dtype(config.amp, device)
    steps_per_epoch = math.ceil(_iters_per_epoch(train_loader, config) / config.accumulate)
    optimizer = build_optimizer(model, config)
    state = FitState(model, config, optimizer, build_scheduler(optimizer, config, steps_per_epoch),
                     torch.amp.GradScaler(device.type, enabled=dtype is torch.float16), device,
                     num_classes)
    weights = (dataset_class_weights(train_loader.dataset, num_classes).to(device)
               if config.class_weights else None)
    criterion = build_loss(config.loss, gamma=config.gamma, class_weights=weights)
    if val_loader is not None:
        check_has_labels(val_loader.dataset)  # before training, not after the first epoch
    if resume is not None:
        _restore(state, load_checkpoint(resume, device))
    for callback in callbacks:
        callback.on_fit_start(state)
    while state.epoch < config.epochs and state.stop is None:
        started = time.perf_counter()
        _start_epoch(state, train_loader)
        train_loss = _train_one_epoch(state, train_loader, criterion, dtype, callbacks)
        if state.stop is not None:
            break
        row = {"epoch": state.epoch + 1, "train_loss": train_loss,
               "lr": optimizer.param_groups[0]["lr"], "train_seconds": time.perf_counter() - started}
        if val_loader is not None and (state.epoch + 1) % config.val_every == 0:
            scores = evaluate(_unwrap(model), val_loader, num_classes=num_classes, device=device,
                              amp=config.amp, max_batches=config.max_val_batches, state=state)
            del scores["confusion"]  # kept by evaluate for callers; a history row stays small
            row.update({f"val_{k}": v for k, v in _plain(scores).items()})
        state.epoch += 1
        state.history.append(row)
        for callback in callbacks:
            callback.on_epoch_end(state)
        state.stop = distributed.first_set(state.stop)  # all processes stop together
    for callback in callbacks:
        callback.on_fit_end(state)
    return state


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
        seed_everything(distributed.process_seed(state.config.seed, state.epoch), deterministic=False)


def _iters_per_epoch(loader: DataLoader, config: TrainConfig) -> int:
    return min(len(loader), config.max_iters) if config.max_iters else len(loader)


def _restore(state: FitState, checkpoint: dict) -> None:
    """Continue from a checkpoint: weights, optimizer, scheduler, scaler, counters and RNG."""
    _unwrap(state.model).load_state_dict(checkpoint["state_dict"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    state.scaler.load_state_dict(checkpoint["scaler"])
    state.epoch, state.step = checkpoint["epoch"], checkpoint["step"]
    state.best_miou, state.history = checkpoint["best_miou"], list(checkpoint["history"])
    _set_rng_state(checkpoint["rng"])


def _train_one_epoch(state: FitState, loader: DataLoader, criterion: nn.Module,
                     dtype: torch.dtype | None, callbacks: Sequence[Callback]) -> float:
    """One pass over ``loader``; returns the mean training loss (NaN if it stopped early)."""
    config, model = state.config, state.model
    model.train()
    total, batches = 0.0, 0
    limit = _iters_per_epoch(loader, config)
    splits = 1
    state.optimizer.zero_grad(set_to_none=True)
    for index, (images, masks) in enumerate(loader):
        if index == limit:
            break
        images, masks = _to_device(images, masks, state.device, config.channels_last)
        last_in_window = (index + 1) % config.accumulate == 0 or index + 1 == limit
        # under DDP, gradients are averaged between processes once per optimizer step, not per batch
        with distributed.no_sync(model, skip=not last_in_window):
            while True:
                try:
                    loss = _forward_backward(state, images, masks, criterion, dtype, splits)
                    break
                except torch.OutOfMemoryError as error:
                    splits = _after_oom(state, images, splits, error)
        loss = distributed.all_reduce_mean(loss)  # the global batch's loss; NaN anywhere stops all
        if not math.isfinite(loss):
            state.stop = (f"loss became {loss} at epoch {state.epoch + 1}, batch {index + 1}; "
                          "stopped, keeping the last good checkpoint (try a lower --lr or --amp off)")
            return math.nan
        if last_in_window:
            _optimizer_step(state)
        state.batch_loss = loss
        total, batches = total + loss, batches + 1
        for callback in callbacks:
            callback.on_batch_end(state)
    return total / max(1, batches)


def _to_device(images: torch.Tensor, masks: torch.Tensor, device: torch.device,
               channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, masks.to(device, non_blocking=True)


def _forward_backward(state: FitState, images: torch.Tensor, masks: torch.Tensor,
                      criterion: nn.Module, dtype: torch.dtype | None, splits: int) -> float:
    """Loss and gradients of one batch, in ``splits`` chunks when memory is short; returns the loss."""
    total = 0.0
    for chunk_images, chunk_masks in zip(images.chunk(splits), masks.chunk(splits), strict=True):
        with torch.autocast(state.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = state.model(chunk_images)  # (n, C, H, W)
            loss = criterion(logits.float(), chunk_masks)
        share = len(chunk_images) / len(images) / state.config.accumulate
        state.scaler.scale(loss * share).backward()
        total += loss.item() * len(chunk_images) / len(images)
    return total


def _after_oom(state: FitState, images: torch.Tensor, splits: int, error: Exception) -> int:
    """Advise and stop, or (``oom="retry"``) split the batch in twice as many chunks."""
    state.optimizer.zero_grad(set_to_none=True)
    if state.device.type == "cuda":
        torch.cuda.empty_cache()
    if state.config.oom != "retry" or splits >= len(images):
        raise RuntimeError(f"{OOM_ADVICE} (batch {len(images)}, size {tuple(images.shape[-2:])}, "
                           f"split in {splits})") from error
    print(f"out of memory with batch {len(images)} in {splits} chunk(s): retrying in {splits * 2}")
    return splits * 2


def _optimizer_step(state: FitState) -> None:
    if state.config.grad_clip:
        state.scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(state.model.parameters(), state.config.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1


# --- evaluation -----------------------------------------------------------------------------------

def check_has_labels(dataset, samples: int = 3) -> None:
    """Refuse a dataset whose labels are all ignore, like the official test split."""
    load = getattr(dataset, "load", None)
    if load is None or len(dataset) == 0:
        return
    picks = np.linspace(0, len(dataset) - 1, num=min(samples, len(dataset))).round().astype(int)
    if all(bool((load(int(i))[1] == IGNORE_INDEX).all()) for i in picks):
        raise DataError(f"{getattr(dataset, 'root', 'dataset')} {getattr(dataset, 'split', '')}: "
                        "every label is 'ignore', so there is nothing to score; the Cityscapes "
                        "test split has no public labels (its scores come from the benchmark "
                        "server). Evaluate on the val split instead.")


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable, *, num_classes: int | None = None,
             device: torch.device | str | None = None, amp: str = "off",
             max_batches: int | None = None, state: FitState | None = None,
             inference: Inference | None = None,
             on_batch: Callable[[int, torch.Tensor], None] | None = None) -> dict[str, Any]:
    """Score ``model`` on ``loader``: pixel_acc, mean_acc, iou (per class), miou, category scores,
    and the confusion matrix itself (``confusion``, (C, C) counts ``[target, prediction]``).

    Refuses (``DataError``) a split whose labels are all ignore. With ``state`` (during ``fit``,
    which checked the labels once already), the first batch's first image, mask and prediction are
    kept for pictures (TensorBoard).

    ``inference`` (a ``segkit.inference.Inference``: whole frame at a size, sliding window, flip
    and multi-scale augmentation) says how the model sees each batch; its scores are resized to the
    labels' size, so labels are never resized. Without it, the model's output on the batch as it
    comes is scored (``fit``'s quick validation). ``on_batch(first, pred)`` receives every batch's
    predictions (N, H, W) and the loader position of its first frame (e.g. to write them as files).
    """
    if state is None:
        check_has_labels(getattr(loader, "dataset", None))
    num_classes = num_classes or model_spec(model)["options"]["num_classes"]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = autocast_dtype(amp, device)
    model.eval()
    matrix = ConfusionMatrix(num_classes, device=device)
    started, images_seen = time.perf_counter(), 0
    for index, (images, masks) in enumerate(loader):
        if max_batches is not None and index == max_batches:
            break
        images, masks = images.to(device), masks.to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(images) if inference is None else inference(model, images, masks.shape[-2:])
            pred = logits.argmax(1)  # (N, H, W)
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
    scores["seconds"] = time.perf_counter() - started
    scores["images"] = distributed.all_reduce_sum(images_seen)
    return scores


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int = 8,
            device: torch.device | str | None = None, amp: str = "off",
            inference: Inference | None = None) -> torch.Tensor:
    """Class maps for normalised images: (N, 3, H, W) float -> (N, H, W) int64 on the CPU.

    ``inference`` as in ``evaluate`` (maps come back at the images' size). For image files of any
    size, with colour and overlay pictures, see ``segkit.inference.predict_files``.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = autocast_dtype(amp, device)
    model.eval()
    maps = []
    for chunk in images.split(batch_size):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            chunk = chunk.to(device)
            logits = model(chunk) if inference is None else inference(model, chunk)
            maps.append(logits.argmax(1).cpu())  # (n, H, W)
    return torch.cat(maps)
