"""Lab: write the training step yourself, check it against segkit's, and overfit one batch.

The learner writes ``my_step(model, optimizer, images, masks) -> float`` (forward, cross-entropy
with ``ignore_index=255``, ``zero_grad``, ``backward``, ``optimizer.step()``, the loss as a number).
``check_step`` runs it beside segkit's one step (``segkit.step.train_step``) on identical copies
of a small model and batch for two steps, and says what differs and why. ``overfit_one_batch``
repeats a step on one batch with a live loss curve: a step that can drive one batch's loss down
is the first test of any training code. ``beyond_the_step`` lists, from a real config, what
``segkit.engine.fit`` adds around the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from segkit import labels
from segkit.callbacks import show_in_place
from segkit.config import TrainConfig
from segkit.losses import build_loss
from segkit.runtime import describe_precision, resolve_device
from segkit.step import train_step

#: What the learner writes: one optimizer step on one batch, returning the loss as a float.
Step = Callable[[nn.Module, torch.optim.Optimizer, Tensor, Tensor], float]
#: Plain SGD in the check: a step then moves every weight by exactly lr x its gradient, so
#: accumulated gradients show as a known extra move.
CHECK_LR = 0.1
CHECK_SHAPE = (2, 3, 16, 32)  # images (N, 3, H, W) of the check's batch


def segkit_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor,
                masks: Tensor) -> float:
    """segkit's one training step (``segkit.step.train_step``) in the lab's signature: images
    (N, 3, H, W), masks (N, H, W) with 255 ignored; returns the batch's loss as a float."""
    return train_step(model, optimizer, images, masks, build_loss("ce")).item()


@dataclass(frozen=True)
class StepCheck:
    """The verdict of ``check_step``: ``ok``, the ``problem`` found (None, ``error``,
    ``ignore_index``, ``tensor``, ``not_a_number``, ``loss``, ``optimizer_step``, ``zero_grad``,
    ``weights``) and a ``message`` saying why."""

    ok: bool
    problem: str | None
    message: str

    def __str__(self) -> str:
        return self.message


def check_model() -> nn.Module:
    """The small model of the check: two convolutions, 19 classes out, no batch norm."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, labels.NUM_CLASSES, 1))


def check_batch() -> tuple[Tensor, Tensor]:
    """Images (2, 3, 16, 32) and masks (2, 16, 32) whose left quarter is void (255)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(*CHECK_SHAPE, generator=generator)
    count, _, height, width = CHECK_SHAPE
    masks = torch.randint(0, labels.NUM_CLASSES, (count, height, width), generator=generator)
    masks[:, :, : width // 4] = labels.IGNORE_INDEX
    return images, masks


def check_step(step: Step, *, verbose: bool = True) -> StepCheck:
    """Run ``step`` and segkit's step on identical copies of ``check_model`` and ``check_batch``
    for two steps; the first difference found is the verdict, printed unless ``verbose`` is False.

    Catches, among others: the void pixels not ignored (an index error, or another loss), a tensor
    returned instead of a float, no ``optimizer.step()`` (weights unchanged), no ``zero_grad``
    (the second step also applies the first step's gradient).
    """
    verdict = _compare(step)
    if verbose:
        print(verdict.message)
    return verdict


def _compare(step: Step) -> StepCheck:
    images, masks = check_batch()
    theirs, ours = check_model(), check_model()
    their_optimizer = torch.optim.SGD(theirs.parameters(), lr=CHECK_LR)
    our_optimizer = torch.optim.SGD(ours.parameters(), lr=CHECK_LR)
    history = [_weights(theirs)]  # the learner's weights before each step and after the last
    for number in (1, 2):
        expected = segkit_step(ours, our_optimizer, images, masks)
        try:
            returned = step(theirs, their_optimizer, images.clone(), masks.clone())
        except (IndexError, RuntimeError) as error:
            return _raised(error, number)
        history.append(_weights(theirs))
        problem = (_returned_problem(returned, expected, number)
                   or _weights_problem(history, _weights(ours), number))
        if problem is not None:
            return problem
    return StepCheck(True, None, f"right: two steps match segkit's step (loss {expected:.4f}, "
                                 "weights equal), void pixels ignored, gradients cleared each step")


def _weights(model: nn.Module) -> Tensor:
    """Every parameter, flattened into one vector (a copy)."""
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def _raised(error: Exception, number: int) -> StepCheck:
    if "out of bounds" in str(error) or isinstance(error, IndexError):
        return StepCheck(False, "ignore_index", f"wrong: step {number} raised {type(error).__name__}: "
                         f"{str(error).rstrip('.')}. The masks hold {labels.IGNORE_INDEX} for void "
                         "pixels, which is no class: leave them out of the loss with "
                         f"F.cross_entropy(logits, masks, ignore_index={labels.IGNORE_INDEX})")
    return StepCheck(False, "error", f"wrong: step {number} raised {type(error).__name__}: {error}")


def _returned_problem(returned: object, expected: float, number: int) -> StepCheck | None:
    """What is wrong with the value ``step`` returned (``expected``: segkit's loss), or None."""
    if isinstance(returned, Tensor):
        graph = (" still attached to the graph (grad_fn " + type(returned.grad_fn).__name__ + "): it "
                 "keeps every activation of the step alive for as long as the caller holds it"
                 if returned.grad_fn is not None else "")
        return StepCheck(False, "tensor", f"wrong: step {number} returned a tensor{graph}. Return "
                         "the loss as a Python float with loss.item(), so that the graph is freed "
                         "and the caller gets a number")
    if not isinstance(returned, (int, float)) or not math.isfinite(returned):
        return StepCheck(False, "not_a_number", f"wrong: step {number} returned {returned!r}; "
                         "return the batch's loss as a float (loss.item())")
    if not math.isclose(returned, expected, rel_tol=1e-4, abs_tol=1e-6):
        return StepCheck(False, "loss", f"wrong: the loss of step {number} is {returned:.4f}, "
                         f"segkit's cross-entropy is {expected:.4f}. Average over the labelled "
                         f"pixels only: F.cross_entropy(logits, masks, ignore_index="
                         f"{labels.IGNORE_INDEX}) (a quarter of these pixels are void), and return "
                         "the loss computed before the step")
    return None


def _weights_problem(history: list[Tensor], expected: Tensor, number: int) -> StepCheck | None:
    """What is wrong with the learner's weights after step ``number`` (``expected``: segkit's)."""
    before, after = history[-2], history[-1]
    if torch.allclose(after, expected, rtol=1e-4, atol=1e-6):
        return None
    if torch.equal(after, before):
        return StepCheck(False, "optimizer_step", f"wrong: the weights did not change in step "
                         f"{number}. Call optimizer.step() after loss.backward() (and clear the "
                         "gradients before backward, not between backward and step)")
    # without zero_grad, step 2 applies step 1's gradient again: an extra move of w1 - w0 (SGD)
    if number == 2 and torch.allclose(after, expected + (history[1] - history[0]), rtol=1e-4, atol=1e-6):
        return StepCheck(False, "zero_grad", "wrong: step 2 moved the weights by both steps' "
                         "gradients: backward() adds to .grad, so the gradients accumulate. Call "
                         "optimizer.zero_grad() before loss.backward() in every step")
    return StepCheck(False, "weights", f"wrong: after step {number} the weights differ from one SGD "
                     f"step of lr {CHECK_LR} (largest difference "
                     f"{(after - expected).abs().max().item():.2e}): use the optimizer you are "
                     "given, once per call, on the gradient of this batch's loss")


# --- one batch, many steps --------------------------------------------------------------------

def overfit_one_batch(step: Step, model: nn.Module, optimizer: torch.optim.Optimizer,
                      batch: tuple[Tensor, Tensor], *, steps: int = 40, live: bool = True,
                      redraws: int = 20) -> list[float]:
    """Call ``step(model, optimizer, images, masks)`` ``steps`` times on one batch; the losses.

    ``batch`` is (images (N, 3, H, W), masks (N, H, W)), on the model's device. With ``live`` the
    loss curve is drawn about ``redraws`` times and updated in place in a notebook (as
    ``segkit.callbacks.LivePlot`` does); the loss should fall towards zero: a model that cannot
    learn one batch by heart has a bug in its step, not a lack of data.
    """
    from segkit import viz  # matplotlib only when a curve is drawn

    images, masks = batch
    fig = viz.loss_figure() if live else None
    handle, losses = None, []
    every = max(1, steps // redraws)
    for index in range(steps):
        losses.append(float(step(model, optimizer, images, masks)))
        if fig is not None and ((index + 1) % every == 0 or index + 1 == steps):
            viz.draw_step_losses(fig, losses, steps)
            handle = show_in_place(fig, handle)
    return losses


def beyond_the_step(config: TrainConfig) -> str:
    """What ``segkit.engine.fit`` adds around the one step for ``config``, one line each, read
    from the config itself so that it stays true when the config changes."""
    device = resolve_device(config.device)
    lines = [
        f"optimizer: {config.optimizer}, lr {config.lr:g}, weight decay {config.weight_decay:g} on "
        "weights only (not biases and norms)" + (
            f"; the pretrained backbone at lr x {config.backbone_lr:g}"
            if config.model_options.get("pretrained_backbone") else ""),
        _schedule_line(config),
        f"precision: {describe_precision(config.amp, device)}",
        f"memory layout: {_layout(config.channels_last)}",
        (f"gradient accumulation: {config.accumulate} batches of {config.batch_size} per optimizer "
         f"step (an effective batch of {config.accumulate * config.batch_size})"
         if config.accumulate > 1 else f"no gradient accumulation: one batch of {config.batch_size} "
         "per optimizer step"),
        f"gradient clipping: {f'norm at most {config.grad_clip:g}' if config.grad_clip else 'none'}",
        f"loss: {'class-weighted ' if config.class_weights else ''}{config.loss}"
        f"{f' (gamma {config.gamma:g})' if config.loss == 'focal' else ''}, void pixels ignored",
        f"the loss read back every {config.log_every} batches (each read waits for the GPU); training "
        "stops cleanly if the loss or a weight stops being finite",
        _length_line(config),
        f"checkpoints (a callback that segkit train and course.train_model add): last.pt every "
        f"epoch, best.pt at the best validation mIoU, in {config.out}, with the state to continue",
        f"seed {config.seed}{', deterministic kernels' if config.deterministic else ''}; on CUDA "
        f"out-of-memory: {'retry in smaller chunks' if config.oom == 'retry' else 'stop with advice'}",
    ]
    return "\n".join(f"- {line}" for line in lines)


def _schedule_line(config: TrainConfig) -> str:
    return f"learning-rate schedule: {config.describe_schedule()}, stepped after every optimizer step"


def _layout(channels_last: bool | str) -> str:
    if channels_last == "auto":
        return "channels_last or not, whichever a few timed steps find faster"
    return "channels_last" if channels_last else "contiguous (NCHW)"


def _length_line(config: TrainConfig) -> str:
    val = (f"validation every {config.val_every} epoch(s)"
           + (f" on {config.max_val_batches} batches" if config.max_val_batches else ""))
    if config.time_budget is not None:
        return (f"length: a time budget of {config.time_budget:g} s, its steps planned from the "
                f"measured step time and the schedule fitted to them; {val}, one kept in hand")
    return f"length: {config.epochs} epochs; {val} and after the last"

