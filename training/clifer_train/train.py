"""A training run: strategy, data, models, ``fit``, and everything written to the run directory.

Run directory (the contract with :mod:`clifer_export`)::

    OUT/config.yaml            the exact configuration trained
    OUT/encoder.keras          E after the latest epoch (re-saved every epoch)
    OUT/generator.keras        G after the latest epoch
    OUT/pretrain/              stage 1 (expression encoder): checkpoints, history.csv, curves.png
    OUT/checkpoints/           stage 2: five models, both optimisers, the RNG, the epoch (npz)
    OUT/train_info.json        data file and sha256, git commit, backend, epochs done, sizes
    OUT/history.csv            one row of stage-2 training/validation scalars per epoch
    OUT/curves.png             those scalars plotted
    OUT/samples/epoch_NNN.png  real | reconstruction | each target expression, for fixed faces
    OUT/tensorboard/           scalars and the same sample grids (TensorFlow backend only)

Backends: the same code trains under TensorFlow (``tf.distribute`` strategies, mixed precision on
GPUs) and under JAX (``KERAS_BACKEND=jax``, e.g. a GPU box without TensorFlow); checkpoints and
``.keras`` files load under either, so a run may even be resumed under the other backend.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import keras
import numpy as np

from clifer_edge.fileio import atomic_path, atomic_write_text, git_commit, sha256_file
from clifer_edge.preprocessing import to_uint8
from clifer_train import checkpoint
from clifer_train import data as data_lib
from clifer_train.caae import CAAE, PerceptualLoss
from clifer_train.config import TrainConfig
from clifer_train.models import build_all, build_encoder, build_generator, freeze_expression_path
from clifer_train.pretrain import pretrain
from clifer_train.records import ProgressBar, plot_history, read_history, write_history

log = logging.getLogger(__name__)

#: Stage-2 curves: panel title -> history keys.
CURVE_PANELS = {
    "reconstruction (L1)": ["reconstruction", "val_reconstruction", "cycle"],
    "identity (latent L1)": ["latent_cycle", "val_latent_cycle"],
    "expression offset (L1)": ["expression_offset", "val_expression_offset"],
    "adversarial": ["d_image", "adv_image", "d_latent", "adv_latent"],
    "expression": [
        "cls_real",
        "cls_generated",
        "cls_accuracy",
        "val_cls_accuracy",
        "val_translation_accuracy",
    ],
}


def on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def select_strategy():
    """TensorFlow only: MultiWorkerMirrored from ``TF_CONFIG``, Mirrored for several GPUs, else
    the default strategy. Under JAX: ``None`` (one device; JAX shards with keras.distribution)."""
    if not on_tensorflow():
        return None
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _has_gpu() -> bool:
    if on_tensorflow():
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    import jax

    return any(d.platform == "gpu" for d in jax.devices())


def use_mixed_precision(setting: str) -> bool:
    """Mixed float16 only where it pays: on a GPU (``auto``), or when forced (``on``)."""
    if setting == "on":
        return True
    return setting == "auto" and _has_gpu()


def limit_threads(threads: int | None) -> None:
    """Cap the CPU threads of the backend (a shared machine); ``None`` leaves the defaults."""
    if not threads:
        return
    if on_tensorflow():
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    else:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
        ).strip()


def train(
    cfg: TrainConfig,
    data_path: str | Path,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    init_from: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train (or continue training) stage 1 and the CAAE and fill ``out_dir``; return the stage-2
    history rows.

    Parameters
    ----------
    cfg : TrainConfig
        Ignored when resuming: the run's own ``config.yaml`` is used (with ``epochs`` applied).
    data_path : path
        npz file, FER2013 CSV or class-per-folder tree.
    out_dir : path
        Run directory; must not hold a run unless ``resume`` is set.
    epochs : int, optional
        Total CAAE epochs to reach (overrides ``cfg.epochs``).
    resume : bool
        Continue from the latest checkpoint in ``out_dir`` (a fresh start if there is none).
    stop_after : int, optional
        Stop once this many CAAE epochs are done (0: after stage 1), without changing the schedule
        of the full run (time-sliced training on a shared machine; continue with ``resume``).
    init_from : path, optional
        Another run directory: stage 2 starts from its latest checkpoint (:func:`warm_start`)
        instead of stage 1, e.g. to try an architecture change without training it all again.
        Once this run has a checkpoint of its own, resuming needs it no more.
    """
    out = Path(out_dir)
    started = (out / "config.yaml").exists() and (
        checkpoint.latest(out / "checkpoints") or checkpoint.latest(out / "pretrain")
    )
    if started and not resume:
        raise ValueError(f"{out} already holds a training run: pass resume=True (--resume)")
    if resume and started:
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
        source = Path(init_from) if init_from is not None else None
        return _run(cfg, strategy, mixed, Path(data_path), out, stop_after, source, progress)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _run(
    cfg: TrainConfig,
    strategy,
    mixed: bool,
    data_path: Path,
    out: Path,
    stop_after: int | None,
    init_from: Path | None,
    progress: bool,
) -> list[dict[str, float]]:
    """The body of :func:`train`, under the chosen dtype policy."""
    keras.utils.set_random_seed(cfg.seed)
    train_faces, val_faces = data_lib.load_splits(data_path, cfg)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    global_cfg = cfg.replace(batch_size=cfg.batch_size * replicas)
    steps = data_lib.steps_per_epoch(len(train_faces), global_cfg.batch_size)
    log.info(
        "%s backend, %d training faces, %s validation faces, %d steps of %d per epoch, "
        "%d replica(s), %s",
        keras.backend.backend(),
        len(train_faces),
        len(val_faces) if val_faces is not None else "no",
        steps,
        global_cfg.batch_size,
        replicas,
        "mixed precision" if mixed else "float32",
    )
    scope = strategy.scope() if strategy is not None else nullcontext()
    found = checkpoint.latest(out / "checkpoints")
    with scope:
        models = build_all(cfg)
        # A run with its own stage-2 checkpoint resumes from it below (it holds stage 1's work).
        if found is None and init_from is not None:
            fresh = warm_start(models, init_from)
            log.info("stage 2 starts from %s; kept at initialisation: %s", init_from, fresh)
        elif found is None and cfg.pretrain_epochs > 0:
            pretrain(
                models["encoder"],
                models["classifier"],
                train_faces,
                val_faces,
                global_cfg,
                out,
                progress,
            )
            if stop_after == 0:
                return []
        if cfg.pretrain_epochs > 0 and cfg.freeze_expression:
            freeze_expression_path(models["encoder"], models["classifier"])
        caae = _build_caae(cfg, models, mixed, steps)
    holders = caae.checkpoint_holders()
    first_epoch = 0
    if found is not None:
        first_epoch = checkpoint.restore(found, holders)
        log.info("resumed from %s (%d epochs done)", found, first_epoch)
    if cfg.frozen_expression_code:  # the expression-offset targets, and its validation figure
        caae.set_expression_means(expression_means(models["encoder"], train_faces, cfg))
    last_epoch = min(cfg.epochs, stop_after) if stop_after is not None else cfg.epochs
    recorder = RunRecorder(
        out=out,
        cfg=cfg,
        caae=caae,
        holders=holders,
        first_epoch=first_epoch,
        grid_faces=val_faces if val_faces is not None else train_faces,
        data_path=data_path,
        n_train=len(train_faces),
        mixed=mixed,
    )
    if first_epoch >= last_epoch:
        log.info("nothing to do in stage 2: %d of %d epochs done", first_epoch, last_epoch)
        recorder.save_models()
        recorder.write_info(first_epoch)
        return recorder.history

    batches = data_lib.FaceBatches(train_faces, global_cfg, first_epoch)
    callbacks: list[keras.callbacks.Callback] = [data_lib.FollowEpochs(batches), recorder]
    if on_tensorflow():
        callbacks.append(keras.callbacks.TensorBoard(str(out / "tensorboard"), write_graph=False))
    if progress:
        keys = ("reconstruction", "d_image", "adv_image", "cls_generated")
        callbacks.append(ProgressBar(steps, keys, "epoch"))
    caae.fit(
        batches,
        epochs=last_epoch,
        initial_epoch=first_epoch,
        validation_data=(val_faces.images, data_lib.one_hot(val_faces))
        if val_faces is not None
        else None,
        validation_batch_size=global_cfg.batch_size,
        callbacks=callbacks,
        shuffle=False,  # the batches shuffle per epoch themselves (reproducibly)
        verbose=0,
    )
    return recorder.history


def warm_start(models: dict[str, keras.Model], run_dir: Path) -> list[str]:
    """Give ``models`` the weights of ``run_dir``'s latest stage-2 checkpoint, layer by layer.

    A layer takes the other run's weights where that run has a layer of the same name with
    weights of the same shapes (batch-norm statistics included); the others keep their
    initialisation and are returned as ``model/layer`` names. The optimiser is not carried over.

    Raises
    ------
    ValueError
        If ``run_dir`` holds no configuration or no stage-2 checkpoint.
    """
    found = checkpoint.latest(run_dir / "checkpoints")
    if not (run_dir / "config.yaml").exists() or found is None:
        raise ValueError(f"--init-from {run_dir}: not a run directory with a stage-2 checkpoint")
    source = build_all(TrainConfig.from_yaml(run_dir / "config.yaml"))
    checkpoint.restore(found, {name: model.variables for name, model in source.items()})
    fresh = []
    for name, model in models.items():
        known = {layer.name: layer for layer in source[name].layers}
        for layer in model.layers:
            if not layer.weights:
                continue
            twin = known.get(layer.name)
            weights = twin.get_weights() if twin is not None else []
            if [w.shape for w in weights] == [tuple(w.shape) for w in layer.weights]:
                layer.set_weights(weights)
            else:
                fresh.append(f"{name}/{layer.name}")
    return fresh


def expression_means(encoder: keras.Model, faces: data_lib.FaceArrays, cfg: TrainConfig):
    """Per-class means of the expression code over ``faces`` (rows in vocabulary order; a class
    without faces gets the mean of all)."""
    codes = encoder.predict(faces.images, batch_size=256, verbose=0)[:, : cfg.z_expression_dim]
    overall = codes.mean(axis=0)
    return np.stack(
        [
            codes[faces.labels == k].mean(axis=0) if np.any(faces.labels == k) else overall
            for k in range(cfg.n_classes)
        ]
    ).astype(np.float32)


def _build_caae(
    cfg: TrainConfig, models: dict[str, keras.Model], mixed: bool, steps_per_epoch: int
) -> CAAE:
    """CAAE and its optimiser with linear learning-rate decay (inside a strategy scope)."""
    perceptual = None
    if cfg.w_perceptual > 0 and cfg.perceptual_model:
        perceptual = PerceptualLoss(cfg.perceptual_model)
    caae = CAAE(**models, cfg=cfg, perceptual=perceptual, seed=cfg.seed)

    schedule = keras.optimizers.schedules.PolynomialDecay(
        cfg.learning_rate,
        decay_steps=cfg.epochs * steps_per_epoch,
        end_learning_rate=cfg.learning_rate * cfg.final_lr_fraction,
        power=1.0,
    )
    optimizer = keras.optimizers.Adam(schedule, beta_1=cfg.beta_1)
    caae.compile(optimizer=keras.optimizers.LossScaleOptimizer(optimizer) if mixed else optimizer)
    caae.build_optimizers()
    return caae


class RunRecorder(keras.callbacks.Callback):
    """At each epoch's end: checkpoint, E and G as .keras, sample grid, history, curves, info."""

    def __init__(
        self,
        out: Path,
        cfg: TrainConfig,
        caae: CAAE,
        holders: dict[str, list],
        first_epoch: int,
        grid_faces: data_lib.FaceArrays,
        data_path: Path,
        n_train: int,
        mixed: bool,
    ) -> None:
        super().__init__()
        self.out = out
        self.cfg = cfg
        self.caae = caae
        self.holders = holders
        self.grid_images, self.grid_labels = _grid_selection(grid_faces, cfg.grid_faces)
        self.data_path = data_path
        self.data_sha256 = sha256_file(data_path) if data_path.is_file() else None
        self.n_train = n_train
        self.mixed = mixed
        self.git_commit = git_commit(
            Path(__file__).resolve().parent
        )  # the code that started the run
        self.history = read_history(out / "history.csv", first_epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        checkpoint.save(self.out / "checkpoints", done, self.holders)
        self.save_models()
        grid = sample_grid(self.caae, self.grid_images, self.grid_labels, self.cfg.n_classes)
        write_grid_png(grid, self.out / "samples" / f"epoch_{done:03d}.png", self.cfg, done)
        if on_tensorflow():
            import tensorflow as tf

            writer = tf.summary.create_file_writer(str(self.out / "tensorboard" / "samples"))
            with writer.as_default():
                tf.summary.image("samples", grid[None, :, :, None], step=done)
        row = {"epoch": done, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(row)
        write_history(self.out / "history.csv", self.history)
        plot_history(self.history, self.out / "curves.png", CURVE_PANELS)
        self.write_info(done)
        log.info("epoch %d: %s", done, ", ".join(f"{k}={v:.4f}" for k, v in row.items()))

    def save_models(self) -> None:
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

    def write_info(self, done: int) -> None:
        info: dict[str, Any] = {
            "data_file": str(self.data_path.resolve()),
            "data_sha256": self.data_sha256,
            "train_split": self.cfg.train_split,
            "train_faces": self.n_train,
            "git_commit": self.git_commit,
            "backend": keras.backend.backend(),
            "pretrain_epochs": self.cfg.pretrain_epochs,
            "epochs_done": done,
            "epochs": self.cfg.epochs,
            "vocabulary": list(self.cfg.vocabulary),
            "image_size": self.cfg.image_size,
            "channels": self.cfg.channels,
            "z_dim": self.cfg.z_dim,
            "z_expression_dim": self.cfg.z_expression_dim,
            "scaling": "pixel / 127.5 - 1 (clifer_edge.preprocessing)",
            "keras": keras.__version__,
            "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_text(self.out / "train_info.json", json.dumps(info, indent=2) + "\n")


# ------------------------------------------------------------------------------------------
# Pictures
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
    eye = np.eye(n_classes, dtype=np.float32)
    z = caae.encoder(images, training=False)
    hot = keras.ops.convert_to_tensor(eye[labels])
    columns = [images, caae.generator([z, hot], training=False)]
    for k in range(n_classes):
        hot = keras.ops.convert_to_tensor(eye[np.full(len(images), k)])
        columns.append(caae.generator([z, hot], training=False))
    tiles = np.stack([keras.ops.convert_to_numpy(c).astype(np.float32) for c in columns], axis=1)
    n, cols, h, w, ch = tiles.shape
    mosaic = tiles.transpose(0, 2, 1, 3, 4).reshape(n * h, cols * w, ch)
    mosaic = mosaic.mean(axis=-1) if ch == 3 else mosaic[:, :, 0]
    return to_uint8(mosaic)


def write_grid_png(grid: np.ndarray, path: Path, cfg: TrainConfig, epoch: int) -> None:
    """The mosaic with column titles, for people to look at."""
    import matplotlib.pyplot as plt  # records.py chose the Agg backend

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
