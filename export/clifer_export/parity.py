"""Parity report: do the exported TFLite models behave like the Keras models they came from?

Two levels of evidence:

1. **Tensors.** On FER2013 PublicTest faces (never used for calibration), the largest and mean
   absolute difference between each TFLite variant and Keras for the encoder's latents, for the
   generator's images given the same latents, and for the whole robot path G(E(x), c).
2. **What the robot does with them.** The per-subject Growing Dual Memory protocol on CK+ and JAFFE
   (JAFFE from full photos through face detection; ``clifer-edge eval``'s split, order and F1), run
   twice with the same seeds: once on the Keras (float) encoder's latents, once on the int8
   encoder's. The F1 lost to quantisation is what
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
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.datasets import FaceDataset, load_npz
from clifer_edge.evaluation.features import PreparedFaces, prepare_faces
from clifer_edge.evaluation.protocol import ProtocolConfig, prepare_subjects, run_protocol
from clifer_edge.models import VARIANTS, ModelFiles
from clifer_edge.models.calibration import LatentCalibration, calibration_rows
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
        files = ModelFiles.locate(model_dir, variant)
        paths = [files.encoder, files.generator]
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


MEMORIES = ("episodic", "semantic")


def gdm_f1(
    latents: np.ndarray, dataset: FaceDataset, seed: int = 0, valid: np.ndarray | None = None
) -> dict[str, Any]:
    """Per-subject final macro F1 of a GDM trained class by class on ``latents`` (rows as in the
    data), in points.

    This is ``clifer-edge eval``'s protocol (:mod:`clifer_edge.evaluation`: its split, class order,
    episodes and F1; condition ``gdm``) on every subject with at least two splittable classes. A
    class recorded in one sequence (CK+) holds out its last frame: near-duplicates then lie on both
    sides, which inflates F1 but affects the float and int8 runs alike, so their difference is
    still the quantisation's.
    """
    subjects, _ = prepare_subjects(
        dataset, latents, min_classes=2, seed=seed, allow_frame_split=True, valid=valid
    )
    result = run_protocol(subjects, ["gdm"], ProtocolConfig(seed=seed), progress=False)
    per_subject = {
        run["subject"]: {which: 100.0 * run["steps"][-1]["f1"]["2"][which] for which in MEMORIES}
        for run in result.runs
    }
    return {
        "subjects": len(per_subject),
        "frame_splits": sum(len(s.split.frame_split) for s in subjects),
        "mean_f1": {w: float(np.mean([s[w] for s in per_subject.values()])) for w in MEMORIES},
        "per_subject": per_subject,
    }


def repeated_gdm_f1(
    latents: np.ndarray,
    dataset: FaceDataset,
    seeds: Iterable[int],
    valid: np.ndarray | None = None,
) -> dict[str, Any]:
    """:func:`gdm_f1` over several held-out draws (split and GDM seeded alike), averaged.

    A GWR network grows differently after a small change in its inputs, so one split gives F1
    differences of a few points either way; averaging over draws shows the systematic part.
    """
    seeds = list(seeds)
    runs = [gdm_f1(latents, dataset, seed, valid) for seed in seeds]
    names = runs[0]["per_subject"]
    return {
        "subjects": runs[0]["subjects"],
        "seeds": seeds,
        "frame_splits": runs[0]["frame_splits"],
        "mean_f1": {w: float(np.mean([r["mean_f1"][w] for r in runs])) for w in MEMORIES},
        "per_subject": {
            name: {w: float(np.mean([r["per_subject"][name][w] for r in runs])) for w in MEMORIES}
            for name in names
        },
    }


def _encode_both(run: Any, encoder: TFLiteModel, faces: np.ndarray) -> tuple[np.ndarray, ...]:
    """Latents of the Keras (float) encoder and of the int8 one for the same faces."""
    float_z = np.asarray(run.encoder.predict(faces, batch_size=128, verbose=0), np.float32)
    int8_z = np.concatenate([encoder.run([faces[i : i + 64]])[0] for i in range(0, len(faces), 64)])
    return float_z, int8_z


def _memory_spaces(
    run: Any, encoder: TFLiteModel, data_dir: Path, seed: int
) -> tuple[LatentCalibration, LatentCalibration]:
    """Where the robot's memories learn: latents standardised on FER2013 (``clifer-edge
    calibrate``'s sample), fitted once for the float and once for the int8 encoder."""
    fer = load_npz(data_dir / "fer2013.npz")
    rows, _ = calibration_rows(fer, list(run.vocabulary), seed=seed)
    faces = preprocess_faces(fer.images[rows], run.image_size, run.channels)
    float_z, int8_z = _encode_both(run, encoder, faces)
    labels = fer.labels[rows]
    return LatentCalibration.fit(float_z, labels), LatentCalibration.fit(int8_z, labels)


def downstream_parity(
    run: Any,
    model_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    seed: int = 0,
    gdm_seeds: int = 5,
) -> dict[str, Any]:
    """GDM F1 per subject on CK+ and JAFFE with Keras vs int8 encoder latents.

    Both runs use the same held-out draws and GDM seeds, so the difference is the encoder's. The
    memories learn on standardised latents, as on the robot, each encoder's own standardisation
    fitted on the same FER2013 faces; JAFFE is cropped as the robot crops it.
    """
    encoder = TFLiteModel(ModelFiles.locate(model_dir, "int8").encoder)
    data_dir = Path(data_dir)
    float_space, int8_space = _memory_spaces(run, encoder, data_dir, seed)
    sets: dict[str, tuple[FaceDataset, PreparedFaces, str]] = {}
    ck = load_npz(data_dir / "ckplus48.npz")
    ck_faces = prepare_faces(ck, run.image_size, run.channels, progress=False)
    sets["CK+"] = (ck, ck_faces, "48x48 crops")
    report: dict[str, Any] = {}
    jaffe = load_npz(data_dir / "jaffe.npz")
    try:
        from clifer_edge.runtime.config import load_config

        # Cropped as the robot crops them: the shipped runtime config's detector and framing.
        detector = load_config().faces.build_detector()
    except ImportError as error:
        # The face detector belongs to the robot side; without it JAFFE's full photos cannot
        # be cropped, and the report says so instead of silently leaving JAFFE out.
        report["JAFFE"] = {"skipped": f"no face detector available ({error})"}
    else:
        prepared = prepare_faces(jaffe, run.image_size, run.channels, detector, progress=False)
        found = int(prepared.valid.sum())
        note = (
            f"{detector.method} detection on full photos (crop margin {detector.margin:.2f}): "
            f"{found} of {len(jaffe)} faces found"
        )
        sets["JAFFE"] = (jaffe, prepared, note)
    for name, (dataset, prepared, faces_note) in sets.items():
        float_z, int8_z = _encode_both(run, encoder, prepared.faces)
        float_z, int8_z = float_space.to_memory(float_z), int8_space.to_memory(int8_z)
        seeds = list(range(seed, seed + gdm_seeds))
        float_f1 = repeated_gdm_f1(float_z, dataset, seeds, prepared.valid)
        int8_f1 = repeated_gdm_f1(int8_z, dataset, seeds, prepared.valid)
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
    variants = [v for v in variants if ModelFiles.locate(model_dir, v).encoder.exists()]
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
    metadata_path = ModelFiles.locate(model_dir).metadata
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
            "Per-subject GDM protocol of `clifer-edge eval` (one memory per subject, classes "
            "learned one by one in episodes of 5, neutral first; whole sequences held out) on "
            "standardised latents as on the robot (each encoder's own standardisation, fitted on "
            "the same FER2013 faces as `clifer-edge calibrate`'s), final "
            "macro F1 in points, mean over subjects and "
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
