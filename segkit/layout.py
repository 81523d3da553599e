"""The official Cityscapes file layout, names and zip files, in one place.

A frame is named ``{city}_{seq:06d}_{frame:06d}`` (its *stem*); its files live at::

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png        (official labels, label ids)
    gtFine/{split}/{city}/{stem}_gtFine_color.png           (official colour rendering)
    gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png   (trainIds, written by preparation)
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val", "test")
IMAGE_DIR = "leftImg8bit"
LABEL_DIR = "gtFine"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
COLOR_SUFFIX = "_gtFine_color.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"

#: The two official downloads and the top folder of their members.
IMAGES_ZIP = "leftImg8bit_trainvaltest.zip"
LABELS_ZIP = "gtFine_trainvaltest.zip"

#: All cities of the official splits (the test split's labels are not public).
OFFICIAL_CITIES = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt",
              "hamburg", "hanover", "jena", "krefeld", "monchengladbach", "strasbourg",
              "stuttgart", "tubingen", "ulm", "weimar", "zurich"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"),
}

#: Subset presets for preparation: split -> cities (None = every city found).
SUBSETS = {
    "small": {"train": ("hamburg",), "val": ("frankfurt",)},  # the original study's subset
    "full": {"train": None, "val": None, "test": None},
}


def frame_stem(city: str, seq: int, frame: int) -> str:
    """The official frame name, e.g. ``hamburg_000000_000019``."""
    return f"{city}_{seq:06d}_{frame:06d}"


def image_path(root: Path, split: str, city: str, stem: str) -> Path:
    """Path of a frame's camera image under ``root``."""
    return Path(root, IMAGE_DIR, split, city, stem + IMAGE_SUFFIX)


def label_path(root: Path, split: str, city: str, stem: str, suffix: str = LABEL_IDS_SUFFIX) -> Path:
    """Path of one of a frame's label files under ``root`` (``suffix`` picks which)."""
    return Path(root, LABEL_DIR, split, city, stem + suffix)
