"""Parity report: do the exported TFLite models behave like the Keras models they came from?

Two levels of evidence:

1. **Tensors.** On FER2013 PublicTest faces (never used for calibration), the largest and mean
   absolute difference between each TFLite variant and Keras for the encoder's latents, for the
   generator's images given the same latents, and for the whole robot path G(E(x), c).
2. **What the robot does with them.** The per-subject Growing Dual Memory protocol on CK+ and JAFFE
   (JAFFE from full photos through face detection), run twice with the same seeds: once on the Keras
   (float) encoder's latents, once on the int8 encoder's. The F1 lost to quantisation is what
   matters; the target is at most one F1 point on average.

The report also proves that the files load and run with the robot's runtime in a fresh Python
process that never imports TensorFlow. Output: ``parity.json`` and ``parity.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.datasets import FaceDataset, load_npz
from clifer_edge.labels import BASIC_EXPRESSIONS
from clifer_edge.models.encoder_generator import METADATA_FILENAME, VARIANTS, model_filename
from clifer_edge.models.litert import TFLiteModel
from clifer_edge.preprocessing import preprocess_faces

#: PublicTest faces used for the tensor-level comparison.
DEFAULT_PARITY_FACES = 512
#: Target: F1 points the int8 encoder may lose against the float one in the GDM protocol.
F1_TOLERANCE_POINTS = 1.0


def _errors(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}


def tensor_parity(
    run: Any,
    model_dir: str | os.PathLike[str],
    faces: np.ndarray,
    variants: Iterable[str] = VARIANTS,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Errors of each exported variant against Keras on ``faces`` (see module docstring).

    Parameters
    ----------
    run : clifer_export.convert.TrainedRun
    model_dir : directory holding ``encoder_<variant>.tflite`` / ``generator_<variant>.tflite``
    faces : ndarray (n, size, size, channels) in [-1, 1]
    """
    n_classes = len(run.vocabulary)
    rng = np.random.default_rng(seed)
    conditions = np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, len(faces))]
    keras_z = np.asarray(run.encoder.predict(faces, batch_size=128, verbose=0), np.float32)
    keras_images = np.asarray(
        run.generator.predict({"z": keras_z, "expression": conditions}, batch_size=128, verbose=0),
        np.float32,
    )
    report: dict[str, dict[str, Any]] = {}
    for variant in variants:
        paths = [Path(model_dir) / model_filename(r, variant) for r in ("encoder", "generator")]
        if not all(p.exists() for p in paths):
            continue
        encoder, generator = (TFLiteModel(p) for p in paths)
        z = np.concatenate([encoder.run([faces[i : i + 64]])[0] for i in range(0, len(faces), 64)])
        images = _generate(generator, keras_z, conditions)
        chained = _generate(generator, z, conditions)
        cosine = np.sum(z * keras_z, axis=1) / (
            np.linalg.norm(z, axis=1) * np.linalg.norm(keras_z, axis=1) + 1e-12
        )
        report[variant] = {
            "faces": len(faces),
            "latent": {**_errors(keras_z, z), "min_cosine": float(cosine.min())},
            "image": _errors(keras_images, images),
            "image_from_own_latent": _errors(keras_images, chained),
            "bytes": {"encoder": paths[0].stat().st_size, "generator": paths[1].stat().st_size},
        }
    return report


def _generate(model: TFLiteModel, z: np.ndarray, conditions: np.ndarray) -> np.ndarray:
    parts = [
        model.run({"z": z[i : i + 64], "expression": conditions[i : i + 64]})[0]
        for i in range(0, len(z), 64)
    ]
    return np.concatenate(parts)


# --- the downstream check: per-subject GDM F1 with float vs int8 latents -------------------------


@dataclass(frozen=True)
class SubjectFaces:
    """One subject's prepared faces, labels and the train/test rows of the protocol."""

    subject: str
    faces: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray


def subject_splits(
    dataset: FaceDataset, faces: np.ndarray, test_fraction: float = 1.0 / 3.0, seed: int = 0
) -> tuple[list[SubjectFaces], int]:
    """Per subject and class, hold out whole sequences (about ``test_fraction`` of them).

    A class recorded in a single sequence (CK+ has one sequence per subject and expression) holds
    out that sequence's last frame instead: near-duplicates then lie on both sides, which inflates
    F1 but affects the float and int8 runs alike, so their difference is still the quantisation's.
    Subjects left with fewer than two classes are skipped.

    Returns
    -------
    subjects : list of SubjectFaces
    frame_splits : int
        How many (subject, class) pairs were split inside one sequence.
    """
    keys = dataset.sequence_keys()
    out = []
    frame_splits = 0
    for subject in sorted(set(dataset.subjects.tolist())):
        rows = np.flatnonzero(dataset.subjects == subject)
        rng = np.random.default_rng([seed, len(out)])
        train, test, classes, frame_split = [], [], 0, 0
        for label in sorted(set(dataset.labels[rows].tolist())):
            class_rows = rows[dataset.labels[rows] == label]
            sequences = sorted(set(keys[class_rows].tolist()))
            if len(sequences) >= 2:
                n_test = min(len(sequences) - 1, max(1, round(test_fraction * len(sequences))))
                held = set(rng.permutation(sequences)[:n_test].tolist())
                mask = np.array([key in held for key in keys[class_rows]])
            elif len(class_rows) >= 2:
                mask = np.zeros(len(class_rows), dtype=bool)
                mask[-1] = True
                frame_split += 1
            else:
                continue
            test.extend(class_rows[mask])
            train.extend(class_rows[~mask])
            classes += 1
        if classes >= 2:
            frame_splits += frame_split
            out.append(
                SubjectFaces(
                    subject,
                    faces,
                    dataset.labels,
                    np.array(train, dtype=np.int64),
                    np.array(test, dtype=np.int64),
                )
            )
    return out, frame_splits


def _class_order(labels: Iterable[str]) -> list[str]:
    # Neutral first, then the paper's order; classes outside the vocabulary (contempt) last.
    present = set(labels)
    order = [name for name in BASIC_EXPRESSIONS if name in present]
    return order + sorted(present - set(order))


def gdm_f1(latents: np.ndarray, subjects: list[SubjectFaces], seed: int = 0) -> dict[str, Any]:
    """Per-subject macro F1 of a GDM trained class by class on ``latents`` (rows as in the data).

    One memory per subject, one episode per class (neutral first), then prediction of the
    held-out faces by the episodic and the semantic memory.
    """
    from sklearn.metrics import f1_score

    from clifer_edge.memory import GrowingDualMemory

    per_subject: dict[str, dict[str, float]] = {}
    for item in subjects:
        memory = GrowingDualMemory(seed=seed)
        train_labels = item.labels[item.train]
        for label in _class_order(train_labels.tolist()):
            rows = item.train[train_labels == label]
            memory.partial_fit(latents[rows], [label] * len(rows))
        truth = item.labels[item.test].tolist()
        classes = sorted(set(truth))
        per_subject[item.subject] = {
            which: 100.0
            * float(
                f1_score(
                    truth,
                    memory.predict(latents[item.test], memory=which),
                    labels=classes,
                    average="macro",
                    zero_division=0,
                )
            )
            for which in ("episodic", "semantic")
        }
    summary = {
        which: float(np.mean([s[which] for s in per_subject.values()]))
        for which in ("episodic", "semantic")
    }
    return {"subjects": len(per_subject), "mean_f1": summary, "per_subject": per_subject}


def repeated_gdm_f1(
    latents: np.ndarray, dataset: FaceDataset, seeds: Iterable[int]
) -> dict[str, Any]:
    """:func:`gdm_f1` over several held-out draws (split and GDM seeded alike), averaged.

    A GWR network grows differently after a small change in its inputs, so one split gives F1
    differences of a few points either way; averaging over draws shows the systematic part.
    """
    seeds = list(seeds)
    runs = []
    for seed in seeds:
        subjects, frame_splits = subject_splits(dataset, latents, seed=seed)
        runs.append(gdm_f1(latents, subjects, seed))
    memories = ("episodic", "semantic")
    names = runs[0]["per_subject"]
    return {
        "subjects": runs[0]["subjects"],
        "seeds": list(seeds),
        "frame_splits": frame_splits,
        "mean_f1": {w: float(np.mean([r["mean_f1"][w] for r in runs])) for w in memories},
        "per_subject": {
            name: {w: float(np.mean([r["per_subject"][name][w] for r in runs])) for w in memories}
            for name in names
        },
    }


def jaffe_faces(dataset: FaceDataset, size: int, channels: int) -> tuple[FaceDataset, np.ndarray]:
    """Detect and crop the face in each JAFFE photo; photos without a detection are dropped."""
    from clifer_edge.faces import FaceDetector

    detector = FaceDetector(method="haar")
    keep, crops = [], []
    for i, image in enumerate(dataset.images):
        found = detector.crop_faces(image, size=size, channels=channels)
        if found:
            keep.append(i)
            crops.append(found[0][1])
    return dataset.subset(np.array(keep, dtype=np.int64)), np.stack(crops)


def downstream_parity(
    run: Any,
    model_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    seed: int = 0,
    gdm_seeds: int = 5,
) -> dict[str, Any]:
    """GDM F1 per subject on CK+ and JAFFE with Keras vs int8 encoder latents.

    Both runs use the same held-out draws and GDM seeds, so the difference is the encoder's.
    """
    encoder = TFLiteModel(Path(model_dir) / model_filename("encoder", "int8"))
    data_dir = Path(data_dir)
    sets: dict[str, tuple[FaceDataset, np.ndarray, str]] = {}
    ck = load_npz(data_dir / "ckplus48.npz")
    sets["CK+"] = (ck, preprocess_faces(ck.images, run.image_size, run.channels), "48x48 crops")
    report: dict[str, Any] = {}
    jaffe = load_npz(data_dir / "jaffe.npz")
    try:
        jaffe_kept, jaffe_crops = jaffe_faces(jaffe, run.image_size, run.channels)
    except ImportError as error:
        # The face detector belongs to the robot side; without it JAFFE's full photos cannot
        # be cropped, and the report says so instead of silently leaving JAFFE out.
        report["JAFFE"] = {"skipped": f"no face detector available ({error})"}
    else:
        note = f"Haar detection on full photos: {len(jaffe_kept)} of {len(jaffe)} faces found"
        sets["JAFFE"] = (jaffe_kept, jaffe_crops, note)
    for name, (dataset, faces, faces_note) in sets.items():
        float_z = np.asarray(run.encoder.predict(faces, batch_size=128, verbose=0), np.float32)
        int8_z = np.concatenate(
            [encoder.run([faces[i : i + 64]])[0] for i in range(0, len(faces), 64)]
        )
        seeds = list(range(seed, seed + gdm_seeds))
        float_f1 = repeated_gdm_f1(float_z, dataset, seeds)
        int8_f1 = repeated_gdm_f1(int8_z, dataset, seeds)
        frame_splits = float_f1["frame_splits"]
        loss = {
            which: float_f1["mean_f1"][which] - int8_f1["mean_f1"][which]
            for which in ("episodic", "semantic")
        }
        report[name] = {
            "faces": faces_note,
            "subjects": float_f1["subjects"],
            "seeds": float_f1["seeds"],
            "classes_split_inside_a_sequence": frame_splits,
            "float_f1": float_f1["mean_f1"],
            "int8_f1": int8_f1["mean_f1"],
            "f1_points_lost": loss,
            "within_target": all(v <= F1_TOLERANCE_POINTS for v in loss.values()),
            "per_subject": {
                subject: {"float": float_f1["per_subject"][subject], "int8": scores}
                for subject, scores in int8_f1["per_subject"].items()
            },
        }
    return report


_RUNTIME_PROBE = """
import json, sys
import numpy as np
from clifer_edge.models import load_default_models
out = {}
for variant in sys.argv[2:]:
    encoder, generator = load_default_models(variant, model_dir=sys.argv[1])
    faces = np.zeros((2, *encoder.metadata.image_shape), np.float32)
    z = encoder.encode(faces)
    images = generator.generate(z, list(generator.vocabulary[:2]))
    out[variant] = {"runtime": encoder.model.backend, "latent": list(z.shape),
                    "image": list(images.shape)}
out["tensorflow_imported"] = any(m == "tensorflow" or m.startswith("tensorflow.")
                                 for m in sys.modules)
print(json.dumps(out))
"""


def runtime_check(model_dir: str | os.PathLike[str], variants: Iterable[str]) -> dict[str, Any]:
    """Load and run the files with the robot's loader in a fresh process; report the runtime used
    and whether TensorFlow got imported (it must not)."""
    variants = [v for v in variants if (Path(model_dir) / model_filename("encoder", v)).exists()]
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", _RUNTIME_PROBE, str(model_dir), *variants],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        return {"ok": False, "error": result.stderr.strip().splitlines()[-1:]}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return {"ok": True, **json.loads(lines[-1])}


def parity_report(
    run: Any,
    model_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    variants: Iterable[str] = VARIANTS,
    n_faces: int = DEFAULT_PARITY_FACES,
    downstream: bool = True,
    seed: int = 0,
    gdm_seeds: int = 5,
) -> dict[str, Any]:
    """The full report (see module docstring) as a JSON-friendly dict."""
    variants = list(variants)
    data_dir = Path(data_dir)
    fer = load_npz(data_dir / "fer2013.npz")
    if fer.splits is not None:
        fer = fer.subset(fer.splits == "PublicTest")
    rows = np.random.default_rng(seed).permutation(len(fer))[:n_faces]
    faces = preprocess_faces(fer.images[rows], run.image_size, run.channels)
    metadata_path = Path(model_dir) / METADATA_FILENAME
    report: dict[str, Any] = {
        "model_dir": str(model_dir),
        "training": json.loads(metadata_path.read_text())["training"]
        if metadata_path.exists()
        else {},
        "tensor_faces": f"{len(faces)} FER2013 PublicTest faces",
        "tensors": tensor_parity(run, model_dir, faces, variants, seed),
        "runtime": runtime_check(model_dir, variants),
    }
    if downstream and "int8" in variants:
        report["gdm"] = downstream_parity(run, model_dir, data_dir, seed, gdm_seeds)
        report["f1_tolerance_points"] = F1_TOLERANCE_POINTS
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (for docs/export.md)."""
    lines = [
        "| variant | encoder KB | generator KB | latent max / mean abs err | "
        "image max / mean abs err | G(E(x)) image max / mean abs err |",
        "| --- | ---: | ---: | --- | --- | --- |",
    ]
    for variant, r in report["tensors"].items():
        lines.append(
            f"| {variant} | {r['bytes']['encoder'] / 1024:.0f} | "
            f"{r['bytes']['generator'] / 1024:.0f} | "
            f"{r['latent']['max_abs']:.4f} / {r['latent']['mean_abs']:.4f} | "
            f"{r['image']['max_abs']:.4f} / {r['image']['mean_abs']:.4f} | "
            f"{r['image_from_own_latent']['max_abs']:.4f} / "
            f"{r['image_from_own_latent']['mean_abs']:.4f} |"
        )
    lines.append("")
    lines.append(
        f"Errors against Keras on {report['tensor_faces']}; images and latents in [-1, 1]."
    )
    runtime = report["runtime"]
    if runtime.get("ok"):
        used = {v: r["runtime"] for v, r in runtime.items() if isinstance(r, dict)}
        lines.append(
            f"Loaded and run in a fresh process with {sorted(set(used.values()))}; "
            f"TensorFlow imported: {runtime['tensorflow_imported']}."
        )
    else:
        lines.append(f"Runtime check FAILED: {runtime.get('error')}")
    if "gdm" in report:
        lines += [
            "",
            "| data | faces | subjects | memory | F1 float | F1 int8 | points lost |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: |",
        ]
        for name, r in report["gdm"].items():
            if "skipped" in r:
                lines.append(f"| {name} | skipped: {r['skipped']} | | | | | |")
                continue
            for which in ("episodic", "semantic"):
                lines.append(
                    f"| {name} | {r['faces']} | {r['subjects']} | {which} | "
                    f"{r['float_f1'][which]:.1f} | {r['int8_f1'][which]:.1f} | "
                    f"{r['f1_points_lost'][which]:+.1f} |"
                )
        lines.append("")
        for name, r in report["gdm"].items():
            if r.get("classes_split_inside_a_sequence"):
                lines.append(
                    f"{name}: {r['classes_split_inside_a_sequence']} (subject, class) pairs were "
                    "recorded in one sequence only; their last frame is held out, so "
                    "near-duplicate frames lie on both sides (F1 is optimistic, equally for float "
                    "and int8)."
                )
        lines.append(
            "Per-subject GDM protocol (one memory per subject, classes learned one by one, neutral "
            "first; whole sequences held out), macro F1 in points, mean over subjects and "
            f"{len(report['gdm']['CK+']['seeds'])} held-out draws; target: at "
            f"most {report['f1_tolerance_points']:g} point lost."
        )
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``parity.json`` and ``parity.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "parity.json", out / "parity.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(report), encoding="utf-8")
    return json_path, md_path
