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
    mask = np.zeros((4, 4), dtype=np.int64)
    mask[:, 2:] = CAR  # road | car: bilinear blends 0 and 13 into values between them
    blended = torch.nn.functional.interpolate(torch.as_tensor(mask, dtype=torch.float32)[None, None],
                                              size=(4, 8), mode="bilinear").round().long()
    invented = set(blended.unique().tolist()) - {ROAD, CAR}
    assert invented, "the hand-built case must invent values"
    assert exercises.invented_classes(mask, (8, 4), len(invented))
    assert not exercises.invented_classes(mask, (8, 4), 0)


@pytest.mark.parametrize(("scale", "share"), [(1.0, 0.0), (0.5, 0.75), (2.0, 0.0)])
def test_padded_share_of_a_crop(scale, share) -> None:
    # a 512x256 frame, 256x128 crops, base height 128: at scale 0.5 the frame is 128x64
    assert exercises.padded_share((512, 256), (256, 128), 128, scale, share)
