"""Memory of a training step or an evaluation frame, estimated without a GPU; the batch that fits.

A training step's peak, to first order (see DESIGN.md, "Memory planning"):

    weights + optimizer state                       held across steps (Adam: 2 more per weight)
  + what autograd saves for backward                counted once per storage, scales with pixels
  + backward's gradients and temporaries            measured, also scales with pixels
  + the cuDNN/cuBLAS workspaces                     a stated allowance: held by torch's allocator
                                                    on CUDA, absent from the CPU measurement
  + the CUDA context                                a stated allowance: outside torch's allocator

The pixel-dependent parts are measured on the CPU, on real tensors, at two small sizes: the bytes
saved for backward through ``torch.autograd.graph.saved_tensors_hooks`` (each storage once: views
and in-place results share one; meta tensors have no storage identity and would double-count), and
the peak of a whole step through torch's CPU profiler. Both are straight lines in batch x pixels,
fitted through the two sizes and extrapolated. For fp16 and bf16 the model runs the small forward
under CPU bf16 autocast, which keeps the same 2-byte activations that CUDA autocast keeps, and the
backward part is scaled by the same ratio. Activation checkpointing is measured with it switched on.

Honest about its error: ``tests/test_planner.py`` compares estimates with torch's measured CPU peak
at a size the fit never saw; ``segkit bench gpu`` compares ``Plan.allocator_gib`` with
``torch.cuda.max_memory_allocated``, and ``tests/test_cuda.py`` requires them within ``CUDA_ERROR``.

Calibrating takes from a second (U-Net) to minutes (DeepLabV3+ ResNet-101 in 16 bits or with
checkpointing) on a laptop CPU, so each calibration is kept, per torch version, CPU and model, in a
small JSON file under ``cache_dir()`` (``$XDG_CACHE_HOME/segkit`` or ``~/.cache/segkit``): it is
measured once per machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from segkit import __version__
from segkit.config import TrainConfig, profile_config
from segkit.io import write_json
from segkit.labels import NUM_CLASSES
from segkit.losses import build_loss
from segkit.models import build_model, list_models
from segkit.models.registry import INIT_ONLY_OPTIONS, model_info, model_options, resolve_name
from segkit.runtime import cpu_has_native_bf16
from segkit.step import random_batch, train_step

GIB = 2**30
DEFAULT_GPU_GIB = 6.0  # the original study's GTX 1660 Ti, when no GPU is visible
#: On the card outside torch's allocator: the CUDA context (about 0.3-0.5 GiB with lazy module
#: loading, CUDA 12), which ``--gpu-memory`` measures and leaves out of the allocator's cap.
CUDA_CONTEXT_GIB = 0.45
#: Held by torch's allocator beside the tensors the CPU calibration sees: the cuDNN and cuBLAS
#: workspaces (up to about 0.25 GiB while autotuning).
WORKSPACE_GIB = 0.25
#: How far ``Plan.allocator_gib`` may be from ``torch.cuda.max_memory_allocated`` over training
#: steps after the first (cuDNN's autotuning tries workspaces of any size once), as a fraction of
#: the measured peak: what ``tests/test_cuda.py`` allows, not yet measured on a GPU.
CUDA_ERROR = 0.25
#: Head-room kept free on the card, for the caching allocator's rounding and fragmentation.
MARGIN = 0.10
PRECISIONS = ("fp32", "fp16", "bf16")
#: (width, height) of the two small calibration steps, batch 2 (DeepLab's image pooling needs 2).
CALIBRATION_SIZES = ((128, 64), (256, 128))  # smaller ones mislead: oneDNN's scratch buffers
CALIBRATION_BATCH = 2
#: Bump when what a calibration measures changes (a model's layers, the training step, the
#: counting): cached calibrations of an older version are then measured again, not served stale.
CALIBRATION_VERSION = 1
#: Where the 16-bit / 32-bit ratio of saved bytes is counted (hooks count exactly at any size, and
#: bf16 is slow on CPUs without native bf16).
RATIO_SIZES = ((64, 32), (128, 64))


@dataclass(frozen=True)
class Plan:
    """The estimated peak memory of one configuration."""

    model: str
    backbone: str | None
    batch: int
    size: tuple[int, int]  # (width, height)
    precision: str  # fp32 | fp16 | bf16
    checkpointing: bool
    weights_gib: float  # the parameters (fp32; autocast's 16-bit copies count as temporaries)
    gradients_gib: float  # one per weight, made in backward and alive at the optimizer step
    optimizer_gib: float  # held across steps: Adam's two moments per weight, SGD's momentum
    activations_gib: float  # saved for backward, and backward's temporaries: the rest of the peak
    allowance_gib: float = CUDA_CONTEXT_GIB + WORKSPACE_GIB
    kind: str = "train"  # train | whole | slide

    @property
    def tensor_gib(self) -> float:
        """torch's tensors at the step's peak: weights, gradients, optimizer state, activations
        (what the CPU calibration measures, and the run record's ``peak_mb``)."""
        return self.weights_gib + self.gradients_gib + self.optimizer_gib + self.activations_gib

    @property
    def allocator_gib(self) -> float:
        """What torch's CUDA allocator holds at the peak, the tensors and the cuDNN/cuBLAS
        workspace allowance: ``torch.cuda.max_memory_allocated``'s counterpart, which the cap of
        ``--gpu-memory`` limits."""
        return self.tensor_gib + WORKSPACE_GIB

    @property
    def peak_gib(self) -> float:
        """Everything on the card: the allocator's share plus the CUDA context."""
        return self.tensor_gib + self.allowance_gib

    def breakdown(self) -> dict[str, float]:
        """The peak in parts (GiB), bottom to top as ``segkit.viz.memory_bar`` stacks them; they
        sum to ``peak_gib``."""
        return {"weights": self.weights_gib, "gradients": self.gradients_gib,
                "optimizer state": self.optimizer_gib,
                "activations and temporaries": self.activations_gib,
                "CUDA context and workspace": self.allowance_gib}

    def fits(self, gpu_gib: float, margin: float = MARGIN) -> bool:
        """Whether the peak stays below ``gpu_gib`` with ``margin`` of it left free."""
        return self.peak_gib <= gpu_gib * (1 - margin)

    def row(self, gpu_gib: float) -> dict:
        """The JSON row of ``segkit plan --json``."""
        return {"model": self.model, "backbone": self.backbone, "batch": self.batch,
                "size": f"{self.size[0]}x{self.size[1]}", "precision": self.precision,
                "checkpointing": self.checkpointing, "peak_gib": round(self.peak_gib, 3),
                "allowance_gib": round(self.allowance_gib, 3), "fits": self.fits(gpu_gib),
                "kind": self.kind}


@dataclass(frozen=True)
class _Line:
    """Bytes as ``fixed + per_pixel * batch * width * height``."""

    fixed: float
    per_pixel: float

    def at(self, pixels: int) -> float:
        return self.fixed + self.per_pixel * pixels

    @classmethod
    def through(cls, pixels: Sequence[int], values: Sequence[float]) -> _Line:
        slope = (values[1] - values[0]) / (pixels[1] - pixels[0])
        return cls(values[0] - slope * pixels[0], slope)


# --- what the configuration means -----------------------------------------------------------------

def precision_of(config: TrainConfig, device_type: str = "cuda") -> str:
    """fp32, fp16 or bf16: the activations' precision ``config.amp`` gives on the device planned
    for, when no run has resolved it (``RunContext.precision``) on the device itself; on a GPU
    ``auto`` plans 16 bits, fp16 and bf16 being the same size."""
    if config.amp == "auto":
        if device_type == "cpu":
            return "bf16" if cpu_has_native_bf16() else "fp32"
        return "fp16" if device_type == "cuda" else "fp32"  # fp16 on cards without native bf16
    return {"off": "fp32"}.get(config.amp, config.amp)


def checkpointing(config: TrainConfig) -> bool:
    """Whether ``config``'s model recomputes activations in backward (its registry's option)."""
    option = model_info(config.model).checkpoint_option
    return option is not None and bool(config.model_options.get(option))


def checkpoint_option(model: str) -> str:
    """The model option that switches activation checkpointing on (``ModelInfo.checkpoint_option``);
    a ``ValueError`` for a model without one."""
    option = model_info(model).checkpoint_option
    if option is None:
        raise ValueError(f"{resolve_name(model)} has no activation checkpointing to plan")
    return option


def _architecture(model: str, options: dict) -> tuple[tuple[str, object], ...]:
    """The options that shape memory, hashable (initial-weight and checkpointing options dropped)."""
    drop = {*INIT_ONLY_OPTIONS, model_info(model).checkpoint_option}
    return tuple(sorted((k, v) for k, v in options.items() if k not in drop))


def _backbone(model: str, options: dict) -> str | None:
    """The backbone of a model that takes one (``ModelInfo.backbone``), its default included."""
    return {**model_options(model), **options}.get("backbone") if model_info(model).backbone else None


# --- calibration on the CPU, remembered on disk -------------------------------------------------------

def cache_dir() -> Path:
    """segkit's cache folder: ``$XDG_CACHE_HOME/segkit``, else ``~/.cache/segkit``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "segkit"


def _cache_path(name: str, args: tuple) -> Path:
    """The file of one calibration: named by what it measured and everything its bytes depend on."""
    key = [name, args, CALIBRATION_VERSION, torch.__version__, __version__,
           torch.backends.cpu.get_cpu_capability(), CALIBRATION_SIZES, CALIBRATION_BATCH, RATIO_SIZES]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    return cache_dir() / "planner" / f"{name.strip('_')}-{args[0]}-{digest}.json"


def _remembered(calibrate: Callable) -> Callable:
    """``calibrate(model, architecture, ...)``, returning floats, kept in memory and in a JSON file
    under ``cache_dir()`` (written atomically: a killed run leaves no half file under its name);
    ``.known(*args)`` says whether a call would be quick."""
    memory: dict[tuple, object] = {}

    def remembered(*args):
        if args not in memory:
            memory[args] = _read_cached(_cache_path(calibrate.__name__, args))
        if memory[args] is None:
            memory[args] = calibrate(*args)
            with contextlib.suppress(OSError):  # a read-only home: calibrate again next session
                write_json(_cache_path(calibrate.__name__, args), {"value": memory[args]})
        return memory[args]

    remembered.known = lambda *args: memory.get(args) is not None or _read_cached(
        _cache_path(calibrate.__name__, args)) is not None
    remembered.cache_clear = memory.clear  # as functools.cache names it
    remembered.__doc__ = calibrate.__doc__
    return remembered


def _read_cached(path: Path) -> float | tuple[float, ...] | None:
    try:
        value = json.loads(path.read_text())["value"]
    except (OSError, ValueError, KeyError, TypeError):  # absent, or half-written by a killed run
        return None
    return tuple(value) if isinstance(value, list) else value


def _small_model(model: str, architecture: tuple, recompute: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    options = dict(architecture)
    if recompute:
        options[checkpoint_option(model)] = True
    return build_model(model, **options).train()


# --- measuring ---------------------------------------------------------------------------------

def peak_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes allocated by torch while ``fn`` runs: the CUDA allocator's, or the CPU profile's."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        return torch.cuda.max_memory_allocated(device) - before
    return peak_cpu_bytes(fn)


def peak_cpu_bytes(fn: Callable[[], None]) -> int:
    """Highest running total of CPU bytes torch allocates (minus frees) while ``fn`` runs.

    The profiler writes one ``[memory]`` event per allocation (+bytes) and free (-bytes); its
    Chrome trace is the public way to read them in time order.
    """
    # Kineto logs every profiler start and stop to stderr (and, on CUDA builds without a GPU, an
    # error); level 6 is above all of its levels.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as file:
            events = json.load(file)["traceEvents"]
    memory = sorted((e["ts"], e["args"]["Bytes"]) for e in events
                    if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0)
    total = peak = 0
    for _, nbytes in memory:
        total += nbytes
        peak = max(peak, total)
    return peak


def saved_bytes(model: torch.nn.Module, images: torch.Tensor, dtype: torch.dtype | None) -> int:
    """Bytes autograd keeps for backward after ``model(images)``: every saved storage once,
    parameters left out (they are counted as weights)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), \
            torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        model(images)
    return sum(storages.values())


def step_peak_bytes(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor,
                    optimizer: torch.optim.Optimizer) -> int:
    """Peak CPU bytes torch allocates above what it held before, over one fp32 training step
    (``segkit.step.train_step``: forward, loss, backward, optimizer step), after an untimed step
    has made the optimizer state."""
    criterion = build_loss("ce")

    def step() -> None:
        train_step(model, optimizer, images, masks, criterion)

    step()
    return peak_bytes(step, torch.device("cpu"))


def measured_step_bytes(model: str, *, batch: int, size: tuple[int, int], checkpointing: bool = False,
                        options: dict | None = None) -> int:
    """Torch's measured CPU bytes of one fp32 training step of ``model`` at ``batch`` x ``size``
    (W, H), counted as ``plan_step``'s ``tensor_gib`` counts them: the weights and Adam's two
    moments held, plus the step's peak above them (``step_peak_bytes``)."""
    name = resolve_name(model)
    net = _small_model(name, _architecture(name, options or {}), checkpointing)
    images, masks = random_batch(batch, size, torch.device("cpu"))
    peak = step_peak_bytes(net, images, masks, torch.optim.Adam(net.parameters()))
    return peak + 3 * sum(p.numel() * p.element_size() for p in net.parameters())


@_remembered
def _calibration(model: str, architecture: tuple, recompute: bool) -> tuple[float, float, int]:
    """The peak bytes of an fp32 step above the held state, a line in pixels (fixed, per pixel);
    the weights' bytes."""
    pixels, peaks = [], []
    for width, height in CALIBRATION_SIZES:
        net = _small_model(model, architecture, recompute)
        images, masks = random_batch(CALIBRATION_BATCH, (width, height), torch.device("cpu"))
        pixels.append(CALIBRATION_BATCH * width * height)
        peaks.append(step_peak_bytes(net, images, masks, torch.optim.Adam(net.parameters())))
    peak = _Line.through(pixels, peaks)
    return peak.fixed, peak.per_pixel, sum(p.numel() * p.element_size() for p in net.parameters())


def _step_line(model: str, architecture: tuple, precision: str, recompute: bool) -> tuple[_Line, int]:
    """The peak bytes of a step in ``precision`` above the held state, a line in pixels; weights."""
    fixed, per_pixel, weights = _calibration(model, architecture, recompute)
    if precision != "fp32":  # activations and backward's temporaries that mirror them shrink alike
        per_pixel *= _half_ratio(model, architecture, recompute)
    return _Line(fixed, per_pixel), weights


def calibrated(model: str, *, precision: str = "fp32", checkpointing: bool = False,
               options: dict | None = None) -> bool:
    """Whether ``plan_step`` for this model is quick: its calibration is in memory or on disk."""
    name = resolve_name(model)
    args = (name, _architecture(name, options or {}), checkpointing)
    return _calibration.known(*args) and (precision == "fp32" or _half_ratio.known(*args))


@_remembered
def _half_ratio(model: str, architecture: tuple, recompute: bool) -> float:
    """Per pixel, the bytes saved for backward under 16-bit autocast over those saved in fp32 (the
    fixed part, e.g. autocast's 16-bit copies of the weights, left out)."""
    net = _small_model(model, architecture, recompute)
    pixels, half, full = [], [], []
    for width, height in RATIO_SIZES:
        images = torch.randn(CALIBRATION_BATCH, 3, height, width)
        pixels.append(CALIBRATION_BATCH * width * height)
        half.append(saved_bytes(net, images, torch.bfloat16))
        full.append(saved_bytes(net, images, None))
    return _Line.through(pixels, half).per_pixel / _Line.through(pixels, full).per_pixel


# --- estimates --------------------------------------------------------------------------------------

def plan_step(model: str, *, batch: int, size: tuple[int, int], precision: str = "fp32",
              checkpointing: bool = False, options: dict | None = None,
              optimizer: str = "adam") -> Plan:
    """The peak memory of one training step of ``model`` (registry name) at ``batch`` x ``size``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    name = resolve_name(model)
    options = options or {}
    peak, weights = _step_line(name, _architecture(name, options), precision, checkpointing)
    state = {"sgd": 1, "adam": 2, "adamw": 2}[optimizer] * weights  # momentum / two moments
    step = max(0.0, peak.at(batch * size[0] * size[1]))  # the measured peak above the held state
    gradients = min(weights, step)  # all alive at the optimizer step; the rest mirrors activations
    return Plan(name, _backbone(name, options), batch,
                tuple(size), precision, checkpointing, weights / GIB, gradients / GIB, state / GIB,
                (step - gradients) / GIB)


def plan_config(config: TrainConfig, precision: str | None = None) -> Plan:
    """``plan_step`` for a training config (its model, options, batch, crop) in ``precision``: the
    one its run resolved (``RunContext.precision``), else ``precision_of(config)``."""
    return plan_step(config.model, batch=config.batch_size, size=config.size,
                     precision=precision or precision_of(config), checkpointing=checkpointing(config),
                     options=config.model_options, optimizer=config.optimizer)


@_remembered
def _eval_line(model: str, architecture: tuple, precision: str) -> tuple[float, float, int]:
    """Peak bytes of one forward pass under inference_mode, a line in pixels (fixed, per pixel);
    weight bytes."""
    dtype = None if precision == "fp32" else torch.bfloat16
    net = _small_model(model, architecture, False).eval()
    pixels, peaks = [], []
    for width, height in CALIBRATION_SIZES:
        images = torch.randn(1, 3, height, width)

        def forward(images: torch.Tensor = images) -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.float32,
                                                        enabled=dtype is not None):
                net(images)

        pixels.append(width * height)
        peaks.append(peak_bytes(forward, torch.device("cpu")))
    line = _Line.through(pixels, peaks)
    return line.fixed, line.per_pixel, sum(p.numel() * p.element_size() for p in net.parameters())


def plan_eval(model: str, *, size: tuple[int, int] = (2048, 1024), mode: str = "whole",
              window: tuple[int, int] | None = None, precision: str = "fp32",
              options: dict | None = None) -> Plan:
    """The peak memory of scoring one frame of ``size``: the whole frame in one pass, or windows
    of ``window`` slid over it, their logits summed a window's height of rows at a time (as
    ``segkit.inference.slide_bands`` does for a single pass) into the frame's class map."""
    name = resolve_name(model)
    options = options or {}
    fixed, per_pixel, weights = _eval_line(name, _architecture(name, options), precision)
    line = _Line(fixed, per_pixel)
    width, height = size
    frame = 3 * width * height * 4  # the normalised input frame, fp32
    if mode == "slide":
        window = window or (1024, 512)
        # fp32 sums and counts of a window's height of rows, and the uint8 class map of the frame
        logits = (NUM_CLASSES + 1) * min(window[1], height) * width * 4 + width * height
        activations = frame + logits + line.at(window[0] * window[1])
    else:
        activations = line.at(width * height)
    return Plan(name, _backbone(name, options), 1, tuple(size),
                precision, False, weights / GIB, 0.0, 0.0, activations / GIB, kind=mode)


# --- choosing and confirming a batch -------------------------------------------------------------

def choose_batch_size(config: TrainConfig, gpu_gib: float, *, precision: str | None = None,
                      margin: float = MARGIN, largest: int = 64) -> int:
    """The largest batch (at most ``largest``) whose planned step in ``precision`` (as for
    ``plan_config``) fits ``gpu_gib``; at least the smallest batch the model trains on."""
    smallest = model_info(config.model).min_batch
    fitting = [b for b in range(smallest, largest + 1)
               if plan_config(config.replace(batch_size=b), precision).fits(gpu_gib, margin)]
    return max(fitting, default=smallest)


def confirm_batch_size(step: Callable[[int], None], batch: int, smallest: int = 1) -> int:
    """Run ``step(batch)`` (one real forward + backward), halving the batch on out-of-memory until
    one runs, as Lightning's batch-size finder backs off, never below ``smallest`` (the smallest
    batch the model trains on); returns the batch that ran."""
    while True:
        try:
            step(batch)
            return batch
        except torch.OutOfMemoryError:
            if batch // 2 < smallest:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch //= 2


# --- tables ----------------------------------------------------------------------------------------

def profile_plans(profile: str, models: Iterable[str] | None = None,
                  *, eval_size: tuple[int, int] = (2048, 1024)) -> list[Plan]:
    """For each model (default: every registered one), ``profile``'s own training step and its
    sliding-window evaluation of one full-resolution frame (windows of the training crop)."""
    plans = []
    for model in models or list_models():
        config = profile_config(model, profile)
        plans.append(plan_config(config))
        plans.append(plan_eval(model, size=eval_size, mode="slide", window=config.size,
                               precision=precision_of(config), options=config.model_options))
    return plans


def grid_plans(models: Sequence[str], *, batches: Sequence[int], sizes: Sequence[tuple[int, int]],
               precisions: Sequence[str], checkpointing: Sequence[bool],
               options: dict[str, dict] | None = None) -> list[Plan]:
    """``plan_step`` over every combination (models x precision x checkpointing x batch x size)."""
    return [plan_step(model, batch=batch, size=size, precision=precision, checkpointing=recompute,
                      options=(options or {}).get(model))
            for model in models for precision in precisions for recompute in checkpointing
            for batch in batches for size in sizes]


def format_plans(plans: Sequence[Plan], gpu_gib: float, margin: float = MARGIN) -> str:
    """A text table of ``plans`` with a fit mark for ``gpu_gib``."""
    lines = [f"planned for {gpu_gib:g} GiB, {margin:.0%} kept free; peak = torch's tensors + "
             f"{WORKSPACE_GIB:.2f} GiB cuDNN/cuBLAS workspace + {CUDA_CONTEXT_GIB:.2f} GiB CUDA context",
             f"{'model':<15}{'backbone':<20}{'what':<7}{'batch':>5} {'size':>10} {'precision':<10}"
             f"{'ckpt':<6}{'tensors':>9} {'peak':>8}  fits"]
    for plan in plans:
        size = f"{plan.size[0]}x{plan.size[1]}"
        lines.append(f"{plan.model:<15}{plan.backbone or '-':<20}{plan.kind:<7}{plan.batch:>5} "
                     f"{size:>10} {plan.precision:<10}{'yes' if plan.checkpointing else 'no':<6}"
                     f"{plan.tensor_gib:>7.2f}Gi {plan.peak_gib:>6.2f}Gi  "
                     f"{'yes' if plan.fits(gpu_gib, margin) else 'NO'}")
    return "\n".join(lines)


def default_gpu_gib() -> float:
    """The visible GPU's memory in GiB, else ``DEFAULT_GPU_GIB``."""
    from segkit.runtime import gpu_memory_gib

    return gpu_memory_gib() or DEFAULT_GPU_GIB

