"""Tests for ``segkit.models.anatomy`` (stages and data flow) and ``segkit.viz.architecture``.

Known answers come from small hand-built networks and from the layouts the segkit models document;
shapes are checked against plain forward hooks. CPU only, small inputs, nothing downloaded.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from torch import nn

from segkit import viz
from segkit.models import build_model, list_models
from segkit.models.anatomy import INPUT, OUTPUT, Join, skip_connections, stage_graph

#: DeepLabV3+ on MobileNetV3 keeps the registry-wide tests quick; ResNet gets its own test.
FAST_OPTIONS = {"deeplabv3plus": {"backbone": "mobilenet_v3_large"}}


def build(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, **{**FAST_OPTIONS.get(name, {}), **options})


class SumSkip(nn.Module):
    """stem (H) -> down (H/2) -> up (transposed conv, back to H) -> head reading stem + up."""

    def __init__(self, upsample_output: bool = False) -> None:
        super().__init__()
        self.upsample_output = upsample_output
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        out = self.head(s + self.up(self.down(s)))
        return F.interpolate(out, scale_factor=2.0) if self.upsample_output else out


def test_hand_built_flow_sources_joins_and_skips() -> None:
    stages = {s.name: s for s in stage_graph(SumSkip(), (16, 24))}
    assert list(stages) == ["stem", "down", "up", "head"]  # no OUTPUT: head's output is the model's
    assert [stages[n].shape for n in stages] == [(8, 16, 24), (16, 8, 12), (8, 16, 24), (2, 16, 24)]
    assert [stages[n].level for n in stages] == [0, 1, 0, 0]
    assert [stages[n].sources for n in stages] == [(INPUT,), ("stem",), ("down",), ("stem", "up")]
    assert stages["up"].joins == (Join("upsample", ("down",), (8, 16, 24), inside=True),)
    assert stages["head"].joins == (Join("add", ("stem", "up"), (8, 16, 24), inside=False),)
    assert not stages["stem"].joins and not stages["down"].joins
    assert skip_connections(list(stages.values())) == [("stem", "head")]


def test_an_output_stage_stands_for_work_after_the_last_stage() -> None:
    stages = stage_graph(SumSkip(upsample_output=True), (16, 24))
    assert [s.name for s in stages] == ["stem", "down", "up", "head", OUTPUT]
    assert stages[-1].shape == (2, 32, 48) and stages[-1].sources == ("head",)
    assert stages[-1].joins == (Join("upsample", ("head",), (2, 32, 48), inside=False),)


def test_the_model_mode_is_kept_and_batch_norm_statistics_untouched() -> None:
    model = build("my_fcn").train()
    before = model.inc[0][1].running_mean.clone()
    stage_graph(model, (32, 48))
    assert model.training and torch.equal(model.inc[0][1].running_mean, before)


@pytest.mark.parametrize("size", [(64, 96), (37, 53)], ids=["even", "odd"])
@pytest.mark.parametrize("name", list_models())
def test_stage_shapes_are_those_forward_hooks_see(name: str, size: tuple[int, int]) -> None:
    model = build(name).eval()
    seen: dict[str, tuple[int, ...]] = {}
    for child, module in model.named_children():
        module.register_forward_hook(lambda _m, _a, out, child=child: seen.update(
            {f"{child}.{k}": tuple(v.shape[1:]) for k, v in out.items()} if isinstance(out, dict)
            else {child: tuple(out.shape[1:])}))
    with torch.no_grad():
        seen[OUTPUT] = tuple(model(torch.zeros(1, 3, *size)).shape[1:])
    stages = stage_graph(model, size)
    assert {s.name: s.shape for s in stages} == {k: v for k, v in seen.items()
                                                  if k != OUTPUT or stages[-1].name == OUTPUT}
    assert stages[-1].shape == seen[OUTPUT]


def test_my_fcn_skips_come_from_the_128_channel_quarter_and_32_channel_full_levels() -> None:
    stages = {s.name: s for s in stage_graph(build("my_fcn"), (64, 96))}
    skips = skip_connections(list(stages.values()))
    assert skips == [("down2", "up2"), ("inc", "fuse")]
    assert [stages[source].shape for source, _ in skips] == [(128, 16, 24), (32, 64, 96)]
    # both concatenations happen in MyFCN.forward, just before the stage that reads them
    assert [j for j in stages["up2"].joins if j.kind == "concat"] == [
        Join("concat", ("down2", "up1"), (256, 16, 24), inside=False)]
    assert stages["fuse"].joins == (Join("concat", ("inc", "up3"), (64, 64, 96), inside=False),)
    assert not any(join.kind == "concat" for join in stages["conv2"].joins)  # 64-level: no skip


def test_unet_has_one_concatenated_skip_per_scale() -> None:
    stages = {s.name: s for s in stage_graph(build("unet"), (64, 96))}
    skips = skip_connections(list(stages.values()))
    assert skips == [("down3", "up1"), ("down2", "up2"), ("down1", "up3"), ("inc", "up4")]
    assert [stages[source].level for source, _ in skips] == [3, 2, 1, 0]
    for source, target in skips:
        assert stages[target].level == stages[source].level
        assert stages[target].merges[0].kind == "concat" and stages[target].merges[0].inside
        assert stages[target].upsamples


def test_deeplab_decoder_reads_the_low_level_skip_and_the_upsampled_aspp() -> None:
    stages = {s.name: s for s in stage_graph(build("deeplabv3plus"), (64, 96))}
    assert list(stages) == ["backbone.low", "backbone.out", "aspp", "decoder", "head", OUTPUT]
    assert ("backbone.low", "decoder") in skip_connections(list(stages.values()))
    decoder = stages["decoder"]
    assert decoder.sources == ("backbone.low", "aspp")
    assert [(j.kind, j.sources, j.inside) for j in decoder.joins] == [
        ("upsample", ("aspp",), True), ("concat", ("backbone.low", "aspp"), True)]
    assert stages["backbone.low"].shape[1:] == (16, 24)  # stride 4
    assert stages[OUTPUT].upsamples and stages[OUTPUT].shape[1:] == (64, 96)


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "resnet50"])
def test_output_stride_8_doubles_the_deep_feature_size(backbone: str) -> None:
    deep = {}
    for stride in (16, 8):
        stages = {s.name: s for s in stage_graph(build("deeplabv3plus", backbone=backbone,
                                                       output_stride=stride), (64, 96))}
        deep[stride] = stages["backbone.out"]
        assert stages["aspp"].shape[1:] == deep[stride].shape[1:]
    assert deep[16].shape[1:] == (4, 6) and deep[16].level == 4
    assert deep[8].shape[1:] == (8, 12) and deep[8].level == 3


def test_architecture_draws_one_box_per_stage_with_skips_and_concatenations() -> None:
    model = build("my_fcn")
    stages = stage_graph(model, (64, 96))
    fig = viz.architecture(model, (64, 96))
    ax = fig.axes[0]
    boxes = [p.get_gid() for p in ax.patches if isinstance(p, FancyBboxPatch)]
    assert sorted(boxes) == sorted([INPUT] + [f"stage:{s.name}" for s in stages])
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == sum(len(s.sources) for s in stages)
    assert sum(a.get_linestyle() != "-" for a in arrows) == 2  # the two dashed skips
    assert sorted(t.get_gid() for t in ax.texts if t.get_gid()) == ["concat:fuse", "concat:up2"]
    assert "1.57 M parameters" in ax.get_title()
    plt.close(fig)
