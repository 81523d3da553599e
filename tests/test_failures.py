"""What the user's machine does to a command (permissions, a full disk, sizes beyond its memory):
one line naming the path and what to do, exit status 2, nothing half-written left looking complete,
and the same command goes on once the cause is fixed.

Root ignores permissions, so the permission tests run the command in a forked process that drops
root's privileges (to ``nobody``), on files in a folder that user may reach; full disks are
simulated by writes that fail with ``ENOSPC``.
"""

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
import traceback
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from test_prepare import no_space_after

from segkit import layout
from segkit.cli import build_parser, main

NOBODY = 65534  # the unprivileged user and group of Debian and most other systems


def unprivileged(argv):
    """``main(argv)`` as a user without privileges, in a forked process: (exit status, stderr).

    A child of root drops to ``nobody`` first; another user's child keeps its own permissions,
    which already apply. An exception that escapes ``main`` comes back as status 99 and its
    traceback. The child imports nothing new where the interpreter lies in root's home (0700), so
    the tests have root run the same kind of command first (their fixtures do)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then end without running the parent's cleanup
        err = io.StringIO()
        try:
            os.close(read)
            torch.set_num_threads(1)  # the parent's thread pool does not survive the fork
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(argv)
                except BaseException:  # what escapes is what the test reports
                    code, _ = 99, traceback.print_exc(file=err)
            os.write(write, json.dumps([code, err.getvalue()]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        reply = pipe.read()
    os.waitpid(pid, 0)
    return tuple(json.loads(reply))


@contextlib.contextmanager
def folder_for_all():
    """A folder every user may write in (pytest's own are root's alone), removed afterwards. What
    root makes in it is read-only to others: folders 755, files 644."""
    folder = Path(tempfile.mkdtemp(prefix="segkit-shared-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def shared():
    with folder_for_all() as folder:
        yield folder


def copy_for_all(source, target):
    """A copy of ``source`` that every user may read (pytest's folders are root's alone)."""
    shutil.copytree(source, target)
    target.chmod(0o755)
    return target


def writable(*paths):
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)


def read_only(path):
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    return path


def assert_one_line(code, err, path, then="then run the same command again"):
    assert code == 2 and err.count("\n") == 1, err
    assert "Traceback" not in err and str(path) in err and then in err, err


needs_posix = pytest.mark.skipif(os.name != "posix", reason="fork and POSIX permissions")


@needs_posix
def test_prepare_into_a_folder_the_user_may_not_write_goes_on_once_it_may(synthetic_source,
                                                                         prepared_root, shared):
    source = copy_for_all(synthetic_source, shared / "source")
    parent = read_only(shared / "parent")
    command = ["prepare", "--source", str(source), "--out", str(parent / "pk"), "--workers", "0",
               "--quiet"]
    code, err = unprivileged(command)
    assert_one_line(code, err, parent / "pk")
    assert "permission denied" in err and not (parent / "pk").exists()
    writable(parent)
    assert unprivileged(command) == (0, "")
    assert (parent / "pk" / "manifest.json").is_file()


@pytest.fixture(scope="module")
def user_run(prepared_root, tiny_checkpoint):
    """Data, a checkpoint and a finished one-epoch run, root's and read-only to others."""
    with folder_for_all() as folder:
        data = copy_for_all(prepared_root, folder / "data")
        run = folder / "run"
        assert main(["train", "-m", "my_fcn", "--profile", "ci", "--data", str(data), "-n", "1",
                     "--max-iters", "1", "--batch-size", "2", "--out", str(run), "--quiet"]) == 0
        yield data, Path(shutil.copy(tiny_checkpoint, folder / "unet.pt")), run


@needs_posix
def test_train_into_a_folder_the_user_may_not_write_goes_on_once_it_may(user_run, shared):
    data, _, _ = user_run  # trained by root first: see ``unprivileged``
    parent = read_only(shared / "runs")
    command = ["train", "-m", "my_fcn", "--profile", "ci", "--data", str(data), "-n", "1",
               "--max-iters", "1", "--batch-size", "2", "--out", str(parent / "ck"), "--quiet"]
    code, err = unprivileged(command)
    assert_one_line(code, err, parent / "ck")
    writable(parent)
    assert unprivileged(command)[0] == 0
    assert (parent / "ck" / "last.pt").is_file()


@needs_posix
@pytest.mark.parametrize("case", ["continue", "log_dir", "predict", "save_labelids", "export",
                                  "data_root", "zip"])
def test_what_the_user_may_not_read_or_write_is_one_line_naming_it(user_run, shared, synthetic_source,
                                                                  case):
    data, checkpoint, run = user_run
    locked = read_only(shared / "locked")
    writable(shared / "mine")
    mine = shared / "mine"
    train = ["train", "-m", "my_fcn", "--profile", "ci", "--batch-size", "2", "-n", "1",
             "--max-iters", "1", "--quiet"]
    if case == "data_root":
        data = copy_for_all(data, shared / "root_only")
        data.chmod(0o700)
    if case == "zip":
        source = copy_for_all(synthetic_source, mine / "source")
        (source / layout.IMAGES_ZIP).chmod(0)
    commands = {
        "continue": (["train", "-m", "my_fcn", "-c", "-n", "2", "--out", str(run), "--quiet"], run),
        "log_dir": ([*train, "--data", str(data), "--out", str(mine / "ck"), "--log_dir",
                     str(locked / "tb")], locked / "tb"),
        "predict": (["predict", str(data / "leftImg8bit" / "val"), "--checkpoint", str(checkpoint),
                     "--out", str(locked / "p"), "--quiet"], locked / "p"),
        "save_labelids": (["test", "--checkpoint", str(checkpoint), "--data", str(data),
                           "--save-labelids", str(locked / "l")], locked / "l"),
        "export": (["export", "--checkpoint", str(checkpoint), "--out", str(locked / "m.onnx")],
                   locked / "m.onnx"),
        "data_root": ([*train, "--data", str(data), "--out", str(mine / "ck")], data),
        "zip": (["prepare", "--source", str(mine / "source"), "--out", str(mine / "pk"), "--quiet"],
                mine / "source" / layout.IMAGES_ZIP),
    }
    command, path = commands[case]
    code, err = unprivileged(command)
    assert_one_line(code, err, path)
    assert "permission denied" in err and "corrupt" not in err


def test_train_out_naming_a_file_is_one_line(prepared_root, tmp_path, capsys):
    (tmp_path / "ck").write_text("mine")
    assert main(["train", "-m", "my_fcn", "--profile", "ci", "--data", str(prepared_root),
                 "--out", str(tmp_path / "ck"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'ck'}: is a file, not a folder" in err
    assert (tmp_path / "ck").read_text() == "mine"


def full_disk_command(case, tmp_path, monkeypatch, tiny_checkpoint):
    """The command of ``case`` and the folder its full disk is met in."""
    monkeypatch.setenv("SEGKIT_DATA", str(tmp_path / "data"))
    photo = tmp_path / "photo.png"
    Image.new("RGB", (96, 48), (90, 120, 30)).save(photo)
    return {
        "synth": (["synth", "--out", str(tmp_path / "syn"), "--size", "128x64", "--frames", "2",
                   "--zips", "--quiet"], tmp_path / "syn"),
        "train_synthetic": (["train", "-m", "my_fcn", "--profile", "ci", "-n", "1", "--max-iters", "1",
                             "--batch-size", "2", "--out", str(tmp_path / "ck"), "--quiet"],
                            tmp_path / "data"),
        "predict": (["predict", str(photo), "--checkpoint", str(tiny_checkpoint), "--out",
                     str(tmp_path / "p"), "--quiet"], tmp_path / "p"),
        "export": (["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "m.onnx")],
                   tmp_path / "m.onnx"),
    }[case]


@pytest.mark.parametrize("case", ["synth", "train_synthetic", "predict", "export"])
def test_a_full_disk_is_one_line_and_the_same_command_goes_on_after(tmp_path, monkeypatch, capsys,
                                                                    tiny_checkpoint, case):
    command, where = full_disk_command(case, tmp_path, monkeypatch, tiny_checkpoint)
    if case == "export":  # the exporter's work is test_export's; here only its file is written
        pytest.importorskip("onnxscript")

        class Program:
            model = SimpleNamespace(metadata_props={})

            def save(self, path, **options):
                Path(path).write_bytes(b"half an ONNX file")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(torch.onnx, "export", lambda *args, **options: Program())
        monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 5000))
    else:
        no_space_after(monkeypatch, writes=2)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert_one_line(2, err, where)
    assert "the disk is full" in err and "5.0 KB free there" in err
    assert not list(tmp_path.rglob("*.partial")) and not (tmp_path / "m.onnx").exists()
    if case == "export":
        return  # nothing was left behind: exporting anew is test_export's
    monkeypatch.undo()
    monkeypatch.setenv("SEGKIT_DATA", str(tmp_path / "data"))
    assert main(command) == 0


@pytest.mark.parametrize("command", [["synth", "--size", "99999x99999"],
                                     ["prepare", "--source", "s", "--out", "o", "--size", "99999x99999"],
                                     ["export", "--checkpoint", "c", "--out", "o", "--size", "99999x99999"],
                                     ["train", "-m", "unet", "--size", "20000x10000"]])
def test_sizes_beyond_the_limit_are_refused_before_any_work_saying_how_to_raise_it(command, capsys,
                                                                                   monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(command)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "above segkit's limit of 16.8" in err and "Cityscapes frames are 2048x1024" in err
    width, height = map(int, command[-1].split("x"))
    assert f"SEGKIT_MAX_PIXELS={width * height}" in err
    monkeypatch.setenv("SEGKIT_MAX_PIXELS", str(width * height))
    assert build_parser().parse_args(command).size == (width, height)


@pytest.mark.parametrize("command", [["train", "-m", "my_fcn", "--gpu-memory", "-6"],
                                     ["plan", "--gpu-memory", "-6"], ["bench", "gpu", "--gpu-memory", "0"],
                                     ["train", "-m", "my_fcn", "-n", "0"],
                                     ["train", "-m", "my_fcn", "--seed", "4294967296"],
                                     ["train", "-m", "my_fcn", "--seed", str(2**70)]])
def test_impossible_numbers_are_usage_errors_naming_their_flag(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(command)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {command[-2]}" in err, err
    if command[-2] == "--seed" and command[-1].isdigit():
        assert "from 0 to 4294967295" in err  # 2**32 would repeat seed 0's run


def test_a_seed_beyond_numpys_range_is_refused_not_wrapped():
    from segkit.runtime import seed_everything

    with pytest.raises(ValueError, match="from 0 to 4294967295"):
        seed_everything(2**32)  # numpy would take it as 0, in silence


def test_a_write_that_fails_names_the_file_the_user_knows_and_leaves_nothing(tmp_path):
    from segkit.io import atomic_write

    with pytest.raises(OSError) as info, atomic_write(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a write's own error names no file
    assert info.value.filename == str(tmp_path / "out.bin")
    assert not any(tmp_path.iterdir())
