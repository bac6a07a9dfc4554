"""One small loader for TFLite models on the robot, without TensorFlow.

The robot runs the exported encoder and generator with LiteRT (``ai_edge_litert``), the successor
of ``tflite_runtime``. Older installs may only have ``tflite_runtime``, and a workstation may only
have TensorFlow; :func:`interpreter_class` tries them in that order and imports TensorFlow only as
the last resort, lazily, so that importing this module never pulls it in.

:class:`TFLiteModel` owns one interpreter: it checks the file before handing it to the runtime (so
a truncated or foreign file fails at start-up with a message naming the file, not later in
``invoke``), caches the tensor details, resizes the batch dimension on demand and converts between
float32 and the int8/uint8 tensors of a fully quantised model with the tensors' own scale and zero
point.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Interpreter modules tried in order; TensorFlow, the last, is only a fallback for workstations.
BACKENDS: tuple[str, ...] = (
    "ai_edge_litert.interpreter",
    "tflite_runtime.interpreter",
    "tensorflow",
)

#: FlatBuffer file identifier of TFLite models (bytes 4..8 of the file).
TFLITE_IDENTIFIER = b"TFL3"

_QUANTISED_DTYPES = (np.int8, np.uint8, np.int16)


class ModelFileError(ValueError):
    """A model file is missing, truncated, not a TFLite model, or not the expected model."""


def interpreter_class(preferred: str | None = None) -> tuple[type, str]:
    """Return the first importable TFLite interpreter class and the name of its module.

    Parameters
    ----------
    preferred : str, optional
        One of :data:`BACKENDS` to use instead of the first available one (for tests and
        benchmarks that compare runtimes).

    Raises
    ------
    ImportError
        If no TFLite runtime is installed (or ``preferred`` is not).
    """
    names = BACKENDS if preferred is None else (preferred,)
    if preferred is not None and preferred not in BACKENDS:
        raise ValueError(f"backend {preferred!r} should be one of {list(BACKENDS)}")
    errors = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            errors.append(f"{name}: {error}")
            continue
        if name == "tensorflow":
            return module.lite.Interpreter, name
        return module.Interpreter, name
    raise ImportError(
        "no TFLite runtime found; install ai-edge-litert (pip install ai-edge-litert). Tried: "
        + "; ".join(errors)
    )


def read_model_file(path: str | os.PathLike[str], expected_sha256: str | None = None) -> bytes:
    """Read a ``.tflite`` file and check that it is one, before any runtime parses it.

    Raises
    ------
    ModelFileError
        If the file is missing, too short, lacks the TFLite identifier, or its SHA-256 differs
        from ``expected_sha256``.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as error:
        raise ModelFileError(f"model file {path}: cannot be read ({error.strerror})") from None
    if len(content) < 16:
        raise ModelFileError(f"model file {path}: only {len(content)} bytes, truncated or empty")
    if content[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError(
            f"model file {path}: not a TFLite model (file identifier {content[4:8]!r}, "
            f"expected {TFLITE_IDENTIFIER!r}); re-export it with clifer-export"
        )
    if expected_sha256 is not None:
        actual = hashlib.sha256(content).hexdigest()
        if actual != expected_sha256:
            raise ModelFileError(
                f"model file {path}: SHA-256 {actual[:12]}... differs from "
                f"{expected_sha256[:12]}... recorded in its metadata (truncated, damaged or "
                "replaced file); re-export it"
            )
    return content


@dataclass(frozen=True)
class TensorSpec:
    """What the wrapper needs to know about one input or output tensor.

    Attributes
    ----------
    name : str
        Signature name (the Keras input name, e.g. ``"z"``) when the model has a signature, else
        the tensor name.
    index : int
        Tensor index in the interpreter.
    shape : tuple of int
        Shape with the batch dimension as ``-1`` when it is dynamic.
    dtype : numpy dtype
        Storage type (float32, float16 stays float32 at the interface, int8, uint8).
    scale, zero_point : float, int
        Affine quantisation parameters (real = scale * (q - zero_point)); scale 0 when unquantised.
    """

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantised(self) -> bool:
        """True for int8/uint8/int16 tensors with a scale (a fully quantised model's I/O)."""
        return self.dtype.type in _QUANTISED_DTYPES and self.scale > 0.0

    def quantisation(self) -> dict[str, Any]:
        """The parameters as a JSON-friendly dict (for the metadata sidecar)."""
        return {
            "dtype": self.dtype.name,
            "scale": self.scale,
            "zero_point": self.zero_point,
            "shape": list(self.shape),
        }


def _spec(details: Mapping[str, Any], name: str) -> TensorSpec:
    signature = details.get("shape_signature")
    shape = tuple(int(d) for d in (signature if signature is not None else details["shape"]))
    scale, zero_point = details.get("quantization", (0.0, 0))
    return TensorSpec(
        name=name,
        index=int(details["index"]),
        shape=shape,
        dtype=np.dtype(details["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


def _short_name(tensor_name: str) -> str:
    # "serving_default_z:0" -> "z"; the name Keras gave the input.
    name = tensor_name.split(":")[0]
    return name.removeprefix("serving_default_")


class TFLiteModel:
    """A TFLite model ready to run on float32 arrays, whatever its storage type.

    Parameters
    ----------
    path : path-like
        The ``.tflite`` file.
    num_threads : int
        Interpreter threads (1 keeps the robot's other cores free; see the benchmark).
    expected_sha256 : str, optional
        Refuse the file unless its SHA-256 matches (the value recorded in ``metadata.json``).
    backend : str, optional
        Force one of :data:`BACKENDS` instead of the first available.

    Raises
    ------
    ModelFileError
        If the file is missing, truncated, foreign, or the runtime cannot build it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        num_threads: int = 1,
        expected_sha256: str | None = None,
        backend: str | None = None,
    ) -> None:
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads={num_threads!r} should be a positive int")
        self.path = Path(path)
        self.num_threads = num_threads
        content = read_model_file(self.path, expected_sha256)
        interpreter_cls, self.backend = interpreter_class(backend)
        try:
            self._interpreter = interpreter_cls(model_content=content, num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ModelFileError(
                f"model file {self.path}: the TFLite runtime ({self.backend}) cannot load it "
                f"({str(error).strip()}); the file is truncated or not an exported model"
            ) from None
        self.inputs: tuple[TensorSpec, ...] = self._specs("inputs")
        self.outputs: tuple[TensorSpec, ...] = self._specs("outputs")
        self._batch = self._current_batch()

    def _specs(self, kind: str) -> tuple[TensorSpec, ...]:
        if kind == "inputs":
            details = self._interpreter.get_input_details()
        else:
            details = self._interpreter.get_output_details()
        names = {int(d["index"]): _short_name(d["name"]) for d in details}
        # The serving signature holds the Keras input names; prefer them to tensor names.
        # (old tflite_runtime builds have no signature API: tensor names are used then).
        get_signatures = getattr(self._interpreter, "get_signature_list", None)
        signatures = get_signatures() if get_signatures is not None else {}
        if len(signatures) == 1:
            runner = self._interpreter.get_signature_runner(next(iter(signatures)))
            named = runner.get_input_details() if kind == "inputs" else runner.get_output_details()
            for name, d in named.items():
                names[int(d["index"])] = name
        return tuple(_spec(d, names[int(d["index"])]) for d in details)

    def _current_batch(self) -> int:
        details = self._interpreter.get_input_details()
        return int(details[0]["shape"][0]) if len(details[0]["shape"]) else 1

    def input(self, name: str) -> TensorSpec:
        """The input named ``name`` (the Keras input name)."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.path.name} has no input {name!r} (has {self.input_names})")

    @property
    def input_names(self) -> list[str]:
        """Names of the inputs, in tensor order."""
        return [spec.name for spec in self.inputs]

    @property
    def quantised(self) -> bool:
        """True when the model's inputs are integer tensors (a full-integer export)."""
        return any(spec.quantised for spec in self.inputs)

    def _resize(self, batch: int) -> None:
        if batch == self._batch:
            return
        for spec in self.inputs:
            shape = [batch, *(abs(d) for d in spec.shape[1:])]
            self._interpreter.resize_tensor_input(spec.index, shape, strict=False)
        self._interpreter.allocate_tensors()
        self._batch = batch

    @staticmethod
    def _quantise(spec: TensorSpec, values: np.ndarray) -> np.ndarray:
        if not spec.quantised:
            return values.astype(spec.dtype, copy=False)
        info = np.iinfo(spec.dtype)
        q = np.rint(values / spec.scale + spec.zero_point)
        return np.clip(q, info.min, info.max).astype(spec.dtype)

    @staticmethod
    def _dequantise(spec: TensorSpec, values: np.ndarray) -> np.ndarray:
        if not spec.quantised:
            return values.astype(np.float32, copy=False)
        return ((values.astype(np.float32) - spec.zero_point) * spec.scale).astype(np.float32)

    def run(self, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the model on a batch.

        Parameters
        ----------
        inputs : mapping name -> ndarray, or sequence in the order of :attr:`inputs`
            Float arrays with a leading batch dimension; all inputs share the batch size.

        Returns
        -------
        list of ndarray, float32
            The outputs, dequantised, in the order of :attr:`outputs`.
        """
        if isinstance(inputs, Mapping):
            missing = set(self.input_names) - set(inputs)
            if missing:
                raise ValueError(f"missing model inputs {sorted(missing)} (has {self.input_names})")
            arrays = [np.asarray(inputs[spec.name], dtype=np.float32) for spec in self.inputs]
        else:
            if len(inputs) != len(self.inputs):
                raise ValueError(f"{len(inputs)} inputs given, the model takes {len(self.inputs)}")
            arrays = [np.asarray(array, dtype=np.float32) for array in inputs]
        batch = arrays[0].shape[0] if arrays[0].ndim else 0
        for spec, array in zip(self.inputs, arrays, strict=True):
            expected = tuple(abs(d) for d in spec.shape[1:])
            if array.ndim != len(spec.shape) or array.shape[1:] != expected:
                raise ValueError(
                    f"input {spec.name!r} of shape {array.shape} should be (n, "
                    f"{', '.join(map(str, expected))})"
                )
            if array.shape[0] != batch:
                raise ValueError(f"inputs disagree in batch size: {[a.shape[0] for a in arrays]}")
        if batch == 0:
            return [
                np.zeros((0, *(abs(d) for d in spec.shape[1:])), np.float32)
                for spec in self.outputs
            ]
        self._resize(batch)
        for spec, array in zip(self.inputs, arrays, strict=True):
            self._interpreter.set_tensor(spec.index, self._quantise(spec, array))
        self._interpreter.invoke()
        return [
            self._dequantise(spec, self._interpreter.get_tensor(spec.index))
            for spec in self.outputs
        ]

    def __repr__(self) -> str:
        return (
            f"TFLiteModel({self.path.name!r}, inputs={self.input_names}, backend={self.backend!r}, "
            f"num_threads={self.num_threads})"
        )
