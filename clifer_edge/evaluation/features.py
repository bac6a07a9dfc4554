"""From data set images to model-ready faces and fixed features for the protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from tqdm.auto import tqdm

from clifer_edge.datasets import FaceDataset
from clifer_edge.preprocessing import InvalidImageError, preprocess_face


@dataclass
class PreparedFaces:
    """Model inputs for every data set row; ``valid`` is False where no face was found."""

    faces: np.ndarray
    valid: np.ndarray
    detection: dict[str, Any] | None = None


def prepare_faces(
    dataset: FaceDataset,
    size: int = 48,
    channels: int = 1,
    detector: Any = None,
    progress: bool = True,
) -> PreparedFaces:
    """Crop (with ``detector``, for full-frame photos) and preprocess every image.

    Without a detector the images are taken to be face crops already (CK+48, FER2013). With one,
    the largest detected face is used and images without a face are marked invalid, so that a
    missed detection costs one sample, not the run.
    """
    faces = np.zeros((len(dataset), size, size, channels), dtype=np.float32)
    valid = np.ones(len(dataset), dtype=bool)
    images = dataset.images
    desc = "detecting faces" if detector is not None else "preprocessing faces"
    for i in tqdm(range(len(dataset)), desc=desc, unit="img", disable=not progress):
        try:
            if detector is None:
                faces[i] = preprocess_face(images[i], size, channels)
                continue
            crops = detector.crop_faces(images[i], size=size, channels=channels)
        except InvalidImageError as error:
            raise InvalidImageError(f"{dataset.source}: image {i}: {error}") from None
        if crops:
            faces[i] = crops[0][1]
        else:
            valid[i] = False
    detection = None
    if detector is not None:
        detection = {
            "method": detector.method,
            "model": detector.model_path,
            "margin": detector.margin,
            "found": int(valid.sum()),
            "total": len(dataset),
        }
    return PreparedFaces(faces, valid, detection)


class PixelPCA:
    """Fixed face feature for the GDM demo: PCA of pixels, fitted on *other* people.

    Faces (48x48 grey, [-1, 1]) are projected on the first ``n_components`` principal axes of a
    fitting set of different subjects (FER2013 Training by default, which shares no one with CK+
    or JAFFE), then scaled to a fixed norm ``scale``. The fixed norm removes global contrast and
    puts distances where the GDM's activation thresholds act (activation ``exp(-distance)``,
    insertion below 0.4 episodic / 0.2 semantic): at norm 1, faces of different people lie about
    1 apart and one person's different expressions about 0.2-0.45 apart (measured on CK+), so
    with the default ``scale`` 16 a new expression of a person (distance ~3-7, activation
    < 0.05) gets its own nodes in both memories. Smaller scales starve the semantic memory of
    nodes (at 4: 2-3 nodes per subject); above 16 the results plateau (see docs/evaluation.md).
    """

    def __init__(self, n_components: int = 50, scale: float = 16.0, seed: int = 0) -> None:
        if n_components < 1:
            raise ValueError(f"n_components={n_components} should be >= 1")
        if scale <= 0:
            raise ValueError(f"scale={scale} should be > 0")
        self.n_components = n_components
        self.scale = scale
        self.seed = seed

    def fit(self, faces: np.ndarray) -> PixelPCA:
        """Fit the axes on faces of shape (n, H, W, C) in [-1, 1]."""
        flat = faces.reshape(len(faces), -1)
        self.pca_ = PCA(self.n_components, svd_solver="randomized", random_state=self.seed)
        self.pca_.fit(flat)
        self.input_shape_ = faces.shape[1:]
        return self

    def transform(self, faces: np.ndarray) -> np.ndarray:
        """Features of shape (n, n_components), float32, each of norm ``scale``."""
        if faces.shape[1:] != self.input_shape_:
            raise ValueError(f"faces of shape {faces.shape[1:]}, PCA fitted on {self.input_shape_}")
        z = self.pca_.transform(faces.reshape(len(faces), -1))
        norms = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        return (self.scale * z / norms).astype(np.float32)

    def describe(self) -> str:
        return (
            f"PCA of 48x48 grey pixels, {self.n_components} components "
            f"({self.pca_.explained_variance_ratio_.sum():.0%} of the fitting set's variance), "
            f"fitted on other subjects, each feature vector scaled to norm {self.scale}"
        )
