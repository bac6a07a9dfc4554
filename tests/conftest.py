"""Shared fixtures: where the real face data lives; a scratch home for the tools' own files."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from clifer_edge.datasets import DATA_DIR_ENV, default_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Tools that write under the home folder by default (ROS 2 logs, Keras' config, Matplotlib's
#: font cache) write here during the session instead; subprocesses inherit the variables. Set
#: on import, before any test module imports Keras or rclpy.
SCRATCH_HOME = Path(tempfile.mkdtemp(prefix="clifer-tests-home-"))
SCRATCH_VARIABLES = {
    "ROS_HOME": "ros",
    "ROS_LOG_DIR": "ros/log",
    "KERAS_HOME": "keras",
    "MPLCONFIGDIR": "matplotlib",
}
for _variable, _folder in SCRATCH_VARIABLES.items():
    (SCRATCH_HOME / _folder).mkdir(parents=True, exist_ok=True)
    os.environ[_variable] = str(SCRATCH_HOME / _folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SCRATCH_HOME, ignore_errors=True)


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
