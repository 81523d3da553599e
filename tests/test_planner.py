"""The memory planner against torch's measured CPU peak, and the batch choice built on it."""

import json

import pytest
import torch

from segkit import planner
from segkit.cli import main
from segkit.config import profile_config
from segkit.models import build_model

#: A size the planner's calibration (128x64 and 256x128, batch 2) never ran: an extrapolation.
CHECK_BATCH, CHECK_SIZE = 3, (320, 160)


def measured_step_bytes(name, options, batch, size):
    """Weights + Adam state + torch's measured CPU peak of one fp32 step above them."""
    torch.manual_seed(0)
    net = build_model(name, **options).train()
    width, height = size
    images = torch.randn(batch, 3, height, width)
    masks = torch.randint(0, 19, (batch, height, width))
    peak = planner.step_peak_bytes(net, images, masks, torch.optim.Adam(net.parameters()))
    return peak + 3 * sum(p.numel() * p.element_size() for p in net.parameters())


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options"), [
    ("my_fcn", {}), ("unet", {}), ("deeplabv3plus", {"backbone": "resnet101"}),
    ("unet", {"checkpointing": True})])
def test_the_estimate_is_within_15_percent_of_the_measured_cpu_peak(name, options):
    recompute = bool(options.get("checkpointing"))
    plan = planner.plan_step(name, batch=CHECK_BATCH, size=CHECK_SIZE, checkpointing=recompute,
                             options={k: v for k, v in options.items() if k != "checkpointing"})
    measured = measured_step_bytes(name, options, CHECK_BATCH, CHECK_SIZE)
    error = plan.tensor_gib * 2**30 / measured - 1
    print(f"{name} {options}: planned {plan.tensor_gib * 1024:.0f} MiB, measured "
          f"{measured / 2**20:.0f} MiB ({error:+.1%})")
    assert abs(error) < 0.15


def test_saved_bytes_count_each_storage_once():
    """A view and an in-place result share one storage: counted once, not three times."""
    class Views(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            y = (x * self.weight).relu_()  # saved: x, and the in-place result y
            return y.view(-1).sigmoid().sum() + y.exp().sum()  # sigmoid saves its output

    x = torch.randn(1000)
    counted = planner.saved_bytes(Views(), x, None)
    assert counted == 4000 * 4  # x, y (relu_ and exp save it: once), sigmoid's and exp's outputs


def test_planned_memory_grows_with_the_batch_and_shrinks_with_16_bits_and_checkpointing():
    plan = planner.plan_step  # unet: the fastest model to calibrate
    two, four = (plan("unet", batch=b, size=(1024, 512)).tensor_gib for b in (2, 4))
    fixed = plan("unet", batch=1, size=(8, 8)).tensor_gib
    assert four - fixed == pytest.approx(2 * (two - fixed), rel=1e-3)  # linear in batch x pixels
    half = plan("unet", batch=4, size=(1024, 512), precision="fp16").tensor_gib
    recomputed = plan("unet", batch=4, size=(1024, 512), checkpointing=True).tensor_gib
    assert half < 0.6 * four and recomputed < 0.7 * four


def test_evaluation_plans_whole_and_slide():
    whole = planner.plan_eval("unet", size=(2048, 1024))
    slide = planner.plan_eval("unet", size=(2048, 1024), mode="slide", window=(512, 256))
    assert whole.kind == "whole" and slide.kind == "slide"
    assert 0 < slide.tensor_gib < whole.tensor_gib


def test_the_batch_choice_follows_the_memory(monkeypatch):
    config = profile_config("unet", "ci", size=(1024, 512))
    small, large = (planner.choose_batch_size(config, gib) for gib in (2.0, 6.0))
    assert 1 <= small < large
    assert planner.plan_config(config.replace(batch_size=large)).fits(6.0)
    assert not planner.plan_config(config.replace(batch_size=large + 1)).fits(6.0) or large == 64


def test_confirming_a_batch_halves_it_on_out_of_memory():
    tried = []

    def step(batch):
        tried.append(batch)
        if batch > 5:
            raise torch.OutOfMemoryError("CUDA out of memory")

    assert planner.confirm_batch_size(step, 24) == 3 and tried == [24, 12, 6, 3]


def test_plan_command_json_rows_and_fit_marks(capsys):
    assert main(["plan", "-m", "unet", "--batch-size", "2", "64", "--size", "1024x512",
                 "--amp", "fp16", "--gpu-memory", "6", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["batch"] for row in rows] == [2, 64]
    for row in rows:
        assert {"model", "backbone", "batch", "size", "precision", "checkpointing", "peak_gib",
                "allowance_gib", "fits"} <= set(row)
        assert row["size"] == "1024x512" and row["precision"] == "fp16"
        assert row["allowance_gib"] == pytest.approx(planner.CUDA_CONTEXT_GIB + planner.WORKSPACE_GIB)
    assert [row["fits"] for row in rows] == [True, False]
    assert main(["plan", "-m", "unet", "--batch-size", "2", "--size", "1024x512", "--amp", "fp16",
                 "--gpu-memory", "6"]) == 0
    table = capsys.readouterr().out
    assert "planned for 6 GiB" in table and table.rstrip().endswith("yes")


def test_batch_size_auto_on_the_cpu_plans_and_says_so(prepared_root, tmp_path, capsys):
    assert main(["train", "-m", "unet", "--profile", "ci", "--data", str(prepared_root), "-n", "1",
                 "--max-iters", "1", "--batch-size", "auto", "--gpu-memory", "1.2",
                 "--out", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "tb"), "--quiet"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "planned for 1.2 GiB by segkit plan (not confirmed: no CUDA device)" in header


def test_a_slide_plan_follows_what_scoring_a_frame_holds():
    """Scoring slides windows and keeps a window's height of summed rows, not the frame's scores:
    the plan must follow the peak measured on that very path (``Inference.classes``)."""
    from segkit.inference import Inference, frame_peak_bytes

    size, window = (1024, 512), (256, 128)
    plan = planner.plan_eval("unet", size=size, mode="slide", window=window)
    torch.manual_seed(0)
    net = build_model("unet").eval()
    measured = frame_peak_bytes(net, torch.randn(3, size[1], size[0]), size[::-1],
                                Inference(mode="slide", window=window), torch.device("cpu"))
    assert plan.activations_gib * planner.GIB == pytest.approx(measured, rel=0.2)
