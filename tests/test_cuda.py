"""CUDA acceptance: what README says of the GPU path, proven on a GPU.

* the ``laptop`` profile trains every model at its batch of 8 on 1024x512 crops imitating a 6 GiB
  card, in the card's own precision (bf16 where native) and in fp16 after its trial step;
* the planner's estimate of a step's peak is within ``planner.CUDA_ERROR`` of the measured one;
* a run continues with ``-c`` on CUDA, and from the CPU onto CUDA and back across precisions;
* torchrun with nccl: one process, and two exchanging gradients where two GPUs are at hand;
* a full 2048x1024 frame scored by sliding windows; ONNX export of a model on the GPU, checked
  against ONNX Runtime.

Marker ``cuda``; every test here is skipped, with the reason, where torch sees no CUDA GPU. Run them
with ``pytest -m cuda`` (``scripts/gpu-check.sh``, which also keeps the figures: with
``SEGKIT_FIGURES`` set to a folder, the memory test writes ``gpu-figures.json`` there).
"""

import itertools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segkit import planner
from segkit.checkpoints import load_checkpoint, model_from_checkpoint, unwrap
from segkit.cli import main
from segkit.engine import Callback
from segkit.run import read_record
from segkit.training import train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is absent: no GPU visible "
                                 f"to torch {torch.__version__}")]

CAP_GIB = 6  # the original study's GTX 1660 Ti
MODELS = ("my_fcn", "unet", "deeplabv3plus")
FRAMES = 8  # per split: one laptop batch of 8 an epoch
ROOT = Path(__file__).resolve().parents[1]


def _native_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_properties(0).major >= 8


@pytest.fixture(scope="module")
def full_size_root(tmp_path_factory):
    """Eight frames per split at the real 2048x1024, prepared without resizing."""
    from segkit.prepare import prepare
    from segkit.synthetic import generate

    root = tmp_path_factory.mktemp("cuda-data")
    generate(root / "raw", size=(2048, 1024), frames=FRAMES, seed=0, progress=False,
             cities={"train": ("hamburg",), "val": ("frankfurt",)})
    prepare(root / "raw", root / "prepared", subset="full", progress=False)
    return root / "prepared"


def _laptop_run(model, root, out, **changes):
    options = {"allow_random_init": True}  # the GPU machine may be offline
    return train(model, profile="laptop", data=root, out=out, log_dir=out / "tb", progress=False,
                 model_options=options, gpu_memory=CAP_GIB, device="cuda", **changes)


@pytest.mark.parametrize("amp", ["auto", "fp16"])
@pytest.mark.parametrize("model", MODELS)
def test_the_laptop_profile_trains_every_model_at_batch_8_on_a_6_gib_card(full_size_root, tmp_path,
                                                                        model, amp):
    if amp == "fp16" and not _native_bf16():
        pytest.skip(f"{torch.cuda.get_device_name()} has no native bf16: auto is fp16 already")
    state = _laptop_run(model, full_size_root, tmp_path, epochs=2, max_val_batches=1, amp=amp)
    assert state.stop is None and state.config.batch_size == 8
    assert state.step == 2 and state.images_seen == 2 * FRAMES  # one whole batch of 8 an epoch
    run = read_record(tmp_path)["run"]
    assert run["memory_cap"]["card_gib"] == CAP_GIB and run["device"] == "cuda:0"
    assert run["channels_last"] is True
    expected = "bf16" if amp == "auto" and _native_bf16() else "fp16"
    fell_back = "not finite in a trial step" in run["precision_why"]
    assert run["precision"] == expected or (expected == "fp16" and fell_back and run["precision"] == "fp32")
    assert run["loss_scaling"] == (run["precision"] == "fp16")


def test_the_planner_predicts_a_steps_peak_within_its_stated_error(tmp_path):
    """A memory figure the cap does not imply: the planner's ``allocator_gib`` against
    ``torch.cuda.max_memory_allocated`` over training steps, per model in the laptop profile."""
    from segkit.bench import bench_gpu

    figures = bench_gpu(models=MODELS, cap_gib=CAP_GIB, steps=3)
    _keep_figures(figures)
    for name, row in figures["models"].items():
        assert abs(row["planned_error"]) <= planner.CUDA_ERROR, (name, row)


def _keep_figures(bench: dict) -> None:
    """``gpu-figures.json`` in ``$SEGKIT_FIGURES``: what README's GPU table is filled from."""
    folder = os.environ.get("SEGKIT_FIGURES")
    if not folder:
        return
    plans = planner.profile_plans("laptop")
    figures = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cuda": torch.version.cuda, "python": platform.python_version(),
               "planner_cuda_error_allowed": planner.CUDA_ERROR, "bench_gpu": bench,
               "laptop_plan": [plan.row(CAP_GIB) for plan in plans]}
    Path(folder).mkdir(parents=True, exist_ok=True)
    Path(folder, "gpu-figures.json").write_text(json.dumps(figures, indent=1))


def test_resume_on_cuda_continues_the_run(full_size_root, tmp_path):
    first = _laptop_run("my_fcn", full_size_root, tmp_path, epochs=1, max_iters=1, max_val_batches=1)
    resumed = _laptop_run("my_fcn", full_size_root, tmp_path, epochs=2, max_iters=1, max_val_batches=1,
                          resume=True)
    assert first.epoch == 1 and resumed.epoch == 2 and resumed.step == 2 * first.step
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


def _ci_run(root, out, device, epochs, **changes):
    return train("my_fcn", profile="ci", data=root, out=out, log_dir=out / "tb", progress=False,
                 device=device, epochs=epochs, max_iters=2, **changes)


def test_continue_moves_a_run_between_the_cpu_and_the_gpu_across_precisions(full_size_root, tmp_path,
                                                                           capsys):
    """``-c --device``: the precision ``auto`` resolves to may differ on the new device (fp32 or bf16
    on a CPU, bf16 or fp16 on a GPU); the run continues, saying so, and back again."""
    on_cpu = _ci_run(full_size_root, tmp_path, "cpu", 1)
    on_gpu = _ci_run(full_size_root, tmp_path, "cuda", 2, resume=True)
    back = _ci_run(full_size_root, tmp_path, "cpu", 3, resume=True)
    assert (on_cpu.epoch, on_gpu.epoch, back.epoch) == (1, 2, 3) and back.stop is None
    precisions = [state.context.precision for state in (on_cpu, on_gpu, back)]
    notes = [line for line in capsys.readouterr().out.splitlines() if "other hardware" in line]
    changed = [f"trained in {a}, continues in {b}" for a, b in itertools.pairwise(precisions) if a != b]
    assert len(notes) == len(changed) and all(c in n for c, n in zip(changed, notes, strict=True))
    assert load_checkpoint(tmp_path / "last.pt")["precision"] == precisions[-1]


def _torchrun(processes, *arguments):
    """``torchrun --standalone --nproc_per_node processes arguments…`` from the repository root."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(processes), *arguments]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_torchrun_with_nccl_in_one_process(full_size_root, tmp_path):
    result = _torchrun(1, "-m", "segkit", "train", "-m", "my_fcn", "--profile",
                       "ci", "--data", str(full_size_root), "--device", "cuda", "--out",
                       str(tmp_path / "ck"), "-n", "1", "--quiet")
    assert "device cuda:0" in result.stdout


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two processes with nccl need two CUDA GPUs; "
                    f"torch sees {torch.cuda.device_count()}")
def test_torchrun_with_nccl_in_two_processes_exchanges_gradients(full_size_root, tmp_path):
    """Each process trains on its own half of every batch; only averaged gradients keep their
    weights equal, step after step."""
    result = _torchrun(2, __file__, str(full_size_root), str(tmp_path))
    assert "batch 4 per process x 2 processes = 8" in result.stdout
    weights = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    start = torch.load(tmp_path / "start.pt", weights_only=True)
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0)
    assert any(not torch.equal(value, start[name]) for name, value in weights[0].items())
    assert read_record(tmp_path / "ck")["run"]["processes"] == 2


class SaveWeights(Callback):
    """Each process's trained weights (parameters only: batch norm's statistics stay per process
    without --sync-bn), and process 0's starting ones."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _save(self, state, name: str) -> None:
        model = unwrap(state.model)
        torch.save({key: value.detach().cpu() for key, value in model.named_parameters()},
                   self.folder / name)

    def on_fit_start(self, state) -> None:
        if state.context.device.index == 0:
            self._save(state, "start.pt")

    def on_fit_end(self, state) -> None:
        self._save(state, f"rank{os.environ['RANK']}.pt")


@pytest.fixture(scope="module")
def cuda_checkpoint(full_size_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda-run")
    _laptop_run("unet", full_size_root, out, epochs=1, max_iters=1, max_val_batches=1)
    return out / "last.pt"


def test_sliding_window_evaluation_at_full_resolution(cuda_checkpoint, full_size_root, capsys):
    assert main(["test", "--checkpoint", str(cuda_checkpoint), "--data", str(full_size_root),
                 "--mode", "slide", "--device", "cuda", "--batch-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "torch.cuda.max_memory_allocated" in out


def test_onnx_export_of_a_model_on_the_gpu_matches_onnx_runtime(cuda_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    from segkit.export import check_parity, export_onnx

    net, _ = model_from_checkpoint(cuda_checkpoint, "cuda")
    path = export_onnx(net, tmp_path / "unet.onnx", size=(512, 256))
    results = check_parity(net, path, size=(512, 256))  # the GPU's logits against ONNX Runtime's
    assert next(net.parameters()).is_cuda and results and all(result.ok for result in results), results


if __name__ == "__main__":  # one process of the two-process nccl test, as torchrun starts it
    data, folder = map(Path, sys.argv[1:3])
    train("my_fcn", profile="ci", data=data, out=folder / "ck", log_dir=folder / "tb", progress=False,
          device="cuda", epochs=1, max_iters=2, callbacks=[SaveWeights(folder)])
