"""Prepare a training copy of Cityscapes from the official zips or extracted folders.

Preparation selects splits and cities, checks every frame (image and label present, decodable,
same size, label ids from the official table), converts labelIds to trainIds and writes a copy in
the official layout, optionally resized to a training resolution::

    OUT/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    OUT/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png        (official ids, resized nearest)
    OUT/gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png   (trainIds, 255 = ignore)
    OUT/manifest.json                                           (source, options, counts, checksums)

Members are read straight from the zips (nothing else is extracted). Every file is written under a
temporary name and renamed; a journal records finished frames with the size of every file written,
so an interrupted run resumes where it stopped, a repeated run does nothing, and a file that was
damaged or removed since (its size changed) has its frame redone. A full disk ends the run with one
line saying how much more space the remaining frames need; the next run continues.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import stat
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from segkit import __version__, labels, layout
from segkit.io import (
    DataError,
    claim_output_dir,
    decode_image,
    disk_full_error,
    is_disk_full,
    read_label_png,
    remove_partials,
    sha256,
    write_bytes,
    write_json,
    write_png,
)

MARKER = "prepare.json"
JOURNAL = "prepare.journal"
MANIFEST = "manifest.json"
RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "area": Image.Resampling.BOX}

_MEMBER = re.compile(
    r"^(?P<top>leftImg8bit|gtFine)/(?P<split>train|val|test)/(?P<city>[a-z_]+)/"
    r"(?P<stem>(?P=city)_\d{6}_\d{6})_(?P<kind>leftImg8bit|gtFine_labelIds)\.png$"
)


@dataclass(frozen=True)
class Frame:
    """One frame of the source: where its image and label files are (member names or paths)."""

    split: str
    city: str
    stem: str
    image: str
    label: str


class Source:
    """The official data as two zips or as an extracted root; opened lazily, safe to pickle."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).resolve()
        if not self.path.exists():
            raise DataError(f"{path}: source does not exist")
        zips = [self.path / layout.IMAGES_ZIP, self.path / layout.LABELS_ZIP]
        folders = [self.path / layout.IMAGE_DIR, self.path / layout.LABEL_DIR]
        if any(p.is_file() for p in zips):
            missing = [p.name for p in zips if not p.is_file()]
            if missing:
                raise DataError(f"{self.path}: found one official zip but not {missing[0]}")
            self.kind, self._zip_paths = "zip", zips
        elif all(p.is_dir() for p in folders):
            self.kind, self._zip_paths = "folder", []
        else:
            raise DataError(f"{self.path}: holds neither the official zips ({layout.IMAGES_ZIP}, "
                            f"{layout.LABELS_ZIP}) nor extracted leftImg8bit/ and gtFine/ folders")
        self._open: dict[str, zipfile.ZipFile] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}  # zip handles stay in the process that opened them

    def describe(self) -> dict:
        """Plain data saying where the frames come from, for the manifest."""
        return {"kind": self.kind, "path": str(self.path)}

    def frames(self) -> list[Frame]:
        """Every frame found, paired image + label; unpaired files are an error."""
        found: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
        for name in self._names():
            match = _MEMBER.match(name)
            if match:
                key = (match["split"], match["city"], match["stem"])
                found[key][match["kind"]] = name
        if not found:
            raise DataError(f"{self.path}: no Cityscapes frames found "
                            f"(expected leftImg8bit/{{split}}/{{city}}/*{layout.IMAGE_SUFFIX})")
        unpaired = sorted(next(iter(files.values())) for files in found.values() if len(files) < 2)
        if unpaired:
            shown = ", ".join(unpaired[:3]) + (f" and {len(unpaired) - 3} more" * (len(unpaired) > 3))
            raise DataError(f"{self.path}: image without label or label without image: {shown}")
        return [Frame(split, city, stem, files["leftImg8bit"], files["gtFine_labelIds"])
                for (split, city, stem), files in sorted(found.items())]

    def size(self, name: str) -> int:
        """The byte size of one member or file (uncompressed)."""
        if self.kind == "folder":
            return (self.path / name).stat().st_size
        zip_name = layout.IMAGES_ZIP if name.startswith(layout.IMAGE_DIR) else layout.LABELS_ZIP
        return self._zip(zip_name).getinfo(name).file_size

    def read(self, name: str) -> bytes:
        """The bytes of one member or file, with errors that name the zip and member."""
        if self.kind == "folder":
            try:
                return (self.path / name).read_bytes()
            except OSError as error:
                raise DataError(f"{self.path / name}: cannot read ({error.strerror})") from error
        archive = self._zip(layout.IMAGES_ZIP if name.startswith(layout.IMAGE_DIR)
                            else layout.LABELS_ZIP)
        try:
            return archive.read(name)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise DataError(f"{archive.filename}: member {name} is corrupt ({error})") from error

    def _names(self) -> Iterable[str]:
        if self.kind == "zip":
            for zip_path in self._zip_paths:
                yield from self._zip(zip_path.name).namelist()
            return
        for top in (layout.IMAGE_DIR, layout.LABEL_DIR):
            # {split}/{city}/*.png: a glob of fixed depth follows folders that are symbolic links
            # (rglob does not), as a city linked in from another disk is
            for path in sorted((self.path / top).glob("*/*/*.png")):
                yield path.relative_to(self.path).as_posix()

    def _zip(self, name: str) -> zipfile.ZipFile:
        if name not in self._open:
            self._open[name] = open_zip(self.path / name)
        return self._open[name]


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open an official zip, refusing corrupt archives and members that could escape a folder."""
    try:
        archive = zipfile.ZipFile(path)
    except PermissionError:
        raise  # the user's permissions, not the zip: the command line says so
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{path}: not a readable zip file, truncated or corrupt ({error})") from error
    names = Counter(info.filename for info in archive.infolist())
    twice = sorted(name for name, count in names.items() if count > 1)
    if twice:  # zipfile would read the last copy: one frame's image could pass for another's
        raise DataError(f"{path}: member {twice[0]} appears {names[twice[0]]} times"
                        + (f" ({len(twice) - 1} more names too)" if len(twice) > 1 else "")
                        + "; a zip must name every file once: it is damaged or was assembled wrong")
    for info in archive.infolist():
        member = PurePosixPath(info.filename.replace("\\", "/"))
        if member.is_absolute() or ".." in member.parts or re.match(r"^[A-Za-z]:", info.filename):
            raise DataError(f"{path}: unsafe member path {info.filename!r} (absolute or '..')")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{path}: member {info.filename!r} is a symbolic link; refusing it")
    return archive


def select_frames(frames: Sequence[Frame], selection: Mapping[str, Sequence[str] | None]
                  ) -> list[Frame]:
    """Keep the frames of the selected splits and cities (``None`` = every city of that split).

    Raises ``DataError`` when a requested split or city is not in the source.
    """
    available: dict[str, set[str]] = defaultdict(set)
    for frame in frames:
        available[frame.split].add(frame.city)
    wanted: set[tuple[str, str]] = set()
    for split, cities in selection.items():
        if split not in layout.SPLITS:
            raise DataError(f"unknown split {split!r}; choose from {', '.join(layout.SPLITS)}")
        if cities is None:
            wanted |= {(split, city) for city in available[split]}
            continue
        for city in cities:
            if city not in available[split]:
                found = ", ".join(sorted(available[split])) or "none"
                raise DataError(f"city {city!r} not found in split {split!r} of the source "
                                f"(cities there: {found})")
            wanted.add((split, city))
    return [f for f in frames if (f.split, f.city) in wanted]


def resolve_selection(subset: str | None = "small",
                      select: Mapping[str, Sequence[str] | None] | None = None
                      ) -> dict[str, list[str] | None]:
    """The split -> cities mapping from a preset name or an explicit mapping (which wins)."""
    if select:
        return {split: None if cities is None else list(cities) for split, cities in select.items()}
    if subset not in layout.SUBSETS:
        raise KeyError(f"unknown subset {subset!r}; choose one of {', '.join(layout.SUBSETS)}")
    return {split: None if c is None else list(c) for split, c in layout.SUBSETS[subset].items()}


def prepare(source: str | os.PathLike, out: str | os.PathLike, *, subset: str | None = "small",
            select: Mapping[str, Sequence[str] | None] | None = None,
            size: tuple[int, int] | None = None, resample: str = "bilinear", workers: int = 0,
            progress: bool = True) -> dict:
    """Prepare the selected frames of ``source`` into ``out``; return the manifest.

    The returned manifest also says how many frames were converted now (``prepared_now``) and how many of
    those an earlier run had finished but whose files were missing or had changed size since
    (``redone``). A full disk raises ``DataError`` naming ``out`` and the space still needed.

    Args:
        source: folder with the two official zips, or an extracted root (leftImg8bit/, gtFine/).
        out: output folder; must be new or empty, or hold an earlier run with the same options.
        subset: preset name ("small": train hamburg + val frankfurt; "full": every city).
        select: explicit ``{split: [cities] or None}``, overriding ``subset``.
        size: ``(width, height)`` to resize to (images ``resample``, labels nearest); None keeps.
        resample: image filter when resizing: "bilinear" or "area".
        workers: processes converting frames in parallel (0 = in this process).
    """
    if resample not in RESAMPLING:
        raise KeyError(f"unknown resample {resample!r}; choose one of {', '.join(RESAMPLING)}")
    src = Source(source)
    selection = resolve_selection(subset, select)
    frames = select_frames(src.frames(), selection)
    out = Path(out)
    options = {"source": src.describe(), "selection": selection,
               "size": list(size) if size else None, "resample": resample}
    done: dict[str, dict] = {}
    started = time.perf_counter()
    try:
        claim_output_dir(out, MARKER, options)
        done, redone = _read_journal(out / JOURNAL, out)
        todo = [f for f in frames if f.stem not in done]
        if todo:  # a finished copy being repaired must not read as finished until it is again
            (out / MANIFEST).unlink(missing_ok=True)
        with _frame_results(src, out, size, resample, todo, workers) as results, \
                open(out / JOURNAL, "a") as journal:
            for record in tqdm(results, total=len(todo), desc="prepare", unit="frame",
                               disable=not progress):
                journal.write(json.dumps(record) + "\n")
                journal.flush()
                done[record["stem"]] = record
        manifest = _manifest(options, [done[f.stem] for f in frames])
        write_json(out / MANIFEST, manifest)
    except OSError as error:
        if not is_disk_full(error, out, 0):
            raise
        if out.is_dir():
            remove_partials(out)  # files that stopped workers left half-written: their space back
        raise _disk_full(out, src, frames, done) from error
    seconds = time.perf_counter() - started
    return {**manifest, "prepared_now": len(todo), "redone": redone, "seconds": seconds}


def _disk_full(out: Path, src: Source, frames: list[Frame], done: dict[str, dict]
               ) -> DataError:
    """The one-line error for a full disk, with the space the frames not yet written need: the mean
    size of the frames written so far times those left (before any, from the sources' sizes)."""
    left = [f for f in frames if f.stem not in done]
    written = [sum(r["sizes"].values()) for r in done.values() if "sizes" in r]
    if not written:  # nothing written yet: a frame's files are about its image and two labels
        written = [src.size(f.image) + 2 * src.size(f.label) for f in left[:8]]
    needed = round(sum(written) / max(1, len(written)) * len(left))
    return disk_full_error(out, f"{len(left)} of {len(frames)} frames still to write", needed,
                           "free some space (or choose --out on a larger disk) and run the same "
                           "command again: it continues where it stopped")


class _frame_results:
    """Context manager yielding one journal record per converted frame, in order of completion."""

    def __init__(self, src: Source, out: Path, size, resample: str, frames: list[Frame],
                 workers: int):
        self.args = [(src, out, size, resample, frame) for frame in frames]
        self.pool = (multiprocessing.Pool(workers, initializer=_leave_interrupts_to_the_parent)
                     if workers > 1 and len(frames) > 1 else None)

    def __enter__(self) -> Iterable[dict]:
        if self.pool is None:
            return (_convert_frame(args) for args in self.args)
        return self.pool.imap_unordered(_convert_frame, self.args, chunksize=4)

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def _leave_interrupts_to_the_parent() -> None:
    """Ctrl-C reaches every process of the terminal: the workers ignore it and the main process,
    which stops them, says it in one line (rather than a traceback from every worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _convert_frame(args) -> dict:
    """Check, convert and write one frame; return its journal record."""
    src, out, size, resample, frame = args
    image_bytes, label_bytes = src.read(frame.image), src.read(frame.label)
    image_name, label_name = _where(src, frame.image), _where(src, frame.label)
    image = decode_image(image_bytes, image_name, mode="RGB")
    label_ids = read_label_png(label_bytes, label_name)
    if image.shape[:2] != label_ids.shape:
        raise DataError(f"{label_name}: label size {label_ids.shape[::-1]} differs from its image "
                        f"{image_name} size {image.shape[1::-1]}")
    histogram = np.bincount(label_ids.ravel(), minlength=256)
    unknown = sorted(set(np.flatnonzero(histogram).tolist()) - labels.VALID_LABEL_IDS)
    if unknown:
        raise DataError(f"{label_name}: label ids {unknown} are not in the Cityscapes label table")
    if size is not None and tuple(size) != image.shape[1::-1]:
        image = np.asarray(Image.fromarray(image).resize(tuple(size), RESAMPLING[resample]))
        label_ids = np.asarray(Image.fromarray(label_ids).resize(tuple(size),
                                                                 Image.Resampling.NEAREST))
        image_bytes = label_bytes = None  # re-encode what was resized
    train_ids = labels.id_to_train_id_lut()[label_ids]
    outputs = {
        layout.image_path(out, frame.split, frame.city, frame.stem): (image_bytes, image, True),
        layout.label_path(out, frame.split, frame.city, frame.stem): (label_bytes, label_ids, False),
        layout.label_path(out, frame.split, frame.city, frame.stem, layout.TRAIN_IDS_SUFFIX):
            (None, train_ids, False),
    }
    written = {path.relative_to(out).as_posix(): _write_file(path, *spec)
               for path, spec in outputs.items()}
    return {**asdict(frame), "files": {name: sha256(data) for name, data in written.items()},
            "sizes": {name: len(data) for name, data in written.items()},
            "class_pixels": labels.label_histogram([train_ids]).tolist()}  # the classes, then ignore


def _write_file(path: Path, data: bytes | None, array: np.ndarray, photo: bool) -> bytes:
    """Write the source bytes when unchanged, else encode ``array``; return the bytes written."""
    if data is not None:
        write_bytes(path, data)
        return data
    return write_png(path, array, photo=photo)


def _where(src: Source, name: str) -> str:
    """How an error message names a member or file of the source."""
    if src.kind == "folder":
        return str(src.path / name)
    zip_name = layout.IMAGES_ZIP if name.startswith(layout.IMAGE_DIR) else layout.LABELS_ZIP
    return f"{src.path / zip_name}:{name}"


def _read_journal(path: Path, out: Path) -> tuple[dict[str, dict], int]:
    """Records of frames an earlier run finished whose files are all still intact, and how many
    recorded frames are not (their files missing or changed: to be redone)."""
    records = _journal_records(path)
    done = {stem: record for stem, record in records.items() if _intact(out, record)}
    return done, len(records) - len(done)


def _journal_records(path: Path) -> dict[str, dict]:
    """The journal's latest record of every frame (a frame redone later: its latest record counts)."""
    if not path.exists():
        return {}
    records = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interruption: that frame is simply redone
        records[record["stem"]] = record
    return records


def _intact(out: Path, record: dict) -> bool:
    """Whether every file of a journal record is there with the size it was written with.

    Files are renamed into place only once complete, so what damages one afterwards is a copy or a
    disk cut short, or an emptied file: a size check (one ``stat`` per file) catches those on every
    re-run without reading the whole copy again. Records of older versions, without sizes, are
    checked against their SHA-256.
    """
    sizes = record.get("sizes")
    for name, digest in record["files"].items():
        try:
            if sizes is None:
                intact = sha256((out / name).read_bytes()) == digest
            else:
                intact = (out / name).stat().st_size == sizes[name]
        except (OSError, KeyError):
            return False
        if not intact:
            return False
    return True


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest ``prepare`` wrote into ``root``, or None where there is none (not prepared)."""
    path = Path(root, MANIFEST)
    return json.loads(path.read_text()) if path.is_file() else None


def check_finished(root: str | os.PathLike) -> None:
    """Refuse a root that ``prepare`` began but did not finish (killed, or out of space: its marker
    is there, its manifest is not), or one with files of the manifest's missing or changed in size
    since (a deleted frame would otherwise be trained without, in silence). One ``stat`` a file,
    against the sizes in the journal. Official roots pass."""
    root = Path(root)
    if not (root / MARKER).is_file():
        return
    if not (root / MANIFEST).is_file():
        raise DataError(f"{root}: segkit prepare did not finish here (no {MANIFEST}); finish it by "
                        f"running the same command again: {prepare_command(root)}")
    sizes = {name: size for record in _journal_records(root / JOURNAL).values()
             for name, size in record.get("sizes", {}).items()}
    files = read_manifest(root)["files"]
    damaged = [name for name in files if not _as_written(root / name, sizes.get(name))]
    if damaged:
        raise DataError(f"{root}: {len(damaged)} of the {len(files)} files in its {MANIFEST} are "
                        f"missing or changed ({root / damaged[0]} among them); segkit prepare "
                        f"redoes them when run again: {prepare_command(root)}")


def _as_written(path: Path, size: int | None) -> bool:
    """Whether ``path`` is there, with ``size`` bytes where the journal recorded it."""
    try:
        written = path.stat().st_size
    except FileNotFoundError:
        return False
    return size is None or written == size


def prepare_command(root: Path) -> str:
    """The ``segkit prepare`` command that made ``root`` (from its marker), to run again: the same
    options, or the run is refused as another one."""
    options = json.loads((root / MARKER).read_text())
    source = options.get("source", {})
    source = source.get("path", "SOURCE") if isinstance(source, dict) else "SOURCE"
    selection = options.get("selection") or {}
    presets = [name for name in layout.SUBSETS if resolve_selection(name) == selection]
    if not presets and None in selection.values():  # every city of some splits: only the library
        return f"segkit.prepare.prepare({source!r}, {str(root)!r}, select={selection!r}, ...)"
    words = ["segkit prepare --source", source, "--out", str(root)]
    if presets:
        words += [] if presets[0] == "small" else ["--subset", presets[0]]
    else:
        words += ["--select", *(f"{split}={','.join(cities)}" for split, cities in selection.items())]
    if options.get("size"):
        words += ["--size", "x".join(map(str, options["size"]))]
    if options.get("resample", "bilinear") != "bilinear":
        words += ["--resample", options["resample"]]
    return " ".join(words)


def _manifest(options: dict, records: list[dict]) -> dict:
    """The manifest: source, options, counts per split and city, class pixels, file checksums."""
    counts: dict[str, Counter] = defaultdict(Counter)
    class_pixels: dict[str, np.ndarray] = {}
    files: dict[str, str] = {}
    for record in records:
        counts[record["split"]][record["city"]] += 1
        pixels = np.asarray(record["class_pixels"], dtype=np.int64)
        class_pixels[record["split"]] = class_pixels.get(record["split"], 0) + pixels
        files.update(record["files"])
    return {
        "format": "segkit-prepared/1",
        "segkit_version": __version__,
        "source": options["source"],
        "options": {k: v for k, v in options.items() if k != "source"},
        "counts": {split: dict(sorted(c.items())) for split, c in sorted(counts.items())},
        "class_names": [*labels.CLASS_NAMES, "ignore"],
        "class_pixels": {split: p.tolist() for split, p in sorted(class_pixels.items())},
        "files": dict(sorted(files.items())),
    }
