"""Imagined knowledge in the memory yields to real faces (on real CK+ faces, both backends).

Real faces of held-in CK+ subjects stand in for imagined latents: the memory cannot tell them
apart, and what is tested is where imagined samples go and when they may answer. Queries are faces
of held-out subjects. Features: :func:`gdm_helpers.pixel_features`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from gdm_helpers import BACKENDS, memory_snapshot, pixel_features, snapshots_equal

from clifer_edge.datasets import load_npz
from clifer_edge.memory import (
    GDMConfig,
    GrowingDualMemory,
    MemoryFileError,
    NotFittedError,
    persistence,
)

A, B, C = "happiness", "surprise", "disgust"


@pytest.fixture(scope="module")
def faces(data_dir):
    """(features, labels, train mask) of CK+; 30 subjects held out for queries."""
    data = load_npz(data_dir / "ckplus48.npz")
    held_out = np.random.default_rng(0).choice(np.unique(data.subjects), 30, replace=False)
    train = ~np.isin(data.subjects, held_out)
    return pixel_features(data.images, data.subjects, train), data.labels, train


def _sample(faces, label: str, train: bool, n: int | None = None, seed: int = 0) -> np.ndarray:
    Z, labels, mask = faces
    rows = np.flatnonzero((mask if train else ~mask) & (labels == label))
    return Z[np.random.default_rng(seed).permutation(rows)[:n]]


def _learn_real(memory: GrowingDualMemory, X: np.ndarray, label: str) -> None:
    for start in range(0, len(X), 5):
        memory.partial_fit(X[start : start + 5], [label] * len(X[start : start + 5]))
        memory.replay()


def _pair(backend: str, faces) -> tuple[GrowingDualMemory, GrowingDualMemory]:
    """Two memories that learned A for real; the first one also imagined B."""
    memories = [GrowingDualMemory(GDMConfig(backend=backend), seed=3) for _ in range(2)]
    for memory in memories:
        _learn_real(memory, _sample(faces, A, True, 30), A)
    before = memory_snapshot(memories[0])
    memories[0].partial_fit(_sample(faces, B, True, 30, seed=1), [B] * 30, imagined=True)
    after = memory_snapshot(memories[0])
    # Imagined samples never reach the real networks, their labels or the random state.
    assert after["classes"] == [A, B] and memories[0].labels_ == [A]
    assert after["n_episodes"] == before["n_episodes"] + 1  # it changed: worth saving
    for key in ("classes", "imagined", "n_episodes"):
        before[key] = after[key]
    assert snapshots_equal(before, after)
    return memories[0], memories[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_imagined_class_answers_until_it_is_learned_for_real(backend, faces) -> None:
    memory, plain = _pair(backend, faces)
    stats = memory.stats()
    assert stats["labels"] == [A] and stats["classes"] == [A, B]
    assert stats["imagined"]["nodes"] > 0 and plain.stats()["imagined"]["nodes"] == 0
    queries = {label: _sample(faces, label, False) for label in (A, B)}
    for name in ("episodic", "semantic"):
        answers = memory.predict(queries[B], memory=name)
        # Without imagination an unseen class can never be named; with it, most B faces are.
        assert set(plain.predict(queries[B], memory=name)) == {A}
        assert np.mean(np.array(answers) == B) > 0.5, (name, answers)
        proba = memory.predict_proba(queries[B], memory=name)
        assert proba.shape == (len(queries[B]), 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert [memory.classes_[i] for i in proba.argmax(axis=1)] == answers
        # Where the real memory answers, it answers exactly as the memory without imagination.
        real = np.array(answers) == A
        np.testing.assert_array_equal(
            proba[real, :1], plain.predict_proba(queries[B][real], memory=name)
        )
        assert np.all(proba[real, 1] == 0.0)

    # B arrives for real: the imagined B nodes yield at once (pruned), and every answer is the
    # real memory's, bit for bit the same as that of the memory that never imagined.
    real_b = _sample(faces, B, True, 30, seed=2)
    for mem in (memory, plain):
        _learn_real(mem, real_b, B)
    assert memory.imagined_ is None and memory.stats()["imagined"]["nodes"] == 0
    snapshot = memory_snapshot(memory)
    snapshot["n_episodes"] -= 1  # the imagined episode
    assert snapshots_equal(snapshot, memory_snapshot(plain))
    both = np.concatenate(list(queries.values()))
    for name in ("episodic", "semantic"):
        np.testing.assert_array_equal(
            memory.predict_proba(both, memory=name), plain.predict_proba(both, memory=name)
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_imagined_nodes_of_real_classes_never_answer(backend, faces) -> None:
    memory, plain = _pair(backend, faces)
    n_before = memory.imagined_.n_nodes
    # Imagined samples of a class learned for real are skipped; others open their class.
    mixed = np.concatenate([_sample(faces, A, True, 10, seed=4), _sample(faces, C, True, 30)])
    memory.partial_fit(mixed, [A] * 10 + [C] * 30, imagined=True)
    assert memory.labels_ == [A] and memory.classes_ == [A, B, C]
    assert {memory.classes_[i] for i in memory._imagined_labels()} == {B, C}
    assert memory.imagined_.n_nodes > n_before
    snapshot = memory_snapshot(memory)
    memory.partial_fit(_sample(faces, A, True, 5, seed=5), [A] * 5, imagined=True)
    assert snapshots_equal(memory_snapshot(memory), snapshot)  # nothing left to learn

    _learn_real(memory, _sample(faces, B, True, 30, seed=2), B)
    _learn_real(plain, _sample(faces, B, True, 30, seed=2), B)
    # Only the C nodes remain, and they answer only where they are nearer than real faces.
    assert {memory.classes_[i] for i in memory._imagined_labels()} == {C}
    assert memory.labels_ == [A, B] and memory.classes_ == [A, B, C]
    queries = np.concatenate([_sample(faces, label, False) for label in (A, B, C)])
    for name in ("episodic", "semantic"):
        answers = np.array(memory.predict(queries, memory=name))
        reference = np.array(plain.predict(queries, memory=name))
        changed = answers != reference
        assert set(answers[changed]) <= {C}  # a real class's answer never comes from imagination
        assert changed.any() and not changed.all()
        assert memory.predict_proba(queries, memory=name).shape == (len(queries), 3)


def test_imagined_margin_keeps_faces_near_real_knowledge_real(faces) -> None:
    """With ``imagined_margin`` m, an imagined node answers only where m times its distance is
    below the nearest real episodic node's; learning is the same whatever m."""
    memories = {}
    for margin in (1.0, 1.3):
        memory = GrowingDualMemory(GDMConfig(imagined_margin=margin), seed=3)
        _learn_real(memory, _sample(faces, A, True, 30), A)
        memory.partial_fit(_sample(faces, B, True, 30, seed=1), [B] * 30, imagined=True)
        memories[margin] = memory
    assert snapshots_equal(memory_snapshot(memories[1.0]), memory_snapshot(memories[1.3]))
    queries = np.concatenate([_sample(faces, label, False) for label in (A, B)])
    _, imagined_distance = memories[1.0].imagined_.nearest(queries)
    _, real_distance = memories[1.0].episodic_.nearest(queries)
    for margin, memory in memories.items():
        for name in ("episodic", "semantic"):
            by_imagination = memory.predict_proba(queries, memory=name)[:, 1] > 0
            np.testing.assert_array_equal(
                by_imagination, margin * imagined_distance < real_distance
            )
    assert 0 < np.sum(1.3 * imagined_distance < real_distance) < len(queries)
    assert np.sum(1.3 * imagined_distance < real_distance) < np.sum(
        imagined_distance < real_distance
    )
    with pytest.raises(ValueError, match="imagined_margin"):
        GDMConfig(imagined_margin=0.9)


def test_imagination_needs_real_faces_first_and_valid_input(faces) -> None:
    memory = GrowingDualMemory(GDMConfig())
    with pytest.raises(NotFittedError, match="real faces first"):
        memory.partial_fit(_sample(faces, B, True, 5), [B] * 5, imagined=True)
    assert not hasattr(memory, "labels_")
    memory, _ = _pair("cython", faces)
    snapshot = memory_snapshot(memory)
    with pytest.raises(ValueError, match="features per sample"):
        memory.partial_fit(np.zeros((2, 3)), [C, C], imagined=True)
    with pytest.raises(ValueError, match="labels"):
        memory.partial_fit(_sample(faces, C, True, 2), [C], imagined=True)
    assert snapshots_equal(memory_snapshot(memory), snapshot)


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_with_imagined_knowledge_is_bit_exact(backend, faces, tmp_path) -> None:
    memory, _ = _pair(backend, faces)
    memory.partial_fit(_sample(faces, C, True, 20), [C] * 20, imagined=True)
    path = tmp_path / "person.gdm"
    memory.save(path)
    loaded = GrowingDualMemory.load(path)
    assert snapshots_equal(memory_snapshot(memory), memory_snapshot(loaded))
    assert loaded.stats() == memory.stats() and loaded.classes_ == [A, B, C]
    queries = np.concatenate([_sample(faces, label, False) for label in (A, B, C)])
    for name in ("episodic", "semantic"):
        np.testing.assert_array_equal(
            loaded.predict_proba(queries, memory=name), memory.predict_proba(queries, memory=name)
        )
    # Both go on learning identically: more imagination, then a class for real (pruning).
    for mem in (memory, loaded):
        mem.partial_fit(_sample(faces, C, True, 10, seed=7), [C] * 10, imagined=True)
        _learn_real(mem, _sample(faces, C, True, 10, seed=8), C)
    assert snapshots_equal(memory_snapshot(memory), memory_snapshot(loaded))
    assert memory.imagined_ is not None  # the B nodes stay: B was not learned for real
    # A new node bound (a loaded memory under another configuration) reaches the imagined network.
    loaded.set_max_nodes(7, 9)
    assert loaded.imagined_.config.max_nodes == 7 == loaded.episodic_.config.max_nodes


def _rewrite(path, target, edit_header=None, edit_arrays=None) -> None:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(arrays.pop("header").tobytes())
    header.pop("checksum")
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(arrays)
    header["checksum"] = persistence._checksum(header, arrays)
    encoded = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(target, "wb") as stream:
        np.savez(stream, header=encoded, **arrays)


def test_files_of_schema_1_still_load(faces, tmp_path) -> None:
    """A schema-1 file (no ``classes``, no imagined network) loads as a memory that imagined
    nothing, and can start imagining."""
    _, plain = _pair("cython", faces)
    path, old = tmp_path / "new.gdm", tmp_path / "old.gdm"
    plain.save(path)

    def to_schema_1(header: dict) -> None:
        header["schema_version"] = 1
        del header["classes"]

    _rewrite(path, old, edit_header=to_schema_1)
    loaded = GrowingDualMemory.load(old)
    assert loaded.imagined_ is None and loaded.classes_ == loaded.labels_ == [A]
    assert snapshots_equal(memory_snapshot(loaded), memory_snapshot(plain))
    loaded.partial_fit(_sample(faces, B, True, 10), [B] * 10, imagined=True)
    assert loaded.classes_ == [A, B] and loaded.stats()["imagined"]["nodes"] > 0
    assert loaded.n_episodes_ == plain.n_episodes_ + 1


def test_files_of_schema_2_keep_halfway_insertion(faces, tmp_path) -> None:
    """A schema-2 file predates ``insert_at_input``: it loads with GWR's halfway insertion in
    both networks, the rule it was created with."""
    _, plain = _pair("cython", faces)
    path, old = tmp_path / "new.gdm", tmp_path / "old.gdm"
    plain.save(path)
    assert plain.config_.semantic.insert_at_input and not plain.config_.episodic.insert_at_input

    def to_schema_2(header: dict) -> None:
        header["schema_version"] = 2
        for name in ("episodic", "semantic"):
            del header["config"][name]["insert_at_input"]

    _rewrite(path, old, edit_header=to_schema_2)
    loaded = GrowingDualMemory.load(old)
    assert not loaded.config_.semantic.insert_at_input
    assert not loaded.config_.episodic.insert_at_input
    assert loaded.predict(_sample(faces, A, False, 5)) == plain.predict(_sample(faces, A, False, 5))


def test_inconsistent_imagined_content_is_rejected(faces, tmp_path) -> None:
    memory, _ = _pair("cython", faces)
    path = tmp_path / "m.gdm"
    memory.save(path)
    for edit_header, edit_arrays, message in [
        (lambda h: h.update(classes=[B]), None, "classes"),
        (lambda h: h.update(classes=[A, B, B]), None, "classes"),
        (lambda h: h.update(classes=[A, B, C]), None, "imagined histograms"),
        (None, lambda a: a.pop("imagined.weights"), "imagined.weights"),
        (None, lambda a: a.update({"imagined.edges": a["imagined.edges"] + 999}), "edges"),
    ]:
        bad = tmp_path / "bad.gdm"
        _rewrite(path, bad, edit_header, edit_arrays)
        with pytest.raises(MemoryFileError, match=message):
            GrowingDualMemory.load(bad)


def test_compiled_equals_reference_with_imagination(faces) -> None:
    """Both implementations imagine, prune and answer alike."""
    memories = []
    for backend in BACKENDS:
        memory, _ = _pair(backend, faces)
        memory.partial_fit(_sample(faces, C, True, 30), [C] * 30, imagined=True)
        _learn_real(memory, _sample(faces, B, True, 15, seed=2), B)
        memories.append(memory)
    fast, ref = (memory_snapshot(m) for m in memories)
    assert fast["classes"] == ref["classes"] and fast["labels"] == ref["labels"]
    for name in ("episodic", "semantic", "imagined"):
        assert fast[name].n_nodes == ref[name].n_nodes
        np.testing.assert_allclose(fast[name].weights, ref[name].weights, atol=1e-5)
        np.testing.assert_array_equal(fast[name].edges, ref[name].edges)
    queries = np.concatenate([_sample(faces, label, False) for label in (A, B, C)])
    for name in ("episodic", "semantic"):
        assert memories[0].predict(queries, memory=name) == memories[1].predict(
            queries, memory=name
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_real_class_nobody_imagined_leaves_imagined_answers_working(backend, faces) -> None:
    """A, imagined B, then a real class C that was never imagined (a label the generator cannot
    draw): ``classes_`` grows past the imagined network's histograms, and the imagined B nodes
    still answer B faces, with a zero score for C (this raised a broadcast error before)."""
    memory, plain = _pair(backend, faces)
    _learn_real(memory, _sample(faces, C, True, 10, seed=4), C)
    _learn_real(plain, _sample(faces, C, True, 10, seed=4), C)
    assert memory.classes_ == [A, B, C] and memory.labels_ == [A, C]
    queries = _sample(faces, B, False)
    for name in ("episodic", "semantic"):
        proba = memory.predict_proba(queries, memory=name)
        assert proba.shape == (len(queries), 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        answers = memory.predict(queries, memory=name)
        assert B in answers and B not in plain.predict(queries, memory=name)
        imagined = np.array(answers) == B
        assert np.all(proba[imagined][:, [0, 2]] == 0.0)
