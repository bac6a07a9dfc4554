"""The Imagination model on the robot, run from the exported TFLite files.

Encoder E maps a face to a latent vector; generator G maps a latent and an expression to a face.
An export may add a third, optional model beside them: a standalone expression classifier
(:class:`ExpressionModel`), the person-independent answer for a person not learned yet.

Every export writes a sidecar ``metadata.json`` next to the models: input size and scaling, the
latent size, the expression vocabulary (the order of G's one-hot condition) and a SHA-256 per file.
The wrappers check the files against it when they are built, so a model that does not match its
metadata (wrong size, other vocabulary, a half-copied file) is refused at start-up with a message
that says what differs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.fileio import atomic_write_text
from clifer_edge.labels import canonical_label, one_hot_index
from clifer_edge.models.litert import ModelFileError, TFLiteModel

#: Identifies a clifer-edge model metadata file; bumped when the layout changes incompatibly.
METADATA_FORMAT = "clifer-edge-imagination-model"
METADATA_VERSION = 1
METADATA_FILENAME = "metadata.json"


@dataclass(frozen=True)
class ModelMetadata:
    """The sidecar description of an exported encoder/generator pair.

    Attributes
    ----------
    image_size, channels : int
        Side and channels of the square face input (and of G's output).
    z_dim : int
        Size of the latent vector.
    vocabulary : tuple of str
        Expressions G can imagine, in the order of its one-hot condition.
    input_range : tuple of float
        Range of the scaled pixels (see :func:`clifer_edge.preprocessing.preprocess_face`).
    models : dict
        Per file name: ``role``, ``variant``, ``sha256``, ``bytes`` and tensor quantisation.
    training, export : dict
        Provenance: training data and its SHA-256, commit, epochs; exporter versions.
    """

    image_size: int
    channels: int
    z_dim: int
    vocabulary: tuple[str, ...]
    input_range: tuple[float, float] = (-1.0, 1.0)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "metadata") -> ModelMetadata:
        """Validate and build from the JSON layout.

        Raises
        ------
        ModelFileError
            If the format is foreign or newer, or a field is missing or of the wrong type.
        """
        if not isinstance(data, Mapping) or data.get("format") != METADATA_FORMAT:
            raise ModelFileError(f"{source}: not a clifer-edge model metadata file")
        version = data.get("format_version")
        if not isinstance(version, int) or version > METADATA_VERSION:
            raise ModelFileError(
                f"{source}: format_version={version!r} is not supported (this clifer-edge reads "
                f"<= {METADATA_VERSION}); update clifer-edge"
            )
        try:
            image_size, channels, z_dim = (
                int(data[key]) for key in ("image_size", "channels", "z_dim")
            )
            vocabulary = tuple(canonical_label(v) for v in data["vocabulary"])
            low, high = (float(v) for v in data.get("input_range", (-1.0, 1.0)))
            models = {str(k): dict(v) for k, v in data.get("models", {}).items()}
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(f"{source}: missing or malformed field ({error!r})") from None
        if image_size < 8 or channels not in (1, 3) or z_dim < 1 or len(vocabulary) < 2:
            raise ModelFileError(
                f"{source}: implausible model description (image_size={image_size}, "
                f"channels={channels}, z_dim={z_dim}, vocabulary={list(vocabulary)})"
            )
        if len(set(vocabulary)) != len(vocabulary):
            raise ModelFileError(f"{source}: vocabulary has duplicates: {list(vocabulary)}")
        return cls(
            image_size=image_size,
            channels=channels,
            z_dim=z_dim,
            vocabulary=vocabulary,
            input_range=(low, high),
            models=models,
            training=dict(data.get("training", {})),
            export=dict(data.get("export", {})),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelMetadata:
        """Read a ``metadata.json``; :class:`ModelFileError` if missing or unreadable."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ModelFileError(
                f"model metadata {path}: cannot be read ({error.strerror}); have you run "
                "clifer-export?"
            ) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelFileError(f"model metadata {path}: not valid JSON ({error})") from None
        return cls.from_dict(data, source=f"model metadata {path}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout (inverse of :meth:`from_dict`)."""
        return {
            "format": METADATA_FORMAT,
            "format_version": METADATA_VERSION,
            "image_size": self.image_size,
            "channels": self.channels,
            "z_dim": self.z_dim,
            "vocabulary": list(self.vocabulary),
            "input_range": list(self.input_range),
            "models": self.models,
            "training": self.training,
            "export": self.export,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON atomically (a reader never sees half a file)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one face: (image_size, image_size, channels)."""
        return (self.image_size, self.image_size, self.channels)


class _ImaginationPart:
    """Shared loading and checking of one exported model against its metadata."""

    role = ""
    #: Largest batch handed to the interpreter at once. Bigger batches are split: they bound the
    #: tensor arena on the robot, and past a few faces the activations leave the CPU caches and
    #: each face gets slower (benchmarks/bench_models.py; per-face time of the default int8
    #: generator doubles from a batch of 4 to 16 on an x86 core).
    max_batch = 8

    def __init__(
        self,
        path: str | os.PathLike[str],
        metadata_path: str | os.PathLike[str] | None = None,
        num_threads: int = 1,
        backend: str | None = None,
    ) -> None:
        path = Path(path)
        metadata_path = Path(metadata_path) if metadata_path else path.with_name(METADATA_FILENAME)
        self.metadata = ModelMetadata.load(metadata_path)
        entry = self.metadata.models.get(path.name)
        if entry is not None and entry.get("role", self.role) != self.role:
            raise ModelFileError(
                f"model file {path}: metadata lists it as a {entry.get('role')}, not a {self.role}"
            )
        expected_sha = entry.get("sha256") if entry else None
        self.model = TFLiteModel(path, num_threads, expected_sha256=expected_sha, backend=backend)
        self._check_shapes()

    def _check_shapes(self) -> None:
        raise NotImplementedError

    def _mismatch(self, what: str, actual: object, expected: object) -> ModelFileError:
        return ModelFileError(
            f"model file {self.model.path}: {what} {actual} does not match the metadata "
            f"({expected}); the model and {METADATA_FILENAME} come from different exports"
        )

    def _check_faces(self, faces: np.ndarray) -> np.ndarray:
        """Preprocessed faces as float32; ValueError naming a wrong shape, NaN or scale."""
        faces = np.asarray(faces, dtype=np.float32)
        size, channels = self.metadata.image_size, self.metadata.channels
        if faces.ndim != 4 or faces.shape[1:] != self.metadata.image_shape:
            raise ValueError(
                f"faces of shape {faces.shape} should be (n, {size}, {size}, {channels})"
            )
        if not np.all(np.isfinite(faces)):
            raise ValueError("faces contain NaN or infinite values")
        low, high = self.metadata.input_range
        if faces.size and (faces.min() < low - 1e-3 or faces.max() > high + 1e-3):
            raise ValueError(
                f"face values {float(faces.min()):.3g}..{float(faces.max()):.3g} lie outside "
                f"[{low:g}, {high:g}]; scale them with clifer_edge.preprocessing.preprocess_face"
            )
        return faces

    def _check_image_input(self) -> None:
        """One input, a face of the metadata's shape, and one output."""
        if len(self.model.inputs) != 1 or len(self.model.outputs) != 1:
            raise self._mismatch(
                "number of inputs/outputs",
                (len(self.model.inputs), len(self.model.outputs)),
                "one image in, one output",
            )
        image_shape = tuple(abs(d) for d in self.model.inputs[0].shape[1:])
        if image_shape != self.metadata.image_shape:
            raise self._mismatch("input shape", image_shape, self.metadata.image_shape)

    def _run_batched(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        n = next(iter(inputs.values())).shape[0]
        step = self.max_batch
        if n <= step:
            return self.model.run(inputs)[0]
        parts = [
            self.model.run({k: v[i : i + step] for k, v in inputs.items()})[0]
            for i in range(0, n, step)
        ]
        return np.concatenate(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"


class Encoder(_ImaginationPart):
    """E: face -> latent vector in [-1, 1], the feature the memories learn on.

    Parameters
    ----------
    path : path-like
        ``encoder_<variant>.tflite``.
    metadata_path : path-like, optional
        The sidecar; ``metadata.json`` next to the model by default.
    num_threads : int
        Interpreter threads.
    backend : str, optional
        Force a TFLite runtime (see :data:`clifer_edge.models.litert.BACKENDS`).

    Raises
    ------
    ModelFileError
        On a missing, truncated, foreign or mismatched model or metadata file.
    """

    role = "encoder"
    max_batch = 16

    def _check_shapes(self) -> None:
        meta = self.metadata
        self._check_image_input()
        latent_shape = tuple(abs(d) for d in self.model.outputs[0].shape[1:])
        if latent_shape != (meta.z_dim,):
            raise self._mismatch("latent shape", latent_shape, (meta.z_dim,))

    def encode(self, faces: np.ndarray) -> np.ndarray:
        """Latent vectors of preprocessed faces.

        Parameters
        ----------
        faces : ndarray of shape (n, image_size, image_size, channels)
            Float faces in [-1, 1], from :func:`clifer_edge.preprocessing.preprocess_face`.

        Returns
        -------
        ndarray of shape (n, z_dim), float32 in [-1, 1]
        """
        faces = self._check_faces(faces)
        if faces.shape[0] == 0:
            return np.zeros((0, self.metadata.z_dim), np.float32)
        latents = self._run_batched({self.model.inputs[0].name: faces})
        return np.clip(latents, -1.0, 1.0)

    @property
    def z_dim(self) -> int:
        """Size of the latent vector."""
        return self.metadata.z_dim


class Generator(_ImaginationPart):
    """G: (latent, expression) -> face, used by the robot to imagine unseen expressions.

    Parameters are those of :class:`Encoder` (``generator_<variant>.tflite``).
    """

    role = "generator"
    max_batch = 4

    def _check_shapes(self) -> None:
        meta = self.metadata
        names = set(self.model.input_names)
        if names != {"z", "expression"}:
            raise self._mismatch("inputs", sorted(names), "['expression', 'z']")
        z_shape = tuple(abs(d) for d in self.model.input("z").shape[1:])
        if z_shape != (meta.z_dim,):
            raise self._mismatch("latent input shape", z_shape, (meta.z_dim,))
        e_shape = tuple(abs(d) for d in self.model.input("expression").shape[1:])
        if e_shape != (len(meta.vocabulary),):
            raise self._mismatch("expression input shape", e_shape, (len(meta.vocabulary),))
        out_shape = tuple(abs(d) for d in self.model.outputs[0].shape[1:])
        if out_shape != meta.image_shape:
            raise self._mismatch("output shape", out_shape, meta.image_shape)

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """Expressions the generator can imagine."""
        return self.metadata.vocabulary

    def one_hot(self, expressions: Sequence[str]) -> np.ndarray:
        """One-hot conditions in the model's vocabulary order; ValueError on an unknown label."""
        codes = np.zeros((len(expressions), len(self.vocabulary)), np.float32)
        for row, name in enumerate(expressions):
            codes[row, one_hot_index(name, self.vocabulary)] = 1.0
        return codes

    def generate(self, z: np.ndarray, expressions: Sequence[str] | str) -> np.ndarray:
        """Imagine faces of the latents ``z`` showing ``expressions``.

        Parameters
        ----------
        z : ndarray of shape (n, z_dim)
            Latents (e.g. episodic prototypes), in [-1, 1].
        expressions : sequence of n str, or one str for all rows
            Target expressions, names from :attr:`vocabulary` (or their synonyms).

        Returns
        -------
        ndarray of shape (n, image_size, image_size, channels), float32 in [-1, 1]
        """
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.metadata.z_dim:
            raise ValueError(f"z of shape {z.shape} should be (n, {self.metadata.z_dim})")
        if not np.all(np.isfinite(z)):
            raise ValueError("z contains NaN or infinite values")
        if isinstance(expressions, str):
            expressions = [expressions] * z.shape[0]
        if len(expressions) != z.shape[0]:
            raise ValueError(f"{len(expressions)} expressions given for {z.shape[0]} latents")
        if z.shape[0] == 0:
            return np.zeros((0, *self.metadata.image_shape), np.float32)
        images = self._run_batched({"z": z, "expression": self.one_hot(expressions)})
        return np.clip(images, -1.0, 1.0)


class ExpressionModel(_ImaginationPart):
    """A standalone expression classifier: face -> probabilities over the metadata's vocabulary.

    Optional third file of an export (``expression_<variant>.tflite``): a CNN trained on FER2013
    alone (``python -m clifer_train.expression_classifier --stages fallback``). The encoder's
    expression code serves the memories and the generator; this model only answers for persons
    not learned yet, where a classifier with no other duty is more accurate
    (:mod:`clifer_edge.models.fallback`). Parameters are those of :class:`Encoder`.
    """

    role = "expression"
    max_batch = 16
    #: Average the probabilities of each face and its mirror image (twice the compute; the
    #: default int8 model: 0.656 -> 0.668 FER2013 PublicTest accuracy, `clifer-edge calibrate`).
    mirror = True

    def _check_shapes(self) -> None:
        self._check_image_input()
        classes = tuple(abs(d) for d in self.model.outputs[0].shape[1:])
        if classes != (len(self.metadata.vocabulary),):
            raise self._mismatch("output shape", classes, (len(self.metadata.vocabulary),))

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The classes, in the order of :meth:`predict_proba`'s columns."""
        return self.metadata.vocabulary

    def predict_proba(self, faces: np.ndarray, mirror: bool | None = None) -> np.ndarray:
        """Class probabilities of preprocessed faces, shape (n, n_classes), rows summing to 1.

        With ``mirror`` (default: the model's setting) each face's are averaged with its mirror
        image's. The int8 model's quantised softmax is renormalised (its outputs sum to 1 only
        roughly).
        """
        faces = self._check_faces(faces)
        if faces.shape[0] == 0:
            return np.zeros((0, len(self.vocabulary)), np.float32)
        name = self.model.inputs[0].name
        scores = np.maximum(self._run_batched({name: faces}), 0.0)
        if self.mirror if mirror is None else mirror:
            mirrored = np.ascontiguousarray(faces[:, :, ::-1])
            scores = (scores + np.maximum(self._run_batched({name: mirrored}), 0.0)) / 2.0
        total = scores.sum(axis=1, keepdims=True)
        uniform = np.full_like(scores, 1.0 / scores.shape[1])
        return np.where(total > 0, scores / np.maximum(total, 1e-12), uniform).astype(np.float32)
