"""Stage 1: E's backbone and expression code, with C, trained as a plain expression classifier.

Why a stage of its own: inside the CAAE the encoder serves two masters, and measured on the first
default model its expression information fell as the GAN terms rose (C on z reached 0.42 on
FER2013 PublicTest after 6 epochs; the JAFFE memories were better after 1 epoch than after 6).
Here the expression path alone learns FER2013 with augmentation and a class-balanced loss; stage 2
(:mod:`clifer_train.caae`) then keeps it fixed (``freeze_expression``) and trains the identity
code and the generator around it.

Writes ``OUT/pretrain/``: per-epoch checkpoints (exact resume), ``history.csv`` and ``curves.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras

from clifer_train import checkpoint
from clifer_train import data as data_lib
from clifer_train.config import TrainConfig
from clifer_train.records import ProgressBar, plot_history, read_history, write_history

log = logging.getLogger(__name__)


def expression_model(encoder: keras.Model, classifier: keras.Model) -> keras.Model:
    """image -> expression code -> C's logits (shares the layers and weights of E and C)."""
    code = encoder.get_layer("z_expression").output
    return keras.Model(encoder.input, classifier(code), name="expression_model")


def pretrain(
    encoder: keras.Model,
    classifier: keras.Model,
    train_faces: data_lib.FaceArrays,
    val_faces: data_lib.FaceArrays | None,
    cfg: TrainConfig,
    out: Path,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train (or finish training) stage 1 in ``out / "pretrain"``; return its history rows."""
    directory = out / "pretrain"
    model = expression_model(encoder, classifier)
    steps = data_lib.steps_per_epoch(len(train_faces), cfg.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.pretrain_learning_rate, decay_steps=cfg.pretrain_epochs * steps, alpha=0.01
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.05),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        weighted_metrics=[],
    )
    model.optimizer.build(model.trainable_variables)
    holders = {"model": model.variables, "optimizer": model.optimizer.variables}
    first_epoch = 0
    found = checkpoint.latest(directory)
    if found is not None:
        first_epoch = checkpoint.restore(found, holders)
        log.info("stage 1: resumed from %s (%d epochs done)", found, first_epoch)
    history = read_history(directory / "history.csv", first_epoch)
    if first_epoch >= cfg.pretrain_epochs:
        return history

    batches = data_lib.FaceBatches(train_faces, cfg, first_epoch, weighted=True)
    recorder = _Recorder(directory, holders, history)
    callbacks: list[keras.callbacks.Callback] = [data_lib.FollowEpochs(batches), recorder]
    if progress:
        callbacks.append(ProgressBar(steps, ("loss", "accuracy"), "stage 1, epoch"))
    model.fit(
        batches,
        epochs=cfg.pretrain_epochs,
        initial_epoch=first_epoch,
        validation_data=(val_faces.images, data_lib.one_hot(val_faces))
        if val_faces is not None
        else None,
        callbacks=callbacks,
        shuffle=False,  # the batches shuffle per epoch themselves (reproducibly)
        verbose=0,
    )
    return recorder.history


class _Recorder(keras.callbacks.Callback):
    """Checkpoint, history and curves after every epoch of stage 1."""

    def __init__(self, directory: Path, holders: dict[str, list], history: list) -> None:
        super().__init__()
        self.directory = directory
        self.holders = holders
        self.history = history

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        checkpoint.save(self.directory, epoch + 1, self.holders)
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(row)
        write_history(self.directory / "history.csv", self.history)
        plot_history(
            self.history,
            self.directory / "curves.png",
            {"loss": ["loss", "val_loss"], "accuracy": ["accuracy", "val_accuracy"]},
        )
        log.info("stage 1, epoch %d: %s", epoch + 1, _fmt(row))


def _fmt(row: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch")
