"""The course notebooks are committed clean: one setup line first, and outputs (with execution counts)
only on the few cells nbval compares (marked ``# NBVAL_CHECK_OUTPUT``), which hold short text."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_data_creation", "02_visualization", "03_augmentation", "04_my_fcn", "05_unet",
            "06_deeplabv3plus", "07_comparison"]


def test_the_seven_course_notebooks_exist():
    assert [path.stem for path in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    cells = json.loads(path.read_text())["cells"]
    # nbformat 4.5 gives every cell an id; one without is a warning now and an error to come
    assert all(cell.get("id") for cell in cells), "a cell has no id: run nbformat's normalize() on it"
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    for cell in code:
        compared = "# NBVAL_CHECK_OUTPUT" in "".join(cell["source"])
        assert compared or (cell["outputs"] == [] and cell["execution_count"] is None)
        assert all(set(output.get("data", {})) <= {"text/plain", "text/html"} for output in cell["outputs"])
    assert len(path.read_bytes()) < 64_000
    assert "".join(code[0]["source"]) == "from segkit.course import setup\n\ncourse = setup()"
    assert all(len(cell["source"]) <= 16 for cell in code), "keep cells short: call segkit"
