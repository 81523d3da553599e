"""The one training step (``segkit.step``), and what runs it before a run: the layout timing."""

import ast
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import segkit
from segkit import step
from segkit.checkpoints import load_checkpoint
from segkit.config import TrainConfig, profile_config
from segkit.engine import fit
from segkit.losses import build_loss
from segkit.runtime import set_determinism
from segkit.training import train


def tiny_net() -> nn.Module:
    """No batch norm: a batch's gradient is then exactly the mean of its chunks' gradients."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 19, 1))


def batch(count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (count, 3, 8, 16) and masks (count, 8, 16) with a quarter of void (255) pixels."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(count, 3, 8, 16, generator=generator)
    masks = torch.randint(0, 19, (count, 8, 16), generator=generator)
    masks[:, :, :4] = 255
    return images, masks


def gradients(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_chunks_scaled_by_their_share_add_up_to_the_whole_batch():
    images, masks = batch()
    criterion = build_loss("ce")
    whole, chunked = tiny_net(), tiny_net()
    loss = step.forward_backward(whole, images, masks, criterion)
    halves = [step.forward_backward(chunked, images[k:k + 2], masks[k:k + 2], criterion, scale=0.5)
              for k in (0, 2)]
    for a, b in zip(gradients(whole), gradients(chunked), strict=True):
        torch.testing.assert_close(a, b)
    assert not loss.requires_grad and loss.ndim == 0
    # both halves hold as many void pixels, so the batch's mean loss is the mean of theirs
    assert loss.item() == pytest.approx(sum(h.item() for h in halves) / 2, rel=1e-5)


def test_a_step_moves_the_weights_by_lr_times_the_gradient_and_clears_it():
    images, masks = batch()
    criterion = build_loss("ce")
    reference = tiny_net()
    step.forward_backward(reference, images, masks, criterion)
    expected = [p.detach() - 0.1 * p.grad for p in reference.parameters()]
    model = tiny_net()
    step.train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), images, masks, criterion)
    for p, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), want)
        assert p.grad is None


def test_a_clipped_step_moves_the_weights_by_at_most_the_clip():
    images, masks = batch()
    model = tiny_net()
    start = [p.detach().clone() for p in model.parameters()]
    step.train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), images, masks,
                    build_loss("ce"), grad_clip=1e-3)
    moved = torch.linalg.vector_norm(torch.cat([(p.detach() - s).flatten()
                                                for p, s in zip(model.parameters(), start, strict=True)]))
    assert 0 < moved <= 1e-3 * 1.0001


def test_loss_scaling_changes_neither_the_loss_nor_the_step():
    images, masks = batch()
    criterion = build_loss("ce")
    plain, scaled = tiny_net(), tiny_net()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loss = step.forward_backward(scaled, images, masks, criterion, scaler=scaler)
    assert loss.item() == pytest.approx(
        step.forward_backward(plain, images, masks, criterion).item())
    for a, b in zip(gradients(plain), gradients(scaled), strict=True):
        torch.testing.assert_close(1024 * a, b)  # scaled in backward, unscaled by the step
    step.optimizer_step(torch.optim.SGD(plain.parameters(), lr=0.1))
    step.optimizer_step(torch.optim.SGD(scaled.parameters(), lr=0.1), scaler=scaler)
    for a, b in zip(plain.parameters(), scaled.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_only_the_step_module_calls_backward():
    """One step: no other module of segkit runs a backward pass of its own."""
    package = Path(segkit.__file__).parent
    callers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "backward"):
                callers.add(path.relative_to(package).as_posix())
    assert callers == {"step.py"}


# --- channels_last="auto": measured both ways before training ---------------------------------

def _layout_timed(monkeypatch, seconds: dict[bool, float], autotuned: list | None = None) -> list[bool]:
    """Stand in for ``config_step``: a step of ``seconds[config.channels_last]`` (a sleep); returns
    the list of layouts it was asked for (and appends to ``autotuned`` whether cuDNN's autotuner
    was on when it was)."""
    asked = []

    def config_step(config, device, batch_size=None, **options):
        asked.append(config.channels_last)
        if autotuned is not None:
            autotuned.append(torch.backends.cudnn.benchmark)
        return lambda: time.sleep(seconds[config.channels_last])

    monkeypatch.setattr(step, "config_step", config_step)
    return asked


def test_a_measured_model_is_built_without_its_initial_weight_options(monkeypatch):
    """Timing or probing a step never loads (or downloads) ImageNet weights: ``config_model``
    hands the builder every option but those that only pick initial weights."""
    built = {}

    def build_model(name, **options):
        built.update(options, name=name)
        return torch.nn.Conv2d(3, 2, 1)

    monkeypatch.setattr(step, "build_model", build_model)
    config = TrainConfig(model="deeplabv3plus", model_options={
        "pretrained_backbone": True, "allow_random_init": True, "backbone": "mobilenet_v3_large"})
    model = step.config_model(config.replace(channels_last=True), torch.device("cpu"))
    assert built == {"name": "deeplabv3plus", "backbone": "mobilenet_v3_large"}
    assert model.training and model.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("faster", [True, False])
def test_auto_channels_last_keeps_the_faster_layout_as_a_bool(monkeypatch, capsys, faster):
    asked = _layout_timed(monkeypatch, {faster: 0.002, not faster: 0.03})
    config = TrainConfig(channels_last="auto", model="deeplabv3plus",
                         model_options={"pretrained_backbone": True, "backbone": "mobilenet_v3_large"})
    resolved = step.resolve_channels_last(config, torch.device("cpu"))
    assert resolved.channels_last is faster and resolved.model_options == config.model_options
    assert sorted(asked) == [False, True]
    line = capsys.readouterr().out
    assert line.startswith(f"channels_last: {'on' if faster else 'off'} (") and " s vs " in line
    assert line.count("\n") == 1
    assert step.resolve_channels_last(resolved, torch.device("cpu")) is resolved and len(asked) == 2


def test_channels_last_takes_true_false_or_auto_and_the_cpu_profile_measures():
    with pytest.raises(ValueError, match="channels_last 'yes'"):
        TrainConfig(channels_last="yes")
    for name in ("my_fcn", "unet", "deeplabv3plus"):
        assert profile_config(name, "cpu").channels_last == "auto"
    assert "channels_last auto" in TrainConfig(channels_last="auto").summary()
    assert ", channels_last" not in TrainConfig().summary()


def test_fit_without_a_context_settles_the_layout_by_measuring(monkeypatch, capsys):
    _layout_timed(monkeypatch, {True: 0.002, False: 0.03})
    loader = DataLoader(TensorDataset(*batch()), batch_size=2)
    state = fit(tiny_net(), loader, None, TrainConfig(channels_last="auto", device="cpu", epochs=1))
    assert state.context.channels_last is True and state.config.channels_last is True
    assert "channels_last: on (" in capsys.readouterr().out


@pytest.fixture
def restore_determinism():
    yield
    set_determinism(False)


def test_the_layout_is_timed_with_cudnns_autotuner_as_training_has_it(
        monkeypatch, prepared_root, tmp_path, restore_determinism):
    """Timed with ``cudnn.benchmark`` off while training runs with it on, each layout would be
    timed with other kernels than training uses."""
    autotuned = []
    _layout_timed(monkeypatch, {True: 0.002, False: 0.03}, autotuned)
    set_determinism(True)  # what an earlier deterministic run (the ci profile) leaves behind
    train("my_fcn", profile="ci", data=prepared_root, out=tmp_path / "ck", log_dir=tmp_path / "tb",
          progress=False, epochs=1, max_iters=1, max_val_batches=1, channels_last="auto",
          deterministic=False)
    assert autotuned == [True, True]


def test_a_trial_pass_tells_finite_from_overflowing_precision():
    images, masks = batch()
    assert step.finite_pass(tiny_net(), images, masks, build_loss("ce"), dtype=torch.float16)
    overflowing = tiny_net()
    with torch.no_grad():
        overflowing[0].weight.fill_(1e4)  # activations beyond fp16's 65504
    assert not step.finite_pass(overflowing, images, masks, build_loss("ce"), dtype=torch.float16)
    assert all(p.grad is None for p in overflowing.parameters())
    assert step.finite_pass(overflowing, images, masks, build_loss("ce"), dtype=None)


def test_a_run_records_the_measured_layout_and_continues_without_measuring(
        monkeypatch, prepared_root, tmp_path, capsys):
    _layout_timed(monkeypatch, {True: 0.002, False: 0.03})
    out = tmp_path / "ck"
    common = {"data": prepared_root, "out": out, "log_dir": tmp_path / "tb", "progress": False,
              "max_iters": 1, "max_val_batches": 1}
    train("my_fcn", profile="ci", epochs=1, channels_last="auto", **common)
    assert "channels_last: on (" in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt")["config"]["channels_last"] is True

    def no_measuring(*args, **kwargs):
        raise AssertionError("-c measured the layout again")

    monkeypatch.setattr(step, "config_step", no_measuring)
    train("my_fcn", profile="ci", epochs=2, resume=True, **common)
    assert load_checkpoint(out / "last.pt")["config"]["channels_last"] is True
