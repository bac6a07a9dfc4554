"""Run the expression runtime on a video file, a camera or a folder of images.

Prints one line per face (or one JSON object per line with ``--json``). With ``--label`` every
face is also learned as that expression for ``--person``; a label outside the known expressions
(a new class) needs ``--new-label``. When no face has been seen for the idle timeout, imagination
runs between frames. Memories are saved on exit (also on Ctrl-C), in the folder printed first.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from clifer_edge.labels import BASIC_EXPRESSIONS, EXTRA_EXPRESSIONS, canonical_label
from clifer_edge.models import CalibrationError, ModelFileError
from clifer_edge.preprocessing import InvalidImageError
from clifer_edge.runtime.config import load_config
from clifer_edge.runtime.runtime import ExpressionRuntime, FaceResult

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="video file")
    source.add_argument("--camera", type=int, help="camera index (OpenCV)")
    source.add_argument("--images", help="folder of images (sorted by name)")
    parser.add_argument("--person", help="person id of the faces (default: by persons.mode)")
    parser.add_argument("--label", help="learn every face as this expression")
    parser.add_argument(
        "--new-label",
        action="store_true",
        help="accept a --label that is not one of the known expressions (teach a new class)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--cropped", action="store_true", help="images are already face crops (no detection)"
    )
    parser.add_argument("--config", help="runtime YAML (default: the shipped default)")
    parser.add_argument("--memory-dir", help="override memory.directory")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")


def check_label(label: str, new_label: bool) -> str:
    """The canonical spelling of ``--label``.

    Raises
    ------
    ValueError
        If the label is empty, or not a known expression and ``new_label`` is not set (with the
        closest known expression as a suggestion: a typo must not become a new class).
    """
    canonical = canonical_label(label)
    known = (*BASIC_EXPRESSIONS, *EXTRA_EXPRESSIONS)
    if canonical in known or new_label:
        return canonical
    close = difflib.get_close_matches(canonical, known, n=1)
    suggestion = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(
        f"--label {label!r} is not a known expression ({', '.join(known)}): {suggestion}"
        "to teach a new expression, add --new-label"
    )


def image_files(folder: Path) -> list[Path]:
    """The images of ``--images`` (sorted by name).

    Raises
    ------
    ValueError
        If ``folder`` is not a folder or holds no image file.
    """
    if not folder.is_dir():
        raise ValueError(f"--images {folder}: not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def frames(args: argparse.Namespace) -> Iterator[tuple[str, np.ndarray | None]]:
    """(name, BGR frame or None if unreadable) from the chosen source."""
    if args.images is not None:
        for path in image_files(Path(args.images)):
            yield path.name, cv2.imread(str(path), cv2.IMREAD_COLOR)
        return
    capture = cv2.VideoCapture(args.video if args.video is not None else args.camera)
    if not capture.isOpened():
        raise SystemExit(f"error: cannot open {args.video or f'camera {args.camera}'}")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield str(index), frame
            index += 1
    finally:
        capture.release()


def format_result(frame: str, result: FaceResult, as_json: bool) -> str:
    """One output line for one face."""
    box = result.box
    box_list = None if box is None else [box.x, box.y, box.width, box.height]
    if as_json:
        return json.dumps(
            {
                "frame": frame,
                "person_id": result.person_id,
                "label": result.label,
                "confidence": round(result.confidence, 4),
                "scores": {k: round(v, 4) for k, v in result.scores.items()},
                "memory": result.memory,
                "box": box_list,
                "learned": result.learned,
            }
        )
    where = "" if box_list is None else " box=" + ",".join(map(str, box_list))
    return (
        f"frame={frame} person={result.person_id} expression={result.label} "
        f"confidence={result.confidence:.2f} memory={result.memory}{where}"
        + (" learned" if result.learned else "")
    )


def run(args: argparse.Namespace) -> int:
    try:
        label = None if args.label is None else check_label(args.label, args.new_label)
        if args.max_frames is not None and args.max_frames < 1:
            raise ValueError(f"--max-frames {args.max_frames} should be >= 1")
        if args.images is not None:
            image_files(Path(args.images))
        config = load_config(args.config)
        if args.memory_dir:
            config = config.replace(memory={"directory": args.memory_dir})
        runtime = ExpressionRuntime(config)
    except (ModelFileError, CalibrationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"memories: {config.memory_directory()} (--memory-dir to change)", file=sys.stderr)
    n_frames = n_faces = 0
    try:
        for name, frame in frames(args):
            if args.max_frames is not None and n_frames >= args.max_frames:
                break
            n_frames += 1
            if frame is None:
                print(f"frame={name}: unreadable image, skipped", file=sys.stderr)
                continue
            try:
                if args.cropped:
                    results = [runtime.process_face(frame, args.person, label, color_order="bgr")]
                else:
                    results = runtime.process_frame(frame, args.person, label, color_order="bgr")
            except InvalidImageError as error:
                print(f"frame={name}: {error}, skipped", file=sys.stderr)
                continue
            for result in results:
                print(format_result(name, result, args.json), flush=True)
            n_faces += len(results)
            if not results and runtime.is_idle():
                report = runtime.imagine()
                if report is not None and report.latents:
                    print(
                        f"idle: imagined {report.latents} latents for {list(report.persons)} "
                        f"in {report.seconds:.2f} s",
                        file=sys.stderr,
                    )
    except KeyboardInterrupt:
        print("interrupted; saving memories", file=sys.stderr)
    finally:
        runtime.close()
    print(
        f"{n_frames} frames, {n_faces} faces; memories in {config.memory_directory()}",
        file=sys.stderr,
    )
    if n_frames == 0:
        print(f"error: no frame read from {args.video or f'camera {args.camera}'}", file=sys.stderr)
        return 1
    return 0
