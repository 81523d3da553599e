"""A run resolved once (``segkit.context``): device, cap, precision and its fp16 trial, batch and
layout, on stand-in GPUs (capability checks and torch's final C call stood in for)."""

import ast
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import segkit
from segkit import config as config_module
from segkit import context, distributed, planner, step
from segkit.config import TrainConfig, profile_config
from segkit.io import DataError
from segkit.losses import build_loss
from segkit.training import train


def _trial(finite: bool):
    """The fp16 trial, run for real on the CPU on a model that stays finite in fp16 or not; returns
    the trial and the list of its calls."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 19, 1))
    if not finite:
        with torch.no_grad():
            model[0].weight.fill_(1e4)  # activations beyond fp16's 65504, as a faulty kernel's NaN
    images, masks = torch.randn(2, 3, 16, 32), torch.randint(0, 19, (2, 16, 32))
    calls = []

    def trial() -> bool:
        calls.append(1)
        return step.finite_pass(model, images, masks, build_loss("ce"), dtype=torch.float16)

    return trial, calls


def test_a_run_on_a_gpu_is_resolved_once_into_what_every_part_reads(cuda_machine):
    trial, calls = _trial(finite=True)
    _, run = context.resolve_run(TrainConfig(device="cuda", gpu_memory=6, amp="auto"),
                                 profile="laptop", profile_why="named", trial=trial)
    assert run.device == torch.device("cuda", 0)
    assert cuda_machine.fractions == [(pytest.approx(5.5 / 80), 0)]
    assert (run.dtype, run.scaler, run.precision) == (torch.float16, True, "fp16") and calls == [1]
    assert run.record() == {
        "device": "cuda:0", "precision": "fp16", "precision_why": "auto: this GPU only emulates bf16",
        "loss_scaling": True, "channels_last": False,
        "memory_cap": {"card_gib": 6, "context_gib": 0.5, "allocator_gib": 5.5, "total_gib": 80.0,
                       "gpu": "Stand-in GPU 0"},
        "profile": "laptop", "profile_why": "named", "batch_why": "", "processes": 1}
    assert run.describe().startswith("device cuda:0, precision fp16 autocast with loss scaling (auto: "
                                     "this GPU only emulates bf16), CUDA allocator capped at 5.50 GiB")
    with pytest.raises(AttributeError):
        run.dtype = None  # one record, never changed once resolved


def test_fp16_that_is_not_finite_on_the_card_falls_back_to_fp32_saying_so(cuda_machine, capsys):
    trial, calls = _trial(finite=False)
    _, run = context.resolve_run(TrainConfig(device="cuda:0", amp="auto"), trial=trial)
    assert run.dtype is None and not run.scaler and calls == [1]
    assert run.precision_why == ("auto: this GPU only emulates bf16; fp16 was not finite in a trial "
                                 "step, so fp32")
    assert capsys.readouterr().out.splitlines() == [context.FP16_FALLBACK.format(device="cuda:0")]


def test_bf16_where_the_card_has_it_native_with_no_trial(cuda_machine):
    trial, calls = _trial(finite=False)
    _, run = context.resolve_run(TrainConfig(device="cuda:1", amp="auto"), trial=trial)
    assert run.dtype is torch.bfloat16 and not run.scaler and calls == []


@pytest.mark.parametrize("name", ["laptop", "gpu"])
def test_the_gpu_profiles_take_bf16_where_native_and_train_for_a_budget(name):
    """laptop once forced fp16 on the RTX 30xx laptop cards it names, where bf16 needs no scaler."""
    for model in ("my_fcn", "unet", "deeplabv3plus"):
        recipe = profile_config(model, name)
        assert recipe.amp == "auto" and recipe.scheduler == "poly"
        assert recipe.time_budget == {"laptop": 600.0, "gpu": 900.0}[name]
    assert profile_config("unet", name, epochs=5, time_budget=None).time_budget is None


def test_a_batch_smaller_than_the_model_trains_on_is_refused_before_training():
    with pytest.raises(DataError, match="--batch-size 1: deeplabv3plus trains on no fewer than 2"):
        context.resolve_run(TrainConfig(model="deeplabv3plus", batch_size=1, device="cpu"))


def test_the_profile_and_the_run_are_resolved_once_per_run(prepared_root, tmp_path, monkeypatch):
    """``auto`` asks the GPU for its memory: once a run, not once per part of it."""
    asked, resolved = [], []
    resolve = context.resolve_run
    monkeypatch.setattr(config_module, "auto_profile", lambda: asked.append(1) or ("ci", "a stand-in"))
    monkeypatch.setattr(context, "resolve_run", lambda *a, **k: resolved.append(1) or resolve(*a, **k))
    monkeypatch.setattr("segkit.training.resolve_run", context.resolve_run)
    train("my_fcn", profile="auto", data=prepared_root, out=tmp_path / "ck", log_dir=tmp_path / "tb",
          progress=False, epochs=1, max_iters=1)
    assert asked == [1] and resolved == [1]


def test_a_run_asks_for_its_precision_in_one_place():
    """Training, its validation, checkpoints, the run record, the planner's batch choice and the
    range test read ``RunContext.dtype``: only ``resolve_run`` turns ``--amp`` into a dtype."""
    package = Path(segkit.__file__).parent
    run_path = {"engine.py", "training.py", "run.py", "checkpoints.py", "step.py", "planner.py",
                "loaders.py", "context.py", "labs/lr_range.py"}
    callers = set()
    for name in run_path:
        for node in ast.walk(ast.parse((package / name).read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "autocast_dtype":
                callers.add(name)
    assert callers == {"context.py"}


# --- under torchrun: one batch for every process ---------------------------------------------

def _auto_batch_in_process(rank, port, folder):
    """One of two processes that would each plan a different batch (rank 0: 4, rank 1: 2)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    planner.choose_batch_size = lambda config, gib, **options: 4 - 2 * rank
    with distributed.process_group("cpu"):
        config, run = context.resolve_run(TrainConfig(device="cpu", amp="off"), auto_batch=True)
    (folder / f"rank{rank}.txt").write_text(f"{config.batch_size}\n{run.batch_why}")


def test_under_torchrun_every_process_takes_the_same_automatic_batch(tmp_path):
    """Each process choosing its own batch gives each another number of batches an epoch: the
    ones with fewer wait for the others at the next exchange, for ever."""
    from test_distributed import free_port

    mp.spawn(_auto_batch_in_process, args=(free_port(), tmp_path), nprocs=2)
    for rank in (0, 1):
        batch, why = (tmp_path / f"rank{rank}.txt").read_text().split("\n")
        assert batch == "2" and why.startswith(f"batch {4 - 2 * rank} planned for 6.0 GiB")
    assert why.endswith("not confirmed: no CUDA device)")
    assert (tmp_path / "rank0.txt").read_text().endswith("; 2, the smallest any process confirmed")
