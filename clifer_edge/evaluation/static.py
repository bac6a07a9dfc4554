"""The static baseline: one person-independent expression classifier for everyone.

CLIFER's point is that per-person memories beat a classifier trained once on a crowd. The
baseline here is that crowd classifier in the same feature space: a multinomial logistic
regression on the encoder latents of FER2013 Training faces (other people), tested on exactly
the held-out faces each subject is tested on in the protocol (all of the subject's classes, as
in Experiment 2 after the last class).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from clifer_edge.datasets import FaceDataset
from clifer_edge.evaluation.features import prepare_faces
from clifer_edge.evaluation.stats import mean_ci95


def static_baseline(
    training: FaceDataset,
    encode: Callable[[np.ndarray], np.ndarray],
    model_meta: Any,
    subjects: Sequence[Any],
    n_samples: int = 10000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit on ``training`` (its Training split if it has one) and score every subject.

    Returns a dict with the description, per-subject F1, mean and 95% CI half-width.
    """
    if training.splits is not None and "Training" in set(training.splits):
        training = training.subset(training.splits == "Training")
    if n_samples < len(training):
        rows = np.random.default_rng(seed).choice(len(training), n_samples, replace=False)
        training = training.subset(np.sort(rows))
    prepared = prepare_faces(
        training, model_meta.image_size, model_meta.channels, progress=progress
    )
    latents = encode(prepared.faces)
    model = LogisticRegression(max_iter=2000, C=1.0)
    model.fit(latents, training.labels)
    per_subject: dict[str, float] = {}
    for data in subjects:
        predicted = model.predict(data.X_test)
        per_subject[str(data.subject)] = float(
            f1_score(
                data.y_test,
                predicted,
                labels=list(data.split.classes),
                average="macro",
                zero_division=0,
            )
        )
    mean, ci = mean_ci95(list(per_subject.values()))
    return {
        "description": (
            f"Multinomial logistic regression on encoder latents of {len(training)} "
            f"{training.source.rsplit('/', 1)[-1]} Training faces (other people; classes "
            f"{', '.join(sorted(str(c) for c in set(training.labels)))}), tested on each "
            "subject's held-out faces of all "
            "the subject's classes (macro F1; a class it was never trained on, e.g. contempt, "
            "counts as missed)."
        ),
        "train_faces": len(training),
        "f1_mean": mean,
        "f1_ci95": ci,
        "n_subjects": len(per_subject),
        "per_subject": per_subject,
    }
