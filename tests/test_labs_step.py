"""The "write the step yourself" lab: the check catches each classic mistake, and says which."""

import pytest
import torch
import torch.nn.functional as F

from segkit import callbacks
from segkit.config import TrainConfig
from segkit.labs.step import (
    beyond_the_step,
    check_batch,
    check_model,
    check_step,
    overfit_one_batch,
    segkit_step,
)


def right(model, optimizer, images, masks):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), masks, ignore_index=255)
    loss.backward()
    optimizer.step()
    return loss.item()


def no_zero_grad(model, optimizer, images, masks):
    loss = F.cross_entropy(model(images), masks, ignore_index=255)
    loss.backward()
    optimizer.step()
    return loss.item()


def no_ignore_index(model, optimizer, images, masks):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), masks)
    loss.backward()
    optimizer.step()
    return loss.item()


def void_as_class_0(model, optimizer, images, masks):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), masks.where(masks != 255, 0))
    loss.backward()
    optimizer.step()
    return loss.item()


def no_optimizer_step(model, optimizer, images, masks):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), masks, ignore_index=255)
    loss.backward()
    return loss.item()


def returns_the_tensor(model, optimizer, images, masks):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), masks, ignore_index=255)
    loss.backward()
    optimizer.step()
    return loss


def returns_nothing(model, optimizer, images, masks):
    right(model, optimizer, images, masks)


def double_step(model, optimizer, images, masks):
    loss = right(model, optimizer, images, masks)
    optimizer.step()
    return loss


@pytest.mark.parametrize("step", [right, segkit_step])
def test_a_right_step_passes(step, capsys):
    verdict = check_step(step)
    assert verdict.ok and verdict.problem is None
    assert capsys.readouterr().out == f"{verdict.message}\n" and verdict.message.startswith("right")


@pytest.mark.parametrize(("step", "problem", "says"), [
    (no_zero_grad, "zero_grad", "gradients accumulate"),
    (no_ignore_index, "ignore_index", "ignore_index=255"),
    (void_as_class_0, "loss", "ignore_index=255"),
    (no_optimizer_step, "optimizer_step", "optimizer.step()"),
    (returns_the_tensor, "tensor", "still attached to the graph"),
    (returns_nothing, "not_a_number", "returned None"),
    (double_step, "weights", "once per call"),
])
def test_each_mistake_is_caught_with_its_reason(step, problem, says):
    verdict = check_step(step, verbose=False)
    assert not verdict.ok and verdict.problem == problem
    assert says in verdict.message and verdict.message.startswith("wrong")


def test_the_check_batch_holds_void_pixels():
    images, masks = check_batch()
    assert images.shape == (2, 3, 16, 32) and masks.shape == (2, 16, 32)
    assert (masks == 255).float().mean() == 0.25 and masks[masks != 255].max() < 19


def test_overfitting_one_batch_drives_its_loss_down():
    images, _ = check_batch()
    masks = (images[:, 0] > 0).long() + 2 * (images[:, 1] > 0).long()  # 4 classes a pixel shows
    masks[:, :, :8] = 255
    model = check_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = overfit_one_batch(segkit_step, model, optimizer, (images, masks), steps=40, live=False)
    assert len(losses) == 40 and all(isinstance(loss, float) for loss in losses)
    assert losses[-1] < 0.25 * losses[0]  # 2.85 -> 0.31 when written


def test_the_live_curve_is_one_picture_updated_in_place(monkeypatch):
    import IPython.display

    calls = []

    class Handle:
        def update(self, picture):
            calls.append("update")

    def display(picture, display_id=False):
        calls.append("display")
        return Handle()

    monkeypatch.setattr(callbacks, "_in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", display)
    model = check_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    overfit_one_batch(segkit_step, model, optimizer, check_batch(), steps=6, redraws=3)
    assert calls == ["display", "update", "update"]  # after steps 2, 4 and 6


def test_what_the_engine_adds_is_read_from_the_config():
    lines = beyond_the_step(TrainConfig(device="cpu", accumulate=4, batch_size=2, amp="off",
                                        grad_clip=1.5, scheduler="poly", warmup_iters=10))
    assert "4 batches of 2 per optimizer step (an effective batch of 8)" in lines
    assert "norm at most 1.5" in lines and "decaying to 0 by poly (power 0.9) after 10 warm-up steps" in lines
    assert "precision fp32 (--amp off)" in lines and "length: 500 epochs" in lines
    budget = beyond_the_step(TrainConfig(device="cpu", time_budget=120.0, class_weights=True))
    assert "no gradient accumulation" in budget and "a time budget of 120 s" in budget
    assert "class-weighted ce" in budget
