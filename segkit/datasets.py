"""``CityscapesSegmentation``: (image, mask) pairs over a prepared or official Cityscapes root.

Three layouts are recognised, so the same class serves the synthetic set, the real download and the
original study's folders:

* prepared (``segkit prepare``): ``gtFine/{split}/{city}/*_gtFine_labelTrainIds.png`` beside the
  images: trainIds are read as they are (fast: no conversion, small files);
* official (extracted zips or ``segkit synth``): ``*_gtFine_labelIds.png``, converted to trainIds
  through the label table on the fly;
* flat (the original study's ``small_dataset/{train,valid}/`` with images and labelIds side by side).

``class_pixels`` and ``check_has_labels`` say what a dataset's labels hold (the training loop's class
weights, and the refusal to score a split without labels). Loaders for training are built in
``segkit.loaders``; this module knows files, not training.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from segkit import labels, layout
from segkit.io import DataError, decode_image
from segkit.prepare import read_manifest

FLAT_SPLITS = {"train": "train", "val": "valid", "test": "test"}


class CityscapesSegmentation(Dataset):
    """Cityscapes frames as ``(tv_tensors.Image uint8 (3, H, W), tv_tensors.Mask int64 (H, W))``.

    Args:
        root: a prepared, official or flat (``small_dataset``) root.
        split: "train", "val" or "test".
        transforms: called as ``transforms(image, mask)``; e.g. a ``segkit.transforms`` preset.
        label_scheme: "cityscapes19" (19 classes, 255 = ignore) or "original20" (0 = unlabelled).
        cities: keep only these cities (default: all found).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transforms: Callable | None = None, label_scheme: str = "cityscapes19",
                 cities: list[str] | None = None):
        self.root, self.split, self.transforms = Path(root), split, transforms
        self.label_scheme = label_scheme
        if split not in layout.SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(layout.SPLITS)}")
        if not self.root.is_dir():
            raise DataError(f"{self.root}: is a file, not a dataset folder; give the folder that holds "
                            "leftImg8bit/ and gtFine/" if self.root.exists() else
                            f"{self.root}: dataset root does not exist")
        self.layout, self.images, self.labels, self.label_kind = _find_frames(self.root, split)
        if cities is not None:
            keep = [i for i, path in enumerate(self.images) if _city(path) in cities]
            self.images = [self.images[i] for i in keep]
            self.labels = [self.labels[i] for i in keep]
        if not self.images:
            raise DataError(f"{self.root}: no {split} frames found"
                            + (f" for cities {cities}" if cities is not None else ""))
        lut = self._label_lut()
        identity = np.array_equal(lut, np.arange(256))
        self._lut = None if identity else lut  # uint8 (256,); prepared trainIds need none

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> CityscapesSegmentation:
        """A copy holding only the frames at ``indices``, in that order (transforms shared)."""
        part = copy.copy(self)
        part.images, part.labels = [self.images[i] for i in indices], [self.labels[i] for i in indices]
        return part

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        with one_intra_op_thread():  # many tiny ops: extra threads only wait for each other
            image, mask = self.load(index)
            if self.transforms is not None:
                image, mask = self.transforms(image, mask)
        return image, mask

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The untransformed frame ``index``: uint8 image (3, H, W) and int64 class mask (H, W)."""
        image = _read(self.images[index], "RGB")  # (H, W, 3)
        raw = _read(self.labels[index], None)  # (H, W)
        if raw.ndim != 2:
            raise DataError(f"{self.labels[index]}: a label map must have one channel, "
                            f"got shape {tuple(raw.shape)}")
        if raw.shape != image.shape[:2]:
            raise DataError(f"{self.labels[index]}: label size {tuple(raw.shape[::-1])} differs "
                            f"from its image size {tuple(image.shape[1::-1])}")
        if self.label_kind == "labelIds" and int(raw.max()) > max(labels.VALID_LABEL_IDS):
            raise DataError(f"{self.labels[index]}: label id {int(raw.max())} is not in the "
                            "Cityscapes label table")
        if self._lut is not None:  # a uint8 lookup on uint8 ids: no int64 index map (2x faster)
            raw = torch.from_numpy(self._lut[raw.numpy()])
        mask = raw.long()  # the one int64 copy the Mask contract asks for
        return tv_tensors.Image(image.permute(2, 0, 1)), tv_tensors.Mask(mask)

    def image_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of every frame's image, read from the file headers (nothing decoded)."""
        sizes = []
        for path in self.images:
            try:
                with Image.open(path) as image:
                    sizes.append(image.size)
            except OSError as error:  # unreadable or not an image: named as loading would name it
                raise DataError(f"{path}: cannot read image ({error})") from error
        return sizes

    @property
    def cities(self) -> list[str]:
        """The cities of this split, sorted."""
        return sorted(self.counts())

    def counts(self) -> dict[str, int]:
        """Number of frames per city."""
        return dict(sorted(Counter(_city(path) for path in self.images).items()))

    @property
    def num_classes(self) -> int:
        """Classes of the label scheme (19, or 20 with "unlabelled")."""
        return labels.num_classes(self.label_scheme)

    def _label_lut(self) -> np.ndarray:
        """A 256-entry table turning the stored label values into the scheme's class indices."""
        if self.label_kind == "labelIds":
            return labels.id_to_train_id_lut(self.label_scheme)
        lut = np.arange(256, dtype=np.uint8)
        if self.label_scheme == "original20":
            lut = np.where(lut < labels.NUM_CLASSES, lut + 1, 0).astype(np.uint8)
        else:
            labels.num_classes(self.label_scheme)  # rejects unknown schemes
        return lut

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"frames={len(self)}, layout={self.layout!r}, labels={self.label_kind!r})")


@contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run torch ops with one intra-op thread inside, then restore the previous thread count.

    Making a sample is many small ops on one frame; with ``num_workers=0`` on a loaded CPU each
    of them waited for every torch thread (measured 135 -> 8.4 samples/s with 2 threads, 110 with
    one). DataLoader worker processes already run with one thread each.
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _find_frames(root: Path, split: str) -> tuple[str, list[Path], list[Path], str]:
    """Locate the images and labels of ``split``: (layout name, images, labels, label kind)."""
    if (root / layout.IMAGE_DIR).is_dir() or (root / layout.LABEL_DIR).is_dir():
        images = sorted((root / layout.IMAGE_DIR / split).glob(f"*/*{layout.IMAGE_SUFFIX}"))
        label_dir = root / layout.LABEL_DIR / split
        name = "official"
    elif (root / FLAT_SPLITS[split]).is_dir():
        images = sorted((root / FLAT_SPLITS[split]).glob(f"*{layout.IMAGE_SUFFIX}"))
        label_dir = root / FLAT_SPLITS[split]
        name = "flat"
    else:
        raise DataError(f"{root}: not a Cityscapes root (no leftImg8bit/ and gtFine/ folders, "
                        f"nor the flat {FLAT_SPLITS[split]}/ folder)")

    def label_of(image: Path, suffix: str) -> Path:
        stem = image.name[: -len(layout.IMAGE_SUFFIX)]
        city_dir = label_dir / _city(image) if name == "official" else label_dir
        return city_dir / (stem + suffix)

    for kind, suffix in (("trainIds", layout.TRAIN_IDS_SUFFIX), ("labelIds", layout.LABEL_IDS_SUFFIX)):
        found = [label_of(image, suffix) for image in images]
        if all(path.is_file() for path in found):
            return ("prepared" if kind == "trainIds" else name), images, found, kind
    image = next(i for i in images if not label_of(i, layout.LABEL_IDS_SUFFIX).is_file())
    raise DataError(f"{image}: image without its label "
                    f"{label_of(image, layout.LABEL_IDS_SUFFIX).name} in {label_dir}")


def _city(image_path: Path) -> str:
    """The city of a frame, from its official file name ``{city}_{seq}_{frame}_…``."""
    return image_path.name.rsplit("_", 3)[0]


def _read(path: Path, mode: str | None) -> torch.Tensor:
    """Read and decode an image file (``mode`` e.g. "RGB"), naming the file on failure."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from error
    return torch.from_numpy(decode_image(data, str(path), mode=mode))


def _untransformed(dataset) -> Callable[[int], tuple]:
    """``dataset.load`` (the untransformed frame) where there is one, else ``dataset[i]``."""
    return dataset.load if hasattr(dataset, "load") else dataset.__getitem__


def class_pixels(dataset, num_classes: int | None = None) -> np.ndarray:
    """Pixels per class over a dataset's untransformed masks: (C + 1,) int64, the last one void.

    A prepared split (``segkit prepare``) whole, under the label scheme its manifest counts in, is
    read from ``manifest.json``'s ``class_pixels``, which holds exactly these counts; any other
    dataset (official or flat roots, some cities only, "original20", or anything with ``load(i)``
    or ``[i]`` giving (image, mask)) is decoded frame by frame.
    """
    num_classes = num_classes or getattr(dataset, "num_classes", labels.NUM_CLASSES)
    counted = _manifest_pixels(dataset, num_classes)
    if counted is not None:
        return counted
    load = _untransformed(dataset)
    return labels.label_histogram((load(i)[1] for i in range(len(dataset))), num_classes)


def _manifest_pixels(dataset, num_classes: int) -> np.ndarray | None:
    """The manifest's (C + 1,) counts of ``dataset``'s split, or None where they would not be its own."""
    if not isinstance(dataset, CityscapesSegmentation) or dataset.layout != "prepared":
        return None
    manifest = read_manifest(dataset.root) or {}
    names = [*labels.class_names(dataset.label_scheme), "ignore"]
    if (manifest.get("class_names") != names or len(names) != num_classes + 1
            or manifest.get("counts", {}).get(dataset.split) != dataset.counts()):
        return None  # another scheme, or not every frame the manifest counted
    return np.asarray(manifest["class_pixels"][dataset.split], dtype=np.int64)


def check_has_labels(dataset, samples: int = 3) -> None:
    """Refuse (``DataError``) a dataset whose labels are all ignore, like the official test split.

    Looks at ``samples`` frames spread over the dataset; one without ``load`` passes unchecked.
    """
    load = getattr(dataset, "load", None)
    if load is None or len(dataset) == 0:
        return
    picks = np.linspace(0, len(dataset) - 1, num=min(samples, len(dataset))).round().astype(int)
    if all(bool((load(int(i))[1] == labels.IGNORE_INDEX).all()) for i in picks):
        raise DataError(f"{getattr(dataset, 'root', 'dataset')} {getattr(dataset, 'split', '')}: "
                        "every label is 'ignore', so there is nothing to score; the Cityscapes "
                        "test split has no public labels (its scores come from the benchmark "
                        "server). Evaluate on the val split instead.")


def data_dir() -> Path:
    """Where generated and prepared data live: ``$SEGKIT_DATA``, else ``./data``."""
    return Path(os.environ.get("SEGKIT_DATA", "data"))


def ensure_synthetic(profile, root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The prepared synthetic set of ``profile`` (a ``segkit.config.Profile``); made when missing.

    Generates ``profile.synth_frames`` frames per split at ``profile.synth_size`` into
    ``root/raw`` (folders and the two official zips) and prepares the ``small`` subset from the zips
    into ``root/prepared`` (default root: ``data_dir()/synthetic-{profile.name}``), saying so.
    Returns the prepared root. Notebook 01 runs the same two steps one by one.
    """
    from segkit.prepare import MANIFEST, prepare
    from segkit.synthetic import generate

    root = Path(root) if root is not None else data_dir() / f"synthetic-{profile.name}"
    prepared = root / "prepared"
    if (prepared / MANIFEST).is_file():
        return prepared
    width, height = profile.synth_size
    print(f"No dataset given: generating the synthetic Cityscapes set ({profile.synth_frames} frames "
          f"per split at {width}x{height}, profile {profile.name!r}) into {root}", flush=True)
    generate(root / "raw", size=profile.synth_size, frames=profile.synth_frames, zips=True,
             progress=progress)
    prepare(root / "raw", prepared, subset="small", progress=progress)
    return prepared
