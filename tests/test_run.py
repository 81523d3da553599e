"""A run's folder has one owner: ``segkit train`` and the notebooks' ``train_model`` alike claim it,
record it in ``run.json``, continue it as recorded and never delete or overwrite what it holds."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from test_budget import Ticks

from segkit import course as course_module
from segkit import training
from segkit.budget import format_duration, parse_duration
from segkit.checkpoints import load_checkpoint
from segkit.cli import main
from segkit.config import TrainConfig
from segkit.io import DataError
from segkit.run import RUN_RECORD, _stretched_note, claim, read_record, set_aside
from segkit.runtime import autocast_dtype, precision_name


@pytest.fixture
def ci_course(monkeypatch, tmp_path, prepared_root):
    """The ``ci`` course in a fresh home, on the session's prepared set; the warning format and
    the random state are left as they were."""
    import warnings

    monkeypatch.setenv("SEGKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(course_module.Course, "data", property(lambda self: prepared_root))
    monkeypatch.setattr(course_module, "seed_everything", lambda seed: None)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    with warnings.catch_warnings():
        yield course_module.setup("ci")


QUICK = {"epochs": 1, "max_iters": 1, "batch_size": 2, "live": False}


def test_train_model_is_segkit_train_and_keeps_the_recipe(ci_course):
    _, state = course_module.train_model(ci_course, "my_fcn", label_scheme="original20", **QUICK)
    out = ci_course.run_dir("my_fcn")
    record = read_record(out)
    assert record["config"]["label_scheme"] == "original20"  # once ignored by the notebooks
    assert load_checkpoint(out / "best.pt")["model_options"]["num_classes"] == 20
    assert record["status"] == "finished" and record["images_seen"] == state.images_seen == 2
    chosen = precision_name(autocast_dtype(ci_course.config("my_fcn").amp, torch.device("cpu")))
    assert record["precision"] == chosen and record["peak_mb"] > 0 and record["img_per_s"] > 0
    assert (out / "tensorboard").is_dir()


def test_train_model_sets_an_earlier_run_aside_and_continues_its_own(ci_course, capsys):
    course_module.train_model(ci_course, "my_fcn", **QUICK)
    out = ci_course.run_dir("my_fcn")
    first = (out / "best.pt").read_bytes()
    course_module.train_model(ci_course, "my_fcn", **QUICK)
    earlier = [p for p in out.parent.iterdir() if p.name.startswith("my_fcn-")]
    assert len(earlier) == 1 and (earlier[0] / "best.pt").read_bytes() == first
    assert f"moved to {earlier[0]}" in capsys.readouterr().out
    _, state = course_module.train_model(ci_course, "my_fcn", resume=True,
                                         **{**QUICK, "epochs": 2})
    assert state.epoch == 2 and len(read_record(out)["history"]) == 2
    assert len([p for p in out.parent.iterdir() if p.name.startswith("my_fcn-")]) == 1


def test_a_folder_that_is_not_a_segkit_run_is_neither_set_aside_nor_claimed(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / RUN_RECORD).write_text(json.dumps({"history": []}))  # someone else's run.json
    assert set_aside(folder) is None and folder.is_dir()
    with pytest.raises(DataError, match="not empty"):
        claim(folder)
    claim(tmp_path / "new")  # a new folder is fine, and is not created by claiming it
    assert not (tmp_path / "new").exists()


def _train(*flags):
    return main(["train", "-m", "my_fcn", "--batch-size", "2", "--quiet", *flags])


def _budget(seconds):
    return ["--time-budget", f"{math.ceil(seconds)}s"]


@pytest.fixture
def ticking(monkeypatch):
    """``segkit train`` on the deterministic clock of the exact-resume test (one second a batch),
    so that what a budget allows does not depend on how fast or busy the machine is."""
    ticks = Ticks(monkeypatch)
    real_fit = training.fit

    def fit_on_ticks(net, train_loader, val_loader, config, callbacks, **options):
        return real_fit(net, train_loader, val_loader, config, [*callbacks, ticks], **options)

    monkeypatch.setattr(training, "fit", fit_on_ticks)
    return ticks


def test_a_time_budget_run_ends_and_continues_with_more_minutes(prepared_root, tmp_path, capsys,
                                                                ticking):
    def train(*flags):  # batches of one: three steps an epoch, each epoch validated
        return _train(*flags, "--batch-size", "1")

    out = tmp_path / "ck"
    assert train("--profile", "ci", "--data", str(prepared_root), "--time-budget", "4s",
                 "--scheduler", "linear", "--out", str(out), "--log-dir", str(tmp_path / "tb")) == 0
    printed = capsys.readouterr().out
    assert "a 4 s budget of 128x64 crops" in printed and "time budget 4 s spent" in printed
    record = read_record(out)
    assert record["plan"]["done"] and record["status"] == "finished"
    spent = record["train_seconds"]

    assert train("--out", str(out), "-c") == 2
    err = capsys.readouterr().err
    assert "this run is finished" in err and "-c --time-budget " in err
    assert train("--out", str(out), "-c", "-n", "9") == 2
    assert "planned by a time budget; continue it the same way (--time-budget)" in capsys.readouterr().err
    more = _budget(spent + 6)
    assert train("--out", str(out), "-c", *more) == 0
    assert f"re-planned over {format_duration(parse_duration(more[1]))}" in capsys.readouterr().out
    continued = load_checkpoint(out / "last.pt")
    assert continued["seconds"] > spent and continued["plan"]["done"]
    assert continued["step"] >= record["history"][-1]["step"] + 5  # trained on, not one step and out
    assert continued["config"]["time_budget"] == parse_duration(more[1])


def test_an_epochs_run_refuses_a_time_budget_on_continuing(prepared_root, tmp_path, capsys):
    out = tmp_path / "ck"
    assert _train("--profile", "ci", "--data", str(prepared_root), "-n", "1", "--max-iters", "1",
                  "--out", str(out), "--log-dir", str(tmp_path / "tb")) == 0
    copy = shutil.copytree(out, tmp_path / "copy")
    assert _train("--out", str(copy), "-c", "--time-budget", "1m") == 2
    assert "planned by epochs; continue it the same way (-n)" in capsys.readouterr().err


def test_continue_keeps_the_recorded_profile_and_refuses_another(prepared_root, tmp_path, capsys):
    out = tmp_path / "ck"
    assert _train("--profile", "ci", "--data", str(prepared_root), "-n", "1", "--max-iters", "1",
                  "--out", str(out), "--log-dir", str(tmp_path / "tb")) == 0
    assert _train("--profile", "cpu", "--out", str(out), "-c", "-n", "2") == 2
    assert "trained with --profile ci, not cpu" in capsys.readouterr().err
    assert _train("--out", str(out), "-c", "-n", "2", "--max-iters", "1") == 0
    assert "profile ci;" in capsys.readouterr().out  # the header names the run's own profile


def test_continuing_a_constant_schedule_with_more_minutes_says_no_decay():
    recorded = TrainConfig(time_budget=60.0, scheduler="none")
    note = _stretched_note(recorded, recorded.replace(time_budget=120.0), {"seconds": 60.0})
    assert "re-planned over 2.0 min" in note and "decays" not in note and "schedule" not in note
    linear = recorded.replace(scheduler="linear")
    assert "about 50% of its peak" in _stretched_note(linear, linear.replace(time_budget=120.0),
                                                      {"seconds": 60.0})


def _ci(data, out, *flags):
    return _train("--profile", "ci", "--data", str(data), "-n", "1", "--max-iters", "1",
                  "--out", str(out), *flags)


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_trains(prepared_root, tmp_path,
                                                                            capsys, monkeypatch):
    out, second = tmp_path / "ck", []
    check = training.check_finished

    def second_run_starts(root):  # the first run holds the folder, and has written nothing yet
        if not second:
            second.append("started")
            second.append(_ci(prepared_root, out, "--seed", "2"))
        return check(root)

    monkeypatch.setattr(training, "check_finished", second_run_starts)
    assert _ci(prepared_root, out, "--seed", "1") == 0
    assert second == ["started", 2]
    assert f"{out}: another segkit run is training into this folder (pid " in capsys.readouterr().err
    assert load_checkpoint(out / "last.pt")["config"]["seed"] == 1 == read_record(out)["config"]["seed"]


def test_the_data_is_recorded_absolute_and_continued_from_anywhere(prepared_root, tmp_path, capsys,
                                                                   monkeypatch):
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "tdata").symlink_to(prepared_root)
    (tmp_path / "elsewhere" / "tdata").mkdir(parents=True)  # another data set by the same name
    monkeypatch.chdir(tmp_path / "here")
    assert _ci("tdata", "ck") == 0
    recorded = read_record(tmp_path / "here" / "ck")["config"]["data"]
    assert recorded == str(tmp_path / "here" / "tdata")
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert _train("--out", "../here/ck", "-c", "-n", "2", "--max-iters", "1") == 0
    assert f"on {recorded}:" in capsys.readouterr().out
    assert main(["test", "--checkpoint", "../here/ck/last.pt"]) == 0
    assert f"on {recorded} val" in capsys.readouterr().out


def test_a_run_stopped_before_its_first_checkpoint_starts_again_with_the_same_command(
        prepared_root, tmp_path, capsys, monkeypatch):
    import errno
    import os

    out = tmp_path / "ck"
    real_save = torch.save

    def full_disk(obj, file):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    assert _ci(prepared_root, out) == 2
    assert "free some space and train again" in capsys.readouterr().err
    assert read_record(out)["status"] == "stopped"  # not left saying "running"
    monkeypatch.setattr(torch, "save", real_save)
    assert _train("--out", str(out), "-c") == 2
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    assert _ci(prepared_root, out) == 0  # the advice followed: the same command again
    assert "held a run that stopped before its first checkpoint" in capsys.readouterr().out
    assert read_record(out)["status"] == "finished"


def test_ctrl_c_is_one_line_the_record_says_stopped_and_c_goes_on(prepared_root, tmp_path, capsys,
                                                                  monkeypatch):
    out = tmp_path / "ck"
    assert _ci(prepared_root, out) == 0

    class CtrlC(training.PrintMetrics):
        def on_batch_end(self, state):
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "PrintMetrics", CtrlC)
    try:
        code = _train("--out", str(out), "-c", "-n", "2", "--max-iters", "1")
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a traceback")
    err = capsys.readouterr().err
    assert code == 130 and err.count("\n") == 1 and "interrupted (Ctrl-C)" in err
    assert "last.pt keeps the last epoch saved: continue it with the same command and -c" in err
    assert read_record(out)["status"] == "stopped" and "Ctrl-C" in read_record(out)["stopped"]
    monkeypatch.undo()
    assert _train("--out", str(out), "-c", "-n", "2", "--max-iters", "1") == 0
    assert read_record(out)["status"] == "finished"


@pytest.mark.parametrize("flag", ["--val-size", "--size"])
def test_sizes_too_small_for_the_models_are_refused_before_training(prepared_root, tmp_path, capsys,
                                                                    monkeypatch, flag):
    monkeypatch.setattr(training, "fit", lambda *args, **options: pytest.fail("trained"))
    try:
        code = _ci(prepared_root, tmp_path / "ck", flag, "4x4")
    except Exception as error:  # what the old code raised after a whole epoch
        pytest.fail(f"a traceback: {error!r}")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{flag} 4x4: too small" in err
    monkeypatch.undo()
    assert _ci(prepared_root, tmp_path / "ck", flag, "64x32") == 0  # the same folder is still free


def test_a_gpu_profile_on_a_cpu_is_refused_unless_the_cpu_is_asked_for(prepared_root, tmp_path, capsys,
                                                                       monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setattr(training, "fit", lambda *args, **options: pytest.fail("trained in silence"))
    assert _train("--profile", "laptop", "--data", str(prepared_root), "--out", str(tmp_path / "ck")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--profile laptop is made for a CUDA GPU" in err
    assert "1024x512 crops, batch 8, amp auto" in err and "--profile cpu" in err


def test_a_run_record_missing_a_key_is_continued(tmp_path, prepared_root, capsys):
    out = tmp_path / "ck"
    assert _ci(prepared_root, out) == 0
    record = read_record(out)
    del record["started"]
    (out / RUN_RECORD).write_text(json.dumps(record))
    assert _train("--out", str(out), "-c", "-n", "2", "--max-iters", "1") == 0


def test_the_memory_of_a_huge_batch_is_scaled_from_small_ones_not_built(tmp_path, monkeypatch):
    from segkit.context import RunContext
    from segkit.engine import FitState, build_optimizer, build_scheduler
    from segkit.models import build_model
    from segkit.run import RunRecord

    config = TrainConfig(batch_size=100_000, size=(64, 32), amp="off")
    net = build_model("my_fcn")
    optimizer = build_optimizer(net, config)
    state = FitState(net, config, optimizer, build_scheduler(optimizer, config, 1),
                     torch.amp.GradScaler("cpu", enabled=False), RunContext(torch.device("cpu")), 19)
    built, randn = [], torch.randn

    def small_batches_only(*shape, **options):
        built.append(shape[0])
        assert shape[0] <= 8, f"a batch of {shape[0]} built to measure memory"
        return randn(*shape, **options)

    monkeypatch.setattr(torch, "randn", small_batches_only)
    record = RunRecord(tmp_path, batch=100_000)  # a split of 100000 frames or more
    record.on_fit_start(state)
    record.on_fit_end(state)
    assert len(built) == 2  # two small batches, the growth per frame extended
    assert read_record(tmp_path)["peak_mb"] > 1000  # scaled to the batch trained on


def test_a_refused_run_leaves_no_lock_in_the_users_folder(tmp_path):
    from segkit.run import RUN_LOCK, owned

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"), owned(folder):
        claim(folder)
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt"]
    assert not (folder / RUN_LOCK).exists()


def test_a_run_still_training_is_not_set_aside_from_under_it(tmp_path):
    from segkit.run import RUN_FORMAT, owned

    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / RUN_RECORD).write_text(json.dumps({"format": RUN_FORMAT, "status": "running",
                                                 "history": [], "started": 0}))
    with owned(folder), pytest.raises(DataError, match="another segkit run"):
        set_aside(folder)
    assert folder.is_dir()
    assert set_aside(folder) is not None  # once it has ended, it is moved aside


def test_the_peak_memory_of_a_step_counts_what_is_held_on_every_device(tmp_path):
    """``peak_mb`` is the CUDA allocator's peak on a GPU, weights and Adam's state included; on the
    CPU it once was one step's allocations alone, a third of that for a model whose weights
    outweigh its activations (DeepLabV3+ on 32x32 crops)."""
    from segkit.context import RunContext
    from segkit.engine import FitState, build_optimizer, build_scheduler
    from segkit.losses import build_loss
    from segkit.models import build_model
    from segkit.run import RunRecord
    from segkit.step import random_batch, train_step

    config = TrainConfig(model="deeplabv3plus", batch_size=2, size=(32, 32), amp="off")
    net = build_model("deeplabv3plus", backbone="mobilenet_v3_large")
    optimizer = build_optimizer(net, config)
    train_step(net, optimizer, *random_batch(2, (32, 32), torch.device("cpu")), build_loss("ce"))
    state = FitState(net, config, optimizer, build_scheduler(optimizer, config, 1),
                     torch.amp.GradScaler("cpu", enabled=False), RunContext(torch.device("cpu")), 19)
    record = RunRecord(tmp_path, batch=2)
    record.on_fit_start(state)
    record.on_fit_end(state)
    held_mb = 3 * sum(p.numel() * p.element_size() for p in net.parameters()) / 2**20  # + 2 moments
    written = read_record(tmp_path)
    assert held_mb < written["peak_mb"] < 2 * held_mb
    assert written["peak_how"].startswith("weights and optimizer state held, plus one forward")
    assert written["run"]["device"] == "cpu" and written["precision"] == "fp32"


def test_under_torchrun_only_the_folders_owner_clears_a_save_cut_short(tiny_checkpoint, tmp_path,
                                                                        monkeypatch):
    """Every process of a torchrun ran ``-c``'s clean-up of the same folder: the second to reach a
    file found it gone (FileNotFoundError)."""
    from segkit.io import remove_partials
    from segkit.run import continued_config

    last = tmp_path / "last.pt"
    last.write_bytes(tiny_checkpoint.read_bytes())
    partial = tmp_path / ".last.pt.partial"
    partial.write_bytes(b"half a checkpoint")
    monkeypatch.setenv("RANK", "1")
    continued_config(last, "unet")
    assert partial.exists()  # not this process's to clear
    unlink = Path.unlink

    def raced(path, missing_ok=False):  # another process removes it first
        if path.exists():
            unlink(path)
        return unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", raced)
    assert remove_partials(tmp_path) == 1 and not partial.exists()
