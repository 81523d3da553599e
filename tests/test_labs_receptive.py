"""Tests for ``segkit.labs.receptive``: theoretical fields against the analytic formula and fields
derived by hand from the layers, effective fields against known gradients, and the explorer.

CPU only, small inputs (ResNet-50's 427-pixel field needs 512 x 512, on the cheap linearised
copy), nothing downloaded.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segkit.labs import receptive
from segkit.labs.receptive import (
    THEORETICAL_COLOUR,
    ReceptiveFieldExplorer,
    bounding_box,
    effective_fields,
    effective_receptive_field,
    mass_side,
    theoretical_fields,
    theoretical_receptive_field,
)
from segkit.models import build_model
from segkit.models.anatomy import stage_graph


def analytic_field(layers: list[tuple[int, int, int, int]]) -> tuple[int, int, int]:
    """(r, j, start) after conv/pool layers (kernel k, stride s, padding p, dilation d):
    r_out = r_in + (k - 1)·d·j_in, j_out = j_in·s, start_out = start_in - p·j_in; output pixel i
    then sees input pixels start + i·j … start + i·j + r - 1."""
    r, j, start = 1, 1, 0
    for k, s, p, d in layers:
        r, j, start = r + (k - 1) * d * j, j * s, start - p * j
    return r, j, start


def conv(c_in: int, c_out: int, k: int = 3, s: int = 1, d: int = 1, groups: int = 1) -> nn.Sequential:
    """conv -> BN -> ReLU with 'same'-style padding d·(k - 1) / 2."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, padding=d * (k - 1) // 2, dilation=d,
                                   groups=groups), nn.BatchNorm2d(c_out), nn.ReLU())


STACKS = {  # name -> (network, its layers as (k, s, p, d))
    "three 3x3": (lambda: nn.Sequential(conv(3, 8), conv(8, 8), conv(8, 8)),
                  [(3, 1, 1, 1)] * 3),
    "stride 2": (lambda: nn.Sequential(conv(3, 8), conv(8, 8, s=2), conv(8, 8), conv(8, 8)),
                 [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 1, 1), (3, 1, 1, 1)]),
    "dilated": (lambda: nn.Sequential(conv(3, 8), conv(8, 8, d=3), conv(8, 8, k=5)),
                [(3, 1, 1, 1), (3, 1, 3, 3), (5, 1, 2, 1)]),
    "max-pool": (lambda: nn.Sequential(conv(3, 8), nn.MaxPool2d(2), conv(8, 16),
                                       nn.MaxPool2d(3, 2, 1), conv(16, 16, d=2)),
                 [(3, 1, 1, 1), (2, 2, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2)]),
    "depthwise": (lambda: nn.Sequential(conv(3, 8), conv(8, 8, k=5, s=2, groups=8), conv(8, 8, k=1)),
                  [(3, 1, 1, 1), (5, 2, 2, 1), (1, 1, 0, 1)]),
}


@pytest.mark.parametrize("stack", list(STACKS))
def test_theoretical_field_follows_the_analytic_formula(stack: str) -> None:
    build, layers = STACKS[stack]
    torch.manual_seed(0)
    net = build()
    size, point = (64, 64), (33, 30)  # (y, x), away from the borders
    last = str(len(net) - 1)
    mask = theoretical_receptive_field(net, last, size, point)
    r, j, start = analytic_field(layers)
    rows = cols = stage_graph(net, size)[-1].shape[1]  # the square map's side
    i, k = point[0] * rows // size[0], point[1] * cols // size[1]  # stage pixel under the point
    assert bounding_box(mask) == (start + i * j, start + k * j, r, r)
    assert mask.sum() == r * r  # a full rectangle


def test_my_fcn_bottleneck_field_derived_from_its_layers() -> None:
    # inc: two 3x3 convs (r 5); each Down: 2x2 max-pool then two 3x3 convs. Jumps 1, 2, 4, 8:
    # r = 1 + 2·2·1 + 1·1 + 2·2·2 + 1·2 + 2·2·4 + 1·4 + 2·2·8 = 68; start = -(1 + 1)·1 - (1 + 1)·2
    # - (1 + 1)·4 - (1 + 1)·8 = -30. Bottleneck pixel i sees input rows 8i - 30 … 8i + 37.
    model = build_model("my_fcn")
    fields = theoretical_fields(model, (128, 256), (64, 128))  # bottleneck pixel (8, 16)
    assert bounding_box(fields["bottleneck"]) == (8 * 8 - 30, 8 * 16 - 30, 68, 68)
    corner = theoretical_receptive_field(model, "bottleneck", (128, 256), (0, 0))
    assert bounding_box(corner) == (0, 0, 38, 38)  # rows -30 … 37, cut at the frame
    assert bounding_box(fields["inc"]) == (62, 126, 5, 5)
    # the transposed convs map each output pixel to one input pixel: up1 sees what bottleneck sees
    assert np.array_equal(fields["up1"], fields["bottleneck"])


def test_deeplab_resnet50_field_stays_427_pixels_so_os8_covers_twice_the_feature_pixels() -> None:
    # torchvision's ResNet-50 (stride on the 3x3 convs): conv1 7x7/2 r 7, max-pool 3x3/2 r 11,
    # layer1 three 3x3 at jump 4: r 35; layer2 first 3x3/2 at jump 4, three more at 8: r 91;
    # layer3 r 91 + 2·8 + 5·2·16 = 267; layer4 r 267 + 2·16 + 2·2·32 = 427. Dilation instead of
    # stride keeps each later conv's reach (k - 1)·d·j, so the field is 427 at output stride 8
    # and 16 alike, while the deep map has twice the rows at 8.
    in_deep_pixels = {}
    for stride in (16, 8):
        model = build_model("deeplabv3plus", backbone="resnet50", output_stride=stride)
        stages = [s for s in stage_graph(model, (64, 64)) if s.name.startswith("backbone")]
        fields = theoretical_fields(model, (512, 512), (256, 256), stages=stages)
        assert bounding_box(fields["backbone.low"])[2:] == (35, 35)
        assert bounding_box(fields["backbone.out"])[2:] == (427, 427)
        deep_rows = stages[1].shape[1]  # of the 64-row input
        in_deep_pixels[stride] = 427 * deep_rows / 64
    assert in_deep_pixels[8] == 2 * in_deep_pixels[16]


class SqueezeExcite(nn.Module):
    """A 3x3 conv whose output is scaled by a gate computed from its global average."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 4, 1), nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * self.gate(x)


def test_global_pooling_reaches_the_whole_frame() -> None:
    net = nn.Sequential(SqueezeExcite())
    assert theoretical_receptive_field(net, "0", (20, 30), (10, 10)).all()
    deeplab = build_model("deeplabv3plus", backbone="mobilenet_v3_large")
    fields = theoretical_fields(deeplab, (64, 96), (32, 48))
    assert not fields["backbone.low"].all()  # before any squeeze-and-excitation block
    assert fields["aspp"].all()  # ASPP's image-pooling branch


def test_effective_field_of_one_conv_is_its_absolute_kernel() -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.linspace(-2, 2, 54).reshape(2, 3, 3, 3))
    net.train()
    field = effective_receptive_field(net, "0", torch.randn(3, 9, 9), (4, 5))
    expected = np.zeros((9, 9))
    # the output channels are summed before the absolute value (one backward pass)
    expected[3:6, 4:7] = net[0].weight.detach().sum(0).abs().sum(0).numpy()
    np.testing.assert_allclose(field, expected, rtol=1e-6)
    assert net.training  # its mode is restored


def test_effective_field_lies_inside_the_theoretical_one() -> None:
    torch.manual_seed(0)
    model = build_model("my_fcn")
    image, point = torch.randn(3, 48, 64), (20, 30)
    theoretical = theoretical_fields(model, (48, 64), point)
    effective = effective_fields(model, image, point)
    for name, field in effective.items():
        assert field.max() > 0
        assert not (field[~theoretical[name]]).any(), name


def test_effective_field_of_a_deep_random_stack_is_much_smaller_than_its_theoretical_one() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(*(conv(3 if k == 0 else 8, 8) for k in range(32))))
    size, point = (75, 75), (37, 37)
    theoretical = mass_side(theoretical_receptive_field(net, "0", size, point), point, 1.0)
    effective = mass_side(effective_receptive_field(net, "0", torch.randn(3, *size), point), point)
    assert theoretical == 65
    assert effective < 0.6 * theoretical  # Luo et al.: it grows like √depth, not like depth


def test_mass_side_known_answers() -> None:
    field = np.zeros((11, 11))
    field[5, 5] = 1.0
    assert mass_side(field, (5, 5)) == 1
    field[5, 8] = 1.0  # half the mass three pixels away
    assert mass_side(field, (5, 5), 0.5) == 1 and mass_side(field, (5, 5), 0.95) == 7
    block = np.zeros((11, 11))
    block[3:8, 3:8] = 1.0
    assert mass_side(block, (5, 5)) == 5  # the 3x3 square holds 9/25 only
    assert mass_side(block, (5, 5), 1.0) == 5
    assert mass_side(block, (0, 0), 1.0) == 15  # from the corner: out to (7, 7)


# --- the explorer -------------------------------------------------------------------------------

def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def explorer() -> ReceptiveFieldExplorer:
    torch.manual_seed(0)
    models = {"my_fcn": build_model("my_fcn"),
              "deeplab": build_model("deeplabv3plus", backbone="mobilenet_v3_large")}
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return ReceptiveFieldExplorer(models, image)


def test_explorer_starts_on_the_deepest_stage_and_outlines_its_field(explorer) -> None:
    assert explorer.model.value == "my_fcn" and explorer.stage.value == "bottleneck"
    assert (explorer.x.value, explorer.y.value) == (32, 24)
    picture = decode(explorer.png)
    zoom = explorer.zoom
    assert picture.shape == (48 * zoom, 64 * zoom, 3)
    # bottleneck pixel (3, 4): rows 8·3 - 30 … 8·3 + 37 -> 0 … 47, columns 2 … 69 -> 2 … 63
    assert "theoretical field 48×62 px" in explorer.text.value
    assert tuple(picture[10 * zoom, 2 * zoom]) == THEORETICAL_COLOUR  # left edge of the outline
    assert "<td>bottleneck</td>" in explorer.table.value


def test_explorer_slider_moves_update_caption_and_picture(explorer) -> None:
    before_png, before_text = explorer.png, explorer.text.value
    explorer.x.value = 5
    assert explorer.png != before_png and explorer.text.value != before_text
    assert "pixel x=5, y=24" in explorer.text.value


def test_explorer_changing_stage_reuses_the_fields_of_the_point(explorer, monkeypatch) -> None:
    calls = []
    original = receptive.effective_fields
    monkeypatch.setattr(receptive, "effective_fields",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    explorer.y.value = 7  # a new point: computed once for every stage
    explorer.stage.value = "inc"
    explorer.stage.value = "head"
    assert len(calls) == 1
    assert "stage <b>head</b>" in explorer.text.value


def test_explorer_click_sets_the_sliders_and_renders_once(explorer) -> None:
    pictures = []
    explorer.image.observe(lambda change: pictures.append((explorer.x.value, explorer.y.value)),
                           names="value")
    zoom = explorer.zoom
    explorer.on_click({"type": "click", "dataX": 40 * zoom + zoom // 2, "dataY": 10 * zoom + 1})
    assert (explorer.x.value, explorer.y.value) == (40, 10)
    explorer.on_click({"type": "click", "dataX": 10_000, "dataY": -5})  # outside: clamped
    assert (explorer.x.value, explorer.y.value) == (63, 0)
    assert pictures == [(40, 10), (63, 0)]  # one picture per click, with both sliders set


def test_explorer_model_switch_offers_that_models_stages(explorer) -> None:
    explorer.stage.value = "head"
    explorer.model.value = "deeplab"
    assert explorer.stage.value == "head"  # a stage of the same name is kept
    explorer.model.value = "my_fcn"
    explorer.stage.value = "bottleneck"
    explorer.model.value = "deeplab"
    assert explorer.stage.options == ("backbone.low", "backbone.out", "aspp", "decoder", "head",
                                      "output")
    assert explorer.stage.value == "backbone.out"  # the deepest
    assert "<b>deeplab</b>" in explorer.text.value
    explorer.model.value = "my_fcn"
