"""Static baselines: person-independent expression classifiers, one for everyone.

CLIFER's point is that per-person memories beat a classifier trained once on a crowd. Two such
classifiers are scored on exactly the held-out faces each subject is tested on in the protocol
(all of the subject's classes, as in Experiment 2 after the last class), in the feature space the
memories see:

- ``fallback``: the runtime's own answer for a person it has not learned yet (the export's
  expression model, or the latent calibration's classifier: :mod:`clifer_edge.models.fallback`);
- ``logreg``: a multinomial logistic regression on encoder features of FER2013 Training faces
  (a stronger crowd classifier, trained on other people).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from clifer_edge.datasets import FaceDataset
from clifer_edge.evaluation.features import prepare_faces
from clifer_edge.evaluation.protocol import macro_f1
from clifer_edge.evaluation.stats import mean_ci95

#: ``predict(subject) -> labels`` of a person-independent classifier, one per held-out face of a
#: :class:`~clifer_edge.evaluation.protocol.SubjectData` (from its features or its data set rows).
PredictFn = Callable[[Any], Sequence[str]]


def score_subjects(
    name: str, description: str, predict: PredictFn, subjects: Sequence[Any]
) -> dict[str, Any]:
    """Macro F1 of ``predict`` on every subject's held-out faces (over the subject's classes;
    a class the classifier cannot name, e.g. contempt, counts as missed)."""
    per_subject: dict[str, float] = {}
    for data in subjects:
        predicted = np.asarray(predict(data), dtype=str)
        per_subject[str(data.subject)] = macro_f1(data.y_test, predicted, data.split.classes)
    mean, ci = mean_ci95(list(per_subject.values()))
    return {
        "name": name,
        "description": description,
        "f1_mean": mean,
        "f1_ci95": ci,
        "n_subjects": len(per_subject),
        "per_subject": per_subject,
    }


def logistic_baseline(
    training: FaceDataset,
    features: Callable[[np.ndarray], np.ndarray],
    model_meta: Any,
    subjects: Sequence[Any],
    n_samples: int = 10000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit a logistic regression on ``training`` (its Training split if any) and score subjects.

    ``features`` maps model-ready faces to the memories' feature space.
    """
    if training.splits is not None and "Training" in set(training.splits):
        training = training.subset(training.splits == "Training")
    if n_samples < len(training):
        rows = np.random.default_rng(seed).choice(len(training), n_samples, replace=False)
        training = training.subset(np.sort(rows))
    prepared = prepare_faces(
        training, model_meta.image_size, model_meta.channels, progress=progress
    )
    model = LogisticRegression(max_iter=2000)
    model.fit(features(prepared.faces), training.labels)
    classes = ", ".join(sorted(str(c) for c in set(training.labels)))
    description = (
        f"multinomial logistic regression on the features of {len(training)} "
        f"{training.source.rsplit('/', 1)[-1]} Training faces (other people; {classes})"
    )
    return score_subjects("logreg", description, lambda data: model.predict(data.X_test), subjects)
