"""The course notebooks are committed clean: one setup line first, and outputs (with execution counts)
only on the few cells nbval compares (marked ``# NBVAL_CHECK_OUTPUT``), which hold short text."""

import itertools
import json
import re
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


def _words(path: Path) -> list[str]:
    """The words of a notebook's markdown cells, lower case, in order."""
    cells = json.loads(path.read_text())["cells"]
    text = " ".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")
    return text.lower().split()


def _runs(words: list[str], length: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + length]) for i in range(len(words) - length + 1)}


def test_no_passage_of_20_words_is_repeated_between_notebooks():
    """Each notebook explains its own model; what they share is said once, where it belongs."""
    runs = {path.stem: _runs(_words(path), 20) for path in NOTEBOOKS}
    for first, second in itertools.combinations(runs, 2):
        shared = runs[first] & runs[second]
        assert not shared, f"{first} and {second} share: {' '.join(next(iter(shared)))}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_is_a_lesson(path):
    """Goals first; then exercises, what was learned and references, in that order, at the end."""
    cells = json.loads(path.read_text())["cells"]
    markdown = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"]
    assert "**In this lesson you will**" in markdown[0] and "**Time:**" in markdown[0]
    text = "\n".join(markdown)
    order = [text.index(heading) for heading in ("## Exercises", "## What you learned", "## References")]
    assert order == sorted(order)
    exercises = text[order[0]:order[1]]
    assert 3 <= len(re.findall(r"^\*\*\d\.\*\*", exercises, flags=re.MULTILINE)) <= 5
