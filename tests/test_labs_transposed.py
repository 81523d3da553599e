"""The transposed convolution toy: every step agrees with F.conv_transpose2d, steps touch the right
cells, the size formula holds, and the controls redraw."""

import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.labs.transposed import (
    CELL,
    CROPPED,
    TOUCHED,
    TransposedConvToy,
    contributions,
    conv_transpose,
    crop,
    output_size,
    partial_output,
    scatter,
    touched,
)
from segkit.widgets import GAP, TITLE_HEIGHT

# input shape, kernel size, stride, padding: every combination with an output left after cropping
SETTINGS = [(shape, k, s, p)
            for shape, k, s, p in itertools.product([(2, 2), (3, 2)], (2, 3), (1, 2, 3), (0, 1, 2))
            if min(output_size(n, k, s, p) for n in shape) >= 1]


def decode(png):
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def first_elements(x, count):
    """``x`` with every element after the first ``count`` (row by row) set to 0."""
    flat = x.flatten().clone()
    flat[count:] = 0
    return flat.view_as(x)


@pytest.mark.parametrize(("shape", "k", "stride", "padding"), SETTINGS)
def test_every_step_equals_conv_transpose2d_of_the_elements_so_far(shape, k, stride, padding):
    generator = torch.Generator().manual_seed(sum(shape) + 10 * k + 100 * stride + padding)
    x = torch.randint(-3, 4, shape, generator=generator).double()
    kernel = torch.randint(-3, 4, (k, k), generator=generator).double()
    for steps in range(1, x.numel() + 1):
        expected = conv_transpose(first_elements(x, steps), kernel, stride, 0)
        assert torch.equal(scatter(x, kernel, stride, steps), expected)
        assert torch.equal(partial_output(x, kernel, stride, steps), expected)
    cropped = crop(scatter(x, kernel, stride, x.numel()), padding)
    assert torch.equal(cropped, conv_transpose(x, kernel, stride, padding))  # padding crops


def test_output_size_formula():
    assert output_size(2, 3, 2, 0) == 5  # (2 - 1)·2 - 0 + 3
    assert output_size(2, 2, 2, 0) == 4
    assert output_size(4, 3, 2, 1) == 7  # (4 - 1)·2 - 2 + 3
    assert output_size(2, 2, 1, 2) == -1
    for shape, k, stride, padding in SETTINGS:
        x = torch.ones(shape, dtype=torch.float64)
        out = conv_transpose(x, torch.ones(k, k, dtype=torch.float64), stride, padding)
        assert tuple(out.shape) == tuple(output_size(n, k, stride, padding) for n in shape)


def test_a_step_touches_its_kernel_copy():
    expected = np.zeros((5, 5), dtype=bool)
    expected[2:5, 2:5] = True  # element (1, 1) with stride 2: rows and columns 2-4
    assert (touched((2, 2), 3, 2, 4) == expected).all()
    expected = np.zeros((5, 5), dtype=bool)
    expected[0:3, 2:5] = True  # element (0, 1)
    assert (touched((2, 2), 3, 2, 2) == expected).all()
    expected = np.zeros((3, 4), dtype=bool)
    expected[1:3, 1:3] = True  # a 2 x 3 input, stride 1, kernel 2: step 5 is element (1, 1)
    assert (touched((2, 3), 2, 1, 5) == expected).all()


@pytest.mark.parametrize(("shape", "k", "stride", "padding"), SETTINGS)
def test_a_step_changes_exactly_the_cells_it_touches(shape, k, stride, padding):
    x = torch.arange(1, shape[0] * shape[1] + 1, dtype=torch.float64).view(shape)  # no zero
    kernel = torch.ones(k, k, dtype=torch.float64)
    for step in range(1, x.numel() + 1):
        changed = (scatter(x, kernel, stride, step) != scatter(x, kernel, stride, step - 1)).numpy()
        assert (changed == touched(shape, k, stride, step)).all()


def test_contributions_show_where_kernel_copies_overlap():
    assert torch.equal(contributions((2, 2), 2, 2, 4), torch.ones(4, 4, dtype=torch.float64))  # a tiling
    per_line = torch.tensor([1.0, 1, 2, 1, 1], dtype=torch.float64)  # 3 x 3 copies overlap at index 2
    assert torch.equal(contributions((2, 2), 3, 2, 4), torch.outer(per_line, per_line))
    assert torch.equal(contributions((2, 2), 2, 1, 4),
                       torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float64))
    assert contributions((2, 2), 3, 2, 1).sum() == 9  # one copy so far


def output_panel(lab, picture):
    """The output panel of the lab's picture, without its title: input, kernel, product come first."""
    cols, k = len(lab.inputs[0]), lab.kernel_size.value
    left = (cols * CELL + 1) + 2 * (k * CELL + 1) + 3 * GAP
    return picture[TITLE_HEIGHT:, left:]


def test_lab_last_step_is_conv_transpose2d_and_sliders_drive_it():
    lab = TransposedConvToy()
    lab.inputs[0][1].value = -3
    lab.kernel_sliders[2][2].value = 3
    lab.padding.value = 1
    lab.step.value = 4
    x = torch.tensor([[1, -3], [-1, 3]], dtype=torch.float64)
    kernel = torch.tensor([[1, 2, 1], [2, 1, 2], [1, 2, 3]], dtype=torch.float64)
    assert torch.equal(lab.x(), x) and torch.equal(lab.kernel(), kernel)
    assert torch.equal(lab.output(), conv_transpose(x, kernel, 2, 1))
    assert torch.equal(crop(lab.partial(), 1), lab.output())
    assert "F.conv_transpose2d(x, w, stride=2, padding=1)</code>, 3 × 3" in lab.text.value
    assert "(H − 1)·s − 2p + k = (2 − 1)·2 − 2·1 + 3 = 3" in lab.text.value
    lab.step.value = 2
    assert torch.equal(lab.partial(), conv_transpose(first_elements(x, 2), kernel, 2, 0))
    assert "adds x[0,1] = -3 × w at rows 0–2, columns 2–4" in lab.text.value


def test_lab_picture_marks_touched_cells_and_greys_cropped_ones():
    lab = TransposedConvToy(padding=1)
    lab.step.value = 3  # element (1, 0): rows 2-4, columns 0-2 of the 5 x 5 uncropped output
    output = output_panel(lab, decode(lab.png))
    corner = output[np.arange(5)[:, None] * CELL + 1, np.arange(5) * CELL + 1]  # inside each cell's border
    assert ((corner == TOUCHED).all(-1) == touched((2, 2), 3, 2, 3)).all()
    middle = output[np.arange(5)[:, None] * CELL + 5, np.arange(5) * CELL + 5]  # a cell's fill
    grey = (middle == CROPPED).all(-1)
    assert grey[0].all() and grey[:, 0].all() and grey[4].all() and grey[:, 4].all()
    assert not grey[1:4, 1:4].any()


def test_kernel_size_hides_sliders_and_contributions_toggle():
    lab = TransposedConvToy()
    png = lab.png
    lab.kernel_size.value = 2
    assert lab.kernel().shape == (2, 2) and lab.png != png
    assert lab.kernel_sliders[2][0].layout.display == "none"
    assert lab.kernel_sliders[1][1].layout.display is None
    lab.stride.value = 2
    lab.show_contributions.value = True
    assert "is a multiple of stride 2" in lab.text.value
    lab.kernel_size.value = 3
    assert "checkerboard" in lab.text.value
    lab.stride.value = 1
    lab.padding.value = 2
    lab.kernel_size.value = 2  # (2 - 1)·1 - 4 + 2 = -1: nothing left
    assert "crops away the whole output" in lab.text.value
    assert "segkit-tconv-step" in lab.step._dom_classes
    assert "segkit-tconv-input-1-0" in lab.inputs[1][0]._dom_classes
