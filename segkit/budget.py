"""Training for a time budget instead of a number of epochs.

Budgeted Training (Li, Yumer & Ramanan, ICLR 2020) showed that a learning rate decaying to zero
over the budget beats a fixed-epoch schedule cut short. A ``StepPlan`` turns the budget into a
number of optimizer steps, so that the schedule (``engine.build_scheduler``: linear, poly or
cosine) reaches zero when the time is up. The step time is measured once the first step (kernel
choice, warm-up) is behind, and the plan is revised at every loss read-back and epoch end as the
run goes. Validation counts against the budget, and the time of one final validation is always
kept in hand, so the run ends on time with a scored ``best.pt``. The plan is saved in every
checkpoint: a killed run continues where it stood, and a run continued with more minutes is
re-planned over the larger budget.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

#: The clock budgets are measured with (tests put a deterministic one in its place).
clock = time.perf_counter

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
        self.step_seconds: float | None = None
        self.val_seconds: float | None = None  # one validation, measured at the first one
        self.done = False  # the budget is spent and the final validation ran
        self._mark: tuple[float, int] | None = None  # (training s, step) at this process's 1st revision
        self._stale = False  # total_steps was planned for a smaller budget: it ends nothing until revised

    def state_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "total_steps": self.total_steps,
                "step_seconds": self.step_seconds, "val_seconds": self.val_seconds, "done": self.done}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """The saved plan, for the budget this plan was made with (which may be larger: then the saved
        steps stand until the first revision re-plans them, but reaching them ends nothing)."""
        self.total_steps, self.step_seconds = saved["total_steps"], saved["step_seconds"]
        self.val_seconds = saved["val_seconds"]
        self._stale = saved["budget"] < self.budget
        self.done = saved["done"] and not self._stale

    def out_of_time(self, step: int, train_seconds: float, seconds: float) -> bool:
        """After optimizer step ``step``: whether to end training now (one validation kept in hand).

        ``train_seconds`` counts training only (for the step time), ``seconds`` training and
        validation (against the budget).
        """
        planned_out = self.total_steps is not None and not self._stale and step >= self.total_steps
        return planned_out or seconds + self._validation_reserve() >= self.budget

    def revise(self, step: int, train_seconds: float, seconds: float) -> None:
        """Re-plan the total steps from the step time measured since this process's first call
        (the first steps, with their warm-up, are left out): the validations' time is spread over
        the steps, and one final validation kept in hand."""
        if self._mark is None:
            self._mark = (train_seconds, step)
        if step - self._mark[1] < 2:
            return
        self.step_seconds = (train_seconds - self._mark[0]) / (step - self._mark[1])
        per_step = self.step_seconds
        if self.val_every:
            per_step += self._validation_reserve() / (self.val_every * self.steps_per_epoch)
        left = self.budget - seconds - self._validation_reserve()
        self.total_steps = step + max(0, math.floor(left / per_step))
        self._stale = False

    def _validation_reserve(self) -> float:
        # before the first validation, a guess: a forward pass costs about a third of a step
        if self.val_seconds is not None:
            return self.val_seconds
        return 0.0 if self.step_seconds is None else self.step_seconds * self.val_batches / 3

    def describe(self) -> str:
        """``"4.0 min budget: 812 steps planned (0.28 s a step)"``, or the budget alone before."""
        if self.total_steps is None:
            return f"{format_duration(self.budget)} budget"
        return (f"{format_duration(self.budget)} budget: {self.total_steps} steps planned "
                f"({self.step_seconds:.2f} s a step)")
