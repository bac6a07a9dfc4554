"""The exported Imagination model on the robot: LiteRT loader, encoder and generator wrappers,
and the encoder's latent calibration (memory space + person-independent fallback).

No TensorFlow here: the models run with ``ai_edge_litert`` (falling back to ``tflite_runtime``, then
``tf.lite`` only when nothing else is installed). The default int8 models ship in ``default/``.
"""

from __future__ import annotations

from clifer_edge.models.calibration import CalibrationError, LatentCalibration
from clifer_edge.models.encoder_generator import (
    DEFAULT_MODEL_DIR,
    Encoder,
    Generator,
    ModelMetadata,
    load_default_models,
    model_filename,
)
from clifer_edge.models.litert import ModelFileError, TFLiteModel, interpreter_class

__all__ = [
    "DEFAULT_MODEL_DIR",
    "CalibrationError",
    "Encoder",
    "Generator",
    "LatentCalibration",
    "ModelFileError",
    "ModelMetadata",
    "TFLiteModel",
    "interpreter_class",
    "load_default_models",
    "model_filename",
]
