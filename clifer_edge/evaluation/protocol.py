"""The CLIFER per-subject, class-incremental protocol, for any fixed feature extractor.

For every subject, classes are presented one at a time in a class order; each class's training
faces arrive in episodes of ``episode_size``. After each class the learner is tested on the
subject's held-out faces:

- Experiment 1 (remembering): held-out faces of the classes seen so far;
- Experiment 2 (generalising): held-out faces of all the subject's classes, seen or not.

Conditions (Churamani & Gunes 2020): ``mlp`` (an MLP retrained from scratch on everything seen
so far, the batch-learning baseline), ``gdm`` (Growing Dual Memory), ``replay`` (GDM with RNAT
pseudo-rehearsal after every episode, as the robot learns: ``learning.replay``) and ``clifer``
(``replay`` plus imagination after every class: the robot's own
:class:`~clifer_edge.runtime.scheduler.ImaginationScheduler` runs on the subject's memory as in an
idle period, so prototypes are chosen, imagined and learned exactly as on the robot, and the robot
already knows the *other* subjects of the data set, as memories that learned all their training
faces, on which it recentres G's change of expression); and ``offsets``, the same with the
generator-free baseline imagination (``imagination.method: class_offsets``: prototypes moved by
FER2013 class-mean offsets), which the generator has to beat to be worth its cost. Three
diagnostics, run only when asked for, locate what G and the crowd's offsets miss:
``clifer_alone`` is ``clifer`` on a robot that knows nobody else (G's change as it is),
``peers`` moves prototypes by the class-mean offsets of the other subjects' training faces (the
same population and capture), and ``oracle`` moves prototypes by the subject's *own* class-mean
offsets, taken from their training faces of every class, also those not learned yet: what no
robot can know, it bounds what offset imagination could reach in this feature space. The protocol
works on precomputed features, so the same code measures PCA pixels (the GDM demo) or the CAAE
encoder (``clifer-edge eval``).

After each step it also measures imagination directly: the accuracy on held-out faces of the
classes *not yet learned* from the subject (``unseen``; a memory that only knows real classes
scores 0 there by construction), beside the person-independent fallback's accuracy on the same
faces when one is given.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import f1_score
from sklearn.neural_network import MLPClassifier
from tqdm.auto import tqdm

from clifer_edge.datasets import FaceDataset
from clifer_edge.evaluation.split import SubjectSplit, split_subject
from clifer_edge.evaluation.stats import kruskal_wallis, mean_ci95
from clifer_edge.labels import BASIC_EXPRESSIONS
from clifer_edge.runtime.config import ImaginationConfig

CONDITIONS: tuple[str, ...] = ("mlp", "gdm", "replay", "clifer", "offsets")
#: Conditions run only when asked for: ``clifer`` on a robot that knows nobody else
#: (``clifer_alone``), class-mean offsets of the other subjects (``peers``), or the subject's own
#: class-mean offsets (``oracle``, knowledge no robot has).
DIAGNOSTIC_CONDITIONS: tuple[str, ...] = ("clifer_alone", "peers", "oracle")
KNOWN_CONDITIONS: tuple[str, ...] = CONDITIONS + DIAGNOSTIC_CONDITIONS
EXPERIMENTS: tuple[int, ...] = (1, 2)
GDM_MEMORIES: tuple[str, ...] = ("episodic", "semantic")

#: ``fallback(rows [n]) -> labels``: a person-independent classifier (the runtime's answer for a
#: person not learned yet) on data set rows (it may read the faces, not only the features),
#: scored on the same unseen-class faces as the memories.
FallbackFn = Callable[[np.ndarray], Sequence[str]]


@dataclass(frozen=True)
class ImaginationModel:
    """What the ``clifer`` condition imagines with: the robot's encoder, generator and space.

    ``space`` maps the memories' features to encoder latents and back (``to_latent``,
    ``to_memory``): a :class:`~clifer_edge.models.calibration.LatentCalibration` as on the robot,
    or any object with the same two methods (and ``labels``, ``class_means`` in the memories'
    features for the ``offsets`` condition).
    """

    encoder: Any
    generator: Any
    space: Any
    #: The people the robot already knows (``PersonState``), on whom it recentres G.
    peers: tuple[Any, ...] = ()
    #: Their recentring terms (a ``KnownPeople`` shared by every subject's scheduler).
    known: Any = None


class SubjectClassMeans:
    """Class means of some subjects' faces in place of the crowd's (the diagnostic conditions).

    Maps through ``space`` like it; ``labels`` and ``class_means`` are the classes of the given
    faces and their means, so ``class_offsets`` imagination moves each prototype of s by these
    faces' ``mean(c) - mean(s)``.
    """

    def __init__(self, space: Any, X: np.ndarray, labels: Sequence[str]) -> None:
        self.space = space
        y = np.asarray(labels, dtype=str)
        self.labels = sorted(set(y))
        self.class_means = np.stack([X[y == name].mean(axis=0) for name in self.labels])

    def to_memory(self, latents: np.ndarray) -> np.ndarray:
        return self.space.to_memory(latents)

    def to_latent(self, points: np.ndarray) -> np.ndarray:
        return self.space.to_latent(points)


@dataclass
class ProtocolConfig:
    """Settings of one protocol run (everything that changes the numbers is here and reported).

    Attributes
    ----------
    episode_size : int
        Faces per training episode (CLIFER: 5).
    gdm_config : object
        A ``clifer_edge.memory.GDMConfig`` (``None``: CLIFER's defaults).
    mlp_hidden : tuple of int
        Hidden layer sizes of the batch-learning MLP baseline.
    imagination : ImaginationConfig
        The robot's imagination settings (chunk size, replay, residual, re-imagine distance;
        ``clifer_edge/config/default.yaml``), used by the ``clifer`` condition.
    seed : int
        Seeds the split, the episode order, the memories and the MLP.
    known_people : int or None
        How many of the other subjects the ``clifer`` robot already knows (the first ones in
        subject order); ``None``: all of them.
    """

    episode_size: int = 5
    gdm_config: Any = None
    mlp_hidden: tuple[int, ...] = (100,)
    imagination: ImaginationConfig = field(default_factory=ImaginationConfig)
    seed: int = 0
    known_people: int | None = None

    def __post_init__(self) -> None:
        if self.episode_size < 1:
            raise ValueError(f"episode_size={self.episode_size} should be >= 1")
        if self.known_people is not None and self.known_people < 0:
            raise ValueError(f"known_people={self.known_people} should be >= 0 or None")


def class_order(classes: Sequence[str], start: str | None = None) -> list[str]:
    """The presentation order of ``classes``.

    The default is CLIFER's (:data:`~clifer_edge.labels.BASIC_EXPRESSIONS`: neutral, happiness,
    surprise, anger, fear, sadness, disgust), then any other class alphabetically. ``start``
    rotates that cycle to begin at the given class (the paper's order comparison).
    """
    present = set(classes)
    cycle = [c for c in BASIC_EXPRESSIONS] + sorted(present - set(BASIC_EXPRESSIONS))
    if start is not None:
        if start not in cycle:
            raise ValueError(f"order start {start!r} is not one of the classes {cycle}")
        i = cycle.index(start)
        cycle = cycle[i:] + cycle[:i]
    return [c for c in cycle if c in present]


def memories_of(condition: str) -> tuple[str, ...]:
    """Which outputs a condition reports F1 for."""
    return ("mlp",) if condition == "mlp" else GDM_MEMORIES


class _MLPLearner:
    """Batch baseline: retrains an MLP from scratch on all faces seen so far after each class."""

    def __init__(self, config: ProtocolConfig) -> None:
        self.config = config
        self._X: list[np.ndarray] = []
        self._y: list[str] = []
        self._model: MLPClassifier | None = None
        self._only: str | None = None

    def learn(self, X: np.ndarray, labels: Sequence[str]) -> None:
        self._X.append(X)
        self._y.extend(labels)
        classes = sorted(set(self._y))
        if len(classes) == 1:  # an MLP cannot be fitted to one class: it answers that class
            self._model, self._only = None, classes[0]
            return
        self._model = MLPClassifier(
            hidden_layer_sizes=self.config.mlp_hidden,
            max_iter=500,
            random_state=self.config.seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._model.fit(np.concatenate(self._X), np.asarray(self._y))
        self._only = None

    def predict(self, X: np.ndarray) -> dict[str, list[str]]:
        if self._model is None:
            return {"mlp": [self._only or ""] * len(X)}
        return {"mlp": [str(p) for p in self._model.predict(X)]}

    def stats(self) -> dict[str, Any]:
        return {}


class _GDMLearner:
    """GDM trained episode by episode, optionally with RNAT replay and the robot's imagination.

    The subject is held as the runtime holds a person (:class:`PersonState`), so that the robot's
    :class:`ImaginationScheduler` can imagine for them after each class, as in an idle period
    with no time limit.
    """

    def __init__(
        self,
        config: ProtocolConfig,
        replay: bool,
        imagination: ImaginationModel | None,
        person: Any = None,
    ) -> None:
        from clifer_edge.memory import GrowingDualMemory  # the compiled kernels load on use
        from clifer_edge.runtime.persons import PersonState

        self.config = config
        self.replay = replay
        self.imagination = imagination
        self.person = person or PersonState(
            person_id="subject", memory=GrowingDualMemory(config.gdm_config, seed=config.seed)
        )
        self.imagined = 0
        self._scheduler: Any = None
        if imagination is not None:
            from clifer_edge.runtime.scheduler import ImaginationScheduler

            settings = dataclasses.replace(config.imagination, enabled=True)
            self._scheduler = ImaginationScheduler(
                settings,
                imagination.encoder,
                imagination.generator,
                imagination.space,
                known=imagination.known,
            )
            self._scheduler.set_idle(True)
        self._lock = threading.RLock()

    @property
    def memory(self) -> Any:
        return self.person.memory

    def learn(self, X: np.ndarray, labels: Sequence[str]) -> None:
        size = self.config.episode_size
        for start in range(0, len(X), size):
            self.person.learn(
                X[start : start + size], list(labels[start : start + size]), replay=self.replay
            )
        if self._scheduler is not None:
            report = self._scheduler.run(
                [self.person], math.inf, self._lock, peers=self.imagination.peers
            )
            if report is not None:
                self.imagined += report.latents

    def predict(self, X: np.ndarray) -> dict[str, list[str]]:
        return {m: list(self.memory.predict(X, memory=m)) for m in GDM_MEMORIES}

    def stats(self) -> dict[str, Any]:
        s = self.memory.stats()
        return {
            "nodes": {m: int(s[m]["nodes"]) for m in GDM_MEMORIES},
            "imagined": self.imagined,
        }

    def copy(self) -> _GDMLearner:
        """An independent copy (the memory through its own file format, no pickle)."""
        from clifer_edge.memory import GrowingDualMemory

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "memory.npz"
            self.memory.save(path)
            memory = GrowingDualMemory.load(path)
        person = dataclasses.replace(
            self.person, memory=memory, shown_labels=set(self.person.shown_labels)
        )
        twin = _GDMLearner(self.config, self.replay, self.imagination, person)
        twin.imagined = self.imagined
        return twin


def make_learner(
    condition: str, config: ProtocolConfig, imagination: ImaginationModel | None = None
) -> _MLPLearner | _GDMLearner:
    """A fresh learner for one condition of :data:`CONDITIONS`."""
    if condition == "mlp":
        return _MLPLearner(config)
    if condition in ("gdm", "replay"):
        return _GDMLearner(config, replay=condition == "replay", imagination=None)
    if condition in ("clifer", "offsets", *DIAGNOSTIC_CONDITIONS):
        if imagination is None:
            raise ValueError(f"condition {condition!r} needs an ImaginationModel")
        if condition in ("offsets", "peers", "oracle"):
            settings = dataclasses.replace(config.imagination, method="class_offsets")
            config = dataclasses.replace(config, imagination=settings)
        if condition == "clifer_alone":
            settings = dataclasses.replace(config.imagination, recentre=False)
            config = dataclasses.replace(config, imagination=settings)
        return _GDMLearner(config, replay=True, imagination=imagination)
    raise ValueError(f"condition {condition!r} should be one of {list(KNOWN_CONDITIONS)}")


@dataclass
class SubjectData:
    """One subject's features, split by :func:`~clifer_edge.evaluation.split.split_subject`."""

    split: SubjectSplit
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def subject(self) -> str:
        return self.split.subject


def prepare_subjects(
    dataset: FaceDataset,
    features: np.ndarray,
    min_classes: int = 4,
    max_subjects: int | None = None,
    test_fraction: float = 1.0 / 3.0,
    seed: int = 0,
    allow_frame_split: bool = False,
    exclude_classes: Sequence[str] = (),
    valid: np.ndarray | None = None,
) -> tuple[list[SubjectData], dict[str, str]]:
    """Split every subject and keep those with at least ``min_classes`` splittable classes.

    Parameters
    ----------
    features : ndarray of shape (n_samples, n_features)
        One feature row per data set row.
    exclude_classes : sequence of str
        Classes left out of the incremental run (the few-shot class is taught afterwards).
    valid : ndarray of bool, optional
        Rows usable at all (e.g. a face was detected); the others are ignored.

    Returns
    -------
    subjects : list of SubjectData
        In subject-name order, at most ``max_subjects``.
    skipped : dict
        Subject -> reason it was not used.
    """
    if dataset.subjects is None:
        raise ValueError(f"{dataset.source}: no 'subjects' array; the protocol is per subject")
    if features.shape[0] != len(dataset):
        raise ValueError(f"{features.shape[0]} feature rows for {len(dataset)} faces")
    if min_classes < 1:
        raise ValueError(f"min_classes={min_classes} should be >= 1")
    # a copy: the caller's mask must not lose the excluded classes
    keep = np.ones(len(dataset), dtype=bool) if valid is None else np.array(valid, dtype=bool)
    keep &= ~np.isin(dataset.labels, list(exclude_classes))
    rows = np.flatnonzero(keep)
    view = dataset.subset(rows)
    subjects: list[SubjectData] = []
    skipped: dict[str, str] = {}
    for subject in sorted(set(dataset.subjects)):
        if subject not in set(view.subjects):
            skipped[subject] = "no usable faces"
            continue
        split = split_subject(view, subject, test_fraction, seed, allow_frame_split)
        if len(split.classes) < min_classes:
            reason = f"{len(split.classes)} splittable classes < {min_classes}"
            if split.dropped:
                reason += f" (single-sequence classes dropped: {', '.join(split.dropped)})"
            skipped[subject] = reason
            continue
        if max_subjects is not None and len(subjects) >= max_subjects:
            skipped[subject] = f"beyond --max-subjects {max_subjects}"
            continue
        train = rows[split.train]
        test = rows[split.test]
        in_classes = np.isin(dataset.labels[train], split.classes)
        test_in = np.isin(dataset.labels[test], split.classes)
        train, test = train[in_classes], test[test_in]
        subjects.append(
            SubjectData(
                split=SubjectSplit(
                    subject, train, test, split.classes, split.dropped, split.frame_split
                ),
                X_train=features[train],
                y_train=dataset.labels[train],
                X_test=features[test],
                y_test=dataset.labels[test],
            )
        )
    return subjects, skipped


def macro_f1(y_true: np.ndarray, y_pred: Sequence[str], labels: Sequence[str]) -> float:
    """Macro F1 over ``labels`` (predictions outside them count as errors).

    Labels are sorted and the score rounded to 12 digits so that equal results compare equal
    whatever the class order (rank tests across orders must not see round-off ties broken).
    """
    if len(y_true) == 0:
        return math.nan
    score = f1_score(y_true, list(y_pred), labels=sorted(labels), average="macro", zero_division=0)
    return round(float(score), 12)


def _unseen_faces(
    y_true: np.ndarray, y_pred: Sequence[str], seen: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Truth and predictions on the faces of classes not in ``seen`` (None if there are none)."""
    truth = np.asarray(y_true, dtype=str)
    unseen = ~np.isin(truth, list(seen))
    if not unseen.any():
        return None
    return truth[unseen], np.asarray(y_pred, dtype=str)[unseen]


def unseen_accuracy(y_true: np.ndarray, y_pred: Sequence[str], seen: Sequence[str]) -> float:
    """Share of the faces of classes not in ``seen`` that are recognised (NaN if there are none)."""
    faces = _unseen_faces(y_true, y_pred, seen)
    return math.nan if faces is None else float(np.mean(faces[1] == faces[0]))


def unseen_answered(y_true: np.ndarray, y_pred: Sequence[str], seen: Sequence[str]) -> float:
    """Share of the faces of classes not in ``seen`` that are named with a class not in ``seen``
    (NaN if there are none): where imagined knowledge answered, rightly or not. With
    :func:`unseen_accuracy` it splits imagination's recognition into how often imagined nodes
    answer and how often they are then right."""
    faces = _unseen_faces(y_true, y_pred, seen)
    return math.nan if faces is None else float(np.mean(~np.isin(faces[1], list(seen))))


def _evaluate(learner: Any, data: SubjectData, seen: Sequence[str]) -> dict[str, Any]:
    """F1 of every memory for Experiment 1 (seen classes) and 2 (all classes), and on the
    classes not learned yet the accuracy (``unseen_acc``) and the share answered by imagined
    knowledge (``unseen_answered``)."""
    predictions = learner.predict(data.X_test)
    is_seen = np.isin(data.y_test, list(seen))
    f1: dict[str, dict[str, float]] = {"1": {}, "2": {}}
    unseen: dict[str, float] = {}
    answered: dict[str, float] = {}
    for memory, predicted in predictions.items():
        predicted = np.asarray(predicted, dtype=str)
        f1["1"][memory] = macro_f1(data.y_test[is_seen], predicted[is_seen], seen)
        f1["2"][memory] = macro_f1(data.y_test, predicted, data.split.classes)
        unseen[memory] = unseen_accuracy(data.y_test, predicted, seen)
        answered[memory] = unseen_answered(data.y_test, predicted, seen)
    return {"f1": f1, "unseen_acc": unseen, "unseen_answered": answered}


def _class_rows(data: SubjectData, label: str, rng: np.random.Generator) -> np.ndarray:
    """Training rows of one class, shuffled (the order faces reach the robot)."""
    rows = np.flatnonzero(data.y_train == label)
    return rows[rng.permutation(rows.size)]


def known_people(
    subjects: Sequence[SubjectData], config: ProtocolConfig, imagination: ImaginationModel | None
) -> ImaginationModel | None:
    """``imagination`` on a robot that knows every subject: each as the memory (with replay)
    that learned all their training faces, class by class; :func:`subject_imagination` then
    leaves each subject's own out."""
    if imagination is None:
        return None
    from clifer_edge.memory import GrowingDualMemory
    from clifer_edge.runtime.persons import PersonState
    from clifer_edge.runtime.scheduler import KnownPeople

    people = []
    for data in subjects:
        memory = GrowingDualMemory(config.gdm_config, seed=config.seed)
        learner = _GDMLearner(config, True, None, PersonState(data.subject, memory))
        rng = np.random.default_rng(config.seed)
        for label in class_order(data.split.classes):
            rows = _class_rows(data, label, rng)
            learner.learn(data.X_train[rows], list(data.y_train[rows]))
        people.append(learner.person)
    return dataclasses.replace(imagination, peers=tuple(people), known=KnownPeople())


def subject_imagination(
    condition: str,
    data: SubjectData,
    subjects: Sequence[SubjectData],
    imagination: ImaginationModel | None,
    known: int | None = None,
) -> ImaginationModel | None:
    """What one subject's run imagines with.

    ``clifer``: the robot knows the other subjects (``imagination.peers`` without the subject's
    own, see :func:`known_people`; the first ``known`` of them, or all); ``peers``: the class
    means of the other subjects' training faces (pooled); ``oracle``: those of the subject's own;
    else ``imagination`` without peers.
    """
    if imagination is None:
        return None
    if condition == "clifer":
        others = tuple(p for p in imagination.peers if p.person_id != data.subject)
        return dataclasses.replace(imagination, peers=others[:known])
    if condition not in ("peers", "oracle"):
        return dataclasses.replace(imagination, peers=())
    sources = [data] if condition == "oracle" else [d for d in subjects if d is not data]
    if not sources:
        raise ValueError(f"condition {condition!r} needs other subjects")
    X = np.concatenate([d.X_train for d in sources])
    y = np.concatenate([np.asarray(d.y_train, dtype=str) for d in sources])
    space = SubjectClassMeans(imagination.space, X, y)
    return dataclasses.replace(imagination, space=space, peers=())


def run_subject(
    condition: str,
    data: SubjectData,
    order: Sequence[str],
    config: ProtocolConfig,
    imagination: ImaginationModel | None = None,
    fallback: FallbackFn | None = None,
) -> tuple[list[dict[str, Any]], Any]:
    """Learn one subject's classes in ``order``; returns the per-step results and the learner.

    Each step holds ``f1`` (per experiment and memory), ``unseen_acc`` (per memory) and, with a
    ``fallback``, ``unseen_acc_fallback`` on the same faces. For a diagnostic condition pass
    its :func:`subject_imagination`.
    """
    learner = make_learner(condition, config, imagination)
    rng = np.random.default_rng(config.seed)
    fallback_pred = None if fallback is None else list(fallback(data.split.test))
    steps = []
    seen: list[str] = []
    for label in order:
        rows = _class_rows(data, label, rng)
        learner.learn(data.X_train[rows], list(data.y_train[rows]))
        seen.append(label)
        step = {
            "step": len(seen),
            "learned": label,
            "n_train": int(rows.size),
            **_evaluate(learner, data, seen),
            **learner.stats(),
        }
        if fallback_pred is not None:
            step["unseen_acc_fallback"] = unseen_accuracy(data.y_test, fallback_pred, seen)
        steps.append(step)
    return steps, learner


def run_few_shot(
    condition: str,
    data: SubjectData,
    new_X_train: np.ndarray,
    new_X_test: np.ndarray,
    new_class: str,
    shots: Sequence[int],
    config: ProtocolConfig,
    imagination: ImaginationModel | None = None,
) -> list[dict[str, Any]]:
    """After the subject's basic classes, teach ``new_class`` from k faces, for each k.

    Reports, per k and memory, the accuracy on the new class's held-out faces (recall), the F1 on
    the old classes before and after (retention), and the F1 over old and new classes together
    after (a memory that recognises the new class by relabelling old knowledge gains recall and
    loses retention; this figure weighs both).
    """
    order = class_order(data.split.classes)
    _, base = run_subject(condition, data, order, config, imagination)
    before = base.predict(data.X_test)
    rows = np.random.default_rng(config.seed).permutation(len(new_X_train))
    results = []
    for k in shots:
        if k > len(new_X_train):
            results.append({"k": int(k), "skipped": f"only {len(new_X_train)} training faces"})
            continue
        learner = base.copy() if isinstance(base, _GDMLearner) else _copy_mlp(base)
        learner.learn(new_X_train[rows[:k]], [new_class] * k)
        after = learner.predict(data.X_test)
        new_pred = learner.predict(new_X_test)
        entry: dict[str, Any] = {"k": int(k), "memories": {}}
        y_all = np.concatenate([data.y_test, np.full(len(new_X_test), new_class)])
        for memory in after:
            entry["memories"][memory] = {
                "new_class_accuracy": float(np.mean(np.asarray(new_pred[memory]) == new_class)),
                "old_f1_before": macro_f1(data.y_test, before[memory], data.split.classes),
                "old_f1_after": macro_f1(data.y_test, after[memory], data.split.classes),
                "all_f1_after": macro_f1(
                    y_all, [*after[memory], *new_pred[memory]], [*data.split.classes, new_class]
                ),
            }
        results.append(entry)
    return results


def _copy_mlp(learner: _MLPLearner) -> _MLPLearner:
    """An MLP learner that has seen the same faces (it retrains from scratch anyway)."""
    twin = _MLPLearner(learner.config)
    twin._X, twin._y = list(learner._X), list(learner._y)
    twin._model, twin._only = learner._model, learner._only
    return twin


@dataclass
class ProtocolResult:
    """Everything one protocol run measured (serialised by :mod:`clifer_edge.evaluation.report`)."""

    conditions: list[str]
    orders: dict[str, list[str]]
    runs: list[dict[str, Any]] = field(default_factory=list)
    few_shot: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    subjects: list[dict[str, Any]] = field(default_factory=list)


def order_starts(subjects: Sequence[SubjectData], which: str) -> list[str | None]:
    """``"default"`` -> [None]; ``"all"`` -> one order starting from each class present.

    ``None`` is the default order (it starts from the first class, neutral when present), so
    the summary always describes the default order.
    """
    if which == "default":
        return [None]
    if which == "all":
        classes = class_order(sorted({c for s in subjects for c in s.split.classes}))
        return [None, *classes[1:]]
    raise ValueError(f"orders={which!r} should be 'default' or 'all'")


def run_protocol(
    subjects: Sequence[SubjectData],
    conditions: Sequence[str],
    config: ProtocolConfig,
    imagination: ImaginationModel | None = None,
    orders: str = "default",
    progress: bool = True,
    fallback: FallbackFn | None = None,
) -> ProtocolResult:
    """Run every condition on every subject, for the default order or one order per class.

    ``imagination`` is needed by the ``clifer`` condition; ``fallback`` (optional) is scored on
    the unseen-class faces beside the memories.
    """
    for condition in conditions:
        if condition not in KNOWN_CONDITIONS:
            raise ValueError(f"condition {condition!r} should be one of {list(KNOWN_CONDITIONS)}")
    if not subjects:
        raise ValueError("no subject to evaluate")
    starts = order_starts(subjects, orders)
    present = sorted({c for data in subjects for c in data.split.classes})
    result = ProtocolResult(
        conditions=list(conditions),
        orders={(s or "default"): class_order(present, s) for s in starts},
    )
    jobs = [(s, d, c) for s in starts for d in subjects for c in conditions]
    bar = tqdm(jobs, desc="subjects x conditions", unit="run", disable=not progress)
    imagines: dict[tuple[str, str], ImaginationModel | None] = {}  # the same for every order
    if "clifer" in conditions:
        imagination = known_people(subjects, config, imagination)
    for start, data, condition in bar:
        bar.set_postfix_str(f"{data.subject} {condition}")
        order = class_order(data.split.classes, start)
        key = (data.subject, condition)
        if key not in imagines:
            imagines[key] = subject_imagination(
                condition, data, subjects, imagination, config.known_people
            )
        steps, _ = run_subject(condition, data, order, config, imagines[key], fallback)
        result.runs.append(
            {
                "order": start or "default",
                "subject": data.subject,
                "condition": condition,
                "class_order": order,
                "steps": steps,
            }
        )
    result.subjects = [
        {
            "subject": d.subject,
            "classes": list(d.split.classes),
            "n_train": len(d.y_train),
            "n_test": len(d.y_test),
            "dropped_classes": list(d.split.dropped),
            "frame_split_classes": list(d.split.frame_split),
        }
        for d in subjects
    ]
    return result


def summarise(result: ProtocolResult, order: str = "default") -> list[dict[str, Any]]:
    """One row per (condition, experiment, memory): final-F1 mean/CI and mean over steps.

    Experiment 2 rows also hold ``unseen_acc_steps_mean``: the accuracy on held-out faces of the
    classes not learned yet, averaged over the steps that have such faces (across-subject mean
    per step, then the mean of those), and ``unseen_acc_fallback_steps_mean``, the fallback's on
    the same faces (NaN without a fallback), and ``unseen_answered_steps_mean``, the share of
    those faces that imagined knowledge answered. Experiment 1 tests seen classes only: NaN
    there.
    """
    rows = []
    for condition in result.conditions:
        runs = [r for r in result.runs if r["condition"] == condition and r["order"] == order]
        for experiment in EXPERIMENTS:
            for memory in memories_of(condition):
                final = [r["steps"][-1]["f1"][str(experiment)][memory] for r in runs]
                curve = step_means(runs, experiment, memory)
                mean, ci = mean_ci95(final)
                unseen = fallback = answered = math.nan
                if experiment == 2:
                    unseen = _nanmean(unseen_step_means(runs, memory))
                    fallback = _nanmean(unseen_step_means(runs, None))
                    answered = _nanmean(unseen_step_means(runs, memory, "unseen_answered"))
                rows.append(
                    {
                        "condition": condition,
                        "experiment": experiment,
                        "memory": memory,
                        "f1_mean": mean,
                        "f1_ci95": ci,
                        "f1_steps_mean": _nanmean(curve),
                        "unseen_acc_steps_mean": unseen,
                        "unseen_acc_fallback_steps_mean": fallback,
                        "unseen_answered_steps_mean": answered,
                        "n_subjects": len(runs),
                    }
                )
    return rows


def _nanmean(values: Sequence[float | None]) -> float:
    """Mean of the measured values: NaN, or None as results.json stores NaN, counts as missing."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def unseen_step_means(
    runs: Sequence[dict[str, Any]], memory: str | None, key: str = "unseen_acc"
) -> list[float]:
    """Across-subject mean accuracy on not-yet-learned classes after 1, 2, ... classes.

    ``memory`` None gives the fallback's (``unseen_acc_fallback``); ``key="unseen_answered"``
    the share answered by imagined knowledge instead. Steps without unseen faces (the last
    one) are NaN. Works on ``runs`` read back from results.json too (NaN stored as None).
    """
    longest = max((len(r["steps"]) for r in runs), default=0)
    means = []
    for i in range(longest):
        steps = [r["steps"][i] for r in runs if len(r["steps"]) > i]
        if memory is None:
            values = [s.get("unseen_acc_fallback", math.nan) for s in steps]
        else:
            values = [s[key][memory] for s in steps]
        means.append(_nanmean(values))
    return means


def step_means(runs: Sequence[dict[str, Any]], experiment: int, memory: str) -> list[float]:
    """Across-subject mean F1 after 1, 2, ... classes (subjects with fewer classes drop out)."""
    longest = max((len(r["steps"]) for r in runs), default=0)
    means = []
    for i in range(longest):
        values = [r["steps"][i]["f1"][str(experiment)][memory] for r in runs if len(r["steps"]) > i]
        values = [v for v in values if not math.isnan(v)]
        means.append(float(np.mean(values)) if values else math.nan)
    return means


def compare_orders(result: ProtocolResult) -> list[dict[str, Any]]:
    """Kruskal–Wallis across class orders of the per-subject final F1, per summary row."""
    rows = []
    for condition in result.conditions:
        for experiment in EXPERIMENTS:
            for memory in memories_of(condition):
                groups = {
                    order: [
                        r["steps"][-1]["f1"][str(experiment)][memory]
                        for r in result.runs
                        if r["condition"] == condition and r["order"] == order
                    ]
                    for order in result.orders
                }
                groups = {k: [v for v in g if not math.isnan(v)] for k, g in groups.items()}
                rows.append(
                    {
                        "condition": condition,
                        "experiment": experiment,
                        "memory": memory,
                        "f1_mean_by_order": {
                            k: float(np.mean(g)) if g else math.nan for k, g in groups.items()
                        },
                        "kruskal_wallis": kruskal_wallis(groups),
                    }
                )
    return rows


def few_shot_class(dataset: FaceDataset, requested: str = "auto") -> str:
    """The class taught few-shot: ``requested``, or (``"auto"``) the first class outside the
    basic seven (CK+ contempt), else the last class of the default order (disgust)."""
    present = set(dataset.labels)
    if requested != "auto":
        if requested not in present:
            raise ValueError(f"few-shot class {requested!r} not in the data ({sorted(present)})")
        return requested
    extra = sorted(present - set(BASIC_EXPRESSIONS))
    return extra[0] if extra else class_order(sorted(present))[-1]


def run_few_shot_all(
    dataset: FaceDataset,
    features: np.ndarray,
    new_class: str,
    conditions: Sequence[str],
    config: ProtocolConfig,
    imagination: ImaginationModel | None = None,
    shots: Sequence[int] = (1, 3, 5),
    min_classes: int = 4,
    max_subjects: int | None = None,
    test_fraction: float = 1.0 / 3.0,
    allow_frame_split: bool = False,
    valid: np.ndarray | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The few-shot experiment for every subject that has ``new_class`` and enough others."""
    subjects, skipped = prepare_subjects(
        dataset,
        features,
        min_classes,
        None,
        test_fraction,
        config.seed,
        allow_frame_split,
        exclude_classes=[new_class],
        valid=valid,
    )
    usable = np.ones(len(dataset), dtype=bool) if valid is None else np.asarray(valid, bool)
    results = []
    jobs = []
    for data in subjects:
        rows = np.flatnonzero(
            usable & (dataset.subjects == data.subject) & (dataset.labels == new_class)
        )
        if rows.size == 0:
            skipped[data.subject] = f"has no {new_class} faces"
            continue
        split = split_subject(
            dataset.subset(rows), data.subject, test_fraction, config.seed, allow_frame_split
        )
        if not split.classes:
            skipped[data.subject] = f"{new_class} cannot be split (one sequence)"
            continue
        if max_subjects is not None and len({j[0].subject for j in jobs}) >= max_subjects:
            skipped[data.subject] = f"beyond --max-subjects {max_subjects}"
            continue
        jobs.extend((data, rows[split.train], rows[split.test], c) for c in conditions)
    if "clifer" in conditions:
        imagination = known_people(subjects, config, imagination)
    bar = tqdm(jobs, desc=f"few-shot {new_class}", unit="run", disable=not progress)
    for data, train, test, condition in bar:
        bar.set_postfix_str(f"{data.subject} {condition}")
        shots_result = run_few_shot(
            condition,
            data,
            features[train],
            features[test],
            new_class,
            shots,
            config,
            subject_imagination(condition, data, subjects, imagination, config.known_people),
        )
        results.append(
            {
                "subject": data.subject,
                "condition": condition,
                "new_class": new_class,
                "n_new_train": int(train.size),
                "n_new_test": int(test.size),
                "shots": shots_result,
            }
        )
    return results, skipped
