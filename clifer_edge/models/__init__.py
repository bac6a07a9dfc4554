"""The exported Imagination model on the robot: LiteRT loader, encoder and generator wrappers,
the optional expression model, the encoder's latent calibration (memory space), the
person-independent fallback and
:class:`~clifer_edge.models.files.ModelFiles`, the one place that finds these files.

No TensorFlow here: the models run with ``ai_edge_litert`` (falling back to ``tflite_runtime``, then
``tf.lite`` only when nothing else is installed). The default int8 models ship in ``default/``.
"""

from __future__ import annotations

from clifer_edge.models.calibration import CalibrationError, LatentCalibration
from clifer_edge.models.encoder_generator import (
    METADATA_FILENAME,
    Encoder,
    ExpressionModel,
    Generator,
    ModelMetadata,
)
from clifer_edge.models.fallback import Fallback
from clifer_edge.models.files import (
    DEFAULT_MODEL_DIR,
    ROLES,
    VARIANTS,
    ModelFiles,
    calibration_filename,
    load_default_models,
    model_filename,
)
from clifer_edge.models.litert import ModelFileError, TFLiteModel, interpreter_class

__all__ = [
    "DEFAULT_MODEL_DIR",
    "METADATA_FILENAME",
    "ROLES",
    "VARIANTS",
    "CalibrationError",
    "Encoder",
    "ExpressionModel",
    "Fallback",
    "Generator",
    "LatentCalibration",
    "ModelFileError",
    "ModelFiles",
    "ModelMetadata",
    "TFLiteModel",
    "calibration_filename",
    "interpreter_class",
    "load_default_models",
    "model_filename",
]
