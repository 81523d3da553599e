"""A run's folder and its one owner: claimed once, its config recorded, its files kept.

A run folder holds ``last.pt`` and ``best.pt`` (``callbacks.Checkpointer``), ``run.json``
(``RunRecord``: config, history, time, images seen, speed and memory) and by default its
TensorBoard log (``tensorboard/``), so that TensorBoard shows every run on its own. ``segkit
train`` and the notebooks' ``course.train_model`` go through the same functions: one process at a
time trains into a folder (``owned``, a lock that a second run is refused by); a new run only
starts in a new or empty folder (``claim``); ``-c`` continues the recorded run as it was recorded
(``continued_config``); and the course sets an earlier run of its own aside (``set_aside``) rather
than deleting it. Nothing of the user's is ever overwritten.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from segkit import __version__, distributed
from segkit.budget import format_duration
from segkit.checkpoints import load_checkpoint, unwrap
from segkit.config import TrainConfig, profile_name
from segkit.engine import Callback, FitState
from segkit.io import PARTIAL_SUFFIX, DataError, atomic_write, remove_partials
from segkit.models.registry import resolve_name
from segkit.step import gradient_pass, random_batch

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

RUN_RECORD = "run.json"
RUN_FORMAT = "segkit-run/1"
RUN_LOCK = "run.lock"
#: The default TensorBoard folder of a run, inside its folder: one log per run.
TENSORBOARD = "tensorboard"


@contextlib.contextmanager
def owned(folder: Path, *, owner: bool = True, create: bool = True) -> Iterator[None]:
    """Hold ``folder`` for one training process: an exclusive lock on ``folder/run.lock`` while the
    block runs; a second run into the same folder is refused (``DataError``) rather than mix its
    checkpoints with the first one's. The operating system drops the lock when its process ends,
    however it ends, so a killed run never leaves the folder locked. ``owner=False`` (the other
    processes of a torchrun, which write nothing there) takes no lock; without ``create`` (``-c``)
    a folder that is not there is not made, for the run to be refused as nothing to continue.
    """
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: is a file, not a folder; choose another --out")
    if not owner or not (create or folder.is_dir()):
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUN_LOCK
    created = not path.exists()
    with open(path, "a+") as lock:
        if not _lock(lock):
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise DataError(f"{folder}: another segkit run is training into this folder ({holder}); "
                            "wait for it to end, or choose another --out")
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        try:
            yield
        except DataError:
            if created:  # a run refused before it began leaves nothing behind in the folder
                path.unlink(missing_ok=True)
            raise


def _lock(file) -> bool:
    """Take an exclusive lock on an open file without waiting; False when another process holds it."""
    if fcntl is None:  # Windows: no advisory locks; the folder checks alone guard a run there
        return True
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def claim(folder: Path) -> None:
    """Make ``folder`` ready for a new run, or refuse it (``DataError`` saying what to do).

    It may be new or empty, or hold only what a run of segkit's left that stopped before its first
    checkpoint (its ``run.json``, a save cut short, its TensorBoard log): nothing of that run can be
    continued, so it is cleared and the run starts again. A run with a ``last.pt`` is continued with
    ``-c``; anything else is never written over.
    """
    if (folder / "last.pt").exists():
        raise DataError(f"{folder}: already holds a run (last.pt); continue it with "
                        "-c/--continue_training or choose another --out")
    if not folder.is_dir():
        return
    status = _clear_unsaved_run(folder)
    if status is not None:
        print(f"note: {folder} held a run that stopped before its first checkpoint ({status} in "
              f"{RUN_RECORD}), with nothing to continue: it starts again", flush=True)
    held = sorted(path.name for path in folder.iterdir() if path.name != RUN_LOCK)
    if held:
        raise DataError(f"{folder}: not empty ({', '.join(held[:3])}…) and not a run to continue; a "
                        "new run never writes over other files: choose another --out")


def _clear_unsaved_run(folder: Path) -> str | None:
    """Remove what a segkit run left in ``folder`` that stopped before its first checkpoint and
    return the status it recorded; None (nothing removed) where ``folder`` holds anything else."""
    record = read_record(folder)
    if record is None:
        return None
    log = folder / TENSORBOARD
    logs = list(log.iterdir()) if log.is_dir() else []
    files = [folder / RUN_RECORD, *folder.glob(f".*{PARTIAL_SUFFIX}"), *logs]
    if (any(not (path.is_file() and path.name.startswith("events.out.tfevents.")) for path in logs)
            or any(path not in {*files, folder / RUN_LOCK, log} for path in folder.iterdir())):
        return None
    for path in files:
        path.unlink()
    if log.is_dir():
        log.rmdir()
    return record.get("status", "running")


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
    for ``claim`` to refuse; a run still training there (another kernel, say) is refused, not
    moved from under it."""
    record = read_record(folder)
    if record is None:
        return None
    with owned(folder, create=False):  # refused while another run holds the folder
        pass
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
        started = ("the run there stopped before its first checkpoint, so there is nothing to "
                   "continue: start it again with the same command without -c"
                   if read_record(last.parent) is not None else
                   "nothing to continue (train without -c/--continue_training first)")
        raise DataError(f"{last}: {started}")
    if distributed.launch_rank() == 0:  # the folder's owner: torchrun's other processes only read
        remove_partials(last.parent)  # a save that was killed half-way
    checkpoint = load_checkpoint(last)
    recorded = TrainConfig.from_dict(checkpoint["config"])
    given = {"model": resolve_name(model), **changes}
    recorded = recorded.replace(data=recorded_data(recorded.data, data, last))
    for name, value in given.items():
        if name not in CONTINUE_MAY_CHANGE and _normal(value) != _normal(getattr(recorded, name)):
            _refuse_change(last, name, getattr(recorded, name), value)
    for name, value in (model_options or {}).items():
        if value != recorded.model_options.get(name):
            _refuse_change(last, name, recorded.model_options.get(name), value)
    # the folder may have been moved or copied: its own log goes with it (unless --log_dir is given)
    moved = {"out": str(last.parent),
             "log_dir": _moved_with(recorded.log_dir, recorded.out, last.parent)}
    config = recorded.replace(**{**moved, **{k: v for k, v in given.items() if k in CONTINUE_MAY_CHANGE}})
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


def recorded_data(recorded: str | None, given: str | os.PathLike | None, source: Path) -> str | None:
    """The dataset of the run recorded in ``source`` (a checkpoint), for ``-c`` or ``segkit test``.

    Paths are recorded absolute, so that a run continued or tested from another folder reads the
    same data. ``given`` (``--data``) must be that dataset for ``-c``; for a relative path recorded
    by an earlier segkit, which may mean another folder from here, it is required instead.
    """
    if recorded is not None and not Path(recorded).is_absolute():
        if given is None:
            raise DataError(f"{source}: records its data as the relative path {recorded} (an earlier "
                            "segkit), which may be another folder from here: give --data with that "
                            "dataset's path")
        return absolute(given)
    if given is not None and Path(given).resolve() != Path(recorded or "").resolve():
        _refuse_change(source, "data", recorded, given)
    return recorded


def absolute(path: str | os.PathLike) -> str:
    """``path`` made absolute (symbolic links kept), as a run records its data."""
    return os.path.abspath(path)


def _moved_with(log_dir: str | None, recorded_out: str, out: Path) -> str | None:
    """``log_dir`` moved along with a run folder, where it lies inside the folder recorded."""
    if log_dir is None or not Path(log_dir).is_relative_to(recorded_out):
        return log_dir
    return str(out / Path(log_dir).relative_to(recorded_out))


def _normal(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _refuse_change(last: Path, name: str, recorded: Any, given: Any) -> None:
    flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
    fix = f"give {flag} {recorded}" if name == "model" else f"drop {flag}"  # -m cannot be left out
    raise DataError(f"{last}: -c continues the run as recorded, and it was trained with {flag} "
                    f"{recorded}, not {given}; {fix} to continue it, or train a new run with "
                    "another --out")


class RunRecord(Callback):
    """``run.json``: the config, the run as resolved (``RunContext.record()``: device, precision and
    why, loss scaling, memory layout, memory cap, profile and why, how the batch was chosen,
    processes), the history so far, and at the end how long the run took, how many images it
    saw, its speed in the precision it trained in, and the peak memory of a training step.

    Written atomically when training starts, after every epoch and at the end, so a killed run
    still says how far it got; ``status`` is ``running``, ``finished`` or ``stopped``.
    """

    def __init__(self, folder: str | os.PathLike, *, batch: int | None = None, **extra: Any):
        """``batch``: the batch the run trains on (its config's, or fewer where the split holds
        fewer frames), which the memory figure is for; ``extra`` goes into the record as it is."""
        self.path, self.batch, self.extra = Path(folder, RUN_RECORD), batch, extra
        self.started = (read_record(folder) or {}).get("started", time.time())
        self.state: FitState | None = None  # the run's, once it has started

    def on_fit_start(self, state: FitState) -> None:
        self.state = state
        if state.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(state.device)
        self._write(state, "running")

    def interrupted(self, why: str) -> None:
        """Record that the run ended between its checkpoints (``why``: Ctrl-C, an error), so that
        ``run.json`` does not go on saying ``running``; where the disk refuses even that, it says
        what it said at the last epoch."""
        if self.state is not None:
            with contextlib.suppress(OSError):
                self._write(self.state, "stopped", stopped=why)

    def on_epoch_end(self, state: FitState) -> None:
        self._write(state, "running")

    def on_fit_end(self, state: FitState) -> None:
        peak_mb, how = _step_peak_mb(state, self.batch or state.config.batch_size)
        self._write(state, "stopped" if state.stop else "finished", peak_mb=peak_mb, peak_how=how)

    def _write(self, state: FitState, status: str, **figures: Any) -> None:
        model = unwrap(state.model)
        record = {
            "format": RUN_FORMAT, "segkit": __version__, "status": status, "stopped": state.stop,
            "started": self.started, "model": state.config.model, **self.extra,
            "config": asdict(state.config), "run": state.context.record(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "precision": state.context.precision,
            "train_seconds": state.seconds, "images_seen": state.images_seen,
            "img_per_s": state.images_seen / state.train_seconds if state.train_seconds else math.nan,
            "plan": state.plan.state_dict() if state.plan else None,
            "history": state.history, **figures,
        }
        with atomic_write(self.path) as tmp:
            tmp.write_text(json.dumps(record, indent=1))


#: The largest batch the end-of-run memory figure profiles on the CPU; larger ones are scaled.
PROFILED_BATCH = 4


def _step_peak_mb(state: FitState, batch: int) -> tuple[float, str]:
    """The most MB torch held at once in a training step at ``batch``, and how it was measured.

    One meaning on every device, that of the planner's ``Plan.tensor_gib``: the weights and the
    optimizer state held across steps, plus everything a step allocates above them (gradients,
    activations, temporaries). On CUDA that is the allocator's peak over the run
    (``torch.cuda.max_memory_allocated``: training steps are its largest part; cuDNN's
    workspaces included). On the CPU it is counted: the bytes held, plus a profiled forward and
    backward of a copy of the trained model in the run's precision and layout above them. A
    batch above ``PROFILED_BATCH`` is not built there (a batch of 100000 would fill the machine's
    memory): two smaller ones are profiled and the growth per frame extended to it, as the
    planner does (a step's memory is a fixed part plus a part per frame).
    """
    if state.device.type == "cuda":
        return (torch.cuda.max_memory_allocated(state.device) / 2**20,
                "torch.cuda.max_memory_allocated over the run")
    how = "weights and optimizer state held, plus one forward and backward profiled on the CPU"
    held = _held_bytes(state) / 2**20
    if batch <= PROFILED_BATCH:
        return held + _profiled_step_mb(state, batch), how
    half, full = (_profiled_step_mb(state, b) for b in (PROFILED_BATCH // 2, PROFILED_BATCH))
    return held + full + (full - half) / (PROFILED_BATCH // 2) * (batch - PROFILED_BATCH), how


def _held_bytes(state: FitState) -> int:
    """Bytes held across training steps: the model's weights and buffers, and the optimizer's state."""
    model = unwrap(state.model)
    tensors = [*model.parameters(), *model.buffers(),
               *(value for per_weight in state.optimizer.state.values() for value in per_weight.values()
                 if isinstance(value, torch.Tensor))]
    return sum(t.numel() * t.element_size() for t in tensors)


def _profiled_step_mb(state: FitState, batch: int) -> float:
    """Peak MB torch allocates on the CPU for one forward and backward at ``batch``, above what it
    held before (``step.gradient_pass`` of a copy of the model)."""
    import copy

    from segkit.losses import build_loss
    from segkit.planner import peak_bytes

    model = copy.deepcopy(unwrap(state.model)).train()
    images, masks = random_batch(batch, state.config.size, state.device,
                                 channels_last=state.context.channels_last,
                                 num_classes=state.num_classes)
    criterion = build_loss("ce")

    def step() -> None:
        gradient_pass(model, images, masks, criterion, dtype=state.context.dtype)

    return peak_bytes(step, state.device) / 2**20
