"""Focal loss, the loss registry and class weights, on hand-built tensors with known answers."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkit.labels import IGNORE_INDEX
from segkit.losses import (
    LOSSES,
    FocalLoss,
    build_loss,
    class_weights_from_histogram,
)


def batch(seed: int = 0, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (2, C, 4, 6) and targets (2, 4, 6) with a quarter of the pixels ignored."""
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, classes, 4, 6, generator=generator)
    target = torch.randint(0, classes, (2, 4, 6), generator=generator)
    target[:, :1] = IGNORE_INDEX
    return logits, target


def two_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """2 classes, 2 pixels of class 0, with p_t = 1/2 and p_t = 3/4."""
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]).reshape(1, 2, 1, 2)
    return logits, torch.zeros(1, 1, 2, dtype=torch.long)


@pytest.mark.parametrize("weighted", [False, True])
def test_gamma_zero_equals_cross_entropy(weighted):
    logits, target = batch()
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.1]) if weighted else None
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(FocalLoss(0.0, weight=weight)(logits, target), expected)


def test_hand_computed_two_pixel_value():
    logits, target = two_pixels()
    expected = (0.5**2 * math.log(2) + 0.25**2 * math.log(4 / 3)) / 2
    assert FocalLoss(2.0)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_alpha_multiplies_without_renormalising():
    logits, target = two_pixels()
    target[0, 0, 1] = 1  # now p_t = 1/2 (class 0) and p_t = 1/4 (class 1)
    expected = (0.25 * 0.5**2 * math.log(2) + 0.75 * 0.75**2 * math.log(4)) / 2
    loss = FocalLoss(2.0, alpha=[0.25, 0.75])(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    plain = FocalLoss(2.0)(logits, target)
    torch.testing.assert_close(FocalLoss(2.0, alpha=0.25)(logits, target), 0.25 * plain)


def test_gamma_down_weights_confident_pixels_more():
    # Pixel 0 is easy (p_t = 0.95), pixel 1 hard (p_t = 0.1); per-pixel FL / CE = (1 - p_t)^2.
    probs = torch.tensor([[0.95, 0.05], [0.1, 0.9]])
    logits = probs.log().T.reshape(1, 2, 1, 2)
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    ce = F.cross_entropy(logits, target, reduction="none")
    ratio = (FocalLoss(2.0, reduction="none")(logits, target) / ce).flatten()
    torch.testing.assert_close(ratio, torch.tensor([0.05**2, 0.9**2]))
    assert FocalLoss(2.0)(logits, target) < F.cross_entropy(logits, target)


def test_gamma_changes_the_loss_through_build_loss():
    logits, target = batch()
    losses = [build_loss("focal", gamma=g)(logits, target).item() for g in (0.0, 1.0, 2.0)]
    assert losses[0] > losses[1] > losses[2]


def test_ignored_pixels_change_neither_loss_nor_gradients():
    logits, target = batch()
    other = logits.clone()
    other[:, :, :1] = 100 * torch.randn_like(other[:, :, :1])  # only ignored rows differ
    criterion = FocalLoss(2.0, weight=torch.tensor([0.5, 2.0, 1.0, 3.0, 0.1]),
                          alpha=[0.1, 0.2, 0.3, 0.4, 0.5])
    results = []
    for values in (logits, other):
        values = values.clone().requires_grad_(True)
        loss = criterion(values, target)
        loss.backward()
        results.append((loss.detach(), values.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    assert (results[0][1][:, :, :1] == 0).all()


@pytest.mark.parametrize("weight", [None, torch.ones(5)])
def test_all_ignored_gives_zero_not_nan(weight):
    logits = torch.randn(1, 5, 3, 3, requires_grad=True)
    target = torch.full((1, 3, 3), IGNORE_INDEX)
    loss = FocalLoss(2.0, weight=weight)(logits, target)
    loss.backward()
    assert loss.item() == 0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_saturated_logits_stay_finite(gamma):
    # p_t rounds to 1 in float32: (1 - p_t)^gamma must not give an infinite or NaN gradient.
    logits = torch.tensor([[200.0, 0.0], [0.0, 200.0]]).reshape(1, 2, 1, 2).requires_grad_(True)
    target = torch.tensor([[[0, 0]]])
    loss = FocalLoss(gamma)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx(200 / 2, rel=1e-4)  # only the wrong pixel costs


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(-1.0)
    with pytest.raises(ValueError, match="one value per class"):
        FocalLoss(2.0, weight=torch.ones(3))(*batch())
    with pytest.raises(ValueError, match=">= 0"):
        FocalLoss(2.0, alpha=[1.0, -1.0])


def test_build_loss_registry():
    ce = build_loss("ce", class_weights=torch.ones(5))
    assert isinstance(ce, nn.CrossEntropyLoss) and ce.ignore_index == IGNORE_INDEX
    assert torch.equal(ce.weight, torch.ones(5))
    focal = build_loss("focal", gamma=1.5, ignore_index=7)
    assert isinstance(focal, FocalLoss) and focal.gamma == 1.5 and focal.ignore_index == 7
    with pytest.raises(KeyError, match="ce, focal"):
        build_loss("dice")
    with pytest.raises(ValueError, match="alpha"):
        build_loss("ce", alpha=0.25)
    assert set(LOSSES) == {"ce", "focal"}


def test_class_weights_hand_values():
    counts = torch.tensor([3, 1, 0])
    inverse_log = class_weights_from_histogram(counts)
    expected = torch.tensor([1 / math.log(1.02 + 0.75), 1 / math.log(1.02 + 0.25), 0.0])
    torch.testing.assert_close(inverse_log, expected)
    torch.testing.assert_close(class_weights_from_histogram(counts, method="inverse"),
                               torch.tensor([4 / 3, 4.0, 0.0]))
    torch.testing.assert_close(class_weights_from_histogram(counts, method="inverse_sqrt"),
                               torch.tensor([1 / math.sqrt(0.75), 2.0, 0.0]))


@pytest.mark.parametrize("method", ["inverse_log", "inverse_sqrt", "inverse"])
def test_rarer_classes_weigh_more_and_zero_counts_are_finite(method):
    counts = torch.tensor([1_000_000, 50_000, 300, 0])
    weights = class_weights_from_histogram(counts, method=method, normalize=True)
    assert weights.dtype == torch.float32 and torch.isfinite(weights).all()
    assert weights[0] < weights[1] < weights[2] and weights[3] == 0
    assert weights[:3].mean().item() == pytest.approx(1.0)


def test_class_weights_reject_bad_histograms():
    with pytest.raises(KeyError, match="inverse_log"):
        class_weights_from_histogram(torch.ones(3), method="median")
    with pytest.raises(ValueError, match="label_histogram"):
        class_weights_from_histogram(torch.zeros(3))


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_is_zero_on_an_all_ignore_batch_and_torchs_otherwise(weighted):
    torch.manual_seed(0)
    weight = torch.rand(19) + 0.5 if weighted else None
    ce = build_loss("ce", class_weights=weight)
    logits = torch.randn(2, 19, 4, 6, requires_grad=True)
    target = torch.randint(0, 19, (2, 4, 6))
    target[0, :2] = IGNORE_INDEX
    torch.testing.assert_close(ce(logits, target),
                               nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)(logits, target))
    void = ce(logits, torch.full_like(target, IGNORE_INDEX))
    void.backward()
    assert void.item() == 0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_cross_entropy_refuses_a_reduction_it_would_ignore():
    from segkit.losses import CrossEntropyLoss

    with pytest.raises(ValueError, match="mean over the valid pixels"):
        CrossEntropyLoss(reduction="none")
