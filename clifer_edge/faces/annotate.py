"""The live view: a frame with each face's box, ids and recognised expression drawn on it.

Shared by the ROS node (``~/annotated_image``) and ``clifer-edge run --show / --annotate-out``,
so a person watching either sees the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from clifer_edge.preprocessing import FaceBox

#: Box colour (BGR) per answering memory: which memory answered is visible at a glance.
MEMORY_COLOURS: dict[str, tuple[int, int, int]] = {
    "episodic": (80, 200, 60),
    "semantic": (230, 160, 40),
    "fallback": (60, 170, 250),
}
_OTHER = (200, 200, 200)


@dataclass(frozen=True)
class FaceAnnotation:
    """What is drawn for one face."""

    box: FaceBox
    face_id: str
    person_id: str
    label: str
    confidence: float
    memory: str


def to_bgr(image: np.ndarray, color_order: str) -> np.ndarray:
    """A BGR uint8 copy of a grey, RGB or BGR uint8 frame (for drawing and video files)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if color_order == "rgb":
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return image.copy()


def draw_faces(frame_bgr: np.ndarray, faces: list[FaceAnnotation]) -> np.ndarray:
    """Draw every face onto ``frame_bgr`` (in place) and return it.

    Each face gets its box, coloured by the answering memory (see :data:`MEMORY_COLOURS`), a first
    line ``label confidence`` and a second line ``face_id / person_id / memory``.
    """
    height, width = frame_bgr.shape[:2]
    scale = max(0.35, min(width, height) / 900.0)
    thickness = max(1, round(scale * 2))
    for face in faces:
        b = face.box
        colour = MEMORY_COLOURS.get(face.memory, _OTHER)
        cv2.rectangle(frame_bgr, (b.x, b.y), (b.x + b.width, b.y + b.height), colour, thickness)
        lines = [
            f"{face.label} {face.confidence:.2f}",
            f"{face.face_id} / {face.person_id or '-'} / {face.memory}",
        ]
        y = b.y + b.height
        for line in lines:
            (tw, th), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            top = min(y, height - th - base - 2)
            left = max(0, min(b.x, width - tw - 4))  # keep the text inside the frame
            cv2.rectangle(frame_bgr, (left, top), (left + tw + 4, top + th + base + 2), colour, -1)
            cv2.putText(
                frame_bgr,
                line,
                (left + 2, top + th + 1),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                (0, 0, 0),
                thickness,
                cv2.LINE_AA,
            )
            y = top + th + base + 2
    return frame_bgr
