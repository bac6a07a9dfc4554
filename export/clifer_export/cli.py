"""``clifer-export``: turn a clifer-train run into TFLite models for the robot.

Example (what produced the bundled default)::

    clifer-export --checkpoint runs/default --format int8 --out clifer_edge/models/default --parity
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from clifer_edge.datasets import DatasetError, default_data_dir
from clifer_edge.extras import needs_extra
from clifer_edge.models import VARIANTS
from clifer_edge.models.litert import ModelFileError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clifer-export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="clifer-train run directory (holds encoder.keras, generator.keras, train_info.json)",
    )
    parser.add_argument("--format", choices=[*VARIANTS, "all"], default="int8")
    parser.add_argument(
        "--expression-model",
        default=None,
        help="also export this expression classifier (.keras from clifer_train."
        "expression_classifier, its .json beside it): the answer for persons not learned yet",
    )
    parser.add_argument("--out", required=True, help="directory for the .tflite files and metadata")
    parser.add_argument(
        "--data",
        default=None,
        help="training data for int8 calibration (default: the file named in train_info.json)",
    )
    parser.add_argument(
        "--calibration-samples", type=int, default=400, help="training faces to calibrate int8"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--parity",
        action="store_true",
        help="also write parity.json/parity.md (Keras vs TFLite, GDM F1 on CK+ and JAFFE)",
    )
    parser.add_argument(
        "--parity-out", default=None, help="directory for the parity report (default: --out)"
    )
    parser.add_argument(
        "--no-gdm", action="store_true", help="parity on tensors only (skip the GDM protocol)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="shared data directory for the parity report (default: $CLIFER_DATA_DIR or "
        "../shared/data)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with needs_extra("clifer-export"):  # TensorFlow, and the evaluation for --parity
        import keras  # noqa: F401

        from clifer_export.convert import (
            ExportError,
            export_run,
            load_expression_model,
            load_run,
        )
        from clifer_export.parity import parity_report, write_report

    variants = list(VARIANTS) if args.format == "all" else [args.format]
    start = time.perf_counter()
    try:
        run = load_run(args.checkpoint)
        expression_model = (
            load_expression_model(args.expression_model, run) if args.expression_model else None
        )
        metadata = export_run(
            run,
            args.out,
            variants,
            data=args.data,
            n_calibration=args.calibration_samples,
            seed=args.seed,
            progress=lambda message: print(f"clifer-export: {message}", file=sys.stderr),
            expression_model=expression_model,
        )
    except (ExportError, DatasetError, ModelFileError) as error:
        print(f"clifer-export: error: {error}", file=sys.stderr)
        return 2
    for name, entry in metadata.models.items():
        print(f"{args.out}/{name}: {entry['bytes'] / 1024:.0f} KB, sha256 {entry['sha256'][:16]}")
    print(f"exported in {time.perf_counter() - start:.0f} s")
    if args.parity:
        report = parity_report(
            run,
            args.out,
            args.data_dir or default_data_dir(),
            variants,
            downstream=not args.no_gdm,
            seed=args.seed,
        )
        json_path, md_path = write_report(report, args.parity_out or args.out)
        print(md_path.read_text(encoding="utf-8"))
        print(f"parity report: {json_path}, {md_path}")
        if not report["runtime"].get("ok"):
            print(json.dumps(report["runtime"]), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
