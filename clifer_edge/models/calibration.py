"""Latent calibration: where the memories work, and who answers for a person not learned yet.

Two things depend on the statistics of the encoder's latents over many faces, so they are computed
together, once per encoder, from FER2013 (``clifer-edge calibrate``) and stored in one small file
beside the models, tied to the encoder file by SHA-256 (a calibration of another encoder is refused
rather than silently misused):

- **Standardisation for the memories.** The GDM grows a node when a face's activation
  ``exp(-distance)`` to its best-matching node falls below a fixed threshold, so distances must sit
  on a known scale whatever the encoder. A freshly trained encoder's latents may span only a few
  hundredths per dimension, which leaves the memories at two nodes. The memories therefore see
  latents standardised with the FER2013 mean and standard deviation of each dimension (measured on
  CK+ with the default models: one person's frames of one expression lie ~1-3 apart, different
  expressions ~4-7, so new expressions get new nodes). Imagination maps prototypes back with
  :meth:`LatentCalibration.to_latent` before the generator sees them.
- **The person-independent fallback.** A new person's memory is empty, so a generic classifier
  answers until the first labelled episode: a linear *expression head* (multinomial logistic
  regression on the standardised latents of all FER2013 Training faces, class-weighted) when it
  beats the class means on PublicTest, else the nearest FER2013 class mean with a shared isotropic
  Gaussian per class turned into scores (softmax of ``-distance² / 2σ²``). Both are population
  classifiers, what CLIFER's per-person memories improve on; their FER2013 PublicTest figures are
  stored in the file and printed by the command.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.fileio import atomic_savez, sha256_file
from clifer_edge.labels import BASIC_EXPRESSIONS

#: Smallest standard deviation used per latent dimension (guards constant dimensions).
MIN_STD = 1e-3


class CalibrationError(ValueError):
    """The calibration file is missing, damaged, or was built for another encoder."""


class LatentCalibration:
    """Standardisation of encoder latents and the person-independent fallback classifier.

    The fallback is a linear softmax *expression head* on the standardised latents when the
    calibration carries one (``head``; fitted on all of FER2013 Training by
    :func:`build_calibration`, kept only where it beats the class means on PublicTest), else the
    nearest class mean.

    Parameters
    ----------
    mean, std : ndarray of shape (z_dim,)
        Per-dimension statistics of encoder latents on the calibration faces.
    class_means : ndarray of shape (n_classes, z_dim)
        Class means in the standardised space.
    labels : list of str
        Class of each row of ``class_means``.
    variance : float
        Shared per-dimension variance σ² around the class means (standardised space).
    info : dict
        Provenance: encoder SHA-256, data file, sample sizes, PublicTest accuracy.
    head : (ndarray of shape (n_classes, z_dim), ndarray of shape (n_classes,)), optional
        Weights and biases of the expression head, rows in ``labels`` order.
    """

    def __init__(
        self,
        mean: np.ndarray,
        std: np.ndarray,
        class_means: np.ndarray,
        labels: list[str],
        variance: float,
        info: dict[str, Any],
        head: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.maximum(np.asarray(std, dtype=np.float32), MIN_STD)
        self.class_means = np.asarray(class_means, dtype=np.float32)
        self.labels = [str(label) for label in labels]
        self.variance = float(variance)
        self.info = dict(info)
        self.head = (
            None
            if head is None
            else (np.asarray(head[0], dtype=np.float32), np.asarray(head[1], dtype=np.float32))
        )

    @property
    def z_dim(self) -> int:
        return int(self.mean.shape[0])

    # -- the memories' space -----------------------------------------------------------------
    def to_memory(self, latents: np.ndarray) -> np.ndarray:
        """Encoder latents -> the standardised space the memories learn in."""
        return ((np.asarray(latents, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def to_latent(self, points: np.ndarray) -> np.ndarray:
        """Memory-space points (e.g. episodic prototypes) -> encoder latents, clipped to [-1, 1]."""
        latents = np.asarray(points, dtype=np.float32) * self.std + self.mean
        return np.clip(latents, -1.0, 1.0).astype(np.float32)

    # -- the fallback classifier -------------------------------------------------------------
    @classmethod
    def fit(
        cls, latents: np.ndarray, labels: np.ndarray, info: dict[str, Any] | None = None
    ) -> LatentCalibration:
        """Statistics, class means and pooled variance of labelled encoder latents."""
        latents = np.asarray(latents, dtype=np.float32)
        labels = np.asarray(labels).astype(str)
        mean, std = latents.mean(axis=0), np.maximum(latents.std(axis=0), MIN_STD)
        points = (latents - mean) / std
        present = set(labels.tolist())
        order = [c for c in BASIC_EXPRESSIONS if c in present] + sorted(
            present - set(BASIC_EXPRESSIONS)
        )
        class_means = np.stack([points[labels == c].mean(axis=0) for c in order])
        residual = points - class_means[[order.index(c) for c in labels]]
        variance = max(float(np.mean(residual**2)), 1e-6)
        return cls(mean, std, class_means, order, variance, info or {})

    def fit_head(
        self, points: np.ndarray, labels: np.ndarray, class_weight: dict[str, float] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A multinomial logistic regression on memory-space points (scikit-learn), rows in
        ``self.labels`` order; returned, not stored (the caller keeps it if it measures better)."""
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1.0, max_iter=1000, class_weight=class_weight)
        model.fit(np.asarray(points, dtype=np.float32), np.asarray(labels).astype(str))
        order = [list(model.classes_).index(label) for label in self.labels]
        return model.coef_[order].astype(np.float32), model.intercept_[order].astype(np.float32)

    def predict_proba(self, points: np.ndarray) -> np.ndarray:
        """Fallback scores for memory-space points, shape (n, n_classes), rows summing to 1."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float32))
        if self.head is not None:
            logits = points @ self.head[0].T + self.head[1]
            logits -= logits.max(axis=1, keepdims=True)
            scores = np.exp(logits)
            return scores / scores.sum(axis=1, keepdims=True)
        sq = (
            np.sum(points**2, axis=1)[:, None]
            - 2.0 * points @ self.class_means.T
            + np.sum(self.class_means**2, axis=1)[None, :]
        )
        logits = -np.maximum(sq, 0.0) / (2.0 * self.variance)
        logits -= logits.max(axis=1, keepdims=True)
        scores = np.exp(logits)
        return scores / scores.sum(axis=1, keepdims=True)

    def predict(self, points: np.ndarray) -> list[str]:
        """Fallback labels for memory-space points (expression head, or nearest class mean)."""
        return [self.labels[i] for i in np.argmax(self.predict_proba(points), axis=1)]

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the calibration as a small npz, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_savez(
            path,
            mean=self.mean,
            std=self.std,
            class_means=self.class_means,
            labels=np.array(self.labels),
            variance=np.array(self.variance),
            info=np.array(json.dumps(self.info)),
            **(
                {"head_weights": self.head[0], "head_bias": self.head[1]}
                if self.head is not None
                else {}
            ),
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], encoder_sha256: str | None = None
    ) -> LatentCalibration:
        """Read a calibration file, checking that it belongs to the given encoder file.

        Raises
        ------
        CalibrationError
            If the file is missing or damaged, or was built for another encoder.
        """
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            info = json.loads(str(arrays["info"]))
            calibration = cls(
                arrays["mean"],
                arrays["std"],
                arrays["class_means"],
                [str(x) for x in arrays["labels"]],
                float(arrays["variance"]),
                info,
                (arrays["head_weights"], arrays["head_bias"]) if "head_weights" in arrays else None,
            )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise CalibrationError(f"calibration file {path}: cannot read it ({error})") from None
        shape = calibration.class_means.shape
        if calibration.std.shape != calibration.mean.shape or shape != (
            len(calibration.labels),
            calibration.z_dim,
        ):
            raise CalibrationError(f"calibration file {path}: arrays of inconsistent shapes")
        if calibration.head is not None and (
            calibration.head[0].shape != shape or calibration.head[1].shape != (shape[0],)
        ):
            raise CalibrationError(f"calibration file {path}: expression head of wrong shape")
        built_for = str(info.get("encoder_sha256"))
        if encoder_sha256 is not None and built_for != encoder_sha256:
            raise CalibrationError(
                f"calibration file {path} was built for another encoder (sha256 "
                f"{built_for[:12]}, this one is {encoder_sha256[:12]}); run `clifer-edge calibrate`"
            )
        return calibration


def calibration_rows(
    dataset: Any, vocabulary: list[str], per_class: int = 300, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The class-balanced calibration sample: up to ``per_class`` FER2013 Training faces of each
    class of ``vocabulary`` and a third as many PublicTest faces, as sorted row indices.

    One draw for everything that standardises latents (``clifer-edge calibrate``, the export
    parity report), so that they all standardise on the same faces.
    """
    rng = np.random.default_rng(seed)
    splits = dataset.splits if dataset.splits is not None else np.full(len(dataset), "Training")
    chosen: dict[str, list[int]] = {"Training": [], "PublicTest": []}
    for label in vocabulary:
        for split, count in (("Training", per_class), ("PublicTest", max(per_class // 3, 1))):
            rows = np.flatnonzero((dataset.labels == label) & (splits == split))
            chosen[split] += rng.choice(rows, size=min(count, len(rows)), replace=False).tolist()
    return tuple(np.sort(np.asarray(chosen[s], dtype=np.int64)) for s in chosen)


def build_calibration(
    encoder: Any,
    encoder_path: str | os.PathLike[str],
    data: str | os.PathLike[str] = "fer2013.npz",
    per_class: int = 300,
    seed: int = 0,
    progress: bool = True,
    head: bool = True,
    expression_model: Any = None,
) -> tuple[LatentCalibration, dict[str, float]]:
    """Calibrate on a class-balanced FER2013 Training sample; score the fallback on PublicTest.

    The standardisation and class means come from the balanced sample. With ``head``, an
    expression head is fitted on all Training faces and kept if its macro-F1 on all of
    PublicTest beats the class means'; both are recorded in ``info``. With an
    ``expression_model`` (the export's, which then answers for new persons instead:
    :mod:`clifer_edge.models.fallback`), it is scored on all of PublicTest too, and its scores
    are the fallback's.

    Returns
    -------
    calibration : LatentCalibration
    scores : dict
        ``accuracy`` and ``macro_f1`` of the chosen fallback on PublicTest (all of it with
        ``head``, else a balanced sample), ``n_test``.

    Raises
    ------
    DatasetError
        If the data file cannot be found or read.
    """
    from clifer_edge.datasets import load_npz

    dataset = load_npz(data)
    vocabulary = [str(name) for name in encoder.metadata.vocabulary]
    splits = dataset.splits if dataset.splits is not None else np.full(len(dataset), "Training")
    train, balanced_test = calibration_rows(dataset, vocabulary, per_class, seed)
    latents = _encode_all(encoder, dataset.images[train], "calibrate: encode FER2013", progress)
    info = {
        "encoder_sha256": sha256_file(encoder_path),
        "data": Path(dataset.source).name,
        "n_train": len(train),
        "seed": seed,
    }
    calibration = LatentCalibration.fit(latents, dataset.labels[train], info)
    scores: dict[str, float] = {}
    if head:
        # The expression head learns from every Training face (weighted towards rare classes),
        # and is kept only if it beats the class means on all of PublicTest.
        rows = np.flatnonzero(splits == "Training")
        rows = rows[np.isin(dataset.labels[rows], calibration.labels)]
        points = calibration.to_memory(
            _encode_all(encoder, dataset.images[rows], "calibrate: head", progress)
        )
        counts = {c: int(np.sum(dataset.labels[rows] == c)) for c in calibration.labels}
        mean_count = float(np.mean(list(counts.values())))
        weights = {c: float(np.sqrt(mean_count / max(n, 1))) for c, n in counts.items()}
        fitted = calibration.fit_head(points, dataset.labels[rows], weights)
        test = np.flatnonzero(
            (splits == "PublicTest") & np.isin(dataset.labels, calibration.labels)
        )
        points = calibration.to_memory(
            _encode_all(encoder, dataset.images[test], "calibrate: test", progress)
        )
        truth = dataset.labels[test]
        means = _scores(truth, calibration.predict(points))
        calibration.head = fitted
        with_head = _scores(truth, calibration.predict(points))
        if with_head["macro_f1"] <= means["macro_f1"]:
            calibration.head = None
        scores = with_head if calibration.head is not None else means
        scores["n_test"] = float(len(test))
        calibration.info.update(
            {
                "fallback": "expression head" if calibration.head is not None else "class means",
                "n_head_train": len(rows),
                **{f"publictest_class_means_{k}": v for k, v in means.items()},
                **{f"publictest_head_{k}": v for k, v in with_head.items()},
            }
        )
    if expression_model is not None:
        test = np.flatnonzero(
            (splits == "PublicTest") & np.isin(dataset.labels, expression_model.vocabulary)
        )
        vocabulary = list(expression_model.vocabulary)
        by_view = {}
        for mirror in (False, True):  # the face alone, and averaged with its mirror image
            probabilities = _run_all(
                lambda faces, mirror=mirror: expression_model.predict_proba(faces, mirror),
                expression_model.metadata,
                dataset.images[test],
                "calibrate: expression model",
                progress,
            )
            predicted = [vocabulary[i] for i in np.argmax(probabilities, axis=1)]
            by_view[mirror] = {**_scores(dataset.labels[test], predicted), "n_test": len(test)}
        scores = {k: float(v) for k, v in by_view[expression_model.mirror].items()}
        model_path = getattr(expression_model.model, "path", None)
        calibration.info.update(
            {
                "expression_model_sha256": sha256_file(model_path) if model_path else None,
                "expression_model_mirror": expression_model.mirror,
                **{f"publictest_expression_model_{k}": v for k, v in scores.items()},
                **{
                    f"publictest_expression_model_{view}_{k}": float(v)
                    for mirror, view in ((False, "plain"), (True, "mirrored"))
                    for k, v in by_view[mirror].items()
                    if k != "n_test"
                },
            }
        )
    elif not head and balanced_test.size:
        points = calibration.to_memory(
            _encode_all(encoder, dataset.images[balanced_test], "calibrate: test", progress)
        )
        scores = _scores(dataset.labels[balanced_test], calibration.predict(points))
        scores["n_test"] = float(len(balanced_test))
    calibration.info.update({f"publictest_{k}": v for k, v in scores.items()})
    return calibration, scores


def _scores(truth: np.ndarray, predicted: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }


def _encode_all(encoder: Any, images: np.ndarray, desc: str, progress: bool) -> np.ndarray:
    """Encode uint8 face crops in batches."""
    return _run_all(encoder.encode, encoder.metadata, images, desc, progress)


def _run_all(model: Any, meta: Any, images: np.ndarray, desc: str, progress: bool) -> np.ndarray:
    """Prepare uint8 face crops and run ``model(faces)`` on them in batches."""
    from tqdm import tqdm

    from clifer_edge.preprocessing import preprocess_faces

    batch = 64
    out = []
    steps = range(0, len(images), batch)
    for begin in tqdm(steps, desc=desc, unit="batch", leave=False, disable=not progress):
        faces = preprocess_faces(images[begin : begin + batch], meta.image_size, meta.channels)
        out.append(np.asarray(model(faces), dtype=np.float32))
    return np.concatenate(out)
