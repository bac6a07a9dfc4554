"""Shared fixtures: where the real face data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from clifer_edge.datasets import DATA_DIR_ENV, default_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data directory (``$CLIFER_DATA_DIR`` or ``../shared/data``)."""
    candidates = [default_data_dir(), REPO_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if (candidate / "ckplus48.npz").exists():
            return candidate
    pytest.fail(f"shared face data not found in {[str(c) for c in candidates]}; set {DATA_DIR_ENV}")


@pytest.fixture(scope="session")
def models():
    """The bundled default int8 encoder and generator, loaded once for the runtime tests."""
    from runtime_support import default_models

    return default_models()
