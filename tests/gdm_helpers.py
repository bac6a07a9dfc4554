"""Shared helpers for the GDM tests: backends to run on, a seeded clustered stream, and a fixed
pixel feature of real faces."""

from __future__ import annotations

import numpy as np

from clifer_edge.memory import GDMConfig, GrowingDualMemory

#: Every test that runs a memory runs it on both implementations. The compiled one must be built
#: (``pip install .`` or ``python setup.py build_ext --inplace``); it is never silently skipped.
BACKENDS = ("cython", "numpy")


def clustered_stream(
    n_classes: int = 4,
    per_class: int = 5,
    n_features: int = 16,
    spread: float = 0.15,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, list[str]]]]:
    """Separated Gaussian classes: (centres, class names, one (X, labels) episode per class)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1.0, 1.0, size=(n_classes, n_features))
    names = np.array([f"class{c}" for c in range(n_classes)])
    episodes = []
    for c in range(n_classes):
        X = centres[c] + spread * rng.standard_normal((per_class, n_features))
        episodes.append((X.astype(np.float32), [str(names[c])] * per_class))
    return centres, names, episodes


def test_points(
    centres: np.ndarray, names: np.ndarray, per_class: int = 10, spread: float = 0.15, seed: int = 1
):
    """Fresh samples around the same centres, with their labels."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + spread * rng.standard_normal((per_class, c.size)) for c in centres])
    return X.astype(np.float32), np.repeat(names, per_class)


test_points.__test__ = False  # a helper, not a test


def fitted_memory(backend: str, seed: int = 0, replay: bool = True, **config) -> GrowingDualMemory:
    """A memory trained class by class on :func:`clustered_stream` (with replay after each)."""
    _, _, episodes = clustered_stream()
    memory = GrowingDualMemory(GDMConfig.from_dict({"backend": backend, **config}), seed=seed)
    for X, labels in episodes:
        memory.partial_fit(X, labels)
        if replay:
            memory.replay()
    return memory


def memory_snapshot(memory: GrowingDualMemory) -> dict:
    """Everything observable about a memory, for unchanged/equal checks."""
    return {
        "labels": list(memory.labels_),
        "classes": list(memory.classes_),
        "n_episodes": memory.n_episodes_,
        "rng": memory.rng_.bit_generator.state,
        "episodic": memory.episodic_.get_state(),
        "semantic": memory.semantic_.get_state(),
        "imagined": None if memory.imagined_ is None else memory.imagined_.get_state(),
    }


def snapshots_equal(a: dict, b: dict) -> bool:
    imagined = a["imagined"] is b["imagined"] is None or (
        None not in (a["imagined"], b["imagined"]) and a["imagined"].equals(b["imagined"])
    )
    return (
        a["labels"] == b["labels"]
        and a["classes"] == b["classes"]
        and a["n_episodes"] == b["n_episodes"]
        and a["rng"] == b["rng"]
        and a["episodic"].equals(b["episodic"])
        and a["semantic"].equals(b["semantic"])
        and imagined
    )


def pixel_features(images: np.ndarray, subjects: np.ndarray, fit_mask: np.ndarray) -> np.ndarray:
    """A fixed feature of real faces (used where no encoder is needed): each image standardised,
    each subject's mean face subtracted (identity removed without labels), PCA(20) fitted on
    ``fit_mask`` rows only, scaled to a root-mean-square norm of 3 (the distance scale of the
    CLIFER thresholds)."""
    from sklearn.decomposition import PCA

    X = images.reshape(len(images), -1).astype(np.float64)
    X = (X - X.mean(axis=1, keepdims=True)) / X.std(axis=1, keepdims=True)
    for subject in np.unique(subjects):
        rows = subjects == subject
        X[rows] -= X[rows].mean(axis=0)
    Z = PCA(20, random_state=0).fit(X[fit_mask]).transform(X)
    return (3.0 * Z / np.sqrt((Z[fit_mask] ** 2).sum(axis=1).mean())).astype(np.float32)
