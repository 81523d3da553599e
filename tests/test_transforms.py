import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from segkit import labels
from segkit.transforms import demo_transforms, denormalize, eval_transforms, train_transforms

VALID = set(range(19)) | {255}


def blocky_sample(height=96, width=192, seed=0, block=16):
    """A mask of large class blocks and an image painted with each class's colour."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 19, (height // block, width // block), generator=gen)
    mask = coarse.repeat_interleave(block, 0).repeat_interleave(block, 1)
    mask[:8, :8] = 255
    image = torch.from_numpy(labels.colorize(mask)).permute(2, 0, 1)
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def colour_agreement(image_uint8, mask):
    """Fraction of labelled pixels whose colour is (nearly) the palette colour of their class."""
    expected = torch.from_numpy(labels.colorize(mask)).permute(2, 0, 1).int()
    close = (image_uint8.int() - expected).abs().amax(0) <= 12
    valid = mask != 255
    return close[valid].float().mean().item()


def coordinate_sample(block=32):
    """An image whose red/green channels encode each pixel's x / 2y, and a mask of class blocks."""
    y, x = torch.meshgrid(torch.arange(128), torch.arange(256), indexing="ij")
    image = torch.stack([x, 2 * y, torch.zeros_like(x)]).to(torch.uint8)
    mask = (x // block + 8 * (y // block)) % 19
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


@pytest.mark.parametrize("seed", range(6))
def test_train_preset_keeps_image_and_mask_aligned(seed):
    torch.manual_seed(seed)
    image, mask = coordinate_sample()
    out_image, out_mask = train_transforms(size=(128, 64), jitter=0)(image, mask)
    assert out_image.shape == (3, 64, 128) and out_image.dtype == torch.float32
    assert out_mask.shape == (64, 128) and out_mask.dtype == torch.int64
    assert set(out_mask.unique().tolist()) <= VALID
    # every output pixel's colour says where it came from: its mask value must come from there
    rgb = denormalize(out_image).long()
    source_x, source_y = rgb[0], rgb[1] // 2
    inside = (out_mask != 255) & ((source_x % 32 - 16).abs() < 13) & ((source_y % 32 - 16).abs() < 13)
    assert inside.sum() > 500
    agree = out_mask[inside] == mask[source_y[inside], source_x[inside]]
    assert agree.float().mean() > 0.98


def test_mask_values_never_interpolated():
    torch.manual_seed(0)
    image, mask = blocky_sample()
    for _ in range(10):
        _, out_mask = train_transforms(size=(100, 50), scale=(0.3, 3.0))(image, mask)
        assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist()) | {255}


def test_small_scale_pads_mask_with_ignore_and_image_with_black():
    image, mask = blocky_sample(height=64, width=128)
    mask[:] = 3
    out_image, out_mask = train_transforms(size=(128, 64), scale=(0.5, 0.5), hflip=0,
                                           jitter=0)(image, mask)
    padded = out_mask == 255
    assert 0.6 < padded.float().mean() < 0.9  # a half-size frame fills a quarter of the crop
    assert (denormalize(out_image)[:, padded] <= 1).all()


def test_colour_jitter_touches_image_only():
    image, mask = blocky_sample()
    jitter = demo_transforms(jitter=0.8)["colour jitter"]
    torch.manual_seed(1)
    out_image, out_mask = jitter(image, mask)
    assert torch.equal(out_mask, mask)
    assert not torch.equal(out_image, image)


def test_eval_preset_resizes_both_to_size():
    image, mask = blocky_sample(block=32)
    out_image, out_mask = eval_transforms(size=(96, 48))(image, mask)
    assert out_image.shape == (3, 48, 96) and out_mask.shape == (48, 96)
    assert colour_agreement(denormalize(out_image), out_mask) > 0.8
    _, same_mask = eval_transforms()(image, mask)
    assert same_mask.shape == mask.shape and torch.equal(same_mask, mask)


def test_demo_transforms_return_uint8_pairs_of_the_requested_size():
    torch.manual_seed(0)
    image, mask = blocky_sample()
    demos = demo_transforms(size=(96, 48))
    assert list(demos) == ["resize", "random crop", "colour jitter", "flip", "all"]
    for name in ("resize", "random crop", "all"):
        out_image, out_mask = demos[name](image, mask)
        assert out_image.dtype == torch.uint8 and out_image.shape == (3, 48, 96), name
        assert out_mask.shape == (48, 96), name
    flipped_image, flipped_mask = demos["flip"](image, mask)
    assert torch.equal(flipped_mask, mask.flip(-1))
    assert torch.equal(flipped_image, image.flip(-1))
    crop_image, crop_mask = demos["random crop"](image, mask)
    assert colour_agreement(crop_image, crop_mask) > 0.9


def test_denormalize_round_trips_uint8():
    image, mask = blocky_sample()
    normalised, _ = eval_transforms()(image, mask)
    assert np.array_equal(denormalize(normalised).numpy(), image.numpy())


def test_base_height_sets_the_scale_before_cropping():
    image, mask = coordinate_sample()
    native = train_transforms(size=(64, 32), base_height=128, scale=(1.0, 1.0), hflip=0, jitter=0)
    halved = train_transforms(size=(64, 32), scale=(1.0, 1.0), hflip=0, jitter=0)  # base: 32 rows
    steps = {}
    for name, preset in (("native", native), ("halved", halved)):
        torch.manual_seed(0)
        x = denormalize(preset(image, mask)[0]).long()[0]  # red channel: source column
        steps[name] = (x[:, 1:] - x[:, :-1]).float().mean().item()
    assert steps["native"] == pytest.approx(1.0, abs=0.05)  # neighbours one source pixel apart
    assert steps["halved"] == pytest.approx(4.0, abs=0.3)  # 128 rows shown in 32
