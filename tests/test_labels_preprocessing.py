"""The shared label vocabulary, preprocessing and data loading."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_edge.datasets import DatasetError, load_npz
from clifer_edge.labels import BASIC_EXPRESSIONS, canonical_label, one_hot_index, to_ros4hri
from clifer_edge.preprocessing import (
    FaceBox,
    InvalidImageError,
    preprocess_face,
    preprocess_faces,
    to_uint8,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("happy", "happiness"),
        (" Surprised ", "surprise"),
        ("scared", "fear"),
        ("sad", "sadness"),
        ("anger", "anger"),
        ("thinking", "thinking"),
    ],
)
def test_canonical_label(name: str, expected: str) -> None:
    assert canonical_label(name) == expected


def test_ros4hri_round_trip() -> None:
    for label in BASIC_EXPRESSIONS:
        assert canonical_label(to_ros4hri(label)) == label
    assert to_ros4hri("contempt") == "contempt"


def test_bad_labels() -> None:
    with pytest.raises(ValueError, match="empty"):
        canonical_label("  ")
    with pytest.raises(ValueError, match="must be a str"):
        canonical_label(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not in the model vocabulary"):
        one_hot_index("contempt")
    assert one_hot_index("happy") == 1


def test_preprocess_scales_and_resizes() -> None:
    image = np.zeros((96, 96), dtype=np.uint8)
    image[:, 48:] = 255
    face = preprocess_face(image, size=48)
    assert face.shape == (48, 48, 1) and face.dtype == np.float32
    assert face[:, :24].max() == -1.0 and face[:, 25:].min() == 1.0
    np.testing.assert_array_equal(to_uint8(face)[:, :, 0], image[::2, ::2])


def test_preprocess_colour_and_box() -> None:
    rgb = np.zeros((100, 120, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red only
    grey_rgb = preprocess_face(rgb, size=32, color_order="rgb")
    grey_bgr = preprocess_face(rgb, size=32, color_order="bgr")
    assert grey_rgb.mean() != pytest.approx(grey_bgr.mean())  # red vs blue weight differs
    crop = preprocess_face(rgb, size=16, channels=3, box=FaceBox(10, 10, 30, 40))
    assert crop.shape == (16, 16, 3)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 0), np.uint8), "empty"),
        (np.zeros((1, 1), np.uint8), "smaller"),
        (np.zeros((20, 20), np.int32), "dtype"),
        (np.zeros((20, 20, 2), np.uint8), "shape"),
        (np.full((20, 20), np.nan, np.float32), "NaN"),
        (np.full((20, 20), 300.0, np.float32), "0..255"),
        (np.zeros((9000, 10), np.uint8), "larger"),
    ],
)
def test_bad_images(image: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message):
        preprocess_face(image)


def test_batch_names_bad_index() -> None:
    with pytest.raises(InvalidImageError, match="image 1"):
        preprocess_faces([np.zeros((48, 48), np.uint8), np.zeros((2, 2), np.uint8)])


def test_load_real_ckplus(data_dir) -> None:
    data = load_npz(data_dir / "ckplus48.npz")
    assert len(data) == 981 and data.subjects is not None
    keys = data.sequence_keys()
    assert len(np.unique(keys)) == 327  # three frames of each labelled CK+ sequence


def test_load_errors(tmp_path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_npz(tmp_path / "missing.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match="not a readable npz"):
        load_npz(corrupt)
    partial = tmp_path / "partial.npz"
    np.savez(partial, images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DatasetError, match="missing array 'labels'"):
        load_npz(partial)
    mismatch = tmp_path / "mismatch.npz"
    np.savez(mismatch, images=np.zeros((2, 8, 8), np.uint8), labels=np.array(["a"]))
    with pytest.raises(DatasetError, match="labels has shape"):
        load_npz(mismatch)
