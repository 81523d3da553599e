"""The memory-planner lab: every number is the planner's, and the controls redraw what they should.

U-Net is the model here: the quickest to calibrate (about a second).
"""

import pytest

from segkit import planner
from segkit.labs.memory import MemoryPlannerLab


@pytest.fixture
def lab():
    return MemoryPlannerLab(model="U-Net", batch=4, crop=(1024, 512), precision="fp32")


@pytest.mark.parametrize("plan", [
    lambda: planner.plan_step("unet", batch=4, size=(1024, 512)),
    lambda: planner.plan_step("unet", batch=2, size=(512, 256), optimizer="sgd", checkpointing=True),
    lambda: planner.plan_eval("unet", size=(512, 256), mode="slide", window=(256, 128)),
])
def test_the_breakdown_sums_to_the_peak(plan):
    plan = plan()
    parts = plan.breakdown()
    assert sum(parts.values()) == pytest.approx(plan.peak_gib)
    assert min(parts.values()) >= 0 and parts["activations and temporaries"] > 0


def test_a_training_steps_parts_are_weights_gradients_and_adams_two_moments():
    plan = planner.plan_step("unet", batch=4, size=(1024, 512))
    assert plan.gradients_gib == pytest.approx(plan.weights_gib)
    assert plan.optimizer_gib == pytest.approx(2 * plan.weights_gib)
    sgd = planner.plan_step("unet", batch=4, size=(1024, 512), optimizer="sgd")
    assert sgd.optimizer_gib == pytest.approx(plan.weights_gib)


def test_the_lab_shows_the_plan_of_its_controls(lab):
    config = lab.config()
    assert (config.model, config.batch_size, config.size, config.amp) == ("unet", 4, (1024, 512), "off")
    assert lab.plan == planner.plan_config(config)
    assert lab.png.startswith(b"\x89PNG") and f"peak {lab.plan.peak_gib:.2f} GiB" in lab.text.value


def test_the_fits_line_agrees_with_the_plan(lab):
    needed = lab.plan.peak_gib / (1 - planner.MARGIN)  # the card size at which it just fits
    for gib in (needed - 0.5, needed + 0.5):
        lab.gpu.value = gib
        fits = lab.plan.fits(gib)
        assert lab.text.value.startswith("<b>fits</b>" if fits else "<b>does not fit</b>")
        assert fits == (gib > needed)


def test_moving_a_slider_redraws_the_bar_and_the_caption(lab):
    picture, caption, peak = lab.png, lab.text.value, lab.plan.peak_gib
    lab.batch.value = 8
    assert lab.png != picture and lab.text.value != caption and lab.plan.peak_gib > peak
    picture, caption = lab.png, lab.text.value
    lab.checkpointing.value = True
    assert lab.plan.checkpointing and lab.plan.peak_gib < planner.plan_step(
        "unet", batch=8, size=(1024, 512)).peak_gib
    assert lab.png != picture and lab.text.value != caption


def test_the_largest_batch_is_the_planners_choice(lab):
    for gib in (4.0, 11.0):
        lab.gpu.value = gib
        assert lab.largest == planner.choose_batch_size(lab.config(), gib)
        assert f"largest batch that fits: {lab.largest}" in lab.text.value


def test_a_card_too_small_for_one_frame_says_so(lab):
    lab.crop.value = (2048, 1024)
    lab.gpu.value = 1.0
    assert "not even batch 1 fits" in lab.text.value


def test_a_model_not_yet_calibrated_says_so_while_it_calibrates(lab, monkeypatch):
    monkeypatch.setattr(planner, "calibrated", lambda *args, **kwargs: False)
    captions = []
    lab.text.observe(lambda change: captions.append(change["new"]), names="value")
    lab.batch.value = 2
    assert "calibrating U-Net fp32 on this CPU" in captions[0] and "fits" in captions[-1]


def test_calibrations_are_read_back_from_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    planner._calibration.cache_clear()
    assert not planner.calibrated("unet")
    first = planner.plan_step("unet", batch=2, size=(512, 256))
    files = list((planner.cache_dir() / "planner").glob("calibration-unet-*.json"))
    assert len(files) == 1 and planner.calibrated("unet")
    planner._calibration.cache_clear()  # as a new process would start

    def no_measuring(*args, **kwargs):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(planner, "step_peak_bytes", no_measuring)
    assert planner.plan_step("unet", batch=2, size=(512, 256)) == first
    planner._calibration.cache_clear()
    files[0].write_text("{half a fi")  # a damaged file is measured again, not trusted
    assert not planner.calibrated("unet")
    with pytest.raises(AssertionError, match="calibrated again"):
        planner.plan_step("unet", batch=2, size=(512, 256))


def test_measuring_on_this_cpu_compares_with_the_plan(lab):
    measured, planned = lab.measure()
    assert measured > 0 and abs(planned / measured - 1) < 0.15
    assert f"measured {measured:.0f} MiB, planned {planned:.0f} MiB" in lab.measured.value
