"""Shared fixtures: a small synthetic Cityscapes, generated once per test session."""

import shutil
import types

import pytest

from segkit.synthetic import generate

SYNTH_SIZE = (256, 128)
SYNTH_FRAMES = 3


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """segkit's on-disk cache (the planner's calibrations) in a folder of this test session: tests
    neither read nor write the user's ``~/.cache/segkit``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory):
    """Read-only: official folders and zips of 3 frames per split at 256x128 (seed 0)."""
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, size=SYNTH_SIZE, frames=SYNTH_FRAMES, seed=0, zips=True, progress=False)
    return root


@pytest.fixture
def source_copy(synthetic_source, tmp_path):
    """A writable copy of the synthetic source, for tests that damage it."""
    return shutil.copytree(synthetic_source, tmp_path / "source")


@pytest.fixture(scope="session")
def prepared_root(synthetic_source, tmp_path_factory):
    """Read-only: the synthetic source prepared without resizing (train, val, test)."""
    from segkit.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "full"
    prepare(synthetic_source, out, subset="full", progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(prepared_root, tmp_path_factory):
    """Read-only: an untrained unet (base 4) checkpoint trained "on" ``prepared_root`` with 64x32
    crops and 128x64 validation frames, for inference, prediction and export tests."""
    import torch

    from segkit.checkpoints import save_checkpoint
    from segkit.config import TrainConfig
    from segkit.context import RunContext
    from segkit.engine import FitState, build_optimizer, build_scheduler
    from segkit.models import build_model

    torch.manual_seed(0)
    net = build_model("unet", base_channels=4)
    config = TrainConfig(model="unet", model_options={"base_channels": 4}, size=(64, 32),
                         val_size=(128, 64), data=str(prepared_root), num_workers=0)
    optimizer = build_optimizer(net, config)
    state = FitState(net, config, optimizer, build_scheduler(optimizer, config, 1),
                     torch.amp.GradScaler("cpu", enabled=False), RunContext(torch.device("cpu")), 19)
    return save_checkpoint(tmp_path_factory.mktemp("checkpoint") / "unet.pt", state)


class CudaMachine:
    """What a stand-in CUDA machine was asked: the allocator fractions set through torch's C call."""

    def __init__(self):
        self.fractions: list[tuple[float, int]] = []


@pytest.fixture
def cuda_machine(monkeypatch):
    """A machine with two stand-in GPUs of 80 GiB, a Turing card (cuda:0, compute capability 7.5,
    the current one) and an Ampere card (cuda:1, 8.6), each with 0.5 GiB in use outside torch's
    allocator (its CUDA context). Only capability checks, memory queries and the final C call of
    ``torch.cuda.set_per_process_memory_fraction`` are stood in for; torch's own Python around
    them runs (device-index checks included)."""
    import torch

    machine = CudaMachine()
    gib = 2**30
    major = {0: 7, 1: 8}

    def index(device=None):  # as torch reads a device: none, or one without an index, is the current
        device = device.index if isinstance(device, torch.device) else device
        return torch.cuda.current_device() if device is None else int(device)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(major))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: types.SimpleNamespace(
        major=major[index(device)], minor=5, total_memory=80 * gib, name=f"Stand-in GPU {index(device)}"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"Stand-in GPU {index(device)}")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(79.5 * gib), 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda.memory, "_lazy_init", lambda: None)
    monkeypatch.setattr(torch._C, "_cuda_setMemoryFraction",
                        lambda fraction, device: machine.fractions.append((fraction, device)),
                        raising=False)
    return machine


@pytest.fixture
def engine_rates():
    """``rates(model, config, steps_per_epoch, steps)``: the learning rate of each of ``steps``
    optimizer steps as the engine's optimizer and scheduler for ``config`` give it."""
    from segkit import engine

    def rates(model, config, steps_per_epoch: int, steps: int) -> list[float]:
        optimizer = engine.build_optimizer(model, config)
        schedule = engine.build_scheduler(optimizer, config, steps_per_epoch=steps_per_epoch)
        seen = []
        for _ in range(steps):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return seen

    return rates
