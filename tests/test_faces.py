"""Face detection on real JAFFE full-frame photos, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_edge.datasets import load_npz
from clifer_edge.faces import DetectedFace, FaceDetector, FaceDetectorError, FaceTracker
from clifer_edge.faces.tracker import iou
from clifer_edge.preprocessing import InvalidImageError


@pytest.fixture(scope="module")
def jaffe(data_dir):
    return load_npz(data_dir / "jaffe.npz")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _one_face_rate(detector: FaceDetector, images: np.ndarray) -> float:
    found = [len(detector.detect(image)) == 1 for image in images]
    rate = float(np.mean(found))
    print(f"\none face found in {sum(found)}/{len(found)} JAFFE frames ({rate:.1%})")
    return rate


def test_haar_finds_one_face_in_jaffe_slice(detector, jaffe):
    assert _one_face_rate(detector, jaffe.images[::5]) >= 0.95


@pytest.mark.slow
def test_haar_finds_one_face_in_all_jaffe(detector, jaffe):
    assert _one_face_rate(detector, jaffe.images) >= 0.97


def test_face_box_is_plausible_and_crop_is_model_ready(detector, jaffe):
    image = jaffe.images[0]
    faces = detector.detect(image)
    assert len(faces) == 1 and isinstance(faces[0], DetectedFace)
    box = faces[0].box
    width = image.shape[1]
    # A JAFFE portrait's face fills roughly a third to two thirds of the 256 px frame, centred.
    assert width / 4 < box.width < 0.9 * width
    assert abs(box.x + box.width / 2 - width / 2) < width / 4
    ((face, crop),) = detector.crop_faces(image, size=48, channels=1)
    assert face == faces[0]
    assert crop.shape == (48, 48, 1) and crop.dtype == np.float32
    assert -1.0 <= crop.min() < crop.max() <= 1.0


def test_colour_frames_and_orders_give_the_same_box(detector, jaffe):
    grey = jaffe.images[3]
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    boxes = [detector.detect(grey)[0].box, detector.detect(rgb)[0].box]
    boxes.append(detector.detect(rgb, color_order="bgr")[0].box)
    assert boxes[0] == boxes[1] == boxes[2]
    ((_, crop),) = detector.crop_faces(rgb, size=64, channels=3)
    assert crop.shape == (64, 64, 3)


def test_faces_sorted_largest_first_and_capped(jaffe):
    # Two portraits side by side, the right one shrunk: two faces, the bigger listed first.
    left = jaffe.images[0]
    small = left[::2, ::2]
    right = np.full_like(left, 128)
    right[64:192, 64:192] = small
    frame = np.concatenate([left, right], axis=1)
    faces = FaceDetector().detect(frame)
    assert len(faces) == 2
    assert faces[0].box.width > faces[1].box.width and faces[0].box.x < 256 <= faces[1].box.x
    assert len(FaceDetector(max_faces=1).detect(frame)) == 1


def test_blank_frame_has_no_face(detector):
    assert detector.detect(np.full((240, 320), 127, dtype=np.uint8)) == []


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 0), dtype=np.uint8), "empty"),
        (np.zeros((1, 1), dtype=np.uint8), "smaller"),
        (np.zeros((64, 64), dtype=np.int32), "dtype"),
        (np.zeros((64, 64, 4), dtype=np.uint8), "shape"),
        (np.full((64, 64), np.nan, dtype=np.float32), "NaN"),
        ([[0, 1], [2, 3]], "numpy array"),
    ],
)
def test_bad_images_raise_clear_errors(detector, image, message):
    with pytest.raises(InvalidImageError, match=message):
        detector.detect(image)


def test_bad_detector_settings_raise(tmp_path):
    with pytest.raises(FaceDetectorError, match="method"):
        FaceDetector(method="mtcnn")
    with pytest.raises(FaceDetectorError, match="not found"):
        FaceDetector(method="yunet", model_path=tmp_path / "missing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(FaceDetectorError, match="could not be loaded"):
        FaceDetector(method="yunet", model_path=broken)
    broken_xml = tmp_path / "broken.xml"
    broken_xml.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(FaceDetectorError, match="could not be loaded"):
        FaceDetector(model_path=broken_xml)
    with pytest.raises(FaceDetectorError, match="min_size"):
        FaceDetector(min_size=2)


def test_bundled_yunet_finds_one_face_in_jaffe_slice(jaffe):
    assert _one_face_rate(FaceDetector("yunet"), jaffe.images[::8]) == 1.0


def test_runtime_config_builds_the_robots_detector_with_overrides():
    from clifer_edge.faces.detector import FER2013_MARGIN
    from clifer_edge.runtime.config import FacesConfig

    faces = FacesConfig(max_faces=2)
    robot = faces.build_detector()
    assert (robot.method, robot.margin, robot.max_faces) == ("yunet", FER2013_MARGIN["yunet"], 2)
    haar = faces.build_detector(method="haar")
    assert (haar.method, haar.margin) == ("haar", FER2013_MARGIN["haar"])
    assert faces.build_detector(method="haar", margin=0.3).margin == 0.3
    with pytest.raises(FaceDetectorError, match="margin"):
        faces.build_detector(margin=2.0)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _scene(jaffe, positions: list[int], width: int = 900) -> np.ndarray:
    """A wide grey frame with JAFFE photos pasted at the given x positions."""
    frame = np.full((256, width), 128, np.uint8)
    for i, x in enumerate(positions):
        frame[:, x : x + 256] = jaffe.images[i * 20]
    return frame


def test_tracker_keeps_ids_while_faces_stay_and_never_reuses_them(jaffe):
    clock = _Clock()
    tracker = FaceTracker(
        FaceDetector("yunet"), detect_every=2, detect_width=640, lost_after_s=0.5, clock=clock
    )
    two = _scene(jaffe, [0, 600])
    ids = set()
    for _ in range(6):  # faces stay: the same two ids, detection on every 2nd (downscaled) frame
        faces = tracker.update(two)
        clock.now += 0.033
        ids.add(tuple(sorted(f.face_id for f in faces)))
    assert len(ids) == 1 and len(next(iter(ids))) == 2
    first = dict(zip(sorted(next(iter(ids))), "ab", strict=True))
    # Boxes come back in full-frame pixels although detection ran on a 640-wide copy.
    left = min(tracker.faces, key=lambda f: f.box.x)
    assert 0 <= left.box.x < 128 and 64 <= left.box.width <= 256
    # A small move keeps the id (IoU association).
    moved = tracker.update(_scene(jaffe, [12, 600]))
    assert {f.face_id for f in moved} == set(first)
    # One face leaves: it stays listed for lost_after_s, then goes.
    one = _scene(jaffe, [600])
    for _ in range(4):
        clock.now += 0.2
        remaining = tracker.update(one)
    assert len(remaining) == 1
    # It comes back: a new id, never one used before.
    clock.now += 0.1
    back = tracker.update(_scene(jaffe, [0, 600]))
    back = tracker.update(_scene(jaffe, [0, 600]))
    assert len(back) == 2 and not {f.face_id for f in back} <= set(first)
    assert len({f.face_id for f in back} | set(first)) == 3
    # A slow (or starved) stream: frames 2 s apart, the faces stay and keep their ids.
    kept = {f.face_id for f in back}
    for _ in range(4):
        clock.now += 2.0
        assert {f.face_id for f in tracker.update(_scene(jaffe, [0, 600]))} == kept
    # No frame for longer than lost_after_s: everything expires even without detections.
    assert tracker.expire() == list(tracker.faces)
    clock.now += 1.0
    assert tracker.expire() == []


def test_iou_of_boxes():
    from clifer_edge.preprocessing import FaceBox

    assert iou(FaceBox(0, 0, 10, 10), FaceBox(0, 0, 10, 10)) == 1.0
    assert iou(FaceBox(0, 0, 10, 10), FaceBox(20, 0, 10, 10)) == 0.0
    assert iou(FaceBox(0, 0, 10, 10), FaceBox(5, 0, 10, 10)) == pytest.approx(50 / 150)
