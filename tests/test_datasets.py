import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.datasets import Cityscapes

from segkit import labels, layout
from segkit.datasets import CityscapesSegmentation, class_pixels
from segkit.io import DataError
from segkit.prepare import read_manifest
from segkit.transforms import train_transforms

STEM = "hamburg_000000_000019"


def test_official_root_gives_image_and_train_id_mask(synthetic_source):
    dataset = CityscapesSegmentation(synthetic_source, "train")
    assert len(dataset) == 3 and dataset.layout == "official" and dataset.label_kind == "labelIds"
    assert dataset.cities == ["hamburg"] and dataset.counts() == {"hamburg": 3}
    image, mask = dataset[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64
    assert image.shape == (3, 128, 256) and mask.shape == (128, 256)
    label_ids = np.asarray(Image.open(layout.label_path(synthetic_source, "train", "hamburg", STEM)))
    assert np.array_equal(mask.numpy(), labels.id_to_train_id_lut()[label_ids])
    rgb = np.asarray(Image.open(layout.image_path(synthetic_source, "train", "hamburg", STEM)))
    assert np.array_equal(image.permute(1, 2, 0).numpy(), rgb)


def test_label_ids_map_through_a_uint8_lookup_without_an_int64_index(synthetic_source):
    """labelIds -> trainIds on uint8 values: torch allocates only the int64 mask itself
    (an int64 index map first would be 8 more bytes a pixel: 17 ms for a 2048x1024 frame)."""
    dataset = CityscapesSegmentation(synthetic_source, "train")
    dataset.load(0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        _, mask = dataset.load(0)
    allocated = sum(max(e.self_cpu_memory_usage, 0) for e in prof.events())
    assert mask.dtype == torch.int64
    assert allocated <= 1.1 * mask.numel() * 8


def test_prepared_root_reads_train_ids_and_agrees_with_official(synthetic_source, prepared_root):
    prepared = CityscapesSegmentation(prepared_root, "val")
    official = CityscapesSegmentation(synthetic_source, "val")
    assert prepared.layout == "prepared" and prepared.label_kind == "trainIds"
    for index in range(len(prepared)):
        assert torch.equal(prepared[index][1], official[index][1])
        assert torch.equal(prepared[index][0], official[index][0])


def test_test_split_labels_are_all_ignore(prepared_root):
    dataset = CityscapesSegmentation(prepared_root, "test")
    assert dataset.cities == ["berlin"]
    assert (dataset[0][1] == labels.IGNORE_INDEX).all()


def test_flat_layout_of_the_original_study(synthetic_source, tmp_path):
    flat = tmp_path / "small_dataset"
    for split, folder in (("train", "train"), ("val", "valid")):
        (flat / folder).mkdir(parents=True)
        for path in (synthetic_source / "leftImg8bit" / split).rglob("*.png"):
            shutil.copy(path, flat / folder)
        for path in (synthetic_source / "gtFine" / split).rglob("*_labelIds.png"):
            shutil.copy(path, flat / folder)
    dataset = CityscapesSegmentation(flat, "val")
    assert dataset.layout == "flat" and len(dataset) == 3 and dataset.cities == ["frankfurt"]
    official = CityscapesSegmentation(synthetic_source, "val")
    assert torch.equal(dataset[1][1], official[1][1])


def test_original20_scheme_shifts_classes_and_pools_void(prepared_root, synthetic_source):
    for root in (prepared_root, synthetic_source):
        nineteen = CityscapesSegmentation(root, "train")[0][1]
        twenty = CityscapesSegmentation(root, "train", label_scheme="original20")[0][1]
        assert torch.equal(twenty[nineteen == 255], torch.zeros_like(twenty[nineteen == 255]))
        assert torch.equal(twenty[nineteen != 255], nineteen[nineteen != 255] + 1)
    assert CityscapesSegmentation(prepared_root, "train", label_scheme="original20").num_classes == 20


def test_transforms_are_applied_jointly(prepared_root):
    dataset = CityscapesSegmentation(prepared_root, "train", transforms=train_transforms(size=(64, 32)))
    image, mask = dataset[2]
    assert image.shape == (3, 32, 64) and image.dtype == torch.float32
    assert mask.shape == (32, 64) and set(mask.unique().tolist()) <= set(range(19)) | {255}


def test_city_filter(prepared_root):
    with pytest.raises(DataError, match="no train frames found for cities"):
        CityscapesSegmentation(prepared_root, "train", cities=["bremen"])
    assert len(CityscapesSegmentation(prepared_root, "train", cities=["hamburg"])) == 3


def test_torchvision_cityscapes_reads_the_same_roots(synthetic_source, prepared_root):
    for root in (synthetic_source, prepared_root):
        reference = Cityscapes(str(root), split="val", mode="fine", target_type="semantic")
        ours = CityscapesSegmentation(root, "val")
        assert sorted(reference.images) == [str(p) for p in ours.images]
        for index in range(len(ours)):
            _, target = reference[reference.images.index(str(ours.images[index]))]
            expected = labels.id_to_train_id_lut()[np.asarray(target)]
            assert np.array_equal(expected, ours[index][1].numpy())


def test_bad_roots_and_files(source_copy, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CityscapesSegmentation(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a Cityscapes root"):
        CityscapesSegmentation(tmp_path / "empty")
    label = layout.label_path(source_copy, "train", "hamburg", STEM)
    label.unlink()
    with pytest.raises(DataError, match=f"{STEM}_leftImg8bit.png: image without its label"):
        CityscapesSegmentation(source_copy, "train")
    val_label = layout.label_path(source_copy, "val", "frankfurt", "frankfurt_000000_000019")
    val_label.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{val_label}: not an image Pillow can read") as info:
        CityscapesSegmentation(source_copy, "val")[0]
    assert "BytesIO" not in str(info.value)  # Pillow's own message names its in-memory buffer
    val_label.write_bytes(b"")
    with pytest.raises(DataError, match=f"{val_label}: an empty file"):
        CityscapesSegmentation(source_copy, "val")[0]
    with pytest.raises(DataError, match="is a file, not a dataset folder"):  # --data some.png
        CityscapesSegmentation(val_label)


def test_label_of_other_size_or_unknown_id_is_named(source_copy):
    path = layout.label_path(source_copy, "val", "frankfurt", "frankfurt_000001_000019")
    ids = np.asarray(Image.open(path))
    Image.fromarray(ids[:64]).save(path)
    dataset = CityscapesSegmentation(source_copy, "val")
    with pytest.raises(DataError, match=f"{path}: label size"):
        dataset[1]
    bad = ids.copy()
    bad[0, 0] = 77
    Image.fromarray(bad).save(path)
    with pytest.raises(DataError, match=f"{path}: label id 77"):
        dataset[1]


def test_samples_are_made_with_one_torch_thread_then_the_count_is_restored(prepared_root):
    seen = []

    def record(image, mask):
        seen.append(torch.get_num_threads())
        return image, mask

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        CityscapesSegmentation(prepared_root, "train", transforms=record)[0]
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_class_pixels_decodes_any_dataset_with_void_last():
    masks = [torch.tensor([[0, 1], [1, 255]]), torch.tensor([[18, 3], [255, 255]])]
    frames = [(torch.zeros(3, 2, 2, dtype=torch.uint8), mask) for mask in masks]
    counts = class_pixels(frames)
    assert counts.shape == (20,) and counts.sum() == 8 and counts[-1] == 3
    assert counts[1] == 2 and counts[18] == counts[3] == counts[0] == 1


def test_class_pixels_of_a_prepared_split_are_the_manifests(prepared_root, monkeypatch):
    dataset = CityscapesSegmentation(prepared_root, "train")
    from_manifest = class_pixels(dataset)
    assert from_manifest.tolist() == read_manifest(prepared_root)["class_pixels"]["train"]
    decoded = labels.label_histogram(dataset.load(i)[1] for i in range(len(dataset)))
    assert np.array_equal(from_manifest, decoded)
    monkeypatch.setattr(CityscapesSegmentation, "load", lambda self, i: 1 / 0)  # never decoded
    assert np.array_equal(class_pixels(dataset), decoded)


def test_class_pixels_decode_where_the_manifest_counts_other_frames_or_classes(prepared_root):
    fewer = CityscapesSegmentation(prepared_root, "train")
    fewer.images, fewer.labels = fewer.images[:2], fewer.labels[:2]  # no longer the whole split
    assert np.array_equal(class_pixels(fewer),
                          labels.label_histogram(fewer.load(i)[1] for i in range(2)))
    original = CityscapesSegmentation(prepared_root, "train", label_scheme="original20")
    counts = class_pixels(original)
    assert counts.shape == (21,) and counts[-1] == 0  # "unlabelled" is class 0, nothing is void
    assert counts[0] == read_manifest(prepared_root)["class_pixels"]["train"][-1]


def test_a_subset_keeps_the_frames_asked_for_in_order(prepared_root):
    dataset = CityscapesSegmentation(prepared_root, "train")
    part = dataset.subset([2, 0])
    assert part.images == [dataset.images[2], dataset.images[0]] and len(dataset) == 3
    for index, original in ((0, 2), (1, 0)):
        assert all(torch.equal(a, b) for a, b in zip(part[index], dataset[original], strict=True))
    assert part.image_sizes() == [dataset.image_sizes()[2], dataset.image_sizes()[0]]
