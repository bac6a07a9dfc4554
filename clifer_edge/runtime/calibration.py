"""The person-independent classifier that answers for persons the robot has not learned yet.

A new person's memory is empty, so something generic must answer until the first labelled episode.
We use the simplest classifier that lives in the encoder's own latent space and needs no extra
model: the **nearest class mean** of FER2013 training latents, with a shared isotropic Gaussian per
class turned into scores (softmax of ``-distance² / 2σ²``). It costs one ``(7, z_dim)`` array, is
computed once per encoder (``clifer-edge build-fallback``) and stored beside the models with the
encoder file's SHA-256, so a fallback built for another encoder is refused instead of silently
giving nonsense. It is weak (a population average, exactly what CLIFER's per-person memories
improve on): its accuracy on FER2013 PublicTest is stored in the file and printed by the command.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.labels import BASIC_EXPRESSIONS


class FallbackError(ValueError):
    """The fallback file is missing, damaged, or was built for another encoder."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (to tie a fallback to the encoder it was built with)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FallbackClassifier:
    """Nearest class mean with Gaussian scores.

    Parameters
    ----------
    means : ndarray of shape (n_classes, z_dim)
    labels : sequence of str
    variance : float
        Shared per-dimension variance σ² of latents around their class mean.
    info : dict
        Provenance (encoder hash, data, accuracy), saved with the means.
    """

    def __init__(
        self, means: np.ndarray, labels: list[str], variance: float, info: dict[str, Any]
    ) -> None:
        self.means = np.asarray(means, dtype=np.float32)
        self.labels = list(labels)
        self.variance = float(variance)
        self.info = dict(info)

    @classmethod
    def fit(
        cls, latents: np.ndarray, labels: np.ndarray, info: dict[str, Any] | None = None
    ) -> FallbackClassifier:
        """Class means and pooled variance of labelled latents (classes in the model vocabulary
        order first)."""
        labels = np.asarray(labels).astype(str)
        present = set(labels.tolist())
        order = [c for c in BASIC_EXPRESSIONS if c in present]
        order += sorted(present - set(order))
        means = np.stack([latents[labels == c].mean(axis=0) for c in order])
        residual = latents - means[[order.index(c) for c in labels]]
        variance = float(np.mean(residual**2))
        return cls(means, order, max(variance, 1e-6), info or {})

    def predict_proba(self, latents: np.ndarray) -> np.ndarray:
        """Scores of shape (n, n_classes), rows summing to 1."""
        latents = np.atleast_2d(np.asarray(latents, dtype=np.float32))
        sq = (
            np.sum(latents**2, axis=1)[:, None]
            - 2.0 * latents @ self.means.T
            + np.sum(self.means**2, axis=1)[None, :]
        )
        logits = -np.maximum(sq, 0.0) / (2.0 * self.variance * latents.shape[1])
        logits -= logits.max(axis=1, keepdims=True)
        scores = np.exp(logits)
        return scores / scores.sum(axis=1, keepdims=True)

    def predict(self, latents: np.ndarray) -> list[str]:
        """Nearest-mean labels."""
        return [self.labels[i] for i in np.argmax(self.predict_proba(latents), axis=1)]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fallback as a small npz (atomically)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as stream:
            np.savez(
                stream,
                means=self.means,
                labels=np.array(self.labels),
                variance=np.array(self.variance),
                info=np.array(json.dumps(self.info)),
            )
        os.replace(tmp, path)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], encoder_sha256: str | None = None
    ) -> FallbackClassifier:
        """Read a fallback file, checking that it belongs to the given encoder file.

        Raises
        ------
        FallbackError
            If the file is missing or damaged, or was built for another encoder.
        """
        try:
            with np.load(path, allow_pickle=False) as archive:
                means = archive["means"]
                labels = [str(x) for x in archive["labels"]]
                variance = float(archive["variance"])
                info = json.loads(str(archive["info"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise FallbackError(f"fallback file {path}: cannot read it ({error})") from None
        if means.ndim != 2 or means.shape[0] != len(labels):
            raise FallbackError(f"fallback file {path}: means of shape {means.shape} do not match")
        built_for = info.get("encoder_sha256")
        if encoder_sha256 is not None and built_for != encoder_sha256:
            raise FallbackError(
                f"fallback file {path} was built for another encoder "
                f"(sha256 {str(built_for)[:12]}, "
                f"this one is {encoder_sha256[:12]}); run `clifer-edge build-fallback`"
            )
        return cls(means, labels, variance, info)
