"""The clickable confusion matrix: per-frame counts, ranking, highlighted pixels and the reading."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkit import labels
from segkit.labs.confusion import (
    CONFUSED,
    CORRECT,
    ConfusionExplorer,
    cell_mask,
    per_frame_confusion,
    read_cell,
    top_frames,
)
from segkit.metrics import ConfusionMatrix
from segkit.widgets import GAP, TITLE_HEIGHT

H, W = 8, 12
ROAD, SKY, PERSON, CAR, VOID = 0, 10, 11, 13, labels.IGNORE_INDEX


def decode(png):
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture
def frames():
    """Three frames, road left (48 px) and car right (48 px), whose predictions take car for road
    on 4, 10 and 2 pixels; frame 2 also takes 3 road pixels for sky and has 4 void pixels, there
    predicted car, which must count nowhere.

    Whole: road row 140 (137 right, 3 sky), car row 144 (128 right, 16 road), road column 153.
    """
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(3)]
    targets = [np.where(np.arange(W) < W // 2, ROAD, CAR) * np.ones((H, 1), dtype=np.int64) for _ in range(3)]
    predictions = [t.copy() for t in targets]
    predictions[0][0, 6:10] = ROAD
    predictions[1][0:2, 6:11] = ROAD
    targets[2][0:2, 0:2] = VOID
    predictions[2][0:2, 0:2] = CAR
    predictions[2][7, 6:8] = ROAD
    predictions[2][7, 0:3] = SKY
    return images, targets, predictions


def test_per_frame_matrices_sum_to_the_whole(frames):
    _, targets, predictions = frames
    per_frame = per_frame_confusion(targets, predictions)
    whole = ConfusionMatrix()
    whole.update(torch.as_tensor(np.stack(predictions)), torch.as_tensor(np.stack(targets)))
    assert torch.equal(sum(frame.mat for frame in per_frame), whole.mat)
    assert [int(frame.mat[CAR, ROAD]) for frame in per_frame] == [4, 10, 2]
    assert int(whole.mat[CAR, ROAD]) == 16 and int(whole.mat[ROAD, SKY]) == 3
    assert int(whole.mat[:, CAR].sum()) == 128  # the void pixels predicted car count nowhere


def test_top_frames_rank_by_pixels_then_index():
    mats = torch.zeros(5, 3, 3, dtype=torch.int64)
    mats[:, 1, 2] = torch.tensor([7, 0, 9, 7, 1])
    assert top_frames(mats, 1, 2) == [(2, 9), (0, 7), (3, 7)]
    assert top_frames(mats, 1, 2, count=5) == [(2, 9), (0, 7), (3, 7), (4, 1)]  # frame 1 has none
    assert top_frames(mats, 2, 1) == []


def test_cell_mask_is_exactly_the_pixels_of_the_cell(frames):
    _, targets, predictions = frames
    mask = cell_mask(targets[1], predictions[1], CAR, ROAD)
    expected = np.zeros((H, W), dtype=bool)
    expected[0:2, 6:11] = True
    assert (mask == expected).all()
    assert not cell_mask(targets[2], predictions[2], CAR, CAR)[0:2, 0:2].any()  # void is no class


def test_read_cell_numbers_match_compute(frames):
    _, targets, predictions = frames
    whole = ConfusionMatrix()
    for frame in per_frame_confusion(targets, predictions):
        whole += frame
    result = whole.compute()
    reading = read_cell(whole, CAR, ROAD)
    assert (reading["pixels"], reading["row"], reading["column"]) == (16, 144, 153)
    assert reading["recall"] == pytest.approx(128 / 144) == result["acc"][CAR].item()
    assert reading["precision"] == pytest.approx(137 / 153)
    assert reading["iou_true"] == pytest.approx(128 / 144) == result["iou"][CAR].item()
    assert reading["iou_pred"] == pytest.approx(137 / (140 + 153 - 137)) == result["iou"][ROAD].item()


def test_explorer_shows_present_classes_and_starts_at_the_largest_confusion(frames):
    explorer = ConfusionExplorer(*frames)
    assert explorer.classes == [ROAD, SKY, CAR]
    assert len(explorer.cells) == 9 and explorer.selected == (CAR, ROAD)
    cell = explorer.cells[(CAR, ROAD)]
    assert cell.description == "11%"  # 16 of 144 car pixels
    assert cell.tooltip == "true car → predicted road: 11.1 % of car pixels (16 px)"
    assert "segkit-confusion-cell-13-0" in cell._dom_classes
    assert "segkit-confusion-selected" in cell._dom_classes
    assert explorer.cells[(SKY, ROAD)].description == "–"  # no sky in the ground truth
    assert explorer.cells[(ROAD, CAR)].description == "·"  # void pixels predicted car do not count
    assert explorer.frames() == [(1, 10), (0, 4), (2, 2)]


def test_picture_highlights_exactly_the_cell_pixels_of_the_top_frames(frames):
    _, targets, predictions = frames
    explorer = ConfusionExplorer(*frames)
    picture = decode(explorer.png)
    row_height = TITLE_HEIGHT + H
    assert picture.shape == (3 * row_height + 2 * GAP, 3 * W + 2 * GAP, 3)  # three frames, three panels
    for k, (frame, _) in enumerate(explorer.frames()):
        top = k * (row_height + GAP) + TITLE_HEIGHT
        shown = picture[top:top + H, :W]
        assert ((shown == CONFUSED).all(-1) == cell_mask(targets[frame], predictions[frame], CAR, ROAD)).all()
        prediction_panel = picture[top:top + H, 2 * (W + GAP):3 * W + 2 * GAP]
        assert (prediction_panel == labels.colorize(predictions[frame])).all()


def test_clicking_a_cell_updates_picture_and_caption(frames):
    explorer = ConfusionExplorer(*frames)
    png = explorer.png
    explorer.cells[(ROAD, SKY)].click()
    assert explorer.selected == (ROAD, SKY) and explorer.png != png
    assert "segkit-confusion-selected" not in explorer.cells[(CAR, ROAD)]._dom_classes
    assert decode(explorer.png).shape[0] == TITLE_HEIGHT + H  # one frame holds such pixels
    text = explorer.text.value
    assert "true road → predicted sky</b>: 3 px in 1 of 3 frames" in text and "frame 2 (3 px)" in text
    assert "recall(road) = diagonal / row = 137 / 140 = 0.979" in text
    assert "precision(sky) = diagonal / column = 0 / 3 = 0.000" in text
    assert "IoU(road) = diagonal / (row + column − diagonal) = 137 / (140 + 153 − 137) = 0.878" in text
    assert "IoU(sky) = diagonal / (row + column − diagonal) = 0 / (0 + 3 − 0) = 0.000" in text


def test_caption_numbers_match_compute(frames):
    explorer = ConfusionExplorer(*frames)
    result = explorer.confusion.compute()
    text = explorer.text.value  # true car -> predicted road
    assert f"recall(car) = diagonal / row = 128 / 144 = {result['acc'][CAR]:.3f}" in text
    assert f"IoU(car) = diagonal / (row + column − diagonal) = 128 / (144 + 128 − 128) = " \
           f"{result['iou'][CAR]:.3f}" in text
    assert f"IoU(road) = diagonal / (row + column − diagonal) = 137 / (140 + 153 − 137) = " \
           f"{result['iou'][ROAD]:.3f}" in text
    assert "precision(road) = diagonal / column = 137 / 153 = 0.895" in text
    assert ("false negatives of car (11.1 % of its row) and false positives of road "
            "(10.5 % of its column)") in text


def test_a_diagonal_click_shows_the_correct_pixels(frames):
    _, targets, predictions = frames
    explorer = ConfusionExplorer(*frames)
    explorer.cells[(CAR, CAR)].click()
    assert explorer.frames() == [(2, 46), (0, 44), (1, 38)]
    first = decode(explorer.png)[TITLE_HEIGHT:TITLE_HEIGHT + H, :W]
    assert ((first == CORRECT).all(-1) == ((targets[2] == CAR) & (predictions[2] == CAR))).all()
    assert "The diagonal" in explorer.text.value


def test_a_cell_without_pixels_says_so(frames):
    explorer = ConfusionExplorer(*frames)
    explorer.select(SKY, CAR)
    assert explorer.frames() == [] and "shown: none" in explorer.text.value
    with pytest.raises(KeyError, match="not shown"):
        explorer.select(PERSON, CAR)


class UInt8Dataset:
    """(uint8 image (3, H, W), mask (H, W)) pairs with file names, like a dataset without transforms."""

    label_scheme = "cityscapes19"

    def __init__(self, images, targets):
        self.samples = [(torch.from_numpy(i).permute(2, 0, 1), torch.from_numpy(t))
                        for i, t in zip(images, targets, strict=True)]
        self.images = [Path(f"val/city/city_000000_{i:06d}_leftImg8bit.png") for i in range(len(images))]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]


class PredictCar(torch.nn.Module):
    """Scores car highest everywhere."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(19))
        self.bias.data[CAR] = 1

    def forward(self, x):
        return self.bias.view(1, 19, 1, 1).expand(len(x), 19, *x.shape[-2:])


def test_from_model_predicts_and_names_the_frames(frames):
    images, targets, _ = frames
    explorer = ConfusionExplorer.from_model(PredictCar(), UInt8Dataset(images, targets), count=2)
    assert len(explorer.images) == 2 and explorer.selected == (ROAD, CAR)
    assert int(explorer.confusion.mat[ROAD, CAR]) == 2 * 48
    assert "city_000000_000000_leftImg8bit.png" in explorer.text.value
