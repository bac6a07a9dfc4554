"""Which files make an exported model and where they are: the one place that resolves them.

An export (``clifer-export``) writes, per variant, ``encoder_<variant>.tflite`` and
``generator_<variant>.tflite`` (and, optionally, ``expression_<variant>.tflite``, a standalone
expression classifier for persons not learned yet) beside one ``metadata.json``;
``clifer-edge calibrate`` adds ``calibration_<variant>.npz`` (the encoder's latent calibration).
The runtime, the node (through the runtime's configuration), ``clifer-edge``
``eval``/``demo``/``calibrate`` and the export checks all find these files through
:class:`ModelFiles`, so a missing or foreign file gets the same one-line error everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clifer_edge.fileio import sha256_file
from clifer_edge.models.calibration import CalibrationError, LatentCalibration
from clifer_edge.models.encoder_generator import (
    METADATA_FILENAME,
    Encoder,
    ExpressionModel,
    Generator,
)
from clifer_edge.models.litert import ModelFileError

#: Variants the export writes (``encoder_<variant>.tflite``, ``generator_<variant>.tflite``).
VARIANTS: tuple[str, ...] = ("int8", "float16", "float32")
#: The models of an export: the Imagination model's halves and the optional expression model.
ROLES: tuple[str, ...] = ("encoder", "generator", "expression")
#: Directory of the models bundled with the package.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"


def model_filename(role: str, variant: str) -> str:
    """File name of an exported model, e.g. ``encoder_int8.tflite``."""
    if role not in ROLES:
        raise ValueError(f"role={role!r} should be one of {list(ROLES)}")
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} should be one of {list(VARIANTS)}")
    return f"{role}_{variant}.tflite"


def calibration_filename(variant: str) -> str:
    """File name of a variant's latent calibration, e.g. ``calibration_int8.npz``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} should be one of {list(VARIANTS)}")
    return f"calibration_{variant}.npz"


@dataclass(frozen=True)
class ModelFiles:
    """The files of one exported model variant.

    Build it with :meth:`locate`; nothing is read until :meth:`load` or :meth:`load_calibration`.
    """

    #: Folder of the export (the bundled default unless configured).
    directory: Path
    #: ``int8``, ``float16`` or ``float32``.
    variant: str
    #: Calibration file when it does not sit beside the models (``None``: beside them).
    calibration_file: Path | None = None

    @classmethod
    def locate(
        cls,
        directory: str | os.PathLike[str] | None = None,
        variant: str = "int8",
        calibration: str | os.PathLike[str] | None = None,
    ) -> ModelFiles:
        """The files of ``variant`` in ``directory`` (``None``: the bundled default models).

        Raises
        ------
        ValueError
            For an unknown variant.
        """
        model_filename("encoder", variant)  # validates the variant
        folder = Path(directory).expanduser() if directory is not None else DEFAULT_MODEL_DIR
        override = Path(calibration).expanduser() if calibration is not None else None
        return cls(folder, variant, override)

    @property
    def encoder(self) -> Path:
        return self.directory / model_filename("encoder", self.variant)

    @property
    def generator(self) -> Path:
        return self.directory / model_filename("generator", self.variant)

    @property
    def expression(self) -> Path:
        return self.directory / model_filename("expression", self.variant)

    @property
    def metadata(self) -> Path:
        return self.directory / METADATA_FILENAME

    @property
    def calibration(self) -> Path:
        if self.calibration_file is not None:
            return self.calibration_file
        return self.directory / calibration_filename(self.variant)

    def load(self, num_threads: int = 1) -> tuple[Encoder, Generator]:
        """The encoder and generator, checked against their metadata.

        Raises
        ------
        ModelFileError
            If a file is missing, truncated, or does not match the metadata.
        """
        missing = [str(p) for p in (self.encoder, self.generator, self.metadata) if not p.exists()]
        if missing:
            raise ModelFileError(
                f"model files {missing} not found; export them with `clifer-export --checkpoint "
                f"RUN_DIR --format {self.variant} --out {self.directory}`"
            )
        encoder = Encoder(self.encoder, self.metadata, num_threads)
        generator = Generator(self.generator, self.metadata, num_threads)
        return encoder, generator

    def load_expression(self, num_threads: int = 1) -> ExpressionModel | None:
        """The export's expression model, or ``None`` where the export has none (then the
        latent calibration answers for persons not learned yet).

        Raises
        ------
        ModelFileError
            If the file is there but truncated or does not match the metadata.
        """
        if not self.expression.exists():
            return None
        return ExpressionModel(self.expression, self.metadata, num_threads)

    def load_calibration(self, encoder: Any = None) -> LatentCalibration:
        """The latent calibration of the encoder file (of ``encoder``'s file if given).

        Raises
        ------
        CalibrationError
            If the file is missing or damaged, or was built for another encoder; the message says
            to run ``clifer-edge calibrate``.
        """
        encoder_path = source_file(encoder) or self.encoder
        if not self.calibration.exists():
            raise CalibrationError(
                f"no latent calibration {self.calibration} for encoder {encoder_path}; build it "
                f"with `clifer-edge calibrate` (needs FER2013)"
            )
        sha = sha256_file(encoder_path) if encoder_path.exists() else None
        return LatentCalibration.load(self.calibration, encoder_sha256=sha)

    def provenance(self) -> dict[str, dict[str, str]]:
        """Path and SHA-256 of each file present (recorded with results)."""
        files = {
            "encoder": self.encoder,
            "generator": self.generator,
            "expression": self.expression,
            "metadata": self.metadata,
            "calibration": self.calibration,
        }
        return {
            role: {"path": str(path), "sha256": sha256_file(path)}
            for role, path in files.items()
            if path.exists()
        }


def source_file(model: Any) -> Path | None:
    """The file a loaded encoder or generator came from (``None`` if it does not say)."""
    for owner in (model, getattr(model, "model", None)):
        path = getattr(owner, "path", None)
        if path is not None:
            return Path(path)
    return None


def load_default_models(
    variant: str = "int8",
    num_threads: int = 1,
    model_dir: str | os.PathLike[str] | None = None,
) -> tuple[Encoder, Generator]:
    """The encoder and generator bundled with the package (or exported into ``model_dir``).

    Raises
    ------
    ModelFileError
        If the files are missing or do not match their metadata.
    """
    return ModelFiles.locate(model_dir, variant).load(num_threads)
