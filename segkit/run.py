"""A run's folder and its one owner: claimed once, its config recorded, its files kept.

A run folder holds ``last.pt`` and ``best.pt`` (``callbacks.Checkpointer``) and ``run.json``
(``RunRecord``: config, history, time, images seen, speed and memory), and the course keeps its
TensorBoard log there too. ``segkit train`` and the notebooks' ``course.train_model`` go through the
same functions: a new run only starts in a new or empty folder (``claim``); ``-c`` continues the
recorded run as it was recorded (``continued_config``); and the course sets an earlier run of its
own aside (``set_aside``) rather than deleting it. Nothing of the user's is ever overwritten.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from segkit import __version__
from segkit.budget import format_duration
from segkit.checkpoints import load_checkpoint, unwrap
from segkit.config import TrainConfig, profile_name
from segkit.engine import Callback, FitState
from segkit.io import DataError, atomic_write, remove_partials
from segkit.models.registry import resolve_name
from segkit.runtime import autocast_dtype, precision_name

RUN_RECORD = "run.json"
RUN_FORMAT = "segkit-run/1"


def claim(folder: Path) -> None:
    """Refuse ``folder`` for a new run unless it is new or empty (``DataError`` saying what to do)."""
    if (folder / "last.pt").exists():
        raise DataError(f"{folder}: already holds a run (last.pt); continue it with "
                        "-c/--continue_training or choose another --out")
    if folder.is_dir() and any(folder.iterdir()):
        held = ", ".join(sorted(path.name for path in folder.iterdir())[:3])
        raise DataError(f"{folder}: not empty ({held}…) and not a run to continue; a new run "
                        "never writes over other files: choose another --out")


def read_record(folder: str | os.PathLike) -> dict | None:
    """The ``run.json`` that segkit wrote in ``folder``, or None if there is none (or another file)."""
    path = Path(folder, RUN_RECORD)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == RUN_FORMAT else None


def set_aside(folder: Path) -> Path | None:
    """Move an earlier segkit run in ``folder`` to a sibling named after its start time; return
    where it went (None if ``folder`` held nothing). A folder holding anything else is left alone,
    for ``claim`` to refuse."""
    record = read_record(folder)
    if record is None:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(record.get("started", time.time())))
    target = folder.with_name(f"{folder.name}-{stamp}")
    number = 1
    while target.exists():
        number += 1
        target = folder.with_name(f"{folder.name}-{stamp}-{number}")
    folder.rename(target)
    return target


def recorded_profile(folder: Path, given: str | None) -> str | None:
    """The profile a run in ``folder`` was trained under (``run.json``), for ``-c``; another
    ``given`` one is refused in one line."""
    recorded = (read_record(folder) or {}).get("profile")
    if given is not None and recorded is not None and profile_name(given) != recorded:
        raise DataError(f"{folder}: -c continues the run as recorded, and it was trained with "
                        f"--profile {recorded}, not {given}; drop --profile to continue it")
    return recorded or given


#: What ``-c`` may change: how the rest of a run is carried out, not what it learns from.
CONTINUE_MAY_CHANGE = frozenset({"epochs", "time_budget", "device", "num_workers", "log_every",
                                 "gpu_memory", "oom", "log_dir", "max_val_batches"})
_FLAGS = {"model": "-m", "epochs": "-n", "model_options": "--model options"}


def continued_config(last: Path, model: str, *, data: str | os.PathLike | None = None,
                     model_options: dict[str, Any] | None = None, **changes: Any) -> TrainConfig:
    """The recorded config of the run whose checkpoint is ``last``, for ``-c``.

    Data, model, recipe and schedule come from the checkpoint. Repeating a setting with its
    recorded value is fine; another value is refused (``DataError``) naming the flag, the recorded
    value and what to do, except for the settings in ``CONTINUE_MAY_CHANGE`` (more epochs or
    minutes, another device, …). A finished run is refused with the way to train on.
    """
    if not last.is_file():
        raise DataError(f"{last}: nothing to continue (train without -c/--continue_training first)")
    remove_partials(last.parent)  # a save that was killed half-way
    checkpoint = load_checkpoint(last)
    recorded = TrainConfig.from_dict(checkpoint["config"])
    given = {"model": resolve_name(model), **changes}
    if data is not None and Path(data).resolve() != Path(recorded.data or "").resolve():
        _refuse_change(last, "data", recorded.data, data)
    for name, value in given.items():
        if name not in CONTINUE_MAY_CHANGE and _normal(value) != _normal(getattr(recorded, name)):
            _refuse_change(last, name, getattr(recorded, name), value)
    for name, value in (model_options or {}).items():
        if value != recorded.model_options.get(name):
            _refuse_change(last, name, recorded.model_options.get(name), value)
    config = recorded.replace(out=str(last.parent),  # the folder may have been moved or copied
                              **{k: v for k, v in given.items() if k in CONTINUE_MAY_CHANGE})
    by_budget = recorded.time_budget is not None
    if (config.time_budget is None) == by_budget or (by_budget and "epochs" in changes):
        raise DataError(f"{last}: this run was planned by {'a time budget' if by_budget else 'epochs'}; "
                        f"continue it the same way ({'--time-budget' if by_budget else '-n'})")
    _check_unfinished(last, checkpoint, recorded, config)
    return config


def _check_unfinished(last: Path, checkpoint: dict, recorded: TrainConfig, config: TrainConfig) -> None:
    """Refuse a finished run with the way to train on; say how a longer schedule continues."""
    if config.time_budget is not None:
        spent = checkpoint.get("seconds", 0.0)
        ended = (checkpoint.get("plan") or {}).get("done", False)
        if spent >= config.time_budget or (ended and config.time_budget <= recorded.time_budget):
            larger = format_duration(max(2 * config.time_budget, spent + config.time_budget), flag=True)
            raise DataError(f"{last}: this run is finished ({format_duration(spent)} of a "
                            f"{format_duration(config.time_budget)} budget); to train on, continue "
                            f"it with a larger budget, e.g. -c --time-budget {larger}")
        if config.time_budget != recorded.time_budget:
            print(_stretched_note(recorded, config, checkpoint), flush=True)
        return
    if config.epochs != recorded.epochs and recorded.scheduler != "none":
        print(f"note: the {recorded.scheduler} schedule was planned for {recorded.epochs} epochs and is "
              f"now stretched over {config.epochs}: the learning rate continues from that longer "
              "curve, a little higher than where it had decayed to", flush=True)
    if checkpoint["epoch"] >= config.epochs:
        raise DataError(f"{last}: this run is finished ({checkpoint['epoch']} of {config.epochs} "
                        f"epochs); to train on, continue it with more epochs, e.g. -c -n "
                        f"{config.epochs + max(1, config.epochs // 2)}")


def _stretched_note(recorded: TrainConfig, config: TrainConfig, checkpoint: dict) -> str:
    """What continuing a budgeted run with another budget does to its learning rate."""
    spent = checkpoint.get("seconds", 0.0)
    if recorded.scheduler in ("none", "step"):  # neither decays to zero at the budget's end
        return (f"note: {format_duration(spent)} of the {format_duration(recorded.time_budget)} budget "
                f"spent; the rest of the run is re-planned over {format_duration(config.time_budget)}")
    share = max(0.0, 1 - spent / config.time_budget)
    return (f"note: the {recorded.scheduler} schedule was planned to reach zero at "
            f"{format_duration(recorded.time_budget)} ({format_duration(spent)} spent); it is "
            f"re-planned over {format_duration(config.time_budget)}: the learning rate goes back "
            f"up to about {share:.0%} of its peak and decays to zero at the new end")


def _normal(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _refuse_change(last: Path, name: str, recorded: Any, given: Any) -> None:
    flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
    raise DataError(f"{last}: -c continues the run as recorded, and it was trained with {flag} "
                    f"{recorded}, not {given}; drop {flag} to continue it, or train a new run "
                    "with another --out")


class RunRecord(Callback):
    """``run.json``: the config, the history so far, and at the end how long the run took, how many
    images it saw, its speed in the precision it trained in, and the peak memory of a step.

    Written atomically when training starts, after every epoch and at the end, so a killed run
    still says how far it got; ``status`` is ``running``, ``finished`` or ``stopped``.
    """

    def __init__(self, folder: str | os.PathLike, **extra: Any):
        self.path, self.extra = Path(folder, RUN_RECORD), extra
        previous = read_record(folder)
        self.started = previous["started"] if previous else time.time()

    def on_fit_start(self, state: FitState) -> None:
        if state.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(state.device)
        self._write(state, "running")

    def on_epoch_end(self, state: FitState) -> None:
        self._write(state, "running")

    def on_fit_end(self, state: FitState) -> None:
        self._write(state, "stopped" if state.stop else "finished", peak_mb=_step_peak_mb(state))

    def _write(self, state: FitState, status: str, **figures: Any) -> None:
        model = unwrap(state.model)
        record = {
            "format": RUN_FORMAT, "segkit": __version__, "status": status, "stopped": state.stop,
            "started": self.started, "model": state.config.model, **self.extra,
            "config": asdict(state.config),
            "parameters": sum(p.numel() for p in model.parameters()),
            "precision": precision_name(autocast_dtype(state.config.amp, state.device)),
            "train_seconds": state.seconds, "images_seen": state.images_seen,
            "img_per_s": state.images_seen / state.train_seconds if state.train_seconds else math.nan,
            "plan": state.plan.state_dict() if state.plan else None,
            "history": state.history, **figures,
        }
        with atomic_write(self.path) as tmp:
            tmp.write_text(json.dumps(record, indent=1))


def _step_peak_mb(state: FitState) -> float:
    """Peak MB of a training step: the CUDA allocator's over the run, or on the CPU one profiled
    forward and backward of a copy of the trained model, in the run's precision and memory layout."""
    if state.device.type == "cuda":
        return torch.cuda.max_memory_allocated(state.device) / 2**20
    import copy

    from segkit.losses import build_loss
    from segkit.planner import peak_bytes
    from segkit.step import forward_backward

    config = state.config
    model = copy.deepcopy(unwrap(state.model)).train()
    width, height = config.size
    images = torch.randn(config.batch_size, 3, height, width, device=state.device)
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    masks = torch.randint(0, state.num_classes, (config.batch_size, height, width), device=state.device)
    dtype = autocast_dtype(config.amp, state.device)
    criterion = build_loss("ce")

    def step() -> None:
        forward_backward(model, images, masks, criterion, dtype=dtype)
        model.zero_grad(set_to_none=True)

    return peak_bytes(step, state.device) / 2**20
