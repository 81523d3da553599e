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


def test_auto_precision_uses_bf16_only_where_the_gpu_runs_it_natively(cuda_machine):
    turing, ampere = torch.device("cuda", 0), torch.device("cuda", 1)
    assert runtime.autocast_dtype("auto", turing) is torch.float16  # a GTX 1660 Ti, T4, V100
    assert runtime.autocast_dtype("auto", ampere) is torch.bfloat16  # an RTX 3060 laptop card too
    assert runtime.autocast_dtype("fp16", torch.device("cpu")) is torch.float16


def test_bf16_is_asked_of_the_runs_gpu_not_the_current_one(cuda_machine):
    """--device cuda:1 on a box whose current GPU (cuda:0) is a Turing card and cuda:1 an Ampere."""
    assert torch.cuda.current_device() == 0
    assert runtime.autocast_dtype("auto", torch.device("cuda", 1)) is torch.bfloat16
    assert runtime.describe_precision("auto", torch.device("cuda", 1)) == (
        "precision bf16 autocast (auto: native bf16 on this GPU)")


@pytest.mark.parametrize("name", ["cuda", "auto"])
def test_a_cuda_device_always_has_its_index_and_the_cap_takes_it(cuda_machine, name):
    """torch's own ``set_per_process_memory_fraction`` (only its C call stood in for) refuses a
    device without an index: every ``--gpu-memory`` run once died of it."""
    device = runtime.resolve_device(name)
    cap = runtime.cap_gpu_memory(6, device)
    assert device == torch.device("cuda", 0)
    assert cuda_machine.fractions == [(pytest.approx(5.5 / 80), 0)] and cap.allocator_gib == 5.5


def test_the_cap_imitates_the_whole_card_less_the_context_measured(cuda_machine):
    cap = runtime.cap_gpu_memory(6, torch.device("cuda", 1))
    assert cuda_machine.fractions == [(pytest.approx(5.5 / 80), 1)]  # not 6 GiB on top of the context
    assert (cap.card_gib, cap.context_gib, cap.allocator_gib) == (6, 0.5, 5.5)
    assert "capped at 5.50 GiB" in str(cap) and "a 6 GiB card less the 0.50 GiB" in str(cap)
    runtime.cap_gpu_memory(200, torch.device("cuda", 0))  # more than the GPU: all of it, less the context
    assert cuda_machine.fractions[-1] == (pytest.approx(79.5 / 80), 0)
    with pytest.raises(ValueError, match="0.50 GiB of cuda:0 are in use outside torch's allocator"):
        runtime.cap_gpu_memory(0.4, torch.device("cuda", 0))
    assert runtime.cap_gpu_memory(6, torch.device("cpu")) is None
    with pytest.raises(ValueError, match="above 0"):
        runtime.cap_gpu_memory(0, torch.device("cuda", 0))


def test_a_gpu_this_machine_lacks_is_refused_in_one_line(cuda_machine):
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"has 2 CUDA GPU\(s\), cuda:0 to cuda:1"):
        runtime.resolve_device("cuda:2")


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
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=7))
    assert runtime.describe_precision("auto", torch.device("cuda", 0)) == (
        "precision fp16 autocast with loss scaling (auto: this GPU only emulates bf16)")
    from segkit.context import resolve_run

    frames = SimpleNamespace(dataset=[0, 1, 2])
    config, context = resolve_run(TrainConfig(device="cpu"), profile="ci", profile_why="named")
    training._print_header(torch.nn.Linear(2, 2), config, context, frames, frames)
    out = capsys.readouterr().out
    assert "device cpu, precision fp32 (auto: no native bf16 on this CPU);" in out
    assert "; profile ci; " in out


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
def test_memory_is_pinned_only_when_training_on_cuda(prepared_root, cuda_machine, device, pinned):
    train, val = build_loaders(prepared_root, TrainConfig(device=device, num_workers=0, batch_size=2))
    assert train.pin_memory is pinned and val.pin_memory is pinned


@pytest.mark.parametrize(("name", "message"), [
    ("banana", "not a device"), ("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU")])
def test_unknown_or_absent_devices_are_refused_in_one_line(monkeypatch, name, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=message):
        runtime.resolve_device(name)


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
