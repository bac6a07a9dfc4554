"""A training run: strategy, data, models, ``fit``, and everything written to the run directory.

Run directory (the contract with :mod:`clifer_export`)::

    OUT/config.yaml            the exact configuration trained
    OUT/encoder.keras          E after the latest epoch (re-saved every epoch)
    OUT/generator.keras        G after the latest epoch
    OUT/checkpoints/           five models, both optimisers, the RNG, the epoch (exact resume)
    OUT/train_info.json        data file and sha256, git commit, epochs done, vocabulary, sizes
    OUT/history.csv            one row of training/validation scalars per epoch
    OUT/curves.png             those scalars plotted
    OUT/samples/epoch_NNN.png  real | reconstruction | each target expression, for fixed faces
    OUT/tensorboard/           scalars and the same sample grids
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from clifer_edge.fileio import atomic_path, atomic_write_text, git_commit, sha256_file
from clifer_edge.preprocessing import to_uint8
from clifer_train import data as data_lib
from clifer_train.caae import CAAE, PerceptualLoss
from clifer_train.config import TrainConfig
from clifer_train.models import build_all, build_encoder, build_generator

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # (backend chosen first: no display on servers)

log = logging.getLogger(__name__)


def select_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored from ``TF_CONFIG``, Mirrored for several GPUs, else the default."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def use_mixed_precision(setting: str) -> bool:
    """Mixed float16 only where it pays: on a GPU (``auto``), or when forced (``on``)."""
    if setting == "on":
        return True
    return setting == "auto" and bool(tf.config.list_physical_devices("GPU"))


def limit_threads(threads: int | None) -> None:
    """Cap TensorFlow's CPU threads (a shared machine); ``None`` leaves TF's defaults."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def train(
    cfg: TrainConfig,
    data_path: str | Path,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train (or continue training) a CAAE and fill ``out_dir``; return the history rows.

    Parameters
    ----------
    cfg : TrainConfig
        Ignored when resuming: the run's own ``config.yaml`` is used (with ``epochs`` applied).
    data_path : path
        npz file, FER2013 CSV or class-per-folder tree.
    out_dir : path
        Run directory; must not hold a run unless ``resume`` is set.
    epochs : int, optional
        Total epochs to reach (overrides ``cfg.epochs``).
    resume : bool
        Continue from the latest checkpoint in ``out_dir`` (a fresh start if there is none).
    stop_after : int, optional
        Stop once this many epochs are done, without changing the schedule of the full run
        (time-sliced training on a shared machine; continue later with ``resume``).
    """
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    has_checkpoint = tf.train.latest_checkpoint(str(ckpt_dir)) is not None
    if has_checkpoint and not resume:
        raise ValueError(f"{out} already holds a training run: pass resume=True (--resume)")
    if resume and has_checkpoint:
        cfg = TrainConfig.from_yaml(out / "config.yaml")
    if epochs is not None:
        cfg = cfg.replace(epochs=epochs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    cfg.to_yaml(out / "config.yaml")

    strategy = select_strategy()
    mixed = use_mixed_precision(cfg.mixed_precision)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        return _run(cfg, strategy, mixed, Path(data_path), out, resume, stop_after, progress)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _run(
    cfg: TrainConfig,
    strategy: tf.distribute.Strategy,
    mixed: bool,
    data_path: Path,
    out: Path,
    resume: bool,
    stop_after: int | None,
    progress: bool,
) -> list[dict[str, float]]:
    """The body of :func:`train`, under the chosen dtype policy."""
    ckpt_dir = out / "checkpoints"
    keras.utils.set_random_seed(cfg.seed)

    train_faces, val_faces = data_lib.load_splits(data_path, cfg)
    global_batch = cfg.batch_size * strategy.num_replicas_in_sync
    steps = data_lib.steps_per_epoch(len(train_faces), global_batch)
    log.info(
        "%d training faces, %s validation faces, %d steps of %d per epoch, %d replica(s), %s",
        len(train_faces),
        len(val_faces) if val_faces is not None else "no",
        steps,
        global_batch,
        strategy.num_replicas_in_sync,
        "mixed precision" if mixed else "float32",
    )

    with strategy.scope():
        caae = _build_caae(cfg, mixed, steps)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        checkpoint = tf.train.Checkpoint(
            **{name: getattr(caae, name) for name in _SUBMODELS},
            g_optimizer=caae.g_optimizer,
            d_optimizer=caae.d_optimizer,
            rng=caae.rng,
            epochs_done=epoch_var,
        )
    manager = tf.train.CheckpointManager(checkpoint, str(ckpt_dir), max_to_keep=2)
    if resume and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log.info("resumed from %s (%d epochs done)", manager.latest_checkpoint, int(epoch_var))
    first_epoch = int(epoch_var)
    last_epoch = min(cfg.epochs, stop_after) if stop_after else cfg.epochs
    if first_epoch >= last_epoch:
        log.info("nothing to do: %d of %d epochs already done", first_epoch, last_epoch)
        return _read_history(out / "history.csv", first_epoch)

    train_ds = data_lib.training_dataset(
        train_faces, cfg.replace(batch_size=global_batch), first_epoch, cfg.epochs
    )
    val_ds = data_lib.evaluation_dataset(val_faces, global_batch) if val_faces is not None else None
    recorder = RunRecorder(
        out=out,
        cfg=cfg,
        caae=caae,
        manager=manager,
        epoch_var=epoch_var,
        grid_faces=val_faces if val_faces is not None else train_faces,
        data_path=data_path,
        n_train=len(train_faces),
        mixed=mixed,
    )
    callbacks: list[keras.callbacks.Callback] = [
        recorder,
        keras.callbacks.TensorBoard(str(out / "tensorboard"), write_graph=False),
    ]
    if progress:
        callbacks.append(ProgressBar(steps))
    caae.fit(
        train_ds,
        epochs=last_epoch,
        initial_epoch=first_epoch,
        steps_per_epoch=steps,
        validation_data=val_ds,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles per epoch itself (reproducibly)
        verbose=0,
    )
    return recorder.history


_SUBMODELS = (
    "encoder",
    "generator",
    "image_discriminator",
    "latent_discriminator",
    "classifier",
)


def _build_caae(cfg: TrainConfig, mixed: bool, steps_per_epoch: int) -> CAAE:
    """Sub-models, CAAE and optimisers with linear learning-rate decay (inside a strategy scope)."""
    perceptual = None
    if cfg.w_perceptual > 0 and cfg.perceptual_model:
        perceptual = PerceptualLoss(cfg.perceptual_model)
    caae = CAAE(**build_all(cfg), cfg=cfg, perceptual=perceptual, seed=cfg.seed)

    def adam() -> keras.optimizers.Optimizer:
        schedule = keras.optimizers.schedules.PolynomialDecay(
            cfg.learning_rate,
            decay_steps=cfg.epochs * steps_per_epoch,
            end_learning_rate=cfg.learning_rate * cfg.final_lr_fraction,
            power=1.0,
        )
        optimizer = keras.optimizers.Adam(schedule, beta_1=cfg.beta_1)
        return keras.optimizers.LossScaleOptimizer(optimizer) if mixed else optimizer

    caae.compile(g_optimizer=adam(), d_optimizer=adam())
    caae.build_optimizers()
    return caae


class ProgressBar(keras.callbacks.Callback):
    """A tqdm bar per epoch with the main losses (sparse updates when logging to a file)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.bar: tqdm | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        total = self.params.get("epochs", epoch + 1)
        self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{total}", mininterval=20.0)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        assert self.bar is not None
        self.bar.update(1)
        if logs and batch % 20 == 0:
            keys = ("reconstruction", "d_image", "adv_image", "cls_accuracy")
            self.bar.set_postfix({k: f"{float(logs[k]):.3f}" for k in keys if k in logs})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()


class RunRecorder(keras.callbacks.Callback):
    """At each epoch's end: checkpoint, E and G as .keras, sample grid, history, curves, info."""

    def __init__(
        self,
        out: Path,
        cfg: TrainConfig,
        caae: CAAE,
        manager: tf.train.CheckpointManager,
        epoch_var: tf.Variable,
        grid_faces: data_lib.FaceArrays,
        data_path: Path,
        n_train: int,
        mixed: bool,
    ) -> None:
        super().__init__()
        self.out = out
        self.cfg = cfg
        self.caae = caae
        self.manager = manager
        self.epoch_var = epoch_var
        self.grid_images, self.grid_labels = _grid_selection(grid_faces, cfg.grid_faces)
        self.data_path = data_path
        self.data_sha256 = sha256_file(data_path) if data_path.is_file() else None
        self.n_train = n_train
        self.mixed = mixed
        # the code that started the run, not a later checkout
        self.git_commit = git_commit(Path(__file__).resolve().parent)
        self.history = _read_history(out / "history.csv", int(epoch_var))
        self.writer = tf.summary.create_file_writer(str(out / "tensorboard" / "samples"))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        self.epoch_var.assign(done)
        self.manager.save(checkpoint_number=done)
        self._save_models()
        grid = sample_grid(self.caae, self.grid_images, self.grid_labels, self.cfg.n_classes)
        write_grid_png(grid, self.out / "samples" / f"epoch_{done:03d}.png", self.cfg, done)
        with self.writer.as_default():
            tf.summary.image("samples", grid[None, :, :, None], step=done)
        row = {"epoch": done, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(row)
        _write_history(self.out / "history.csv", self.history)
        plot_curves(self.history, self.out / "curves.png")
        self._write_info(done)
        log.info("epoch %d: %s", done, ", ".join(f"{k}={v:.4f}" for k, v in row.items()))

    def _save_models(self) -> None:
        """Write E and G as float32 Keras files (copies of the weights under mixed precision)."""
        encoder, generator = self.caae.encoder, self.caae.generator
        if self.mixed:
            policy = keras.mixed_precision.global_policy()
            keras.mixed_precision.set_global_policy("float32")
            try:
                encoder_copy, generator_copy = build_encoder(self.cfg), build_generator(self.cfg)
            finally:
                keras.mixed_precision.set_global_policy(policy)
            encoder_copy.set_weights(encoder.get_weights())
            generator_copy.set_weights(generator.get_weights())
            encoder, generator = encoder_copy, generator_copy
        for model, name in ((encoder, "encoder"), (generator, "generator")):
            with atomic_path(self.out / f"{name}.keras", suffix=".keras") as tmp:
                model.save(tmp)

    def _write_info(self, done: int) -> None:
        info: dict[str, Any] = {
            "data_file": str(self.data_path.resolve()),
            "data_sha256": self.data_sha256,
            "train_split": self.cfg.train_split,
            "train_faces": self.n_train,
            "git_commit": self.git_commit,
            "epochs_done": done,
            "epochs": self.cfg.epochs,
            "vocabulary": list(self.cfg.vocabulary),
            "image_size": self.cfg.image_size,
            "channels": self.cfg.channels,
            "z_dim": self.cfg.z_dim,
            "scaling": "pixel / 127.5 - 1 (clifer_edge.preprocessing)",
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_text(self.out / "train_info.json", json.dumps(info, indent=2) + "\n")


# ------------------------------------------------------------------------------------------
# Pictures and tables
def _grid_selection(faces: data_lib.FaceArrays, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed faces for the sample grids, cycling through the classes so each one shows up."""
    chosen: list[int] = []
    by_class = [np.flatnonzero(faces.labels == k).tolist() for k in range(len(faces.vocabulary))]
    while len(chosen) < min(n, len(faces)):
        for indices in by_class:
            if indices and len(chosen) < n:
                chosen.append(indices.pop(0))
    index = np.array(chosen)
    return faces.images[index], faces.labels[index]


def sample_grid(caae: CAAE, images: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """uint8 mosaic: one row per face; columns real | reconstruction | each target expression."""
    z = caae.encoder(images, training=False)
    columns = [images, caae.generator([z, tf.one_hot(labels, n_classes)], training=False)]
    for k in range(n_classes):
        target = tf.one_hot(np.full(len(images), k), n_classes)
        columns.append(caae.generator([z, target], training=False))
    tiles = np.stack([np.asarray(c, dtype=np.float32) for c in columns], axis=1)
    n, cols, h, w, ch = tiles.shape
    mosaic = tiles.transpose(0, 2, 1, 3, 4).reshape(n * h, cols * w, ch)
    mosaic = mosaic.mean(axis=-1) if ch == 3 else mosaic[:, :, 0]
    return to_uint8(mosaic)


def write_grid_png(grid: np.ndarray, path: Path, cfg: TrainConfig, epoch: int) -> None:
    """The mosaic with column titles, for people to look at."""
    titles = ["real", "recon", *cfg.vocabulary]
    height, width = grid.shape
    fig, ax = plt.subplots(figsize=(width / 40 + 0.4, height / 40 + 0.8), dpi=100)
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    step = width / len(titles)
    ax.set_xticks([step * (i + 0.5) for i in range(len(titles))], titles, rotation=45, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([])
    ax.set_title(f"epoch {epoch}", fontsize=8, pad=28)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Losses per epoch: reconstruction/cycle, adversarial, classifier; training and validation."""
    if not history:
        return
    epochs = [row["epoch"] for row in history]
    panels = {
        "reconstruction (L1)": ["reconstruction", "val_reconstruction", "cycle"],
        "identity (latent L1)": ["latent_cycle", "val_latent_cycle"],
        "adversarial": ["d_image", "adv_image", "d_latent", "adv_latent"],
        "expression": ["cls_real", "cls_generated", "cls_accuracy", "val_cls_accuracy"],
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (title, keys) in zip(axes, panels.items(), strict=True):
        for key in keys:
            if key in history[0]:
                ax.plot(epochs, [row.get(key, np.nan) for row in history], marker=".", label=key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_history(path: Path, rows: list[dict[str, float]]) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _read_history(path: Path, epochs_done: int) -> list[dict[str, float]]:
    """Rows of epochs already checkpointed (later rows belong to an interrupted epoch)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return [row for row in rows if row["epoch"] <= epochs_done]
