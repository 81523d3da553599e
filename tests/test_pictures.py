"""The numpy pictures of class maps: overlays, boundaries and error maps, at known pixel values."""

import numpy as np
import torch

from segkit import labels, pictures

H, W = 32, 64


def sample(seed=0):
    """A random image (H, W, 3) and a mask of vertical class stripes with an ignored corner."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = np.repeat((np.arange(W) // 8 + seed) % 19, H).reshape(W, H).T.copy()
    mask[:8, :8] = labels.IGNORE_INDEX
    return image, mask


def test_overlay_blends_labelled_pixels_and_keeps_void():
    image = np.full((H, W, 3), 100, dtype=np.uint8)
    mask = np.full((H, W), labels.IGNORE_INDEX)
    mask[:, : W // 2] = 0  # road (128, 64, 128)
    out = pictures.overlay(image, mask, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert (out[:, : W // 2] == [114, 82, 114]).all()
    assert (out[:, W // 2:] == image[:, W // 2:]).all()
    assert (pictures.overlay(image, mask, alpha=1.0)[:, : W // 2] == [128, 64, 128]).all()


def test_overlay_accepts_chw_tensors_and_original_scheme_void():
    image, mask = sample()
    chw = torch.from_numpy(image).permute(2, 0, 1)
    assert (pictures.overlay(chw, torch.from_numpy(mask)) == pictures.overlay(image, mask)).all()
    original = np.where(mask == labels.IGNORE_INDEX, 0, mask + 1)  # class 0 = "unlabelled"
    out = pictures.overlay(image, original, alpha=1.0, scheme="original20")
    assert (out[:8, :8] == image[:8, :8]).all()
    assert (out[8:, :8] == labels.palette("original20")[original[8:, :8]]).all()


def test_boundaries_of_a_hand_built_mask():
    mask = np.array([[0, 0, 1, 1, 1],
                     [0, 0, 1, 1, 1],
                     [2, 2, 2, 1, 1],
                     [2, 2, 2, 1, 1]])
    expected = np.array([[0, 1, 1, 0, 0],
                         [1, 1, 1, 0, 0],
                         [1, 1, 1, 1, 0],
                         [0, 0, 1, 1, 0]], dtype=bool)
    assert (pictures.boundaries(mask) == expected).all()
    assert (pictures.boundaries(torch.from_numpy(mask)) == expected).all()
    assert not pictures.boundaries(np.zeros((4, 5), dtype=np.int64)).any()


def test_error_map_marks_wrong_labelled_pixels_only():
    image, target = sample()
    pred = target.copy()
    pred[:, 8:16] = 5  # wrong on a labelled stripe (class 1)
    pred[:8, :8] = 3  # differs where the target is ignored: not an error
    out = pictures.error_map(image, target, pred)
    red = (out == pictures.ERROR_COLOUR.astype(np.uint8)).all(-1)
    assert red[:, 8:16].all() and red.sum() == H * 8
    focused = pictures.error_map(image, target, pred, focus=2)  # class 2 is neither missed nor predicted
    assert not (focused == pictures.ERROR_COLOUR.astype(np.uint8)).all(-1).any()
