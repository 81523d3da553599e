"""Lab: the learning-rate range test, beside the learning rate the run will follow.

Smith, "Cyclical Learning Rates for Training Neural Networks" (WACV 2017), section 3.3: train
for a short while with the learning rate growing step by step, and watch the loss. It falls
slowly where the rate is too small, fast where it is right, and blows up where it is too large.
Here the rate grows geometrically from ``start`` to ``end``, one optimizer step per batch, each
through segkit's one training step with the config's optimizer, precision, memory layout and
loss (class weights included), as ``fit`` trains. The sweep runs on a copy of the model, so the
model handed in is the one the learner goes on to train, untouched.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from segkit.budget import StepPlan
from segkit.config import TrainConfig
from segkit.context import RunContext, resolve_run
from segkit.engine import build_criterion, build_optimizer, build_scheduler, steps_per_epoch, to_device
from segkit.step import train_step

RULES = ("min/10", "steepest")


@dataclass
class RangeTest:
    """What ``lr_range_test`` measured: per step taken, its ``lrs``, ``losses`` and exponentially
    ``smoothed`` losses; the ``suggestion`` found by ``rule``; why the sweep ``stopped`` early
    (None: it ran every step); its wall ``seconds`` and the ``step_seconds`` of one step after the
    first; the ``config`` and ``epoch_steps`` (optimizer steps in an epoch of its loader)."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    rule: str
    stopped: str | None
    seconds: float
    step_seconds: float
    config: TrainConfig
    epoch_steps: int

    def describe(self) -> str:
        """One line: the suggestion, its rule, the config's lr, and how the sweep went."""
        rule = {"steepest": "the steepest descent of the smoothed loss",
                "min/10": "a tenth of the rate at the smoothed loss's minimum"}[self.rule]
        end = f"stopped early: {self.stopped}" if self.stopped else "ran to the end"
        return (f"suggested lr {self.suggestion:.1e} ({rule}); the config's lr is {self.config.lr:.1e}. "
                f"{len(self.lrs)} steps from {self.lrs[0]:.0e} to {self.lrs[-1]:.1e} in "
                f"{self.seconds:.0f} s; {end}")

    def planned_steps(self) -> int:
        """The optimizer steps of the run: its epochs', or a time budget over the sweep's step time
        (validation left out: the run itself plans it as it goes)."""
        if self.config.time_budget is None:
            return self.config.epochs * self.epoch_steps
        return max(1, math.floor(self.config.time_budget / self.step_seconds))

    def figure(self):
        """The loss against the learning rate (log axis), beside the run's learning rate over its
        course (``segkit.viz.lr_range_figure``)."""
        from segkit import viz

        return viz.lr_range_figure(
            self.lrs, self.losses, self.smoothed, suggested=self.suggestion, rule=self.rule,
            config_lr=self.config.lr,
            course=planned_schedule(self.config, self.epoch_steps, self.planned_steps()))


def sweep_rates(start: float, end: float, steps: int) -> list[float]:
    """``steps`` learning rates growing geometrically from ``start`` to ``end`` (both included)."""
    if not 0 < start < end or steps < 2:
        raise ValueError(f"need 0 < start < end and at least 2 steps, got {start}, {end}, {steps}")
    ratio = (end / start) ** (1 / (steps - 1))
    return [start * ratio**k for k in range(steps)]


def lr_range_test(model: nn.Module, loader: DataLoader, config: TrainConfig, *, start: float = 1e-6,
                  end: float = 1.0, steps: int = 24, stop_factor: float = 4.0, smoothing: float = 0.8,
                  rule: str = "min/10") -> RangeTest:
    """Sweep the learning rate from ``start`` to ``end`` over ``steps`` batches of ``loader``.

    Args:
        model: the model to test; the sweep trains a copy, so ``model`` is left exactly as it was.
        loader: yields (images (N, 3, H, W), masks (N, H, W)), e.g. the training loader of
            ``segkit.loaders.build_loaders``; restarted if it has fewer than ``steps`` batches.
        config: optimizer, precision, memory layout, loss and class weights, device, as ``fit``
            uses them. ``channels_last="auto"`` sweeps in the contiguous layout: a layout changes
            the speed, not the losses, and the run measures its own before it starts.
        start, end, steps: the rates, ``sweep_rates(start, end, steps)``, one per step. The
            default, four a decade, costs 24 training steps: in the ``cpu`` profile (my_fcn,
            256x128, batch 4) about half a minute on two free cores that take 1.2 s a step.
        stop_factor: stop once the smoothed loss exceeds this many times its lowest value.
        smoothing: the exponential smoothing of the loss (bias-corrected, as Adam's moments); it
            lags by about 1 / (1 - smoothing) steps, so fewer steps a decade want less of it.
        rule: how to suggest a rate: ``min/10`` (a tenth of the rate at the smoothed loss's
            minimum, as fastai's ``lr_min``) or ``steepest`` (where the smoothed loss falls fastest
            per decade, before its minimum; the smoothing's lag moves it towards the minimum).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if config.channels_last == "auto":
        config = config.replace(channels_last=False)
    config, context = resolve_run(config, model=model)  # the device and precision as fit would train in
    rates = sweep_rates(start, end, steps)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # the loader's shuffle leaves the caller's stream alone
        lrs, losses, step_seconds = _sweep(copy.deepcopy(model), loader, config, context, rates,
                                           smoothing, stop_factor)
    seconds = time.perf_counter() - started
    stopped = None
    if not math.isfinite(losses[-1]):
        stopped = f"the loss became {losses[-1]} at lr {lrs[-1]:.1e}"
        lrs, losses = lrs[:-1], losses[:-1]  # no point to draw
        if not losses:
            raise ValueError(f"the loss was not finite at the first rate, {start:g}: start lower")
    elif len(lrs) < steps:
        stopped = f"the smoothed loss passed {stop_factor:g}x its lowest at lr {lrs[-1]:.1e}"
    smoothed = smooth(losses, smoothing)
    return RangeTest(lrs, losses, smoothed, suggest(lrs, smoothed, rule), rule, stopped, seconds,
                     step_seconds, config, steps_per_epoch(loader, config))


def _sweep(net: nn.Module, loader: DataLoader, config: TrainConfig, context: RunContext,
           rates: list[float], smoothing: float, stop_factor: float
           ) -> tuple[list[float], list[float], float]:
    """Train ``net`` one step per rate until the loss blows up; the rates and losses of the steps
    taken, and the seconds of a step (the mean after the first, which pays the warm-up)."""
    device = context.device
    net.to(device).train()
    if context.channels_last:
        net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(net, config)
    shares = [group["lr"] / config.lr for group in optimizer.param_groups]  # a backbone's fraction
    criterion = build_criterion(config, loader.dataset, device)
    dtype, scaler = context.dtype, context.grad_scaler()
    lrs, losses, times = [], [], [time.perf_counter()]
    for lr, (images, masks) in zip(rates, _endless(loader), strict=False):
        for group, share in zip(optimizer.param_groups, shares, strict=True):
            group["lr"] = lr * share
        images, masks = to_device(images, masks, device, context.channels_last)
        loss = train_step(net, optimizer, images, masks, criterion, dtype=dtype, scaler=scaler,
                          grad_clip=config.grad_clip).item()  # read at once: it decides whether to stop
        lrs.append(lr)
        losses.append(loss)
        times.append(time.perf_counter())
        smoothed = smooth(losses, smoothing)
        if not math.isfinite(loss) or smoothed[-1] > stop_factor * min(smoothed):
            break
    step_seconds = (times[-1] - times[1]) / (len(times) - 2) if len(times) > 2 else times[1] - times[0]
    return lrs, losses, step_seconds


def _endless(loader: DataLoader) -> Iterator:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def smooth(losses: list[float], beta: float) -> list[float]:
    """Exponential moving averages of ``losses``, bias-corrected (the first value is the first loss)."""
    average, smoothed = 0.0, []
    for k, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta ** (k + 1)))
    return smoothed


def suggest(lrs: list[float], smoothed: list[float], rule: str = "steepest") -> float:
    """A learning rate from a sweep: ``steepest`` descent of the smoothed loss per decade of rate,
    before its minimum (too few points: ``min/10``), or ``min/10``."""
    lowest = int(np.argmin(smoothed))
    if rule == "min/10" or lowest < 3:
        return lrs[lowest] / 10
    slopes = np.gradient(np.asarray(smoothed[: lowest + 1]), np.log10(lrs[: lowest + 1]))
    return lrs[int(np.argmin(slopes))]


def planned_schedule(config: TrainConfig, epoch_steps: int, total_steps: int | None = None
                     ) -> tuple[list[float], list[float], str]:
    """(x, learning rate, x label) at every optimizer step of a run of ``config``, from
    ``engine.build_scheduler``'s own factor: warm-up, then the config's schedule.

    An epochs run has ``config.epochs * epoch_steps`` steps and x in epochs. A time-budget run plans
    its steps while it runs, so its ``total_steps`` is an estimate and x is the fraction of the
    budget spent.
    """
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    plan = None
    if config.time_budget is None:
        total, unit, label = config.epochs * epoch_steps, epoch_steps, "epoch"
    else:
        plan = StepPlan(config.time_budget, steps_per_epoch=epoch_steps)
        plan.total_steps = total = total_steps
        unit, label = total, f"fraction of the time budget (about {total} steps)"
    factor = build_scheduler(optimizer, config, epoch_steps, plan).lr_lambdas[0]
    return ([step / unit for step in range(total)], [config.lr * factor(step) for step in range(total)],
            label)
