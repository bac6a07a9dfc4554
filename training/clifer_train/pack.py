"""Pack a face data set small enough to travel to a remote GPU box (lossless WebP per face).

GPU machines are often reached through a narrow pipe (here at most 64 MiB per transfer, and
FER2013's npz is 79 MB). Each face is stored as a lossless WebP (about 1.6 KB for a 48x48 FER2013
face, against 2.3 KB raw), so the Training split and 1,024 PublicTest faces fit in ~48 MB;
:func:`clifer_train.data.read_faces` reads the packed file like any npz and decodes it back to
the identical pixels.

Run: ``python -m clifer_train.pack --data fer2013.npz --out fer2013_packed.npz``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from clifer_edge.datasets import DatasetError, FaceDataset, load_npz


def pack(
    dataset: FaceDataset,
    out: str | Path,
    splits: tuple[str, ...] = ("Training", "PublicTest"),
    per_split_limit: dict[str, int] | None = None,
    seed: int = 0,
) -> int:
    """Write ``dataset``'s faces of ``splits`` (at most ``per_split_limit[split]`` each, a fixed
    random choice) to ``out``; return the number of faces written."""
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for split in splits:
        rows = np.flatnonzero(dataset.splits == split) if dataset.splits is not None else None
        if rows is None or not len(rows):
            raise DatasetError(f"{dataset.source}: no faces in split {split!r}")
        limit = (per_split_limit or {}).get(split)
        if limit is not None and limit < len(rows):
            rows = np.sort(rng.choice(rows, size=limit, replace=False))
        chosen.append(rows)
    rows = np.concatenate(chosen)
    blobs = []
    for image in dataset.images[rows]:
        ok, encoded = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])  # lossless
        if not ok:
            raise DatasetError(f"{dataset.source}: cannot encode a face as WebP")
        blobs.append(encoded.ravel())
    offsets = np.cumsum([0, *(len(b) for b in blobs)]).astype(np.int64)
    np.savez(
        out,
        webp=np.concatenate(blobs),
        offsets=offsets,
        image_shape=np.array(dataset.images.shape[1:], dtype=np.int64),
        labels=dataset.labels[rows],
        splits=dataset.splits[rows],
    )
    return len(rows)


def unpack(archive: dict[str, np.ndarray], source: str) -> FaceDataset:
    """The faces of a packed archive (arrays as read from the npz)."""
    offsets, blob = archive["offsets"], archive["webp"]
    shape = tuple(int(v) for v in archive["image_shape"])
    flag = cv2.IMREAD_GRAYSCALE if len(shape) == 2 else cv2.IMREAD_COLOR
    images = np.empty((len(offsets) - 1, *shape), dtype=np.uint8)
    for i in range(len(images)):
        face = cv2.imdecode(blob[offsets[i] : offsets[i + 1]], flag)
        if face is None or face.shape != shape:
            raise DatasetError(f"{source}: face {i} does not decode to {shape}")
        images[i] = face
    return FaceDataset(
        images=images,
        labels=archive["labels"].astype(str),
        splits=archive["splits"].astype(str),
        source=source,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="npz in the shared layout (FER2013)")
    parser.add_argument("--out", required=True, help="packed npz to write")
    parser.add_argument("--splits", nargs="+", default=["Training", "PublicTest"])
    parser.add_argument(
        "--val-faces", type=int, default=1024, help="faces kept of the last split (validation)"
    )
    args = parser.parse_args(argv)
    try:
        dataset = load_npz(args.data)
        n = pack(dataset, args.out, tuple(args.splits), {args.splits[-1]: args.val_faces})
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size = Path(args.out).stat().st_size / 2**20
    print(f"{n} faces packed into {args.out} ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
