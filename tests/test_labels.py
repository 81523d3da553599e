import numpy as np
import pytest
import torch

from segkit import labels

# A few rows of the official table typed from cityscapesScripts' labels.py, as an independent check
# of the table segkit derives from torchvision: (name, id, trainId, category, colour).
OFFICIAL_ROWS = [
    ("unlabeled", 0, 255, "void", (0, 0, 0)),
    ("ego vehicle", 1, 255, "void", (0, 0, 0)),
    ("road", 7, 0, "flat", (128, 64, 128)),
    ("sidewalk", 8, 1, "flat", (244, 35, 232)),
    ("parking", 9, 255, "flat", (250, 170, 160)),
    ("building", 11, 2, "construction", (70, 70, 70)),
    ("pole", 17, 5, "object", (153, 153, 153)),
    ("polegroup", 18, 255, "object", (153, 153, 153)),
    ("traffic sign", 20, 7, "object", (220, 220, 0)),
    ("sky", 23, 10, "sky", (70, 130, 180)),
    ("person", 24, 11, "human", (220, 20, 60)),
    ("car", 26, 13, "vehicle", (0, 0, 142)),
    ("caravan", 29, 255, "vehicle", (0, 0, 90)),
    ("train", 31, 16, "vehicle", (0, 80, 100)),
    ("bicycle", 33, 18, "vehicle", (119, 11, 32)),
]


def test_table_has_34_ids_and_license_plate():
    ids = sorted(c.id for c in labels.CLASSES)
    assert ids == [-1, *range(34)]
    assert labels.NUM_CLASSES == 19
    assert frozenset(range(34)) == labels.VALID_LABEL_IDS


@pytest.mark.parametrize(("name", "label_id", "train_id", "category", "colour"), OFFICIAL_ROWS)
def test_lookup_matches_official_rows(name, label_id, train_id, category, colour):
    lut = labels.id_to_train_id_lut()
    assert lut.shape == (256,) and lut.dtype == np.uint8
    assert lut[label_id] == train_id
    assert tuple(labels.LABEL_ID_PALETTE[label_id]) == colour
    if train_id != 255:
        assert labels.CLASS_NAMES[train_id] == name
        assert labels.CATEGORY_OF_CLASS[train_id] == category
        assert tuple(labels.palette()[train_id]) == colour


def test_ids_outside_table_are_ignored():
    lut = labels.id_to_train_id_lut()
    assert (lut[34:] == 255).all()
    assert sorted(set(lut.tolist()) - {255}) == list(range(19))


def test_train_id_to_id_inverts_the_lookup():
    to_train, to_id = labels.id_to_train_id_lut(), labels.train_id_to_id_lut()
    for train_id in range(19):
        label_id = to_id[train_id]
        assert to_train[label_id] == train_id
    assert to_id[255] == 0


def test_original20_pools_void_into_class_zero():
    lut = labels.id_to_train_id_lut("original20")
    assert labels.num_classes("original20") == 20
    assert labels.class_names("original20")[0] == "unlabelled"
    void_ids = [c.id for c in labels.CLASSES if c.id >= 0 and c.train_id == 255]
    assert len(void_ids) == 15
    assert (lut[void_ids] == 0).all()
    assert lut[7] == 1 and lut[33] == 19  # road, bicycle shifted by one
    assert labels.class_names("original20")[1:] == labels.CLASS_NAMES


def test_colorize_train_ids_and_ignore():
    mask = torch.tensor([[0, 13], [255, -1]])
    rgb = labels.colorize(mask)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (128, 64, 128)
    assert tuple(rgb[0, 1]) == (0, 0, 142)
    assert tuple(rgb[1, 0]) == tuple(rgb[1, 1]) == (0, 0, 0)
    assert tuple(labels.colorize(np.array([[1]]), "original20")[0, 0]) == (128, 64, 128)


def test_categories_in_official_order():
    assert labels.CATEGORIES == ("flat", "construction", "object", "nature", "sky", "human",
                                 "vehicle")


def test_unknown_scheme_lists_choices():
    with pytest.raises(KeyError, match="cityscapes19"):
        labels.num_classes("coco")


def test_label_histogram_counts_classes_then_void():
    masks = [torch.tensor([[0, 1, 1], [2, labels.IGNORE_INDEX, 7]], dtype=torch.uint8),
             np.array([[-1, 2, 2, 2]])]
    counts = labels.label_histogram(masks, num_classes=3)
    assert counts.dtype == np.int64 and counts.tolist() == [1, 2, 4, 3]  # void: 255, 7 and -1
    assert labels.label_histogram([], num_classes=2).tolist() == [0, 0, 0]
    ignoring_one = labels.label_histogram([np.array([0, 1, 2])], num_classes=3, ignore_index=1)
    assert ignoring_one.tolist() == [1, 0, 1, 1]
    with pytest.raises(TypeError, match="integer"):
        labels.label_histogram([np.zeros(3)], num_classes=3)
