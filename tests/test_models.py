"""The robot-side model loader on the bundled default models and on damaged copies of them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from clifer_edge.datasets import load_npz
from clifer_edge.labels import BASIC_EXPRESSIONS
from clifer_edge.models import (
    DEFAULT_MODEL_DIR,
    Encoder,
    Generator,
    ModelFileError,
    ModelMetadata,
    TFLiteModel,
    load_default_models,
)
from clifer_edge.preprocessing import preprocess_faces

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def default_models() -> tuple[Encoder, Generator]:
    return load_default_models("int8")


@pytest.fixture(scope="module")
def ck_faces(data_dir: Path) -> np.ndarray:
    dataset = load_npz(data_dir / "ckplus48.npz")
    return preprocess_faces(dataset.images[::10][:70])


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled int8 models and their metadata."""
    for name in ("encoder_int8.tflite", "generator_int8.tflite", "metadata.json"):
        shutil.copy(DEFAULT_MODEL_DIR / name, tmp_path / name)
    return tmp_path


def _edit_metadata(directory: Path, **changes: object) -> None:
    path = directory / "metadata.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_default_models_encode_and_generate_real_faces(default_models, ck_faces) -> None:
    encoder, generator = default_models
    meta = encoder.metadata
    assert meta.vocabulary == BASIC_EXPRESSIONS
    assert meta.image_shape == ck_faces.shape[1:]
    assert encoder.model.quantised and generator.model.quantised
    z = encoder.encode(ck_faces)
    assert z.shape == (len(ck_faces), meta.z_dim) and z.dtype == np.float32
    assert np.all(np.abs(z) <= 1.0)
    # Different faces get different latents (the model is not constant).
    assert np.std(z, axis=0).mean() > 0.01
    images = generator.generate(z[:7], list(BASIC_EXPRESSIONS))
    assert images.shape == (7, *meta.image_shape) and np.all(np.abs(images) <= 1.0)
    # The expression condition changes the image.
    happy, sad = generator.generate(z[:2], "happiness"), generator.generate(z[:2], "sad")
    assert np.abs(happy - sad).mean() > 0.005


def test_batching_does_not_change_results(default_models, ck_faces) -> None:
    encoder, generator = default_models
    # 70 faces exceed the encoder's max_batch, so this also covers the chunked path.
    together = encoder.encode(ck_faces)
    one_by_one = np.concatenate([encoder.encode(face[None]) for face in ck_faces[:5]])
    step = encoder.model.outputs[0].scale
    np.testing.assert_allclose(together[:5], one_by_one, atol=step + 1e-6)
    assert encoder.encode(ck_faces[:0]).shape == (0, encoder.z_dim)
    expressions = [BASIC_EXPRESSIONS[i % 7] for i in range(10)]
    chunked = generator.generate(together[:10], expressions)
    single = np.concatenate(
        [generator.generate(together[i : i + 1], e) for i, e in enumerate(expressions)]
    )
    np.testing.assert_allclose(chunked, single, atol=generator.model.outputs[0].scale + 1e-6)


def test_bad_inputs_are_rejected_with_clear_errors(default_models, ck_faces) -> None:
    encoder, generator = default_models
    with pytest.raises(ValueError, match="should be"):
        encoder.encode(ck_faces[0])
    with pytest.raises(ValueError, match="NaN"):
        encoder.encode(np.full_like(ck_faces[:1], np.nan))
    with pytest.raises(ValueError, match="outside"):
        encoder.encode(ck_faces[:1] * 255.0)
    z = encoder.encode(ck_faces[:2])
    with pytest.raises(ValueError, match="not in the model vocabulary"):
        generator.generate(z, ["neutral", "contempt"])
    with pytest.raises(ValueError, match="2 latents"):
        generator.generate(z, ["neutral"])
    with pytest.raises(ValueError, match="z of shape"):
        generator.generate(z[:, :-1], ["neutral", "fear"])


def test_truncated_model_fails_at_load(model_copy: Path) -> None:
    path = model_copy / "encoder_int8.tflite"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ModelFileError, match="SHA-256"):
        Encoder(path)
    # Without a recorded hash the runtime's own verification still refuses it, at load time.
    with pytest.raises(ModelFileError, match="cannot load"):
        TFLiteModel(path)
    path.write_bytes(content[:10])
    with pytest.raises(ModelFileError, match="truncated"):
        TFLiteModel(path)


def test_foreign_file_fails_at_load(model_copy: Path, data_dir: Path) -> None:
    face = load_npz(data_dir / "ckplus48.npz").images[0]
    ok, png = cv2.imencode(".png", face)
    assert ok
    path = model_copy / "encoder_int8.tflite"
    path.write_bytes(png.tobytes())
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        TFLiteModel(path)
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        load_default_models(model_dir=model_copy)
    (model_copy / "missing").mkdir()
    with pytest.raises(ModelFileError, match="clifer-export"):
        load_default_models(model_dir=model_copy / "missing")


def test_metadata_mismatch_fails_at_load(model_copy: Path) -> None:
    meta = ModelMetadata.load(model_copy / "metadata.json")
    _edit_metadata(model_copy, z_dim=meta.z_dim + 1)
    with pytest.raises(ModelFileError, match="latent shape"):
        Encoder(model_copy / "encoder_int8.tflite")
    _edit_metadata(model_copy, z_dim=meta.z_dim, vocabulary=list(BASIC_EXPRESSIONS[:6]))
    with pytest.raises(ModelFileError, match="expression input shape"):
        Generator(model_copy / "generator_int8.tflite")
    _edit_metadata(model_copy, vocabulary=list(BASIC_EXPRESSIONS), image_size=96)
    with pytest.raises(ModelFileError, match="input shape"):
        Encoder(model_copy / "encoder_int8.tflite")
    _edit_metadata(model_copy, image_size=meta.image_size)
    with pytest.raises(ModelFileError, match="not a encoder"):
        Encoder(model_copy / "generator_int8.tflite")


def test_bad_metadata_files(model_copy: Path) -> None:
    encoder_path = model_copy / "encoder_int8.tflite"
    _edit_metadata(model_copy, format_version=99)
    with pytest.raises(ModelFileError, match="format_version"):
        Encoder(encoder_path)
    (model_copy / "metadata.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        Encoder(encoder_path)
    (model_copy / "metadata.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ModelFileError, match="not a clifer-edge model metadata"):
        Encoder(encoder_path)
    (model_copy / "metadata.json").unlink()
    with pytest.raises(ModelFileError, match="cannot be read"):
        Encoder(encoder_path)


def test_metadata_round_trip(tmp_path: Path) -> None:
    meta = ModelMetadata.load(DEFAULT_MODEL_DIR / "metadata.json")
    meta.save(tmp_path / "m.json")
    assert ModelMetadata.load(tmp_path / "m.json") == meta
    for name, entry in meta.models.items():
        assert (DEFAULT_MODEL_DIR / name).stat().st_size == entry["bytes"]


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_tensorflow_fallback_matches_litert(default_models, ck_faces) -> None:
    pytest.importorskip("tensorflow")
    encoder, _ = default_models
    fallback = TFLiteModel(encoder.model.path, backend="tensorflow")
    assert fallback.backend == "tensorflow"
    expected = encoder.encode(ck_faces[:8])
    got = np.clip(fallback.run([ck_faces[:8]])[0], -1, 1)
    np.testing.assert_allclose(got, expected, atol=2 * encoder.model.outputs[0].scale + 1e-6)


def test_importing_models_does_not_import_tensorflow() -> None:
    probe = (
        "import sys, numpy as np\n"
        "from clifer_edge.models import load_default_models\n"
        "enc, gen = load_default_models('int8', num_threads=2)\n"
        "z = enc.encode(np.zeros((1, *enc.metadata.image_shape), np.float32))\n"
        "gen.generate(z, ['happiness'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
