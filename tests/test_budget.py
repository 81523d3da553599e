"""Training for a time budget: durations, the step plan, and fit ending on time and resuming."""

import pytest
import torch
from test_engine import StopAfter, config, loaders, small_fcn

from segkit import budget, engine
from segkit.budget import StepPlan, format_duration, parse_duration
from segkit.callbacks import Checkpointer
from segkit.checkpoints import load_checkpoint
from segkit.engine import Callback, fit


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("4m", 240), ("4min", 240), ("1h", 3600),
                                               ("1h30m", 5400), ("2.5m", 150), (" 10 m ", 600)])
def test_durations_read_with_their_units(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["4", "m", "4x", "-3m", "0s", "4m4"])
def test_a_duration_without_a_unit_or_above_zero_is_refused(text):
    with pytest.raises(ValueError, match="time budget"):
        parse_duration(text)


def test_durations_print_as_people_and_the_flag_read_them():
    assert format_duration(90) == "90 s" and format_duration(240) == "4.0 min"
    assert format_duration(480, flag=True) == "8m" and format_duration(95.5, flag=True) == "96s"
    assert parse_duration(format_duration(480, flag=True)) == 480


def test_the_plan_spreads_validation_over_the_steps_and_keeps_one_in_hand():
    plan = StepPlan(100.0, steps_per_epoch=10, val_every=1, val_batches=3)
    plan.revise(step=1, train_seconds=5.0, seconds=5.0)
    assert plan.total_steps is None  # the first revision only marks where measuring starts
    assert not plan.out_of_time(step=1, train_seconds=5.0, seconds=5.0)
    plan.val_seconds = 4.0
    plan.revise(step=11, train_seconds=15.0, seconds=19.0)  # 1 s a step since the mark
    assert plan.step_seconds == 1.0
    # left: 100 - 19 - 4 (the final validation) = 77 s, at 1 s + 4 s / 10 steps a step
    assert plan.total_steps == 11 + 55
    assert plan.out_of_time(step=66, train_seconds=70.0, seconds=80.0)  # the planned steps are done
    assert plan.out_of_time(step=40, train_seconds=60.0, seconds=96.5)  # no time for the validation


class Ticks(Callback):
    """A clock for ``segkit.budget`` that moves one second a batch and stands still otherwise, so
    that budgeted runs are deterministic."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr(budget, "clock", lambda: self.now)

    def on_batch_end(self, state):
        self.now += 1.0


def test_a_budgeted_run_ends_on_time_with_a_final_validation_and_lr_near_zero(monkeypatch, tmp_path):
    ticks = Ticks(monkeypatch)
    torch.manual_seed(0)
    state = fit(small_fcn(), *loaders(batch_size=2), config(time_budget=10, val_every=50,
                                                            scheduler="linear", log_every=1),
                [ticks, Checkpointer(tmp_path)])
    assert state.plan.done and state.stop is None
    # 4 batches an epoch, 1 s each; a third of a second kept for the validation: 9 steps fit
    assert state.step == 9 and state.seconds == 9
    assert [row["step"] for row in state.history] == [4, 8, 9]
    assert "val_miou" in state.history[-1]  # the final one, though val_every is 50
    assert all("val_miou" not in row for row in state.history[:-1])
    assert state.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert state.history[0]["lr"] > state.history[1]["lr"] > 0  # decaying towards the end
    assert state.images_seen == 18
    assert (tmp_path / "best.pt").is_file()
    assert load_checkpoint(tmp_path / "last.pt")["plan"]["done"]


def test_a_killed_budgeted_run_continues_exactly(monkeypatch, tmp_path):
    run = config(time_budget=10, scheduler="linear", log_every=1)
    ticks = Ticks(monkeypatch)
    torch.manual_seed(0)
    straight = fit(small_fcn(), *loaders(batch_size=2), run, [ticks, Checkpointer(tmp_path / "a")])

    ticks = Ticks(monkeypatch)
    torch.manual_seed(0)
    fit(small_fcn(), *loaders(batch_size=2), run, [ticks, Checkpointer(tmp_path / "b"), StopAfter(1)])
    saved = load_checkpoint(tmp_path / "b" / "last.pt")
    assert saved["seconds"] == 4 and saved["plan"]["total_steps"] is not None
    ticks = Ticks(monkeypatch)
    torch.manual_seed(123)  # a fresh process
    resumed = fit(small_fcn(), *loaders(batch_size=2), run, [ticks, Checkpointer(tmp_path / "b")],
                  resume=tmp_path / "b" / "last.pt")
    assert resumed.step == straight.step and resumed.seconds == straight.seconds
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_a_larger_budget_reopens_a_finished_plan():
    plan = StepPlan(240.0)
    plan.load_state_dict({"budget": 240.0, "total_steps": 80, "step_seconds": 2.9,
                          "val_seconds": 3.0, "done": True})
    assert plan.done
    larger = StepPlan(600.0)
    larger.load_state_dict(plan.state_dict())
    assert not larger.done and larger.total_steps == 80  # re-planned at its first read-back
    assert not larger.out_of_time(81, 240.0, 250.0)  # the old plan's steps end nothing in the larger
    larger.revise(81, 240.0, 250.0)
    larger.revise(83, 246.0, 256.0)
    assert larger.total_steps > 83 and larger.out_of_time(larger.total_steps, 500.0, 510.0)


class SlowingTicks(Ticks):
    """The deterministic clock on a machine that another program takes over: a batch costs one
    second, then four from batch ``slow_from`` on; a validation two seconds at the same pace."""

    def __init__(self, monkeypatch, slow_from):
        super().__init__(monkeypatch)
        self.batches, self.slow_from = 0, slow_from
        validate = engine.validate

        def timed_validate(*args, **kwargs):
            self.now += 2.0 * self.pace
            return validate(*args, **kwargs)

        monkeypatch.setattr(engine, "validate", timed_validate)

    @property
    def pace(self):
        return 4.0 if self.batches >= self.slow_from else 1.0

    def on_batch_end(self, state):
        self.batches += 1
        self.now += self.pace


def test_a_run_on_a_machine_that_slows_down_says_so_and_ends_within_its_budget(monkeypatch, capsys):
    ticks = SlowingTicks(monkeypatch, slow_from=5)
    torch.manual_seed(0)
    state = fit(small_fcn(), *loaders(batch_size=2),
                config(time_budget=30, scheduler="linear", log_every=1), [ticks])
    assert state.plan.done and state.stop is None
    assert 20 <= state.seconds <= 30  # to the end of the final validation, at the slow pace
    note = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "4.0x the 1.00 s at the start" in note[0]
    assert "another program" in note[0] and "within its 30 s budget" in note[0]
