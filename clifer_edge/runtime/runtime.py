"""The expression runtime: image -> face -> latent -> the person's memory -> expression.

:class:`ExpressionRuntime` is what the ROS 2 node and the command line wrap. Per face it

1. detects and crops (full frames) or just prepares (pre-cropped, e.g. ROS4HRI ``aligned`` faces)
   the face with the shared preprocessing;
2. encodes it with the int8 encoder into a latent;
3. finds the person (caller's id, single-user mode, or the identity fallback) and their memory;
4. answers with that memory (episodic or semantic, as configured) or, while the person is new,
   with the person-independent fallback classifier;
5. if the face carries a label, adds it to the person's running learning episode; a full episode
   (or a change of label) trains both memories and saves them atomically.

In idle time :meth:`ExpressionRuntime.imagine` runs imagination chunks; every face preempts it.
All public methods are thread-safe: one lock guards the models and memories.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from clifer_edge.fileio import sha256_file
from clifer_edge.labels import canonical_label
from clifer_edge.models.calibration import CalibrationError, LatentCalibration
from clifer_edge.models.fallback import Fallback
from clifer_edge.models.files import source_file
from clifer_edge.preprocessing import FaceBox, InvalidImageError, preprocess_face, validate_image
from clifer_edge.runtime.config import RuntimeConfig, default_memory_factory, load_config
from clifer_edge.runtime.identity import IdentityIndex
from clifer_edge.runtime.persons import (
    EncoderInfo,
    PersonState,
    PersonStore,
    Retention,
    check_person_id,
)
from clifer_edge.runtime.scheduler import ImaginationReport, ImaginationScheduler, KnownPeople

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceResult:
    """The runtime's answer for one face."""

    #: The person the face was attributed to.
    person_id: str
    #: Canonical expression label (``unknown`` if nothing can answer yet).
    label: str
    #: Score of ``label`` (the row maximum of ``scores``), in [0, 1].
    confidence: float
    #: Per-class scores summing to 1 (over the labels the answering memory knows).
    scores: dict[str, float]
    #: Which memory answered: ``episodic``, ``semantic`` or ``fallback`` (person not learned yet).
    memory: str
    #: Face rectangle in the frame; ``None`` for pre-cropped faces.
    box: FaceBox | None = None
    #: True if the face carried a label and was taken into the person's learning episode.
    learned: bool = False


@dataclass
class _Timings:
    """Cumulative wall times (seconds) and counts, for :meth:`ExpressionRuntime.stats`."""

    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float, count: int = 1) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + count

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "count": self.counts[name],
                "total_s": round(self.seconds[name], 4),
                "mean_ms": round(1000.0 * self.seconds[name] / max(self.counts[name], 1), 3),
            }
            for name in sorted(self.seconds)
        }


class ExpressionRuntime:
    """Personalised, continually learning expression recognition for a robot.

    Parameters
    ----------
    config : RuntimeConfig, optional
        Default: :func:`load_config` ``(None)``, the shipped defaults.
    encoder, generator : Encoder, Generator, optional
        The Imagination model's halves; ``None`` loads the configured (default: bundled) models.
    detector : FaceDetector, optional
        Face detector for full frames; ``None`` builds the configured one on first use.
    calibration : LatentCalibration, optional
        The memories' latent standardisation (and the fallback's classifier on latents);
        ``None``: the configured file (``models.calibration``, by default beside the models);
        a missing one is a :class:`CalibrationError` that says to run ``clifer-edge calibrate``.
    fallback : Fallback, optional
        The answer for persons not learned yet; ``None``: the configured export's expression
        model if it has one, else the calibration's classifier (:mod:`clifer_edge.models.fallback`).
    clock : callable() -> float
        Time source of the idle timer (a simulation may pass its own).

    Raises
    ------
    ModelFileError
        For a missing, truncated or mismatched model or metadata file.
    CalibrationError
        For a missing or damaged calibration, or one of another encoder.
    ValueError
        When ``models.image_size`` or the generator's ``z_dim`` disagree with the encoder.
    """

    def __init__(
        self,
        config: RuntimeConfig | None = None,
        encoder: Any = None,
        generator: Any = None,
        detector: Any = None,
        calibration: LatentCalibration | None = None,
        clock: Callable[[], float] = time.monotonic,
        fallback: Fallback | None = None,
    ) -> None:
        self.config = config if config is not None else load_config(None)
        if encoder is None or generator is None:
            loaded_encoder, loaded_generator = self.config.model_files().load(
                self.config.models.num_threads
            )
            encoder = encoder if encoder is not None else loaded_encoder
            generator = generator if generator is not None else loaded_generator
        self.encoder = encoder
        self.generator = generator
        meta = encoder.metadata
        self.image_size = int(meta.image_size)
        self.channels = int(meta.channels)
        expected = self.config.models.image_size
        if expected is not None and expected != self.image_size:
            raise ValueError(
                f"config key 'models.image_size' is {expected}, but the encoder takes "
                f"{self.image_size}x{self.image_size} faces"
            )
        if int(generator.metadata.z_dim) != int(meta.z_dim):
            raise ValueError(
                f"generator z_dim={generator.metadata.z_dim} != encoder z_dim={meta.z_dim}"
            )
        self._detector = detector
        if calibration is None:
            calibration = self.config.model_files().load_calibration(encoder)
        if calibration.z_dim != int(meta.z_dim):
            raise CalibrationError(
                f"calibration has z_dim={calibration.z_dim}, the encoder {meta.z_dim}"
            )
        self.calibration = calibration
        if fallback is None:
            expression_model = self.config.model_files().load_expression(
                self.config.models.num_threads
            )
            fallback = Fallback(calibration, expression_model)
        if fallback.reads_faces and (
            tuple(fallback.expression_model.metadata.image_shape) != tuple(meta.image_shape)
        ):
            raise ValueError(
                f"the expression model takes {fallback.expression_model.metadata.image_shape} "
                f"faces, the encoder {meta.image_shape}; export them together"
            )
        self.fallback = fallback
        self._lock = threading.RLock()
        self._timings = _Timings()
        self._closed = False
        self.n_faces = 0
        self.n_rejected = 0
        self.identities: IdentityIndex | None = None
        path = source_file(encoder) or self.config.model_files().encoder
        persons = self.config.persons
        #: How the people the robot knows change expression (imagination recentres G on them).
        self.known = KnownPeople()
        self.persons = PersonStore(
            self.config.memory_directory(),
            default_memory_factory(self.config.gdm, self.config.memory.max_nodes),
            max_in_ram=persons.max_in_ram,
            recent_faces=self.config.learning.recent_faces,
            before_evict=self._finish_episode,
            encoder=EncoderInfo(sha256_file(path) if path.is_file() else None, int(meta.z_dim)),
            retention=Retention(
                max_unlabelled=persons.max_unlabelled,
                unlabelled_max_age_s=persons.unlabelled_max_age_days * 86400.0,
            ),
            on_removed=self._removed,
        )
        self.scheduler = ImaginationScheduler(
            self.config.imagination, encoder, generator, calibration, clock=clock, known=self.known
        )
        if self.config.persons.mode == "identity":
            self.identities = IdentityIndex(
                self.config.persons.identity_threshold, self.persons.iter_records()
            )

    # -- set-up ------------------------------------------------------------------------------
    @property
    def margin(self) -> float:
        """Crop border around a face box: ``faces.margin``, else the configured detector's
        framing of FER2013 faces (the encoder's training data)."""
        from clifer_edge.faces.detector import crop_margin

        return crop_margin(self.config.faces.detector, self.config.faces.margin)

    @property
    def detector(self) -> Any:
        """The face detector, built on first use (pre-cropped faces never need it)."""
        if self._detector is None:
            self._detector = self.config.faces.build_detector()
        return self._detector

    def tracker(self, clock: Callable[[], float] = time.monotonic) -> Any:
        """A :class:`~clifer_edge.faces.tracker.FaceTracker` for video with the configured
        detector and ``faces.detect_every`` / ``detect_width`` / ``lost_after_s``; pass its boxes
        to :meth:`process_frame`."""
        from clifer_edge.faces import FaceTracker

        faces = self.config.faces
        return FaceTracker(
            self.detector,
            detect_every=faces.detect_every,
            detect_width=faces.detect_width,
            lost_after_s=faces.lost_after_s,
            clock=clock,
        )

    # -- faces in ----------------------------------------------------------------------------
    def process_frame(
        self,
        image: np.ndarray,
        person_id: str | None = None,
        label: str | None = None,
        color_order: str = "rgb",
        boxes: Sequence[FaceBox] | None = None,
    ) -> list[FaceResult]:
        """Detect the faces in a full frame and recognise (and, with a label, learn) them.

        A frame that comes with a ``person_id`` or a ``label`` shows the one person the robot is
        dealing with: only its largest face is used. Otherwise, with ``persons.mode`` ``identity``
        every detected face (up to ``faces.max_faces``) is identified and answered; in the other
        modes only the largest face is (it belongs to the default person).

        ``boxes`` (largest first) are faces already located in this frame, e.g. by a
        :class:`~clifer_edge.faces.tracker.FaceTracker`: detection is skipped, the rule above
        applies to them, and the results come back in their order.

        Raises
        ------
        InvalidImageError
            For an unusable image (empty, wrong shape or dtype, too small or huge, non-finite).
        """
        self._check_open()
        try:
            image = validate_image(image)
        except InvalidImageError:
            self.n_rejected += 1
            raise
        start = time.perf_counter()
        if boxes is None:
            boxes = [face.box for face in self.detector.detect(image, color_order=color_order)]
        several = self.identities is not None and person_id is None and label is None
        boxes = list(boxes)[: self.config.faces.max_faces if several else 1]
        faces = [
            preprocess_face(
                image,
                size=self.image_size,
                channels=self.channels,
                box=box,
                margin=self.margin,
                color_order=color_order,
            )
            for box in boxes
        ]
        self._timings.add("detect", time.perf_counter() - start)
        if not faces:
            return []
        return self._handle(np.stack(faces), boxes, person_id, label)

    def process_face(
        self,
        face_image: np.ndarray,
        person_id: str | None = None,
        label: str | None = None,
        color_order: str = "rgb",
        anonymous: bool = False,
    ) -> FaceResult:
        """Recognise (and, with a label, learn) one pre-cropped face, e.g. a ROS4HRI aligned face.

        An ``anonymous`` face (a person who must not be remembered, e.g. a ROS4HRI anonymous
        person) is answered by the person-independent fallback, and nothing about it is kept: no
        memory, no recent faces, no identity; ``person_id`` is only echoed in the result.

        Raises
        ------
        InvalidImageError
            For an unusable image.
        """
        self._check_open()
        try:
            face = preprocess_face(
                face_image, size=self.image_size, channels=self.channels, color_order=color_order
            )
        except InvalidImageError:
            self.n_rejected += 1
            raise
        if anonymous:
            return self._answer_anonymous(face, person_id or "")
        return self._handle(face[None], [None], person_id, label)[0]

    def _answer_anonymous(self, face: np.ndarray, person_id: str) -> FaceResult:
        """The fallback's answer for one prepared face; no person state is read or written."""
        self.scheduler.notify_activity()
        with self._lock:
            latent = None
            if not self.fallback.reads_faces:
                latent = self.calibration.to_memory(self.encoder.encode(face[None]))
            scores = self.fallback.predict_proba(face[None], latent)[0]
            labels = self.fallback.labels
            self.n_faces += 1
        best = int(np.argmax(scores))
        return FaceResult(
            person_id=person_id,
            label=str(labels[best]),
            confidence=float(scores[best]),
            scores={name: float(score) for name, score in zip(labels, scores, strict=True)},
            memory="fallback",
        )

    def _handle(
        self,
        faces: np.ndarray,
        boxes: Sequence[FaceBox | None],
        person_id: str | None,
        label: str | None,
    ) -> list[FaceResult]:
        """Encode, attribute, answer and learn prepared faces (inputs already validated)."""
        if label is not None:
            label = canonical_label(label)
        if person_id is not None:
            try:
                check_person_id(person_id)
            except ValueError as error:
                raise ValueError(f"person_id: {error}") from None
        # Preempt imagination before waiting for the lock it holds during a step.
        self.scheduler.notify_activity()
        with self._lock:
            start = time.perf_counter()
            latents = self.calibration.to_memory(self.encoder.encode(faces))
            self._timings.add("encode", time.perf_counter() - start, len(faces))
            results = []
            for i, (latent, box) in enumerate(zip(latents, boxes, strict=True)):
                state = self.persons.get(self._resolve_person(person_id, latent))
                start = time.perf_counter()
                result = self._classify(state, latent, faces[i], box)
                self._timings.add("classify", time.perf_counter() - start)
                if label is not None:
                    self._add_to_episode(state, latent, label, faces[i])
                    result = dataclasses.replace(result, learned=True)
                else:
                    state.recent.append(latent)
                results.append(result)
            self.n_faces += len(results)
            return results

    def _resolve_person(self, person_id: str | None, latent: np.ndarray) -> str:
        mode = self.config.persons.mode
        if mode == "single":
            return self.config.persons.default_person
        if person_id is not None:
            return person_id
        if self.identities is not None:
            return self.identities.assign(latent)
        return self.config.persons.default_person

    def _classify(
        self, state: PersonState, latent: np.ndarray, face: np.ndarray, box: FaceBox | None
    ) -> FaceResult:
        if self.identities is not None:
            state.identity, state.identity_count = self.identities.update(state.person_id, latent)
            state.dirty = True
        if state.fitted:
            memory = self.config.memory.answer
            scores = state.memory.predict_proba(latent[None], memory=memory)[0]
            labels = [str(name) for name in state.memory.classes_]
        else:
            memory = "fallback"
            scores = self.fallback.predict_proba(face[None], latent[None])[0]
            labels = self.fallback.labels
        best = int(np.argmax(scores))
        return FaceResult(
            person_id=state.person_id,
            label=str(labels[best]),
            confidence=float(scores[best]),
            scores={name: float(score) for name, score in zip(labels, scores, strict=True)},
            memory=memory,
            box=box,
        )

    # -- learning ----------------------------------------------------------------------------
    def _add_to_episode(
        self, state: PersonState, latent: np.ndarray, label: str, face: np.ndarray
    ) -> None:
        if state.pending_labels and state.pending_labels[-1] != label:
            self._finish_episode(state)
        self._check_label_count(state, label)
        state.pending_latents.append(latent)
        state.pending_labels.append(label)
        if self.config.memory.store_faces:
            self._store_face(state, face, label)
        if len(state.pending_labels) >= self.config.learning.episode_size:
            self._finish_episode(state)

    def _finish_episode(self, state: PersonState) -> None:
        """Train the person's memories on their pending labelled faces and save them."""
        if not state.pending_labels:
            return
        latents = np.stack(state.pending_latents).astype(np.float32)
        labels = list(state.pending_labels)
        state.pending_latents.clear()
        state.pending_labels.clear()
        self._learn(state, latents, labels)

    def _check_label_count(self, state: PersonState, label: str) -> None:
        """Refuse a new label beyond ``learning.max_labels`` per person."""
        known = set(getattr(state.memory, "labels_", [])) | set(state.pending_labels)
        limit = self.config.learning.max_labels
        if label not in known and len(known) >= limit:
            raise ValueError(
                f"person {state.person_id!r} already has {len(known)} expression labels "
                f"(learning.max_labels={limit}); refusing the new label {label!r}"
            )

    def _learn(self, state: PersonState, latents: np.ndarray, labels: list[str]) -> None:
        start = time.perf_counter()
        state.learn(latents, labels, replay=self.config.learning.replay)
        self._timings.add("learn", time.perf_counter() - start, len(labels))
        state.dirty = True
        start = time.perf_counter()
        self.persons.save(state)
        self._timings.add("save", time.perf_counter() - start)

    def _store_face(self, state: PersonState, face: np.ndarray, label: str) -> None:
        from clifer_edge.preprocessing import to_uint8

        pixels = to_uint8(face)
        if pixels.shape[2] == 3:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        ok, png = cv2.imencode(".png", pixels)
        if not ok:
            raise OSError("OpenCV could not encode a face as PNG")
        self.persons.store_face(state, label, png.tobytes())

    def teach(self, person_id: str, label: str, n_recent: int | None = None) -> int:
        """Few-shot: learn ``label`` (known or brand-new) from the person's latest unlabelled faces.

        Parameters
        ----------
        person_id : str
        label : str
            Any expression name; a label the memory has never seen becomes a new class.
        n_recent : int, optional
            How many of the latest faces to use (default ``learning.teach_recent``).

        Returns
        -------
        int
            Faces learned (0 if the person has no recent faces).
        """
        self._check_open()
        check_person_id(person_id)
        label = canonical_label(label)
        n = self.config.learning.teach_recent if n_recent is None else int(n_recent)
        if n < 1:
            raise ValueError(f"n_recent={n_recent} should be >= 1")
        self.scheduler.notify_activity()
        with self._lock:
            state = self.persons.get(person_id)
            taken = list(state.recent)[-n:]
            if not taken:
                return 0
            self._finish_episode(state)
            self._check_label_count(state, label)
            for _ in taken:
                state.recent.pop()
            self._learn(state, np.stack(taken).astype(np.float32), [label] * len(taken))
            return len(taken)

    def forget(self, person_id: str) -> bool:
        """Delete everything about a person (memory in RAM, files, stored faces, identity);
        True if anything existed."""
        check_person_id(person_id)
        with self._lock:
            self._removed(person_id)
            return self.persons.forget(person_id)

    def _removed(self, person_id: str) -> None:
        """A person was deleted: drop their identity centroid and recentring terms."""
        if self.identities is not None:
            self.identities.remove(person_id)
        self.known.forget(person_id)

    def save(self) -> None:
        """End every running episode and save every resident person that changed.

        Raises
        ------
        PersonSaveError
            An ``OSError`` naming the persons that could not be saved (e.g. disk full), raised
            after every other person was saved.
        """
        with self._lock:
            self.persons.save_all(prepare=self._finish_episode)

    # -- idle time ---------------------------------------------------------------------------
    def set_idle(self, idle: bool | None) -> None:
        """External idle signal (e.g. the robot's behaviour layer): True = idle now (imagination
        may run) until a face appears; False = busy (stops imagination at once) until told
        otherwise; None = no signal, only the ``imagination.idle_timeout_s`` timer decides."""
        self.scheduler.set_idle(None if idle is None else bool(idle))

    def notify_activity(self) -> None:
        """The robot is busy (not with a face, e.g. speech): stop imagining, restart the timer."""
        self.scheduler.notify_activity()

    def is_idle(self) -> bool:
        """Whether imagination may run now."""
        return self.scheduler.is_idle()

    def imagine(self, budget_s: float | None = None) -> ImaginationReport | None:
        """Run imagination for up to ``budget_s`` seconds if the robot is idle.

        Idle time first ends every running learning episode (the memories learn it). Persons are
        then served most recently seen first. Returns ``None`` when not idle or imagination is
        disabled, else a report; ``report.preempted`` says a face stopped it.
        """
        self._check_open()
        budget = self.config.imagination.budget_s if budget_s is None else float(budget_s)
        if not (math.isfinite(budget) and budget > 0):
            raise ValueError(f"budget_s={budget_s} should be a finite number of seconds > 0")
        if not self.scheduler.is_idle():
            return None
        with self._lock:  # idle time ends running learning episodes and catches up on saves
            persons = self.persons.resident()[::-1]
            for state in persons:
                self._finish_episode(state)
                self.persons.save_if_changed(state)
        if not self.config.imagination.enabled:
            return None
        report = self.scheduler.run(persons, budget, self._lock, on_trained=self.persons.save)
        if report is not None and report.latents:
            self._timings.add("imagine", report.seconds, report.latents)
        return report

    # -- inspection and shutdown ---------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts, timings and each resident person's memory size (cheap; for diagnostics)."""
        with self._lock:
            persons = {}
            for state in self.persons.resident():
                entry: dict[str, Any] = {
                    "episodes": state.n_episodes,
                    "faces_learned": state.n_faces_learned,
                    "imagined_latents": state.n_imagined,
                    "shown_labels": sorted(state.shown_labels),
                    "pending": len(state.pending_labels),
                }
                if state.fitted:
                    entry["memory"] = state.memory.stats()
                persons[state.person_id] = entry
            return {
                "faces": self.n_faces,
                "rejected_images": self.n_rejected,
                "persons_in_ram": len(persons),
                "persons_known": self.persons.n_known(),
                "evictions": self.persons.n_evictions,
                "quarantined_files": self.persons.n_quarantined,
                "retention_deleted": self.persons.n_retention_deleted,
                "idle": self.scheduler.is_idle(),
                "imagination": {
                    "latents": self.scheduler.total_latents,
                    "seconds": round(self.scheduler.total_seconds, 4),
                },
                "fallback": self.fallback.describe(),
                "fallback_accuracy": self.calibration.info.get("publictest_accuracy"),
                "timings": self._timings.summary(),
                "persons": persons,
            }

    def close(self) -> None:
        """Save everything; further calls raise. Safe to call twice.

        Raises
        ------
        PersonSaveError
            As :meth:`save`; the runtime is closed all the same.
        """
        if self._closed:
            return
        try:
            self.save()
        finally:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the runtime is closed")

    def __enter__(self) -> ExpressionRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
