"""Measure personalised continual learning with the CLIFER per-subject protocol.

Point it at a per-subject data set in the shared npz layout (``images``, ``labels``,
``subjects``, optional ``sequences``). Faces (detected and cropped with ``--detect-faces``) are
encoded by the bundled int8 encoder; for every subject the classes are learned one at a time
(episodes of 5) under each condition: ``mlp`` (retrained from scratch on all seen data),
``gdm``, ``replay`` (GDM + RNAT pseudo-rehearsal), ``clifer`` (replay + imagination after
each class, on a robot that already knows the other subjects and recentres G on them) and
``offsets`` (the same with the generator-free class-offset baseline); on request also the
diagnostics ``clifer_alone`` (``clifer`` on a robot that knows nobody else), ``peers`` (offsets
from the other subjects' class means) and ``oracle`` (offsets from the subject's own class
means: the ceiling of offset imagination).
Experiment 1 tests on the subject's held-out faces of the classes seen so far, Experiment 2 on
all of them. Also: a few-shot new class (k = 1, 3, 5 faces) after the others, and the static
person-independent baseline on the same held-out faces. Writes ``results.json``, ``report.md``
and PNG plots to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge import __version__
from clifer_edge.cli._common import (
    add_split_arguments,
    check_split_arguments,
    choose_subjects,
    leak_warning,
)
from clifer_edge.datasets import DatasetError, FaceDataset, load_npz
from clifer_edge.evaluation.features import prepare_faces
from clifer_edge.evaluation.protocol import (
    CONDITIONS,
    DIAGNOSTIC_CONDITIONS,
    KNOWN_CONDITIONS,
    FallbackFn,
    ImaginationModel,
    ProtocolConfig,
    few_shot_class,
    run_few_shot_all,
    run_protocol,
)
from clifer_edge.evaluation.report import (
    build_results,
    mean_ci_text,
    summary_table,
    write_json,
    write_report,
)
from clifer_edge.evaluation.split import SPLIT_RULE
from clifer_edge.evaluation.static import logistic_baseline, score_subjects
from clifer_edge.faces import FaceDetector, FaceDetectorError
from clifer_edge.fileio import sha256_file
from clifer_edge.models import CalibrationError, Fallback, ModelFileError, ModelFiles
from clifer_edge.preprocessing import InvalidImageError
from clifer_edge.runtime.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="per-subject npz file (shared layout)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--conditions",
        default=",".join(CONDITIONS),
        help=f"comma-separated among {', '.join(CONDITIONS)} (default all) and the diagnostic "
        f"{', '.join(DIAGNOSTIC_CONDITIONS)} (imagination with the other subjects' or the "
        "subject's own class means)",
    )
    parser.add_argument(
        "--orders",
        choices=("default", "all"),
        default="default",
        help="class orders: CLIFER's default, or one starting from each class "
        "(adds a Kruskal-Wallis comparison)",
    )
    parser.add_argument(
        "--detect-faces",
        action="store_true",
        help="images are full frames: detect and crop the largest face as the robot does "
        "(the runtime config's faces section: by default YuNet, FER2013's framing)",
    )
    parser.add_argument(
        "--detector", choices=["haar", "yunet"], default=None, help="override faces.detector"
    )
    parser.add_argument("--yunet-model", default=None, help="override faces.yunet_model")
    parser.add_argument(
        "--margin",
        type=float,
        default=None,
        help="override faces.margin: crop border, fraction of the box side (default: the "
        "detector's FER2013 framing, benchmarks/face_framing.py)",
    )
    parser.add_argument(
        "--model-dir", default=None, help="exported encoder/generator (default: bundled)"
    )
    parser.add_argument("--variant", default="int8", help="model variant (default int8)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (1)")
    parser.add_argument(
        "--gdm-config", default=None, help="GDM settings YAML (default: CLIFER's defaults)"
    )
    parser.add_argument(
        "--runtime-config",
        default=None,
        help="robot runtime YAML whose imagination settings the clifer condition uses and whose "
        "faces settings --detect-faces uses (default: the shipped "
        "clifer_edge/config/default.yaml)",
    )
    parser.add_argument(
        "--known-people",
        type=int,
        default=None,
        help="how many of the other subjects the clifer condition's robot already knows, as "
        "memories of all their training faces (default: all; 0: nobody)",
    )
    parser.add_argument(
        "--latent-space",
        choices=("calibrated", "raw"),
        default="calibrated",
        help="what the memories learn on: latents standardised with the encoder's FER2013 "
        "calibration, as on the robot (default), or raw encoder latents",
    )
    parser.add_argument(
        "--latent-scale",
        type=float,
        default=1.0,
        help="multiply the memories' features by this (1 = as on the robot); "
        "the GDM's activation exp(-distance) makes its insertion thresholds scale-dependent",
    )
    parser.add_argument(
        "--few-shot-class",
        default="auto",
        help="class taught few-shot after the others: a name, 'auto' (a class beyond the basic "
        "seven, e.g. CK+ contempt, else the last of the default order) or 'none'",
    )
    parser.add_argument("--shots", default="1,3,5", help="few-shot sizes k (default 1,3,5)")
    parser.add_argument(
        "--few-shot-min-classes",
        type=int,
        default=2,
        help="subjects need this many other classes for the few-shot run (default 2)",
    )
    parser.add_argument(
        "--static-train",
        default="fer2013.npz",
        help="person-independent training faces for the static baseline ('none' to skip)",
    )
    parser.add_argument(
        "--static-samples",
        type=int,
        default=10000,
        help="faces (seeded subset of its Training split) for the static baseline (10000)",
    )
    add_split_arguments(parser)


def _parse_list(text: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"--{what} is empty")
    for item in items:
        if allowed is not None and item not in allowed:
            raise ValueError(f"--{what}: {item!r} should be one of {list(allowed)}")
    return items


class FeatureSpace:
    """Encoder latents <-> the memories' features (calibration standardisation, then a scale).

    With scale 1 and a calibration this is exactly the robot's space (the runtime's
    ``calibration.to_memory``/``to_latent``); the imagination scheduler maps through it.
    """

    def __init__(self, calibration: Any, scale: float) -> None:
        self.calibration = calibration
        self.scale = scale

    def to_memory(self, latents: np.ndarray) -> np.ndarray:
        latents = np.asarray(latents, dtype=np.float32)
        if self.calibration is not None:
            latents = self.calibration.to_memory(latents)
        return (self.scale * latents).astype(np.float32)

    def to_latent(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float32) / self.scale
        if self.calibration is not None:
            return self.calibration.to_latent(points)
        return np.clip(points, -1.0, 1.0)

    @property
    def labels(self) -> list[str]:
        """The calibration's classes (what the ``class_offsets`` imagination moves between)."""
        return self.calibration.labels if self.calibration is not None else []

    @property
    def class_means(self) -> np.ndarray:
        """The calibration's FER2013 class means, in the memories' features."""
        if self.calibration is None:
            return np.zeros((0, 0), np.float32)
        return (self.scale * self.calibration.class_means).astype(np.float32)


def _face_detector(args: argparse.Namespace, faces: Any) -> FaceDetector:
    """The robot's face detector (its runtime config's ``faces``), with the command's overrides."""
    return faces.build_detector(
        method=args.detector or ("yunet" if args.yunet_model else None),
        model_path=args.yunet_model,
        margin=args.margin,
    )


def _describe_imagination(settings: Any) -> str:
    return (
        f"method={settings.method}, chunk_prototypes={settings.chunk_prototypes}, "
        f"residual={settings.residual}, reimagine_distance={settings.reimagine_distance}, "
        f"recentre={settings.recentre}, recentre_min_peers={settings.recentre_min_peers}"
    )


def _gdm_config(path: str | None) -> Any:
    from clifer_edge.memory import GDMConfig

    return GDMConfig.from_yaml(path) if path else GDMConfig()


def _encode(encoder: Any, faces: np.ndarray, space: FeatureSpace) -> np.ndarray:
    return space.to_memory(encoder.encode(faces))


def _runtime_fallback(calibration: Any, files: ModelFiles, threads: int) -> Fallback | None:
    """The runtime's fallback for these models (None without an expression model or a
    calibration, e.g. in a raw latent space)."""
    expression_model = files.load_expression(threads)
    if calibration is None and expression_model is None:
        return None
    return Fallback(calibration, expression_model)


def _fallback(
    fallback: Fallback | None, prepared: Any, features: np.ndarray, space: FeatureSpace
) -> FallbackFn | None:
    """The runtime's answer for a person not learned yet, per data set row (computed once)."""
    if fallback is None:
        return None
    answers = np.full(len(features), "", dtype=object)
    valid = prepared.valid
    answers[valid] = fallback.predict(prepared.faces[valid], features[valid] / space.scale)
    return lambda rows: list(answers[np.asarray(rows, dtype=np.int64)])


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        check_split_arguments(args)
        robot = load_config(args.runtime_config)
        imagination_settings = robot.imagination
        conditions = _parse_list(args.conditions, KNOWN_CONDITIONS, "conditions")
        if "offsets" in conditions and args.latent_space != "calibrated":
            raise ValueError(
                "condition 'offsets' moves prototypes by the calibration's class means: "
                "use --latent-space calibrated or leave 'offsets' out of --conditions"
            )
        shots = [int(k) for k in _parse_list(args.shots, None, "shots")]
        if args.known_people is not None and args.known_people < 0:
            raise ValueError(f"--known-people {args.known_people} should be >= 0")
        if args.few_shot_min_classes < 1:
            raise ValueError(f"--few-shot-min-classes {args.few_shot_min_classes} should be >= 1")
        if not args.latent_scale > 0:
            raise ValueError(f"--latent-scale {args.latent_scale} should be > 0")
        if any(k < 1 for k in shots):
            raise ValueError(f"--shots {args.shots}: every k should be >= 1")
        progress = not args.no_progress
        dataset = load_npz(args.data)
        if dataset.subjects is None:
            raise DatasetError(
                f"{dataset.source}: no 'subjects' array; the protocol is per subject"
            )
        files = ModelFiles.locate(args.model_dir, args.variant)
        encoder, generator = files.load(args.threads)
        models = files.provenance()
        meta = encoder.metadata
        detector = _face_detector(args, robot.faces) if args.detect_faces else None
        prepared = prepare_faces(dataset, meta.image_size, meta.channels, detector, progress)
        if not prepared.valid.any():
            raise DatasetError(f"{dataset.source}: no face found in any image")
        calibration = None
        if args.latent_space == "calibrated":
            calibration = files.load_calibration(encoder)
        else:
            models.pop("calibration", None)
        space = FeatureSpace(calibration, args.latent_scale)
        features = np.zeros((len(dataset), meta.z_dim), dtype=np.float32)
        features[prepared.valid] = _encode(encoder, prepared.faces[prepared.valid], space)
        config = ProtocolConfig(
            gdm_config=_gdm_config(args.gdm_config),
            imagination=imagination_settings,
            seed=args.seed,
            known_people=args.known_people,
        )
        subjects, skipped, leaks = choose_subjects(dataset, features, args, prepared.valid)
        name = Path(dataset.source).name
        if leaks:
            print(leak_warning(name))
        if not subjects:
            raise DatasetError(
                f"{name}: no subject has >= {args.min_classes} splittable classes "
                f"(skipped: {len(skipped)})"
            )
        print(f"{name}: {len(subjects)} subjects evaluated, {len(skipped)} skipped")
        imagination = ImaginationModel(encoder, generator, space)
        answers = _runtime_fallback(calibration, files, args.threads)
        fallback = _fallback(answers, prepared, features, space)
        result = run_protocol(
            subjects, conditions, config, imagination, args.orders, progress, fallback
        )
        result.skipped = skipped
        few_shot = _few_shot(
            args, dataset, features, prepared.valid, conditions, config, imagination
        )
        static = _static(args, encoder, space, subjects, fallback, answers, progress)
        info = _meta(args, dataset, models, meta, prepared, leaks, imagination_settings)
        document = build_results(result, info, few_shot, static)
        document["seconds"] = round(time.perf_counter() - started, 1)
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(document, args.out / "results.json")
        written = write_report(document, args.out)
    except (
        DatasetError,
        InvalidImageError,
        FaceDetectorError,
        ModelFileError,
        CalibrationError,
        ValueError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_table(document["summary"])))
    for baseline in (static or {}).get("classifiers", []):
        print(
            f"static baseline {baseline['name']}: F1 "
            f"{mean_ci_text(baseline['f1_mean'], baseline['f1_ci95'])}"
        )
    print(f"wrote {args.out / 'results.json'}, " + ", ".join(str(p) for p in written))
    print(f"total {document['seconds']} s")
    return 0


def _few_shot(
    args: argparse.Namespace,
    dataset: FaceDataset,
    features: np.ndarray,
    valid: np.ndarray,
    conditions: list[str],
    config: ProtocolConfig,
    imagination: ImaginationModel,
) -> dict[str, Any] | None:
    if args.few_shot_class == "none":
        return None
    new_class = few_shot_class(dataset, args.few_shot_class)
    results, skipped = run_few_shot_all(
        dataset,
        features,
        new_class,
        conditions,
        config,
        imagination,
        shots=[int(k) for k in args.shots.split(",")],
        min_classes=args.few_shot_min_classes,
        max_subjects=args.max_subjects,
        test_fraction=args.test_fraction,
        allow_frame_split=args.frame_split != "never",
        valid=valid,
        progress=not args.no_progress,
    )
    return {
        "class": new_class,
        "description": (
            f"After a subject's other classes (default order; subjects with >= "
            f"{args.few_shot_min_classes} of them), {new_class} is taught from k of "
            "its training faces in one episode; new-class accuracy = share of its held-out "
            "faces recognised as it; retention = F1 on the old classes' held-out faces before "
            "and after teaching; all F1 after = F1 over the old classes and the new one on all "
            "those faces (a memory can recognise the new class by relabelling old knowledge: "
            "recall up, retention down). Split as above (frame split allowed for the new class "
            "unless --frame-split never)."
        ),
        "shots": [int(k) for k in args.shots.split(",")],
        "results": results,
        "skipped_subjects": skipped,
    }


def _static(
    args: argparse.Namespace,
    encoder: Any,
    space: FeatureSpace,
    subjects: list[Any],
    fallback: FallbackFn | None,
    answers: Fallback | None,
    progress: bool,
) -> dict[str, Any] | None:
    """Person-independent classifiers on the same held-out faces."""
    classifiers = []
    if fallback is not None and answers is not None:
        classifiers.append(
            score_subjects(
                "fallback",
                "the runtime's answer for a person not learned yet: the "
                f"{answers.describe()} (FER2013)",
                lambda data: fallback(data.split.test),
                subjects,
            )
        )
    if args.static_train != "none":
        classifiers.append(
            logistic_baseline(
                load_npz(args.static_train),
                lambda faces: _encode(encoder, faces, space),
                encoder.metadata,
                subjects,
                args.static_samples,
                args.seed,
                progress,
            )
        )
    if not classifiers:
        return None
    return {
        "description": "person-independent classifiers scored on each subject's held-out faces "
        "of all the subject's classes (macro F1; a class a classifier cannot name, e.g. "
        "contempt, counts as missed)",
        "classifiers": classifiers,
    }


def _meta(
    args: argparse.Namespace,
    dataset: FaceDataset,
    models: dict[str, Any],
    model_meta: Any,
    prepared: Any,
    leaks: bool,
    imagination: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "package_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": ["clifer-edge", "eval", *sys.argv[2:]],
        "data": {
            "path": dataset.source,
            "sha256": sha256_file(dataset.source),
            "n_faces": len(dataset),
        },
        "models": models,
        "features": {
            "kind": "encoder",
            "latent_space": args.latent_space,
            "latent_scale": args.latent_scale,
            "description": f"{args.variant} CAAE encoder latents ({args.latent_space}) "
            f"x {args.latent_scale} (z_dim "
            f"{model_meta.z_dim}, {model_meta.image_size}x{model_meta.image_size}x"
            f"{model_meta.channels} faces)",
        },
        "imagination": "after each class, the robot's ImaginationScheduler runs as in an idle "
        "period without time limit: the subject's episodic prototypes not imagined yet are "
        + (
            "moved by the calibration's FER2013 class-mean offset to"
            if imagination.method == "class_offsets"
            else "decoded by G under and re-encoded by E for"
        )
        + " every expression of the model vocabulary not learned for real and learned in "
        "chunks by the memory's imagined network, which yields to real faces "
        f"({_describe_imagination(imagination)})",
        "split_rule": SPLIT_RULE,
        "split": {
            "test_fraction": round(args.test_fraction, 4),
            "seed": args.seed,
            "min_classes": args.min_classes,
            "frame_split": args.frame_split,
            "max_subjects": args.max_subjects,
        },
        "leaks_near_duplicates": leaks,
        "protocol": {
            "episode_size": 5,
            "gdm_config": _gdm_config(args.gdm_config).to_dict(),
            "known_people": "all" if args.known_people is None else args.known_people,
        },
    }
    if prepared.detection is not None:
        meta["face_detection"] = prepared.detection
    return meta
