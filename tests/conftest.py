"""Shared fixtures: a small synthetic Cityscapes, generated once per test session."""

import shutil

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
    from segkit.engine import FitState, build_optimizer, build_scheduler
    from segkit.models import build_model

    torch.manual_seed(0)
    net = build_model("unet", base_channels=4)
    config = TrainConfig(model="unet", model_options={"base_channels": 4}, size=(64, 32),
                         val_size=(128, 64), data=str(prepared_root), num_workers=0)
    optimizer = build_optimizer(net, config)
    state = FitState(net, config, optimizer, build_scheduler(optimizer, config, 1),
                     torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"), 19)
    return save_checkpoint(tmp_path_factory.mktemp("checkpoint") / "unet.pt", state)
