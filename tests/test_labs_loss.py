"""The loss lab: loss shares against a weighted cross-entropy, focal curves against the closed form,
and controls that update the readouts."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segkit.labels import CLASS_NAMES, NUM_CLASSES
from segkit.labs.loss import P_T, LossLab, ce_curve, easy_vs_hard, focal_curve, logits_for, loss_shares
from segkit.losses import WEIGHT_METHODS, class_weights_from_histogram

# 4 classes then void: class 3 has no pixel
COUNTS = [600, 300, 100, 0, 50]


@pytest.mark.parametrize("method", WEIGHT_METHODS)
def test_loss_shares_sum_to_one_and_rarer_classes_weigh_more(method):
    shares = loss_shares(COUNTS, method)
    assert shares["loss_share"].sum() == pytest.approx(1.0)
    assert shares["pixel_share"].tolist() == pytest.approx([0.6, 0.3, 0.1, 0.0])
    assert shares["void_share"] == pytest.approx(50 / 1050)
    weight = shares["weight"]
    assert weight[0] < weight[1] < weight[2] and weight[3] == 0 and shares["loss_share"][3] == 0
    # the rarest class carries a larger share of the loss than of the pixels
    assert shares["loss_share"][2] > shares["pixel_share"][2]


def test_inverse_weighting_gives_every_present_class_the_same_share():
    assert loss_shares(COUNTS, "inverse")["loss_share"].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0])
    root = np.sqrt([0.6, 0.3, 0.1])  # share × 1 / sqrt(share)
    assert loss_shares(COUNTS, "inverse_sqrt")["loss_share"][:3].tolist() == pytest.approx(root / root.sum())


@pytest.mark.parametrize("method", WEIGHT_METHODS)
def test_loss_shares_split_a_weighted_cross_entropy_at_uniform_logits(method):
    target = torch.tensor([0] * 6 + [1] * 3 + [2] * 1 + [255] * 2)  # the counts 6, 3, 1, 0 and 2 void
    weight = class_weights_from_histogram(torch.tensor([6, 3, 1, 0]), method=method)
    per_pixel = F.cross_entropy(torch.zeros(len(target), 4), target, weight=weight, ignore_index=255,
                                reduction="none")
    per_class = torch.stack([per_pixel[target == k].sum() for k in range(4)])
    expected = (per_class / per_class.sum()).tolist()
    assert loss_shares([6, 3, 1, 0, 2], method)["loss_share"].tolist() == pytest.approx(expected)


def test_logits_give_the_asked_probability():
    p_t = torch.tensor([0.01, 0.5, 0.97], dtype=torch.float64)
    assert torch.allclose(torch.softmax(logits_for(p_t), dim=1)[:, 0], p_t)


def test_focal_curve_at_gamma_0_is_cross_entropy_and_follows_the_closed_form():
    assert torch.allclose(focal_curve(P_T, 0.0), ce_curve(P_T), rtol=1e-12, atol=0)
    assert torch.allclose(ce_curve(P_T), -torch.log(P_T), rtol=1e-12, atol=0)
    for gamma in (0.5, 2.0, 5.0):
        closed_form = -((1 - P_T) ** gamma) * torch.log(P_T)
        assert torch.allclose(focal_curve(P_T, gamma), closed_form, rtol=1e-9, atol=0)


def test_easy_versus_hard():
    numbers = easy_vs_hard(2.0)
    assert numbers["ce_easy"] == pytest.approx(math.log(1 / 0.9))
    assert numbers["ce_hard"] == pytest.approx(math.log(10))
    assert numbers["focal_easy"] == pytest.approx(0.1 ** 2 * math.log(1 / 0.9))
    assert numbers["focal_hard"] == pytest.approx(0.9 ** 2 * math.log(10))
    assert numbers["focal_ratio"] == pytest.approx(81 * math.log(10) / math.log(1 / 0.9))
    assert easy_vs_hard(0.0)["focal_ratio"] == pytest.approx(numbers["ce_ratio"])


def cityscapes_counts():
    """19 class counts, road most and motorcycle (17) fewest, bicycle none; 1000 void pixels."""
    counts = np.arange(NUM_CLASSES, 0, -1) * 100
    counts[17], counts[18] = 7, 0
    return np.append(counts, 1000)


def test_lab_method_dropdown_updates_picture_and_readout():
    counts = cityscapes_counts()
    lab = LossLab(counts)
    assert lab.method.options == WEIGHT_METHODS and lab.method.value == "inverse_log"
    png, text = lab.png, lab.text.value
    lab.method.value = "inverse"
    assert lab.png != png and lab.text.value != text
    weight = class_weights_from_histogram(torch.as_tensor(counts[:-1]), method="inverse")
    rare = CLASS_NAMES[17]
    assert f"<b>{rare}</b>" in lab.text.value and f"weight {weight[17]:.2f}" in lab.text.value
    assert f"{100 * loss_shares(counts, 'inverse')['loss_share'][17]:.1f} % of the loss" in lab.text.value
    assert "no pixel of bicycle: weight 0" in lab.text.value
    assert f"void, {100 * 1000 / counts.sum():.1f} % of all pixels" in lab.text.value


def test_lab_gamma_slider_updates_the_readout():
    lab = LossLab(cityscapes_counts(), gamma=0.0)
    ce_ratio = math.log(10) / math.log(1 / 0.9)
    assert lab.focal_text.value.count(f"{ce_ratio:.1f}× as much") == 2  # γ = 0: focal is cross-entropy
    png = lab.focal_png
    lab.gamma.value = 3.0  # keeps 0.1³ of the easy pixel's loss and 0.9³ of the hard one's
    assert lab.focal_png != png
    assert f"{729 * ce_ratio:,.1f}× as much" in lab.focal_text.value
    kept = "keeps 0.1 % of the easy pixel's cross-entropy and 72.9 % of the hard one's"
    assert kept in lab.focal_text.value
    assert "segkit-loss-gamma" in lab.gamma._dom_classes


def test_lab_refuses_counts_of_the_wrong_length():
    with pytest.raises(ValueError, match="20 counts"):
        LossLab(np.ones(19, dtype=int))
