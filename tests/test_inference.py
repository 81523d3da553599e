import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from segkit import labels
from segkit.inference import (
    Inference,
    LabelIdWriter,
    _starts,
    compare_protocols,
    evaluate,
    predict,
    predict_files,
    read_image,
    spread_indices,
)
from segkit.io import DataError
from segkit.metrics import ConfusionMatrix


def pointwise(classes=19, seed=0):
    """A 1x1 conv: every output pixel depends on its own input pixel only."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, classes, 1).eval()


def mirror_symmetric(classes=19, seed=0):
    """A 3x3 conv whose kernels are symmetric left-right: f(flip(x)) == flip(f(x))."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, classes, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return conv.eval()


class SizeSpy(nn.Module):
    """Records the spatial size of every input it sees."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return self.inner(x)


def test_windows_cover_the_frame_and_end_at_its_edge():
    assert _starts(100, 30, 20) == [0, 20, 40, 60, 70]
    assert _starts(90, 30, 30) == [0, 30, 60]
    assert _starts(20, 30, 20) == [0]  # a frame smaller than the window is one window


@torch.inference_mode()
def test_sliding_window_equals_whole_frame_for_a_pointwise_model():
    model, images = pointwise(), torch.randn(2, 3, 40, 70)
    spy = SizeSpy(model)
    slid = Inference("slide", window=(24, 16), stride=(10, 7))(spy, images)
    torch.testing.assert_close(slid, model(images))  # overlaps averaged, not summed
    assert set(spy.seen) == {(16, 24)} and len(spy.seen) == 5 * 6


@torch.inference_mode()
def test_sliding_window_matches_whole_frame_inside_windows_for_a_3x3_model():
    model, images = mirror_symmetric(), torch.randn(1, 3, 32, 48)
    whole = model(images)
    slid = Inference("slide", window=(24, 32), stride=(24, 32))(model, images)  # two side by side
    torch.testing.assert_close(slid[..., :23], whole[..., :23])  # away from the seam at x = 24
    torch.testing.assert_close(slid[..., 25:], whole[..., 25:])
    assert not torch.allclose(slid[..., 23:25], whole[..., 23:25])  # zero padding at the seam


@torch.inference_mode()
def test_flip_augmentation_of_a_mirror_symmetric_model_equals_plain():
    model, images = mirror_symmetric(), torch.randn(2, 3, 24, 40)
    flipped = Inference(flip=True)(model, images)
    torch.testing.assert_close(flipped, model(images).softmax(1))
    other = pointwise()  # no symmetry: the mirrored pass really is the mirrored frame
    expected = (other(images).softmax(1) + other(images.flip(-1)).flip(-1).softmax(1)) / 2
    torch.testing.assert_close(Inference(flip=True)(other, images), expected)


@torch.inference_mode()
def test_sizes_the_model_sees_and_returns():
    spy = SizeSpy(pointwise())
    scores = Inference(size=(32, 16), scales=(0.5, 1.0, 1.5))(spy, torch.randn(1, 3, 30, 90))
    assert spy.seen == [(8, 16), (16, 32), (24, 48)]
    assert scores.shape == (1, 19, 30, 90)  # back at the frame's size
    torch.testing.assert_close(scores.sum(1), torch.ones(1, 30, 90))  # averaged probabilities
    spy.seen.clear()
    Inference(size=(32, 16), keep_ratio=True)(spy, torch.randn(1, 3, 30, 90), (60, 180))
    assert spy.seen == [(11, 32)]  # fitted inside 32x16, aspect ratio kept


def test_recipes_from_a_checkpoint_config():
    from segkit.config import TrainConfig

    config = TrainConfig(size=(64, 32), val_size=(128, 64))
    assert Inference.for_checkpoint(config).size == (128, 64)
    slide = Inference.for_checkpoint(config, mode="slide", tta=["flip", "ms"])
    assert (slide.size, slide.window, slide.stride_of(), slide.flip) == (None, (64, 32), (43, 22), True)
    assert slide.scales == (0.75, 1.0, 1.25) and slide.passes == 6
    assert "slide 64x32 windows, stride 43x22 at full resolution, flip" in slide.describe()
    with pytest.raises(ValueError, match="--tta ms"):
        Inference.for_checkpoint(config, scales=[0.5, 1.0])
    with pytest.raises(ValueError, match="--mode slide"):
        Inference.for_checkpoint(config, window=(32, 32))
    with pytest.raises(ValueError, match="leave pixels unseen"):
        Inference("slide", window=(32, 32), stride=(40, 8))


def test_labels_are_never_resized_for_scoring():
    images = torch.randn(3, 3, 32, 64)
    masks = torch.randint(0, 19, (3, 32, 64))
    masks[:, :4] = 255  # ignored rows
    spy = SizeSpy(pointwise())
    loader = DataLoader(TensorDataset(images, masks), batch_size=2)
    kept = []
    scores = evaluate(spy, loader, num_classes=19, inference=Inference(size=(16, 8)),
                      on_batch=lambda first, pred: kept.append((first, tuple(pred.shape))))
    assert set(spy.seen) == {(8, 16)}  # the model saw small frames...
    assert scores["confusion"].sum() == 3 * 28 * 64  # ...and every labelled pixel was scored
    assert kept == [(0, (2, 32, 64)), (2, (1, 32, 64))]
    assert predict(spy, images, inference=Inference(size=(16, 8))).shape == (3, 32, 64)


def test_label_ids_round_trip_with_official_names(tmp_path):
    images = [tmp_path / "leftImg8bit" / "val" / "frankfurt" / f"frankfurt_000000_{i:06d}_leftImg8bit.png"
              for i in (19, 576)]
    writer = LabelIdWriter(tmp_path / "results", images)
    pred = torch.arange(20 * 20).remainder(19).view(1, 20, 20).repeat(2, 1, 1)
    pred[1, 0] = 255  # void, if a model ever said so
    writer(0, pred)
    names = sorted(p.name for p in (tmp_path / "results").glob("*.png"))
    assert names == ["frankfurt_000000_000019_gtFine_labelIds.png",
                     "frankfurt_000000_000576_gtFine_labelIds.png"]
    with Image.open(tmp_path / "results" / names[1]) as image:
        assert image.mode == "L" and image.size == (20, 20)
        label_ids = np.array(image)
    assert (label_ids[0] == 0).all()  # void -> 0 "unlabeled"
    back = labels.id_to_train_id_lut()[label_ids]
    assert (back[1:] == pred[1, 1:].numpy()).all()  # labelIds -> trainIds gives the prediction
    assert label_ids[1, 18] == 7 and label_ids[1, 17] == 33  # trainIds 0 and 18: road, bicycle
    LabelIdWriter(tmp_path / "results", images)  # the same run again: allowed
    with pytest.raises(DataError, match="other options"):
        LabelIdWriter(tmp_path / "results", images, scheme="original20")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="already holds other data"):
        LabelIdWriter(tmp_path / "mine", images)


def test_original20_predictions_map_to_label_ids():
    lut = labels.train_id_to_id_lut("original20")
    assert lut[0] == 0 and lut[1] == 7 and lut[19] == 33


@pytest.fixture
def photos(tmp_path):
    """A folder of awkward inputs: JPEG, RGBA, greyscale (odd size), and a damaged PNG."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    picture.save(folder / "street.jpg", quality=90)
    picture.convert("RGBA").save(folder / "more" / "with_alpha.png")
    picture.convert("L").resize((37, 29)).save(folder / "more" / "grey.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image")
    return folder


def test_predict_files_writes_every_readable_image_and_reports_the_rest(photos, tmp_path):
    report = predict_files(pointwise(), [photos], tmp_path / "out", progress=False,
                           inference=Inference(size=(40, 24), keep_ratio=True))
    assert report.failed[0][0] == photos / "broken.png"
    assert "broken.png: cannot read image" in report.failed[0][1]
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in report.written) == [
        "more/grey", "more/with_alpha", "street"]
    for stem, size in (("street", (80, 48)), ("more/grey", (37, 29))):
        for suffix, mode in (("_color", "RGB"), ("_overlay", "RGB"), ("_trainIds", "L")):
            with Image.open(tmp_path / "out" / f"{stem}{suffix}.png") as image:
                assert (image.mode, image.size) == (mode, size)
    with Image.open(tmp_path / "out" / "street_trainIds.png") as image:
        assert np.array(image).max() < 19
    with pytest.raises(DataError, match="already holds other data"):
        predict_files(pointwise(), [photos / "street.jpg"], photos, progress=False)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    deep = np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    rgb = read_image(tmp_path / "deep.png")
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == np.arange(256).reshape(16, 16)).all()


def test_protocols_side_by_side_score_the_labels_each_names(tiny_checkpoint, prepared_root):
    from segkit.checkpoints import model_from_checkpoint
    from segkit.config import TrainConfig
    from segkit.datasets import CityscapesSegmentation
    from segkit.metrics import ConfusionMatrix
    from segkit.transforms import eval_transforms

    net, saved = model_from_checkpoint(tiny_checkpoint)
    with torch.no_grad():  # an untrained net may predict an absent class everywhere: say road
        net.head.bias[labels.CLASS_NAMES.index("road")] = 100.0
    # validated at 128x64; windows of 128x64 crops tiling the frame: 4 a frame, not the 36 of
    # its 64x32 crops with a third of overlap
    config = TrainConfig.from_dict(saved["config"]).replace(size=(128, 64))
    table = compare_protocols(net, config, prepared_root, amp="off", stride=(128, 64))
    assert list(table.index) == ["proxy", "whole", "slide", "slide + flip"]
    assert list(table["labels"]) == ["128x64", "256x128", "256x128", "256x128"]  # frames are 256x128
    assert table.loc["slide + flip", "how"] == ("slide 128x64 windows, stride 128x64 at full "
                                                "resolution, flip")
    # "whole" by hand: each frame shrunk to 128x64, its logits enlarged to the 256x128 labels
    matrix = ConfusionMatrix()
    with torch.inference_mode():
        for image, mask in CityscapesSegmentation(prepared_root, "val", eval_transforms()):
            small = nn.functional.interpolate(image[None], size=(64, 128), mode="bilinear", antialias=True)
            logits = nn.functional.interpolate(net.eval()(small), size=tuple(mask.shape), mode="bilinear")
            matrix.update(logits.argmax(1)[0], mask)
    by_hand = matrix.compute()
    assert table.loc["whole", "mIoU"] == pytest.approx(by_hand["miou"])
    assert table.loc["whole", "global acc"] == pytest.approx(by_hand["pixel_acc"])
    # the proxy scores labels shrunk to 128x64: other pixels, other numbers, and less memory than
    # the full-size class scores take
    assert table.loc["proxy", "global acc"] != pytest.approx(table.loc["whole", "global acc"])
    assert table.loc["proxy", "peak MB"] < table.loc["whole", "peak MB"]
    assert (table["s/frame"] > 0).all()
    # on one frame of the split: the first, and only it, in every row
    first = compare_protocols(net, config, prepared_root, amp="off", stride=(128, 64), frames=1)
    image, mask = CityscapesSegmentation(prepared_root, "val", eval_transforms())[0]
    with torch.inference_mode():
        small = nn.functional.interpolate(image[None], size=(64, 128), mode="bilinear", antialias=True)
        logits = nn.functional.interpolate(net(small), size=tuple(mask.shape), mode="bilinear")
    matrix = ConfusionMatrix()
    matrix.update(logits.argmax(1)[0], mask)
    assert first.loc["whole", "global acc"] == pytest.approx(matrix.compute()["pixel_acc"])


def test_frames_spread_evenly_over_a_split():
    assert spread_indices(48, 24) == list(range(0, 48, 2))
    assert spread_indices(5, 5) == [0, 1, 2, 3, 4] and spread_indices(10, 3) == [0, 3, 6]
    with pytest.raises(ValueError, match="cannot pick 6 of 5 frames"):
        spread_indices(5, 6)


@pytest.mark.parametrize("recipe", [
    {"size": (40, 24)},
    {"size": (40, 24), "keep_ratio": True, "flip": True, "scales": (0.75, 1.0, 1.25)},
    {"mode": "slide", "window": (24, 16), "stride": (10, 7)},
    {"mode": "slide", "window": (24, 16), "stride": (10, 7), "flip": True},
    {"mode": "slide", "window": (24, 16), "size": (50, 30), "flip": True},
    {"mode": "slide", "window": (24, 16), "scales": (0.5,)},
    {"mode": "slide", "window": (24, 16), "scales": (1.5,)},
], ids=["whole", "whole-tta", "slide", "slide-flip", "slide-resized-tta", "slide-one-small-scale",
        "slide-one-large-scale"])
@pytest.mark.parametrize("out_size", [None, (30, 50)], ids=["at-the-frame", "at-smaller-labels"])
@torch.inference_mode()
def test_class_maps_in_bands_are_the_argmax_of_the_scores(recipe, out_size, monkeypatch):
    from segkit import inference

    monkeypatch.setattr(inference, "BAND_PIXELS", 300)  # many bands, even at this size
    model, images = mirror_symmetric(), torch.randn(2, 3, 61, 107)
    inference_ = Inference(**recipe)
    expected = inference_(model, images, out_size).argmax(1)
    assert torch.equal(inference_.classes(model, images, out_size).long(), expected)


@pytest.mark.parametrize(("recipe", "share"), [
    ({"size": (64, 32), "keep_ratio": True}, 1 / 4),
    ({"mode": "slide", "window": (64, 32)}, 1 / 4),
    # the mirrored frame (3 channels against the scores' 19) and two slides' bands of rows: about
    # half the score map, where holding both slides' scores whole took three times it
    ({"mode": "slide", "window": (64, 32), "flip": True}, 3 / 5)], ids=["whole", "slide", "slide-flip"])
def test_memory_of_a_class_map_grows_with_the_image_not_with_its_class_scores(recipe, share, monkeypatch):
    from segkit import inference
    from segkit.planner import peak_cpu_bytes

    monkeypatch.setattr(inference, "BAND_PIXELS", 4096)
    model, images = pointwise(), torch.randn(1, 3, 600, 800)
    scores = 19 * 4 * 600 * 800  # every class's score at the image's size, in float32

    @torch.inference_mode()
    def classes():
        Inference(**recipe).classes(model, images)

    peak = peak_cpu_bytes(classes)
    assert peak < scores * share, f"{peak / 1e6:.1f} MB for a {scores / 1e6:.1f} MB score map"


def test_scoring_a_split_takes_class_maps_in_bands_not_full_size_scores(monkeypatch):
    from segkit import inference

    monkeypatch.setattr(inference, "BAND_PIXELS", 4096)
    model, images = pointwise(), torch.randn(2, 3, 96, 160)
    masks = torch.randint(0, 19, (2, 96, 160))
    recipe = Inference("slide", window=(64, 32))
    with torch.inference_mode():
        expected = recipe(model, images).argmax(1)
    matrix = ConfusionMatrix(19)
    matrix.update(expected, masks)

    def whole_scores(*args, **kwargs):  # scoring must never ask for the full-size class scores
        raise AssertionError("the scores were taken at the labels' size")

    monkeypatch.setattr(Inference, "__call__", whole_scores)
    scores = evaluate(model, DataLoader(TensorDataset(images, masks), batch_size=2), num_classes=19,
                      inference=recipe)
    assert torch.equal(scores["confusion"], matrix.mat)


def test_thin_photos_and_small_scales_are_padded_for_the_models(tiny_checkpoint, tmp_path, capsys):
    from segkit.cli import main

    Image.new("RGB", (1, 500), (120, 80, 40)).save(tmp_path / "thin.png")
    for out, flags in (("thin", []), ("small", ["--tta", "ms", "--scales", "0.001,1"])):
        assert main(["predict", str(tmp_path / "thin.png"), "--checkpoint", str(tiny_checkpoint),
                     "--out", str(tmp_path / out), "--quiet", *flags]) == 0
        with Image.open(tmp_path / out / "thin_trainIds.png") as image:
            assert image.size == (1, 500)


def test_a_scale_too_large_to_hold_is_refused_before_any_file(tiny_checkpoint, tmp_path, capsys):
    from segkit.cli import main

    Image.new("RGB", (64, 32)).save(tmp_path / "photo.png")
    assert main(["predict", str(tmp_path / "photo.png"), "--checkpoint", str(tiny_checkpoint), "--out",
                 str(tmp_path / "out"), "--tta", "ms", "--scales", "1,100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scale 100 of a 128x64 frame: size 12800x6400" in err
    assert "SEGKIT_MAX_PIXELS" in err and not (tmp_path / "out").exists()
