"""The exercise checks: right answers pass, missing ones stay open, and each known slip is named."""

import numpy as np
import pytest
import torch

from segkit import exercises
from segkit.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES

ROAD, SIDEWALK, CAR = CLASS_NAMES.index("road"), CLASS_NAMES.index("sidewalk"), CLASS_NAMES.index("car")


def _pixels(**counts: int) -> list[int]:
    """A manifest's ``class_pixels``: the 19 classes, then void."""
    row = [counts.get(name.replace(" ", "_"), 0) for name in CLASS_NAMES]
    return [*row, counts.get("void", 0)]


def test_a_verdict_is_truthy_only_when_right_and_shows_as_one_line() -> None:
    right, wrong = exercises.Verdict(True, "yes."), exercises.Verdict(False, "no.")
    assert right and not wrong
    assert str(right).startswith("✓") and str(wrong).startswith("✗")
    assert "<p" in right._repr_html_() and "\n" not in str(wrong)


def test_an_unanswered_exercise_is_open_not_an_error() -> None:
    verdict = exercises.void_share(np.zeros((2, 2)), None)
    assert not verdict and "no answer yet" in verdict.message
    partly = exercises.train_ids({7: 0, 26: None})  # a half-filled answer gives nothing away
    assert not partly and "no answer yet" in partly.message and "13" not in partly.message


def test_train_ids_names_each_wrong_mapping() -> None:
    assert exercises.train_ids({7: 0, 26: 13, 1: 255})
    verdict = exercises.train_ids({7: 0, 26: 14, 4: 4})
    assert not verdict
    assert "id 26 (car) is trainId 13, not 14" in verdict.message
    assert "id 4 (static) is void, so 255" in verdict.message


def test_void_share_spots_percentages_and_the_complement() -> None:
    mask = np.array([[0, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX]])  # 3 of 4 void
    assert exercises.void_share(mask, 0.75)
    assert "percentage" in exercises.void_share(mask, 75).message
    assert "labelled pixels" in exercises.void_share(mask, 0.25).message


def test_label_file_accepts_the_official_path_relative_or_absolute(tmp_path) -> None:
    stem = "hamburg_000001_000019"
    relative = f"gtFine/train/hamburg/{stem}_gtFine_labelIds.png"
    assert exercises.label_file(tmp_path, stem, "train", relative)
    assert exercises.label_file(tmp_path, stem, "train", tmp_path / relative)
    assert "folders" in exercises.label_file(tmp_path, stem, "train",
                                             f"gtFine/hamburg/{stem}_gtFine_labelIds.png").message
    assert "named" in exercises.label_file(tmp_path, stem, "train",
                                           f"gtFine/train/hamburg/{stem}_labelIds.png").message


def test_always_road_scores_road_share_and_divides_by_the_classes_present() -> None:
    pixels = _pixels(road=60, sidewalk=30, car=10, void=100)  # 3 classes present
    assert exercises.always_road(pixels, 0.6, 0.2)
    slip = exercises.always_road(pixels, 0.6, 0.6 / 19)
    assert not slip and "dividing by 19" in slip.message
    voided = exercises.always_road(pixels, 0.3, 0.2)
    assert not voided and "void pixels counted" in voided.message


def test_always_road_agrees_with_the_confusion_matrix() -> None:
    from segkit.metrics import ConfusionMatrix

    target = torch.tensor([ROAD] * 6 + [SIDEWALK] * 3 + [CAR] + [IGNORE_INDEX] * 5)
    matrix = ConfusionMatrix(NUM_CLASSES)
    matrix.update(torch.full_like(target, ROAD), target)
    scores = matrix.compute()
    assert exercises.always_road(_pixels(road=6, sidewalk=3, car=1, void=5), scores["pixel_acc"],
                                 scores["miou"])


def test_rare_classes_lists_what_is_missing_and_what_is_not_rare() -> None:
    pixels = _pixels(road=900, car=95, pole=4, person=1)
    assert exercises.rare_classes(pixels, {"pole", "person"})
    verdict = exercises.rare_classes(pixels, {"pole", "car", "bus"})
    assert "also rare: person" in verdict.message
    assert "car (9.5%)" in verdict.message and "bus (0.0%)" in verdict.message


def test_largest_right_sums_the_largest_shares() -> None:
    pixels = _pixels(road=50, building=30, vegetation=10, car=6, pole=4, void=50)
    assert exercises.largest_right(pixels, 2, 0.8)
    assert not exercises.largest_right(pixels, 2, 0.9)
    assert "void" in exercises.largest_right(pixels, 2, 80 / 150).message


def test_safe_augmentations_explains_each_wrong_choice() -> None:
    safe = {name for name, (ok, _) in exercises.AUGMENTATIONS.items() if ok}
    assert exercises.safe_augmentations(safe)
    verdict = exercises.safe_augmentations((safe - {"random crop"}) | {"vertical flip"})
    assert "2 to rethink" in verdict.message and "sky under the road" in verdict.message
    assert "not among" in exercises.safe_augmentations({"mixup"}).message


def test_invented_classes_counts_values_a_bilinear_resize_creates() -> None:
    # road | car, 1x2 -> 1x4: the outer pixels copy the ends, the inner two blend them 3:1 and
    # 1:3 (0.25 * 13 = 3.25 and 0.75 * 13 = 9.75), rounded to 3 (wall) and 10 (sky)
    mask = np.array([[ROAD, CAR]])
    assert exercises.invented_classes(mask, (4, 1), 2)
    assert not exercises.invented_classes(mask, (4, 1), 0)
    assert exercises.invented_classes(mask, (2, 1), 0)  # no resize, nothing invented


@pytest.mark.parametrize(("scale", "share"), [(1.0, 0.0), (0.5, 0.75), (2.0, 0.0)])
def test_padded_share_of_a_crop(scale, share) -> None:
    # a 512x256 frame, 256x128 crops, base height 128: at scale 0.5 the frame is 128x64
    assert exercises.padded_share((512, 256), (256, 128), 128, scale, share)


def test_conv_output_size_follows_torch_and_names_the_slips() -> None:
    assert exercises.conv_output_size(128, 3, stride=2, padding=1, answer=64)
    assert exercises.conv_output_size(100, 3, dilation=6, answer=88)
    assert "without the dilation" in exercises.conv_output_size(100, 3, dilation=6, answer=98).message
    assert "final + 1" in exercises.conv_output_size(10, 3, answer=7).message


def test_receptive_field_multiplies_the_step_after_each_stride() -> None:
    two_convs_pool_two_convs = [(3, 1, 1), (3, 1, 1), (2, 2, 1), (3, 1, 1), (3, 1, 1)]
    assert exercises.receptive_field(two_convs_pool_two_convs, 14)  # 5, 6, then +2*2 twice
    assert "stride multiplies" in exercises.receptive_field(two_convs_pool_two_convs, 10).message
    assert exercises.receptive_field([(3, 1, 4)], 9)


def test_cross_entropy_leaves_void_pixels_out() -> None:
    import math

    scores = [[2.0, 0.0, 1.0], [0.0, 1.0, 1.0], [9.0, 0.0, 0.0]]
    first = -math.log(math.exp(2) / (math.exp(2) + 1 + math.e))
    second = -math.log(math.e / (1 + 2 * math.e))
    assert exercises.cross_entropy(scores, [0, 1, IGNORE_INDEX], (first + second) / 2)
    assert "void included" in exercises.cross_entropy(scores, [0, 1, IGNORE_INDEX],
                                                      (first + second) / 3).message


def test_iou_of_class_tells_recall_and_precision_apart() -> None:
    matrix = [[5, 1], [2, 4]]  # class 0: TP 5, FN 1, FP 2
    assert exercises.iou_of_class(matrix, 0, 5 / 8)
    assert "recall" in exercises.iou_of_class(matrix, 0, 5 / 6).message
    assert "precision" in exercises.iou_of_class(matrix, 0, 5 / 7).message


def test_activation_mib_and_its_slips() -> None:
    shape = (8, 16, 512, 1024)
    assert exercises.activation_mib(shape, "fp16", 128)
    assert "fp32" in exercises.activation_mib(shape, "fp16", 256).message
    assert "one image" in exercises.activation_mib(shape, "fp16", 16).message


def test_class_weight_is_the_enet_weight_of_the_labelled_share() -> None:
    import math

    pixels = _pixels(road=98, person=2, void=100)
    assert exercises.class_weight(pixels, "person", 1 / math.log(1.02 + 0.02))
    assert "percent" in exercises.class_weight(pixels, "person", 1 / math.log(1.02 + 2)).message


def test_focal_factor_is_one_minus_p_to_the_gamma() -> None:
    assert exercises.focal_factor(0.9, 2.0, 0.01)
    assert exercises.focal_factor(0.5, 0.0, 1.0)
    assert "p_t instead of 1 - p_t" in exercises.focal_factor(0.9, 2.0, 0.81).message


def test_dilated_extent_and_aspp_rates_read_from_the_model() -> None:
    assert exercises.dilated_extent(3, 6, 13) and exercises.dilated_extent(3, 1, 3)
    assert "whole kernel" in exercises.dilated_extent(3, 6, 18).message
    assert exercises.aspp_rates(16, (6, 12, 18)) and exercises.aspp_rates(8, (36, 24, 12))
    assert not exercises.aspp_rates(8, (6, 12, 18))


def test_feature_size_divides_by_the_output_stride() -> None:
    assert exercises.feature_size((256, 128), 16, (16, 8))
    assert exercises.feature_size((256, 128), 8, (32, 16))
    assert not exercises.feature_size((256, 128), 8, (16, 8))


def test_backbone_lr_depends_on_whether_the_weights_loaded() -> None:
    from types import SimpleNamespace

    from segkit.config import TrainConfig

    config = TrainConfig(lr=1e-3, backbone_lr=0.1)
    pretrained = SimpleNamespace(backbone=SimpleNamespace(pretrained=True))
    random_init = SimpleNamespace(backbone=SimpleNamespace(pretrained=False))
    assert exercises.backbone_lr(pretrained, config, 1e-4)
    assert exercises.backbone_lr(random_init, config, 1e-3)
    assert "as if the ImageNet weights had loaded" in exercises.backbone_lr(random_init, config, 1e-4).message


def test_windows_counts_the_overlapping_slide() -> None:
    assert exercises.windows((512, 256), (256, 128), 9)  # stride 171x86: 3 rows of 3
    assert "without overlap" in exercises.windows((512, 256), (256, 128), 4).message
    assert exercises.windows((256, 128), (256, 128), 1)


def test_ahead_beyond_spread_names_a_model_only_beyond_the_spread() -> None:
    assert exercises.ahead_beyond_spread({"unet": [0.30, 0.32], "my_fcn": [0.20, 0.25]}, "unet")
    overlap = {"unet": [0.30, 0.32], "my_fcn": [0.20, 0.31]}
    assert exercises.ahead_beyond_spread(overlap, "none")
    assert not exercises.ahead_beyond_spread(overlap, "unet")


@pytest.mark.parametrize("junk", ["abc", [1], 5, {"a": 1}, 3.5])
def test_a_malformed_answer_is_a_verdict_not_an_error(junk, tmp_path) -> None:
    pixels = _pixels(road=60, car=40)
    mask = np.zeros((4, 4), dtype=np.int64)
    checks = [
        lambda: exercises.train_ids(junk), lambda: exercises.void_share(mask, junk),
        lambda: exercises.label_file(tmp_path, "hamburg_000001_000019", "train", junk),
        lambda: exercises.always_road(pixels, junk, junk), lambda: exercises.rare_classes(pixels, junk),
        lambda: exercises.largest_right(pixels, 1, junk),
        lambda: exercises.padded_share((512, 256), (256, 128), 128, 0.5, junk),
        lambda: exercises.conv_output_size(16, 3, answer=junk),
        lambda: exercises.receptive_field([(3, 1, 1)], junk),
        lambda: exercises.iou_of_class([[1, 0], [0, 1]], 0, junk),
        lambda: exercises.activation_mib((1, 1, 2, 2), "fp16", junk),
        lambda: exercises.focal_factor(0.5, 2.0, junk), lambda: exercises.dilated_extent(3, 2, junk),
        lambda: exercises.aspp_rates(16, junk), lambda: exercises.feature_size((64, 32), 16, junk),
        lambda: exercises.windows((64, 32), (32, 32), junk),
        lambda: exercises.ahead_beyond_spread({"a": [0.1, 0.2], "b": [0.3, 0.4]}, junk),
    ]
    for check in checks:
        assert isinstance(check(), exercises.Verdict)


def test_an_empty_or_malformed_answer_is_never_right_and_never_raises():
    assert not exercises.train_ids({}).ok and "no answer yet" in exercises.train_ids({}).message
    assert exercises.train_ids({np.int64(7): 0}).ok  # numpy keys are label ids too
    assert not exercises.train_ids({99: 0}).ok
    assert exercises.aspp_rates(16, [6, "12", 18]).ok  # numbers written as text still compare
    verdict = exercises.aspp_rates(16, "123")  # a string is not three numbers
    assert not verdict.ok and "give the three rates" in verdict.message
