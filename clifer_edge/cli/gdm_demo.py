"""GDM demo on real faces: each subject's expressions learned one class at a time.

The memory alone, without the Imagination model: faces are represented by a fixed, documented
feature, PCA of 48x48 grey pixels fitted on FER2013 Training (different people from CK+ and
JAFFE), each vector scaled to a fixed norm (``clifer-edge eval`` runs the same protocol on the
encoder's latents). JAFFE photos are full frames, so the face is detected and cropped first, as
the robot does (the shipped runtime config's detector and framing). For every subject with at
least ``--min-classes`` classes the Growing Dual Memory learns the classes in CLIFER's order
(neutral, happiness, surprise, anger, fear, sadness, disgust, others) in episodes of 5, then
episodic and semantic F1 are measured on that subject's held-out faces (Experiment 1: seen
classes; final step = all classes). The table gives the mean and 95% confidence interval
across subjects.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from clifer_edge.cli._common import (
    add_split_arguments,
    check_split_arguments,
    choose_subjects,
    leak_warning,
)
from clifer_edge.datasets import DatasetError, load_npz
from clifer_edge.evaluation.features import PixelPCA, prepare_faces
from clifer_edge.evaluation.protocol import ProtocolConfig, run_protocol, summarise
from clifer_edge.evaluation.report import json_safe, summary_table
from clifer_edge.evaluation.split import SPLIT_RULE
from clifer_edge.preprocessing import InvalidImageError
from clifer_edge.runtime.config import load_config

DEFAULT_DATA = ("ckplus48.npz", "jaffe.npz")
#: Data sets of full-frame photos (the face must be detected); others are face crops.
FULL_FRAME = ("jaffe",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        nargs="+",
        default=list(DEFAULT_DATA),
        help="per-subject npz files (names are looked up in the shared data dir); "
        "default: ckplus48.npz jaffe.npz",
    )
    parser.add_argument(
        "--pca-fit",
        default="fer2013.npz",
        help="face crops of OTHER people to fit the PCA on (its Training split if it has one)",
    )
    parser.add_argument("--components", type=int, default=50, help="PCA components (50)")
    parser.add_argument(
        "--pca-samples",
        type=int,
        default=10000,
        help="fit the PCA on a seeded random subset of this many faces (10000)",
    )
    parser.add_argument(
        "--feature-scale",
        type=float,
        default=16.0,
        help="norm of every feature vector (16; sets distances for the GDM thresholds)",
    )
    parser.add_argument(
        "--conditions",
        default="gdm,replay",
        help="comma-separated among gdm, replay (default both)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    add_split_arguments(parser)


def _fit_pca(args: argparse.Namespace) -> PixelPCA:
    fitting = load_npz(args.pca_fit)
    if fitting.splits is not None and "Training" in set(fitting.splits):
        fitting = fitting.subset(fitting.splits == "Training")
    if args.pca_samples < len(fitting):
        rng = np.random.default_rng(args.seed)
        fitting = fitting.subset(np.sort(rng.choice(len(fitting), args.pca_samples, replace=False)))
    prepared = prepare_faces(fitting, progress=False)
    return PixelPCA(args.components, args.feature_scale, args.seed).fit(prepared.faces)


def run(args: argparse.Namespace) -> int:
    try:
        check_split_arguments(args)
        if args.pca_samples < args.components:
            raise ValueError(
                f"--pca-samples {args.pca_samples} should be >= --components {args.components}"
            )
        conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
        for condition in conditions:
            if condition not in ("gdm", "replay"):
                raise ValueError(f"condition {condition!r} should be gdm or replay here")
        started = time.perf_counter()
        pca = _fit_pca(args)
        print(f"features: {pca.describe()} ({Path(args.pca_fit).name})")
        print(f"split rule: {SPLIT_RULE}")
        config = ProtocolConfig(seed=args.seed)
        report = []
        table: list[str] = []
        for name in args.data:
            dataset = load_npz(name)
            short = Path(dataset.source).stem
            detector = load_config().faces.build_detector() if short in FULL_FRAME else None
            prepared = prepare_faces(dataset, detector=detector, progress=not args.no_progress)
            if prepared.detection:
                d = prepared.detection
                print(f"{short}: face found in {d['found']}/{d['total']} images ({d['method']})")
            features = pca.transform(prepared.faces)
            subjects, skipped, leaks = choose_subjects(dataset, features, args, prepared.valid)
            if leaks:
                print(leak_warning(short))
            print(f"{short}: {len(subjects)} subjects evaluated, {len(skipped)} skipped")
            if not subjects:
                continue
            result = run_protocol(subjects, conditions, config, progress=not args.no_progress)
            rows = summarise(result)
            table += [f"\n{short} ({'frame split, leaks' if leaks else 'sequence-disjoint'})"]
            table += summary_table(rows)
            report.append(
                {
                    "data": dataset.source,
                    "leaks_near_duplicates": leaks,
                    "summary": rows,
                    "subjects": result.subjects,
                    "skipped_subjects": skipped,
                    "runs": result.runs,
                }
            )
        if not report:
            print("error: no subject could be evaluated", file=sys.stderr)
            return 1
        print("\n".join(table))
        print(f"\ntotal {time.perf_counter() - started:.1f} s")
        if args.json is not None:
            document = {"features": pca.describe(), "split_rule": SPLIT_RULE, "datasets": report}
            args.json.write_text(json.dumps(json_safe(document), indent=1) + "\n")
        return 0
    except (DatasetError, InvalidImageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
