"""The benchmark helpers' own logic, on tiny stand-ins (no real timing claims)."""

import time

import pytest
import torch
from torch.utils.data import Dataset
from torch.utils.flop_counter import FlopCounterMode

from segkit import bench
from segkit.bench import loader_samples_per_s, model_step_flops, step_flops
from segkit.models import build_model


class SlowSamples(Dataset):
    """Six samples, each taking ``seconds`` to produce without using the CPU (a sleep)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int):
        time.sleep(self.seconds)
        return torch.zeros(3, 2, 2), torch.zeros(2, 2, dtype=torch.int64)


def test_loader_rate_is_timed_over_batches_not_short_epochs():
    dataset = SlowSamples(0.05)
    one = loader_samples_per_s(dataset, batch_size=2, num_workers=0, batches=12)
    assert 14 < one < 21  # 20 samples/s at most: 50 ms a sample, more than one epoch's 3 batches
    two = loader_samples_per_s(dataset, batch_size=2, num_workers=2, batches=12)
    assert two / one > 1.6  # whole three-batch epochs capped this at 1.5x


def _forward_flops(model: torch.nn.Module, images: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(images)
    return counter.get_total_flops()


def _sum_loss(logits: torch.Tensor, _masks: torch.Tensor) -> torch.Tensor:
    return logits.sum()


def test_grouped_convolutions_count_their_backward_as_twice_their_forward():
    torch.manual_seed(0)
    depthwise = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 5, padding=2, groups=32),
                                    torch.nn.Conv2d(32, 32, 3, padding=1, groups=32))
    images = torch.randn(2, 32, 16, 16, requires_grad=True)  # so both layers have an input gradient
    masks = torch.zeros(2, 16, 16, dtype=torch.int64)
    forward = _forward_flops(depthwise, images)
    assert step_flops(depthwise, images, masks, _sum_loss) == pytest.approx(3 * forward, rel=0.02)
    with FlopCounterMode(display=False) as raw:  # torch's own count: weight gradients 32x too many
        depthwise(images).sum().backward()
    assert raw.get_total_flops() > 10 * forward


def test_plain_convolutions_count_as_torch_counts_them():
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 19, 1), torch.nn.ConvTranspose2d(19, 19, 2, stride=2))
    images = torch.randn(2, 3, 8, 8)
    masks = torch.randint(0, 19, (2, 16, 16))
    criterion = torch.nn.CrossEntropyLoss()
    with FlopCounterMode(display=False) as raw:
        criterion(plain(images), masks).backward()
    assert step_flops(plain, images, masks, criterion) == raw.get_total_flops() > 0


def test_a_models_step_flops_are_counted_on_two_frames_and_scaled():
    torch.manual_seed(0)
    model = build_model("unet", base_channels=4).train()
    images, masks = torch.randn(4, 3, 32, 64), torch.randint(0, 19, (4, 32, 64))
    counted = step_flops(model, images, masks, torch.nn.CrossEntropyLoss(ignore_index=255))
    assert model_step_flops("unet", (64, 32), 4, base_channels=4) == counted


def test_bench_train_reports_gflops_against_the_matmul_peak(monkeypatch, capsys):
    monkeypatch.setattr(bench, "measure_step", lambda *args, **kwargs: {"img_per_s": 4.0, "peak_mb": 1.0})
    monkeypatch.setattr(bench, "model_step_flops", lambda name, size, batch: 3e9 * batch / 8)
    monkeypatch.setattr(bench, "matmul_gflops", lambda device, dtype=None: 10.0)
    monkeypatch.setattr(bench, "bench_confusion", lambda: {
        "confmat_ms": 1.0, "reference_ms": 2.0, "confmat_speedup": 2.0, "confmat_peak_mb": 1.0,
        "reference_peak_mb": 2.0, "confmat_memory_ratio": 0.5})
    figures = bench.bench_train(sizes=((64, 32), (128, 64)), device="cpu", bf16=False)
    for name in ("my_fcn", "unet", "deeplabv3plus"):
        assert figures[f"{name}_gflops"] == pytest.approx(1.5)  # 3 GFLOP a step of 8 at 4 img/s
        assert figures[f"{name}_peak_fraction"] == pytest.approx(0.15)
    assert figures["matmul_peak_gflops"] == {"fp32": 10.0}
    assert figures["steps"]["unet@128x64/channels_last"]["gflop"] == pytest.approx(3.0)
    printed = capsys.readouterr().out
    assert "matmul peak (best of 5): fp32 10.0 GFLOP/s" in printed
    assert "1.5 GFLOP/s (15.0 % of the fp32 matmul peak)" in printed


def test_bench_synth_prints_the_rate_and_the_measures_beside_the_real_figures(capsys):
    figures = bench.bench_synth(frames=1, size=(64, 32), measure_frames=1, measure_size=(128, 64))
    assert figures["frames_per_s"] > 0 and figures["measure_frames"] == 2
    assert figures["realism"]["frames"] == 2 and "car" in figures["realism"]["objects"]
    assert isinstance(figures["shortfalls"], list)
    printed = capsys.readouterr().out
    assert "generation at 64x32:" in printed and "frames/s" in printed
    assert "measured on real Cityscapes frames at 512x256" in printed
    assert "Laplacian variance (grain)" in printed and "267-363" in printed


def test_the_matmul_peak_is_a_positive_rate():
    assert bench.matmul_gflops(torch.device("cpu"), n=64, repeats=2) > 0
