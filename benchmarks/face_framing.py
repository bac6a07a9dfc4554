"""How tightly FER2013 frames its faces, as each face detector sees it: the crop margin to use.

The encoder learned from FER2013's 48x48 faces; a robot's crop should frame a face the same way.
Each detector draws its box differently (YuNet's box is larger than Haar's), so the margin that
reproduces FER2013's framing depends on the detector. For FER2013 Training faces (upscaled 4x so
both detectors find them) it prints the median box side as a share of the image and the margin
per side that turns a detected box into FER2013's frame: ``(1 / share - 1) / 2``.

Run: ``python benchmarks/face_framing.py [--faces 1500]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from clifer_edge.datasets import default_data_dir
from clifer_edge.faces.detector import FaceDetector

UPSCALE = 4


def box_shares(detector: FaceDetector, faces: np.ndarray) -> np.ndarray:
    """Largest box's side / image side for each face where the detector finds one."""
    shares = []
    for face in tqdm(faces, desc=detector.method, leave=False):
        side = face.shape[0] * UPSCALE
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        found = detector.detect(np.repeat(big[:, :, None], 3, axis=2))
        if found:
            box = found[0].box
            shares.append(max(box.width, box.height) / side)
    return np.asarray(shares)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1500, help="FER2013 Training faces used")
    parser.add_argument("--data-dir", help="shared data folder")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    with np.load(data_dir / "fer2013.npz") as data:
        faces = data["images"][data["splits"] == "Training"][: args.faces]
    print(f"{len(faces)} FER2013 Training faces, upscaled {UPSCALE}x")
    print("detector  found   box side / image (median, IQR)   margin per side for FER2013 framing")
    for method in ("haar", "yunet"):
        shares = box_shares(FaceDetector(method), faces)
        low, median, high = np.percentile(shares, [25, 50, 75])
        margin = (1.0 / median - 1.0) / 2.0
        print(
            f"{method:8s}  {len(shares) / len(faces):5.1%}   {median:.3f} ({low:.3f}-{high:.3f})"
            f"                 {margin:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
