"""Device, precision, determinism and allocator choices, with CUDA's capability checks stood in for."""

from types import SimpleNamespace

import pytest
import torch

from segkit import runtime
from segkit.config import TrainConfig, profile_config
from segkit.loaders import build_loaders


@pytest.fixture
def restore_determinism():
    yield
    runtime.set_determinism(False)


def test_auto_precision_uses_bf16_only_where_the_gpu_runs_it_natively(monkeypatch):
    cuda = torch.device("cuda")

    def turing(including_emulation=True):  # a GTX 1660 Ti, T4 or V100: bf16 only by emulation
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", turing)
    assert runtime.autocast_dtype("auto", cuda) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert runtime.autocast_dtype("auto", cuda) is torch.bfloat16
    assert runtime.autocast_dtype("auto", torch.device("cpu")) is None
    assert runtime.autocast_dtype("fp16", torch.device("cpu")) is torch.float16


def test_determinism_is_opt_in_and_the_ci_profile_opts_in(restore_determinism):
    assert TrainConfig().deterministic is False
    assert profile_config("unet", "cpu").deterministic is False
    assert profile_config("unet", "ci").deterministic is True
    runtime.set_determinism(True)
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    runtime.set_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark


def test_seeding_leaves_the_determinism_setting_alone(restore_determinism):
    runtime.set_determinism(True)
    runtime.seed_everything(3)  # e.g. each process reseeded per epoch under torchrun
    assert torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize(("device", "pinned"), [("cpu", False), ("cuda", True), ("auto", True)])
def test_memory_is_pinned_only_when_training_on_cuda(prepared_root, monkeypatch, device, pinned):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU is present
    train, val = build_loaders(prepared_root, TrainConfig(device=device, num_workers=0, batch_size=2))
    assert train.pin_memory is pinned and val.pin_memory is pinned


@pytest.mark.parametrize(("name", "message"), [
    ("banana", "not a device"), ("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU")])
def test_unknown_or_absent_devices_are_refused_in_one_line(monkeypatch, name, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=message):
        runtime.resolve_device(name)


def test_gpu_memory_cap_sets_the_allocator_fraction(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: SimpleNamespace(total_memory=80 * runtime.GIB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Stand-in 80GB")
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, device=None: calls.append(fraction))
    line = runtime.cap_gpu_memory(6, torch.device("cuda", 0))
    assert calls == [pytest.approx(6 / 80)] and "6.0 GiB of 80.0 GiB" in line
    assert runtime.cap_gpu_memory(200, torch.device("cuda", 0)) and calls[-1] == 1.0
    assert runtime.cap_gpu_memory(6, torch.device("cpu")) is None and len(calls) == 2
    with pytest.raises(ValueError, match="above 0"):
        runtime.cap_gpu_memory(0, torch.device("cuda", 0))


@pytest.mark.parametrize(("memory", "expected"), [(None, "cpu"), (5.8, "laptop"), (80.0, "gpu")])
def test_the_auto_profile_follows_the_device_and_its_memory(monkeypatch, memory, expected):
    from segkit import config

    monkeypatch.delenv("SEGKIT_PROFILE", raising=False)
    monkeypatch.setattr(runtime, "gpu_memory_gib", lambda device=None: memory)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Stand-in GPU")
    assert config.profile_name() == config.profile_name("auto") == expected
    assert config.describe_profile().startswith(f"profile {expected} (auto: ")
    assert config.describe_profile("ci") == "profile ci"
    monkeypatch.setenv("SEGKIT_PROFILE", "ci")
    assert config.profile_name() == "ci"
