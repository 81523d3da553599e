"""Benchmarks that print measured figures; ratios compare paths measured in the same run.

Training steps are timed, counted and profiled as ``segkit.step`` runs them, the step ``fit`` takes.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils import flop_counter
from torch.utils.data import DataLoader, RandomSampler

from segkit.datasets import CityscapesSegmentation
from segkit.labels import IGNORE_INDEX, NUM_CLASSES
from segkit.losses import build_loss
from segkit.metrics import ConfusionMatrix
from segkit.models import build_model, list_models
from segkit.models.registry import model_info
from segkit.planner import peak_bytes
from segkit.prepare import prepare
from segkit.runtime import autocast_dtype, cpu_has_native_bf16, precision_name, resolve_device
from segkit.step import best_seconds, config_step, gradient_pass, random_batch
from segkit.synthetic import generate, realism
from segkit.transforms import eval_transforms, train_transforms


def machine() -> str:
    """A one-line description of where a benchmark ran."""
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
            f"({threads} torch threads), {gpu}, torch {torch.__version__}")


def loader_samples_per_s(dataset, *, batch_size: int, num_workers: int, batches: int = 12) -> float:
    """Steady-state samples/s of a training DataLoader over ``dataset``, timed over ``batches``.

    Indices are drawn with replacement, so the loader never ends an epoch: whole epochs of a few
    batches would drain the workers at every epoch end and cap the measured worker speed-up (at
    1.5x for three-batch epochs). The first batch of each worker is untimed: it pays their start-up.
    """
    warmup = max(num_workers, 1)
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch_size * (warmup + batches))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    batch_iter = iter(loader)
    for _ in range(warmup):
        next(batch_iter)
    started, samples = time.perf_counter(), 0
    for images, _masks in batch_iter:
        samples += len(images)
    return samples / (time.perf_counter() - started)


def load_ms(dataset, size: tuple[int, int]) -> float:
    """Milliseconds to read one frame and bring it to ``size`` (no augmentation), in this process."""
    resize = eval_transforms(size=size)
    started = time.perf_counter()
    for index in range(len(dataset)):
        resize(*dataset.load(index))
    return 1000 * (time.perf_counter() - started) / len(dataset)


def bench_data(*, data: str | None = None, frames: int = 24, size: tuple[int, int] = (512, 256),
               raw_size: tuple[int, int] = (2048, 1024), batch_size: int = 8,
               workers: tuple[int, ...] = (0, 2)) -> dict:
    """Training-data throughput from the prepared cache vs raw full-size files, in one run.

    Synthesises ``frames`` training frames of ``raw_size`` in a temporary folder unless
    ``data`` names an official-layout root, prepares them at ``size``, then loads both with the same
    training preset (``segkit.transforms.train_transforms``) and ``num_workers`` in ``workers``.
    Prints a table and returns the figures.
    """
    figures: dict = {"machine": machine(), "size": list(size), "raw_size": list(raw_size),
                     "batch_size": batch_size}
    with tempfile.TemporaryDirectory(prefix="segkit-bench-") as tmp:
        raw_root = Path(data) if data else Path(tmp, "raw")
        if data is not None:
            figures["raw_size"] = list(CityscapesSegmentation(raw_root, "train").load(0)[0].shape[:0:-1])
        else:
            started = time.perf_counter()
            generate(raw_root, size=raw_size, frames=frames, cities={"train": ("hamburg",)},
                     progress=False)
            figures["synth_frames_per_s"] = frames / (time.perf_counter() - started)
        started = time.perf_counter()
        result = prepare(raw_root, Path(tmp, "prepared"), select={"train": None}, size=size,
                         workers=0, progress=False)
        prepared_frames = sum(result["counts"]["train"].values())
        figures["prepare_frames_per_s"] = prepared_frames / (time.perf_counter() - started)
        transform = train_transforms(size=size)
        sources = {"prepared": Path(tmp, "prepared"), "raw": raw_root}
        for name, root in sources.items():
            figures[f"{name}_load_ms"] = load_ms(CityscapesSegmentation(root, "train"), size)
        figures["load_speedup"] = figures["raw_load_ms"] / figures["prepared_load_ms"]
        for num_workers in workers:
            for name, root in sources.items():
                dataset = CityscapesSegmentation(root, "train", transforms=transform)
                figures[f"{name}_samples_per_s_w{num_workers}"] = loader_samples_per_s(
                    dataset, batch_size=batch_size, num_workers=num_workers)
    best = max(workers)
    figures["prepared_samples_per_s"] = figures[f"prepared_samples_per_s_w{best}"]
    figures["raw_samples_per_s"] = figures[f"raw_samples_per_s_w{best}"]
    figures["speedup"] = figures["prepared_samples_per_s"] / figures["raw_samples_per_s"]
    figures["batch_ms_prepared"] = 1000 * batch_size / figures["prepared_samples_per_s"]
    step = measure_step("my_fcn", size, batch_size, torch.device("cpu"), False, None)
    figures["my_fcn_step_ms"] = 1000 * batch_size / step["img_per_s"]
    _print_data_table(figures, workers)
    return figures


def _print_data_table(figures: dict, workers: tuple[int, ...]) -> None:
    width, height = figures["size"]
    print(f"segkit bench data — {figures['machine']}")
    print(f"training samples/s at {width}x{height}, batch {figures['batch_size']}:")
    raw_label = "raw {}x{}".format(*figures["raw_size"])
    print(f"{'num_workers':>12} {'prepared':>10} {raw_label:>14} {'speedup':>8}")
    for n in workers:
        prepared, raw = figures[f"prepared_samples_per_s_w{n}"], figures[f"raw_samples_per_s_w{n}"]
        print(f"{n:>12} {prepared:>10.1f} {raw:>14.1f} {prepared / raw:>7.1f}x")
    print(f"reading one frame and resizing it to {width}x{height} (no augmentation): prepared "
          f"{figures['prepared_load_ms']:.1f} ms, raw {figures['raw_load_ms']:.1f} ms "
          f"({figures['load_speedup']:.1f}x)")
    if "synth_frames_per_s" in figures:
        print(f"synthetic generation at {raw_label}: {figures['synth_frames_per_s']:.2f} frames/s")
    print(f"preparation to {width}x{height}: {figures['prepare_frames_per_s']:.2f} frames/s")
    print(f"one batch of {figures['batch_size']} from the prepared cache: "
          f"{figures['batch_ms_prepared']:.0f} ms; one my_fcn training step on it: "
          f"{figures['my_fcn_step_ms']:.0f} ms")


# --- synthetic data: generation rate and realism against real Cityscapes ------------------------

def bench_synth(*, frames: int = 8, size: tuple[int, int] = (2048, 1024), measure_frames: int = 48,
                measure_size: tuple[int, int] = realism.MEASURE_SIZE, seed: int = 0) -> dict:
    """Synthetic generation's frames/s and how real its frames look, in one run.

    Generates ``frames`` training frames of ``size`` in a temporary folder (rendering and writing
    the PNGs, as ``segkit synth`` does) for the rate; then a set like the ``cpu`` course's,
    ``measure_frames`` train and as many val frames of ``measure_size`` from ``seed``, whose
    realism measures (``segkit.synthetic.realism``) are printed beside the real Cityscapes
    figures of ``realism.REAL``. Returns the figures, with ``realism`` the measures and
    ``shortfalls`` what misses the realism thresholds (``realism.DONE``) (empty when nothing does).
    """
    figures: dict = {"machine": machine(), "cpu": cpu_model(), "size": list(size), "frames": frames,
                     "measure_size": list(measure_size), "measure_frames": 2 * measure_frames}
    with tempfile.TemporaryDirectory(prefix="segkit-bench-synth-") as tmp:
        started = time.perf_counter()
        generate(Path(tmp, "rate"), size=size, frames=frames, seed=seed,
                 cities={"train": ("hamburg",)}, progress=False)
        figures["frames_per_s"] = frames / (time.perf_counter() - started)
        measured = Path(tmp, "measure")
        generate(measured, size=measure_size, frames=measure_frames, seed=seed,
                 cities={"train": ("hamburg",), "val": ("frankfurt",)}, progress=False)
        result = realism.measure(realism.official_frames(measured))
    figures["realism"] = dataclasses.asdict(result)
    figures["shortfalls"] = realism.shortfalls(result)
    _print_synth_table(figures, result)
    return figures


def cpu_model() -> str:
    """The processor's model name as the kernel reports it (``lscpu``'s), else the platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _span(low: float, high: float, fmt: str) -> str:
    return format(low, fmt) if low == high else f"{low:{fmt}}-{high:{fmt}}"


def _print_synth_table(figures: dict, result: realism.Realism) -> None:
    real = realism.REAL
    width, height = figures["size"]
    print(f"segkit bench synth — {figures['cpu']}; {figures['machine']}")
    print(f"generation at {width}x{height}: {figures['frames_per_s']:.2f} frames/s "
          f"({figures['frames']} frames rendered and written with their labels)")
    print("realism at {}x{} over {} frames, beside real Cityscapes ({}):".format(
        *figures["measure_size"], result.frames, real["source"]))
    rows = [("Laplacian variance (grain)", f"{result.laplacian_var:.0f}",
             _span(*real["laplacian_var"], ".0f")),
            ("flat 3x3 neighbourhoods (std < 0.5)", f"{100 * result.flat_share:.1f} %",
             _span(*(100 * v for v in real["flat_share"]), ".1f") + " %"),
            ("mean saturation (HSV S, 0-255)", f"{result.saturation:.1f}",
             _span(*real["saturation"], ".0f")),
            ("std of RGB", f"{result.rgb_std:.1f}", _span(*real["rgb_std"], ".0f"))]
    for name, colour in real["colour"].items():
        spread = real["colour_std"].get(name)
        rows.append((f"{name} colour, mean RGB",
                     ",".join(f"{c:.0f}" for c in result.colour[name])
                     + f" ± {result.colour_std[name]:.0f}",
                     ",".join(f"{c:.0f}" for c in colour) + (f" ± {spread:.0f}" if spread else "")))
    for name, (count, size) in real["objects"].items():
        ours = result.objects[name]
        rows.append((f"{name}s per frame / median px", f"{ours[0]:.1f} / {ours[1]:.0f}",
                     f"{count:.1f}" + (f" / {size:.0f}" if size else "")))
    print(f"{'measure':<38} {'synthetic':>18} {'real Cityscapes':>18}")
    for name, ours, theirs in rows:
        print(f"{name:<38} {ours:>18} {theirs:>18}")
    if figures["shortfalls"]:
        print("short of the realism thresholds: " + "; ".join(figures["shortfalls"]))
    else:
        print("within the realism thresholds (grain and flat areas within 1.5x, saturation "
              "and colours within 15 %, at least 4 cars a frame of at most twice the real size)")


# --- confusion matrix: bincount against a one-hot reference ---------------------------------

def one_hot_confusion_reference(pred: Tensor, target: Tensor, num_classes: int = NUM_CLASSES,
                                ignore_index: int = IGNORE_INDEX) -> Tensor:
    """The confusion matrix (C, C) the naive way: one-hot encode both maps, then one matmul.

    Only a baseline for ``bench_confusion``: the one-hot maps take P x C float64 values each (P
    pixels), against the P int32 indices of ``ConfusionMatrix``. float64 keeps the counts exact
    (BLAS sums in floating point). Dropped targets encode as a zero row.
    """
    target = target.flatten().long()
    pred = pred.flatten().long()
    valid = (target >= 0) & (target < num_classes) & (target != ignore_index)
    # Row C of this (C + 1, C) code book is all zeros: the code of a dropped target.
    codes = torch.eye(num_classes + 1, num_classes, dtype=torch.float64, device=target.device)
    target_hot = codes[torch.where(valid, target, num_classes)]  # (P, C)
    pred_hot = codes[pred]  # (P, C)
    return (target_hot.T @ pred_hot).round().long()  # (C, P) @ (P, C)


def bench_confusion(size: tuple[int, int] = (256, 512), batch: int = 8,
                    num_classes: int = NUM_CLASSES, repeats: int = 5,
                    seed: int = 0) -> dict[str, float]:
    """Time and memory of ``ConfusionMatrix.update`` against ``one_hot_confusion_reference`` on CPU.

    The inputs are ``batch`` random int64 maps of ``size`` (H, W) with 10 % ignored target pixels.
    Time is the best of ``repeats`` runs after one warm-up (the least disturbed by other processes).
    Peak memory is measured, not derived: a separate run under ``torch.profiler`` with
    ``profile_memory=True`` records every CPU allocation and free made by torch, and the peak is
    the highest running total of those bytes (inputs allocated beforehand are not counted).

    Returns:
        ``confmat_ms``, ``reference_ms``, ``confmat_speedup`` (reference / confmat time),
        ``confmat_peak_mb``, ``reference_peak_mb``, ``confmat_memory_ratio`` (confmat / reference
        peak), with MB = 2**20 bytes.
    """
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (batch, *size), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.1] = IGNORE_INDEX
    pred = torch.randint(0, num_classes, (batch, *size), generator=generator)
    confmat = ConfusionMatrix(num_classes, device="cpu")

    def run_confmat() -> None:
        confmat.update(pred, target)

    def run_reference() -> None:
        one_hot_confusion_reference(pred, target, num_classes)

    confmat_s = best_seconds(run_confmat, repeats)
    reference_s = best_seconds(run_reference, repeats)
    confmat_peak = peak_bytes(run_confmat, torch.device("cpu"))
    reference_peak = peak_bytes(run_reference, torch.device("cpu"))
    confmat.reset()
    confmat.update(pred, target)
    if not torch.equal(confmat.mat, one_hot_confusion_reference(pred, target, num_classes)):
        raise AssertionError("ConfusionMatrix and the one-hot reference disagree")
    return {
        "confmat_ms": 1e3 * confmat_s,
        "reference_ms": 1e3 * reference_s,
        "confmat_speedup": reference_s / confmat_s,
        "confmat_peak_mb": confmat_peak / 2**20,
        "reference_peak_mb": reference_peak / 2**20,
        "confmat_memory_ratio": confmat_peak / reference_peak,
    }


# --- training step: models x sizes x precision / memory layout -----------------------------------

def variants(device: torch.device, bf16: bool | None = None) -> dict[str, tuple[bool, torch.dtype | None]]:
    """Variant name -> (channels_last, autocast dtype) worth measuring on ``device``.

    On the CPU, bf16 autocast is measured only where the CPU has native bf16 (or ``bf16=True``):
    elsewhere it is emulated, and was measured over 30x slower than fp32 (my_fcn, AVX2 machine).
    """
    choices = {"fp32": (False, None), "channels_last": (True, None)}
    if device.type == "cuda":
        choices["amp"] = (False, autocast_dtype("auto", device))
    elif bf16 or (bf16 is None and cpu_has_native_bf16()):
        choices["bf16"] = (False, torch.bfloat16)
    return choices


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                        output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """torch's count of a convolution's backward, with grouped convolutions counted right.

    torch counts a grouped convolution's weight gradient as if the convolution were dense:
    ``groups`` times too many FLOPs (with MobileNetV3's depthwise convolutions, DeepLabV3+ counted
    1.78x the FLOPs of its training step). Its input gradient and its weight gradient each cost
    what its forward does, and so they are counted here.
    """
    if groups == 1:
        return flop_counter.conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding,
                                               dilation, transposed, output_padding, groups,
                                               output_mask, out_val=out_shape, **kwargs)
    forward = flop_counter.conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def step_flops(model: torch.nn.Module, images: Tensor, masks: Tensor, criterion) -> int:
    """FLOPs of one forward + backward pass of ``model`` on ``images`` (N, 3, H, W), as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them (matmuls and convolutions, two FLOPs
    per multiply-add), but with grouped convolutions' backward counted right (``_conv_backward_flop``).
    """
    counter = flop_counter.FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})
    with counter:
        gradient_pass(model, images, masks, criterion)
    return counter.get_total_flops()


def model_step_flops(name: str, size: tuple[int, int], batch_size: int, **options) -> int:
    """FLOPs of one training step (forward + backward) of model ``name`` at ``size`` (W, H) and
    ``batch_size``, counted on a batch of two and scaled: every counted FLOP grows with the batch."""
    torch.manual_seed(0)
    model = build_model(name, **options).train()
    counted = min(batch_size, 2)  # batch norm in training needs two values per channel
    images, masks = random_batch(counted, size, torch.device("cpu"))
    return step_flops(model, images, masks, build_loss("ce")) * batch_size // counted


def matmul_gflops(device: torch.device, dtype: torch.dtype | None = None, n: int | None = None,
                  repeats: int = 5) -> float:
    """This machine's measured matmul peak: GFLOP/s of an ``n`` x ``n`` matmul in ``dtype`` (fp32
    when None) on ``device``, best of ``repeats`` after a warm-up (n: 2048 on the CPU, 8192 on CUDA).

    On CUDA the fp32 matmul may use TF32 exactly when cuDNN's convolutions do (torch's default lets
    convolutions use it, not matmuls), so that fp32 training steps are compared with what they get.
    """
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    b = torch.randn(n, n, device=device, dtype=dtype or torch.float32)

    def run() -> None:
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        seconds = best_seconds(run, repeats)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * n**3 / seconds / 1e9


def measure_step(name: str, size: tuple[int, int], batch_size: int, device: torch.device,
                 channels_last: bool, dtype: torch.dtype | None, repeats: int = 1,
                 **options) -> dict[str, float]:
    """img/s (best of ``repeats`` timed steps) and peak memory (one profiled step) of a model."""
    torch.manual_seed(0)
    model = build_model(name, **options).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images, masks = random_batch(batch_size, size, device, channels_last=channels_last)
    criterion = build_loss("ce")

    def step() -> None:  # forward and backward as fit runs them; no optimizer step, as ever here
        gradient_pass(model, images, masks, criterion, dtype=dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()

    peak = peak_bytes(step, device)  # doubles as the warm-up step
    seconds = best_seconds(step, repeats, warmup=False)
    return {"img_per_s": batch_size / seconds, "peak_mb": peak / 2**20}


def bench_train(*, models: Sequence[str] | None = None,
                sizes: Sequence[tuple[int, int]] = ((256, 128), (512, 256)), batch_size: int = 8,
                repeats: int = 1, device: str = "auto", full: bool = False,
                bf16: bool | None = None) -> dict:
    """Training-step throughput, GFLOP/s against the measured matmul peak, and peak memory per
    model, size and variant, plus the confusion matrix benchmark; on CUDA also DeepLabV3+ R101 at
    2048×1024 (batch 2, AMP, checkpointing).

    A step's FLOPs are counted once per model and size (``model_step_flops``); its GFLOP/s are
    compared with ``matmul_gflops`` in the step's precision, measured in the same run. The figures
    ``{model}_gflops`` and ``{model}_peak_fraction`` are those of the fp32 variant at the smallest
    size (the one every model runs). ``models``: default every registered one. On the CPU, models
    with a full backbone (DeepLabV3+) run only at the smallest size unless ``full`` (they alone
    would take minutes). ``bf16``: measure CPU bf16 autocast (default: only with
    native bf16 support). Prints a table and returns the figures.
    """
    run_device = resolve_device(device)
    figures: dict = {"machine": machine(), "device": str(run_device), "batch_size": batch_size,
                     "steps": {}}
    if run_device.type == "cpu" and "bf16" not in variants(run_device, bf16):
        print("bf16 not measured: this CPU has no native bf16 (AVX512-BF16/AMX); --bf16 forces it")
    dtypes = {dtype for _, dtype in variants(run_device, bf16).values()}
    peaks = {precision_name(dtype): matmul_gflops(run_device, dtype) for dtype in dtypes}
    figures["matmul_peak_gflops"] = peaks
    print("matmul peak (best of 5): " + ", ".join(f"{name} {gflops:.1f} GFLOP/s"
                                                  for name, gflops in sorted(peaks.items())), flush=True)
    for name in models or list_models():
        for size in sizes:
            if model_info(name).backbone and run_device.type == "cpu" and not full \
                    and size != min(sizes):
                continue
            flops = model_step_flops(name, size, batch_size)
            for variant, (channels_last, dtype) in variants(run_device, bf16).items():
                key = f"{name}@{size[0]}x{size[1]}/{variant}"
                step = measure_step(name, size, batch_size, run_device, channels_last, dtype, repeats)
                step["gflop"] = flops / 1e9
                step["gflops"] = step["gflop"] * step["img_per_s"] / batch_size
                step["peak_fraction"] = step["gflops"] / peaks[precision_name(dtype)]
                figures["steps"][key] = step
                print(f"{key:<36} {step['img_per_s']:8.2f} img/s {step['peak_mb']:9.0f} MB peak "
                      f"{step['gflops']:8.1f} GFLOP/s ({100 * step['peak_fraction']:4.1f} % of the "
                      f"{precision_name(dtype)} matmul peak)", flush=True)
        first = figures["steps"].get(f"{name}@{min(sizes)[0]}x{min(sizes)[1]}/fp32")
        if first is not None:
            figures[f"{name}_gflops"] = first["gflops"]
            figures[f"{name}_peak_fraction"] = first["peak_fraction"]
    if run_device.type == "cuda":
        figures["deeplab_r101_2048x1024_b2_amp_ckpt"] = measure_step(
            "deeplabv3plus", (2048, 1024), 2, run_device, True, autocast_dtype("auto", run_device),
            repeats, checkpoint_backbone=True)
        print(f"deeplabv3plus R101 2048x1024 batch 2, AMP + checkpointing: "
              f"{figures['deeplab_r101_2048x1024_b2_amp_ckpt']['peak_mb']:.0f} MB peak")
    figures.update(bench_confusion())
    print(f"confusion matrix, 8 maps of 512x256: bincount {figures['confmat_ms']:.1f} ms, "
          f"one-hot {figures['reference_ms']:.1f} ms ({figures['confmat_speedup']:.0f}x faster); "
          f"peak {figures['confmat_peak_mb']:.1f} MB vs {figures['reference_peak_mb']:.1f} MB "
          f"({1 / figures['confmat_memory_ratio']:.0f}x less)")
    return figures


# --- GPU: the laptop profile under a memory cap ---------------------------------------------------

def bench_gpu(*, models: Sequence[str] | None = None, profile: str = "laptop", cap_gib: float = 6.0,
              steps: int = 5, frames: int = 8) -> dict | None:
    """Per model (default: every registered one), in ``profile``'s settings imitating a card of
    ``cap_gib`` GiB: training img/s, peak memory measured (``torch.cuda.max_memory_allocated``
    over the steps after the first, whose cuDNN autotuning tries workspaces of any size once)
    against the planner's estimate of what the allocator holds (``Plan.allocator_gib``), and the
    training loader's samples/s against the step rate (below it, the GPU waits for data). Each
    model's run is resolved as ``segkit train`` resolves it (``segkit.context.resolve_run``: the
    cap, the precision and its fp16 trial).

    Returns None without CUDA (nothing is measured). Prints a table and returns the figures.
    """
    if not torch.cuda.is_available():
        return None
    from segkit import planner
    from segkit.config import get_profile, profile_config
    from segkit.context import resolve_run

    figures: dict = {"machine": machine(), "profile": profile, "cap_gib": cap_gib, "models": {}}
    print(f"segkit bench gpu — {figures['machine']}; a {cap_gib:g} GiB card imitated")
    with tempfile.TemporaryDirectory(prefix="segkit-bench-gpu-") as tmp:
        generate(Path(tmp, "raw"), size=get_profile(profile).synth_size, frames=frames,
                 cities={"train": ("hamburg",)}, progress=False)
        prepare(Path(tmp, "raw"), Path(tmp, "prepared"), select={"train": None}, workers=0,
                progress=False)
        for name in models or list_models():
            config = profile_config(name, profile, gpu_memory=cap_gib)
            config = config.replace(model_options={**config.model_options, "pretrained_backbone": False})
            config, context = resolve_run(config, profile=profile)
            figures.update(device=str(context.device), cap=str(context.memory_cap))
            row = _gpu_step_figures(config, context.device, context.dtype, steps)
            row["precision"] = context.precision
            row["planned_gib"] = planner.plan_config(config, context.precision).allocator_gib
            row["planned_error"] = row["planned_gib"] / row["peak_gib"] - 1
            dataset = CityscapesSegmentation(Path(tmp, "prepared"), "train",
                                             train_transforms(size=config.size,
                                                              base_height=config.base_height))
            row["loader_samples_per_s"] = loader_samples_per_s(
                dataset, batch_size=config.batch_size, num_workers=config.num_workers)
            row["starved"] = row["loader_samples_per_s"] < row["img_per_s"]
            torch.cuda.empty_cache()
            figures["models"][name] = row
            print(f"{name:<14} batch {config.batch_size} {config.size[0]}x{config.size[1]} "
                  f"{context.precision}{' +checkpointing' if planner.checkpointing(config) else ''}: "
                  f"{row['img_per_s']:7.1f} img/s, peak {row['peak_gib']:.2f} GiB (planned "
                  f"{row['planned_gib']:.2f}, {100 * row['planned_error']:+.0f} %), loader "
                  f"{row['loader_samples_per_s']:.1f} samples/s"
                  f"{' — the GPU waits for data' if row['starved'] else ''}", flush=True)
    return figures


def _gpu_step_figures(config, device: torch.device, dtype: torch.dtype | None,
                      steps: int) -> dict[str, float]:
    """img/s over ``steps`` timed optimizer steps in autocast ``dtype`` and the peak allocated GiB
    over them, after one untimed step (which makes Adam's state and autotunes cuDNN)."""
    step = config_step(config, device, dtype=dtype)
    step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return {"img_per_s": steps * config.batch_size / seconds,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}
