import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from segkit import labels, layout, prepare
from segkit.cli import main
from segkit.io import DataError, sha256

STEM = "hamburg_000000_000019"


def outputs(root):
    """Every file under root (relative path -> bytes), hidden bookkeeping files excepted."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def label_ids_of(root, split="train", city="hamburg", stem=STEM):
    return np.asarray(Image.open(layout.label_path(root, split, city, stem)))


def test_small_subset_from_zips_selects_hamburg_and_frankfurt(synthetic_source, tmp_path):
    result = prepare.prepare(synthetic_source, tmp_path / "out", subset="small", progress=False)
    assert result["source"]["kind"] == "zip"
    assert result["counts"] == {"train": {"hamburg": 3}, "val": {"frankfurt": 3}}
    files = outputs(tmp_path / "out")
    assert len(files) == 6 * 3
    assert f"gtFine/train/hamburg/{STEM}_gtFine_labelTrainIds.png" in files
    assert not any(name.startswith(("leftImg8bit/test", "gtFine/test")) for name in files)


def test_zip_and_folder_sources_give_identical_files(synthetic_source, tmp_path):
    folder_root = tmp_path / "folders"
    for top in ("leftImg8bit", "gtFine"):
        shutil.copytree(synthetic_source / top, folder_root / top)
    from_zip = prepare.prepare(synthetic_source, tmp_path / "a", size=(128, 64), progress=False)
    from_folder = prepare.prepare(folder_root, tmp_path / "b", size=(128, 64), progress=False)
    assert from_folder["source"]["kind"] == "folder"
    assert from_zip["files"] == from_folder["files"]
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")


def test_train_ids_match_the_official_table_exactly(prepared_root):
    lut = labels.id_to_train_id_lut()
    for path in prepared_root.glob("gtFine/*/*/*_gtFine_labelTrainIds.png"):
        train_ids = np.asarray(Image.open(path))
        label_ids = np.asarray(Image.open(str(path).replace("labelTrainIds", "labelIds")))
        assert np.array_equal(train_ids, lut[label_ids])
        assert set(np.unique(train_ids)) <= set(range(19)) | {255}


def test_unresized_copy_keeps_the_source_bytes(synthetic_source, prepared_root):
    for split, city in (("train", "hamburg"), ("test", "berlin")):
        stem = f"{city}_000001_000019"
        assert layout.image_path(prepared_root, split, city, stem).read_bytes() == \
            layout.image_path(synthetic_source, split, city, stem).read_bytes()


def test_full_subset_includes_the_unlabelled_test_split(prepared_root):
    manifest = json.loads((prepared_root / "manifest.json").read_text())
    assert manifest["counts"] == {"test": {"berlin": 3}, "train": {"hamburg": 3},
                                  "val": {"frankfurt": 3}}
    test_pixels = manifest["class_pixels"]["test"]
    assert sum(test_pixels[:19]) == 0 and test_pixels[19] == 3 * 256 * 128
    assert sum(manifest["class_pixels"]["train"]) == 3 * 256 * 128


def test_manifest_checksums_match_files(prepared_root):
    manifest = json.loads((prepared_root / "manifest.json").read_text())
    assert len(manifest["files"]) == 9 * 3
    for name, digest in manifest["files"].items():
        assert sha256((prepared_root / name).read_bytes()) == digest


def test_resize_uses_nearest_for_labels(synthetic_source, tmp_path):
    prepare.prepare(synthetic_source, tmp_path / "out", size=(100, 50), progress=False)
    image = Image.open(layout.image_path(tmp_path / "out", "train", "hamburg", STEM))
    assert image.size == (100, 50) and image.mode == "RGB"
    small = label_ids_of(tmp_path / "out")
    full = label_ids_of(synthetic_source)
    assert small.shape == (50, 100)
    assert set(np.unique(small)) <= set(np.unique(full))  # no invented in-between ids
    expected = np.asarray(Image.fromarray(full).resize((100, 50), Image.Resampling.NEAREST))
    assert np.array_equal(small, expected)


def test_rerun_is_idempotent(synthetic_source, tmp_path):
    out = tmp_path / "out"
    prepare.prepare(synthetic_source, out, progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    manifest = (out / "manifest.json").read_text()
    again = prepare.prepare(synthetic_source, out, progress=False)
    assert again["prepared_now"] == 0
    assert (out / "manifest.json").read_text() == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before


def test_rerun_redoes_a_frame_whose_file_was_damaged(synthetic_source, tmp_path, capsys):
    out = tmp_path / "out"
    first = prepare.prepare(synthetic_source, out, progress=False)
    image = layout.image_path(out, "train", "hamburg", STEM)
    good = image.read_bytes()
    os.truncate(image, 100)  # a copy or a disk cut short
    assert main(["prepare", "--source", str(synthetic_source), "--out", str(out), "--quiet"]) == 0
    assert "1 converted now, 1 of them redone" in capsys.readouterr().out
    assert image.read_bytes() == good
    with Image.open(image) as decoded:
        decoded.load()
    again = prepare.prepare(synthetic_source, out, progress=False)
    assert again["prepared_now"] == again["redone"] == 0 and again["files"] == first["files"]


def test_a_repair_cut_short_leaves_the_copy_unfinished_and_old_journals_are_checked_by_hash(
        synthetic_source, tmp_path, monkeypatch):
    out = tmp_path / "out"
    prepare.prepare(synthetic_source, out, progress=False)
    journal = out / prepare.JOURNAL
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "sizes"}) + "\n"
                               for r in records))  # as an earlier segkit wrote it
    assert prepare.prepare(synthetic_source, out, progress=False)["prepared_now"] == 0
    image = layout.image_path(out, "train", "hamburg", STEM)
    image.write_bytes(image.read_bytes()[::-1])  # same size, other bytes

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_convert_frame", interrupted)  # the repair is killed at once
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(synthetic_source, out, progress=False)
    with pytest.raises(DataError, match="did not finish here"):
        prepare.check_finished(out)
    monkeypatch.undo()
    assert prepare.prepare(synthetic_source, out, progress=False)["redone"] == 1
    prepare.check_finished(out)


def no_space_after(monkeypatch, writes):
    """Files fail half-written with ENOSPC after ``writes`` good ones; the disk reports 5 KB free."""
    import errno
    import pathlib

    real, count = pathlib.Path.write_bytes, []

    def write_bytes(path, data):
        if len(count) == writes:
            real(path, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        count.append(path)
        return real(path, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 5000))


def test_a_full_disk_is_one_line_with_the_space_needed_and_the_rerun_continues(
        synthetic_source, tmp_path, monkeypatch, capsys):
    reference = prepare.prepare(synthetic_source, tmp_path / "reference", subset="full",
                                progress=False)
    out = tmp_path / "out"
    no_space_after(monkeypatch, writes=1 + 3 * 4)  # the run marker, then 4 frames of 3 files
    assert main(["prepare", "--source", str(synthetic_source), "--out", str(out), "--subset", "full",
                 "--workers", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{out}: the disk is full: 5 of 9 frames still to write: about " in err
    assert "5.0 KB free there" in err and "run the same command again" in err
    per_frame = sum(sum(r["sizes"].values()) for r in prepare._read_journal(
        out / prepare.JOURNAL, out)[0].values()) / 4
    assert f"about {per_frame * 5 / 1000:.1f} KB needed" in err
    assert not list(out.rglob("*.partial")) and not (out / "manifest.json").exists()
    monkeypatch.undo()
    resumed = prepare.prepare(synthetic_source, out, subset="full", progress=False)
    assert resumed["prepared_now"] == 5 and resumed["files"] == reference["files"]


def test_interrupted_run_resumes_to_the_same_result(synthetic_source, tmp_path, monkeypatch):
    reference = prepare.prepare(synthetic_source, tmp_path / "reference", subset="full",
                                progress=False)
    convert, calls = prepare._convert_frame, []

    def convert_then_crash(args):
        if len(calls) == 4:
            _, out, _, _, frame = args
            # die half-way through a file, as a killed process would
            partial = layout.image_path(out, frame.split, frame.city, frame.stem)
            partial.parent.mkdir(parents=True, exist_ok=True)
            (partial.parent / f".{partial.name}.999.partial").write_bytes(b"\x89PNG half")
            raise KeyboardInterrupt
        calls.append(args)
        return convert(args)

    out = tmp_path / "out"
    monkeypatch.setattr(prepare, "_convert_frame", convert_then_crash)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(synthetic_source, out, subset="full", progress=False)
    assert not (out / "manifest.json").exists()
    assert len(list(out.rglob("*_leftImg8bit.png"))) == 4
    monkeypatch.setattr(prepare, "_convert_frame", convert)
    resumed = prepare.prepare(synthetic_source, out, subset="full", progress=False)
    assert resumed["prepared_now"] == 9 - 4
    assert resumed["files"] == reference["files"]
    assert not list(out.rglob("*.partial"))


def test_parallel_workers_give_the_same_manifest(synthetic_source, tmp_path):
    serial = prepare.prepare(synthetic_source, tmp_path / "a", subset="full", size=(128, 64),
                             progress=False)
    parallel = prepare.prepare(synthetic_source, tmp_path / "b", subset="full", size=(128, 64),
                               workers=2, progress=False)
    assert parallel["files"] == serial["files"]
    assert parallel["class_pixels"] == serial["class_pixels"]


def test_explicit_selection(synthetic_source, tmp_path):
    result = prepare.prepare(synthetic_source, tmp_path / "out", select={"val": ["frankfurt"]},
                             progress=False)
    assert result["counts"] == {"val": {"frankfurt": 3}}
    with pytest.raises(DataError, match="'munich' not found in split 'test'.*berlin"):
        prepare.prepare(synthetic_source, tmp_path / "other", select={"test": ["munich"]},
                        progress=False)


# --- bad input: a clear error naming the file, and nothing lost -------------------------------


def rewrite_zip(path, transform):
    """Rewrite a zip member by member; ``transform(info, data)`` returns (info, data) or None."""
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            result = transform(info, data)
            if result is not None:
                archive.writestr(*result)


def add_member(path, info):
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(info, b"x")


@pytest.mark.parametrize(("name", "problem"), [
    ("/etc/evil.png", "unsafe member"),
    ("gtFine/../../evil.png", "unsafe member"),
])
def test_zip_with_unsafe_member_paths_is_refused(source_copy, tmp_path, name, problem):
    add_member(source_copy / layout.LABELS_ZIP, zipfile.ZipInfo(name))
    with pytest.raises(DataError, match=f"{layout.LABELS_ZIP}: {problem}"):
        prepare.prepare(source_copy, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_zip_with_symlink_member_is_refused(source_copy, tmp_path):
    link = zipfile.ZipInfo("gtFine/train/hamburg/link.png")
    link.external_attr = 0o120777 << 16
    add_member(source_copy / layout.LABELS_ZIP, link)
    with pytest.raises(DataError, match="symbolic link"):
        prepare.prepare(source_copy, tmp_path / "out", progress=False)


def test_zip_naming_a_member_twice_is_refused(source_copy, tmp_path):
    images = source_copy / layout.IMAGES_ZIP
    train_frame = f"leftImg8bit/train/hamburg/{STEM}_leftImg8bit.png"
    val_frame = layout.image_path(source_copy, "val", "frankfurt", "frankfurt_000000_000019")
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(images, "a") as archive:
        archive.writestr(train_frame, val_frame.read_bytes())  # a val frame posing as hamburg's
    with pytest.raises(DataError, match=f"{layout.IMAGES_ZIP}: member {train_frame} appears 2 times"):
        prepare.prepare(source_copy, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_truncated_zip_is_refused(source_copy, tmp_path):
    path = source_copy / layout.IMAGES_ZIP
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=f"{layout.IMAGES_ZIP}: not a readable zip"):
        prepare.prepare(source_copy, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_corrupt_zip_member_is_named(source_copy, tmp_path):
    member = f"leftImg8bit/train/hamburg/{STEM}_leftImg8bit.png"

    def damage(info, data):
        if info.filename == member:
            data = data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:]
            info.CRC = zipfile.crc32(data)  # a consistent zip holding a damaged PNG
        return info, data

    rewrite_zip(source_copy / layout.IMAGES_ZIP, damage)
    with pytest.raises(DataError, match=f"{member}: cannot decode image"):
        prepare.prepare(source_copy, tmp_path / "out", progress=False)


def test_member_failing_its_crc_is_named(source_copy, tmp_path):
    path = source_copy / layout.LABELS_ZIP
    member = f"gtFine/train/hamburg/{STEM}_gtFine_labelIds.png"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 60
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"member {member} is corrupt"):
        prepare.prepare(source_copy, tmp_path / "out", progress=False)


def folder_source(source_copy):
    for name in (layout.IMAGES_ZIP, layout.LABELS_ZIP):
        (source_copy / name).unlink()
    return source_copy


def test_corrupt_png_in_folder_is_named(source_copy, tmp_path):
    root = folder_source(source_copy)
    path = layout.label_path(root, "val", "frankfurt", "frankfurt_000002_000019")
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=f"{path}: cannot decode image"):
        prepare.prepare(root, tmp_path / "out", progress=False)


def test_a_city_folder_linked_from_another_disk_is_followed(source_copy, tmp_path):
    root = folder_source(source_copy)
    for top in (layout.IMAGE_DIR, layout.LABEL_DIR):
        city, moved = root / top / "train" / "hamburg", tmp_path / "elsewhere" / top
        moved.parent.mkdir(exist_ok=True)
        city.rename(moved)
        city.symlink_to(moved, target_is_directory=True)
    result = prepare.prepare(root, tmp_path / "out", progress=False)
    assert result["counts"] == {"train": {"hamburg": 3}, "val": {"frankfurt": 3}}


def test_image_without_label_is_named(source_copy, tmp_path):
    root = folder_source(source_copy)
    layout.label_path(root, "train", "hamburg", STEM).unlink()
    with pytest.raises(DataError, match=f"image without label.*{STEM}_leftImg8bit.png"):
        prepare.prepare(root, tmp_path / "out", progress=False)


def test_label_without_image_is_named(source_copy, tmp_path):
    root = folder_source(source_copy)
    layout.image_path(root, "val", "frankfurt", "frankfurt_000001_000019").unlink()
    with pytest.raises(DataError, match="label without image.*frankfurt_000001_000019_gtFine"):
        prepare.prepare(root, tmp_path / "out", progress=False)


def test_label_id_outside_the_table_is_named(source_copy, tmp_path):
    root = folder_source(source_copy)
    path = layout.label_path(root, "train", "hamburg", STEM)
    ids = np.asarray(Image.open(path)).copy()
    ids[5, 5] = 40
    Image.fromarray(ids).save(path)
    with pytest.raises(DataError, match=rf"{path}: label ids \[40\] are not in"):
        prepare.prepare(root, tmp_path / "out", progress=False)


def test_image_and_label_of_different_sizes(source_copy, tmp_path):
    root = folder_source(source_copy)
    path = layout.label_path(root, "train", "hamburg", STEM)
    Image.open(path).resize((128, 64), Image.Resampling.NEAREST).save(path)
    with pytest.raises(DataError, match=f"{path}: label size .128, 64. differs"):
        prepare.prepare(root, tmp_path / "out", progress=False)


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare.prepare(tmp_path / "nowhere", tmp_path / "out", progress=False)
    (tmp_path / "empty" / "leftImg8bit").mkdir(parents=True)
    (tmp_path / "empty" / "gtFine").mkdir()
    with pytest.raises(DataError, match="no Cityscapes frames found"):
        prepare.prepare(tmp_path / "empty", tmp_path / "out", progress=False)
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="neither the official zips"):
        prepare.prepare(tmp_path / "other", tmp_path / "out", progress=False)


def test_only_one_zip_is_named(source_copy, tmp_path):
    for folder in ("leftImg8bit", "gtFine"):
        shutil.rmtree(source_copy / folder)
    (source_copy / layout.LABELS_ZIP).unlink()
    with pytest.raises(DataError, match=f"not {layout.LABELS_ZIP}"):
        prepare.prepare(source_copy, tmp_path / "out", progress=False)


def test_output_folder_with_other_data_is_never_touched(synthetic_source, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="already holds other data"):
        prepare.prepare(synthetic_source, out, progress=False)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    assert (out / "thesis.tex").read_text() == "precious"


def test_output_prepared_with_other_options_is_refused(synthetic_source, tmp_path):
    prepare.prepare(synthetic_source, tmp_path / "out", progress=False)
    before = outputs(tmp_path / "out")
    with pytest.raises(DataError, match="other options .*size"):
        prepare.prepare(synthetic_source, tmp_path / "out", size=(128, 64), progress=False)
    assert outputs(tmp_path / "out") == before


def test_cli_prepare_reports_bad_input_in_one_line(tmp_path, capsys):
    code = main(["prepare", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"),
                 "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "nowhere: source does not exist" in err


def test_cli_prepare_with_selection_and_size(synthetic_source, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["prepare", "--source", str(synthetic_source), "--out", str(out), "--quiet",
                 "--select", "train=hamburg", "--size", "64x32", "--workers", "0"])
    assert code == 0
    assert "prepared 3 frames" in capsys.readouterr().out
    assert Image.open(next(out.rglob("*_leftImg8bit.png"))).size == (64, 32)
    assert os.path.exists(out / "manifest.json")


def test_a_prepared_root_missing_a_file_is_refused_until_prepare_redoes_it(synthetic_source, tmp_path,
                                                                          capsys):
    out = tmp_path / "pk"
    prepare.prepare(synthetic_source, out, size=(128, 64), resample="area", progress=False)
    image = layout.image_path(out, "train", "hamburg", "hamburg_000001_000019")
    image.unlink()
    train = ["train", "-m", "my_fcn", "--profile", "ci", "--data", str(out), "-n", "1",
             "--out", str(tmp_path / "ck"), "--quiet"]
    assert main(train) == 2  # not trained on 2 of the 3 frames in silence
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"1 of the 18 files in its manifest.json are missing or changed ({image}" in err
    command = err.split("when run again: ")[1].split()
    assert command[:2] == ["segkit", "prepare"] and "--size 128x64 --resample area" in " ".join(command)
    assert main([*command[1:], "--quiet"]) == 0  # the advice, followed, works
    assert "1 converted now, 1 of them redone" in capsys.readouterr().out
    prepare.check_finished(out)


def test_an_unfinished_prepare_names_the_command_with_its_options(synthetic_source, tmp_path, capsys):
    out = tmp_path / "pk"
    prepare.prepare(synthetic_source, out, select={"train": ["hamburg"]}, size=(128, 64),
                    resample="area", progress=False)
    (out / prepare.MANIFEST).unlink()  # as a prepare killed before its end leaves it
    with pytest.raises(DataError) as info:
        prepare.check_finished(out)
    command = str(info.value).split("running the same command again: ")[1].split()
    assert main([*command[1:], "--quiet"]) == 0  # accepted as the same run, not refused as another
    prepare.check_finished(out)
