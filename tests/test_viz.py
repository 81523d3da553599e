import math
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from segkit import callbacks, labels, viz
from segkit.models import anatomy
from segkit.pictures import boundaries

H, W = 32, 64


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def sample(seed=0):
    """A random image (H, W, 3) and a mask of vertical class stripes with an ignored corner."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = np.repeat((np.arange(W) // 8 + seed) % 19, H).reshape(W, H).T.copy()
    mask[:8, :8] = labels.IGNORE_INDEX
    return image, mask


class FakeDataset:
    """What ``CityscapesSegmentation`` offers the figures: ``load``, ``images``, ``label_scheme``."""

    label_scheme = "cityscapes19"
    num_classes = 19

    def __init__(self, count=3):
        self.samples = [sample(i) for i in range(count)]
        self.images = [Path(f"city/city_000000_{i:06d}_leftImg8bit.png") for i in range(count)]

    def __len__(self):
        return len(self.samples)

    def load(self, index):
        image, mask = self.samples[index]
        return torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask)


# --- scores beside pictures ------------------------------------------------------------------------

def test_image_scores_known_values():
    target = np.zeros((H, W), dtype=np.int64)
    target[:, W // 2:] = 1
    pred = np.zeros_like(target)
    miou, acc = viz.image_scores(pred, target, 19)
    assert miou == pytest.approx((0.5 + 0.0) / 2) and acc == pytest.approx(0.5)
    assert all(math.isnan(v) for v in viz.image_scores(pred, np.full_like(target, 255), 19))


# --- figures ---------------------------------------------------------------------------------------

def test_sample_grid_rows_of_four_panels_and_a_legend():
    dataset = FakeDataset()
    fig = viz.sample_grid(dataset, [0, 2])
    assert len(fig.axes) == 8 and all(len(ax.images) == 1 for ax in fig.axes)
    assert fig.axes[0].get_title() == "city_000000_000000"
    label = fig.axes[1].images[0].get_array()
    assert (label == labels.colorize(dataset.samples[0][1])).all()
    edges = fig.axes[3].images[0].get_array()
    assert ((edges == 255).all(-1) == boundaries(dataset.samples[0][1])).all()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[-1] == "void (ignored)" and "road" in legend and "sidewalk" in legend
    assert len(legend) == len({*np.unique(dataset.samples[0][1]), *np.unique(dataset.samples[2][1])})


def test_label_table_text_and_html():
    table = viz.label_table()
    text = str(table)
    assert len(text.splitlines()) == 2 + len(labels.CLASSES) + 1
    road = next(line for line in text.splitlines() if line.startswith("7 "))
    assert road.split()[1:] == ["road", "flat", "0", "#804080"]
    assert "rgb(128, 64, 128)" in table._repr_html_()
    assert sum(row[3] is not None for row in table.rows) == 19
    original = viz.label_table("original20")
    assert next(row for row in original.rows if row[1] == "road")[3] == 1


def test_class_distribution_bars_per_split_with_void():
    counts = {"train": np.r_[np.arange(1, 20) * 10, 100], "val": np.r_[np.ones(19), 81]}
    fig = viz.class_distribution(counts)
    assert len(fig.axes) == 4
    classes, void = fig.axes[0], fig.axes[1]
    heights = [bar.get_height() for bars in classes.containers for bar in bars]
    assert len(heights) == 19 and sum(len(bars) for bars in fig.axes[2].containers) == 19
    assert heights == pytest.approx(100 * np.arange(1, 20) * 10 / counts["train"].sum())
    assert [bar.get_height() for bars in void.containers for bar in bars] == pytest.approx(
        [100 * 100 / counts["train"].sum()])
    assert [bar.get_height() for bars in fig.axes[3].containers for bar in bars] == pytest.approx([81])
    colours = np.array([bar.get_facecolor()[:3] for bars in classes.containers for bar in bars])
    assert np.allclose(colours * 255, labels.palette()[:19])
    with pytest.raises(ValueError, match="20 counts"):
        viz.class_distribution({"train": np.ones(19)})


def test_augmentation_grid_masks_stay_nearest_and_seeded():
    image, mask = sample()
    mask = np.where(np.arange(W) % 2, mask, 11)  # 1-pixel stripes: any blending would show
    demos = {"resize": v2.Resize((21, 43)), "crop": v2.RandomCrop((16, 32))}
    fig = viz.augmentation_grid(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask), demos)
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title().split("\n")[0] for ax in axes[0]] == ["original", "resize", "crop"]
    resized = axes[1, 1].images[0].get_array()
    assert resized.shape == (21, 43, 3)
    source_colours = {tuple(labels.palette()[k]) for k in np.unique(mask)}
    assert {tuple(c) for c in resized.reshape(-1, 3).tolist()} <= source_colours
    again = viz.augmentation_grid(image, mask, demos)
    assert (np.array(again.axes).reshape(2, 3)[1, 2].images[0].get_array()
            == axes[1, 2].images[0].get_array()).all()


def test_augmentation_grid_draws_a_preset_anew_and_shows_it_denormalised():
    from segkit.transforms import train_transforms

    blocks = (np.indices((H, W)) // 8).sum(axis=0) % 2  # 8-pixel checks of two mid greys
    image = np.repeat(np.where(blocks, 192, 64).astype(np.uint8)[..., None], 3, axis=-1)
    _, mask = sample()
    preset = train_transforms(size=(32, 16), scale=(1.0, 2.0))  # never smaller than the crop: no padding
    fig = viz.augmentation_grid(image, mask, {f"draw {i}": preset for i in range(4)}, seed=1)
    shown = [np.asarray(ax.images[0].get_array()) for ax in np.array(fig.axes).reshape(2, 5)[0, 1:]]
    assert not np.array_equal(shown[0], shown[1])  # each draw from its own seed
    for picture in shown:  # as the eye sees the frame, not normalised values clipped to [0, 1]
        assert np.isin(picture, (0, 255)).mean() < 0.05
        spread = np.percentile(picture, 95) - np.percentile(picture, 5)
        assert 0.4 * (192 - 64) < spread < 2 * (192 - 64)


def history(offset, epochs=4, skip_val=()):
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch, "train_loss": 1 / (epoch + offset), "train_seconds": 1.0}
        if epoch not in skip_val:
            row.update(val_miou=0.1 * epoch + offset, val_pixel_acc=0.5, val_mean_acc=0.3)
        rows.append(row)
    return rows


def test_training_curves_one_line_per_model_per_axis():
    fig = viz.training_curves({"unet": history(0), "my_fcn": history(1, skip_val={2})})
    loss_ax, miou_ax = fig.axes
    assert len(loss_ax.lines) == 2 and len(miou_ax.lines) == 2
    assert list(miou_ax.lines[1].get_xdata()) == [1, 3, 4]
    assert list(loss_ax.lines[0].get_ydata()) == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])
    assert [t.get_text() for t in miou_ax.get_legend().get_texts()] == ["unet", "my_fcn"]


def test_training_curves_against_minutes_and_images_seen():
    rows = [{**row, "seconds": 30.0 * row["epoch"], "images_seen": 8 * row["epoch"]}
            for row in history(0)]
    old = history(1)  # a run recorded before times were kept: drawn against epochs only
    minutes = viz.training_curves({"unet": rows, "old": old}, x="minutes")
    assert list(minutes.axes[1].lines[0].get_xdata()) == [0.5, 1.0, 1.5, 2.0]
    assert len(minutes.axes[1].lines[1].get_xdata()) == 0
    assert minutes.axes[0].get_xlabel() == "minutes of training and validation"
    images = viz.training_curves({"unet": rows}, x="images")
    assert list(images.axes[0].lines[0].get_xdata()) == [8, 16, 24, 32]


def timed(rows, seconds=(40.0, 90.0, 130.0, 200.0), images=(8, 16, 24, 32)):
    """History rows with the time (seconds of training and validation) and images seen of each
    epoch, and a validation loss where the epoch was validated."""
    return [{**row, "seconds": s, "images_seen": n, **({"val_loss": 2 * row["train_loss"]}
                                                        if "val_miou" in row else {})}
            for row, s, n in zip(rows, seconds, images, strict=False)]


def test_training_curves_draw_the_validation_loss_dashed_where_it_was_recorded():
    rows = timed(history(0, skip_val={2}))
    fig = viz.training_curves({"unet": rows, "old": history(1)})
    loss_ax = fig.axes[0]
    assert [line.get_label() for line in loss_ax.lines] == ["unet", "unet, validation", "old"]
    dashed = loss_ax.lines[1]
    assert dashed.get_linestyle() == "--" and list(dashed.get_xdata()) == [1, 3, 4]
    assert list(dashed.get_ydata()) == pytest.approx([2, 2 / 3, 2 / 4])
    assert loss_ax.get_ylabel() == "loss"
    assert viz.training_curves({"old": history(1)}).axes[0].get_ylabel() == "training loss"


def test_confusion_matrix_rows_normalised():
    mat = torch.tensor([[8, 2, 0], [1, 1, 2], [0, 0, 0]])
    values = viz.normalize_confusion(mat)
    assert values[:2].sum(1) == pytest.approx([1, 1]) and np.isnan(values[2]).all()
    assert viz.normalize_confusion(mat, "pred")[:, 0] == pytest.approx([8 / 9, 1 / 9, 0])
    fig = viz.confusion_matrix(mat, ["a", "b", "c"])
    shown = np.ma.filled(fig.axes[0].collections[0].get_array(), np.nan).reshape(3, 3)
    assert shown[:2].sum(1) == pytest.approx([100, 100]) and np.isnan(shown[2]).all()
    with pytest.raises(ValueError):
        viz.confusion_matrix(mat, ["a", "b"])


def test_per_class_iou_grouped_bars_skip_nan():
    ious = {"unet": [0.5] * 19, "deeplab": [0.7] * 18 + [math.nan]}
    fig = viz.per_class_iou(ious)
    ax = fig.axes[0]
    assert [len(bars) for bars in ax.containers] == [19, 18]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["unet (mIoU 0.500)",
                                                                  "deeplab (mIoU 0.700)"]


def test_predictions_grid_panels_and_scores():
    (image, target), (image2, target2) = sample(0), sample(1)
    wrong = np.zeros_like(target)
    fig = viz.predictions_grid([image, image2], [target, target2],
                               {"perfect": [target, target2], "zeros": [wrong, wrong]}, names=["a", "b"])
    assert len(fig.axes) == 8
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:4] == ["a", "ground truth", "perfect · mIoU 1.000", titles[3]]
    assert titles[3].startswith("zeros · mIoU") and titles[3] != "zeros · mIoU 1.000"


def test_set_style_sets_dpi_and_nearest():
    viz.set_style(dpi=90)
    assert plt.rcParams["figure.dpi"] == 90 and plt.rcParams["image.interpolation"] == "nearest"
    viz.set_style()


# --- live plot -------------------------------------------------------------------------------------

def fake_state(rows, budget=None):
    return SimpleNamespace(history=rows, epoch=len(rows), config=SimpleNamespace(epochs=5),
                           plan=None if budget is None else SimpleNamespace(budget=budget))


def test_live_plot_outside_ipython_draws_quietly(capsys):
    live = callbacks.LivePlot()
    rows = timed(history(0))
    for epoch in range(1, 4):
        live.on_epoch_end(fake_state(rows[:epoch]))
    loss_ax, score_ax = live.fig.axes
    assert list(loss_ax.lines[0].get_xdata()) == pytest.approx([40 / 60, 90 / 60, 130 / 60])
    assert len(score_ax.lines) == 2 and list(score_ax.lines[0].get_ydata()) == pytest.approx([0.1, 0.2, 0.3])
    assert live.fig._suptitle.get_text() == "epoch 3/5"
    assert live.handle is None
    live.on_fit_end(fake_state(rows))
    assert live.fig is None and plt.get_fignums() == []
    assert capsys.readouterr() == ("", "")


def test_live_plot_updates_one_display_in_a_notebook(monkeypatch):
    import IPython.display

    calls = []

    class Handle:
        def update(self, picture):
            calls.append(("update", picture.data))

    def display(picture, display_id=False):
        calls.append(("display", picture.data, display_id))
        return Handle()

    monkeypatch.setattr(callbacks, "_in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", display)
    live = callbacks.LivePlot()
    rows = timed(history(0))
    live.on_epoch_end(fake_state(rows[:1]))
    live.on_epoch_end(fake_state(rows[:2]))
    assert [c[0] for c in calls] == ["display", "update"] and calls[0][2] is True
    assert calls[0][1].startswith(b"\x89PNG") and calls[1][1].startswith(b"\x89PNG")
    assert calls[0][1] != calls[1][1]  # redrawn with the second epoch


def test_largest_right_scores_run_from_always_the_largest_to_perfect() -> None:
    counts = [0] * 20
    road, car, pole = (labels.CLASS_NAMES.index(n) for n in ("road", "car", "pole"))
    counts[road], counts[car], counts[pole], counts[19] = 70, 20, 10, 999  # void last: not read
    rows = viz.largest_right_scores(counts)
    assert [row["class"] for row in rows] == ["road", "car", "pole"]
    # always road: accuracy is road's share; road's IoU is that share, car and pole score 0
    assert rows[0]["pixel_acc"] == pytest.approx(0.7) and rows[0]["miou"] == pytest.approx(0.7 / 3)
    # road and car right, pole said road: road IoU 70/80, car 1, pole 0
    assert rows[1]["pixel_acc"] == pytest.approx(0.9)
    assert rows[1]["miou"] == pytest.approx((70 / 80 + 1) / 3)
    assert rows[2]["pixel_acc"] == pytest.approx(1.0) and rows[2]["miou"] == pytest.approx(1.0)
    assert len(viz.imbalance_effect(counts).axes[0].lines) == 2


def test_label_encodings_draws_ids_classes_and_the_void_share() -> None:
    ids = np.full((H, W), 7)  # road
    ids[:, : W // 4] = 1  # ego vehicle: void
    fig = viz.label_encodings(np.zeros((H, W, 3), dtype=np.uint8), ids)
    titles = [ax.get_title() for ax in fig.axes]
    assert "void: 25.0% of pixels (white)" in titles


def test_mask_resampling_marks_exactly_the_invented_classes() -> None:
    from segkit.pictures import resampled_labels

    mask = np.zeros((8, 8), dtype=np.int64)
    mask[:, 4:] = 13  # road | car: the blend between them lands on other classes
    blended = resampled_labels(mask, (12, 12), "bilinear")
    invented = int((~np.isin(blended, [0, 13])).sum())
    assert invented > 0 and set(np.unique(resampled_labels(mask, (12, 12)))) == {0, 13}
    fig = viz.mask_resampling(mask, (12, 12))
    assert fig.axes[3].get_title() == f"invented classes: {invented} pixels"


@pytest.mark.parametrize(("dilation", "side"), [(1, 3), (2, 5), (6, 13)])
def test_dilated_taps_are_nine_pixels_spread_by_the_dilation(dilation, side) -> None:
    taps = anatomy.dilated_taps(31, 3, dilation)
    rows, cols = np.nonzero(taps)
    assert taps.sum() == 9 and rows.max() - rows.min() + 1 == side == cols.max() - cols.min() + 1


def test_dilation_figure_reads_the_models_aspp_rates() -> None:
    from segkit.models import build_model

    net = build_model("deeplabv3plus", backbone="mobilenet_v3_large", output_stride=8)
    assert anatomy.aspp_rates(net) == [12, 24, 36]
    fig = viz.dilation_figure(net, grid=81)
    assert "rates 12, 24, 36" in fig.axes[-1].get_title()


def test_live_plot_runs_against_minutes_with_images_seen_on_top():
    rows = timed(history(0, skip_val={2}))
    live = callbacks.LivePlot()
    live.on_epoch_end(fake_state(rows, budget=210.0))
    loss_ax, score_ax = live.fig.axes
    minutes = [40 / 60, 90 / 60, 130 / 60, 200 / 60]
    training, validation = loss_ax.lines
    assert (training.get_label(), validation.get_label()) == ("training", "validation")
    assert list(training.get_xdata()) == pytest.approx(minutes)
    assert list(training.get_ydata()) == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])
    validated = [minutes[0], minutes[2], minutes[3]]
    assert list(validation.get_xdata()) == pytest.approx(validated)
    assert list(validation.get_ydata()) == pytest.approx([2, 2 / 3, 2 / 4])
    miou, accuracy = score_ax.lines
    assert list(miou.get_xdata()) == pytest.approx(validated)
    assert list(miou.get_ydata()) == pytest.approx([0.1, 0.3, 0.4])
    assert list(accuracy.get_ydata()) == pytest.approx([0.5] * 3)
    for ax in (loss_ax, score_ax):
        (top,) = ax.child_axes
        assert top.get_xlabel() == "training images seen"
        to_images = top.xaxis.get_transform().inverted()  # the axis's scale maps images to minutes
        # the epochs' points, half-way between two of them, and beyond the last one
        assert to_images.transform([0.0, *minutes, 65 / 60, 4.0]) == pytest.approx(
            [0, 8, 16, 24, 32, 12, 32 + 8 * (240 - 200) / 70])
    assert live.fig._suptitle.get_text() == "epoch 4 · 3.3 min of the 3.5 min budget"


def test_live_plot_of_a_run_without_validation_draws_no_validation_line():
    rows = timed(history(0, skip_val={1, 2, 3, 4}))
    live = callbacks.LivePlot()
    live.on_epoch_end(fake_state(rows))
    loss_ax, score_ax = live.fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["training"]
    assert len(score_ax.lines) == 0 and score_ax.get_legend() is None
