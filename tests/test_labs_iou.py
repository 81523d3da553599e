"""The IoU painter: counts equal ConfusionMatrix and hand counts, clicks paint, void counts nowhere."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from segkit import labels, widgets
from segkit.labs.iou import (
    CELL_PIXELS,
    VOID,
    IoUPainter,
    check_accurate_but_useless,
    class_index,
    score_maps,
)
from segkit.metrics import ConfusionMatrix

ROAD, SIDEWALK, CAR, PERSON, SKY = (class_index(n) for n in ("road", "sidewalk", "car", "person", "sky"))


def hex_colour(cls):
    return "#{:02x}{:02x}{:02x}".format(*labels.palette()[cls])


def comparable(scores):
    """``scores`` with NaN IoUs as None, so that equal scores compare equal."""
    classes = {name: {**counts, "iou": None if math.isnan(counts["iou"]) else counts["iou"]}
               for name, counts in scores["classes"].items()}
    return {**scores, "classes": classes}


def rare_classes_missed():
    """60 cells: 57 road, one each of car, person and sidewalk, all predicted road."""
    gt = np.full((6, 10), ROAD)
    gt[2, 3], gt[3, 7], gt[5, 0] = CAR, PERSON, SIDEWALK
    return gt, np.full((6, 10), ROAD)


def test_counts_equal_hand_counts_and_confusion_matrix():
    rng = np.random.default_rng(0)
    gt = rng.choice([ROAD, SIDEWALK, CAR, PERSON, VOID], size=(6, 10))
    pred = rng.choice([ROAD, SIDEWALK, CAR, SKY], size=(6, 10))
    scores = score_maps(gt, pred)
    labelled = gt != VOID
    for k in (ROAD, SIDEWALK, CAR, PERSON, SKY):
        counts = scores["classes"][labels.CLASS_NAMES[k]]
        assert counts["tp"] == ((gt == k) & (pred == k)).sum()
        assert counts["fp"] == ((pred == k) & (gt != k) & labelled).sum()
        assert counts["fn"] == ((gt == k) & (pred != k)).sum()
    reference = ConfusionMatrix(labels.NUM_CLASSES)
    reference.update(torch.as_tensor(pred), torch.as_tensor(gt))
    result = reference.compute()
    ious = [c["iou"] for c in scores["classes"].values()]
    assert np.allclose(ious, result["iou"].numpy(), equal_nan=True)
    assert scores["miou"] == pytest.approx(result["miou"])
    assert scores["pixel_acc"] == pytest.approx(result["pixel_acc"])
    assert scores["labelled"] == labelled.sum() and scores["correct"] == ((gt == pred) & labelled).sum()


def test_example_readout_fills_the_formula_with_the_counts():
    painter = IoUPainter()
    car = painter.scores()["classes"]["car"]
    # the car: 6 cells in each map, one too wide on top (FP), its corner missed (FN)
    assert (car["tp"], car["fp"], car["fn"]) == (5, 1, 1)
    assert r"\frac{5}{5 + 1 + 1} = 0.71" in painter.text.value
    assert r"\text{pixel accuracy}" in painter.text.value and r"\mathrm{mIoU}" in painter.text.value
    # 60 cells, 4 void: 56 labelled
    assert r"{\text{labelled}} = \frac{52}{56}" in painter.text.value


def test_clicking_a_cell_paints_it_with_the_brush_and_recounts():
    painter = IoUPainter()
    painter.brush.value = CAR
    painter.cells["pred"][3][4].click()  # the car's missed corner, now predicted car
    assert painter.maps["pred"][3, 4] == CAR
    assert painter.cells["pred"][3][4].style.button_color == hex_colour(CAR)
    assert "car" in painter.cells["pred"][3][4].tooltip
    car = painter.scores()["classes"]["car"]
    assert (car["tp"], car["fp"], car["fn"]) == (6, 1, 0)
    assert r"\frac{6}{6 + 1 + 0} = 0.86" in painter.text.value
    painter.paint("gt", 0, 0, "person")  # sky in both maps -> a person missed, a sky false positive
    scores = painter.scores()["classes"]
    assert scores["person"]["fn"] == 2 and scores["sky"]["fp"] == 2


def test_void_ground_truth_cells_count_nowhere():
    painter = IoUPainter()
    before = comparable(painter.scores())
    for cls in (CAR, PERSON, SKY):  # (5, 3) is void in the example's ground truth
        painter.paint("pred", 5, 3, cls)
        assert comparable(painter.scores()) == before
    painter.paint("gt", 4, 0, "void")  # a road cell predicted road leaves the counts
    after = comparable(painter.scores())
    assert after["labelled"] == before["labelled"] - 1
    assert after["classes"]["road"]["tp"] == before["classes"]["road"]["tp"] - 1
    assert {k: v for k, v in after["classes"].items() if k != "road"} == {
        k: v for k, v in before["classes"].items() if k != "road"}


def test_void_cannot_be_painted_on_the_prediction():
    painter = IoUPainter()
    painter.brush.value = VOID
    painter.cells["pred"][0][0].click()
    assert painter.maps["pred"][0, 0] == SKY
    assert "ground truth only" in painter.status.value
    with pytest.raises(ValueError, match="ground truth only"):
        painter.paint("pred", 0, 0, VOID)
    painter.cells["gt"][0][0].click()
    assert painter.maps["gt"][0, 0] == VOID and painter.status.value == ""
    assert painter.cells["gt"][0][0].style.button_color == "#000000"


def test_classes_in_neither_map_are_na_and_left_out_of_the_mean():
    painter = IoUPainter()
    gt = np.full((6, 10), ROAD)
    gt[0] = SKY
    pred = gt.copy()
    pred[0, :5] = ROAD  # 5 sky cells predicted road: road 50 / 55, sky 5 / 10
    painter.set_maps(gt, pred)
    scores = painter.scores()
    assert math.isnan(scores["classes"]["person"]["iou"])
    assert scores["miou"] == pytest.approx((50 / 55 + 5 / 10) / 2)
    assert r"\frac{0}{0 + 0 + 0} = \text{n/a}" in painter.text.value  # person, car, sidewalk
    assert "left out of the mean" in painter.text.value
    assert r"\frac{0.91 + 0.50}{2}" in painter.text.value


def test_goal_accurate_but_useless_on_hand_built_maps():
    gt, pred = rare_classes_missed()
    ok, message = check_accurate_but_useless(score_maps(gt, pred))
    # 57 / 60 = 95 % right, but mIoU (57 / 60 + 0 + 0 + 0) / 4 = 0.24 is not under 0.2
    assert not ok and "mIoU is 0.24" in message and "pixel accuracy" not in message
    # the three cells predicted as classes in neither map: road 57 / 57, six classes at IoU 0
    pred[2, 3], pred[3, 7], pred[5, 0] = SKY, class_index("vegetation"), class_index("building")
    ok, message = check_accurate_but_useless(score_maps(gt, pred))
    assert ok and "95.0 %" in message and "0.14" in message and "all 7 classes" in message
    pred[2, 3], pred[3, 7], pred[5, 0] = SKY, CAR, PERSON  # swapped among themselves: 1 / 5 = 0.20
    ok, message = check_accurate_but_useless(score_maps(gt, pred))
    assert not ok and "mIoU is 0.20" in message
    gt, pred = np.full((6, 10), ROAD), np.full((6, 10), ROAD)
    pred[:, :2] = CAR  # 48 / 60 right: not accurate; (48 / 60 + 0) / 2 = 0.40: not useless
    ok, message = check_accurate_but_useless(score_maps(gt, pred))
    assert not ok and "pixel accuracy is 80.0 %" in message and "mIoU is 0.40" in message
    ok, message = check_accurate_but_useless(score_maps(np.full((2, 2), VOID), np.zeros((2, 2), int)))
    assert not ok and "No labelled cell" in message


def test_painter_goal_readout_follows_the_maps():
    painter = IoUPainter(goal="accurate but useless")
    assert "✗" in painter.goal_text.value
    gt, pred = rare_classes_missed()
    painter.set_maps(gt, pred)
    assert "✗" in painter.goal_text.value and "mIoU is 0.24" in painter.goal_text.value
    painter.brush.value = SKY
    painter.cells["pred"][2][3].click()  # the car predicted sky: road 57 / 59 and four classes at 0
    assert "✓" in painter.goal_text.value and "mIoU is 0.19" in painter.goal_text.value
    with pytest.raises(KeyError, match="accurate but useless"):
        IoUPainter(goal="perfect")


def test_picture_marks_exactly_the_wrong_labelled_cells():
    painter = IoUPainter()
    picture = np.asarray(Image.open(io.BytesIO(painter.png)).convert("RGB"))
    rows, cols = painter.maps["gt"].shape
    centres = picture[widgets.TITLE_HEIGHT + CELL_PIXELS // 2::CELL_PIXELS, CELL_PIXELS // 2::CELL_PIXELS]
    red = (centres[:rows, :cols] == [230, 25, 25]).all(-1)
    gt, pred = painter.maps["gt"], painter.maps["pred"]
    assert (red == ((gt != pred) & (gt != VOID))).all()
    assert red.sum() == 4  # the person's head, two sidewalk cells, the car's corner


def test_bad_maps_are_refused():
    painter = IoUPainter()
    with pytest.raises(ValueError, match="grids"):
        painter.set_maps(np.zeros((3, 3), int), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="pred only"):
        painter.set_maps(np.zeros((6, 10), int), np.full((6, 10), VOID))
    with pytest.raises(KeyError, match="unknown class"):
        painter.paint("gt", 0, 0, "unicorn")
