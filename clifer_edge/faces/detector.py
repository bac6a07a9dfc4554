"""OpenCV face detectors (YuNet, bundled; Haar cascade) returning boxes largest first."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from clifer_edge.preprocessing import FaceBox, preprocess_face, validate_image

#: Cascade file used by the ``"haar"`` method (shipped with opencv-python 4.x).
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
#: The bundled YuNet model (Apache-2.0, see ``yunet/README.md``), the ``"yunet"`` default.
YUNET_MODEL = Path(__file__).resolve().parent / "yunet" / "face_detection_yunet_2023mar.onnx"

_METHODS = ("haar", "yunet")
#: Border per side, as a fraction of the box side, that turns each detector's box into the
#: framing of FER2013's faces, which the encoder learned from (YuNet's box is larger than
#: Haar's): measured by ``python benchmarks/face_framing.py`` (haar 0.104, yunet 0.016).
FER2013_MARGIN = {"haar": 0.10, "yunet": 0.02}


def crop_margin(method: str, margin: float | None = None) -> float:
    """The crop border for a detector's boxes: ``margin``, else its FER2013 framing."""
    return FER2013_MARGIN[method] if margin is None else float(margin)


class FaceDetectorError(ValueError):
    """The detector cannot be created (unknown method, missing or unreadable model file)."""


@dataclass(frozen=True)
class DetectedFace:
    """One detected face: its box in full-image pixels and the detector's confidence.

    ``score`` is YuNet's probability in [0, 1] for ``"yunet"``; for ``"haar"`` it is the
    cascade's last-stage weight (larger is more face-like, not a probability).
    """

    box: FaceBox
    score: float


class FaceDetector:
    """Find faces in a frame and cut them out for the encoder.

    Parameters
    ----------
    method : {"haar", "yunet"}
        Detector back-end.
    model_path : str or PathLike, optional
        ``"yunet"``: a YuNet ``.onnx`` file (default: the bundled :data:`YUNET_MODEL`).
        ``"haar"``: an alternative cascade XML (default: OpenCV's
        ``haarcascade_frontalface_default.xml``).
    min_size : int
        Smallest face side in pixels; smaller faces carry too little expression detail.
    scale_factor : float
        Haar image-pyramid step (> 1; smaller is slower and finds more).
    min_neighbors : int
        Haar overlapping detections needed to accept a face (higher: fewer false positives).
    score_threshold : float
        YuNet minimum confidence in [0, 1].
    max_faces : int or None
        Keep at most this many faces (largest first); ``None`` keeps all.
    margin : float, optional
        Border per side of :meth:`crop_faces`, as a fraction of the box side; ``None``: this
        detector's framing of FER2013 faces (:data:`FER2013_MARGIN`).
    """

    def __init__(
        self,
        method: str = "haar",
        model_path: str | os.PathLike[str] | None = None,
        min_size: int = 30,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        score_threshold: float = 0.7,
        max_faces: int | None = None,
        margin: float | None = None,
    ) -> None:
        if method not in _METHODS:
            raise FaceDetectorError(f"method={method!r} should be one of {list(_METHODS)}")
        if min_size < 8:
            raise FaceDetectorError(f"min_size={min_size} should be >= 8 pixels")
        if scale_factor <= 1.0:
            raise FaceDetectorError(f"scale_factor={scale_factor} should be > 1")
        if min_neighbors < 0:
            raise FaceDetectorError(f"min_neighbors={min_neighbors} should be >= 0")
        if not 0.0 <= score_threshold <= 1.0:
            raise FaceDetectorError(f"score_threshold={score_threshold} should lie in [0, 1]")
        if max_faces is not None and max_faces < 1:
            raise FaceDetectorError(f"max_faces={max_faces} should be >= 1 or None")
        if margin is not None and not 0.0 <= margin <= 1.0:
            raise FaceDetectorError(f"margin={margin} should lie in [0, 1]")
        self.method = method
        self.margin = crop_margin(method, margin)
        self.min_size = int(min_size)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.score_threshold = float(score_threshold)
        self.max_faces = max_faces
        if method == "haar":
            path = Path(model_path) if model_path else Path(cv2.data.haarcascades) / HAAR_CASCADE
            if not path.is_file():
                raise FaceDetectorError(f"Haar cascade file {path} not found")
            try:
                self._cascade = cv2.CascadeClassifier(str(path))
            except (cv2.error, SystemError) as error:  # OpenCV raises either on a bad XML
                raise FaceDetectorError(
                    f"Haar cascade file {path} could not be loaded: {error}"
                ) from None
            if self._cascade.empty():
                raise FaceDetectorError(f"Haar cascade file {path} could not be loaded")
            self._yunet = None
        else:
            path = Path(model_path) if model_path else YUNET_MODEL
            if not path.is_file():
                raise FaceDetectorError(f"YuNet model file {path} not found")
            try:
                self._yunet = cv2.FaceDetectorYN.create(
                    str(path), "", (320, 320), score_threshold=self.score_threshold
                )
            except cv2.error as error:
                raise FaceDetectorError(
                    f"YuNet model {path} could not be loaded: {error}"
                ) from None
            self._cascade = None
        self.model_path = str(path)

    def detect(self, image: np.ndarray, color_order: str = "rgb") -> list[DetectedFace]:
        """Faces in ``image``, largest first.

        Parameters
        ----------
        image : ndarray of shape (H, W), (H, W, 1) or (H, W, 3)
            uint8 (or float 0..255) frame; colour frames in ``color_order``.
        color_order : {"rgb", "bgr"}

        Raises
        ------
        clifer_edge.preprocessing.InvalidImageError
            If the image is empty, too small or large, of a wrong shape/dtype or non-finite.
        """
        if color_order not in ("rgb", "bgr"):
            raise ValueError(f"color_order={color_order!r} should be 'rgb' or 'bgr'")
        image = validate_image(image)
        pixels = image if image.dtype == np.uint8 else np.rint(image).astype(np.uint8)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        faces = (
            self._detect_haar(pixels, color_order)
            if self._cascade is not None
            else (self._detect_yunet(pixels, color_order))
        )
        faces.sort(key=lambda face: face.box.width * face.box.height, reverse=True)
        return faces if self.max_faces is None else faces[: self.max_faces]

    def crop_faces(
        self,
        image: np.ndarray,
        size: int = 48,
        channels: int = 1,
        color_order: str = "rgb",
    ) -> list[tuple[DetectedFace, np.ndarray]]:
        """Detect faces and return each with its model input, shape (size, size, channels),
        cropped with :attr:`margin`."""
        return [
            (
                face,
                preprocess_face(
                    image, size, channels, box=face.box, margin=self.margin, color_order=color_order
                ),
            )
            for face in self.detect(image, color_order=color_order)
        ]

    def _detect_haar(self, pixels: np.ndarray, color_order: str) -> list[DetectedFace]:
        """Haar cascade on the grey image (inputs already validated, uint8)."""
        if pixels.ndim == 3:
            code = cv2.COLOR_RGB2GRAY if color_order == "rgb" else cv2.COLOR_BGR2GRAY
            pixels = cv2.cvtColor(pixels, code)
        boxes, _, weights = self._cascade.detectMultiScale3(
            np.ascontiguousarray(pixels),
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        return [
            DetectedFace(FaceBox(int(x), int(y), int(w), int(h)), float(score))
            for (x, y, w, h), score in zip(boxes, np.ravel(weights), strict=True)
        ]

    def _detect_yunet(self, pixels: np.ndarray, color_order: str) -> list[DetectedFace]:
        """YuNet on a BGR frame (inputs already validated, uint8)."""
        if pixels.ndim == 2:
            bgr = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
        elif color_order == "rgb":
            bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        else:
            bgr = np.ascontiguousarray(pixels)
        height, width = bgr.shape[:2]
        self._yunet.setInputSize((width, height))
        _, rows = self._yunet.detect(bgr)
        faces = []
        for row in rows if rows is not None else []:
            x, y, w, h = (round(float(v)) for v in row[:4])
            x0, y0 = max(0, x), max(0, y)
            w, h = min(width, x + w) - x0, min(height, y + h) - y0
            if min(w, h) >= self.min_size:
                faces.append(DetectedFace(FaceBox(x0, y0, w, h), float(row[-1])))
        return faces
