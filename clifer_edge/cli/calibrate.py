"""Calibrate the latent space of the configured encoder on FER2013 (memories + fallback).

Writes the standardisation the persons' memories learn in and the person-independent fallback
classifier on latents, tied to the encoder file by SHA-256, and scores the fallback the runtime
will use (the export's expression model if it has one) on FER2013 PublicTest. Rebuild it whenever
the models change: the runtime and ``clifer-edge eval`` refuse a calibration of another encoder
and never build one themselves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clifer_edge.datasets import DatasetError
from clifer_edge.extras import require
from clifer_edge.models import ModelFileError
from clifer_edge.models.calibration import build_calibration
from clifer_edge.runtime.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="runtime YAML (default: the shipped default)")
    parser.add_argument(
        "--model-dir", default=None, help="exported encoder/generator (default: from --config)"
    )
    parser.add_argument("--variant", default=None, help="model variant (default: from --config)")
    parser.add_argument("--data", default="fer2013.npz", help="FER2013 npz (shared data layout)")
    parser.add_argument(
        "--per-class", type=int, default=300, help="training faces per class (default 300)"
    )
    parser.add_argument(
        "--no-head",
        action="store_true",
        help="no expression head: the fallback is the nearest class mean (faster)",
    )
    parser.add_argument("--out", help="output file (default: beside the models)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    require("clifer-edge calibrate", "tqdm", "sklearn.metrics")  # progress, scores (eval extra)
    try:
        config = load_config(args.config)
        models: dict[str, object] = {}
        if args.model_dir is not None:
            models["directory"] = args.model_dir
        if args.variant is not None:
            models["variant"] = args.variant
        if models:
            config = config.replace(models=models)
        files = config.model_files()
        encoder, _ = files.load(config.models.num_threads)
        expression_model = files.load_expression(config.models.num_threads)
        calibration, scores = build_calibration(
            encoder,
            files.encoder,
            args.data,
            args.per_class,
            args.seed,
            head=not args.no_head,
            expression_model=expression_model,
        )
    except (DatasetError, ModelFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else files.calibration
    calibration.save(out)
    info = calibration.info
    if "fallback" in info:
        print(
            f"fallback on all of FER2013 PublicTest ({int(scores['n_test'])} faces): class means "
            f"accuracy {info['publictest_class_means_accuracy']:.3f} / macro F1 "
            f"{info['publictest_class_means_macro_f1']:.3f}; expression head accuracy "
            f"{info['publictest_head_accuracy']:.3f} / macro F1 "
            f"{info['publictest_head_macro_f1']:.3f}; the latent's classifier: {info['fallback']}"
        )
    if "publictest_expression_model_accuracy" in info:
        print(
            f"expression model {files.expression.name} on all of FER2013 PublicTest "
            f"({int(info['publictest_expression_model_n_test'])} faces): accuracy "
            f"{info['publictest_expression_model_accuracy']:.3f} / macro F1 "
            f"{info['publictest_expression_model_macro_f1']:.3f} (face alone "
            f"{info['publictest_expression_model_plain_accuracy']:.3f} / "
            f"{info['publictest_expression_model_plain_macro_f1']:.3f}, averaged with its mirror "
            f"image {info['publictest_expression_model_mirrored_accuracy']:.3f} / "
            f"{info['publictest_expression_model_mirrored_macro_f1']:.3f}); it answers for new "
            "persons"
        )
    sample = "all" if "fallback" in info or expression_model is not None else "class-balanced"
    print(
        f"calibration written to {out} ({info['n_train']} FER2013 training faces); "
        f"fallback on FER2013 PublicTest ({int(scores['n_test'])} faces, {sample}): "
        f"accuracy {scores.get('accuracy', float('nan')):.3f}, "
        f"macro F1 {scores.get('macro_f1', float('nan')):.3f} "
        f"(chance {1 / len(calibration.labels):.3f})"
    )
    return 0
