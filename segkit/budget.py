"""Training for a time budget instead of a number of epochs.

Budgeted Training (Li, Yumer & Ramanan, ICLR 2020) showed that a learning rate decaying to zero
over the budget beats a fixed-epoch schedule cut short. A ``StepPlan`` turns the budget into a
number of optimizer steps, so that the schedule (``engine.build_scheduler``: linear, poly or
cosine) reaches zero when the time is up. The step time is measured once the first step (kernel
choice, warm-up) is behind, and the plan is revised at every loss read-back and epoch end as the
run goes. Validation counts against the budget, and the time of one final validation is always
kept in hand, so the run ends on time with a scored ``best.pt``: a step that would not end before
the budget's end less that validation is not begun, and when the machine slows down (another
program on it) the validation kept in hand grows with the steps, and the run says so. The plan is
saved in every checkpoint: a killed run continues where it stood, and a run continued with more
minutes is re-planned over the larger budget.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

#: The clock budgets are measured with (tests put a deterministic one in its place).
clock = time.perf_counter

#: A step this many times slower than at the start of the run is said (another program busy?).
SLOWDOWN = 2.0

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(min|h|m|s)")


def parse_duration(text: str | float) -> float:
    """Seconds in ``"90s"``, ``"4m"`` (or ``4min``), ``"1h"``, ``"1h30m"``; numbers are seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        spec = text.strip().lower().replace(" ", "")
        pieces = _DURATION.findall(spec)
        if not pieces or "".join(number + unit for number, unit in pieces) != spec:
            raise ValueError(f"time budget {text!r}: give a duration with its unit, e.g. 90s, 4m or 1h30m")
        seconds = sum(float(number) * _UNITS[unit] for number, unit in pieces)
    if not seconds > 0:
        raise ValueError(f"time budget {text!r}: must be more than zero")
    return seconds


def format_duration(seconds: float, *, flag: bool = False) -> str:
    """``"90 s"``, ``"4.0 min"``, ``"1.5 h"``; with ``flag`` as ``--time-budget`` reads it (``"8m"``)."""
    if flag:
        return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{math.ceil(seconds)}s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class StepPlan:
    """How many optimizer steps a time budget turns into, revised from the measured step time.

    ``budget`` counts the seconds of training and validation (not building the model or data);
    ``val_every`` is the epochs between validations (None: no validation) of ``val_batches``
    batches each. Saved with checkpoints through ``state_dict``; the budget itself comes from the
    run's config, so continuing with more minutes re-plans the rest.
    """

    def __init__(self, budget: float, *, steps_per_epoch: int = 1, val_every: int | None = None,
                 val_batches: int = 0):
        self.budget, self.steps_per_epoch = budget, steps_per_epoch
        self.val_every, self.val_batches = val_every, val_batches
        self.total_steps: int | None = None  # None until the step time has been measured
        self.step_seconds: float | None = None  # mean since this process's first revision
        self.recent_seconds: float | None = None  # a step's time since the revision before
        self.val_seconds: float | None = None  # one validation, measured at the first one
        self.done = False  # the budget is spent and the final validation ran
        self._mark: tuple[float, int] | None = None  # (training s, step) at this process's 1st revision
        self._last: tuple[float, int] | None = None  # (training s, step) at the latest revision
        self._start_seconds: float | None = None  # a step's time at this process's start
        self._val_pace: float | None = None  # a step's time when the validation was measured
        self._said = 1.0  # the slowdown last said (each doubling is said once)
        self._stale = False  # total_steps was planned for a smaller budget: it ends nothing until revised

    def state_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "total_steps": self.total_steps,
                "step_seconds": self.step_seconds, "recent_seconds": self.recent_seconds,
                "val_seconds": self.val_seconds, "val_pace": self._val_pace, "done": self.done}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """The saved plan, for the budget this plan was made with (which may be larger: then the saved
        steps stand until the first revision re-plans them, but reaching them ends nothing)."""
        self.total_steps, self.step_seconds = saved["total_steps"], saved["step_seconds"]
        self.val_seconds = saved["val_seconds"]
        self.recent_seconds, self._val_pace = saved.get("recent_seconds"), saved.get("val_pace")
        self._stale = saved["budget"] < self.budget
        self.done = saved["done"] and not self._stale

    def out_of_time(self, step: int, train_seconds: float, seconds: float) -> bool:
        """After optimizer step ``step``: whether to end training now, because the planned steps are
        done or because one more step (at the latest pace) would leave no time for the final
        validation.

        ``train_seconds`` counts training only (for the step time), ``seconds`` training and
        validation (against the budget).
        """
        planned_out = self.total_steps is not None and not self._stale and step >= self.total_steps
        next_step = self._pace() or 0.0
        return planned_out or seconds + next_step + self._validation_reserve() >= self.budget

    def validated(self, seconds: float) -> None:
        """Record how long one validation took, at the pace steps go now (it slows with them)."""
        self.val_seconds, self._val_pace = seconds, self._pace()

    def revise(self, step: int, train_seconds: float, seconds: float) -> str | None:
        """Re-plan the total steps from the step time measured since this process's first call
        (the first steps, with their warm-up, are left out; the latest pace where it is slower,
        as ``out_of_time`` judges by it): the validations' time is spread over
        the steps, and one final validation kept in hand. Returns a note when steps have become
        ``SLOWDOWN`` times (and again each doubling) slower than at the start, else None."""
        if self._mark is None:
            self._mark = self._last = (train_seconds, step)
        if step - self._last[1] >= 1:
            self.recent_seconds = (train_seconds - self._last[0]) / (step - self._last[1])
            self._last = (train_seconds, step)
        if step - self._mark[1] < 2:
            return None
        self.step_seconds = (train_seconds - self._mark[0]) / (step - self._mark[1])
        # the slower of the mean and the latest pace: steps planned at the mean of a machine that
        # slowed down would be cut short by ``out_of_time`` before the schedule reaches its end
        per_step = max(self.step_seconds, self._pace())
        if self.val_every:
            per_step += self._validation_reserve() / (self.val_every * self.steps_per_epoch)
        left = self.budget - seconds - self._validation_reserve()
        self.total_steps = step + max(0, math.floor(left / per_step))
        self._stale = False
        return self._slowdown_note()

    def _pace(self) -> float | None:
        """A step's time as it goes now: the latest measured, else the mean."""
        return self.recent_seconds or self.step_seconds

    def _validation_reserve(self) -> float:
        # before the first validation, a guess: a forward pass costs about a third of a step
        if self.val_seconds is not None:
            slower = (self._pace() or 0.0) / self._val_pace if self._val_pace else 1.0
            return self.val_seconds * max(1.0, slower)
        pace = self._pace()
        return 0.0 if pace is None else pace * self.val_batches / 3

    def _slowdown_note(self) -> str | None:
        """Say once per doubling when steps have become far slower than at this process's start."""
        if self._start_seconds is None:
            self._start_seconds = self.recent_seconds
        if not self._start_seconds or not self.recent_seconds:
            return None
        slower = self.recent_seconds / self._start_seconds
        if slower < SLOWDOWN * self._said:
            return None
        self._said = slower
        return (f"note: a training step now takes {self.recent_seconds:.2f} s, {slower:.1f}x the "
                f"{self._start_seconds:.2f} s at the start of the run: is another program busy on "
                f"this machine? The run still ends within its {format_duration(self.budget)} budget, "
                f"with fewer steps ({self.total_steps} planned now)")

    def describe(self) -> str:
        """``"4.0 min budget: 812 steps planned (0.28 s a step)"``, or the budget alone before."""
        if self.total_steps is None:
            return f"{format_duration(self.budget)} budget"
        return (f"{format_duration(self.budget)} budget: {self.total_steps} steps planned "
                f"({self.step_seconds:.2f} s a step)")
