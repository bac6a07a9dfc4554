"""Training faces: three source layouts in, one batch pipeline out (numpy, any Keras backend).

Sources (all mapped to the canonical labels of :mod:`clifer_edge.labels` and prepared by the one
shared :func:`clifer_edge.preprocessing.preprocess_faces`, so training, export and the robot see
identical pixels):

- the shared npz layout (``images``, ``labels``, optional ``subjects``/``splits``), read with
  :func:`clifer_edge.datasets.load_npz`;
- a class-per-folder image tree (``root/<label>/*.png``; optional ``root/<split>/<label>/...``);
- the FER2013 CSV layout (columns ``emotion``, ``pixels``, ``Usage``).

Faces whose label is not in the model's vocabulary (e.g. CK+'s contempt) are dropped and counted.
The pipeline reshuffles and augments each epoch from seeds derived from (seed, epoch), so a run
resumed at epoch k sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import csv
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np

from clifer_edge.datasets import DatasetError, FaceDataset, load_npz
from clifer_edge.labels import canonical_label
from clifer_edge.preprocessing import preprocess_faces
from clifer_train.config import TrainConfig

log = logging.getLogger(__name__)

#: FER2013's integer emotion codes.
FER2013_EMOTIONS: tuple[str, ...] = (
    "anger",
    "disgust",
    "fear",
    "happiness",
    "sadness",
    "surprise",
    "neutral",
)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm"}


@dataclass(frozen=True)
class FaceArrays:
    """Model-ready faces: ``images`` float32 [N, S, S, C] in [-1, 1], ``labels`` int [N]."""

    images: np.ndarray
    labels: np.ndarray
    vocabulary: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def read_faces(path: str | Path) -> FaceDataset:
    """Read raw faces from an npz file (plain or packed), a FER2013 CSV or a class-folder tree.

    Raises
    ------
    DatasetError
        If the path is missing or the file/tree is not in one of the three layouts.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder_tree(path)
    if path.suffix.lower() == ".csv":
        return _read_fer2013_csv(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with np.load(path, allow_pickle=False) as archive:
            if "webp" in archive.files:  # packed for travel (clifer_train.pack)
                from clifer_train.pack import unpack

                return unpack({key: archive[key] for key in archive.files}, str(path))
    return load_npz(path)


def prepare(dataset: FaceDataset, cfg: TrainConfig, split: str | None) -> FaceArrays:
    """Select a split, keep the vocabulary's classes and preprocess the faces for the model.

    ``split=None`` keeps every face (for sources without splits).
    """
    if split is not None:
        if dataset.splits is None:
            raise DatasetError(f"{dataset.source}: has no 'splits', cannot select {split!r}")
        mask = dataset.splits == split
        if not mask.any():
            found = sorted(set(dataset.splits.tolist()))
            raise DatasetError(f"{dataset.source}: no faces in split {split!r} (splits: {found})")
        dataset = dataset.subset(mask)
    known = np.isin(dataset.labels, cfg.vocabulary)
    if not known.all():
        dropped = sorted(set(dataset.labels[~known].tolist()))
        log.info(
            "dropping %d faces with labels outside the vocabulary: %s",
            (~known).sum(),
            dropped,
        )
        dataset = dataset.subset(known)
    if len(dataset) == 0:
        raise DatasetError(f"{dataset.source}: no faces with labels in {cfg.vocabulary}")
    images = preprocess_faces(dataset.images, cfg.image_size, cfg.channels)
    labels = np.array([cfg.vocabulary.index(label) for label in dataset.labels], dtype=np.int32)
    return FaceArrays(images, labels, tuple(cfg.vocabulary))


def load_splits(path: str | Path, cfg: TrainConfig) -> tuple[FaceArrays, FaceArrays | None]:
    """Training and validation faces as the config asks (validation: ``None`` if no splits)."""
    dataset = read_faces(path)
    if dataset.splits is None:
        log.warning("%s has no splits: training on all faces, no validation", dataset.source)
        train, val = prepare(dataset, cfg, None), None
    else:
        train = prepare(dataset, cfg, cfg.train_split)
        val = prepare(dataset, cfg, cfg.val_split) if cfg.val_split else None
    train = _first(train, cfg.max_train_samples, cfg.seed)
    if val is not None:
        val = _first(val, cfg.max_val_samples, cfg.seed + 1)
    return train, val


def _first(faces: FaceArrays, limit: int | None, seed: int) -> FaceArrays:
    """A fixed random subset of ``limit`` faces (all if ``limit`` is None or larger)."""
    if limit is None or limit >= len(faces):
        return faces
    keep = np.sort(np.random.default_rng(seed).permutation(len(faces))[:limit])
    return FaceArrays(faces.images[keep], faces.labels[keep], faces.vocabulary)


# ------------------------------------------------------------------------------------------
# Batches (numpy: the same pipeline under TensorFlow and JAX)
def steps_per_epoch(n_faces: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped so every step has the same shape)."""
    steps = n_faces // batch_size
    if steps < 1:
        raise ValueError(f"{n_faces} training faces do not fill one batch of {batch_size}")
    return steps


def class_weights(labels: np.ndarray, n_classes: int, balance: str) -> np.ndarray:
    """Loss weight per class: 1, or (mean count / count) to the power 1/2 (``sqrt``) or 1.

    FER2013's Training split has 436 disgust faces of 28,709 (happiness: 7,215); without weights
    a classifier all but ignores disgust. Weights are normalised to a frequency-weighted mean of 1.
    """
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if balance == "none":
        weights = np.ones(n_classes)
    else:
        power = 0.5 if balance == "sqrt" else 1.0
        weights = (counts.mean() / np.maximum(counts, 1.0)) ** power
    weights /= (weights * counts).sum() / max(counts.sum(), 1.0)
    return weights.astype(np.float32)


class FaceBatches(keras.utils.PyDataset):
    """Shuffled, augmented training batches ``(images, one-hot[, sample weights])``.

    Each epoch's order and augmentation depend only on ``(cfg.seed, epoch)``, so a run resumed at
    epoch k sees exactly the batches an uninterrupted run would have seen. ``epoch`` is set by
    :class:`FollowEpochs` from ``fit``'s own epoch index (Keras peeks at batches and calls
    ``on_epoch_end`` more often than once per epoch, so a counter would drift); pass
    ``shuffle=False`` to ``fit``. Plain numpy and OpenCV: no TensorFlow needed under JAX.
    """

    def __init__(
        self,
        faces: FaceArrays,
        cfg: TrainConfig,
        first_epoch: int = 0,
        weighted: bool = False,
    ) -> None:
        super().__init__()
        self.faces = faces
        self.cfg = cfg
        self.epoch = first_epoch
        self.steps = steps_per_epoch(len(faces), cfg.batch_size)
        self.one_hot = np.eye(len(faces.vocabulary), dtype=np.float32)[faces.labels]
        self.weights = (
            class_weights(faces.labels, len(faces.vocabulary), cfg.class_balance)[faces.labels]
            if weighted
            else None
        )

    def __len__(self) -> int:
        return self.steps

    def order(self, epoch: int) -> np.ndarray:
        """Face indices of one epoch, batch after batch."""
        rng = np.random.default_rng([self.cfg.seed, epoch])
        return rng.permutation(len(self.faces))[: self.steps * self.cfg.batch_size]

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        size = self.cfg.batch_size
        chosen = self.order(self.epoch)[index * size : (index + 1) * size]
        rng = np.random.default_rng([self.cfg.seed, self.epoch, index, 1])
        images = augment(self.faces.images[chosen], self.cfg, rng)
        if self.weights is None:
            return images, self.one_hot[chosen]
        return images, self.one_hot[chosen], self.weights[chosen]


class FollowEpochs(keras.callbacks.Callback):
    """Tells a :class:`FaceBatches` which epoch ``fit`` is in, before the epoch's batches."""

    def __init__(self, batches: FaceBatches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.batches.epoch = epoch


def augment(images: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """Label-preserving augmentation of faces in [-1, 1]: mirror, small rotation, zoom and shift
    (one affine warp, reflected borders), brightness and contrast."""
    n, side = images.shape[0], images.shape[1]
    out = np.empty_like(images)
    flips = rng.random(n) < 0.5 if cfg.augment_flip else np.zeros(n, bool)
    angles = rng.uniform(-cfg.augment_rotation, cfg.augment_rotation, n)
    scales = rng.uniform(1 - cfg.augment_scale, 1 + cfg.augment_scale, n)
    shift = cfg.shift_pixels
    shifts = rng.uniform(-shift, shift, (n, 2))
    for k in range(n):
        face = images[k, :, :, :]
        if flips[k]:
            face = face[:, ::-1, :]
        matrix = cv2.getRotationMatrix2D((side / 2 - 0.5, side / 2 - 0.5), angles[k], scales[k])
        matrix[:, 2] += shifts[k]
        warped = cv2.warpAffine(
            np.ascontiguousarray(face),
            matrix,
            (side, side),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        out[k] = warped.reshape(face.shape)
    contrast = rng.uniform(1 - cfg.augment_contrast, 1 + cfg.augment_contrast, (n, 1, 1, 1))
    brightness = rng.uniform(-cfg.augment_brightness, cfg.augment_brightness, (n, 1, 1, 1))
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    out = (out - mean) * contrast + mean + brightness
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def one_hot(faces: FaceArrays) -> np.ndarray:
    """Labels as float32 one-hot rows (the generator's condition)."""
    return np.eye(len(faces.vocabulary), dtype=np.float32)[faces.labels]


# ------------------------------------------------------------------------------------------
# Other source layouts
def _read_fer2013_csv(path: Path) -> FaceDataset:
    """FER2013's original CSV: ``emotion`` (0..6), ``pixels`` (2304 grey levels), ``Usage``."""
    if not path.exists():
        raise DatasetError(f"data file {str(path)!r} not found")
    images, labels, splits = [], [], []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: not a FER2013 CSV, missing columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                pixels = np.array(row["pixels"].split(), dtype=np.uint8)
                side = round(float(np.sqrt(pixels.size)))
                if side * side != pixels.size or side == 0:
                    raise ValueError(f"{pixels.size} pixels is not a square image")
                labels.append(FER2013_EMOTIONS[int(row["emotion"])])
            except (ValueError, IndexError, OverflowError) as error:
                raise DatasetError(f"{path}, line {line}: bad row ({error})") from None
            images.append(pixels.reshape(side, side))
            splits.append(row.get("Usage") or "Training")
    if not images:
        raise DatasetError(f"{path}: holds no faces")
    if len({image.shape for image in images}) != 1:
        raise DatasetError(f"{path}: faces of different sizes")
    has_usage = "Usage" in (reader.fieldnames or ())
    return FaceDataset(
        images=np.stack(images),
        labels=np.array(labels),
        splits=np.array(splits) if has_usage else None,
        source=str(path),
    )


def _read_folder_tree(root: Path) -> FaceDataset:
    """``root/<label>/<image>`` or ``root/<split>/<label>/<image>`` (split when no label matches).

    Images are read as 8-bit greyscale or RGB and resized later by the shared preprocessing; all
    faces of one tree must share one size, so they are brought to the first face's size here.
    """
    files: list[tuple[Path, str, str | None]] = []
    for first in sorted(p for p in root.iterdir() if p.is_dir()):
        images_here = [p for p in sorted(first.iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES]
        if images_here:
            files += [(p, first.name, None) for p in images_here]
        for second in sorted(p for p in first.iterdir() if p.is_dir()):
            for p in sorted(second.iterdir()):
                if p.suffix.lower() in _IMAGE_SUFFIXES:
                    files.append((p, second.name, first.name))
    if not files:
        raise DatasetError(f"{root}: no images in class folders (root/<label>/*.png)")
    images, labels, splits = [], [], []
    size: tuple[int, int] | None = None
    for file, label, split in files:
        image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DatasetError(f"{file}: not a readable image")
        if image.dtype != np.uint8:
            raise DatasetError(f"{file}: {image.dtype} pixels, expected 8-bit")
        if image.ndim == 3:
            code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
            image = cv2.cvtColor(image, code)
        size = size or image.shape[:2]
        if image.shape[:2] != size:
            image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
        images.append(image)
        labels.append(canonical_label(label))
        splits.append(split or "")
    if len({image.ndim for image in images}) != 1:
        images = [cv2.cvtColor(i, cv2.COLOR_GRAY2RGB) if i.ndim == 2 else i for i in images]
    has_splits = any(splits)
    return FaceDataset(
        images=np.stack(images),
        labels=np.array(labels),
        splits=np.array(splits) if has_splits else None,
        source=str(root),
    )
