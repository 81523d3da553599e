"""Whole runs, as ``segkit train`` and ``segkit test`` do them: data, model, callbacks, engine."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from segkit import distributed, labels
from segkit.callbacks import Checkpointer, PrintMetrics, ProgressBar, TensorBoardLogger
from segkit.config import TrainConfig, get_profile, profile_config
from segkit.datasets import CityscapesSegmentation, build_loaders, ensure_synthetic
from segkit.engine import (
    Callback,
    FitState,
    evaluate,
    fit,
    model_from_checkpoint,
    resolve_device,
    seed_everything,
)
from segkit.io import DataError
from segkit.metrics import format_table
from segkit.models import build_model
from segkit.models.registry import resolve_name
from segkit.transforms import eval_transforms


def train_config(model: str, *, profile: str | None = None, data: str | os.PathLike | None = None,
                 out: str | os.PathLike | None = None, log_dir: str | os.PathLike | None = None,
                 model_options: dict[str, Any] | None = None, **changes: Any) -> TrainConfig:
    """The profile's config for ``model`` with ``changes``; default folders named after the model."""
    name = resolve_name(model)
    config = profile_config(name, profile, **changes)
    return config.replace(
        model_options={**config.model_options, **(model_options or {})},
        data=None if data is None else str(data),
        out=str(out or Path("checkpoints", name)),
        log_dir=str(log_dir or Path("runs", name)),
    )


def train(model: str, *, profile: str | None = None, data: str | os.PathLike | None = None,
          out: str | os.PathLike | None = None, log_dir: str | os.PathLike | None = None,
          resume: bool = False, model_options: dict[str, Any] | None = None,
          callbacks: Sequence[Callback] = (), progress: bool = True, **changes: Any) -> FitState:
    """Train ``model`` under a profile: the synthetic set when ``data`` is None, checkpoints, logs.

    ``resume`` continues ``out/last.pt``; without it, an ``out`` that already holds a run is refused
    rather than overwritten. Under torchrun every process runs this (``segkit.distributed``): process
    0 makes the data, prints, logs and checkpoints; ``callbacks`` run in every process.
    """
    config = train_config(model, profile=profile, data=data, out=out, log_dir=log_dir,
                          model_options=model_options, **changes)
    last = Path(config.out, "last.pt")
    if resume and not last.is_file():
        raise DataError(f"{last}: nothing to continue (train without -c/--continue_training first)")
    if not resume and last.exists():
        raise DataError(f"{config.out}: already holds a run (last.pt); continue it with "
                        "-c/--continue_training or choose another --out")
    with distributed.process_group(config.device):
        main = distributed.is_main_process()
        root = config.data or distributed.main_process_first(
            lambda: ensure_synthetic(get_profile(profile), progress=progress and main))
        config = config.replace(data=str(root))
        train_loader, val_loader = build_loaders(root, config)
        net = distributed.main_process_first(lambda: _build_model(config))  # weights made once
        observers = []
        if main:
            _print_header(net, config, train_loader, val_loader)
            observers = [ProgressBar(min(len(train_loader), config.max_iters or len(train_loader)),
                                     disable=not progress),
                         PrintMetrics(), TensorBoardLogger(config.log_dir), Checkpointer(config.out)]
        return fit(net, train_loader, val_loader, config, [*observers, *callbacks],
                   resume=last if resume else None)


def _build_model(config: TrainConfig):
    """The config's model, initialised from its seed (so every process starts from the same weights)."""
    seed_everything(config.seed, config.deterministic)
    return build_model(config.model, num_classes=labels.num_classes(config.label_scheme),
                       **config.model_options)


def _print_header(net, config: TrainConfig, train_loader: DataLoader, val_loader: DataLoader) -> None:
    params = sum(p.numel() for p in net.parameters())
    width, height = config.size
    print(f"training {config.model} ({params / 1e6:.2f} M parameters) on {config.data}: "
          f"{len(train_loader.dataset)} train / {len(val_loader.dataset)} val frames at "
          f"{width}x{height}, {_batch(config)}, {config.epochs} epochs, "
          f"device {resolve_device(config.device)}; checkpoints in {config.out}, "
          f"TensorBoard logs in {config.log_dir}", flush=True)


def _batch(config: TrainConfig) -> str:
    processes = distributed.world_size()
    if processes == 1:
        return f"batch {config.batch_size}"
    return (f"batch {config.batch_size} per process x {processes} processes "
            f"= {config.batch_size * processes}")


def test(checkpoint: str | os.PathLike, *, model: str | None = None,
         data: str | os.PathLike | None = None, split: str = "val",
         size: tuple[int, int] | None = None, batch_size: int = 4, device: str = "auto",
         num_workers: int = 0) -> dict[str, Any]:
    """Score a checkpoint on ``split`` (resized to ``size`` or its training size); print the table."""
    net, saved = model_from_checkpoint(checkpoint)
    if model is not None and resolve_name(model) != saved["model_name"]:
        raise DataError(f"{checkpoint}: holds a {saved['model_name']} model, not {model}")
    config = TrainConfig.from_dict(saved["config"])
    root = data or config.data
    if root is None:
        raise DataError(f"{checkpoint}: no dataset recorded; give --data")
    dataset = CityscapesSegmentation(root, split, eval_transforms(size=size or config.size),
                                     label_scheme=config.label_scheme)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    run_device = resolve_device(device)
    scores = evaluate(net.to(run_device), loader, device=run_device)
    width, height = size or config.size
    print(f"{saved['model_name']} from {checkpoint} (epoch {saved['epoch']}) on {root} {split}: "
          f"{len(dataset)} frames at {width}x{height}")
    print(format_table(scores, labels.class_names(config.label_scheme)))
    return scores
