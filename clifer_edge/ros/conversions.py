"""Between ROS messages and the runtime: images in, expressions out. Imports no rclpy.

The node receives ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` messages from cameras
and ROS4HRI, and publishes ``clifer_msgs/Expression`` (and ``hri_msgs/Expression``). cv_bridge is
not on PyPI and would drag OpenCV's C++ build onto the robot, so the few encodings a face pipeline
meets are decoded here, with every field of the message checked first: a bad message must produce
a clear error, never a crash or an unbounded allocation.
"""

from __future__ import annotations

import re
from typing import Any

import cv2
import numpy as np

from clifer_edge.labels import canonical_label, to_ros4hri


class BadImageMessage(ValueError):
    """A ROS image message that cannot be turned into a picture (the message says why)."""


#: ``sensor_msgs/Image`` encoding -> (channels, colour order of the decoded array).
IMAGE_ENCODINGS: dict[str, tuple[int, str]] = {
    "mono8": (1, "rgb"),
    "8UC1": (1, "rgb"),
    "rgb8": (3, "rgb"),
    "bgr8": (3, "bgr"),
    "8UC3": (3, "bgr"),  # OpenCV's default order
    "rgba8": (4, "rgb"),
    "bgra8": (4, "bgr"),
    "8UC4": (4, "bgr"),
}

#: Circumplex position (valence, arousal) of each canonical expression, both in [-1, 1], after
#: Russell's circumplex model of affect (J. Pers. Soc. Psychol. 39(6), 1980) as placed in the
#: AffectNet annotation guidelines. Labels taught on the robot that are not listed here contribute
#: nothing (their affect is unknown), so valence and arousal shrink towards 0 as their score grows.
AFFECT: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happiness": (0.8, 0.5),
    "surprise": (0.3, 0.85),
    "anger": (-0.6, 0.75),
    "fear": (-0.65, 0.8),
    "sadness": (-0.7, -0.4),
    "disgust": (-0.7, 0.35),
    "contempt": (-0.55, 0.3),
}

_ID_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def image_to_array(msg: Any, max_side: int) -> tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/Image`` into a uint8 array and its colour order.

    Parameters
    ----------
    msg : sensor_msgs.msg.Image
        Any object with ``height``, ``width``, ``encoding``, ``step``, ``is_bigendian``, ``data``.
    max_side : int
        Largest accepted image side in pixels; larger images are refused before any copy.

    Returns
    -------
    image : ndarray of shape (H, W) or (H, W, 3), uint8
    color_order : {"rgb", "bgr"}

    Raises
    ------
    BadImageMessage
        Unsupported encoding, zero or huge size, a ``step`` smaller than a row, or a ``data`` length
        that does not match ``step * height``.
    """
    encoding = str(msg.encoding)
    if encoding not in IMAGE_ENCODINGS:
        raise BadImageMessage(
            f"unsupported image encoding {encoding!r}; use one of {sorted(IMAGE_ENCODINGS)}"
        )
    channels, color_order = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise BadImageMessage(f"image is empty: {width}x{height} pixels")
    if max(height, width) > max_side:
        raise BadImageMessage(f"image of {width}x{height} pixels exceeds max_image_side={max_side}")
    row = width * channels
    if step < row:
        raise BadImageMessage(
            f"step={step} is smaller than one row of {width} px x {channels} channels = {row} bytes"
        )
    data = msg.data
    size = len(data)
    if size != step * height:
        raise BadImageMessage(
            f"data holds {size} bytes but step x height = {step} x {height} = {step * height}"
        )
    buffer = np.frombuffer(
        bytes(data) if not isinstance(data, (bytes, bytearray)) else data, dtype=np.uint8
    )
    image = buffer.reshape(height, step)[:, :row].reshape(height, width, channels)
    if channels == 1:
        return np.ascontiguousarray(image[:, :, 0]), color_order
    if channels == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image), color_order


def compressed_to_array(msg: Any, max_side: int) -> tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) into a BGR or grey uint8 array.

    Raises
    ------
    BadImageMessage
        Empty or undecodable data, or an image larger than ``max_side``.
    """
    data = msg.data
    if len(data) == 0:
        raise BadImageMessage(f"compressed image ({msg.format!r}) has no data")
    buffer = np.frombuffer(
        bytes(data) if not isinstance(data, (bytes, bytearray)) else data, dtype=np.uint8
    )
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadImageMessage(f"cannot decode {len(data)} bytes of compressed image {msg.format!r}")
    if image.dtype != np.uint8:
        raise BadImageMessage(f"compressed image decodes to {image.dtype}, expected 8-bit")
    if max(image.shape[:2]) > max_side:
        raise BadImageMessage(
            f"image of {image.shape[1]}x{image.shape[0]} pixels exceeds max_image_side={max_side}"
        )
    if image.ndim == 3 and image.shape[2] == 4:
        image = np.ascontiguousarray(image[:, :, :3])
    return image, "bgr"


def affect(scores: dict[str, float]) -> tuple[float, float]:
    """Valence and arousal in [-1, 1] as the score-weighted mean of the :data:`AFFECT` positions."""
    valence = arousal = 0.0
    for label, score in scores.items():
        v, a = AFFECT.get(canonical_label(label), (0.0, 0.0))
        valence += float(score) * v
        arousal += float(score) * a
    return float(np.clip(valence, -1.0, 1.0)), float(np.clip(arousal, -1.0, 1.0))


def expression_fields(result: Any, face_id: str) -> dict[str, Any]:
    """The fields of a ``clifer_msgs/Expression`` (less the header) for one runtime result.

    ``result`` is a :class:`clifer_edge.runtime.FaceResult`; labels are sorted by name so that the
    arrays have the same order in every message of a person.
    """
    labels = sorted(result.scores)
    valence, arousal = affect(result.scores)
    return {
        "expression": to_ros4hri(result.label),
        "valence": valence,
        "arousal": arousal,
        "confidence": float(np.clip(result.confidence, 0.0, 1.0)),
        "person_id": str(result.person_id),
        "face_id": face_id,
        "labels": labels,
        "scores": [float(result.scores[label]) for label in labels],
        "memory": str(result.memory),
        "learned": bool(result.learned),
    }


def is_valid_id(name: str) -> bool:
    r"""Whether a ROS4HRI face/person id is usable as a topic name token (``[A-Za-z]\w*``)."""
    return bool(_ID_PATTERN.match(name))
