import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from segkit import labels
from segkit.checkpoints import load_checkpoint
from segkit.cli import build_parser, main
from segkit.datasets import CityscapesSegmentation


@pytest.mark.parametrize("command", [[], ["synth"], ["prepare"], ["train"], ["test"], ["predict"],
                                     ["export"], ["bench"], ["bench", "data"], ["bench", "train"],
                                     ["bench", "gpu"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: segkit" in capsys.readouterr().out


def test_synth_then_prepare(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "raw"), "--size", "128x64", "--frames", "2",
                 "--cities", "train=hamburg,bremen", "val=frankfurt", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["train"] == {"bremen": 1, "hamburg": 1}
    assert main(["prepare", "--source", str(tmp_path / "raw"), "--out", str(tmp_path / "ready"),
                 "--select", "train=bremen", "--quiet"]) == 0
    assert "prepared 1 frames" in capsys.readouterr().out


def test_bad_sizes_and_selections_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["synth", "--size", "wide"])
    assert exit_info.value.code == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", "unused", "--cities", "everywhere", "--quiet"])
    assert exit_info.value.code == 2
    assert "expected SPLIT=CITY" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``segkit train`` on a fresh folder: it must make the synthetic set itself."""
    work = tmp_path_factory.mktemp("work")
    result = subprocess.run(
        [sys.executable, "-m", "segkit.train", "-m", "my_fcn", "--profile", "ci", "--quiet"],
        cwd=work, capture_output=True, text=True, timeout=600)
    return work, result


def test_original_train_command_trains_on_synthetic_data(trained):
    work, result = trained
    assert result.returncode == 0, result.stderr
    assert "generating the synthetic Cityscapes set" in result.stdout
    assert "epoch   2/2" in result.stdout and "mIoU" in result.stdout
    checkpoint = load_checkpoint(work / "checkpoints" / "my_fcn" / "last.pt")
    assert checkpoint["epoch"] == 2
    # the run's own TensorBoard log, inside its folder: TensorBoard shows each run apart
    assert list((work / "checkpoints" / "my_fcn" / "tensorboard").glob("events.out.tfevents.*"))
    assert not (work / "runs").exists()


def test_train_refuses_to_overwrite_and_resumes(trained, capsys, monkeypatch):
    work, _ = trained
    monkeypatch.chdir(work)
    assert main(["train", "-m", "my_fcn", "--profile", "ci", "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "-m", "my_fcn", "--profile", "ci", "--quiet", "-c", "-n", "3"]) == 0
    assert "epoch   3/3" in capsys.readouterr().out
    assert load_checkpoint(work / "checkpoints" / "my_fcn" / "last.pt")["epoch"] == 3


def test_test_command_prints_the_table(trained, capsys):
    work, _ = trained
    checkpoint = work / "checkpoints" / "my_fcn" / "last.pt"
    data = work / "data" / "synthetic-ci" / "prepared"
    assert main(["test", "-m", "my_fcn", "--checkpoint", str(checkpoint), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    for line in ("global acc", "mean acc", "mIoU", "traffic sign", "bicycle"):
        assert line in out
    assert main(["test", "-m", "unet", "--checkpoint", str(checkpoint), "--data", str(data)]) == 2
    assert "holds a my_fcn model, not unet" in capsys.readouterr().err
    raw = work / "data" / "synthetic-ci" / "raw"  # the official layout, with the dummy test labels
    assert main(["test", "--checkpoint", str(checkpoint), "--data", str(raw), "--split", "test"]) == 2
    assert "test split has no public labels" in capsys.readouterr().err


def test_bench_data_prints_json_figures(tmp_path, capsys):
    assert main(["bench", "data", "--frames", "2", "--raw-size", "256x128", "--size", "64x32",
                 "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("prepared_samples_per_s", "raw_samples_per_s", "speedup", "synth_frames_per_s",
                "prepare_frames_per_s"):
        assert figures[key] > 0


def test_figures_command_writes_the_data_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert main(["figures", "--profile", "ci", "--out", str(tmp_path / "pics")]) == 0
    written = sorted(p.name for p in (tmp_path / "pics").iterdir())
    assert written == ["02_class_distribution.png", "02_imbalance_effect.png", "02_realism.png",
                       "02_samples.png", "03_augmentation.png", "03_mask_resampling.png",
                       "04_my_fcn_architecture.png", "06_dilation.png"]  # no course run: no 04-07 results
    assert all((tmp_path / "pics" / name).read_bytes()[:4] == b"\x89PNG" for name in written)


def test_test_command_slides_with_flip_and_writes_label_ids(tiny_checkpoint, prepared_root, tmp_path,
                                                            capsys):
    results = tmp_path / "results"
    assert main(["test", "--checkpoint", str(tiny_checkpoint), "--mode", "slide", "--size", "128x64",
                 "--tta", "flip", "--save-labelids", str(results)]) == 0
    out = capsys.readouterr().out
    assert "slide 64x32 windows, stride 43x22 over frames at 128x64, flip" in out
    for line in ("mIoU", "category mIoU", "construction", "s per frame", "MB for one frame",
                 "wrote 3 labelIds PNGs"):
        assert line in out
    assert "resized to" not in out  # full-size labels: no note
    frames = CityscapesSegmentation(prepared_root, "val").images
    expected = [p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png") for p in frames]
    assert sorted(p.name for p in results.glob("*.png")) == sorted(expected)
    with Image.open(results / expected[0]) as image:
        assert image.mode == "L" and image.size == (256, 128)  # the labels' full resolution
        assert set(np.unique(np.array(image))) <= labels.VALID_LABEL_IDS
    assert main(["test", "--checkpoint", str(tiny_checkpoint), "--split", "test",
                 "--save-labelids", str(tmp_path / "server")]) == 0  # no labels: files only
    assert "test has no labels to score: wrote 3 labelIds PNGs" in capsys.readouterr().out
    assert main(["test", "--checkpoint", str(tiny_checkpoint), "--scales", "0.5,1"]) == 2
    assert "add --tta ms" in capsys.readouterr().err


def test_test_command_notes_when_label_ids_come_from_a_resized_copy(tiny_checkpoint, synthetic_source,
                                                                   tmp_path, capsys):
    from segkit.prepare import prepare

    prepare(synthetic_source, tmp_path / "small", subset="small", size=(128, 64), progress=False)
    results = tmp_path / "results"
    assert main(["test", "--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path / "small"),
                 "--save-labelids", str(results)]) == 0
    assert f"{tmp_path / 'small'} is a copy resized to 128x64" in capsys.readouterr().out
    with Image.open(next(results.glob("*.png"))) as image:
        assert image.size == (128, 64)


def test_predict_command_on_a_folder_with_a_damaged_file(tiny_checkpoint, prepared_root, tmp_path,
                                                         capsys):
    frame = sorted((prepared_root / "leftImg8bit" / "val").glob("*/*.png"))[0]
    photos = tmp_path / "photos"
    photos.mkdir()
    with Image.open(frame) as image:
        image.save(photos / "frame.jpg", quality=90)
        image.convert("RGBA").crop((0, 0, 200, 100)).save(photos / "cropped_rgba.png")
    (photos / "damaged.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    out = tmp_path / "out"
    assert main(["predict", str(photos), "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                 "--tta", "flip", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "damaged.jpg: cannot read image" in captured.err
    assert "2 images segmented" in captured.out
    for stem, size in (("frame", (256, 128)), ("cropped_rgba", (200, 100))):
        for suffix in ("_color.png", "_overlay.png", "_trainIds.png"):
            with Image.open(out / f"{stem}{suffix}") as image:
                assert image.size == size
    assert main(["predict", str(photos / "frame.jpg"), "-m", "my_fcn", "--checkpoint",
                 str(tiny_checkpoint), "--out", str(tmp_path / "other")]) == 2
    assert "holds a unet model, not my_fcn" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "expected"), [([], None), (["--channels-last"], "on"),
                                               (["--channels-last", "auto", "-n", "1"], "auto")])
def test_the_memory_layout_flag_takes_on_off_or_auto(flags, expected):
    assert build_parser().parse_args(["train", "-m", "my_fcn", *flags]).channels_last == expected


@pytest.mark.parametrize(("device", "message"), [("banana", "not a device"), ("cuda", "no CUDA GPU")])
def test_train_on_a_device_this_machine_lacks_is_one_line(prepared_root, tmp_path, capsys, device,
                                                          message):
    if device == "cuda" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "-m", "my_fcn", "--profile", "ci", "--data", str(prepared_root),
                 "--device", device, "--out", str(tmp_path / "ck"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.fixture(scope="module")
def one_epoch_run(prepared_root, tmp_path_factory):
    """``segkit train`` for one epoch of the ci profile on ``prepared_root``, with poly decay."""
    out = tmp_path_factory.mktemp("run") / "ck"
    assert main(["train", "-m", "my_fcn", "--profile", "ci", "--data", str(prepared_root),
                 "--batch-size", "2", "--scheduler", "poly", "-n", "1", "--out", str(out),
                 "--log_dir", str(out.parent / "tb"), "--quiet"]) == 0
    return out


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr", "1e30"], "trained with --lr 0.001, not 1e+30"),
    (["-m", "unet"], "trained with -m my_fcn, not unet"),
    (["--data", "elsewhere"], "trained with --data"),
    (["--size", "64x32"], "trained with --size (128, 64)"),
])
def test_continue_refuses_another_recipe_in_one_line(one_epoch_run, tmp_path, capsys, flags, message):
    import shutil

    out = shutil.copytree(one_epoch_run, tmp_path / "ck")
    model = [] if "-m" in flags else ["-m", "my_fcn"]
    assert main(["train", *model, *flags, "-n", "2", "--out", str(out), "-c", "--quiet"]) == 2
    err = capsys.readouterr().err
    # -m is required: the way on is to give the recorded model, not to drop the flag
    fix = "give -m my_fcn to continue it" if "-m" in flags else f"drop {flags[0]} to continue it"
    assert message in err and fix in err and err.count("\n") == 1


def test_continue_takes_data_and_recipe_from_the_run(one_epoch_run, prepared_root, tmp_path, capsys):
    import shutil

    out = shutil.copytree(one_epoch_run, tmp_path / "ck")
    capsys.readouterr()
    # no --data and no --profile: the run's own data and recipe, not the synthetic default
    assert main(["train", "-m", "my_fcn", "--lr", "0.001", "-n", "2", "--out", str(out), "-c",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"on {prepared_root}" in printed and "batch 2" in printed and "stretched over 2" in printed
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert main(["train", "-m", "my_fcn", "--out", str(out), "-c", "--quiet"]) == 2
    assert "this run is finished (2 of 2 epochs)" in capsys.readouterr().err


def test_a_new_run_never_writes_over_the_users_files(one_epoch_run, prepared_root, tmp_path, capsys):
    folder = tmp_path / "userck"
    folder.mkdir()
    (folder / "best.pt").write_bytes((one_epoch_run / "best.pt").read_bytes())
    before = (folder / "best.pt").read_bytes()
    assert main(["train", "-m", "my_fcn", "--profile", "ci", "--data", str(prepared_root), "-n", "1",
                 "--max-iters", "1", "--out", str(folder), "--quiet"]) == 2
    assert "not empty (best.pt" in capsys.readouterr().err
    assert (folder / "best.pt").read_bytes() == before


@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_bench_gpu_says_in_one_line_that_cuda_is_absent(monkeypatch, capsys, flags):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["bench", "gpu", *flags]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "CUDA is absent" in out
    if flags:
        assert json.loads(out)["cuda"] is False


def test_an_unfinished_prepare_is_refused_with_the_command_that_finishes_it(
        synthetic_source, tmp_path, capsys):
    from segkit.prepare import MANIFEST, prepare

    out = tmp_path / "pk"
    prepare(synthetic_source, out, subset="small", progress=False)
    (out / MANIFEST).unlink()  # as a prepare killed before its end leaves it
    assert main(["train", "-m", "my_fcn", "--profile", "ci", "--data", str(out), "-n", "1",
                 "--out", str(tmp_path / "ck"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "did not finish" in err and f"segkit prepare --source {synthetic_source} --out {out}" in err


def test_a_split_too_small_for_one_batch_is_refused(tmp_path, capsys):
    from segkit.prepare import prepare
    from segkit.synthetic import generate

    generate(tmp_path / "one", size=(128, 64), frames=1, progress=False)
    prepare(tmp_path / "one", tmp_path / "one_p", progress=False)
    assert main(["train", "-m", "my_fcn", "--profile", "ci", "--data", str(tmp_path / "one_p"), "-n", "2",
                 "--batch-size", "2", "--out", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "tb"),
                 "--quiet"]) == 2
    assert "1 training frames make no full batch of 2" in capsys.readouterr().err
    assert not (tmp_path / "ck" / "last.pt").exists()
    assert not (tmp_path / "tb").exists()  # no empty TensorBoard event file left behind


def test_continue_from_random_bytes_is_one_line_without_unsafe_advice(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "last.pt").write_bytes(np.random.default_rng(0).bytes(100_000))
    (tmp_path / "r" / ".last.pt.123.partial").write_bytes(b"half")  # a killed save
    assert main(["train", "-m", "my_fcn", "--out", str(tmp_path / "r"), "-c", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable segkit checkpoint" in err
    assert "weights_only" not in err
    assert not (tmp_path / "r" / ".last.pt.123.partial").exists()


@pytest.mark.parametrize("case", ["window", "export_size", "export_folder", "alpha", "deeplab_offline",
                                  "foreign_option", "foreign_name"])
def test_user_mistakes_are_one_line_errors(one_epoch_run, prepared_root, tmp_path, capsys, monkeypatch,
                                           case):
    import torch

    from segkit.models import deeplabv3plus

    best = str(one_epoch_run / "best.pt")
    if case.startswith("foreign"):
        checkpoint = torch.load(best, weights_only=True)
        if case == "foreign_option":
            checkpoint["model_options"]["wings"] = 2
        else:
            checkpoint["model_name"] = "transformer9000"
        torch.save(checkpoint, tmp_path / "odd.pt")
        best = str(tmp_path / "odd.pt")
    if case == "deeplab_offline":
        def offline(weights):
            raise OSError("no network")
        monkeypatch.setattr(deeplabv3plus, "_download_state_dict", offline)
        monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    commands = {
        "window": ["test", "--checkpoint", best, "--data", str(prepared_root), "--mode", "slide",
                   "--window", "1x1"],
        "export_size": ["export", "--checkpoint", best, "--out", str(tmp_path / "o.onnx"),
                        "--size", "13x7"],
        "export_folder": ["export", "--checkpoint", best, "--out", str(tmp_path), "--overwrite"],
        "alpha": ["predict", str(prepared_root), "--checkpoint", best, "--out", str(tmp_path / "p"),
                  "--alpha", "7"],
        "deeplab_offline": ["train", "-m", "deeplab", "--profile", "ci", "--data", str(prepared_root),
                            "-n", "1", "--out", str(tmp_path / "dl"), "--log_dir", str(tmp_path / "tb"),
                            "--quiet"],
        "foreign_option": ["export", "--checkpoint", best, "--out", str(tmp_path / "o.onnx")],
        "foreign_name": ["export", "--checkpoint", best, "--out", str(tmp_path / "o.onnx")],
    }
    expected = {"window": "window 1x1 is too small", "export_size": "--size 13x7: too small",
                "export_folder": "is a folder", "alpha": "expected a number from 0 to 1",
                "deeplab_offline": "--allow-random-init", "foreign_option": "unknown options ['wings']",
                "foreign_name": "transformer9000"}
    try:
        code = main(commands[case])
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and expected[case] in err and "Traceback" not in err
    assert "<_io.BytesIO" not in err
    assert not (tmp_path / "tb").exists()  # a refused start leaves no TensorBoard file


def test_backbone_lr_flag_reaches_the_config(monkeypatch):
    from types import SimpleNamespace

    from segkit import training

    given = {}
    monkeypatch.setattr(training, "train", lambda model, **kwargs: given.update(kwargs)
                        or SimpleNamespace(stop=None))
    assert main(["train", "-m", "deeplab", "--backbone-lr", "0.5", "--quiet"]) == 0
    assert given["backbone_lr"] == 0.5
    assert training.train_config("deeplab", profile="ci", backbone_lr=0.5).backbone_lr == 0.5


@pytest.mark.parametrize("flags", [["--allow-random-init"],
                                   ["--backbone", "resnet50", "--output-stride", "8"]])
def test_deeplab_options_on_another_model_are_one_line(prepared_root, tmp_path, capsys, flags):
    assert main(["train", "-m", "my_fcn", "--profile", "ci", "--data", str(prepared_root), *flags,
                 "--out", str(tmp_path / "ck"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "of models with a backbone (deeplabv3plus), not of my_fcn" in err
    assert "Traceback" not in err
    assert not (tmp_path / "ck").exists()


def test_predict_into_the_folder_it_reads_is_one_line_not_no_images(tiny_checkpoint, prepared_root,
                                                                   tmp_path, capsys):
    photos = tmp_path / "pio"
    photos.mkdir()
    for frame in sorted((prepared_root / "leftImg8bit" / "val").glob("*/*.png"))[:2]:
        (photos / frame.name).write_bytes(frame.read_bytes())
    assert main(["predict", str(photos), "--checkpoint", str(tiny_checkpoint), "--out", str(photos),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{photos}: is the output folder" in err and "no images" not in err
    assert sorted(p.name for p in photos.iterdir()) == sorted(
        p.name for p in sorted((prepared_root / "leftImg8bit" / "val").glob("*/*.png"))[:2])


def test_test_scores_frames_of_different_sizes(tiny_checkpoint, prepared_root, tmp_path, capsys):
    import shutil

    root = shutil.copytree(prepared_root, tmp_path / "mine")
    frame = sorted((root / "leftImg8bit" / "val").glob("*/*.png"))[1]
    stem = frame.name.removesuffix("_leftImg8bit.png")
    for path in [frame, *frame.parent.parent.parent.parent.glob(f"gtFine/val/*/{stem}_*.png")]:
        with Image.open(path) as image:  # a user's own frame of another size
            image.resize((192, 96), Image.Resampling.NEAREST).save(path)
    (root / "manifest.json").unlink()
    (root / "prepare.json").unlink()  # no longer segkit's prepared copy: a user's own root
    results = tmp_path / "results"
    assert main(["test", "--checkpoint", str(tiny_checkpoint), "--data", str(root),
                 "--save-labelids", str(results)]) == 0
    assert "mIoU" in capsys.readouterr().out
    with Image.open(results / f"{stem}_gtFine_labelIds.png") as written:
        assert written.size == (192, 96)  # every frame's prediction under its own name and size


def test_a_pretrained_backbone_that_is_not_weights_is_one_line(prepared_root, tmp_path, capsys):
    evil = tmp_path / "evil.pth"
    Image.new("RGB", (8, 8)).save(evil, format="PNG")
    assert main(["train", "-m", "deeplab", "--profile", "ci", "--data", str(prepared_root), "-n", "1",
                 "--pretrained-backbone", str(evil), "--out", str(tmp_path / "ck"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{evil}: not a readable --pretrained-backbone file" in err
    assert "weights_only" not in err and "Traceback" not in err
