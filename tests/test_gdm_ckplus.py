"""The memory on real faces (CK+), fast: class-incremental episodes, unseen subjects.

Faces are represented by a fixed pixel feature until the encoder exists: each 48x48 image is
standardised (zero mean, unit variance), each subject's mean face is subtracted (removing identity
without labels), PCA(20) is fitted on the training subjects only, and the result is scaled to a
root-mean-square norm of 3 (the distance scale the CLIFER thresholds expect). Frames of one
sequence never sit on both sides of the split: train and test subjects are disjoint.
"""

from __future__ import annotations

import numpy as np
from gdm_helpers import pixel_features
from sklearn.metrics import accuracy_score

from clifer_edge.datasets import load_npz
from clifer_edge.memory import GDMConfig, GrowingDualMemory

CLASSES = ["happiness", "surprise", "disgust", "anger", "sadness", "fear", "contempt"]


def test_learns_real_expressions_class_by_class_above_chance(data_dir) -> None:
    data = load_npz(data_dir / "ckplus48.npz")
    subjects = np.unique(data.subjects)
    n_classes = {s: len(np.unique(data.labels[data.subjects == s])) for s in subjects}
    usable = np.array([n_classes[s] >= 3 for s in data.subjects])
    rng = np.random.default_rng(0)
    held_out = rng.choice([s for s in subjects if n_classes[s] >= 3], 25, replace=False)
    test = usable & np.isin(data.subjects, held_out)
    train = usable & ~test
    Z = pixel_features(data.images, data.subjects, train)

    memory = GrowingDualMemory(GDMConfig(), seed=0)
    train_rows = np.flatnonzero(train)
    for label in CLASSES:  # one expression after the other, in CLIFER's 5-sample episodes
        rows = rng.permutation(train_rows[data.labels[train_rows] == label])[:30]
        for start in range(0, len(rows), 5):
            episode = rows[start : start + 5]
            memory.partial_fit(Z[episode], data.labels[episode])
            memory.replay()

    assert memory.labels_ == CLASSES
    _, counts = np.unique(data.labels[test], return_counts=True)
    majority = counts.max() / counts.sum()  # the best a label-blind guess can do (~0.26)
    for name in ("episodic", "semantic"):
        accuracy = accuracy_score(data.labels[test], memory.predict(Z[test], memory=name))
        assert accuracy > majority + 0.2, (name, accuracy, majority)
