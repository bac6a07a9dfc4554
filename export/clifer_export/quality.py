"""Measure the shipped Imagination model: expression control, identity keeping, reconstruction.

All on FER2013 PublicTest faces (the CAAE trained on Training only), run through the exported
TFLite files exactly as the robot runs them (:func:`clifer_edge.models.load_default_models`):

- **expression control**: an independent classifier (:mod:`clifer_train.expression_classifier`,
  trained on FER2013 Training) judges the imagined faces G(E(x), c); per target class c, the share
  recognised as c, and the *lift*: that share minus the mean share of faces imagined with the
  other targets that the judge also calls c (0 = the condition makes no difference; it discounts
  a judge that calls many generated faces by one class). The judge's accuracy on the real
  PublicTest faces is given for reference;
- **identity keeping**: mean L1 between E(G(E(x), c)) and E(x) per target class (latent units,
  [-1, 1]), against the mean L1 between the latents of two different faces for scale; and the
  share of imagined faces whose latent E(G(E(x), c)) lies nearer to E(x) than to the latents of
  100 other PublicTest faces (in the whole latent, and in the identity code alone when the
  metadata says where it starts);
- **reconstruction**: mean L1 between G(E(x), label(x)) and x, in [-1, 1] and in grey levels;
- **file sizes** of the models.

Run: ``python -m clifer_export.quality --models clifer_edge/models/default --judge runs/judge.keras
--out docs/export``; writes ``quality.json`` and ``samples.png`` (real | reconstruction | every
expression).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.datasets import default_data_dir, load_npz
from clifer_edge.models import Encoder, Generator, load_default_models
from clifer_edge.preprocessing import preprocess_faces, to_uint8


class TFLiteJudge:
    """A FER2013 expression classifier in TFLite as the judge, e.g. the ``fer`` package's
    ``emotion_model_quantized.tflite`` (mini-Xception, 64x64 grey faces in [-1, 1], FER2013's
    class order) — trained by other people, so it shares nothing with our encoder.

    ``predict`` takes faces in [-1, 1] (any square size: resized to the model's input) and returns
    probabilities in ``vocabulary`` order, like a Keras judge.
    """

    def __init__(self, path: str | os.PathLike[str], vocabulary: Sequence[str]) -> None:
        from clifer_edge.models.litert import TFLiteModel
        from clifer_train.data import FER2013_EMOTIONS

        self.model = TFLiteModel(path)
        self.size = int(self.model.inputs[0].shape[1])
        self.columns = [FER2013_EMOTIONS.index(label) for label in vocabulary]

    def predict(self, images: np.ndarray, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        import cv2

        out = []
        for begin in range(0, len(images), batch_size):
            batch = images[begin : begin + batch_size, :, :, 0]
            resized = np.stack(
                [
                    cv2.resize(face, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
                    for face in batch
                ]
            )[..., None]
            out.append(self.model.run([resized])[0][:, self.columns])
        return np.concatenate(out)


def load_judge(path: str | os.PathLike[str], vocabulary: Sequence[str]) -> Any:
    """A ``.keras`` judge (:mod:`clifer_train.expression_classifier`) or a FER2013 ``.tflite``."""
    if Path(path).suffix == ".tflite":
        return TFLiteJudge(path, vocabulary)
    from clifer_train.expression_classifier import load_classifier

    return load_classifier(path)


def _imagine_all(
    encoder: Encoder, generator: Generator, faces: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    z = encoder.encode(faces)
    return z, {c: generator.generate(z, c) for c in generator.vocabulary}


def measure(
    encoder: Encoder,
    generator: Generator,
    judge: Any,
    faces: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
) -> dict[str, Any]:
    """The figures of the module docstring for ``faces`` with true ``labels``."""
    vocabulary = generator.vocabulary
    index = {name: i for i, name in enumerate(vocabulary)}
    keep = np.array([label in index for label in labels])
    faces, labels = faces[keep], labels[keep]
    z, imagined = _imagine_all(encoder, generator, faces)

    def judged(images: np.ndarray) -> np.ndarray:
        return np.argmax(judge.predict(images, batch_size=256, verbose=0), axis=1)

    truth = np.array([index[label] for label in labels])
    real_pred = judged(faces)
    control, identity = {}, {}
    # confusion[t, j]: share of faces imagined with target t that the judge calls j.
    confusion = np.zeros((len(vocabulary), len(vocabulary)))
    for c, images in imagined.items():
        verdicts = judged(images)
        confusion[index[c]] = np.bincount(verdicts, minlength=len(vocabulary)) / len(verdicts)
        control[c] = float(confusion[index[c], index[c]])
        identity[c] = float(np.mean(np.abs(encoder.encode(images) - z)))
    # A judge biased towards a class (or fooled by artefacts) calls many imagined faces by that
    # class whatever the target; the lift subtracts how often it does so for the other targets.
    off_target = (confusion.sum(axis=0) - np.diag(confusion)) / (len(vocabulary) - 1)
    lift = {c: float(confusion[i, i] - off_target[i]) for c, i in index.items()}
    found, found_identity = _identity_retrieval(encoder, z, imagined, seed)
    reconstruction = generator.generate(z, list(labels))
    recon_l1 = float(np.mean(np.abs(reconstruction - faces)))
    rng = np.random.default_rng(seed)
    other = rng.permutation(len(z))
    between_faces = float(np.mean(np.abs(z - z[other])))
    return {
        "faces": len(faces),
        "judge_accuracy_on_real_faces": float(np.mean(real_pred == truth)),
        "judge_accuracy_on_real_faces_per_class": {
            c: float(np.mean(real_pred[truth == i] == i))
            for i, c in enumerate(vocabulary)
            if np.any(truth == i)
        },
        "judge_accuracy_on_reconstructions": float(np.mean(judged(reconstruction) == truth)),
        "expression_control_accuracy": control,
        "expression_control_mean": float(np.mean(list(control.values()))),
        "expression_control_lift": lift,
        "expression_control_lift_mean": float(np.mean(list(lift.values()))),
        "judged_as_by_target": {
            c: {j: float(confusion[index[c], index[j]]) for j in vocabulary} for c in vocabulary
        },
        "identity_latent_l1": identity,
        "identity_latent_l1_mean": float(np.mean(list(identity.values()))),
        "identity_nearest_of_101": found,
        "identity_nearest_of_101_mean": float(np.mean(list(found.values()))),
        "identity_code_nearest_of_101": found_identity,
        "identity_code_nearest_of_101_mean": float(np.mean(list(found_identity.values())))
        if found_identity
        else None,
        "latent_l1_between_different_faces": between_faces,
        "reconstruction_l1": recon_l1,
        "reconstruction_l1_grey_levels": recon_l1 * 127.5,
    }


def _identity_retrieval(
    encoder: Encoder,
    z: np.ndarray,
    imagined: dict[str, np.ndarray],
    seed: int,
    n_others: int = 100,
) -> tuple[dict[str, float], dict[str, float]]:
    """Per target c: share of faces whose E(G(E(x), c)) is nearest to E(x) among E(x) and the
    latents of ``n_others`` other faces (whole latent; and identity code alone, if known)."""
    n = len(z)
    rng = np.random.default_rng(seed + 1)
    others = np.stack(
        [
            rng.choice(np.delete(np.arange(n), i), size=min(n_others, n - 1), replace=False)
            for i in range(n)
        ]
    )
    candidates = np.concatenate([np.arange(n)[:, None], others], axis=1)  # own latent first
    config = encoder.metadata.training.get("config") or {}
    start = config.get("z_expression_dim")
    parts = {"whole": slice(None)}
    if start:
        parts["identity"] = slice(int(start), None)
    found: dict[str, dict[str, float]] = {name: {} for name in parts}
    for c, images in imagined.items():
        z_c = encoder.encode(images)
        for name, part in parts.items():
            distance = np.linalg.norm(z[candidates][:, :, part] - z_c[:, None, part], axis=2)
            found[name][c] = float(np.mean(np.argmin(distance, axis=1) == 0))
    return found["whole"], found.get("identity", {})


def sample_grid(
    encoder: Encoder,
    generator: Generator,
    faces: np.ndarray,
    path: str | os.PathLike[str],
    row_labels: list[str] | None = None,
) -> Path:
    """PNG with one row per face: the input, then G(E(x), c) for every expression c."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, imagined = _imagine_all(encoder, generator, faces)
    columns = [("input", faces), *imagined.items()]
    fig, axes = plt.subplots(
        len(faces), len(columns), figsize=(1.1 * len(columns), 1.1 * len(faces)), squeeze=False
    )
    for col, (title, images) in enumerate(columns):
        for row in range(len(faces)):
            ax = axes[row, col]
            ax.imshow(to_uint8(images[row])[..., 0], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
            if col == 0 and row_labels:
                ax.set_ylabel(row_labels[row], fontsize=8)
    fig.suptitle("PublicTest faces and G(E(x), c) for each expression c (int8 TFLite)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default=None, help="exported model directory (default: bundled)"
    )
    parser.add_argument("--variant", default="int8", choices=["int8", "float16", "float32"])
    parser.add_argument(
        "--judge",
        required=True,
        help="expression classifier: .keras (clifer_train.expression_classifier) or a FER2013 "
        ".tflite (e.g. the fer package's emotion_model_quantized.tflite)",
    )
    parser.add_argument("--data", default=None, help="fer2013.npz (default: shared data dir)")
    parser.add_argument("--faces", type=int, default=1000, help="PublicTest faces to measure on")
    parser.add_argument("--out", required=True, help="directory for quality.json and samples.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    encoder, generator = load_default_models(args.variant, model_dir=args.models)
    data = load_npz(args.data or default_data_dir() / "fer2013.npz")
    test = data.subset(data.splits == "PublicTest")
    rows = np.random.default_rng(args.seed).permutation(len(test))[: args.faces]
    meta = encoder.metadata
    faces = preprocess_faces(test.images[rows], meta.image_size, meta.channels)
    judge = load_judge(args.judge, meta.vocabulary)
    report = measure(encoder, generator, judge, faces, test.labels[rows])
    report["judge"] = Path(args.judge).name
    report["variant"] = args.variant
    report["bytes"] = {
        name: entry["bytes"] for name, entry in meta.models.items() if args.variant in name
    }
    report["training"] = meta.training
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid_rows = [int(np.flatnonzero(test.labels[rows] == c)[0]) for c in meta.vocabulary]
    sample_grid(encoder, generator, faces[grid_rows], out / "samples.png", list(meta.vocabulary))
    (out / "quality.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
