"""Convert a trained CAAE's encoder and generator to TFLite for the robot.

Three variants per model (``encoder_<variant>.tflite``, ``generator_<variant>.tflite``):

- ``int8``: full-integer quantisation, int8 weights, activations, inputs and outputs, calibrated on
  faces drawn from the training split (prepared by the one shared preprocessing function) and, for
  the generator, on the encoder's latents of those faces paired with every expression. This is the
  variant the robot ships: smallest, fastest on ARM CPUs, runnable on integer-only accelerators.
- ``float16``: float16 weights, float32 compute (half the size of float32, no calibration).
- ``float32``: the reference.

With ``--expression-model FILE.keras`` (a classifier trained by ``python -m
clifer_train.expression_classifier --stages fallback``) a third file,
``expression_<variant>.tflite``, joins them: the robot's answer for persons not learned yet
(:mod:`clifer_edge.models.fallback`), calibrated on the same faces as the encoder.

Next to the models goes ``metadata.json`` (:class:`clifer_edge.models.ModelMetadata`): input size
and scaling, latent size, vocabulary, the tensors' quantisation parameters, the training data and
commit, and each file's SHA-256 so that the robot can refuse a damaged copy.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.datasets import FaceDataset, load_npz
from clifer_edge.fileio import atomic_path, git_commit, sha256_file
from clifer_edge.labels import BASIC_EXPRESSIONS
from clifer_edge.models import METADATA_FILENAME, VARIANTS, ModelMetadata, model_filename
from clifer_edge.models.litert import TFLiteModel
from clifer_edge.preprocessing import preprocess_faces

#: Faces drawn from the training split to calibrate the int8 ranges.
DEFAULT_CALIBRATION_SAMPLES = 400


class ExportError(ValueError):
    """A training run cannot be exported (missing files, inconsistent models, bad arguments)."""


@dataclass
class TrainedRun:
    """A training run directory's Keras models and what they were trained on."""

    directory: Path
    encoder: Any
    generator: Any
    info: dict[str, Any]
    image_size: int
    channels: int
    z_dim: int
    vocabulary: tuple[str, ...]


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    # The training package registers its custom layers/losses on import; loading needs them.
    with contextlib.suppress(ImportError):
        import clifer_train.models  # noqa: F401
    return keras


def load_run(run_dir: str | os.PathLike[str]) -> TrainedRun:
    """Load ``encoder.keras``, ``generator.keras`` and ``train_info.json`` from a training run.

    Raises
    ------
    ExportError
        If a file is missing, or the two models disagree with each other or with ``train_info``.
    """
    directory = Path(run_dir)
    paths = {name: directory / f"{name}.keras" for name in ("encoder", "generator")}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise ExportError(
            f"{directory}: missing {missing}; point --checkpoint at a clifer-train run directory"
        )
    info_path = directory / "train_info.json"
    info: dict[str, Any] = {}
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ExportError(f"{info_path}: unreadable ({error})") from None
    keras = _keras()
    try:
        encoder = keras.models.load_model(paths["encoder"], compile=False)
        generator = keras.models.load_model(paths["generator"], compile=False)
    except (OSError, ValueError) as error:
        raise ExportError(f"{directory}: cannot load the Keras models ({error})") from None
    return describe_models(encoder, generator, info, directory)


def input_name(tensor: Any) -> str:
    """The Keras name of a model input (``"z"``), which is also its TFLite signature name."""
    return str(getattr(tensor, "name", "")).split(":")[0]


def describe_models(
    encoder: Any, generator: Any, info: dict[str, Any], directory: Path | None = None
) -> TrainedRun:
    """Check that the encoder and generator fit together (and ``info``); return the run record."""
    image_shape = tuple(encoder.inputs[0].shape[1:])
    if len(image_shape) != 3 or image_shape[0] != image_shape[1]:
        raise ExportError(f"encoder input shape {image_shape} should be (size, size, channels)")
    z_dim = int(encoder.outputs[0].shape[-1])
    named = {input_name(tensor): tensor for tensor in generator.inputs}
    if len(generator.inputs) != 2 or set(named) != {"z", "expression"}:
        raise ExportError(f"generator inputs {sorted(named)} should be named 'z' and 'expression'")
    if int(named["z"].shape[-1]) != z_dim:
        raise ExportError(f"generator z size {named['z'].shape[-1]} != encoder's {z_dim}")
    n_classes = int(named["expression"].shape[-1])
    vocabulary = tuple(info.get("vocabulary", BASIC_EXPRESSIONS[:n_classes]))
    if len(vocabulary) != n_classes:
        raise ExportError(f"vocabulary {list(vocabulary)} has not {n_classes} entries")
    out_shape = tuple(generator.outputs[0].shape[1:])
    if out_shape != image_shape:
        raise ExportError(f"generator output {out_shape} != encoder input {image_shape}")
    sizes = {"image_size": image_shape[0], "channels": image_shape[2], "z_dim": z_dim}
    for key, value in sizes.items():
        if key in info and int(info[key]) != int(value):
            raise ExportError(f"train_info {key}={info[key]} but the models have {value}")
    return TrainedRun(
        directory=directory or Path("."),
        encoder=encoder,
        generator=generator,
        info=info,
        image_size=int(image_shape[0]),
        channels=int(image_shape[2]),
        z_dim=z_dim,
        vocabulary=vocabulary,
    )


def training_faces(
    run: TrainedRun, data: str | os.PathLike[str] | None = None, split: str = "Training"
) -> FaceDataset:
    """The run's training data (or ``data``), restricted to ``split`` when it has splits."""
    source = data or run.info.get("data_file") or "fer2013.npz"
    split = run.info.get("train_split", split)
    dataset = load_npz(source)
    if dataset.splits is not None and split in set(dataset.splits.tolist()):
        dataset = dataset.subset(dataset.splits == split)
    return dataset


def calibration_set(
    run: TrainedRun,
    dataset: FaceDataset,
    n_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Representative inputs: faces, their encoder latents and generator conditions.

    Faces are drawn at random (balanced over classes as far as they allow) and prepared with
    :func:`clifer_edge.preprocessing.preprocess_faces`; conditions cycle through the vocabulary so
    that every expression is calibrated, as the robot imagines all of them.

    Returns
    -------
    faces : ndarray (n, size, size, channels) float32
    latents : ndarray (n, z_dim) float32
    conditions : ndarray (n, n_classes) float32 one-hot
    """
    if n_samples < 1:
        raise ExportError(f"n_samples={n_samples} should be >= 1")
    rng = np.random.default_rng(seed)
    classes = sorted(set(dataset.labels.tolist()))
    per_class = max(1, n_samples // len(classes))
    picks = []
    for label in classes:
        rows = np.flatnonzero(dataset.labels == label)
        picks.append(rng.choice(rows, size=min(per_class, rows.size), replace=False))
    chosen = np.concatenate(picks)
    if chosen.size < n_samples:
        rest = np.setdiff1d(np.arange(len(dataset)), chosen)
        extra = rng.choice(rest, size=min(n_samples - chosen.size, rest.size), replace=False)
        chosen = np.concatenate([chosen, extra])
    chosen = rng.permutation(chosen)[:n_samples]
    faces = preprocess_faces(dataset.images[chosen], run.image_size, run.channels)
    latents = np.asarray(run.encoder.predict(faces, batch_size=64, verbose=0), np.float32)
    n_classes = len(run.vocabulary)
    conditions = np.eye(n_classes, dtype=np.float32)[np.arange(len(chosen)) % n_classes]
    return faces, latents, conditions


def _representative(batches: Callable[[], Iterable[dict[str, np.ndarray]]]) -> Callable:
    def dataset() -> Iterator[dict[str, np.ndarray]]:
        yield from batches()

    return dataset


def convert_model(
    model: Any, variant: str, representative: dict[str, np.ndarray] | None = None
) -> bytes:
    """Convert one Keras model to a TFLite flatbuffer.

    Parameters
    ----------
    model : keras.Model
    variant : {"int8", "float16", "float32"}
    representative : dict input name -> ndarray (n, ...), required for ``int8``
        Calibration inputs; yielded one sample at a time as a dict keyed by the Keras input names
        (which a multi-input model needs).
    """
    import tensorflow as tf

    if variant not in VARIANTS:
        raise ExportError(f"variant={variant!r} should be one of {list(VARIANTS)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if not representative:
            raise ExportError("int8 conversion needs representative data")
        names = list(representative)
        n = len(representative[names[0]])

        def samples() -> Iterator[dict[str, np.ndarray]]:
            for i in range(n):
                yield {name: representative[name][i : i + 1] for name in names}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # The Keras exporter prints "Saved artifact at ..." for its temporary SavedModel; keep the CLI
    # output to what the user asked for.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # The converter runs its own deprecated tf.lite.Interpreter internally; not ours to fix.
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


#: Terms of use of exported weights, recorded in ``metadata.json`` (``training.terms``): separate
#: from the code's Apache-2.0 licence, because the weights inherit their training data's terms.
WEIGHTS_TERMS = (
    "Model weights for non-commercial research use only: trained on FER2013 (and evaluated on "
    "CK+ and JAFFE), whose terms restrict use to non-commercial research; the weights inherit "
    "them. The clifer-edge code is Apache-2.0; that licence does not cover these weights."
)


def training_record(run: TrainedRun) -> dict[str, Any]:
    """Provenance and terms of the trained weights for the metadata: data, split, commit,
    epochs, config, and :data:`WEIGHTS_TERMS`."""
    info = run.info
    record: dict[str, Any] = {"run_directory": run.directory.name, "terms": WEIGHTS_TERMS}
    if "data_file" in info:
        record["data"] = Path(str(info["data_file"])).name
    keys = ("data_sha256", "train_split", "train_faces", "git_commit", "backend")
    keys += ("pretrain_epochs", "epochs_done", "epochs", "z_expression_dim")
    for key in keys:
        if key in info:
            record[key] = info[key]
    config = run.directory / "config.yaml"
    if config.exists():
        import yaml

        with contextlib.suppress(OSError, yaml.YAMLError):
            record["config"] = yaml.safe_load(config.read_text(encoding="utf-8"))
    return record


def _model_entry(path: Path, role: str, variant: str) -> dict[str, Any]:
    # Loading with the robot's runtime proves the file runs without TensorFlow and gives the
    # quantisation parameters as the robot will see them.
    model = TFLiteModel(path)
    return {
        "role": role,
        "variant": variant,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "runtime": model.backend,
        "inputs": {spec.name: spec.quantisation() for spec in model.inputs},
        "outputs": {spec.name: spec.quantisation() for spec in model.outputs},
    }


def load_expression_model(
    path: str | os.PathLike[str], run: TrainedRun
) -> tuple[Any, dict[str, Any]]:
    """A trained expression classifier (``.keras``) and its report (``.json`` beside it).

    Raises
    ------
    ExportError
        If a file is missing or unreadable, or the model does not take the encoder's faces or
        name the generator's expressions in the same order.
    """
    path = Path(path)
    report_path = path.with_suffix(".json")
    if not path.exists() or not report_path.exists():
        raise ExportError(
            f"expression model {path} or its report {report_path.name} not found; train it with "
            "`python -m clifer_train.expression_classifier --stages fallback --out FILE.keras`"
        )
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        model = _keras().models.load_model(path, compile=False)
    except (OSError, ValueError) as error:
        raise ExportError(f"expression model {path}: cannot load it ({error})") from None
    image_shape = (run.image_size, run.image_size, run.channels)
    if tuple(model.inputs[0].shape[1:]) != image_shape:
        raise ExportError(
            f"expression model {path} takes {tuple(model.inputs[0].shape[1:])} faces, the "
            f"encoder {image_shape}"
        )
    vocabulary = tuple(report.get("vocabulary", ()))
    if vocabulary != tuple(run.vocabulary) or int(model.outputs[0].shape[-1]) != len(vocabulary):
        raise ExportError(
            f"expression model {path} names {list(vocabulary)}, the generator "
            f"{list(run.vocabulary)}: they must agree, in order"
        )
    return model, report


def _expression_training(report: dict[str, Any]) -> dict[str, Any]:
    """What the metadata keeps of an expression model's training report."""
    keys = ("data", "train_split", "train_faces", "epochs", "architecture", "parameters")
    keys += ("kept_epoch", "class_weights", "test_split", "test_accuracy")
    return {key: report[key] for key in keys if key in report} | {"terms": WEIGHTS_TERMS}


def export_run(
    run: TrainedRun,
    out_dir: str | os.PathLike[str],
    variants: Iterable[str] = ("int8",),
    data: str | os.PathLike[str] | None = None,
    n_calibration: int = DEFAULT_CALIBRATION_SAMPLES,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    expression_model: tuple[Any, dict[str, Any]] | None = None,
) -> ModelMetadata:
    """Export the run's encoder and generator in ``variants`` to ``out_dir`` with ``metadata.json``.

    ``expression_model`` (from :func:`load_expression_model`) is exported beside them, its
    report's training figures recorded in its metadata entry (``training``).

    Entries of an existing ``metadata.json`` in ``out_dir`` are kept for files of other variants
    that came from the same training run (same ``training`` record) and still match their hash;
    anything else is replaced.
    """
    variants = list(dict.fromkeys(variants))
    for variant in variants:
        if variant not in VARIANTS:
            raise ExportError(f"format {variant!r} should be one of {[*VARIANTS, 'all']}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda message: None)
    representative: dict[str, dict[str, np.ndarray]] = {}
    calibration: dict[str, Any] = {}
    if "int8" in variants:
        dataset = training_faces(run, data)
        say(f"calibrating on {min(n_calibration, len(dataset))} faces from {dataset.source}")
        faces, latents, conditions = calibration_set(run, dataset, n_calibration, seed)
        representative = {
            "encoder": {input_name(run.encoder.inputs[0]): faces},
            "generator": {"z": latents, "expression": conditions},
        }
        if expression_model is not None:
            representative["expression"] = {input_name(expression_model[0].inputs[0]): faces}
        calibration = {
            "data": Path(dataset.source).name,
            "split": run.info.get("train_split", "Training")
            if dataset.splits is not None
            else None,
            "samples": len(faces),
            "seed": seed,
            "generator_inputs": "encoder latents of the calibration faces x every expression",
        }
    from clifer_train.models import fold_expression_code

    # One dense layer instead of two over slices of z: the int8 converter keeps such a slice's
    # layer in float32 (docs/export.md).
    models = {"encoder": run.encoder, "generator": fold_expression_code(run.generator)}
    if expression_model is not None:
        models["expression"] = expression_model[0]
    entries: dict[str, dict[str, Any]] = {}
    for variant in variants:
        for role, model in models.items():
            say(f"converting {role} to {variant}")
            content = convert_model(model, variant, representative.get(role))
            path = out / model_filename(role, variant)
            with atomic_path(path) as tmp:
                tmp.write_bytes(content)
            entries[path.name] = _model_entry(path, role, variant)
            if role == "expression" and expression_model is not None:
                entries[path.name]["training"] = _expression_training(expression_model[1])
    training = training_record(run)
    previous = out / METADATA_FILENAME
    if previous.exists():
        with contextlib.suppress(ValueError):
            old = ModelMetadata.load(previous)
            if old.training == training:
                for name, entry in old.models.items():
                    path = out / name
                    if (
                        name not in entries
                        and path.exists()
                        and sha256_file(path) == entry["sha256"]
                    ):
                        entries[name] = entry
    import keras
    import tensorflow as tf

    metadata = ModelMetadata(
        image_size=run.image_size,
        channels=run.channels,
        z_dim=run.z_dim,
        vocabulary=run.vocabulary,
        input_range=(-1.0, 1.0),
        models=dict(sorted(entries.items())),
        training=training,
        export={
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "git_commit": git_commit(Path(__file__).resolve().parent),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "preprocessing": "clifer_edge.preprocessing.preprocess_face (grey 0..255 -> [-1, 1])",
            "calibration": calibration or None,
        },
    )
    metadata.save(out / METADATA_FILENAME)
    return metadata
