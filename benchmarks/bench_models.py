"""Latency of the exported encoder and generator per face with LiteRT, 1 and 2 threads.

The export's expression model (the fallback for persons not learned yet), where there is one, is
timed on one face too.

Times one face at a time (what the robot does per detection) and a batch of 64 (what idle-time
imagination does), after a warm-up, on real CK+ faces. The float32 export, when present in the
same directory, is timed in the same run as the baseline, and the int8/float32 ratio printed.

Run: ``python benchmarks/bench_models.py [--models DIR] [--repeats 200]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from clifer_edge.datasets import default_data_dir, load_npz
from clifer_edge.models import DEFAULT_MODEL_DIR, ModelFiles, load_default_models, model_filename
from clifer_edge.preprocessing import preprocess_faces

BATCH = 64


def _time(call, repeats: int) -> np.ndarray:
    """Seconds per call, after a warm-up of a tenth of the repeats."""
    for _ in range(max(3, repeats // 10)):
        call()
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    return times


def _summary(times: np.ndarray, per: int = 1) -> dict[str, float]:
    ms = 1000.0 * times / per
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
    }


def bench_variant(
    model_dir: Path, variant: str, threads: int, faces: np.ndarray, repeats: int
) -> dict[str, object]:
    encoder, generator = load_default_models(variant, num_threads=threads, model_dir=model_dir)
    z = encoder.encode(faces[:BATCH])
    one_face, one_z = faces[:1], z[:1]
    expressions = [generator.vocabulary[i % len(generator.vocabulary)] for i in range(BATCH)]
    expression_model = ModelFiles.locate(model_dir, variant).load_expression(threads)
    extra = {}
    if expression_model is not None:
        extra["expression_model_one_face"] = _summary(
            _time(lambda: expression_model.predict_proba(one_face), repeats)
        )
    return {
        "runtime": encoder.model.backend,
        "encoder_one_face": _summary(_time(lambda: encoder.encode(one_face), repeats)),
        "encoder_batch64_per_face": _summary(
            _time(lambda: encoder.encode(faces[:BATCH]), max(10, repeats // 10)), BATCH
        ),
        "generator_one_face": _summary(
            _time(lambda: generator.generate(one_z, "happiness"), repeats)
        ),
        "generator_batch64_per_face": _summary(
            _time(lambda: generator.generate(z, expressions), max(10, repeats // 10)), BATCH
        ),
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--data", default=None, help="ckplus48.npz (default: shared data dir)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    data = load_npz(args.data or default_data_dir() / "ckplus48.npz")
    report: dict[str, object] = {
        "models": str(args.models),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "repeats": args.repeats,
    }
    variants = [
        v for v in ("int8", "float32") if (args.models / model_filename("encoder", v)).exists()
    ]
    for variant in variants:
        encoder, _ = load_default_models(variant, model_dir=args.models)
        faces = preprocess_faces(
            data.images[:BATCH], encoder.metadata.image_size, encoder.metadata.channels
        )
        report[variant] = {
            f"{threads}_threads": bench_variant(args.models, variant, threads, faces, args.repeats)
            for threads in args.threads
        }
    if "float32" in report:
        report["int8_over_float32_p50"] = {
            key: {
                part: round(
                    report["int8"][key][part]["p50_ms"] / report["float32"][key][part]["p50_ms"], 3
                )
                for part in ("encoder_one_face", "generator_one_face")
            }
            for key in report["int8"]
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
