"""Standalone FER2013 expression classifiers: the judge of imagination, and the robot's fallback.

Two uses, one training recipe (FER2013's Training split only, PublicTest kept for the
measurement; faces prepared by the one shared preprocessing function and augmented by the
training pipeline: mirror, rotation, zoom, shift, brightness, contrast,
:func:`clifer_train.data.augment`; a class-weighted loss):

- ``--stages judge``: a small CNN that looks at imagined faces to measure whether the generator
  shows expression ``c`` in ``G(E(x), c)``. It shares no weights with the encoder it judges.
- ``--stages fallback --keep last``: a wider CNN that the robot runs for persons it has not
  learned yet (``clifer-export --expression-model``; :mod:`clifer_edge.models.fallback`). The
  encoder's expression code also has to serve the memories and the generator, and at the
  encoder's width it reaches 0.58 on PublicTest; a classifier with no other duty does better.

Run: ``python -m clifer_train.expression_classifier --data fer2013.npz --out runs/judge.keras``
(under either Keras backend; an interrupted run resumes when started again the same way).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.datasets import FaceDataset, load_npz
from clifer_edge.labels import BASIC_EXPRESSIONS
from clifer_edge.preprocessing import preprocess_faces

#: The judge's stages (filters, 3x3 convolutions before each 2x2 max pooling): ~20 M
#: multiply-adds per face, small on purpose (a fair judge that trains on a CPU in minutes).
JUDGE_STAGES: tuple[tuple[int, int], ...] = ((16, 1), (32, 2), (64, 2), (128, 1))
#: The fallback's stages (``--stages fallback``): the robot's person-independent answer, so
#: accuracy counts more; 1.77 M parameters (the training report's ``parameters``).
FALLBACK_STAGES: tuple[tuple[int, int], ...] = ((32, 2), (64, 2), (128, 2), (256, 2))
NAMED_STAGES = {"judge": (JUDGE_STAGES, 128), "fallback": (FALLBACK_STAGES, 256)}


def build_classifier(
    image_size: int = 48,
    channels: int = 1,
    n_classes: int = len(BASIC_EXPRESSIONS),
    stages: tuple[tuple[int, int], ...] = JUDGE_STAGES,
    dense: int = 128,
) -> Any:
    """A VGG-style CNN: ``stages`` of 3x3 convolutions (batch norm, ReLU) and 2x2 max pooling,
    then dropout, a dense layer of ``dense`` units, dropout and the softmax ``expression``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = inputs
    for filters, convs in stages:
        for _ in range(convs):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.4)(x)
    x = layers.Dense(dense, activation="relu")(x)
    x = layers.Dropout(0.4)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="expression")(x)
    return keras.Model(inputs, outputs, name="expression_classifier")


def encode_labels(
    labels: np.ndarray, vocabulary: tuple[str, ...] = BASIC_EXPRESSIONS
) -> np.ndarray:
    """Class indices in ``vocabulary`` order; ValueError naming any label outside it."""
    index = {name: i for i, name in enumerate(vocabulary)}
    unknown = sorted(set(labels.tolist()) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not in the vocabulary {list(vocabulary)}")
    return np.array([index[label] for label in labels], dtype=np.int64)


def split(dataset: FaceDataset, name: str) -> FaceDataset:
    """The rows of one FER2013 split; ValueError if the data set has no such split."""
    if dataset.splits is None or name not in set(dataset.splits.tolist()):
        raise ValueError(f"{dataset.source}: has no {name!r} split")
    return dataset.subset(dataset.splits == name)


def per_class_accuracy(
    true: np.ndarray, predicted: np.ndarray, vocabulary: tuple[str, ...] = BASIC_EXPRESSIONS
) -> dict[str, float]:
    """Recall of each class (the share of its faces recognised as it)."""
    return {
        name: float(np.mean(predicted[true == i] == i))
        for i, name in enumerate(vocabulary)
        if np.any(true == i)
    }


def balanced_accuracy_callback(x: np.ndarray, y: np.ndarray) -> Any:
    """A callback adding ``val_balanced_accuracy`` (mean per-class recall) to the epoch logs.

    The judge is used per target class, so the checkpoint keeps the epoch that recognises the
    classes most evenly, not the one that is best on the majority classes.
    """
    import keras

    class BalancedAccuracy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            predicted = np.argmax(self.model.predict(x, batch_size=256, verbose=0), axis=1)
            recall = per_class_accuracy(y, predicted)
            if logs is not None:
                logs["val_balanced_accuracy"] = float(np.mean(list(recall.values())))

    return BalancedAccuracy()


def train_classifier(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    epochs: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    limit: int | None = None,
    balanced: bool = True,
    stages: str = "judge",
    keep: str = "best",
) -> dict[str, Any]:
    """Train on the Training split, save the model and a report scored on PublicTest.

    ``stages`` names the architecture (:data:`NAMED_STAGES`). ``keep="best"`` saves the epoch
    best on PublicTest (the judge: its per-class recall matters, it is not scored itself);
    ``keep="last"`` saves every epoch and so keeps the last one, as for a model whose PublicTest
    score is reported (the robot's fallback): no epoch is chosen on the data it is scored on.
    Each epoch is backed up next to ``out`` (``<out>.backup/``), so an interrupted run started
    again with the same arguments resumes where it stopped (model, optimiser, epoch).

    With ``balanced`` the loss weighs each class by the square root of its inverse frequency
    (:func:`clifer_train.data.class_weights`): FER2013 has 16 times more happy than disgusted
    faces, and a judge that never answers "disgust" could not tell whether the generator can
    show it.

    Returns the report (also written next to the model as ``<out>.json``).
    """
    if stages not in NAMED_STAGES or keep not in ("best", "last"):
        raise ValueError(
            f"stages {stages!r} / keep {keep!r}: use one of {sorted(NAMED_STAGES)} / best, last"
        )
    import keras

    keras.utils.set_random_seed(seed)
    dataset = load_npz(data)
    train, test = split(dataset, "Training"), split(dataset, "PublicTest")
    if limit is not None:
        train = train.subset(np.random.default_rng(seed).permutation(len(train))[:limit])
    x_train = preprocess_faces(train.images)
    y_train = encode_labels(train.labels)
    x_test = preprocess_faces(test.images)
    y_test = encode_labels(test.labels)
    from clifer_train import data as data_lib
    from clifer_train.config import TrainConfig

    monitor = "val_balanced_accuracy" if balanced else "val_accuracy"
    cfg = TrainConfig(
        batch_size=batch_size, seed=seed, class_balance="sqrt" if balanced else "none"
    )
    faces = data_lib.FaceArrays(x_train, y_train, BASIC_EXPRESSIONS)
    batches = data_lib.FaceBatches(faces, cfg, weighted=balanced)
    steps = len(batches)
    layout, dense = NAMED_STAGES[stages]
    model = build_classifier(x_train.shape[1], x_train.shape[3], stages=layout, dense=dense)
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(1e-3, epochs * steps, alpha=0.01)
        ),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        weighted_metrics=[],
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    history = model.fit(
        batches,
        epochs=epochs,
        validation_data=(x_test, np.eye(len(BASIC_EXPRESSIONS), dtype=np.float32)[y_test]),
        callbacks=[
            data_lib.FollowEpochs(batches),
            balanced_accuracy_callback(x_test, y_test),
            keras.callbacks.ModelCheckpoint(
                out, monitor=monitor, mode="max", save_best_only=keep == "best"
            ),
            keras.callbacks.BackupAndRestore(out.with_name(out.name + ".backup")),
        ],
        shuffle=False,
        verbose=2,
    )
    seconds = time.perf_counter() - start
    best = keras.models.load_model(out)
    predicted = np.argmax(best.predict(x_test, batch_size=256, verbose=0), axis=1)
    report = {
        "data": Path(dataset.source).name,
        "train_split": "Training",
        "train_faces": len(train),
        "test_split": "PublicTest",
        "test_faces": len(test),
        "epochs": epochs,
        "architecture": stages,
        "parameters": int(best.count_params()),
        "kept_epoch": keep,
        "class_weights": "sqrt of inverse frequency" if balanced else "none",
        "train_seconds": round(seconds, 1),
        "test_accuracy": float(np.mean(predicted == y_test)),
        "test_accuracy_per_class": per_class_accuracy(y_test, predicted),
        "test_balanced_accuracy": float(
            np.mean(list(per_class_accuracy(y_test, predicted).values()))
        ),
        "checkpoint_monitor": monitor,
        "first_epoch": epochs - len(history.history["val_accuracy"]) + 1,
        "accuracy_per_epoch": [float(v) for v in history.history["accuracy"]],
        "val_accuracy_per_epoch": [float(v) for v in history.history["val_accuracy"]],
        "val_balanced_accuracy_per_epoch": [
            float(v) for v in history.history.get("val_balanced_accuracy", [])
        ],
        "vocabulary": list(BASIC_EXPRESSIONS),
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot_report(report, out.with_suffix(".png"))
    return report


def plot_report(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Accuracy per epoch (training, and PublicTest plain and class-balanced) as a plot."""
    from clifer_train.records import plot_history

    keys = ("accuracy", "val_accuracy", "val_balanced_accuracy")
    series = {key: report.get(f"{key}_per_epoch", []) for key in keys}
    n = max(len(values) for values in series.values())
    first = int(report.get("first_epoch", report.get("epochs", n) - n + 1))
    rows = [
        {"epoch": first + i, **{k: v[i] for k, v in series.items() if i < len(v)}} for i in range(n)
    ]
    title = f"{report.get('architecture', 'judge')} classifier, FER2013 (accuracy)"
    plot_history(rows, Path(path), {title: list(keys)})


def load_classifier(path: str | os.PathLike[str]) -> Any:
    """Load a trained classifier (``keras.Model``: faces in [-1, 1] -> class probabilities)."""
    import keras

    return keras.models.load_model(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fer2013.npz", help="FER2013 in the shared npz layout")
    parser.add_argument("--out", required=True, help="where to write the .keras model")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="train on this many faces only")
    parser.add_argument("--unbalanced", action="store_true", help="no class weights")
    parser.add_argument("--stages", choices=sorted(NAMED_STAGES), default="judge")
    parser.add_argument("--keep", choices=("best", "last"), default="best", help="epoch to save")
    args = parser.parse_args(argv)
    report = train_classifier(
        args.data,
        args.out,
        args.epochs,
        args.batch_size,
        args.seed,
        args.limit,
        balanced=not args.unbalanced,
        stages=args.stages,
        keep=args.keep,
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
