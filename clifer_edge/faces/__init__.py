"""Face detection and cropping: full camera frames -> model-ready face crops.

Two detectors behind one class, :class:`FaceDetector`:

- ``"yunet"`` (the runtime's default): OpenCV's ``FaceDetectorYN`` with the bundled YuNet ONNX
  model (Apache-2.0, ``faces/yunet/``); about 3x faster than Haar here and more robust to pose.
- ``"haar"``: the frontal-face Haar cascade that OpenCV 4.x ships in ``cv2.data.haarcascades``
  (OpenCV 5 dropped ``CascadeClassifier``, hence the ``<5`` pin).

:class:`FaceTracker` keeps one never-reused id per face across frames (ROS4HRI face ids) and runs
the detector only every few frames; :func:`draw_faces` draws the live view.

Crops go through the one shared :func:`clifer_edge.preprocessing.preprocess_face`, so faces seen
by the robot are prepared exactly as in training.
"""

from __future__ import annotations

from clifer_edge.faces.annotate import FaceAnnotation, draw_faces, to_bgr
from clifer_edge.faces.detector import DetectedFace, FaceDetector, FaceDetectorError
from clifer_edge.faces.tracker import FaceTracker, TrackedFace

__all__ = [
    "DetectedFace",
    "FaceAnnotation",
    "FaceDetector",
    "FaceDetectorError",
    "FaceTracker",
    "TrackedFace",
    "draw_faces",
    "to_bgr",
]
