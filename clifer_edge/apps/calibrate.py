"""Build the person-independent fallback classifier (FER2013 class means) for an encoder.

New persons are answered by it until they teach the robot their own expressions. It is tied to the
encoder file by SHA-256, so rebuild it whenever the models change.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from tqdm import tqdm

from clifer_edge.datasets import load_npz
from clifer_edge.preprocessing import preprocess_faces
from clifer_edge.runtime.config import RuntimeConfig, load_config
from clifer_edge.runtime.fallback import FallbackClassifier, file_sha256
from clifer_edge.runtime.runtime import fallback_path, load_models, model_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="runtime YAML (default: the shipped default)")
    parser.add_argument("--data", default="fer2013.npz", help="FER2013 npz (shared data layout)")
    parser.add_argument(
        "--per-class", type=int, default=600, help="training faces per class (default 600)"
    )
    parser.add_argument("--out", help="output file (default: beside the models)")
    parser.add_argument("--seed", type=int, default=0)


def encode_all(encoder: object, images: np.ndarray, desc: str, batch: int = 64) -> np.ndarray:
    """Encode uint8 face crops in batches, with a progress bar."""
    meta = encoder.metadata  # type: ignore[attr-defined]
    out = []
    for begin in tqdm(range(0, len(images), batch), desc=desc, unit="batch", leave=False):
        faces = preprocess_faces(images[begin : begin + batch], meta.image_size, meta.channels)
        out.append(encoder.encode(faces))  # type: ignore[attr-defined]
    return np.concatenate(out).astype(np.float32)


def build_fallback(
    config: RuntimeConfig,
    data: str | Path = "fer2013.npz",
    per_class: int = 600,
    seed: int = 0,
    encoder: object | None = None,
) -> tuple[FallbackClassifier, dict[str, float]]:
    """Fit the fallback on a class-balanced FER2013 training sample; score it on PublicTest."""
    if encoder is None:
        encoder, _ = load_models(config)
    dataset = load_npz(data)
    rng = np.random.default_rng(seed)
    vocabulary = [str(name) for name in encoder.metadata.vocabulary]  # type: ignore[attr-defined]
    splits = dataset.splits if dataset.splits is not None else np.full(len(dataset), "Training")
    train_rows, test_rows = [], []
    for label in vocabulary:
        rows = np.flatnonzero((dataset.labels == label) & (splits == "Training"))
        train_rows.extend(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
        rows = np.flatnonzero((dataset.labels == label) & (splits == "PublicTest"))
        test_rows.extend(rng.choice(rows, size=min(per_class // 3, len(rows)), replace=False))
    train_rows, test_rows = np.sort(train_rows), np.sort(test_rows)
    latents = encode_all(encoder, dataset.images[train_rows], "encode train")
    encoder_file = getattr(encoder, "path", None) or model_paths(config)[0]
    info = {
        "encoder_sha256": file_sha256(encoder_file),
        "data": Path(dataset.source).name,
        "n_train": len(train_rows),
    }
    fallback = FallbackClassifier.fit(latents, dataset.labels[train_rows], info)
    test_latents = encode_all(encoder, dataset.images[test_rows], "encode test")
    predicted = fallback.predict(test_latents)
    truth = dataset.labels[test_rows]
    scores = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "n_test": len(test_rows),
    }
    fallback.info.update({"publictest_" + key: value for key, value in scores.items()})
    return fallback, scores


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    fallback, scores = build_fallback(config, args.data, args.per_class, args.seed)
    out = Path(args.out) if args.out else fallback_path(config)
    fallback.save(out)
    print(
        f"fallback written to {out}: FER2013 PublicTest ({scores['n_test']} faces, balanced) "
        f"accuracy {scores['accuracy']:.3f}, macro F1 {scores['macro_f1']:.3f} "
        f"(chance {1 / len(fallback.labels):.3f})"
    )
    return 0
