"""Device, precision, determinism and allocator choices, with CUDA's capability checks stood in for."""

from types import SimpleNamespace

import pytest
import torch

from segkit import planner, runtime, training
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
    assert runtime.autocast_dtype("fp16", torch.device("cpu")) is torch.float16


def _cpu_with(monkeypatch, **flags: bool) -> None:
    """Stand in for torch's cpuinfo: a CPU with only ``flags`` (e.g. ``amx_bf16=True``)."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, **flags})


@pytest.mark.parametrize(("flags", "expected"), [
    ({"amx_bf16": True}, torch.bfloat16),  # Sapphire Rapids and later
    ({"avx512_bf16": True}, torch.bfloat16),  # Cooper Lake, Zen 4
    ({}, None),  # AVX2 only: bf16 would be emulated, far slower than fp32
])
def test_auto_precision_on_the_cpu_uses_bf16_only_where_native(monkeypatch, flags, expected):
    _cpu_with(monkeypatch, **flags)
    cpu = torch.device("cpu")
    assert runtime.autocast_dtype("auto", cpu) is expected
    assert runtime.autocast_dtype("off", cpu) is None
    assert runtime.autocast_dtype("bf16", cpu) is torch.bfloat16
    assert planner.precision_of(TrainConfig(), "cpu") == ("fp32" if expected is None else "bf16")


def test_the_training_header_says_which_precision_auto_chose(monkeypatch, capsys):
    cpu = torch.device("cpu")
    _cpu_with(monkeypatch, amx_bf16=True)
    bf16, fp32 = "precision bf16 autocast", "precision fp32"
    assert runtime.describe_precision("auto", cpu) == f"{bf16} (auto: native bf16 on this CPU)"
    _cpu_with(monkeypatch)
    assert runtime.describe_precision("auto", cpu) == f"{fp32} (auto: no native bf16 on this CPU)"
    assert runtime.describe_precision("bf16", cpu) == "precision bf16 autocast (--amp bf16)"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert runtime.describe_precision("auto", torch.device("cuda")) == (
        "precision fp16 autocast with loss scaling (auto: this GPU only emulates bf16)")
    frames = SimpleNamespace(dataset=[0, 1, 2])
    training._print_header(torch.nn.Linear(2, 2), TrainConfig(device="cpu"), frames, frames,
                           "profile ci", None)
    assert "device cpu, precision fp32 (auto: no native bf16 on this CPU);" in capsys.readouterr().out


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
