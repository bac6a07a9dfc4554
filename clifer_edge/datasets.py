"""Loading labelled face data sets in the shared npz layout.

The layout (see ``../shared/data/README.md``): ``images`` uint8 [N, H, W] (grayscale) or
[N, H, W, 3] (RGB), ``labels`` str [N]; optional ``subjects``, ``sequences``, ``splits``, ``ids``
str [N]. Labels are mapped to the canonical vocabulary of :mod:`clifer_edge.labels` on load.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clifer_edge.labels import canonical_label

#: Environment variable that points at the shared data directory.
DATA_DIR_ENV = "CLIFER_DATA_DIR"

_OPTIONAL_KEYS = ("subjects", "sequences", "splits", "ids")


class DatasetError(ValueError):
    """A data file is missing, unreadable or not in the shared npz layout."""


@dataclass(frozen=True)
class FaceDataset:
    """Faces with canonical labels and optional per-sample metadata (all arrays of length N)."""

    images: np.ndarray
    labels: np.ndarray
    subjects: np.ndarray | None = None
    sequences: np.ndarray | None = None
    splits: np.ndarray | None = None
    ids: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, mask: np.ndarray) -> FaceDataset:
        """Rows selected by a boolean mask or an index array, metadata kept aligned."""

        def pick(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[mask]

        return FaceDataset(
            images=self.images[mask],
            labels=self.labels[mask],
            subjects=pick(self.subjects),
            sequences=pick(self.sequences),
            splits=pick(self.splits),
            ids=pick(self.ids),
            source=self.source,
        )

    def sequence_keys(self) -> np.ndarray:
        """One key per sample that is shared exactly by near-duplicate frames of one recording.

        CK+ numbers sequences per subject, so the key joins subject and sequence; without
        sequence ids every sample is its own sequence.
        """
        if self.sequences is None:
            return np.arange(len(self)).astype(str)
        subjects = self.subjects if self.subjects is not None else np.full(len(self), "")
        return np.char.add(np.char.add(subjects.astype(str), "/"), self.sequences.astype(str))


def default_data_dir() -> Path:
    """The shared data directory: ``$CLIFER_DATA_DIR``, else ``../shared/data`` from the cwd."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return Path.cwd().parent / "shared" / "data"


def resolve_data_file(name_or_path: str | os.PathLike[str]) -> Path:
    """A path as given if it exists, else the name looked up in :func:`default_data_dir`."""
    path = Path(name_or_path)
    if path.exists():
        return path
    candidate = default_data_dir() / path.name
    if candidate.exists():
        return candidate
    also = "" if candidate.absolute() == path.absolute() else f", nor in {candidate.parent}"
    raise DatasetError(
        f"data file {str(name_or_path)!r} not found{also}; "
        f"set {DATA_DIR_ENV} to the folder holding the shared data"
    )


def load_npz(path: str | os.PathLike[str]) -> FaceDataset:
    """Load and validate a data set in the shared npz layout.

    Raises
    ------
    DatasetError
        If the file is missing, not a readable npz, lacks ``images``/``labels``, or its arrays
        disagree in length or type.
    """
    path = resolve_data_file(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DatasetError(f"{path}: not a readable npz archive ({error})") from None
    for key in ("images", "labels"):
        if key not in arrays:
            raise DatasetError(f"{path}: missing array {key!r} (has {sorted(arrays)})")
    images = arrays["images"]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise DatasetError(f"{path}: images of shape {images.shape} should be [N,H,W] or [N,H,W,3]")
    if images.dtype != np.uint8:
        raise DatasetError(f"{path}: images of dtype {images.dtype} should be uint8")
    n = images.shape[0]
    if n == 0:
        raise DatasetError(f"{path}: holds no images")
    columns: dict[str, np.ndarray | None] = {}
    for key in ("labels", *_OPTIONAL_KEYS):
        if key not in arrays:
            columns[key] = None
            continue
        column = arrays[key]
        if column.shape != (n,):
            raise DatasetError(f"{path}: {key} has shape {column.shape}, expected ({n},)")
        columns[key] = column.astype(str)
    labels = np.array([canonical_label(label) for label in columns["labels"]])
    return FaceDataset(
        images=images,
        labels=labels,
        subjects=columns["subjects"],
        sequences=columns["sequences"],
        splits=columns["splits"],
        ids=columns["ids"],
        source=str(path),
    )
