import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from segkit import labels, widgets
from segkit.transforms import to_model_input

H, W = 32, 64
GAP, TOP = widgets.GAP, widgets.TITLE_HEIGHT


def decode(png):
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def panel(picture, k, width=W, height=H):
    """The k-th panel (all ``width`` wide) of a composed picture, without its title strip."""
    x = k * (width + GAP)
    return picture[TOP:TOP + height, x:x + width]


def scene(seed):
    """A random image and a mask: classes 0 (left) and 1 (right), an ignored top-left corner."""
    image = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), dtype=np.int64)
    mask[:, W // 2:] = 1
    mask[:4, :4] = labels.IGNORE_INDEX
    return image, mask


@pytest.fixture
def samples():
    """Three samples whose predictions score mIoU 1 (perfect), 0.248 (all road) and 0.582.

    1008 labelled road pixels, 1024 of class 1. All road: IoU 1008 / 2032 and 0.
    Partial (512 class-1 pixels predicted road): IoU 1008 / 1520 and 512 / 1024.
    """
    images, targets = zip(*(scene(s) for s in range(3)), strict=True)
    perfect = targets[0].copy()
    zeros = np.zeros((H, W), dtype=np.int64)
    partial = targets[2].copy()
    partial[H // 2:, W // 2:] = 0  # a quarter of the class-1 half predicted as road
    return list(images), list(targets), [perfect, zeros, partial]


def test_mask_browser_renders_the_default_panels(samples):
    images, targets, predictions = samples
    browser = widgets.MaskBrowser(images, targets, predictions, names=["a.png", "b.png", "c.png"])
    picture = decode(browser.png)
    assert picture.shape == (TOP + H, 4 * W + 3 * GAP, 3)  # image, ground truth, prediction, errors
    assert (panel(picture, 0) == images[0]).all()
    assert (panel(picture, 1) == labels.colorize(targets[0])).all()
    assert "index 0" in browser.text.value and "a.png" in browser.text.value
    assert "mIoU 1.000" in browser.text.value and "pixel acc 1.000" in browser.text.value
    assert "road" in browser.legend.value and "void" in browser.legend.value


def test_mask_browser_slider_changes_picture_and_text(samples):
    browser = widgets.MaskBrowser(*samples)
    png, text = browser.png, browser.text.value
    browser.slider.value = 1
    assert browser.png != png and browser.text.value != text
    assert "index 1" in browser.text.value and "mIoU 0.248" in browser.text.value
    assert "pixel acc 0.496" in browser.text.value  # 1008 of 2032 labelled pixels


def test_mask_browser_layer_toggles_change_the_panels(samples):
    browser = widgets.MaskBrowser(*samples)
    browser.toggles["errors"].value = False
    assert decode(browser.png).shape[1] == 3 * W + 2 * GAP
    browser.toggles["image"].value = False
    browser.toggles["overlay"].value = True
    picture = decode(browser.png)
    assert picture.shape[1] == 3 * W + 2 * GAP
    assert (panel(picture, 0) == labels.colorize(samples[1][0])).all()  # ground truth comes first now


def test_mask_browser_error_map_marks_wrong_pixels(samples):
    browser = widgets.MaskBrowser(*samples)
    browser.slider.value = 2
    errors = panel(decode(browser.png), 3)
    red = (errors == [230, 25, 25]).all(-1)
    expected = np.zeros((H, W), dtype=bool)
    expected[H // 2:, W // 2:] = True
    assert (red == expected).all()


def test_mask_browser_opacity_and_class_filter_change_the_picture(samples):
    browser = widgets.MaskBrowser(*samples, layers=["overlay", "ground truth"])
    png = browser.png
    browser.opacity.value = 0.9
    assert browser.png != png
    png = browser.png
    browser.class_filter.value = 1
    assert browser.png != png
    truth = panel(decode(browser.png), 0)  # ground truth: only class 1 in colour
    assert (truth[:, W // 2:] == labels.palette()[1]).all()
    assert not (truth[:, : W // 2] == labels.palette()[0]).all(-1).any()


def test_mask_browser_worst_first(samples):
    browser = widgets.MaskBrowser(*samples, order="worst")
    assert browser.ranking == [1, 2, 0] and browser.current == 1
    assert "index 1" in browser.text.value
    browser.slider.value = 1
    assert "index 2" in browser.text.value and "mIoU 0.582" in browser.text.value
    browser.order.value = "index"
    assert browser.slider.value == 0 and "index 0" in browser.text.value


def test_mask_browser_without_predictions(samples):
    images, targets, _ = samples
    browser = widgets.MaskBrowser(images, targets)
    assert browser.toggles["prediction"].disabled and browser.order.disabled
    assert decode(browser.png).shape[1] == 3 * W + 2 * GAP  # image, ground truth, overlay
    assert "mIoU" not in browser.text.value
    with pytest.raises(ValueError, match="worst"):
        widgets.MaskBrowser(images, targets, order="worst")
    with pytest.raises(ValueError, match="size"):
        widgets.MaskBrowser(images, [t[:-1] for t in targets])


def test_mask_browser_displays_as_its_widget(samples):
    browser = widgets.MaskBrowser(*samples)
    bundle = browser._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == browser.widget.model_id


class NormalisedDataset:
    """Like ``CityscapesSegmentation`` with ``eval_transforms()``: normalised images."""

    label_scheme = "cityscapes19"

    def __init__(self, samples):
        self.samples = samples
        self.images = [Path(f"val/city/city_000000_{i:06d}_leftImg8bit.png") for i in range(len(samples))]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        image, mask = self.samples[index]
        image = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
        return to_model_input()(image, tv_tensors.Mask(torch.from_numpy(mask)))


class PredictRoad(torch.nn.Module):
    """Scores class 0 highest everywhere."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(19))
        self.bias.data[0] = 1

    def forward(self, x):
        return self.bias.view(1, 19, 1, 1).expand(len(x), 19, *x.shape[-2:])


def test_mask_browser_from_model(samples):
    images, targets, _ = samples
    dataset = NormalisedDataset(list(zip(images, targets, strict=True)))
    browser = widgets.MaskBrowser.from_model(PredictRoad(), dataset, count=3, batch_size=2)
    assert len(browser.images) == 3 and browser.names[1] == "city_000000_000001_leftImg8bit.png"
    assert np.abs(browser.images[0].astype(int) - images[0]).max() <= 1  # denormalised for display
    assert (browser.predictions[0] == 0).all()
    assert "mIoU 0.248" in browser.text.value
    # a split's maps kept in one byte a pixel, the same classes as the int64 targets given
    assert all(m.dtype == np.uint8 for m in (*browser.targets, *browser.predictions))
    assert all(np.array_equal(kept, given) for kept, given in zip(browser.targets, targets[:3], strict=True))


def test_compact_labels_narrows_only_what_fits():
    from segkit.pictures import compact_labels

    ids = np.array([[0, 18], [255, 7]], dtype=np.int64)
    assert compact_labels(ids).dtype == np.uint8 and np.array_equal(compact_labels(ids), ids)
    assert compact_labels(torch.from_numpy(ids)).dtype == np.uint8
    wide = np.array([[0, 300]])
    assert compact_labels(wide).dtype == np.int64 and np.array_equal(compact_labels(wide), wide)
    assert compact_labels(np.array([[-1, 2]])).dtype == np.int64


def test_comparison_browser_one_panel_per_model(samples):
    images, targets, predictions = samples
    models = {"perfect": targets, "road": [predictions[1]] * 3, "partial": [predictions[2]] * 3}
    browser = widgets.ComparisonBrowser(images, targets, models)
    picture = decode(browser.png)
    assert picture.shape == (TOP + H, 5 * W + 4 * GAP, 3)
    assert (panel(picture, 3) == labels.colorize(predictions[1])).all()
    assert "perfect mIoU 1.000" in browser.text.value and "road mIoU 0.248" in browser.text.value
    png = browser.png
    browser.errors.value = True
    assert browser.png != png and decode(browser.png).shape == picture.shape
    browser.slider.value = 2
    assert "partial mIoU 0.582" in browser.text.value


def striped_frame():
    """A 64x128 frame whose mask alternates classes every pixel: resampling would blend them."""
    image = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    mask = np.where((np.arange(128) + np.arange(64)[:, None]) % 2, 13, 0)
    mask[:8] = labels.IGNORE_INDEX
    return torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask)


def test_augmentation_explorer_identity_then_controls_change_picture():
    image, mask = striped_frame()
    explorer = widgets.AugmentationExplorer(image, mask)
    explorer.flip.value = 0
    picture = decode(explorer.png)
    assert picture.shape == (TOP + 64, 2 * 128 + GAP, 3)
    assert (panel(picture, 0, 128, 64) == image.permute(1, 2, 0).numpy()).all()
    png = explorer.png
    explorer.brightness.value = 0.8
    assert explorer.png != png
    assert (panel(decode(explorer.png), 1, 128, 64) == labels.colorize(mask)).all()  # mask untouched


def test_augmentation_explorer_mask_keeps_palette_colours():
    explorer = widgets.AugmentationExplorer(*striped_frame())
    explorer.resize.value = 0.7
    explorer.crop.value = 0.8
    explorer.hue.value = 0.2
    out_mask = explorer.result[1]
    height, width = out_mask.shape
    assert (height, width) == (round(round(64 * 0.7) * 0.8), round(round(128 * 0.7) * 0.8))
    mask_panel = decode(explorer.png)[TOP:TOP + height, width + GAP:2 * width + GAP]
    colours = {tuple(c) for c in mask_panel.reshape(-1, 3).tolist()}
    assert colours == {tuple(labels.palette()[k]) for k in (0, 13, 255)}
    assert f"output {width}×{height}" in explorer.text.value


def test_augmentation_explorer_resample_is_seeded():
    explorer = widgets.AugmentationExplorer(*striped_frame())
    explorer.crop.value = 0.5
    first = explorer.png
    explorer.resample.click()
    assert explorer.seed.value == 1 and explorer.png != first
    explorer.seed.value = 0
    assert explorer.png == first
