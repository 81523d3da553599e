"""Shared fixtures: a small synthetic Cityscapes, generated once per test session."""

import shutil

import pytest

from segkit.synthetic import generate

SYNTH_SIZE = (256, 128)
SYNTH_FRAMES = 3


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory):
    """Read-only: official folders and zips of 3 frames per split at 256x128 (seed 0)."""
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, size=SYNTH_SIZE, frames=SYNTH_FRAMES, seed=0, zips=True, progress=False)
    return root


@pytest.fixture
def source_copy(synthetic_source, tmp_path):
    """A writable copy of the synthetic source, for tests that damage it."""
    return shutil.copytree(synthetic_source, tmp_path / "source")


@pytest.fixture(scope="session")
def prepared_root(synthetic_source, tmp_path_factory):
    """Read-only: the synthetic source prepared without resizing (train, val, test)."""
    from segkit.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "full"
    prepare(synthetic_source, out, subset="full", progress=False)
    return out
