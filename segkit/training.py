"""Whole runs, as ``segkit train`` and ``segkit test`` do them: data, model, callbacks, engine."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from segkit import distributed, labels
from segkit.callbacks import Checkpointer, PrintMetrics, ProgressBar, TensorBoardLogger
from segkit.checkpoints import model_from_checkpoint
from segkit.config import PROFILES, TrainConfig, profile_config, resolve_profile
from segkit.context import RunContext, resolve_run
from segkit.datasets import CityscapesSegmentation, check_has_labels, ensure_synthetic
from segkit.engine import Callback, FitState, fit
from segkit.inference import Inference, LabelIdWriter, evaluate, frame_peak_bytes, write_label_ids
from segkit.io import DataError
from segkit.loaders import build_loaders, scoring_loader
from segkit.metrics import format_categories, format_table
from segkit.models import build_model
from segkit.models.registry import MIN_INPUT_SIDE, resolve_name
from segkit.prepare import check_finished, read_manifest
from segkit.run import (
    TENSORBOARD,
    RunRecord,
    absolute,
    claim,
    continued_config,
    owned,
    recorded_data,
    recorded_profile,
)
from segkit.runtime import resolve_device, seed_everything
from segkit.transforms import eval_transforms


def train_config(model: str, *, profile: str | None = None, data: str | os.PathLike | None = None,
                 out: str | os.PathLike | None = None, log_dir: str | os.PathLike | None = None,
                 model_options: dict[str, Any] | None = None, **changes: Any) -> TrainConfig:
    """The profile's config for ``model`` with ``changes`` (``profile`` as ``config.profile_config``
    takes it); default folders named after the model, the TensorBoard log inside the run's folder
    (one log per run), the data as an absolute path."""
    name = resolve_name(model)
    config = profile_config(name, profile, **changes)
    out = Path(out or Path("checkpoints", name))
    return config.replace(
        model_options={**config.model_options, **(model_options or {})},
        data=None if data is None else absolute(data),
        out=str(out),
        log_dir=str(log_dir or out / TENSORBOARD),
    )


def train(model: str, *, profile: str | None = None, data: str | os.PathLike | None = None,
          out: str | os.PathLike | None = None, log_dir: str | os.PathLike | None = None,
          resume: bool = False, model_options: dict[str, Any] | None = None,
          callbacks: Sequence[Callback] = (), progress: bool = True, **changes: Any) -> FitState:
    """Train ``model`` under a profile: the synthetic set when ``data`` is None, checkpoints, logs.

    The profile is resolved once (``auto`` asks the GPU once), and the run once, into the
    ``segkit.context.RunContext`` that the loop, validation, checkpoints and ``run.json`` read.
    ``resume`` continues ``out/last.pt`` as it was recorded (``segkit.run.continued_config``);
    without it, ``out`` must be new or empty (``segkit.run.claim``). One run at a time trains into
    ``out`` (``segkit.run.owned``). ``time_budget`` (seconds) trains for that long instead of for
    epochs; giving ``epochs`` drops a profile's budget. The folder gets ``last.pt``, ``best.pt``,
    ``run.json`` (``segkit.run.RunRecord``) and, unless ``log_dir`` says otherwise, the TensorBoard
    log. Under torchrun every process runs this (``segkit.distributed``): process 0 makes the data,
    prints, logs and checkpoints; ``callbacks`` run in every process.
    """
    auto_batch = changes.get("batch_size") == "auto"
    if auto_batch:
        del changes["batch_size"]
    if "epochs" in changes and not resume:
        changes.setdefault("time_budget", None)  # epochs asked for: not the profile's budget
    folder = Path(out or Path("checkpoints", resolve_name(model)))
    with owned(folder, owner=distributed.launch_rank() == 0, create=not resume):
        profile, profile_why = resolve_profile(recorded_profile(folder, profile) if resume else profile)
        if resume:
            if log_dir is not None:
                changes["log_dir"] = str(log_dir)
            config = continued_config(folder / "last.pt", model, data=data,
                                      model_options=model_options, **changes)
            auto_batch = False  # the run keeps its recorded batch
        else:
            if distributed.launch_rank() == 0:  # it clears an unsaved run: one process only
                claim(folder)
            config = train_config(model, profile=profile, data=data, out=folder, log_dir=log_dir,
                                  model_options=model_options, **changes)
        check_trainable_sizes(config)
        with distributed.process_group(config.device):
            return _train_in_group(config, profile, profile_why, auto_batch=auto_batch,
                                   callbacks=callbacks, progress=progress,
                                   resume=folder / "last.pt" if resume else None)


def _train_in_group(config: TrainConfig, profile: str, profile_why: str, *, auto_batch: bool,
                    callbacks: Sequence[Callback], progress: bool, resume: Path | None) -> FitState:
    """The run resolved, then its data, model and observers, then ``fit``, in this process of
    the group."""
    main = distributed.is_main_process()
    config, context = resolve_run(config, profile=profile, profile_why=profile_why,
                                  auto_batch=auto_batch)
    root = config.data or absolute(distributed.main_process_first(
        lambda: ensure_synthetic(PROFILES[profile], progress=progress and main)))
    check_finished(root)
    config = config.replace(data=str(root))
    train_loader, val_loader = build_loaders(root, config, context.device)
    net = distributed.main_process_first(lambda: _build_model(config))  # weights made once
    observers, record = [], None
    if main:
        _print_header(net, config, context, train_loader, val_loader)
        record = RunRecord(config.out, profile=profile,
                           batch=min(config.batch_size, len(train_loader.sampler)))
        observers = [ProgressBar(min(len(train_loader), config.max_iters or len(train_loader)),
                                 disable=not progress),
                     PrintMetrics(), TensorBoardLogger(config.log_dir), Checkpointer(config.out),
                     record]
    try:
        return fit(net, train_loader, val_loader, config, [*observers, *callbacks], resume=resume,
                   context=context)
    except KeyboardInterrupt:
        if record is not None:
            record.interrupted("interrupted (Ctrl-C)")
        raise KeyboardInterrupt(_how_to_go_on(Path(config.out))) from None
    except BaseException as error:
        if record is not None:
            record.interrupted(f"{type(error).__name__}: {error}")
        raise


def _how_to_go_on(folder: Path) -> str:
    """What an interrupted run leaves in ``folder`` and the command that goes on from it."""
    if (folder / "last.pt").is_file():
        return (f"{folder / 'last.pt'} keeps the last epoch saved: continue it with the same "
                "command and -c")
    return f"nothing was saved in {folder} yet: run the same command again to start over"


def check_trainable_sizes(config: TrainConfig) -> None:
    """Refuse training crops or validation frames too small for the models before training, rather
    than fail at the first step or, for validation, after a whole epoch."""
    for flag, size in (("--size", config.size), ("--val-size", config.val_size)):
        if size is not None and min(size) < MIN_INPUT_SIDE:
            raise DataError(f"{flag} {size[0]}x{size[1]}: too small; the models need at least "
                            f"{MIN_INPUT_SIDE} pixels a side (e.g. {flag} 256x128)")


def _build_model(config: TrainConfig):
    """The config's model, initialised from its seed (so every process starts from the same weights)."""
    seed_everything(config.seed)
    return build_model(config.model, num_classes=labels.num_classes(config.label_scheme),
                       **config.model_options)


def _print_header(net, config: TrainConfig, context: RunContext, train_loader: DataLoader,
                  val_loader: DataLoader) -> None:
    params = sum(p.numel() for p in net.parameters())
    profile = f"profile {context.profile}" + (
        f" ({context.profile_why})" if context.profile_why not in ("", "named") else "")
    print(f"training {config.model} ({params / 1e6:.2f} M parameters) on {config.data}: "
          f"{len(train_loader.dataset)} train / {len(val_loader.dataset)} val frames; {profile}; "
          f"{config.summary(context.processes)}"
          f"{f' ({context.batch_why})' if context.batch_why else ''}; {context.describe()}; "
          f"checkpoints in {config.out}, TensorBoard logs in {config.log_dir}", flush=True)


def test(checkpoint: str | os.PathLike, *, model: str | None = None,
         data: str | os.PathLike | None = None, split: str = "val", mode: str = "whole",
         size: tuple[int, int] | None = None, window: tuple[int, int] | None = None,
         stride: tuple[int, int] | None = None, tta: Sequence[str] = (),
         scales: Sequence[float] | None = None, save_labelids: str | os.PathLike | None = None,
         batch_size: int = 4, device: str = "auto", num_workers: int = 0) -> dict[str, Any]:
    """Score a checkpoint on ``split``; print the class and category tables, time and memory.

    ``mode``, ``size``, ``window``, ``stride``, ``tta`` and ``scales`` choose how the model sees
    each frame (``segkit.inference.Inference.for_checkpoint``: by default the whole frame at the
    validation size the model was trained with); predictions are resized to the labels, which keep
    their resolution. ``save_labelids`` writes every prediction as an official labelIds PNG into
    that folder; on a split without labels (the test split, for the benchmark server) only that
    is done and no scores are returned.
    """
    net, saved = model_from_checkpoint(checkpoint, expected=model)
    config = TrainConfig.from_dict(saved["config"])
    root = data or recorded_data(config.data, None, Path(checkpoint))
    if root is None:
        raise DataError(f"{checkpoint}: no dataset recorded; give --data")
    check_finished(root)
    inference = Inference.for_checkpoint(config, mode=mode, size=size, window=window,
                                         stride=stride, tta=tta, scales=scales)
    dataset = CityscapesSegmentation(root, split, eval_transforms(), label_scheme=config.label_scheme)
    labelled = _has_labels(dataset, refuse=save_labelids is None)
    run_device = resolve_device(device)
    net.to(run_device)
    loader = scoring_loader(dataset, batch_size=batch_size, num_workers=num_workers)
    writer = None if save_labelids is None else LabelIdWriter(
        save_labelids, dataset.images, scheme=config.label_scheme,
        options={"checkpoint": str(checkpoint), "data": str(root), "split": split,
                 "inference": asdict(inference)})
    print(f"{saved['model_name']} from {checkpoint} (epoch {saved['epoch']}) on {root} {split}: "
          f"{len(dataset)} frames, {inference.describe()}", flush=True)
    if writer is not None and (resized := _prepared_size(root)) is not None:
        print(f"note: {root} is a copy resized to {resized[0]}x{resized[1]} by segkit prepare, so the "
              "labelIds files have that size; the benchmark server and the official evaluator "
              "expect 2048x1024: run on the official root for those", flush=True)
    if not labelled:
        written = write_label_ids(net, loader, writer, inference=inference, device=run_device)
        print(f"{split} has no labels to score: wrote {written} labelIds PNGs into {save_labelids}")
        return {}
    scores = evaluate(net, loader, device=run_device, inference=inference, on_batch=writer)
    print(format_table(scores, labels.class_names(config.label_scheme)))
    if scores["category_iou"]:
        print("\n" + format_categories(scores))
    peak, how = _peak_memory(net, dataset, inference, run_device)
    print(f"\n{scores['seconds'] / scores['images']:.3f} s per frame ({scores['images']} frames, "
          f"reading included); peak memory {peak / 2**20:.0f} MB for one frame ({how})")
    if writer is not None:
        print(f"wrote {writer.written} labelIds PNGs into {save_labelids} (the official evaluator: "
              "CITYSCAPES_RESULTS=that folder csEvalPixelLevelSemanticLabeling, under numpy older "
              "than 2.4, which removed the np.in1d it calls; its scores equal the ones above)")
    return scores


def _prepared_size(root: str | os.PathLike) -> tuple[int, int] | None:
    """The (width, height) that ``segkit prepare`` resized ``root`` to, or None (not resized or
    not a prepared root)."""
    size = (read_manifest(root) or {}).get("options", {}).get("size")
    return None if size is None else (int(size[0]), int(size[1]))


def _has_labels(dataset: CityscapesSegmentation, *, refuse: bool) -> bool:
    """Whether ``dataset`` has labels to score; a split without them is refused if ``refuse``."""
    try:
        check_has_labels(dataset)
    except DataError:
        if refuse:
            raise
        return False
    return True


def _peak_memory(net, dataset: CityscapesSegmentation, inference: Inference,
                 device: torch.device) -> tuple[int, str]:
    """Peak bytes torch allocates to predict the first frame, and how they were measured."""
    image, mask = dataset[0]
    peak = frame_peak_bytes(net, image, mask.shape[-2:], inference, device)
    how = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
           else f"torch {device.type} allocations, profiled")
    return peak, how
