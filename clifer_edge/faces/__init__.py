"""Face detection and cropping: full camera frames -> model-ready face crops.

Two detectors behind one class, :class:`FaceDetector`:

- ``"haar"`` (default): the frontal-face Haar cascade that OpenCV 4.x ships in
  ``cv2.data.haarcascades``; works offline with no model download (OpenCV 5 dropped
  ``CascadeClassifier``, hence the ``<5`` pin).
- ``"yunet"``: OpenCV's ``FaceDetectorYN`` with a YuNet ONNX model file the user supplies
  (more robust to pose and light; not bundled).

Crops go through the one shared :func:`clifer_edge.preprocessing.preprocess_face`, so faces seen
by the robot are prepared exactly as in training.
"""

from __future__ import annotations

from clifer_edge.faces.detector import DetectedFace, FaceDetector, FaceDetectorError

__all__ = ["DetectedFace", "FaceDetector", "FaceDetectorError"]
