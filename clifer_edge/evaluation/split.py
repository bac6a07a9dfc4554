"""Per-subject train/test split that never puts frames of one recording on both sides.

CK+ keeps the last three frames of each sequence: near-duplicates. A random frame split would
test the memory on copies of what it was trained on, so whole sequences go to one side.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from clifer_edge.datasets import FaceDataset

#: Printed in every report: how the held-out faces were chosen.
SPLIT_RULE = (
    "Per subject and class, whole sequences (key = subject/sequence; a sample without a "
    "sequence id is its own sequence) go to one side: a class with n >= 2 sequences holds out "
    "round(test_fraction * n) of them (at least 1, at most n - 1), chosen by a shuffle seeded by "
    "(seed, subject, class). A class recorded in a single sequence cannot be split without "
    "putting near-duplicate frames on both sides: it is dropped for that subject, unless "
    "frame splitting is allowed, in which case the sequence's last frame is held out and the "
    "run is flagged as leaking."
)


@dataclass(frozen=True)
class SubjectSplit:
    """Row indices of one subject's training and held-out faces.

    ``classes`` are the classes with faces on both sides; ``dropped`` those that could not be
    split; ``frame_split`` the classes split inside one sequence (near-duplicates on both sides).
    """

    subject: str
    train: np.ndarray
    test: np.ndarray
    classes: tuple[str, ...]
    dropped: tuple[str, ...] = ()
    frame_split: tuple[str, ...] = field(default=())


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the seed and the names (stable across runs, platforms)."""
    return np.random.default_rng([seed, *(zlib.crc32(key.encode()) for key in keys)])


def split_subject(
    dataset: FaceDataset,
    subject: str,
    test_fraction: float = 1.0 / 3.0,
    seed: int = 0,
    allow_frame_split: bool = False,
) -> SubjectSplit:
    """Split one subject's faces into training and held-out rows by :data:`SPLIT_RULE`.

    Raises
    ------
    ValueError
        If the data set has no subject ids, the subject is unknown, or ``test_fraction`` is
        not in (0, 1).
    """
    if dataset.subjects is None:
        raise ValueError(f"{dataset.source}: no 'subjects' array; the protocol is per subject")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} should lie in (0, 1)")
    rows = np.flatnonzero(dataset.subjects == subject)
    if rows.size == 0:
        raise ValueError(f"subject {subject!r} not in {dataset.source}")
    keys = dataset.sequence_keys()
    train: list[int] = []
    test: list[int] = []
    classes: list[str] = []
    dropped: list[str] = []
    frame_split: list[str] = []
    for label in sorted(set(dataset.labels[rows])):
        class_rows = rows[dataset.labels[rows] == label]
        sequences = sorted(set(keys[class_rows]))
        if len(sequences) >= 2:
            order = _rng(seed, subject, label).permutation(len(sequences))
            n_test = min(max(round(test_fraction * len(sequences)), 1), len(sequences) - 1)
            held_out = {sequences[i] for i in order[:n_test]}
            is_test = np.isin(keys[class_rows], list(held_out))
            test.extend(class_rows[is_test])
            train.extend(class_rows[~is_test])
            classes.append(label)
        elif allow_frame_split and class_rows.size >= 2:
            # Rows of a sequence are stored in frame order: hold out the last (peak) frame.
            test.append(class_rows[-1])
            train.extend(class_rows[:-1])
            classes.append(label)
            frame_split.append(label)
        else:
            dropped.append(label)
    return SubjectSplit(
        subject=subject,
        train=np.asarray(sorted(train), dtype=np.int64),
        test=np.asarray(sorted(test), dtype=np.int64),
        classes=tuple(classes),
        dropped=tuple(dropped),
        frame_split=tuple(frame_split),
    )
