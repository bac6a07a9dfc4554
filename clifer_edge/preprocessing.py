"""The one face preprocessing function shared by training, export and the robot.

Training, int8 calibration and on-robot inference must see faces prepared identically, or the
encoder's latents drift and the memories learn the wrong thing. Everything goes through
:func:`preprocess_face` (one face) or :func:`preprocess_faces` (a batch):

1. optionally crop a face box (square, with a margin, clipped to the image);
2. convert to the model's channel count (grayscale by default);
3. resize to the model's input size (area filter when shrinking, linear when enlarging);
4. scale grey levels 0..255 to [-1, 1], the range of the generator's tanh output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

#: Smallest image side (pixels) accepted as a face; smaller inputs carry no expression.
MIN_FACE_SIDE = 8
#: Largest image side accepted, to keep a bad message from exhausting the robot's memory.
MAX_IMAGE_SIDE = 8192


class InvalidImageError(ValueError):
    """An input image cannot be used as a face (empty, wrong shape or dtype, non-finite, ...)."""


@dataclass(frozen=True)
class FaceBox:
    """A face rectangle in pixel coordinates of the full image (x, y = top-left corner)."""

    x: int
    y: int
    width: int
    height: int


def validate_image(image: np.ndarray) -> np.ndarray:
    """Check that ``image`` is a usable picture and return it as a 2-D or 3-D array.

    Accepts uint8 grey levels, or floats on the same 0..255 scale; shapes (H, W), (H, W, 1) or
    (H, W, 3). A float image whose values all lie in 0..1 is refused as ambiguous: it is almost
    certainly scaled to 0..1 (read as 0..255 it would be black), so the caller must say so by
    scaling it (``image * 255``) or passing uint8.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise InvalidImageError(f"image is empty (shape {image.shape})")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise InvalidImageError(
            f"image shape {image.shape} should be (H, W), (H, W, 1) or (H, W, 3)"
        )
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise InvalidImageError(f"image dtype {image.dtype} should be uint8 or floating point")
    height, width = image.shape[:2]
    if min(height, width) < MIN_FACE_SIDE:
        raise InvalidImageError(
            f"image of {width}x{height} pixels is smaller than {MIN_FACE_SIDE}x{MIN_FACE_SIDE}"
        )
    if max(height, width) > MAX_IMAGE_SIDE:
        raise InvalidImageError(
            f"image of {width}x{height} pixels is larger than {MAX_IMAGE_SIDE} pixels a side"
        )
    if image.dtype != np.uint8:
        if not np.all(np.isfinite(image)):
            raise InvalidImageError("image contains NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 255.0:
            raise InvalidImageError(
                f"floating-point image values should lie in 0..255, got {low:.3g}..{high:.3g}"
            )
        if high <= 1.0:
            raise InvalidImageError(
                f"floating-point image values lie in {low:.3g}..{high:.3g}: ambiguous, floats are "
                "read on the 0..255 scale; multiply a 0..1 image by 255 or pass uint8"
            )
    return image


def square_crop(image: np.ndarray, box: FaceBox, margin: float = 0.1) -> np.ndarray:
    """Crop a square around ``box``, enlarged by ``margin`` of its side and clipped to the image."""
    height, width = image.shape[:2]
    side = max(box.width, box.height) * (1.0 + 2.0 * margin)
    cx = box.x + box.width / 2.0
    cy = box.y + box.height / 2.0
    x0 = round(max(0.0, cx - side / 2.0))
    y0 = round(max(0.0, cy - side / 2.0))
    x1 = round(min(float(width), cx + side / 2.0))
    y1 = round(min(float(height), cy + side / 2.0))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise InvalidImageError(f"face box {box} lies outside the {width}x{height} image")
    return image[y0:y1, x0:x1]


def preprocess_face(
    image: np.ndarray,
    size: int = 48,
    channels: int = 1,
    box: FaceBox | None = None,
    margin: float = 0.1,
    color_order: str = "rgb",
) -> np.ndarray:
    """Turn one face image into the encoder's input.

    Parameters
    ----------
    image : ndarray of shape (H, W), (H, W, 1) or (H, W, 3)
        uint8 grey levels (or floats on the 0..255 scale; see :func:`validate_image`). Colour
        images are in ``color_order``.
    size : int
        Side of the square model input.
    channels : {1, 3}
        Channels of the model input.
    box : FaceBox, optional
        Face rectangle to crop first; ``None`` means the image already is a face crop.
    margin : float
        Extra border around ``box``, as a fraction of its side.
    color_order : {"rgb", "bgr"}
        Channel order of colour inputs (OpenCV and ROS ``bgr8`` images are BGR).

    Returns
    -------
    ndarray of shape (size, size, channels), float32 in [-1, 1]
    """
    if channels not in (1, 3):
        raise ValueError(f"channels={channels} should be 1 or 3")
    if color_order not in ("rgb", "bgr"):
        raise ValueError(f"color_order={color_order!r} should be 'rgb' or 'bgr'")
    image = validate_image(image)
    if box is not None:
        image = square_crop(image, box, margin)
    pixels = image.astype(np.float32, copy=False)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if channels == 1 and pixels.ndim == 3:
        code = cv2.COLOR_RGB2GRAY if color_order == "rgb" else cv2.COLOR_BGR2GRAY
        pixels = cv2.cvtColor(pixels, code)
    elif channels == 3 and pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    elif channels == 3 and color_order == "bgr":
        pixels = pixels[:, :, ::-1]
    height, width = pixels.shape[:2]
    if (height, width) != (size, size):
        shrinking = height > size or width > size
        pixels = cv2.resize(
            np.ascontiguousarray(pixels),
            (size, size),
            interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
        )
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return (pixels / 127.5 - 1.0).astype(np.float32)


def preprocess_faces(
    images: np.ndarray | Sequence[np.ndarray],
    size: int = 48,
    channels: int = 1,
    color_order: str = "rgb",
) -> np.ndarray:
    """Batch version of :func:`preprocess_face` for already-cropped faces.

    Returns
    -------
    ndarray of shape (n_faces, size, size, channels), float32 in [-1, 1]
    """
    if len(images) == 0:
        raise InvalidImageError("no images given")
    out = np.empty((len(images), size, size, channels), dtype=np.float32)
    for i, image in enumerate(images):
        try:
            out[i] = preprocess_face(image, size, channels, color_order=color_order)
        except InvalidImageError as error:
            raise InvalidImageError(f"image {i}: {error}") from None
    return out


def to_uint8(faces: np.ndarray) -> np.ndarray:
    """Map model images in [-1, 1] back to uint8 grey levels (for grids and ROS messages)."""
    return np.clip(np.rint((np.asarray(faces, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(
        np.uint8
    )
