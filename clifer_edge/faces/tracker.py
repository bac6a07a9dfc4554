"""Face tracking: one unique, never reused id per face while it stays in view (ROS4HRI face ids).

REP-155 face ids name one continuous sighting of a face: a face that stays in view keeps its id
from frame to frame, a face that leaves and comes back gets a new one, and no id is ever handed out
twice. :class:`FaceTracker` gives such ids with a small IoU tracker, and saves detection time the
way real-time face pipelines do: the detector runs on a downscaled copy of every
``detect_every``-th frame only; in the frames between, each face keeps the box of its last
detection (faces barely move in a tenth of a second at 30 fps).
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from clifer_edge.faces.detector import FaceDetector
from clifer_edge.preprocessing import FaceBox


@dataclass
class TrackedFace:
    """One face in view: its id, its latest box (full-frame pixels) and detector score."""

    face_id: str
    box: FaceBox
    score: float
    #: Monotonic time of the last detection that matched this face.
    last_seen: float = field(default=0.0, compare=False)
    #: Consecutive detection passes that did not find this face.
    missed: int = field(default=0, compare=False)


def iou(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes, in [0, 1]."""
    w = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    h = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / float(a.width * a.height + b.width * b.height - inter)


class FaceTracker:
    """Detect faces every few frames and keep one id per face across frames.

    Parameters
    ----------
    detector : FaceDetector
    detect_every : int
        Run the detector on every n-th frame (1 = every frame); faces keep their boxes between.
    detect_width : int
        Frames wider than this are downscaled to this width before detection (0 = never).
    iou_threshold : float
        A detection continues a face whose last box overlaps it at least this much.
    lost_after_s : float
        A face that a detection pass missed and that was not re-detected for this long has left
        (its id is never used again); when no frame at all arrives for this long, every face has.
        A slow or starved frame stream does not make faces flicker: a face found by the latest
        detection pass stays, however long ago that pass was.
    clock : callable() -> float
        Time source (seconds); tests and simulations may pass their own.
    """

    def __init__(
        self,
        detector: FaceDetector,
        detect_every: int = 3,
        detect_width: int = 640,
        iou_threshold: float = 0.3,
        lost_after_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every={detect_every} should be >= 1")
        if detect_width < 0:
            raise ValueError(f"detect_width={detect_width} should be >= 0 (0 = full size)")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold={iou_threshold} should lie in (0, 1]")
        if lost_after_s <= 0:
            raise ValueError(f"lost_after_s={lost_after_s} should be > 0")
        self.detector = detector
        self.detect_every = int(detect_every)
        self.detect_width = int(detect_width)
        self.iou_threshold = float(iou_threshold)
        self.lost_after_s = float(lost_after_s)
        self.clock = clock
        # Ids: a random prefix per tracker (so a restarted node does not repeat the previous
        # run's ids) and a counter (so this one never repeats its own). Always [a-z][a-z0-9]*.
        self._prefix = "f" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4))
        self._next_id = 0
        self._frame = 0
        self._last_frame = clock()
        self.faces: list[TrackedFace] = []

    def update(self, image: np.ndarray, color_order: str = "rgb") -> list[TrackedFace]:
        """Track the faces of the next frame; returns those in view, largest first.

        On frames without detection the faces keep their last boxes; faces that detection missed
        and that were not re-detected for ``lost_after_s`` are dropped. Raises what
        :meth:`FaceDetector.detect` raises.
        """
        self._last_frame = now = self.clock()
        if self._frame % self.detect_every == 0:
            self._match(self._detect(image, color_order))
            self.faces = [
                f for f in self.faces if f.missed == 0 or now - f.last_seen <= self.lost_after_s
            ]
        self._frame += 1
        return list(self.faces)

    def expire(self) -> list[TrackedFace]:
        """Between frames (e.g. from a timer): when no frame arrived for ``lost_after_s``, every
        face has left. Returns the faces still in view."""
        if self.clock() - self._last_frame > self.lost_after_s:
            self.faces = []
        return list(self.faces)

    def _detect(self, image: np.ndarray, color_order: str) -> list[tuple[FaceBox, float]]:
        height, width = image.shape[:2]
        scale = 1.0
        small = image
        if self.detect_width and width > self.detect_width:
            scale = width / self.detect_width
            size = (self.detect_width, max(1, round(height / scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        found = []
        for face in self.detector.detect(small, color_order=color_order):
            b = face.box
            x, y = round(b.x * scale), round(b.y * scale)
            w = min(round(b.width * scale), width - x)
            h = min(round(b.height * scale), height - y)
            if w > 0 and h > 0:
                found.append((FaceBox(x, y, w, h), face.score))
        return found

    def _match(self, detections: list[tuple[FaceBox, float]]) -> None:
        """Greedy IoU association (best pairs first); unmatched detections start new faces."""
        now = self.clock()
        pairs = sorted(
            (
                (iou(face.box, box), i, j)
                for i, face in enumerate(self.faces)
                for j, (box, _) in enumerate(detections)
            ),
            reverse=True,
        )
        used_faces: set[int] = set()
        used_detections: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < self.iou_threshold:
                break
            if i in used_faces or j in used_detections:
                continue
            used_faces.add(i)
            used_detections.add(j)
            face = self.faces[i]
            face.box, face.score = detections[j]
            face.last_seen, face.missed = now, 0
        for i, face in enumerate(self.faces):
            if i not in used_faces:
                face.missed += 1
        for j, (box, score) in enumerate(detections):
            if j not in used_detections:
                self._next_id += 1
                self.faces.append(TrackedFace(f"{self._prefix}{self._next_id}", box, score, now))
        self.faces.sort(key=lambda f: f.box.width * f.box.height, reverse=True)
