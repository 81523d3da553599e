"""Observers of ``segkit.engine.fit``: progress bars, epoch lines, checkpoints, TensorBoard, and
a live plot of the curves."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from segkit.budget import format_duration
from segkit.checkpoints import check_checkpoint_dir, save_checkpoint
from segkit.engine import Callback, FitState
from segkit.labels import colorize
from segkit.transforms import denormalize


class ProgressBar(Callback):
    """A tqdm bar per epoch with the loss of the latest read-back."""

    def __init__(self, total: int, disable: bool = False):
        self.total, self.disable, self.bar = total, disable, None

    def on_batch_end(self, state: FitState) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.total, desc=f"epoch {_epoch_of(state, state.epoch + 1)}",
                            unit="batch", leave=False, disable=self.disable)
        self.bar.update()

    def on_log(self, state: FitState) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{state.batch_loss:.4f}", refresh=False)

    def on_epoch_end(self, state: FitState) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    on_fit_end = on_epoch_end


def _epoch_of(state: FitState, epoch: int | str) -> str:
    """``"3/10"``, or for a time-budget run ``"3"`` with the time spent of the budget."""
    if state.plan is None:
        return f"{epoch}/{state.config.epochs}"
    return f"{epoch} ({format_duration(state.seconds)} of {format_duration(state.plan.budget)})"


class PrintMetrics(Callback):
    """One line per epoch: loss, validation loss, global acc, mean acc and mIoU, time; for a
    time-budget run the steps planned, and at the end what the budget turned into."""

    def on_epoch_end(self, state: FitState) -> None:
        row = state.last
        scores = ""
        if "val_miou" in row:
            scores = (f"  val: loss {row['val_loss']:.4f}  global acc {row['val_pixel_acc']:.3f}"
                      f"  mean acc {row['val_mean_acc']:.3f}  mIoU {row['val_miou']:.3f}")
        planned = ("" if state.plan is None or state.plan.total_steps is None
                   else f", step {state.step} of {state.plan.total_steps} planned")
        epoch = _epoch_of(state, f"{row['epoch']:>3}")
        print(f"epoch {epoch}  loss {row['train_loss']:.4f}"
              f"{scores}  ({row['train_seconds']:.1f} s{planned})", flush=True)

    def on_fit_end(self, state: FitState) -> None:
        if state.stop:
            print(f"stopped early: {state.stop}", flush=True)
        elif state.plan is not None and state.plan.done:
            print(f"time budget {format_duration(state.plan.budget)} spent: "
                  f"{format_duration(state.seconds)} of training and validation, {state.step} steps, "
                  f"{state.images_seen} images in {state.epoch} epochs", flush=True)


class Checkpointer(Callback):
    """``last.pt`` after every epoch and ``best.pt`` whenever validation mIoU improves."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        check_checkpoint_dir(self.out)

    def on_epoch_end(self, state: FitState) -> None:
        miou = state.last.get("val_miou", math.nan)
        improved = math.isfinite(miou) and miou > state.best_miou
        if improved:
            state.best_miou = miou
        save_checkpoint(self.out / "last.pt", state)
        if improved:
            save_checkpoint(self.out / "best.pt", state)


class TensorBoardLogger(Callback):
    """Scalars (training and validation loss, global acc, mean acc, mIoU, lr) and input / label /
    prediction images.

    The event file is opened when training starts, so a run refused before that leaves none behind.
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir, self.writer = str(log_dir), None

    def on_fit_start(self, state: FitState) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(self.log_dir)

    def on_log(self, state: FitState) -> None:
        self.writer.add_scalar("train/batch_loss", state.batch_loss, state.step)

    def on_epoch_end(self, state: FitState) -> None:
        row, epoch = state.last, state.epoch
        self.writer.add_scalar("train/loss", row["train_loss"], epoch)
        self.writer.add_scalar("train/lr", row["lr"], epoch)
        for name in ("loss", "pixel_acc", "mean_acc", "miou"):
            if f"val_{name}" in row:
                self.writer.add_scalar(f"val/{name}", row[f"val_{name}"], epoch)
        if state.val_example is not None:
            image, mask, pred = state.val_example
            self.writer.add_image("val/input", denormalize(image), epoch)
            self.writer.add_image("val/label", _colour(mask), epoch)
            self.writer.add_image("val/prediction", _colour(pred), epoch)
        self.writer.flush()

    def on_fit_end(self, state: FitState) -> None:
        self.writer.close()


def _colour(mask: torch.Tensor) -> torch.Tensor:
    """(H, W) class map -> (3, H, W) uint8 colour image."""
    return torch.from_numpy(colorize(mask)).permute(2, 0, 1)


class LivePlot(Callback):
    """Redraw training and validation loss and validation mIoU / global acc after every epoch, in
    place, against minutes of training and validation and images seen (``segkit.viz.draw_live``).

    In a notebook the picture is displayed once and then updated through its display handle, so a
    run leaves one picture, not one per epoch. It is sent as a PNG, which works under any
    matplotlib backend. Elsewhere the figure is still drawn (``self.fig``) but never shown. It
    prints nothing. Pass ``LivePlot()`` in ``fit``'s callbacks.
    """

    def __init__(self, *, figsize: tuple[float, float] = (10, 4)):
        self.figsize = figsize
        self.fig = None  # a matplotlib Figure once the first epoch has ended
        self.handle = None

    def on_epoch_end(self, state: FitState) -> None:
        # segkit.viz (matplotlib and seaborn, about a second to import) only once a plot is drawn:
        # `segkit train` and every other run without a LivePlot import this module too.
        from segkit import viz

        if self.fig is None:
            self.fig = viz.live_figure(self.figsize)
        if state.plan is None:
            viz.draw_live(self.fig, state.history, epochs=state.config.epochs)
        else:  # a time budget, not a number of epochs, ends the run
            viz.draw_live(self.fig, state.history, budget=state.plan.budget)
        self.handle = show_in_place(self.fig, self.handle)

    def on_fit_end(self, state: FitState) -> None:
        self.fig, self.handle = None, None


def show_in_place(fig, handle=None):
    """Show a matplotlib figure in a notebook as a PNG, or redraw the picture ``handle`` shows.

    Returns the display handle to pass next time (None outside a notebook, where nothing is shown),
    so that a curve updated as it grows leaves one picture in the cell, not one per update. A PNG
    works under any matplotlib backend.
    """
    if not _in_notebook():
        return None
    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    picture = Image(data=buffer.getvalue(), format="png")
    if handle is None:
        return display(picture, display_id=True)
    handle.update(picture)
    return handle


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (where inline figures can be displayed and updated)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")
