"""Who answers for a person the robot has not learned yet: the person-independent fallback.

A new person's memories are empty, so a classifier trained once on a crowd (FER2013) answers
until their first labelled episode (and, for anonymous persons, always). Of two, one is used:

- the export's **expression model** (``expression_<variant>.tflite``), a CNN trained for this
  alone, when the export has one: the encoder's expression code also serves the memories and the
  generator, and at the encoder's width it classifies FER2013 less well (docs/training.md);
- else the latent calibration's classifier on the encoder's latent (its linear expression head
  or the nearest class mean, :class:`~clifer_edge.models.calibration.LatentCalibration`).

The runtime, ``clifer-edge eval`` and ``calibrate``, the demo and the person-independent
benchmark all answer through :class:`Fallback`, so they measure what the robot does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clifer_edge.labels import canonical_label


class Fallback:
    """The person-independent answer: the expression model if there is one, else the latent
    calibration's classifier.

    Parameters
    ----------
    calibration : LatentCalibration, optional
        Answers from memory-space points when there is no expression model.
    expression_model : ExpressionModel, optional
        Answers from the prepared faces themselves.
    """

    def __init__(self, calibration: Any = None, expression_model: Any = None) -> None:
        if calibration is None and expression_model is None:
            raise ValueError("a fallback needs an expression model or a latent calibration")
        self.calibration = calibration
        self.expression_model = expression_model

    @property
    def labels(self) -> list[str]:
        """The classes, in the order of :meth:`predict_proba`'s columns."""
        if self.expression_model is not None:
            return [canonical_label(name) for name in self.expression_model.vocabulary]
        return list(self.calibration.labels)

    @property
    def reads_faces(self) -> bool:
        """True when answers come from the faces (the expression model), not from latents."""
        return self.expression_model is not None

    def describe(self) -> str:
        """What answers: ``expression model``, ``expression head`` or ``class means``."""
        if self.expression_model is not None:
            return "expression model"
        return str(self.calibration.info.get("fallback", "class means"))

    def predict_proba(self, faces: np.ndarray | None, points: np.ndarray | None) -> np.ndarray:
        """Scores of each face, shape (n, n_classes), rows summing to 1.

        Parameters
        ----------
        faces : ndarray (n, size, size, channels) in [-1, 1], or None
            Prepared faces; needed when :attr:`reads_faces`.
        points : ndarray (n, z_dim), or None
            The same faces' latents in the memories' (standardised) space; needed otherwise.
        """
        if self.expression_model is not None:
            if faces is None:
                raise ValueError("the expression model answers from faces: pass faces")
            return self.expression_model.predict_proba(faces)
        if points is None:
            raise ValueError("the latent calibration answers from latents: pass points")
        return self.calibration.predict_proba(points)

    def predict(self, faces: np.ndarray | None, points: np.ndarray | None) -> list[str]:
        """The best class of each face (see :meth:`predict_proba`)."""
        labels = self.labels
        scores = self.predict_proba(faces, points)
        return [labels[i] for i in np.argmax(scores, axis=1)]
