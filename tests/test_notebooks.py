"""The course notebooks are committed clean: no outputs, no execution counts, one setup line first."""

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
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    assert "".join(code[0]["source"]) == "from segkit.course import setup\n\ncourse = setup()"
    assert all(len(cell["source"]) <= 16 for cell in code), "keep cells short: call segkit"
