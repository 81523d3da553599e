"""Checkpoints: plain tensors and plain metadata, written atomically, read with ``weights_only=True``.

A checkpoint holds the model's registry spec and weights, the optimizer, scheduler and loss-scaler
states, the counters and history, every random state, the run's config, and the precision and
number of processes it trained with, so that ``-c`` continues exactly where a run stopped, or says
in one line what differs when it continues on other hardware. It is always read onto the CPU first
(as torchvision's reference does): random states must stay CPU tensors, and ``load_state_dict``
moves the rest to the model's device.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from segkit.io import DataError, atomic_write, disk_full_error, is_disk_full, load_tensors
from segkit.models import build_model, model_spec
from segkit.models.registry import resolve_name

CHECKPOINT_FORMAT = "segkit-checkpoint/1"


class RunState(Protocol):
    """What a checkpoint saves of a run and restores into it: ``segkit.engine.FitState`` (named
    by its fields here, because the engine builds on this module, not the reverse)."""

    model: nn.Module
    config: Any  # a dataclass (``TrainConfig``), saved as ``asdict(config)``
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    context: Any  # a ``segkit.context.RunContext``: its ``precision`` and ``processes`` are saved
    epoch: int
    step: int
    history: list[dict[str, Any]]
    best_miou: float

    @property
    def last(self) -> dict[str, Any]: ...


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return getattr(model, "module", model)


def rng_state() -> dict[str, Any]:
    """Every random state a resumed run must continue from, as plain data on the CPU."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> str | None:
    """Restore the random states of ``rng_state()`` (tensors read onto the CPU); returns what could
    not be, or None.

    One state is saved per GPU the saving process saw: a machine with fewer GPUs restores as many
    as it has (``torch.cuda.set_rng_state_all`` would fail on the first one missing), and one with
    none restores only the CPU's.
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    torch.set_rng_state(state["torch"])
    saved = state["cuda"]
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index, gpu_state in enumerate(saved[:here]):
        torch.cuda.set_rng_state(gpu_state, index)
    if len(saved) > here:
        return f"the random states of {len(saved)} GPUs saved, {here} here to take them"
    return None


def save_checkpoint(path: str | os.PathLike, state: RunState) -> Path:
    """Write ``state`` to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    spec = model_spec(state.model)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model_name": spec["name"],
        "model_options": spec["options"],
        "state_dict": unwrap(state.model).state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "precision": state.context.precision,
        "processes": state.context.processes,
        "epoch": state.epoch,
        "step": state.step,
        "best_miou": state.best_miou,
        "seconds": state.seconds,
        "train_seconds": state.train_seconds,
        "images_seen": state.images_seen,
        "plan": state.plan.state_dict() if state.plan is not None else None,
        "rng": rng_state(),
        "config": asdict(state.config),
        "metrics": state.last,
        "history": state.history,
    }
    try:
        # our own file object, closed even while the error's traceback lives on (in a notebook, for
        # good): torch's writer would otherwise keep the deleted temporary file's space in use
        with atomic_write(path) as tmp, open(tmp, "wb") as file:
            torch.save(checkpoint, file)
    except (OSError, RuntimeError) as error:  # the temporary file is gone; ``path`` is untouched
        needed = tensor_bytes(checkpoint)
        if not is_disk_full(error, path.parent, needed):
            raise
        then = ("training stopped rather than go on unsaved; free some space, then continue the run "
                f"with -c (from {path.name} as it was)" if path.exists() else
                "training stopped rather than go on unsaved; free some space and train again")
        raise disk_full_error(path.parent, f"writing {path.name}", needed, then) from error
    return path


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in nested dicts, lists and tuples: about what ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(value) for value in obj)
    return 0


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a segkit checkpoint onto the CPU safely (``weights_only=True``), naming the file on failure."""
    checkpoint = load_tensors(path, "segkit checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a segkit checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return checkpoint


def restore(state: RunState, path: str | os.PathLike) -> str | None:
    """Continue from the checkpoint at ``path``: weights, optimizer, scheduler, scaler, counters, RNG.

    The file is read onto the CPU; ``load_state_dict`` copies weights and optimizer state onto the
    device the model is on. The run may continue on other hardware than it was saved on (``-c
    --device``): another precision (bf16 saved on an Ampere card or a CPU, fp16 on a Turing card),
    where a loss scale carries over only from fp16 to fp16 and otherwise starts afresh; or another
    number of processes or GPUs. Returns one line saying what changed, or None.
    """
    checkpoint = load_checkpoint(path)
    unwrap(state.model).load_state_dict(checkpoint["state_dict"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    # a disabled scaler saves {}: fp16 loss scaling has nothing to continue from another precision
    if checkpoint["scaler"] and state.scaler.is_enabled():
        state.scaler.load_state_dict(checkpoint["scaler"])
    state.epoch, state.step = checkpoint["epoch"], checkpoint["step"]
    state.best_miou, state.history = checkpoint["best_miou"], list(checkpoint["history"])
    # checkpoints written before time budgets existed hold no times
    state.seconds = checkpoint.get("seconds", 0.0)
    state.train_seconds = checkpoint.get("train_seconds", 0.0)
    state.images_seen = checkpoint.get("images_seen", 0)
    if state.plan is not None and checkpoint.get("plan"):
        state.plan.load_state_dict(checkpoint["plan"])
    changes = [*_hardware_changes(checkpoint, state), set_rng_state(checkpoint["rng"])]
    changes = [change for change in changes if change]
    return f"note: {path} continues on other hardware: {'; '.join(changes)}" if changes else None


def _hardware_changes(checkpoint: dict, state: RunState) -> list[str]:
    """What differs between how the checkpoint was trained and how ``state`` continues it."""
    # checkpoints of an earlier segkit record neither: a loss scale saved means fp16
    saved = checkpoint.get("precision", "fp16" if checkpoint["scaler"] else None)
    now = state.context.precision
    changes = []
    if saved is not None and saved != now:
        scale = (", its loss scale starting afresh" if now == "fp16"
                 else ", without loss scaling" if saved == "fp16" else "")
        changes.append(f"trained in {saved}, continues in {now}{scale}")
    processes = checkpoint.get("processes", 1)
    if processes != state.context.processes:
        batch = state.config.batch_size
        changes.append(f"trained by {processes} processes, continues with {state.context.processes}: "
                       f"a global batch of {batch * state.context.processes} instead of "
                       f"{batch * processes}")
    return changes


def model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                          *, expected: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint through the registry, with its weights, on ``device``; in
    eval mode.

    ``expected`` (a model name or alias, e.g. from ``-m``) must name the checkpoint's model.
    """
    checkpoint = load_checkpoint(path)
    if expected is not None and resolve_name(expected) != checkpoint["model_name"]:
        raise DataError(f"{path}: holds a {checkpoint['model_name']} model, not {expected}")
    try:
        model = build_model(checkpoint["model_name"], **checkpoint["model_options"])
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, TypeError) as error:  # a name or option this segkit does not know
        raise DataError(f"{path}: its model cannot be rebuilt: {error.args[0] if error.args else error}"
                        ) from error
    except RuntimeError as error:  # load_state_dict: the weights do not fit the recorded model
        raise DataError(f"{path}: its weights do not fit the recorded {checkpoint['model_name']} "
                        f"model ({str(error).splitlines()[0]})") from error
    return model.to(device).eval(), checkpoint


def check_checkpoint_dir(out: Path) -> None:
    """Refuse to write checkpoints inside the installed package."""
    package = Path(__import__("segkit").__path__[0]).resolve()
    if out.resolve() == package or package in out.resolve().parents:
        raise ValueError(f"{out}: checkpoints are never written into the segkit package; "
                         "choose another --out")
