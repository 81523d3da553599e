"""The realism measures on hand-built images with known answers, and the generator against issue 22's
"done" thresholds."""

import dataclasses

import numpy as np
import pytest

from segkit.synthetic import realism, render_scene
from segkit.synthetic.palette import BUILDING, CAR, SKY
from segkit.synthetic.writer import _frame_rng


def rgb(grey):
    """An (H, W, 3) uint8 image whose three channels are ``grey`` (so its luma is ``grey``)."""
    grey = np.asarray(grey, np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def test_grey_is_bt601_luma_rounded():
    image = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    assert realism.grey(image).tolist() == [[76, 150, 29, 18]]  # 0.299, 0.587, 0.114 x 255


def test_laplacian_variance_of_a_dot_and_a_step():
    assert realism.laplacian_variance(rgb(np.full((6, 6), 77))) == 0.0
    dot = np.zeros((5, 5))
    dot[2, 2] = 9
    # interior Laplacian: -36 at the dot, 9 at its four neighbours, 0 at the corners
    assert realism.laplacian_variance(rgb(dot)) == pytest.approx((36**2 + 4 * 9**2) / 9)
    step = np.zeros((4, 4))
    step[:, 2:] = 100
    assert realism.laplacian_variance(rgb(step)) == pytest.approx(100**2)  # +100 and -100


def test_flat_share_counts_neighbourhoods_within_one_grey_level():
    assert realism.flat_share(rgb(np.full((5, 5), 200))) == 1.0
    checks = np.indices((8, 8)).sum(axis=0) % 2
    assert realism.flat_share(rgb(100 + checks)) == 1.0  # std of 4 vs 5 values 1 apart: 0.497
    assert realism.flat_share(rgb(100 + 2 * checks)) == 0.0  # 2 apart: 0.99
    half = np.full((6, 6), 50)
    half[:, :3] = 1
    # of the interior columns 1..4, those at 2 and 3 see both halves
    assert realism.flat_share(rgb(half)) == pytest.approx(2 / 4)


def test_saturation_and_rgb_spread():
    image = np.array([[[255, 0, 0], [200, 100, 100], [90, 90, 90], [0, 0, 0]]], np.uint8)
    assert realism.mean_saturation(image) == pytest.approx((255 + 127.5 + 0 + 0) / 4)
    black_white = rgb([[0, 255]])
    assert realism.rgb_std(black_white) == pytest.approx(127.5)


def test_components_are_four_connected_and_filtered_by_size():
    mask = np.zeros((6, 8), bool)
    mask[0:2, 0:3] = True  # a 2x3 block
    mask[2, 3] = True  # touches the block only at a corner: its own piece
    mask[3:6, 5] = mask[3:6, 7] = mask[5, 5:8] = True  # a U: two runs joined by the bottom row
    assert sorted(realism.components(mask)) == [1, 6, 7]
    assert sorted(realism.components(mask, min_size=2)) == [6, 7]
    assert realism.components(np.zeros((3, 3), bool)) == []


def test_measure_gathers_colours_and_objects_over_frames():
    ids = np.full((16, 16), BUILDING, np.uint8)
    ids[:4] = SKY
    ids[10:14, 1:5] = CAR  # a 16-pixel car
    ids[10:13, 8:12] = CAR  # a 12-pixel car
    ids[0, 15] = CAR  # a 1-pixel fragment, not counted
    image = np.zeros((16, 16, 3), np.uint8)
    image[ids == SKY] = (200, 210, 220)
    image[ids == BUILDING] = (80, 90, 80)
    second = image.copy()
    second[ids == BUILDING] = (100, 90, 80)
    result = realism.measure([(image, ids), (second, ids)])
    assert result.frames == 2
    assert result.colour["sky"] == pytest.approx((200, 210, 220))
    assert result.colour["building"] == pytest.approx((90, 90, 80))
    assert result.colour_std["building"] == pytest.approx(10 / 3)  # 10, 0, 0 per channel
    assert result.objects["car"] == (2.0, 14.0)  # two pieces a frame, sizes 16, 12, 16, 12
    assert result.objects["person"] == (0.0, 0.0)
    with pytest.raises(ValueError, match="at least one frame"):
        realism.measure([])


def _like_real(**changes):
    real = realism.REAL
    fields = dict(frames=1, laplacian_var=300.0, flat_share=0.13, saturation=49.0, rgb_std=45.0,
                  colour=dict(real["colour"]), colour_std={"building": 58.0},
                  objects={name: (n, size or 100.0) for name, (n, size) in real["objects"].items()})
    fields.update(changes)
    return realism.Realism(**fields)


def test_shortfalls_name_what_misses_the_done_thresholds():
    assert realism.shortfalls(_like_real()) == []
    assert realism.shortfalls(_like_real(laplacian_var=363 * 1.5, flat_share=0.127 / 1.5)) == []
    missed = realism.shortfalls(_like_real(
        laplacian_var=1600.0, saturation=35.0,
        colour={**realism.REAL["colour"], "sky": (135.0, 152.0, 164.0)},
        objects={"car": (2.5, 889.0)}))
    assert [m.split()[0] for m in missed] == ["laplacian_var", "saturation", "sky", "cars", "median"]


@pytest.mark.slow
def test_the_generator_meets_issue_22s_done_thresholds():
    # the first 24 training frames of the cpu course's set; fewer frames vary too much (a frame's
    # sunlit trees or sidewalk move the class colours by a fifth)
    frames = [render_scene(_frame_rng(0, "train", "hamburg", k), *realism.MEASURE_SIZE)
              for k in range(24)]
    result = realism.measure(frames)
    assert realism.shortfalls(result) == []
    for name in ("pole", "traffic sign", "person"):  # more and smaller things than before issue 22
        count, _ = result.objects[name]
        assert count >= 0.75 * realism.REAL["objects"][name][0], name


def test_the_realism_figure_takes_measures_or_their_json():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segkit import viz

    measured = _like_real(laplacian_var=1600.0, flat_share=0.004)  # far outside the real range
    for given in (measured, dataclasses.asdict(measured)):
        fig = viz.realism(given)
        pixels, colours, objects = fig.axes
        low, _ = pixels.get_xlim()
        assert low <= 0.004 / 0.133  # the flat share's point is on the axis
        assert [t.get_text() for t in colours.get_xticklabels()] == ["synthetic", "real"]
        assert len(objects.patches) == 2 * len(realism.OBJECT_CLASSES)
        plt.close(fig)


def test_official_frames_pairs_each_image_with_its_label_ids(synthetic_source) -> None:
    frames = list(realism.official_frames(synthetic_source, "val"))
    assert len(frames) == 3  # the fixture's frames per split
    for image, label_ids in frames:
        assert image.shape == (*label_ids.shape, 3) and image.dtype == label_ids.dtype == np.uint8
        assert set(np.unique(label_ids)) <= set(range(34))
    assert len(list(realism.official_frames(synthetic_source))) == 9  # train, val and test
