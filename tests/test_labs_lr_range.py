"""The learning-rate range test: geometric rates, an early stop on divergence, the model left as it
was, and the run's schedule exactly as the engine builds it."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from segkit import engine
from segkit.budget import StepPlan
from segkit.config import TrainConfig
from segkit.labs.lr_range import lr_range_test, planned_schedule, smooth, suggest, sweep_rates


def tiny_net() -> nn.Module:
    """With batch norm, whose running statistics are state the sweep must leave alone too."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 19, 1))


def loader(frames: int = 6) -> DataLoader:
    """Batches of 2 images (3, 8, 16) whose masks (8, 16) a pixel's colour decides, some void."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(frames, 3, 8, 16, generator=generator)
    masks = (images[:, 0] > 0).long() + 2 * (images[:, 1] > 0).long()
    masks[:, :, :2] = 255
    return DataLoader(TensorDataset(images, masks), batch_size=2, shuffle=True)


def config(**changes) -> TrainConfig:
    return TrainConfig(device="cpu", amp="off", num_workers=0, lr=1e-3, **changes)


def test_the_rates_grow_geometrically_from_start_to_end():
    rates = sweep_rates(1e-6, 1.0, 13)
    assert rates[0] == 1e-6 and rates[-1] == pytest.approx(1.0)
    ratios = np.array(rates[1:]) / np.array(rates[:-1])
    assert ratios == pytest.approx(np.full(12, 10**0.5))  # two steps a decade
    with pytest.raises(ValueError, match="start < end"):
        sweep_rates(1.0, 1e-3, 10)


def test_a_sweep_steps_through_the_rates_and_leaves_the_model_as_it_was():
    model = tiny_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = lr_range_test(model, loader(), config(), start=1e-4, end=1e-2, steps=8)  # 3 epochs
    assert result.lrs == pytest.approx(sweep_rates(1e-4, 1e-2, 8)) and result.stopped is None
    assert len(result.losses) == len(result.smoothed) == 8
    assert all(math.isfinite(loss) for loss in result.losses) and result.epoch_steps == 3
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    assert all(p.grad is None for p in model.parameters())


def test_a_diverging_sweep_stops_early_and_says_why():
    result = lr_range_test(tiny_net(), loader(), config(optimizer="sgd"), start=1e-2, end=1e8, steps=40)
    assert result.stopped is not None and len(result.lrs) < 40
    assert result.lrs[-1] < 1e8 and all(math.isfinite(loss) for loss in result.losses)
    assert "stopped early" in result.describe()


def test_smoothing_is_bias_corrected():
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])
    assert smooth([1.0, 3.0], 0.5) == pytest.approx([1.0, (0.25 * 1 + 0.5 * 3) / 0.75])


def test_the_suggestion_rules_on_a_known_curve():
    lrs = list(np.logspace(-6, 0, 61))
    # falls fastest at 1e-3, lowest at 1e-1, then climbs
    curve = [3 - math.tanh(2 * (math.log10(lr) + 3)) + max(0.0, math.log10(lr) + 1) ** 2 for lr in lrs]
    assert suggest(lrs, curve, "steepest") == pytest.approx(1e-3)
    assert suggest(lrs, curve, "min/10") == pytest.approx(1e-2, rel=0.3)


@pytest.mark.parametrize("scheduler", ["poly", "cosine", "step", "none"])
def test_the_runs_schedule_is_the_engines(scheduler, engine_rates):
    settings = config(epochs=3, scheduler=scheduler, warmup_iters=2, step_epochs=1)
    x, lrs, label = planned_schedule(settings, 4)
    assert lrs == pytest.approx(engine_rates(tiny_net(), settings, 4, 12))
    assert label == "epoch" and x[4] == 1.0


def test_a_budget_runs_schedule_is_drawn_against_the_budget():
    settings = config(time_budget=60.0, scheduler="linear", warmup_iters=5)
    x, lrs, label = planned_schedule(settings, 4, total_steps=50)
    plan = StepPlan(60.0, steps_per_epoch=4)
    plan.total_steps = 50
    factor = engine.build_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3), settings, 4,
                                    plan).lr_lambdas[0]
    assert lrs == pytest.approx([1e-3 * factor(step) for step in range(50)])
    assert x[25] == 0.5 and "fraction of the time budget" in label and lrs[-1] < 1e-4


def test_the_figure_draws_the_sweep_on_a_log_axis_beside_the_run():
    result = lr_range_test(tiny_net(), loader(), config(epochs=2), start=1e-4, end=1e-1, steps=6)
    fig = result.figure()
    sweep_ax, course_ax = fig.axes
    assert sweep_ax.get_xscale() == "log" and len(course_ax.lines[0].get_xdata()) == 2 * 3
    assert f"{result.suggestion:.1e}" in result.describe() and "1.0e-03" in result.describe()
    plt.close(fig)
