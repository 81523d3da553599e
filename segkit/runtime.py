"""What the hardware can do, asked in one place: the device, seeds and determinism, mixed precision,
and a cap on the CUDA allocator. ``segkit.context.resolve_run`` asks once per run and keeps the
answers in a ``RunContext``.

Everything here is small on purpose: branches that only a GPU takes are kept to a line or two and
tested on the CPU with stand-ins (patched capability checks, torch's final C call).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segkit import distributed

GIB = 2**30


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; under torchrun, this process's GPU or the CPU.

    A CUDA device always comes with its index (``cuda`` is the current GPU, ``cuda:0`` on most
    machines): torch's allocator settings refuse a device without one. A device that this machine
    does not have is refused with a one-line ``ValueError``.
    """
    if distributed.is_initialized():
        return distributed.process_device(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA GPU that torch can use "
                         f"(torch {torch.__version__}); use --device cpu or auto")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}; give one of those")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                     and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: Apple's MPS is not available here; use --device cpu or auto")
    return device


#: The largest seed: numpy's random state takes no more (it would take 2**32 as 0, in silence).
MAX_SEED = 2**32 - 1


def check_seed(seed: int) -> int:
    """``seed`` if it is one that ``seed_everything`` takes as it is, else a ``ValueError``."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed}: give a whole number from 0 to {MAX_SEED} (2**32 - 1); numpy "
                         "takes no larger seed, and a larger one would repeat a smaller one's run")
    return seed


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every GPU included); ``seed`` from 0 to ``MAX_SEED``."""
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_determinism(deterministic: bool) -> None:
    """Deterministic kernels where they exist (slower on GPUs), or cuDNN's autotuner for speed.

    Off by default, as in torchvision's reference scripts: on CUDA, cross-entropy and bilinear
    upsampling have no deterministic backward anyway, so the exact-repeat guarantee holds on the
    CPU only. The ``ci`` profile switches it on, for notebook outputs that compare equal.
    """
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively: AMX-BF16 or AVX512-BF16 (Xeon since Cooper Lake,
    EPYC since Zen 4).

    Asked through torch's cpuinfo (``torch.cpu.get_capabilities``), else /proc/cpuinfo's flags.
    Elsewhere bf16 autocast is emulated: measured over 30x slower than fp32 (my_fcn, AVX2 machine).
    """
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        found = capabilities()
        return bool(found.get("amx_bf16") or found.get("avx512_bf16"))
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def gpu_has_native_bf16(device: torch.device) -> bool:
    """Whether the GPU ``device`` (not the current one: ``--device cuda:1`` on a box of mixed cards)
    computes bf16 natively: compute capability 8 and later (Ampere, Ada, Hopper; the RTX 30xx laptop
    cards included), or any ROCm GPU, as ``torch.cuda.is_bf16_supported`` decides for the current one.
    """
    return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``; None means full fp32.

    ``auto`` uses bf16 on GPUs whose tensor cores run it natively (Ampere and later; no loss scaling
    needed) and fp16 with a ``GradScaler`` on older ones (Turing, Volta: torch emulates bf16 there,
    slowly). On the CPU ``auto`` uses bf16 where the CPU has it natively (``cpu_has_native_bf16``),
    fp32 elsewhere; on Apple MPS it is fp32.
    """
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        if device.type != "cuda":
            return None
        return torch.bfloat16 if gpu_has_native_bf16(device) else torch.float16
    return torch.float16 if amp == "fp16" else torch.bfloat16


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``fp32``: what ``autocast_dtype`` chose, in the words of ``--amp``."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def precision_reason(amp: str, device: torch.device, dtype: torch.dtype | None) -> str:
    """Why ``autocast_dtype(amp, device)`` gave ``dtype``, e.g. ``auto: native bf16 on this CPU``."""
    if amp != "auto":
        return f"--amp {amp}"
    if device.type == "cpu":
        return f"auto: {'native' if dtype is not None else 'no native'} bf16 on this CPU"
    if device.type == "cuda":
        return "auto: " + ("native bf16 on this GPU" if dtype is torch.bfloat16
                           else "this GPU only emulates bf16")
    return f"auto: no mixed precision on {device.type}"


def describe_dtype(dtype: torch.dtype | None, device: torch.device) -> str:
    """``fp32``, ``bf16 autocast`` or ``fp16 autocast`` (``with loss scaling`` on CUDA)."""
    name = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[dtype]
    return name + (" with loss scaling" if dtype is torch.float16 and device.type == "cuda" else "")


def describe_precision(amp: str, device: torch.device) -> str:
    """What ``autocast_dtype(amp, device)`` chose and why, for a run's header line, e.g.
    ``"precision bf16 autocast (auto: native bf16 on this CPU)"``."""
    dtype = autocast_dtype(amp, device)
    return f"precision {describe_dtype(dtype, device)} ({precision_reason(amp, device, dtype)})"


def gpu_memory_gib(device: torch.device | None = None) -> float | None:
    """Total memory of the (current) CUDA GPU in GiB, or None without CUDA."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(device or torch.cuda.current_device()).total_memory / GIB


@dataclass(frozen=True)
class MemoryCap:
    """A card of ``card_gib`` imitated on a larger GPU (``--gpu-memory``)."""

    card_gib: float  # the card imitated: all of its memory, the CUDA context's included
    context_gib: float  # measured outside torch's allocator when the cap was set
    allocator_gib: float  # what torch's caching allocator may hold: card_gib - context_gib
    total_gib: float  # the GPU's own memory
    gpu: str  # its name

    def __str__(self) -> str:
        return (f"CUDA allocator capped at {self.allocator_gib:.2f} GiB of the {self.gpu}'s "
                f"{self.total_gib:.1f} GiB: a {self.card_gib:g} GiB card less the "
                f"{self.context_gib:.2f} GiB its CUDA context takes")


def cap_gpu_memory(gib: float | None, device: torch.device) -> MemoryCap | None:
    """Let this process use at most ``gib`` GiB of the GPU ``device`` in all, so that a large GPU
    runs out of memory where a card of ``gib`` GiB would (``--gpu-memory``); None when nothing was
    capped (no cap asked for, or not on CUDA).

    The cap imitates the whole card. torch's caching allocator holds the tensors and the cuDNN and
    cuBLAS workspaces, and ``torch.cuda.set_per_process_memory_fraction`` limits it alone; the
    CUDA context (a few hundred MB of kernels and driver state) lives outside it, and on a real
    card comes out of the same memory. So the allocator gets ``gib`` less the memory in use on the
    GPU outside it when the cap is set, measured by ``torch.cuda.mem_get_info()`` (this process's
    context, and whatever other processes hold on that GPU). Kernels loaded later add a little to
    the context, which the measurement cannot foresee.
    """
    if gib is None or device.type != "cuda":
        return None
    if gib <= 0:
        raise ValueError(f"--gpu-memory {gib:g}: give the GiB to allow, a number above 0")
    free, total = torch.cuda.mem_get_info(device)
    context = (total - free - torch.cuda.memory_reserved(device)) / GIB
    allowed = min(gib, total / GIB) - context
    if allowed <= 0:
        raise ValueError(f"--gpu-memory {gib:g}: {context:.2f} GiB of {device} are in use outside "
                         "torch's allocator already (its CUDA context, other processes); give more")
    torch.cuda.set_per_process_memory_fraction(allowed * GIB / total, device)
    return MemoryCap(gib, context, allowed, total / GIB, torch.cuda.get_device_name(device))
