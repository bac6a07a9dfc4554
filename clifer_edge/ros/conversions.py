"""Between ROS messages and the runtime: images in, expressions out. Imports no rclpy.

The node receives ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` messages from cameras
and ROS4HRI, and publishes ``hri_msgs/Expression`` (per face) and ``clifer_msgs/Expression`` (the
full answer). cv_bridge is not on PyPI and would drag OpenCV's C++ build onto the robot, so the few
encodings a face pipeline meets are decoded here, with every field of the message checked first
(for compressed images: the size in the PNG/JPEG header, before decoding): a bad message must
produce a clear error, never a crash or an unbounded allocation.
"""

from __future__ import annotations

import re
from typing import Any

import cv2
import numpy as np

from clifer_edge.labels import ROS4HRI_EXPRESSIONS, canonical_label


class BadImageMessage(ValueError):
    """A ROS image message that cannot be turned into a picture (the message says why).

    ``kind`` names the class of the problem, counted separately in ``/diagnostics``: ``encoding``,
    ``size``, ``step``, ``data``, ``format`` or ``decode``.
    """

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


#: Most padding a ``sensor_msgs/Image`` row may carry beyond its pixels: generous for any real
#: alignment, but a tiny image cannot claim a huge ``step`` (and so make the node copy it).
MAX_ROW_PADDING = 1024
#: Longest ROS4HRI id accepted (face and person ids are a few characters in practice).
MAX_ID_LENGTH = 64


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
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (baseline, progressive, lossless, ...; not DHT/JPG/DAC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


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
        Unsupported encoding, zero or huge size, a ``step`` smaller than a row or more than
        :data:`MAX_ROW_PADDING` bytes longer, or a ``data`` length other than ``step * height``.
    """
    encoding = str(msg.encoding)
    if encoding not in IMAGE_ENCODINGS:
        raise BadImageMessage(
            "encoding",
            f"unsupported image encoding {encoding!r}; use one of {sorted(IMAGE_ENCODINGS)}",
        )
    channels, color_order = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise BadImageMessage("size", f"image is empty: {width}x{height} pixels")
    if max(height, width) > max_side:
        raise BadImageMessage(
            "size", f"image of {width}x{height} pixels exceeds max_image_side={max_side}"
        )
    row = width * channels
    if step < row:
        raise BadImageMessage(
            "step",
            f"step={step} is smaller than one row of {width} px x {channels} channels = {row} "
            "bytes",
        )
    if step > row + MAX_ROW_PADDING:
        raise BadImageMessage(
            "step",
            f"step={step} exceeds one row of {row} bytes by more than {MAX_ROW_PADDING} bytes of "
            "padding",
        )
    data = msg.data
    size = len(data)
    if size != step * height:
        raise BadImageMessage(
            "data",
            f"data holds {size} bytes but step x height = {step} x {height} = {step * height}",
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

    Only PNG and JPEG (what ``image_transport`` sends) are accepted: their header gives the size,
    which is checked against ``max_side`` before anything is decoded, so a small file that claims
    a huge picture never allocates it.

    Raises
    ------
    BadImageMessage
        Empty data, a format other than PNG/JPEG, a header that gives no size, an image larger than
        ``max_side``, or data that does not decode.
    """
    data = msg.data
    if len(data) == 0:
        raise BadImageMessage("data", f"compressed image ({msg.format!r}) has no data")
    raw = bytes(data) if not isinstance(data, (bytes, bytearray)) else data
    width, height = compressed_size(raw)
    if max(width, height) > max_side:
        raise BadImageMessage(
            "size", f"image of {width}x{height} pixels exceeds max_image_side={max_side}"
        )
    image = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadImageMessage(
            "decode", f"cannot decode {len(raw)} bytes of compressed image {msg.format!r}"
        )
    if image.dtype != np.uint8:
        raise BadImageMessage(
            "decode", f"compressed image decodes to {image.dtype}, expected 8-bit"
        )
    if image.shape[1] != width or image.shape[0] != height:
        raise BadImageMessage(
            "decode",
            f"compressed image decodes to {image.shape[1]}x{image.shape[0]} pixels, its header "
            f"says {width}x{height}",
        )
    if image.ndim == 3 and image.shape[2] == 4:
        image = np.ascontiguousarray(image[:, :, :3])
    return image, "bgr"


def compressed_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header of PNG or JPEG data, without decoding the pixels.

    Raises
    ------
    BadImageMessage
        If ``data`` is neither PNG nor JPEG, or its header is cut short or gives no size.
    """
    if data.startswith(_PNG_SIGNATURE):
        # The first chunk is IHDR: length (4), type (4), width (4), height (4), big-endian.
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise BadImageMessage("format", "PNG data without an IHDR header")
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                raise BadImageMessage("format", f"JPEG data damaged at byte {pos}")
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
                pos += 2
                continue
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if marker in _JPEG_SOF:
                if pos + 9 > len(data):
                    break
                height = int.from_bytes(data[pos + 5 : pos + 7], "big")
                width = int.from_bytes(data[pos + 7 : pos + 9], "big")
                return width, height
            if marker == 0xDA or length < 2:  # image data before any frame header
                break
            pos += 2 + length
        raise BadImageMessage("format", "JPEG data without a frame header (SOF) giving its size")
    raise BadImageMessage(
        "format", "compressed image is neither PNG nor JPEG (only those are accepted)"
    )


def affect(scores: dict[str, float]) -> tuple[float, float]:
    """Valence and arousal in [-1, 1] as the score-weighted mean of the :data:`AFFECT` positions."""
    valence = arousal = 0.0
    for label, score in scores.items():
        v, a = AFFECT.get(canonical_label(label), (0.0, 0.0))
        valence += float(score) * v
        arousal += float(score) * a
    return float(np.clip(valence, -1.0, 1.0)), float(np.clip(arousal, -1.0, 1.0))


def hri_expression(label: str) -> str:
    """The ``hri_msgs/Expression.expression`` value of a label: its ROS4HRI constant, or ``""``.

    ``hri_msgs/Expression.expression`` must be one of the message's constants, so a label without
    one (``contempt``, a label taught on the robot, ``unknown``) leaves it empty; valence, arousal
    and confidence still describe the face, and the label itself is on the clifer topic.
    """
    try:
        return ROS4HRI_EXPRESSIONS.get(canonical_label(label), "")
    except ValueError:
        return ""


def expression_fields(result: Any, face_id: str) -> dict[str, Any]:
    """The fields of a ``clifer_msgs/Expression`` (less the header) for one runtime result.

    ``result`` is a :class:`clifer_edge.runtime.FaceResult`; labels are sorted by name so that the
    arrays have the same order in every message of a person. The first five fields are exactly
    those of the face's ``hri_msgs/Expression``.
    """
    labels = sorted(result.scores)
    valence, arousal = affect(result.scores)
    return {
        "expression": hri_expression(result.label),
        "label": str(result.label),
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


def normalized_roi(box: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of a pixel box in a ``width`` x ``height`` frame, each in [0, 1]
    (``hri_msgs/NormalizedRegionOfInterest2D``)."""
    return (
        float(np.clip(box.x / width, 0.0, 1.0)),
        float(np.clip(box.y / height, 0.0, 1.0)),
        float(np.clip((box.x + box.width) / width, 0.0, 1.0)),
        float(np.clip((box.y + box.height) / height, 0.0, 1.0)),
    )


def is_valid_id(name: Any) -> bool:
    r"""Whether a ROS4HRI face/person id is usable as a topic name token: ``[A-Za-z]\w*``, at
    most :data:`MAX_ID_LENGTH` characters."""
    if not isinstance(name, str) or len(name) > MAX_ID_LENGTH:
        return False
    return _ID_PATTERN.fullmatch(name) is not None
