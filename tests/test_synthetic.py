import hashlib
import io as stdio
import zipfile

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import Cityscapes

from segkit import labels, layout
from segkit.io import DataError, encode_png
from segkit.synthetic import MARKER, generate, render_scene, write_official_zips

SIZE = (256, 128)
CITIES = {"train": ("hamburg", "bremen"), "val": ("frankfurt",), "test": ("berlin",)}
VOID_IDS = [c.id for c in labels.CLASSES if c.id >= 0 and c.train_id == labels.IGNORE_INDEX]
ID = {c.name: c.id for c in labels.CLASSES}
# Recorded from generator version 2 (the photographic streets of issue 22), with numpy 2.4 and
# zlib 1.2.13. Change them only on purpose, with GENERATOR_VERSION bumped: a changed picture means
# folders written earlier no longer match a new run.
FILES_SHA256 = "495085e05d5f55a24b9d3456f21cc95e89abc71195fd75c294b144803902079c"
ARRAYS_SHA256 = "7a2caaa8026422b0437b8bcc05f1b760486288bd1da189784b3675f362ca0eee"


def _unlike_the_recording(files: bool) -> str | None:
    """Why this machine cannot reproduce the pinned bytes, or None: float32 maths may round
    differently on another numpy or with AVX-512 kernels, and another zlib compresses differently."""
    import zlib

    from numpy._core._multiarray_umath import __cpu_features__ as features

    if not np.__version__.startswith("2.4."):
        return f"recorded with numpy 2.4, this is {np.__version__}"
    if features.get("AVX512F"):
        return "recorded on a CPU without AVX-512; numpy's AVX-512 kernels may round otherwise"
    if files and zlib.ZLIB_RUNTIME_VERSION != "1.2.13":
        return f"recorded with zlib 1.2.13, this is {zlib.ZLIB_RUNTIME_VERSION}"
    return None


def pngs(root):
    """Every PNG under root's official folders, by path relative to root."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for top in (layout.IMAGE_DIR, layout.LABEL_DIR) for p in (root / top).rglob("*.png")}


def read(path):
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """3 frames per split at 256x128 (train spread over two cities), with the zips."""
    out = tmp_path_factory.mktemp("synthetic")
    summary = generate(out, size=SIZE, frames=3, seed=0, cities=CITIES, zips=True, progress=False)
    assert summary["counts"] == {"train": {"hamburg": 2, "bremen": 1}, "val": {"frankfurt": 3},
                                 "test": {"berlin": 3}}
    assert summary["written"] == 9 and summary["skipped"] == 0 and summary["frames_per_s"] > 0
    return out


def test_the_same_seed_writes_the_pinned_bytes(root):
    if reason := _unlike_the_recording(files=True):
        pytest.skip(reason)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):  # PNGs, zips and the marker
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    assert digest.hexdigest() == FILES_SHA256


def test_render_scene_gives_the_pinned_arrays():
    if reason := _unlike_the_recording(files=False):
        pytest.skip(reason)
    digest = hashlib.sha256()
    for seed, size in ((0, (256, 128)), (1, (256, 128)), (2, (256, 128)), (7, (512, 256))):
        for array in render_scene(np.random.default_rng(seed), *size):
            digest.update(array.tobytes())
    assert digest.hexdigest() == ARRAYS_SHA256


def test_official_layout_names_and_formats(root):
    expected = set()
    for split, city, seq in [("train", "hamburg", 0), ("train", "hamburg", 1), ("train", "bremen", 0),
                             *[(s, c, k) for s, c in (("val", "frankfurt"), ("test", "berlin"))
                               for k in range(3)]]:
        stem = f"{city}_{seq:06d}_000019"
        expected |= {f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png",
                     f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png",
                     f"gtFine/{split}/{city}/{stem}_gtFine_color.png"}
    assert set(pngs(root)) == expected
    assert {p.name for p in root.iterdir()} == {"leftImg8bit", "gtFine", MARKER,
                                                layout.IMAGES_ZIP, layout.LABELS_ZIP}
    stem = "hamburg_000001_000019"
    for path, mode in ((layout.image_path(root, "train", "hamburg", stem), "RGB"),
                       (layout.label_path(root, "train", "hamburg", stem), "L"),
                       (layout.label_path(root, "train", "hamburg", stem, layout.COLOR_SUFFIX),
                        "RGBA")):
        with Image.open(path) as image:
            assert (image.mode, image.size) == (mode, SIZE)


def test_labels_use_official_ids_and_the_colour_files_match_them(root):
    for path in (root / "gtFine" / "train").rglob("*_labelIds.png"):
        ids = read(path)
        assert set(np.unique(ids).tolist()) <= labels.VALID_LABEL_IDS
        assert len(np.unique(ids)) >= 8  # a street, not a blank map
        colour = read(str(path).replace("_labelIds.png", "_color.png"))
        assert np.array_equal(colour[..., :3], labels.colorize_label_ids(ids))
        assert (colour[..., 3] == 255).all()


def test_test_split_has_dummy_labels_but_real_scenes(root):
    for path in (root / "gtFine" / "test").rglob("*_labelIds.png"):
        assert not read(path).any()
    for path in (root / "leftImg8bit" / "test").rglob("*.png"):
        image = read(path).astype(float)
        assert image.std() > 20 and np.abs(np.diff(image, axis=1)).mean() > 2


def test_zips_hold_the_official_members_with_the_folder_contents(root):
    files = pngs(root)
    for name, top in ((layout.IMAGES_ZIP, layout.IMAGE_DIR), (layout.LABELS_ZIP, layout.LABEL_DIR)):
        with zipfile.ZipFile(root / name) as archive:
            members = {info.filename: info for info in archive.infolist()}
            assert set(members) == {"README", "license.txt"} | {p for p in files
                                                                 if p.startswith(top + "/")}
            for member, info in members.items():
                if member.endswith(".png"):
                    assert info.compress_type == zipfile.ZIP_STORED
                    assert archive.read(member) == files[member]
            assert b"synthetic" in archive.read("README").lower()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_zips_can_be_written_elsewhere_and_need_frames(root, tmp_path):
    images, gt = write_official_zips(root, tmp_path)
    assert images.read_bytes() == (root / layout.IMAGES_ZIP).read_bytes()  # reproducible zips
    assert gt.read_bytes() == (root / layout.LABELS_ZIP).read_bytes()
    with pytest.raises(DataError, match="no PNG files"):
        write_official_zips(tmp_path / "empty", tmp_path)


def test_torchvision_cityscapes_reads_the_folder(root):
    dataset = Cityscapes(str(root), split="train", mode="fine", target_type="semantic")
    assert len(dataset) == 3
    image, target = dataset[0]
    assert image.mode == "RGB" and image.size == SIZE
    first = sorted((root / "gtFine" / "train").rglob("*_labelIds.png"))[0]
    assert np.array_equal(np.asarray(target), read(first))


def test_same_seed_same_bytes_other_seed_other_frames(tmp_path):
    train = {"train": ("hamburg",)}
    runs = {name: tmp_path / name for name in ("a", "b", "c", "four")}
    for name, seed, frames in (("a", 0, 2), ("b", 0, 2), ("c", 1, 2), ("four", 0, 4)):
        generate(runs[name], size=SIZE, frames=frames, seed=seed, cities=train, progress=False)
    a, b, c, four = (pngs(runs[name]) for name in ("a", "b", "c", "four"))
    assert a == b
    assert all(a[name] != c[name] for name in a if "leftImg8bit" in name)
    assert {name: four[name] for name in a} == a  # a frame does not depend on the frame count
    assert len(four) == 12


def test_smaller_frames_show_the_same_scene():
    def labels_at(size):
        return render_scene(np.random.default_rng(7), *size)[1]

    small, large = labels_at((256, 128)), labels_at((512, 256))
    agree = (large[1::2, 1::2] == small).mean()  # nearest-neighbour downscaling
    assert agree > 0.9
    other = render_scene(np.random.default_rng(8), 256, 128)[1]
    assert (other == small).mean() < agree


def test_class_statistics_look_like_cityscapes():
    counts = np.zeros(256)
    for k in range(12):
        image, ids = render_scene(np.random.default_rng(np.random.SeedSequence([3, k])), *SIZE)
        assert image.shape == (128, 256, 3) and image.dtype == np.uint8 and ids.dtype == np.uint8
        assert ids[-2, SIZE[0] // 2] == ID["ego vehicle"]  # the bonnet, at the bottom
        counts += np.bincount(ids.ravel(), minlength=256)
    share = {c.name: counts[c.id] / counts.sum() for c in labels.CLASSES if c.id >= 0}
    for big in ("road", "building", "vegetation", "sky"):
        for small in ("pole", "traffic sign", "person"):
            assert share[big] > share[small], (big, small)
    for name in ("road", "sidewalk", "building", "vegetation", "sky", "car", "pole", "person"):
        assert share[name] > 0, name
    assert share["road"] > 0.2 and share["building"] > 0.1
    assert 0.04 < counts[VOID_IDS].sum() / counts.sum() < 0.2


def test_resume_restores_a_missing_file_and_keeps_the_others(tmp_path):
    options = dict(size=SIZE, frames=2, seed=0, cities={"train": ("hamburg",)}, progress=False)
    generate(tmp_path, **options)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")}
    lost = layout.label_path(tmp_path, "train", "hamburg", "hamburg_000001_000019")
    original = lost.read_bytes()
    lost.unlink()
    summary = generate(tmp_path, **options)
    assert summary["written"] == 1 and summary["skipped"] == 1
    assert lost.read_bytes() == original
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p != lost)


def test_foreign_or_different_folders_are_refused(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="already holds other data"):
        generate(foreign, size=SIZE, frames=1, cities={"val": ("frankfurt",)}, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    ours = tmp_path / "ours"
    generate(ours, size=SIZE, frames=1, seed=0, cities={"val": ("frankfurt",)}, progress=False)
    with pytest.raises(DataError, match="seed"):
        generate(ours, size=SIZE, frames=1, seed=1, cities={"val": ("frankfurt",)},
                 progress=False)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cities": {"training": ("hamburg",)}}, "training"),
    ({"cities": {"train": ("Hamburg_1",)}}, "lowercase"),
    ({"cities": {"train": ()}}, "lowercase"),
    ({"frames": 0}, "positive"),
    ({"frames": 1, "cities": {"train": ("hamburg", "bremen")}}, "at least 2"),
    ({"size": (63, 32)}, "too small"),
    ({"size": (256.0, 128)}, "expected an integer"),
    ({"seed": -1}, "non-negative"),
])
def test_bad_parameters_are_refused_before_writing(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        generate(tmp_path / "out", **{"size": SIZE, "frames": 2, "progress": False, **kwargs})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (5, 7, 4)])
@pytest.mark.parametrize("photo", [True, False])
def test_png_encoder_round_trips(shape, photo):

    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(stdio.BytesIO(encode_png(array, photo)))), array)
