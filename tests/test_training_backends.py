"""The training code under both Keras backends: TensorFlow (workstations, tf.distribute, export)
and JAX (GPU boxes without TensorFlow). Each backend runs in its own process, since Keras fixes
its backend at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

HERE = Path(__file__).resolve().parent
BACKENDS = ("tensorflow", "jax")


def _run_check(backend: str, data: Path, out: Path) -> dict:
    pytest.importorskip(backend)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, str(HERE / "training_backend_check.py"), str(data), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def results(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    out = tmp_path_factory.mktemp("backends")
    return {
        backend: (_run_check(backend, data_dir / "fer2013.npz", out / backend), out / backend)
        for backend in BACKENDS
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_step_trains_every_model(results, backend: str) -> None:
    result, _ = results[backend]
    assert result["backend"] == backend
    assert all(np.isfinite(v) for v in result["losses"].values()), result["losses"]
    assert result["losses"]["expression_offset"] > 0
    assert all(result["changed"].values()), result["changed"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_round_trip_resumes_exactly(results, backend: str) -> None:
    result, _ = results[backend]
    assert result["epochs"] == 1 and result["restored_equal"]
    for name, (original, restored) in result["next_step"].items():
        assert restored == pytest.approx(original, rel=1e-5, abs=1e-6), name


def test_weights_saved_under_jax_load_under_tensorflow(results) -> None:
    """The GPU path: train under JAX, export under TensorFlow."""
    import keras

    assert keras.backend.backend() == "tensorflow"
    _, jax_dir = results["jax"]
    encoder = keras.models.load_model(jax_dir / "encoder.keras")
    with np.load(jax_dir / "latents.npz") as saved:
        z = np.asarray(encoder(saved["images"]))
        np.testing.assert_allclose(z, saved["z"], atol=1e-5)
