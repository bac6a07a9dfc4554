"""Shared pieces of the evaluation sub-commands (data loading, split policy, printing)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from clifer_edge.datasets import FaceDataset
from clifer_edge.evaluation.protocol import prepare_subjects

FRAME_SPLIT_CHOICES = ("auto", "never", "always")


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the per-subject split shared by ``gdm-demo`` and ``eval``."""
    parser.add_argument(
        "--min-classes",
        type=int,
        default=4,
        help="skip subjects with fewer splittable classes (default 4)",
    )
    parser.add_argument("--max-subjects", type=int, default=None, help="evaluate at most N")
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=1.0 / 3.0,
        help="share of each class's sequences held out (default 1/3)",
    )
    parser.add_argument(
        "--frame-split",
        choices=FRAME_SPLIT_CHOICES,
        default="auto",
        help="split a class recorded in one sequence inside that sequence (near-duplicates on "
        "both sides, flagged in the output): 'auto' only when no subject would be usable "
        "otherwise (CK+48 keeps one sequence per class and subject), default auto",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of split, episodes, models")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def check_split_arguments(args: argparse.Namespace) -> None:
    """Reject out-of-range values with the value and the expectation."""
    if args.min_classes < 1:
        raise ValueError(f"--min-classes {args.min_classes} should be >= 1")
    if args.max_subjects is not None and args.max_subjects < 1:
        raise ValueError(f"--max-subjects {args.max_subjects} should be >= 1")
    if not 0.0 < args.test_fraction < 1.0:
        raise ValueError(f"--test-fraction {args.test_fraction} should lie in (0, 1)")


def choose_subjects(
    dataset: FaceDataset,
    features: np.ndarray,
    args: argparse.Namespace,
    valid: np.ndarray | None = None,
    exclude_classes: tuple[str, ...] = (),
) -> tuple[list[Any], dict[str, str], bool]:
    """Split the subjects under the ``--frame-split`` policy; returns (subjects, skipped, leaks)."""

    def attempt(frame_split: bool) -> tuple[list[Any], dict[str, str]]:
        return prepare_subjects(
            dataset,
            features,
            min_classes=args.min_classes,
            max_subjects=args.max_subjects,
            test_fraction=args.test_fraction,
            seed=args.seed,
            allow_frame_split=frame_split,
            exclude_classes=exclude_classes,
            valid=valid,
        )

    subjects, skipped = attempt(args.frame_split == "always")
    if not subjects and args.frame_split == "auto":
        subjects, skipped = attempt(True)
    leaks = any(s.split.frame_split for s in subjects)
    return subjects, skipped, leaks


def leak_warning(name: str) -> str:
    return (
        f"WARNING {name}: every class of a subject is a single sequence here, so the last frame "
        "of each sequence was held out (frame split): near-duplicates on both sides, F1 is an "
        "upper bound on recall of almost identical faces, not generalisation."
    )
