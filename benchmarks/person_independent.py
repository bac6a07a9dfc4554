"""What the robot answers a person it has not learned yet, against a static FER package.

Before a person has taught it anything, the runtime answers with its person-independent
``fallback`` (:class:`clifer_edge.models.Fallback`: the export's expression model if it has one,
else the calibration's expression head on the encoder's latent; what
``ExpressionRuntime.process_face(..., anonymous=True)`` returns). With an expression model, the
latent's head is scored beside it (``latent head``). This scores it on every face of
JAFFE (photos: faces found by the robot's own detector, as ``clifer-edge eval --detect-faces``)
and CK+48 (crops), pooled over people, on the classes FER2013 names (CK+ contempt is left out,
as the reference figures of the `fer` package are given). With ``--reference MODEL`` another
FER2013 classifier (a ``.tflite`` such as the `fer` package's ``emotion_model_quantized.tflite``,
or a ``clifer_train.expression_classifier`` ``.keras``) is scored on the very same crops in the
same run, and the ratio printed.

Run: ``python benchmarks/person_independent.py [--reference FILE] [--max-faces N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from clifer_edge.datasets import default_data_dir, load_npz
from clifer_edge.evaluation.features import prepare_faces
from clifer_edge.models import Fallback
from clifer_edge.models.files import ModelFiles
from clifer_edge.runtime import load_config

#: (file in the data folder, whether its images are full photos the robot must detect faces in)
DATA_SETS = (("jaffe.npz", True), ("ckplus48.npz", False))


def score(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Macro F1 over the classes present in ``truth``, and accuracy."""
    classes = sorted(set(truth.tolist()))
    return {
        "macro_f1": round(float(f1_score(truth, predicted, labels=classes, average="macro")), 4),
        "accuracy": round(float(np.mean(truth == predicted)), 4),
    }


def measure(
    data_dir: Path, reference_path: str | None = None, max_faces: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per data set: the fallback's scores (and the reference model's, if given)."""
    files = ModelFiles.locate(None, "int8")
    encoder, _ = files.load(1)
    calibration = files.load_calibration(encoder)
    fallback = Fallback(calibration, files.load_expression(1))
    meta = encoder.metadata
    robot = load_config(None)
    labels = np.asarray(fallback.labels)
    reference = None
    if reference_path:
        from clifer_export.quality import load_judge  # columns in the calibration's label order

        reference = load_judge(reference_path, fallback.labels)
    rows = []
    for name, photos in DATA_SETS:
        dataset = load_npz(data_dir / name)
        keep = np.flatnonzero(np.isin(dataset.labels, labels))
        if max_faces is not None and max_faces < len(keep):
            keep = np.sort(np.random.default_rng(seed).choice(keep, max_faces, replace=False))
        dataset = dataset.subset(keep)
        detector = robot.faces.build_detector() if photos else None
        prepared = prepare_faces(dataset, meta.image_size, meta.channels, detector)
        faces, truth = prepared.faces[prepared.valid], dataset.labels[prepared.valid]
        latents = calibration.to_memory(encoder.encode(faces))
        row: dict[str, Any] = {
            "data": name,
            "faces": len(truth),
            "images": len(dataset),
            "classes": sorted(set(truth.tolist())),
            "fallback": score(truth, np.asarray(fallback.predict(faces, latents))),
            "fallback_model": fallback.describe(),
        }
        if fallback.reads_faces:
            row["latent_head"] = score(truth, np.asarray(calibration.predict(latents)))
        if reference is not None:
            probabilities = reference.predict(faces, batch_size=256, verbose=0)
            row["reference"] = score(truth, labels[np.argmax(probabilities, axis=1)])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", help="a FER2013 classifier, .tflite or .keras")
    parser.add_argument("--max-faces", type=int, help="a seeded sample of each data set")
    parser.add_argument("--data-dir", help="shared data folder")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    rows = measure(data_dir, args.reference, args.max_faces)
    print(
        "| data | faces | fallback macro F1 / accuracy | latent head | "
        "reference macro F1 / accuracy | F1 ratio |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        ours = row["fallback"]
        theirs = row.get("reference")
        head = row.get("latent_head")
        other = f"{theirs['macro_f1']:.3f} / {theirs['accuracy']:.3f}" if theirs else "-"
        ratio = f"{ours['macro_f1'] / theirs['macro_f1']:.2f}" if theirs else "-"
        latent = f"{head['macro_f1']:.3f} / {head['accuracy']:.3f}" if head else "-"
        print(
            f"| {row['data']} | {row['faces']} of {row['images']} | "
            f"{ours['macro_f1']:.3f} / {ours['accuracy']:.3f} | {latent} | {other} | {ratio} |"
        )
    print(f"fallback: {rows[0]['fallback_model']}" if rows else "no data")
    if args.reference:
        print(f"reference: {Path(args.reference).name}, on the same crops")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
