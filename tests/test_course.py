"""What the course notebooks share: scores grouped by class size and the comparison table."""

import math
import warnings

import pytest
import torch

from segkit import course
from segkit.budget import format_duration
from segkit.config import PROFILES, TrainConfig, get_profile, profile_config
from segkit.course import LARGE_CLASSES, THIN_CLASSES, comparison_table, group_iou
from segkit.labels import CLASS_NAMES
from segkit.runtime import describe_precision


def _ious(**values: float | None) -> list[float | None]:
    return [values.get(name.replace(" ", "_"), 0.0) for name in CLASS_NAMES]


def test_group_iou_averages_the_named_classes_and_leaves_absent_ones_out() -> None:
    ious = _ious(road=0.9, building=0.7, vegetation=None, sky=float("nan"), pole=0.2)
    assert group_iou(ious, LARGE_CLASSES) == pytest.approx(0.8)
    assert group_iou(ious, THIN_CLASSES) == pytest.approx(0.05)
    assert math.isnan(group_iou(_ious(road=None), ("road",)))


def _run(miou: float, ious: list) -> dict:
    row = {"val_pixel_acc": 0.8, "val_mean_acc": 0.3, "val_miou": miou, "val_iou": ious}
    return {"parameters": 2_000_000, "train_seconds": 60.0, "images_seen": 300, "img_per_s": 5.0,
            "precision": "fp32", "peak_mb": 100.0,
            "history": [{**row, "val_miou": miou / 2, "val_iou": _ious()}, row]}


def test_comparison_table_takes_each_models_best_epoch() -> None:
    table = comparison_table({"a": _run(0.4, _ious(road=1.0, pole=0.4)), "b": _run(0.2, _ious())})
    assert table.loc["a", "mIoU"] == 0.4 and table.loc["b", "mIoU"] == 0.2
    assert table.loc["a", "IoU large classes"] == pytest.approx(0.25)
    assert table.loc["a", "IoU thin classes"] == pytest.approx(0.1)
    assert table.loc["a", "parameters (M)"] == 2.0


def _seeds(*mious: float) -> list[dict]:
    return [_run(miou, _ious()) for miou in mious]


def test_seed_spread_gives_mean_and_range_of_each_models_best() -> None:
    table = course.seed_spread({"unet": _seeds(0.30, 0.34, 0.32), "my_fcn": _seeds(0.2)})
    assert table.loc["unet", "seeds"] == 3 and table.loc["unet", "mIoU mean"] == pytest.approx(0.32)
    assert (table.loc["unet", "lowest"], table.loc["unet", "highest"]) == (0.30, 0.34)


@pytest.mark.parametrize(("runs", "winner", "words"), [
    ({"unet": _seeds(0.30, 0.34), "my_fcn": _seeds(0.20, 0.29)}, "unet", "beats every other"),
    ({"unet": _seeds(0.30, 0.34), "my_fcn": _seeds(0.20, 0.31)}, None, "overlap"),
    ({"unet": _seeds(0.50), "my_fcn": _seeds(0.20, 0.21)}, None, "spread is unknown"),
])
def test_a_best_model_is_named_only_beyond_the_seed_spread(runs, winner, words) -> None:
    named, why = course.best_model(runs)
    assert named == winner and words in why


@pytest.mark.parametrize(("profile", "schedule"), [
    ("ci", "adam, constant lr 0.001,"),
    ("cpu", "adam, lr 0.002 decaying linearly to 0 after 20 warm-up steps,"),
    ("laptop", "adam, lr 0.001 decaying to 0 by poly (power 0.9) after 100 warm-up steps,"),
    ("gpu", "adam, lr 0.001 decaying to 0 by poly (power 0.9) after 100 warm-up steps,"),
])
def test_the_recipe_line_names_the_profiles_settings(profile, schedule) -> None:
    config = profile_config("unet", profile)
    width, height = config.size
    length = (f"{config.epochs} epochs" if config.time_budget is None
              else f"a {format_duration(config.time_budget)} budget")
    line = config.summary()
    assert line.startswith(f"{length} of {width}x{height} crops, batch {config.batch_size},")
    assert schedule in line
    assert f"weight decay {config.weight_decay:g}, " in line
    assert ("class-weighted" in line) == config.class_weights
    layout = {True: "channels_last", "auto": "channels_last auto"}.get(config.channels_last)
    assert layout in line if layout else "channels_last" not in line
    processes = f"batch {config.batch_size} per process x 2 processes = {2 * config.batch_size}"
    assert processes in config.summary(processes=2)


@pytest.mark.parametrize(("changes", "words"), [
    ({"scheduler": "cosine", "lr": 0.01}, "lr 0.01 decaying to 0 by cosine"),
    ({"scheduler": "step", "step_gamma": 0.5, "step_epochs": 10},
     "lr 0.001 decaying by step (x0.5 every 10 epochs)"),
    ({"scheduler": "none", "warmup_iters": 5}, "constant lr 0.001 after 5 warm-up steps"),
])
def test_every_schedule_reads_as_words(changes, words) -> None:
    assert TrainConfig(**changes).describe_schedule() == words


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("model", ["my_fcn", "unet", "deeplabv3plus"])
def test_the_recipe_in_words_is_the_one_the_profile_runs(profile, model, tmp_path) -> None:
    cpu = torch.device("cpu")
    learner = course.Course(get_profile(profile), tmp_path, cpu)
    config = learner.config(model)
    text = course.recipe(learner, model)
    width, height = config.size
    assert f"`{model}` in profile `{profile}`" in text
    assert f"batch {config.batch_size}" in text and f"{width}×{height} crops" in text
    assert f"- **Learning rate**: {config.describe_schedule()}\n" in text
    length = (f"{config.epochs} epochs" if config.time_budget is None
              else f"a time budget of {format_duration(config.time_budget)}")
    assert f"- **Length**: {length}" in text
    assert describe_precision(config.amp, cpu).removeprefix("precision ") in text
    # departures from the original study, each with its reason, only where the values differ
    assert ("a higher learning rate, 0.002 instead of 0.001: " in text) == (config.lr == 2e-3)
    assert "lower learning rate" not in text and "learning rate, 0.001 instead" not in text
    assert (f"batch {config.batch_size} instead of 8: " in text) == (config.batch_size != 8)
    departures = text.partition("**Where it departs")[2].splitlines()[2:]
    assert departures and all(": " in line and not line.endswith(":") for line in departures)
    backbone = f"learning at {config.backbone_lr:g} × the rate (lr {config.lr * config.backbone_lr:g})"
    assert (backbone in text) == (model == "deeplabv3plus")


def test_deeplab_in_the_cpu_profile_keeps_the_original_rate(tmp_path) -> None:
    text = course.recipe(course.Course(get_profile("cpu"), tmp_path, torch.device("cpu")), "deeplabv3plus")
    assert "lr 0.001 decaying linearly to 0 after 20 warm-up steps" in text
    assert "higher" not in text and "MobileNetV3-Large, ImageNet-pretrained" in text


def test_the_protocol_table_scores_each_model_with_its_recorded_config(monkeypatch, tmp_path) -> None:
    import pandas as pd

    asked = []

    def compare(model, config, root, *, device, stride, frames):
        asked.append((model, config.size, config.val_size, root, device, stride, frames))
        return pd.DataFrame({"mIoU": [0.5, 0.4]}, index=["proxy", "whole"])

    monkeypatch.setattr(course, "compare_protocols", compare)
    monkeypatch.setattr(course.Course, "data", tmp_path / "data")
    record = {"config": {"model": "unet", "size": [64, 32], "val_size": [128, 64]}}  # as JSON keeps it
    for profile, frames in (("ci", None), ("cpu", 24)):  # cpu: every second of its 48 frames
        learner = course.Course(get_profile(profile), tmp_path, torch.device("cpu"))
        asked.clear()
        table = course.protocol_table(learner, {"unet": "net"}, {"unet": record})
        # windows of the training crop, tiling the frame
        assert asked == [("net", (64, 32), (128, 64), tmp_path / "data", torch.device("cpu"), (64, 32),
                          frames)]
    assert table.loc[("unet", "whole"), "mIoU"] == 0.4 and table.index.names == ["model", "protocol"]


@pytest.fixture
def isolated_setup(monkeypatch, tmp_path):
    """``course.setup`` without touching this process for good: warning filters and format,
    environment and determinism are restored after the test."""
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    monkeypatch.setattr(course, "seed_everything", lambda seed: None)
    monkeypatch.setenv("TQDM_DISABLE", "0")
    monkeypatch.setenv("SEGKIT_HOME", str(tmp_path))
    with warnings.catch_warnings():
        yield course.setup


def test_setup_ci_silences_only_the_warnings_it_names(isolated_setup) -> None:
    from segkit.models import PretrainedWeightsWarning

    isolated_setup("ci")
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("upsample_bilinear2d_backward_out_cpu does not have a deterministic "
                      "implementation, but you set 'torch.use_deterministic_algorithms(True, "
                      "warn_only=True)'", stacklevel=1)
        warnings.warn("something the learner should see", stacklevel=1)
        warnings.warn("resnet50 backbone RANDOMLY INITIALISED", PretrainedWeightsWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something the learner should see",
                                                "resnet50 backbone RANDOMLY INITIALISED"]


@pytest.mark.parametrize("profile", ["ci", "cpu"])
def test_setup_shows_the_random_backbone_fallback_in_one_line(isolated_setup, profile) -> None:
    from segkit.models import PretrainedWeightsWarning

    isolated_setup(profile)
    shown = warnings.formatwarning("resnet50 backbone RANDOMLY INITIALISED", PretrainedWeightsWarning,
                                   "deeplabv3plus.py", 1, "init_backbone_weights(net, ...)")
    assert shown == "PretrainedWeightsWarning: resnet50 backbone RANDOMLY INITIALISED\n"
    other = warnings.formatwarning("other", UserWarning, "x.py", 1, "line")
    assert other.count("\n") == 2  # other warnings keep their usual form


def test_comparison_table_columns_are_numeric_so_that_round_works() -> None:
    table = comparison_table({"a": _run(0.4123456, _ious())})
    assert table.round(3).loc["a", "mIoU"] == 0.412
    assert table.loc["a", "precision"] == "fp32"
