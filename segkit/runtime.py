"""What the hardware can do, asked in one place: the device, seeds and determinism, mixed precision,
and a cap on the CUDA allocator.

Everything here is small on purpose: branches that only a GPU takes are kept to a line or two and
tested on the CPU with stand-ins (patched capability checks).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from segkit import distributed

GIB = 2**30


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; under torchrun, this process's GPU or the CPU.

    A device that this machine does not have is refused with a one-line ``ValueError``.
    """
    if distributed.is_initialized():
        return distributed.process_device(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
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
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float16
    return torch.float16 if amp == "fp16" else torch.bfloat16


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``fp32``: what ``autocast_dtype`` chose, in the words of ``--amp``."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def describe_precision(amp: str, device: torch.device) -> str:
    """What ``autocast_dtype(amp, device)`` chose and why, for a run's header line, e.g.
    ``"precision bf16 autocast (auto: native bf16 on this CPU)"``."""
    dtype = autocast_dtype(amp, device)
    name = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[dtype]
    if dtype is torch.float16 and device.type == "cuda":
        name += " with loss scaling"
    if amp != "auto":
        return f"precision {name} (--amp {amp})"
    if device.type == "cpu":
        why = "native bf16 on this CPU" if dtype is not None else "no native bf16 on this CPU"
    elif device.type == "cuda":
        why = "native bf16 on this GPU" if dtype is torch.bfloat16 else "this GPU only emulates bf16"
    else:
        why = f"no mixed precision on {device.type}"
    return f"precision {name} (auto: {why})"


def gpu_memory_gib(device: torch.device | None = None) -> float | None:
    """Total memory of the (current) CUDA GPU in GiB, or None without CUDA."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(device or torch.cuda.current_device()).total_memory / GIB


def cap_gpu_memory(gib: float | None, device: torch.device) -> str | None:
    """Let torch's CUDA allocator use at most ``gib`` GiB of ``device``, so that a large GPU behaves
    like a small one (``--gpu-memory``); returns a line saying so, or None when nothing was capped.

    The cap covers tensors only: the CUDA context (a few hundred MB) comes on top, as on the card
    being imitated.
    """
    if gib is None or device.type != "cuda":
        return None
    if gib <= 0:
        raise ValueError(f"--gpu-memory {gib:g}: give the GiB to allow, a number above 0")
    total = gpu_memory_gib(device)
    fraction = min(1.0, gib / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return (f"CUDA allocator capped at {fraction * total:.1f} GiB of {total:.1f} GiB "
            f"({torch.cuda.get_device_name(device)})")
