"""Training faces: three source layouts in, one ``tf.data`` pipeline out.

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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

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
    """Read raw faces from an npz file, a FER2013 CSV or a class-per-folder tree.

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
# tf.data
def steps_per_epoch(n_faces: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped so every step has the same shape)."""
    steps = n_faces // batch_size
    if steps < 1:
        raise ValueError(f"{n_faces} training faces do not fill one batch of {batch_size}")
    return steps


def training_dataset(
    faces: FaceArrays, cfg: TrainConfig, first_epoch: int, last_epoch: int
) -> tf.data.Dataset:
    """Batches for epochs ``first_epoch .. last_epoch - 1``, one epoch after the other.

    Each epoch's order and augmentation depend only on ``(cfg.seed, epoch)``; pass the dataset to
    ``fit`` with ``steps_per_epoch`` so one iterator runs through all epochs.
    """
    images = tf.constant(faces.images)
    one_hot = tf.one_hot(faces.labels, len(faces.vocabulary))
    n = len(faces)
    steps = steps_per_epoch(n, cfg.batch_size)
    shift = round(cfg.augment_shift * cfg.image_size / 48)

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n), seed=tf.stack([tf.constant(cfg.seed, tf.int64), epoch])
        )
        order = order[: steps * cfg.batch_size]
        positions = tf.data.Dataset.from_tensor_slices(order).enumerate()
        return positions.map(
            lambda i, index: (
                _augment(tf.gather(images, index), epoch, i, cfg, shift),
                tf.gather(one_hot, index),
            )
        )

    epochs = tf.data.Dataset.range(first_epoch, last_epoch)
    dataset = epochs.flat_map(one_epoch).batch(cfg.batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = 1
    return dataset.with_options(options).prefetch(2)


def evaluation_dataset(faces: FaceArrays, batch_size: int) -> tf.data.Dataset:
    """Un-augmented batches in file order (validation, sample grids)."""
    one_hot = tf.one_hot(faces.labels, len(faces.vocabulary))
    return tf.data.Dataset.from_tensor_slices((faces.images, one_hot)).batch(batch_size)


def _augment(
    image: tf.Tensor, epoch: tf.Tensor, position: tf.Tensor, cfg: TrainConfig, shift: int
) -> tf.Tensor:
    """Light, label-preserving augmentation: mirror, small shift, small brightness change."""
    seed = tf.stack([epoch * 1_000_003 + cfg.seed, position])
    seeds = tf.random.experimental.stateless_split(seed, 3)
    if cfg.augment_flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    if shift > 0:
        padded = tf.pad(image, [[shift, shift], [shift, shift], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(padded, tf.shape(image), seeds[1])
    if cfg.augment_brightness > 0:
        delta = tf.random.stateless_uniform(
            [], seeds[2], -cfg.augment_brightness, cfg.augment_brightness
        )
        image = tf.clip_by_value(image + delta, -1.0, 1.0)
    return image


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
