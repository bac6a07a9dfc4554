"""Saving and loading a memory: bit-exact round trip, atomic writes, every kind of bad file."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from gdm_helpers import (
    BACKENDS,
    clustered_stream,
    fitted_memory,
    memory_snapshot,
    snapshots_equal,
    test_points,
)

from clifer_edge.memory import GrowingDualMemory, MemoryFileError, NotFittedError, persistence


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_is_bit_exact_and_keeps_learning_identically(backend, tmp_path) -> None:
    memory = fitted_memory(backend, seed=11)
    path = tmp_path / "person.gdm"
    memory.save(path)
    loaded = GrowingDualMemory.load(path)
    assert snapshots_equal(memory_snapshot(memory), memory_snapshot(loaded))
    assert loaded.config_ == memory.config_ and loaded.n_features_in_ == memory.n_features_in_
    assert loaded.stats() == memory.stats()
    centres, names, _ = clustered_stream()
    X, _ = test_points(centres, names)
    for name in ("episodic", "semantic"):
        assert loaded.predict(X, memory=name) == memory.predict(X, memory=name)
        np.testing.assert_array_equal(
            loaded.predict_proba(X, memory=name), memory.predict_proba(X, memory=name)
        )
    # The random state and every buffer travel: both go on to learn the same things.
    _, _, more = clustered_stream(n_classes=5, seed=9)
    for mem in (memory, loaded):
        mem.partial_fit(*more[4])
        mem.replay()
    assert snapshots_equal(memory_snapshot(memory), memory_snapshot(loaded))


def test_save_replaces_an_existing_file_and_leaves_no_temporary(tmp_path) -> None:
    path = tmp_path / "m.npz"
    fitted_memory("cython", replay=False).save(path)
    memory = fitted_memory("cython", seed=2)
    memory.save(path)
    assert snapshots_equal(memory_snapshot(GrowingDualMemory.load(path)), memory_snapshot(memory))
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "m.npz"
    fitted_memory("cython").save(path)
    before = path.read_bytes()

    def disk_full(stream, **arrays):
        stream.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persistence.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space"):
        fitted_memory("cython", seed=5).save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_save_before_fit_and_missing_file(tmp_path) -> None:
    with pytest.raises(NotFittedError):
        GrowingDualMemory().save(tmp_path / "never.npz")
    assert not (tmp_path / "never.npz").exists()
    with pytest.raises(FileNotFoundError):
        GrowingDualMemory.load(tmp_path / "missing.npz")


# -- bad files: MemoryFileError, and the file itself is never modified --------------------------


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    fitted_memory("cython").save(path)
    return path


def _rewrite(path, target, edit_header=None, edit_arrays=None, fix_checksum=False) -> None:
    """Copy a memory file with its header and/or arrays changed (for crafted bad files)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(arrays.pop("header").tobytes())
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(arrays)
    if fix_checksum:
        header.pop("checksum")
        header["checksum"] = persistence._checksum(header, arrays)
    encoded = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(target, "wb") as stream:
        np.savez(stream, header=encoded, **arrays)


def _expect_rejected(path, message) -> None:
    before = path.read_bytes()
    with pytest.raises(MemoryFileError, match=message):
        GrowingDualMemory.load(path)
    assert path.read_bytes() == before


def test_truncated_file(saved, tmp_path) -> None:
    data = saved.read_bytes()
    for keep in (0, 10, len(data) // 2, len(data) - 30):
        path = tmp_path / f"cut{keep}.npz"
        path.write_bytes(data[:keep])
        _expect_rejected(path, "damaged or truncated")


def test_flipped_byte_in_the_data(saved, tmp_path) -> None:
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("episodic.weights.npy")
    data = bytearray(saved.read_bytes())
    data[info.header_offset + 200] ^= 0x10  # inside the weights, past the local headers
    path = tmp_path / "flipped.npz"
    path.write_bytes(bytes(data))
    _expect_rejected(path, "damaged")


def test_foreign_files(tmp_path) -> None:
    npz = tmp_path / "other.npz"
    np.savez(npz, images=np.zeros((2, 3)))
    _expect_rejected(npz, "not a clifer-edge memory file")
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    _expect_rejected(npy, "not a clifer-edge memory file")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _expect_rejected(text, "not a readable memory file")
    fake = tmp_path / "fake.npz"
    np.savez(fake, header=np.frombuffer(b'{"format": "other"}', dtype=np.uint8))
    _expect_rejected(fake, "format 'other'")


def test_future_version(saved, tmp_path) -> None:
    path = tmp_path / "future.npz"
    _rewrite(saved, path, edit_header=lambda h: h.update(schema_version=99), fix_checksum=True)
    _expect_rejected(path, "newer clifer-edge .*schema_version=99")


def test_edited_header_fails_the_checksum(saved, tmp_path) -> None:
    path = tmp_path / "edited.npz"
    _rewrite(saved, path, edit_header=lambda h: h["labels"].reverse())
    _expect_rejected(path, "checksum")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a.update({"episodic.edges": a["episodic.edges"] + 1000}), "edges"),
        (lambda a: a.update({"semantic.habituation": a["semantic.habituation"] + 2}), "habitu"),
        (lambda a: a.update({"episodic.histograms": -a["episodic.histograms"]}), "negative"),
        (lambda a: a.update({"episodic.weights": a["episodic.weights"][:, :, :3]}), "weights"),
        (lambda a: a.pop("semantic.temporal"), "semantic.temporal"),
    ],
)
def test_consistent_checksum_but_broken_content(saved, tmp_path, edit, message) -> None:
    path = tmp_path / "broken.npz"
    _rewrite(saved, path, edit_arrays=edit, fix_checksum=True)
    _expect_rejected(path, message)
