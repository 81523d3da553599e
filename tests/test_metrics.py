"""ConfusionMatrix and the scores derived from it, on hand-built maps with hand-computed answers."""

import math

import pytest
import torch

from segkit.bench import bench_confusion, one_hot_confusion_reference
from segkit.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from segkit.metrics import (
    FRACTIONS_NOTE,
    ConfusionMatrix,
    format_categories,
    format_table,
    per_image_iou,
    tp_fp_fn,
)

# 5 classes: class 3 is only predicted (IoU 0), class 4 appears nowhere (IoU NaN).
# The last pixel is ignored, so its prediction (3) must not count.
TARGET = torch.tensor([0, 0, 0, 1, 1, 2, 2, IGNORE_INDEX])
PRED = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
MAT = torch.tensor([[2, 1, 0, 0, 0],
                    [0, 1, 1, 0, 0],
                    [0, 0, 1, 1, 0],
                    [0, 0, 0, 0, 0],
                    [0, 0, 0, 0, 0]])
IOU = [2 / 3, 1 / 3, 1 / 3, 0.0, math.nan]
ACC = [2 / 3, 1 / 2, 1 / 2, math.nan, math.nan]


def hand_case() -> ConfusionMatrix:
    confmat = ConfusionMatrix(5, class_categories=("a", "a", "b", "b", "c"))
    confmat.update(PRED, TARGET)
    return confmat


def test_counts_match_hand_matrix():
    assert torch.equal(hand_case().mat, MAT)
    assert hand_case().mat.dtype == torch.int64


def test_ignore_and_out_of_range_targets_are_dropped():
    confmat = ConfusionMatrix(3)
    target = torch.tensor([0, 1, 2, IGNORE_INDEX, 3, 7, -1])
    pred = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    confmat.update(pred, target)
    assert torch.equal(confmat.mat, torch.eye(3, dtype=torch.int64))


def test_ignore_index_inside_class_range_is_dropped():
    confmat = ConfusionMatrix(3, ignore_index=0)
    confmat.update(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]))
    assert confmat.mat.sum() == 1 and confmat.mat[1, 1] == 1


def test_uint8_maps_do_not_overflow():
    # 19 * 18 + 18 = 360 does not fit in uint8; the index must be built in a wider type.
    confmat = ConfusionMatrix()
    target = torch.tensor([18, 17, IGNORE_INDEX], dtype=torch.uint8)
    confmat.update(torch.tensor([18, 0, 5], dtype=torch.uint8), target)
    assert confmat.mat[18, 18] == 1 and confmat.mat[17, 0] == 1 and confmat.mat.sum() == 2


def test_update_leaves_inputs_unchanged():
    target = TARGET.to(torch.int32)
    pred = PRED.to(torch.int32)
    hand_case().update(pred, target)
    assert torch.equal(target, TARGET.to(torch.int32)) and torch.equal(pred, PRED.to(torch.int32))


def test_tp_fp_fn_of_the_hand_matrix():
    # class 0: 2 right, 1 predicted 1; class 2: 1 right, 1 predicted 3, and class 1's pixel as 2
    tp, fp, fn = tp_fp_fn(MAT)
    assert tp.tolist() == [2, 1, 1, 0, 0]
    assert fp.tolist() == [0, 1, 1, 1, 0]
    assert fn.tolist() == [1, 1, 1, 0, 0]


def test_iou_nan_for_absent_zero_for_predicted_only():
    result = hand_case().compute()
    assert result["iou"].dtype == torch.float64
    torch.testing.assert_close(result["iou"], torch.tensor(IOU, dtype=torch.float64),
                               equal_nan=True)
    assert result["iou"][3] == 0 and math.isnan(result["iou"][4])


def test_miou_is_nanmean_of_hand_values():
    result = hand_case().compute()
    assert result["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3 + 0) / 4)
    assert isinstance(result["miou"], float)


def test_pixel_and_mean_accuracy():
    result = hand_case().compute()
    assert result["pixel_acc"] == pytest.approx(4 / 7)
    torch.testing.assert_close(result["acc"], torch.tensor(ACC, dtype=torch.float64),
                               equal_nan=True)
    assert result["mean_acc"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)


def test_category_iou_pools_the_matrix():
    # Categories a = {0, 1}, b = {2, 3}, c = {4}: pooled matrix [[4, 1, 0], [0, 2, 0], [0, 0, 0]].
    result = hand_case().compute()
    assert result["category_iou"]["a"] == pytest.approx(4 / 5)
    assert result["category_iou"]["b"] == pytest.approx(2 / 3)
    assert math.isnan(result["category_iou"]["c"])
    assert result["category_miou"] == pytest.approx((4 / 5 + 2 / 3) / 2)


def test_cityscapes_categories_forgive_confusions_inside_a_category():
    road, sidewalk, car, truck = (CLASS_NAMES.index(n) for n in ("road", "sidewalk", "car", "truck"))
    confmat = ConfusionMatrix()
    confmat.update(torch.tensor([sidewalk, road, truck]), torch.tensor([road, sidewalk, car]))
    result = confmat.compute()
    assert result["miou"] == 0
    assert result["category_iou"]["flat"] == 1 and result["category_iou"]["vehicle"] == 1
    assert math.isnan(result["category_iou"]["sky"])
    assert result["category_miou"] == 1
    assert list(result["category_iou"]) == ["flat", "construction", "object", "nature", "sky",
                                            "human", "vehicle"]


def test_logits_are_argmaxed_over_dim_1():
    logits = torch.randn(2, 5, 3, 4)
    target = torch.randint(0, 5, (2, 3, 4))
    from_logits, from_labels = ConfusionMatrix(5), ConfusionMatrix(5)
    from_logits.update(logits, target)
    from_labels.update(logits.argmax(1), target)
    assert torch.equal(from_logits.mat, from_labels.mat)


def test_batches_accumulate_like_one_update():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 7, (6, 5, 8), generator=generator)
    target[target == 6] = IGNORE_INDEX
    pred = torch.randint(0, 6, (6, 5, 8), generator=generator)
    batched, whole = ConfusionMatrix(6), ConfusionMatrix(6)
    for i in range(0, 6, 2):
        batched.update(pred[i:i + 2], target[i:i + 2])
    whole.update(pred, target)
    assert torch.equal(batched.mat, whole.mat)
    assert whole.mat.sum() == (target != IGNORE_INDEX).sum()


def test_merge_and_reset():
    merged = hand_case()
    merged += hand_case()
    assert torch.equal(merged.mat, 2 * MAT)
    merged.reset()
    assert merged.mat.sum() == 0
    with pytest.raises(ValueError, match="merge"):
        merged += ConfusionMatrix(3)


def test_all_reduce_without_distributed_is_a_no_op():
    confmat = hand_case()
    confmat.all_reduce()
    assert torch.equal(confmat.mat, MAT)


def test_reference_equals_bincount_on_random_data():
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(-2, NUM_CLASSES + 3, (3, 17, 23), generator=generator)
    target[:, :4] = IGNORE_INDEX
    pred = torch.randint(0, NUM_CLASSES, (3, 17, 23), generator=generator)
    confmat = ConfusionMatrix()
    confmat.update(pred, target)
    assert confmat.mat.sum() > 0
    assert torch.equal(confmat.mat, one_hot_confusion_reference(pred, target))


def test_empty_matrix_scores_are_nan():
    confmat = ConfusionMatrix(3)
    confmat.update(torch.tensor([0, 1]), torch.tensor([IGNORE_INDEX, IGNORE_INDEX]))
    result = confmat.compute()
    assert all(math.isnan(result[k]) for k in ("pixel_acc", "mean_acc", "miou"))
    assert torch.isnan(result["iou"]).all()


def test_bad_inputs_raise():
    confmat = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="same shape"):
        confmat.update(torch.zeros(4, dtype=torch.long), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        confmat.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(TypeError):
        confmat.update(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    # Any prediction is fine where the target is ignored.
    confmat.update(torch.tensor([0, 255]), torch.tensor([0, IGNORE_INDEX]))
    assert confmat.mat.sum() == 1


def test_per_image_iou():
    assert per_image_iou(PRED, TARGET, num_classes=5) == pytest.approx(1 / 3)
    logits = torch.nn.functional.one_hot(PRED.clamp(max=4), 5).T.float()  # (C, P)
    assert per_image_iou(logits, TARGET, num_classes=5) == pytest.approx(1 / 3)


def test_format_table_prints_fractions_and_marks_undefined():
    table = format_table(hand_case().compute(), ("r", "s", "t", "u", "v"))
    rows = table.splitlines()
    assert rows[0] == FRACTIONS_NOTE and rows[1].split() == ["class", "IoU", "acc"]
    assert rows[2].split() == ["r", "0.667", "0.667"]
    assert rows[5].split() == ["u", "0.000", "n/a"]
    assert rows[6].split() == ["v", "n/a", "n/a"]
    summary = dict(row.rsplit(maxsplit=1) for row in rows[8:12])
    assert summary == {"global acc": "0.571", "mean acc": "0.556", "mIoU": "0.333",
                       "category mIoU": "0.733"}
    assert rows[12] == ("category mIoU: the mean IoU of the 3 categories (a, b, c), each pooling "
                        "the pixels of its classes")
    with pytest.raises(ValueError):
        format_table(hand_case().compute(), CLASS_NAMES)


def test_format_table_explains_the_cityscapes_categories():
    confmat = ConfusionMatrix()
    confmat.update(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    note = format_table(confmat.compute()).splitlines()[-1]
    assert note.startswith("category mIoU: the mean IoU of the 7 categories (flat, construction, "
                           "object, nature, sky, human, vehicle)")
    assert format_categories(confmat.compute()).splitlines()[1].split() == ["flat", "1.000"]


def test_bench_confusion_reports_measured_figures():
    figures = bench_confusion(size=(8, 16), batch=2, repeats=1)
    assert set(figures) == {"confmat_ms", "reference_ms", "confmat_speedup", "confmat_peak_mb",
                            "reference_peak_mb", "confmat_memory_ratio"}
    # The reference holds two (P, C) float64 one-hot maps: at least 2 * 256 * 19 * 8 bytes.
    assert figures["reference_peak_mb"] * 2**20 >= 2 * 256 * NUM_CLASSES * 8
    assert 0 < figures["confmat_peak_mb"] < figures["reference_peak_mb"]
