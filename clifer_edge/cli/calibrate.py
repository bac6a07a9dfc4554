"""Calibrate the latent space of the configured encoder on FER2013 (memories + fallback).

Writes the standardisation the persons' memories learn in and the person-independent fallback
classifier for new persons, tied to the encoder file by SHA-256. Rebuild it whenever the models
change (the runtime refuses a calibration of another encoder).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clifer_edge.models.calibration import build_calibration
from clifer_edge.runtime.config import load_config
from clifer_edge.runtime.runtime import calibration_path, encoder_file, load_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="runtime YAML (default: the shipped default)")
    parser.add_argument("--data", default="fer2013.npz", help="FER2013 npz (shared data layout)")
    parser.add_argument(
        "--per-class", type=int, default=300, help="training faces per class (default 300)"
    )
    parser.add_argument("--out", help="output file (default: beside the models)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    encoder, _ = load_models(config)
    calibration, scores = build_calibration(
        encoder, encoder_file(encoder, config), args.data, args.per_class, args.seed
    )
    out = Path(args.out) if args.out else calibration_path(config)
    calibration.save(out)
    print(
        f"calibration written to {out} ({calibration.info['n_train']} FER2013 training faces); "
        f"fallback on FER2013 PublicTest ({int(scores['n_test'])} faces, class-balanced): "
        f"accuracy {scores.get('accuracy', float('nan')):.3f}, "
        f"macro F1 {scores.get('macro_f1', float('nan')):.3f} "
        f"(chance {1 / len(calibration.labels):.3f})"
    )
    return 0
