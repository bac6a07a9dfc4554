"""Idle-time imagination on the robot: when to imagine, for whom, in preemptible chunks.

Imagination (:mod:`clifer_edge.imagination`) renders a person's real episodic prototypes z under the
expressions c the person has not shown for real yet and trains the memory's imagined network on the
re-encoded latents E(G(z, c)) (``partial_fit(..., imagined=True)``). Imagined knowledge yields to
real knowledge (see :class:`~clifer_edge.memory.GrowingDualMemory`): it never changes the real
memories, answers only for classes not learned for real, and is pruned once they are.

This is the most expensive thing the robot does, so :class:`ImaginationScheduler` runs it only when
the robot is idle (no face for ``idle_timeout_s`` seconds, or an external idle signal), in small
chunks of ``chunk_prototypes`` prototypes, within a time budget, and stops between any two steps
(generate, encode, train) as soon as a face appears. It keeps, per person, the prototypes it already
imagined, so idle time is spent only on new prototypes; it never imagines from imagined faces, since
the memory's episodic prototypes are real ones only.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clifer_edge.imagination import (
    PeerRecentring,
    PersonRecentring,
    class_offset_points,
    generator_vocabulary,
    imagine_faces,
    reconstruct_latents,
)
from clifer_edge.models.calibration import LatentCalibration
from clifer_edge.runtime.config import ImaginationConfig
from clifer_edge.runtime.persons import PersonState, append_rows

logger = logging.getLogger(__name__)

#: Most imagined sources remembered per person (the newest are kept).
MAX_RECORDED = 8192


@dataclass(frozen=True)
class ImaginationReport:
    """What one :meth:`ImaginationScheduler.run` call did."""

    #: Persons whose memories were trained on imagined latents.
    persons: tuple[str, ...]
    #: Prototypes imagined and latents trained.
    prototypes: int
    latents: int
    #: Chunks completed.
    chunks: int
    #: Wall time of the call, seconds.
    seconds: float
    #: True if a face (or busy signal) stopped it before its budget or work ran out.
    preempted: bool
    #: True if no person has prototypes left to imagine.
    done: bool


def _version(state: PersonState) -> tuple[int, int]:
    """What a person's real faces are as of now: real episodes and faces learned."""
    return state.n_episodes, state.n_faces_learned


def _digest(points: np.ndarray, labels: Sequence[str]) -> str:
    """Fingerprint of a snapshot of faces: tells whether a later snapshot starts with it."""
    content = hashlib.sha256(np.ascontiguousarray(points, dtype=np.float32).tobytes())
    content.update("\n".join(labels).encode())
    return content.hexdigest()


@dataclass
class _KnownPerson:
    """One person's recentring terms, measured on a snapshot of their real faces."""

    #: :func:`_version` of the snapshot (a real episode since makes it stale).
    version: tuple[int, int]
    recentring: PersonRecentring
    #: The snapshot's faces and labels (None and [] once all are measured).
    points: np.ndarray | None
    labels: list[str]
    #: Size and :func:`_digest` of the snapshot, kept once its faces are dropped.
    size: int
    digest: str
    #: Faces whose G changes are accumulated so far.
    measured: int = 0

    @property
    def complete(self) -> bool:
        return self.points is None

    def starts(self, points: np.ndarray, labels: Sequence[str]) -> bool:
        """Whether a newer snapshot begins with this one's faces (none fell out of the record's
        window of real latents)."""
        n = self.size
        return len(labels) >= n and _digest(points[:n], labels[:n]) == self.digest


class KnownPeople:
    """How the people the robot knows really change expression, beyond what G draws.

    Keeps, per person id, their :class:`~clifer_edge.imagination.PersonRecentring` terms
    (a few kilobytes), measured in idle time on their newest real labelled faces
    (``PersonState.real_latents``) and brought up to date after they learn for real: only the
    new faces when the earlier ones are all still there and no expression is new, else all of
    them again (class means change with every face; G's change of a face does not). RAM only: after
    a restart each person is measured again when resident. A person who is evicted keeps their
    entry, which keeps counting for the others (it is theirs again when they come back
    unchanged); :meth:`forget` drops it. Shared by
    several schedulers (the evaluation measures every subject once for all the others).
    """

    def __init__(self) -> None:
        self._people: dict[str, _KnownPerson] = {}

    def stale(self, state: PersonState) -> bool:
        """Whether the person's terms are missing, incomplete or older than their memory."""
        entry = self._people.get(state.person_id)
        return entry is None or entry.version != _version(state) or not entry.complete

    def entry(
        self, state: PersonState, points: np.ndarray, labels: list[str], vocabulary: Sequence[str]
    ) -> _KnownPerson:
        """The person's current entry; a new snapshot when theirs is missing or outdated, which
        resumes from the old one when it begins with the old one's faces, all measured, and
        shows the same expressions."""
        entry = self._people.get(state.person_id)
        if entry is not None and entry.version == _version(state):
            return entry
        recentring = PersonRecentring(points, labels, vocabulary)
        measured = 0
        if (
            entry is not None
            and entry.complete
            and entry.recentring.classes == recentring.classes
            and entry.starts(points, labels)
        ):
            recentring.resume(entry.recentring)
            measured = entry.size
        done = measured >= len(labels)
        entry = _KnownPerson(
            _version(state),
            recentring,
            None if done else points,
            [] if done else labels,
            len(labels),
            _digest(points, labels),
            measured,
        )
        self._people[state.person_id] = entry
        return entry

    def forget(self, person_id: str) -> None:
        """Drop a person's terms (they were forgotten)."""
        self._people.pop(person_id, None)

    def measured(self, ids: Sequence[str] | None = None) -> list[str]:
        """The ids among ``ids`` (default: every person kept) whose terms are complete, in
        that order (resident or evicted since: their terms stay valid until they learn again)."""
        ids = list(self._people) if ids is None else ids
        return [i for i in ids if i in self._people and self._people[i].complete]

    def recentring(
        self, state: PersonState, peers: Sequence[str] | None, min_peers: int
    ) -> PeerRecentring | None:
        """The recentring for imagining ``state`` from the complete terms of the other people
        among ``peers`` (ids; None: every person measured); None when no pair has
        ``min_peers`` of them."""
        terms = [
            self._people[i].recentring.terms() for i in self.measured(peers) if i != state.person_id
        ]
        if not terms or not state.fitted:
            return None
        recentring = PeerRecentring(terms, int(state.memory.n_features_in_), min_peers)
        return recentring if recentring.shifts else None


class ImaginationScheduler:
    """Decides when to imagine, and does it in small preemptible chunks.

    Parameters
    ----------
    config : ImaginationConfig
    encoder, generator : Encoder, Generator
    calibration : LatentCalibration
        Maps the memories' standardised space to encoder latents and back.
    known : KnownPeople, optional
        Where the known people's recentring terms are kept (a new, empty one by default).
    clock : callable() -> float
        Time source of the idle timer (seconds); a simulation may pass its own.

    Notes
    -----
    Thread use: faces may arrive on another thread while :meth:`run` works. The caller calls
    :meth:`notify_activity` *before* it waits for the lock that :meth:`run` holds during each step,
    so a face waits at most one step (one generate, encode or train call on one chunk).

    Recentring (``config.recentre``, the generator's residual form): before imagining for a
    person, the scheduler brings the other people's :class:`KnownPeople` terms up to date, chunk
    by chunk like imagination itself, and shifts every point G imagines for that person by
    their :class:`~clifer_edge.imagination.PeerRecentring`. With nobody else known, G's change
    is used as it is.
    """

    def __init__(
        self,
        config: ImaginationConfig,
        encoder: Any,
        generator: Any,
        calibration: LatentCalibration,
        clock: Callable[[], float] = time.monotonic,
        known: KnownPeople | None = None,
    ) -> None:
        self.config = config
        self.encoder = encoder
        self.generator = generator
        self.calibration = calibration
        self.known = KnownPeople() if known is None else known
        self.clock = clock
        self._activity = threading.Event()
        self._last_activity = clock()
        #: The external signal: True idle (until a face), False busy (until changed), None none.
        self._external: bool | None = None
        self.last_report: ImaginationReport | None = None
        self.total_latents = 0
        self.total_seconds = 0.0

    # -- idle detection ----------------------------------------------------------------------
    def notify_activity(self) -> None:
        """A face appeared (or the robot got busy): stop imagining now, restart the idle timer.

        It also ends an external idle signal (a face ends idle time); a busy signal stays.
        """
        self._last_activity = self.clock()
        if self._external:
            self._external = None
        self._activity.set()

    def set_idle(self, idle: bool | None) -> None:
        """External idle signal: True = idle now (until a face appears), False = busy until the
        signal changes, None = no signal (the ``idle_timeout_s`` timer alone decides)."""
        self._external = idle
        if idle is False:
            self.notify_activity()

    def is_idle(self) -> bool:
        """The one idle rule of the robot: busy while the external signal says busy; idle while it
        says idle; otherwise idle after ``idle_timeout_s`` seconds without a face."""
        if self._external is not None:
            return self._external
        return self.clock() - self._last_activity >= self.config.idle_timeout_s

    @property
    def preempted(self) -> bool:
        """Whether activity was signalled since the running :meth:`run` started."""
        return self._activity.is_set()

    # -- work --------------------------------------------------------------------------------
    def real_prototypes(self, state: PersonState) -> tuple[np.ndarray, list[str]]:
        """The person's episodic prototypes whose label the generator can draw.

        The episodic memory learns real faces only (imagined ones go to the imagined network),
        so every episodic prototype stands for real faces; those labelled with an expression
        outside the generator's vocabulary cannot be imagined from.
        """
        if not state.fitted:
            return np.zeros((0, 0), np.float32), []
        prototypes, labels = state.memory.episodic_prototypes()
        return self._drawable(prototypes, [str(label) for label in labels])

    def real_faces(self, state: PersonState) -> tuple[np.ndarray, list[str]]:
        """The person's newest real labelled latents whose label the generator can draw (how
        they really show each expression: what recentring measures on them)."""
        labels = state.real_labels
        if not labels or state.real_latents is None:
            return np.zeros((0, 0), np.float32), []
        return self._drawable(state.real_latents[-len(labels) :], labels)

    def _drawable(self, points: np.ndarray, labels: list[str]) -> tuple[np.ndarray, list[str]]:
        """The points (as float32) and labels whose label is in the generator's vocabulary."""
        vocabulary = generator_vocabulary(self.generator)
        index = [i for i, label in enumerate(labels) if label in vocabulary]
        return np.asarray(points, dtype=np.float32)[index], [labels[i] for i in index]

    def pending(self, state: PersonState) -> tuple[np.ndarray, list[str]]:
        """The real prototypes (:meth:`real_prototypes`) not imagined yet.

        Nothing is pending until the person learned something real since the last complete
        imagination pass. Then a prototype counts as done while it lies within
        ``reimagine_distance`` of one imagined before; one that moved further (the memory learned
        more faces) is imagined again.
        """
        if state.imagined_through >= state.n_episodes:
            return np.zeros((0, 0), np.float32), []
        prototypes, labels = self.real_prototypes(state)
        if labels and state.imagined_sources is not None:
            keep = _nearest(prototypes, state.imagined_sources) > self.config.reimagine_distance
            index = np.flatnonzero(keep)
            prototypes, labels = prototypes[index], [labels[i] for i in index]
        return prototypes, labels

    @property
    def recentres(self) -> bool:
        """Whether imagined points are recentred on the known people (see the class notes)."""
        cfg = self.config
        return cfg.recentre and cfg.method == "generator" and cfg.residual

    def run(
        self,
        persons: Sequence[PersonState],
        budget_s: float,
        lock: threading.RLock | threading.Lock,
        on_trained: Callable[[PersonState], None] | None = None,
        peers: Sequence[PersonState] | None = None,
    ) -> ImaginationReport | None:
        """Imagine for the given persons (in order) until the budget is spent, work runs out or
        a face appears.

        Returns ``None`` without doing anything when imagination is disabled or the robot is not
        idle. ``on_trained(state)`` is called (under ``lock``) for each person whose memory
        changed, e.g. to save it; when a face preempted the run, those persons are only marked
        ``dirty`` instead, so that the scheduler yields without waiting for the disk. ``peers``
        are the people recentring measures and learns from; by default it measures ``persons``
        and learns from every person measured so far, evicted ones too (the person imagined for
        never counts for themself).
        """
        if not self.config.enabled or not self.is_idle():
            return None
        self._activity.clear()
        if not self.is_idle():  # a face arrived just before the clear
            return None
        start = time.perf_counter()
        deadline = start + budget_s
        # Recentring uses every person measured so far (evicted ones too) unless told whom.
        recentre_on = None if peers is None else [p.person_id for p in peers]
        peers = list(persons) if peers is None else list(peers)
        touched: list[PersonState] = []
        n_prototypes = n_latents = n_chunks = 0
        out_of_time = False
        if self.recentres:
            with lock:
                waiting = [state for state in persons if self.pending(state)[1]]
            others = {p.person_id for p in peers} | set(self.known.measured(recentre_on))
            measured, complete = self._measure_peers(peers, waiting, others, deadline, lock)
            n_chunks += measured
            out_of_time = not complete and not self._activity.is_set()
        for state in persons:
            if self._activity.is_set() or out_of_time:
                break
            with lock:
                prototypes, labels = self.pending(state)
                recentring = None
                if self.recentres and labels:
                    min_peers = self.config.recentre_min_peers
                    recentring = self.known.recentring(state, recentre_on, min_peers)
            size = self.config.chunk_prototypes
            complete = True
            for begin in range(0, len(labels), size):
                if self._activity.is_set():
                    complete = False
                    break
                if time.perf_counter() >= deadline:
                    out_of_time, complete = True, False
                    break
                chunk, chunk_labels = prototypes[begin : begin + size], labels[begin : begin + size]
                trained = self._chunk(state, chunk, chunk_labels, lock, recentring)
                if trained < 0:
                    complete = False
                    break
                n_prototypes += len(chunk_labels)
                n_latents += trained
                n_chunks += 1
                if state not in touched:
                    touched.append(state)
            if complete:
                # One pass per real learning: prototypes that move while the memories learn
                # the imagined faces are not chased (that could go on for ever).
                state.imagined_through = state.n_episodes
        # Save person by person; once a face arrives, yield at once and leave the rest marked
        # dirty (saved in the next idle period, or by save/close/eviction).
        for state in touched:
            if self._activity.is_set() or on_trained is None:
                state.dirty = True
                continue
            with lock:
                on_trained(state)
        preempted = self._activity.is_set()
        done = False
        if not preempted:
            with lock:
                done = all(len(self.pending(state)[1]) == 0 for state in persons)
        seconds = time.perf_counter() - start
        report = ImaginationReport(
            persons=tuple(state.person_id for state in touched),
            prototypes=n_prototypes,
            latents=n_latents,
            chunks=n_chunks,
            seconds=seconds,
            preempted=preempted,
            done=done,
        )
        self.last_report = report
        self.total_latents += n_latents
        self.total_seconds += seconds
        return report

    def _measure_peers(
        self,
        peers: Sequence[PersonState],
        waiting: Sequence[PersonState],
        others: set[str],
        deadline: float,
        lock: threading.RLock | threading.Lock,
    ) -> tuple[int, bool]:
        """Bring up to date, chunk by chunk, the recentring terms of the (resident) peers that
        someone waiting for imagination could use: someone with ``recentre_min_peers`` people
        besides themself among ``others`` (the ids recentring may use), who has not learned an
        expression the peer showed. The number of chunks measured, and False if a face or the
        budget stopped it."""
        vocabulary = generator_vocabulary(self.generator)
        size = self.config.chunk_prototypes
        min_peers = self.config.recentre_min_peers
        waiting = [s for s in waiting if len(others - {s.person_id}) >= min_peers]
        chunks = 0
        for peer in peers:
            shown = set(peer.real_labels)
            if not any(
                s.person_id != peer.person_id and shown - set(s.memory.labels_) for s in waiting
            ):
                continue
            with lock:
                if not peer.resident or not self.known.stale(peer):
                    continue
                points, labels = self.real_faces(peer)
                entry = self.known.entry(peer, points, labels, vocabulary)
            while entry.points is not None:
                if self._activity.is_set() or time.perf_counter() >= deadline:
                    return chunks, False
                begin, end = entry.measured, entry.measured + size
                faces, sources = entry.points[begin:end], entry.labels[begin:end]
                # G's change of each face, in the same preemptible steps as imagination.
                points, targets, rows = self._render(faces, sources, entry.recentring.classes, lock)
                if points is None:
                    return chunks, False
                entry.recentring.add(points - faces[rows], [sources[i] for i in rows], targets)
                entry.measured = end
                chunks += 1
                if end >= len(entry.labels):
                    entry.points, entry.labels = None, []  # complete: keep the terms only
        return chunks, True

    def _chunk(
        self,
        state: PersonState,
        prototypes: np.ndarray,
        labels: list[str],
        lock: threading.RLock | threading.Lock,
        recentring: PeerRecentring | None = None,
    ) -> int:
        """Generate, encode and train one chunk; -1 if a face interrupted it (nothing trained).

        Only expressions not learned for real are imagined (imagined samples of the others would
        yield at once). The lock is taken per step and the activity flag checked between steps,
        so a face waits for at most one step.
        """
        with lock:
            if not state.resident:  # evicted or forgotten meanwhile: leave it alone
                return -1
            real = set(state.memory.labels_)
            targets = [c for c in generator_vocabulary(self.generator) if c not in real]
        if self.config.method == "class_offsets":
            points, imagined_labels = class_offset_points(
                prototypes,
                labels,
                targets,
                self.calibration.class_means,
                self.calibration.labels,
            )
        else:
            points, imagined_labels = self._generate(prototypes, labels, targets, lock, recentring)
            if points is None:
                return -1
        if not imagined_labels:
            self._mark(state, prototypes)
            return 0
        with lock:
            if not state.resident:
                return -1
            state.memory.partial_fit(points, imagined_labels, imagined=True)
            self._mark(state, prototypes)
            state.n_imagined += len(imagined_labels)
        return len(imagined_labels)

    def _generate(
        self,
        prototypes: np.ndarray,
        labels: list[str],
        targets: list[str],
        lock: threading.RLock | threading.Lock,
        recentring: PeerRecentring | None = None,
    ) -> tuple[np.ndarray | None, list[str]]:
        """E(G(z, c)) (or its residual form, recentred when given) in the memories' space;
        ``None`` if a face came."""
        points, imagined_labels, rows = self._render(prototypes, labels, targets, lock)
        if points is not None and recentring is not None:
            points += recentring.shift([labels[i] for i in rows], imagined_labels)
        return points, imagined_labels

    def _render(
        self,
        prototypes: np.ndarray,
        labels: list[str],
        targets: list[str],
        lock: threading.RLock | threading.Lock,
    ) -> tuple[np.ndarray | None, list[str], np.ndarray]:
        """G then E on each prototype and target, one locked step at a time; the points in the
        memories' space, their targets and source rows (points ``None`` if a face came)."""
        z = self.calibration.to_latent(prototypes)
        with lock:
            faces, imagined_labels, rows = imagine_faces(z, self.generator, labels, targets)
        if self._activity.is_set():
            return None, [], rows
        if not imagined_labels:
            return np.zeros((0, prototypes.shape[1]), np.float32), [], rows
        with lock:
            latents = np.asarray(self.encoder.encode(faces), dtype=np.float32)
        if self._activity.is_set():
            return None, [], rows
        if self.config.residual:
            with lock:
                own = reconstruct_latents(z, self.encoder, self.generator, labels)
            if self._activity.is_set():
                return None, [], rows
            latents = np.clip(z[rows] + latents - own[rows], -1.0, 1.0)
        return self.calibration.to_memory(latents), imagined_labels, rows

    @staticmethod
    def _mark(state: PersonState, prototypes: np.ndarray) -> None:
        state.imagined_sources = append_rows(state.imagined_sources, prototypes, MAX_RECORDED)


def _nearest(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance from each point to its nearest reference row (inf if none)."""
    if reference is None or len(reference) == 0:
        return np.full(len(points), np.inf, dtype=np.float32)
    sq = (
        np.sum(points**2, axis=1)[:, None]
        - 2.0 * points @ reference.T
        + np.sum(reference**2, axis=1)[None, :]
    )
    return np.sqrt(np.maximum(sq.min(axis=1), 0.0))
