"""File helpers shared by the generator, preparation and the datasets.

Every file segkit writes goes through ``atomic_write`` (a hidden temporary name in the same folder,
then ``os.replace``), so an interrupted run never leaves a half-written file under its final name.
Output folders are claimed with ``claim_output_dir``, which refuses a folder holding anything that
segkit did not write there with the very same options.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

PARTIAL_SUFFIX = ".partial"


class DataError(Exception):
    """Bad input data or an unusable output folder; the message names the file and the problem."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, else delete it.

    An ``OSError`` of the writing (a full disk, a folder the user may not write to) is raised naming
    ``path``: a write's own error names no file, and the temporary one means nothing to the user.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        if error.errno is not None and error.filename in (None, str(tmp)):  # the system's own error
            error.filename = str(path)
        raise
    finally:
        with contextlib.suppress(OSError):  # a folder that refused the file refuses this too
            tmp.unlink(missing_ok=True)


def write_png(path: str | os.PathLike, array: np.ndarray, photo: bool = False) -> bytes:
    """Write an (H, W) or (H, W, C) uint8 array as PNG atomically (see ``encode_png``); return the bytes."""
    data = encode_png(array, photo)
    write_bytes(path, data)
    return data


def encode_png(array: np.ndarray, photo: bool = False) -> bytes:
    """Encode an (H, W), (H, W, 3) or (H, W, 4) uint8 array as an 8-bit PNG.

    Pillow picks a filter for every row by trying them all, which takes most of its writing time;
    this fixed choice writes several times faster at a similar size, and decodes faster too (which
    is what a training cache is read for): ``photo`` images get the "Sub" filter and Huffman-only
    coding (camera noise defeats string matching), label maps no filter and ordinary deflate. Any
    PNG reader reads the result.
    """
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    rows = np.ascontiguousarray(array).reshape(height, width * channels)
    lines = np.empty((height, width * channels + 1), np.uint8)  # each row starts with its filter
    lines[:, 0] = 1 if photo else 0
    lines[:, 1:channels + 1] = rows[:, :channels]
    if photo:
        np.subtract(rows[:, channels:], rows[:, :-channels], out=lines[:, channels + 1:])
    else:
        lines[:, channels + 1:] = rows[:, channels:]
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9,
                              zlib.Z_HUFFMAN_ONLY if photo else zlib.Z_DEFAULT_STRATEGY)
    data = packer.compress(lines.tobytes()) + packer.flush()
    colour_type = {1: 0, 3: 2, 4: 6}[channels]  # grey, RGB, RGBA
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in ((b"IHDR", header), (b"IDAT", data), (b"IEND", b"")))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def decode_image(data: bytes, name: str, mode: str | None = None) -> np.ndarray:
    """Decode image bytes into a numpy array; ``name`` is what the error message calls the file.

    ``mode`` converts the image (e.g. ``"RGB"``); label maps are read with ``mode=None`` and must be
    single-channel 8-bit.
    """
    if not data:
        raise DataError(f"{name}: an empty file (0 bytes), not an image; copy it again")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if mode is not None and image.mode != mode:
                image = image.convert(mode)
            return np.array(image)  # a writable copy, so torch can take it over
    except UnidentifiedImageError as error:  # its message names the in-memory buffer, not the file
        raise DataError(f"{name}: not an image Pillow can read ({len(data)} bytes)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{name}: cannot decode image ({error})") from error


def read_label_png(data: bytes, name: str) -> np.ndarray:
    """Decode a single-channel 8-bit label map (labelIds or trainIds) into an (H, W) uint8 array."""
    array = decode_image(data, name)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise DataError(f"{name}: a label map must be a single-channel 8-bit PNG, "
                        f"got shape {array.shape} and dtype {array.dtype}")
    return array


def load_tensors(path: str | os.PathLike, what: str) -> Any:
    """What ``torch.save`` wrote into ``path``, read onto the CPU safely (``weights_only=True``: plain
    tensors and data, never code); ``what`` names the file in the one-line ``DataError`` for a
    missing, damaged or foreign file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for damaged or foreign files
        # torch's own message advises weights_only=False, which would run whatever the file holds
        raise DataError(f"{path}: not a readable {what} ({_why_unreadable(error)}); it is damaged "
                        "or was written by another program") from error


def _why_unreadable(error: Exception) -> str:
    text = str(error)
    if "Unsupported global" in text or "weights_only" in text:
        return "it holds objects other than tensors and plain data, which a safe load refuses"
    return text.splitlines()[0] if text else type(error).__name__


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def remove_partials(root: Path) -> int:
    """Delete temporary files an interrupted run left under ``root``; return how many were there.

    A file already gone when its turn comes (another process cleaning the same folder) is fine.
    """
    partials = list(root.rglob(f".*{PARTIAL_SUFFIX}"))
    for path in partials:
        path.unlink(missing_ok=True)
    return len(partials)


def claim_output_dir(out: Path, marker: str, options: dict[str, Any]) -> bool:
    """Make ``out`` ours for a run with ``options``; return True when resuming an earlier run.

    ``out`` may be missing or empty (a fresh run), or hold ``marker`` written by an earlier run with
    the same options (a resumed or repeated run). Anything else is refused, so user data is never
    overwritten: a folder with other files, or one prepared with different options.
    """
    marker_path = out / marker
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: output path exists and is not a folder")
    if marker_path.is_file():
        try:
            earlier = json.loads(marker_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"{marker_path}: unreadable run marker ({error})") from error
        if earlier != options:
            changed = sorted(k for k in {*earlier, *options} if earlier.get(k) != options.get(k))
            raise DataError(f"{out}: holds a run with other options ({', '.join(changed)} differ); "
                            "choose another output folder or delete this one")
        remove_partials(out)
        return True
    if out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out}: output folder already holds other data; "
                        "choose an empty or new folder (nothing was written)")
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker_path, options)
    return False


def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KB"``, in the decimal units disks are sold in."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def free_bytes(folder: str | os.PathLike) -> int:
    """Free space on the disk holding ``folder`` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def is_disk_full(error: BaseException, folder: str | os.PathLike, needed: int) -> bool:
    """Whether a write of ``needed`` bytes into ``folder`` failed for want of space.

    ``OSError`` says so with ``ENOSPC`` (or ``EDQUOT``, a full quota); torch's zip writer does
    not (``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``), so any other
    ``OSError`` or ``RuntimeError`` counts as disk-full when the folder has less free space than the
    write needs. Call this after the temporary file is gone, so that it does not count as used.
    """
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(error, OSError | RuntimeError) and free_bytes(folder) < needed


def disk_full_error(folder: str | os.PathLike, what: str, needed: int, then: str) -> DataError:
    """The one-line ``DataError`` for a full disk: which folder, what needs how much, what to do."""
    return DataError(f"{folder}: the disk is full: {what}: about {format_bytes(needed)} needed, "
                     f"{format_bytes(free_bytes(folder))} free there; {then}")


#: What is wrong and what to do, for an ``OSError`` of the user's machine, by its ``errno``.
_OS_ADVICE = {
    errno.EACCES: "permission denied: choose a path you may read and write, or change its permissions",
    errno.EPERM: "not permitted: choose a path you may read and write, or change its permissions",
    errno.EROFS: "the file system is read-only: choose a path on a writable disk",
    errno.ENOSPC: "the disk is full: free some space, or choose a folder on another disk",
    errno.EDQUOT: "your disk quota is used up: free some space, or choose a folder on another disk",
    errno.EEXIST: "is in the way (it exists already): choose another path",
    errno.ENOTDIR: "a part of this path is a file, not a folder: choose another path",
    errno.EISDIR: "is a folder, where a file belongs: choose another path",
    errno.ENOENT: "no such file or folder: check the path",
}


def describe_os_error(error: OSError) -> str:
    """One line for an ``OSError`` of the environment (permissions, a full disk, a path in the way):
    the path, what is wrong, what to do, and that the same command then goes on."""
    where = error.filename if error.filename is not None else "segkit"
    advice = _OS_ADVICE.get(error.errno)
    if advice is None:
        return f"{where}: {error.strerror or error}"
    if error.errno in (errno.ENOSPC, errno.EDQUOT) and error.filename is not None:
        advice = f"{advice} ({format_bytes(free_bytes(Path(error.filename).parent))} free there)"
    return f"{where}: {advice}; then run the same command again"


#: The most pixels a frame size may ask for (8x Cityscapes' 2048x1024), unless the environment
#: variable ``SEGKIT_MAX_PIXELS`` allows more: beyond, one frame's arrays need gigabytes of memory,
#: and a typing slip (99999x99999) would run until the kernel kills the process.
MAX_PIXELS = 4096 * 4096


def check_frame_size(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` (width, height) if it is within ``MAX_PIXELS`` (or ``$SEGKIT_MAX_PIXELS``), else a
    ``ValueError`` saying the limit and how to raise it."""
    limit = int(os.environ.get("SEGKIT_MAX_PIXELS", MAX_PIXELS))
    width, height = size
    if width * height > limit:
        raise ValueError(f"size {width}x{height} is {width * height / 1e6:.1f} megapixels, above "
                         f"segkit's limit of {limit / 1e6:.1f} (Cityscapes frames are 2048x1024, "
                         "2.1): one frame's arrays would need gigabytes of memory; to allow it, set "
                         f"SEGKIT_MAX_PIXELS={width * height}")
    return size


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"WxH"`` (e.g. ``"2048x1024"``) into ``(width, height)``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like WIDTHxHEIGHT (e.g. 512x256), got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return width, height
