"""One Growing Dual Memory per person: creation, LRU residency, persistence.

CLIFER personalises by giving every person their own episodic and semantic memory. On a robot that
meets many people this needs bookkeeping, kept here so the runtime only asks "the memory of person
X":

- **Creation on first sight**: an unknown person id gets a fresh memory (or the one saved on disk).
- **Bounded RAM**: at most ``max_in_ram`` persons are resident; the least recently seen is evicted
  first (its unfinished episode is trained, and it is saved only if something changed).
- **Names on disk**: a person's files are named by :func:`clifer_edge.fileio.file_stem` of the id
  (one-to-one, no path separator): ``<key>.gdm`` (the memory, written by
  :meth:`GrowingDualMemory.save`), ``<key>.person.npz`` (the runtime's record: original id,
  counts, what was already imagined, identity centroid, the encoder the latents come from) and,
  with ``memory.store_faces``, ``faces/<key>/<label key>/*.png``. Files are written atomically
  (temporary, fsync, rename) with mode 0600 in 0700 folders; temporaries an interrupted write
  left behind are deleted at start-up.
- **Total loading**: a file that cannot be used (damaged, inconsistent, from another encoder) is
  renamed ``<name>.corrupt-<UTC time>`` (``.other-encoder-`` for an encoder mismatch) with one
  log line, and the person starts afresh. Nothing is deleted silently; only
  :meth:`PersonStore.forget` and the retention rules for never-labelled persons delete.
- **Retention**: a person who was never labelled (no memory) is written only if there is
  something to keep (an identity centroid); at most ``max_unlabelled`` of them stay on disk
  (least recently seen deleted first) and none longer than ``unlabelled_max_age_s`` after last
  being seen.
- **Privacy**: without ``store_faces`` the files hold latents and labels, no face images.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zipfile
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.fileio import (
    atomic_savez,
    atomic_write_bytes,
    file_stem,
    is_temporary,
    private_directory,
    read_npz,
    stem_of,
)
from clifer_edge.memory import GrowingDualMemory

logger = logging.getLogger(__name__)

#: Version of the ``.person.npz`` record format (2: records the encoder; 3: the labels of the
#: real latents).
PERSON_FORMAT = 3
#: Longest accepted person id, in characters.
MAX_PERSON_ID_LENGTH = 256
_MEMORY_SUFFIX = ".gdm"
_RECORD_SUFFIX = ".person.npz"
_FACES_FOLDER = "faces"
#: Real labelled latents remembered per person (how they really show each expression).
MAX_REAL_LATENTS = 1024
#: PersonState arrays kept in the record file: (k, z_dim) latents, and the (z_dim,) centroid.
_RECORD_ARRAYS = ("real_latents", "imagined_sources", "identity")
_RECORD_COUNTS = ("n_episodes", "n_faces_learned", "n_imagined", "imagined_through")
#: Exceptions that mean "this file cannot be used" while loading it (MemoryFileError is a
#: ValueError; MemoryError: a header claiming a huge array that slipped past the size checks).
_UNUSABLE = (ValueError, TypeError, KeyError, OSError, EOFError, MemoryError)
_UNUSABLE += (zipfile.BadZipFile, zlib.error)


def check_person_id(person_id: Any) -> str:
    """Return ``person_id`` if it is usable as a person id.

    Raises
    ------
    ValueError
        Unless it is a non-empty, printable string of at most :data:`MAX_PERSON_ID_LENGTH`
        characters.
    """
    if not isinstance(person_id, str) or not person_id.strip():
        raise ValueError(f"person id must be a non-empty string, got {person_id!r}")
    if len(person_id) > MAX_PERSON_ID_LENGTH:
        raise ValueError(
            f"person id of {len(person_id)} characters is longer than {MAX_PERSON_ID_LENGTH}"
        )
    if not person_id.isprintable():
        raise ValueError(f"person id {person_id!r} holds non-printable characters")
    return person_id


def person_key(person_id: str) -> str:
    """The file-name stem of a person id (one-to-one; see :func:`clifer_edge.fileio.file_stem`).

    Raises
    ------
    ValueError
        If the id is not usable (:func:`check_person_id`).
    """
    return file_stem(check_person_id(person_id))


@dataclass(frozen=True)
class EncoderInfo:
    """The encoder whose latents a person's memory holds (recorded with every person)."""

    #: SHA-256 of the encoder file; ``None`` if unknown (then only ``z_dim`` is compared).
    sha256: str | None
    #: Latent size.
    z_dim: int

    def mismatch(self, other: EncoderInfo) -> str | None:
        """Why latents of ``other`` cannot be used with this encoder, or None if they can."""
        if other.z_dim != self.z_dim:
            return f"latent size {other.z_dim}, this encoder's is {self.z_dim}"
        if self.sha256 and other.sha256 and other.sha256 != self.sha256:
            return f"encoder sha256 {other.sha256[:12]}, this one is {self.sha256[:12]}"
        return None


@dataclass(frozen=True)
class Retention:
    """What is kept on disk about persons who were never labelled (see the module docstring)."""

    #: Never-labelled persons kept on disk; beyond it the least recently seen are deleted.
    max_unlabelled: int = 1000
    #: Seconds after their last sighting when never-labelled persons are deleted.
    unlabelled_max_age_s: float = 30 * 86400.0


class PersonSaveError(OSError):
    """Some persons could not be saved; every other person was (see ``failures``)."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        named = "; ".join(f"{pid!r}: {error}" for pid, error in failures.items())
        super().__init__(f"could not save {len(failures)} person(s): {named}")


@dataclass
class PersonState:
    """Everything the runtime keeps about one person while they are resident in RAM."""

    person_id: str
    memory: GrowingDualMemory
    #: Labels the person showed for real (labelled episodes and teach), not imagined ones.
    shown_labels: set[str] = field(default_factory=set)
    #: The newest latents of real labelled faces, shape (k, d) (how the person really shows each
    #: expression; imagination recentres on them for the other persons).
    real_latents: np.ndarray | None = None
    #: The labels of the last ``len(real_labels)`` rows of ``real_latents`` (records of format
    #: 2 kept latents without labels).
    real_labels: list[str] = field(default_factory=list)
    #: Episodic prototypes already imagined from, shape (k, d) (not imagined again unless they
    #: move further than ``imagination.reimagine_distance``).
    imagined_sources: np.ndarray | None = None
    #: Labelled latents waiting for the end of the running episode.
    pending_latents: list[np.ndarray] = field(default_factory=list)
    pending_labels: list[str] = field(default_factory=list)
    #: Latents of the latest unlabelled faces, for few-shot ``teach``.
    recent: deque[np.ndarray] = field(default_factory=deque)
    #: Running mean of normalised latents (identity mode) and its count.
    identity: np.ndarray | None = None
    identity_count: int = 0
    n_episodes: int = 0
    n_faces_learned: int = 0
    n_imagined: int = 0
    #: ``n_episodes`` when the last complete imagination pass ended.
    imagined_through: int = 0
    last_seen: float = 0.0
    #: Changed in RAM since the last save (counts, identity, or imagination that was preempted
    #: before it could save).
    dirty: bool = False
    #: ``memory.n_episodes_`` when the memory file was last written or read (None: never), so
    #: an unchanged memory is not rewritten.
    saved_memory_episodes: int | None = None
    #: False once evicted or forgotten: a stale object (e.g. held by the imagination scheduler)
    #: must then never be saved over the files.
    resident: bool = True

    def learn(self, latents: np.ndarray, labels: list[str], replay: bool = False) -> None:
        """Train the memory on one real labelled episode, then (with ``replay``) rehearse what
        the person showed before with RNAT pseudo-replay; remember what the person showed (the
        labels, and the latents where imagination may start from)."""
        self.memory.partial_fit(latents, labels)
        if replay:
            self.memory.replay()
        self.shown_labels.update(labels)
        self.real_latents = append_rows(self.real_latents, latents, MAX_REAL_LATENTS)
        self.real_labels = [*self.real_labels, *labels][-MAX_REAL_LATENTS:]
        self.n_episodes += 1
        self.n_faces_learned += len(labels)

    @property
    def fitted(self) -> bool:
        """Whether the person's memory has learned anything yet."""
        return getattr(self.memory, "n_features_in_", None) is not None and bool(
            getattr(self.memory, "labels_", [])
        )

    @property
    def memory_changed(self) -> bool:
        """Whether the memory learned something since its file was written."""
        return self.fitted and self.memory.n_episodes_ != self.saved_memory_episodes

    @property
    def worth_keeping(self) -> bool:
        """Whether there is anything to write: a memory, or an identity centroid."""
        return self.fitted or self.identity is not None


@dataclass
class _OnDisk:
    """What the store knows about a person's files without reading them again."""

    person_id: str | None
    labelled: bool
    seen_at: float


class PersonStore:
    """The persons' memories: resident ones in an LRU, all of them on disk.

    Parameters
    ----------
    directory : path-like
        Where memory files live (created 0700 if missing).
    memory_factory : callable(person_id) -> GrowingDualMemory
        Makes a fresh, unfitted memory for a new person; its node bounds also apply to memories
        loaded from disk.
    max_in_ram : int
        Persons kept resident; the least recently used is evicted beyond this.
    recent_faces : int
        Length of each person's buffer of recent unlabelled latents.
    before_evict : callable(PersonState), optional
        Called before a person leaves RAM (the runtime trains their unfinished episode there).
    encoder : EncoderInfo, optional
        The encoder of the running models; persons recorded with another one are quarantined.
    retention : Retention, optional
        Limits for never-labelled persons (default :class:`Retention` ``()``).
    on_removed : callable(person_id), optional
        Called when a person is deleted (forget or retention), e.g. to drop their identity.
    clock : callable() -> float
        Wall-clock time (seconds since the epoch) for last-seen times and retention.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        memory_factory: Callable[[str], GrowingDualMemory],
        max_in_ram: int = 8,
        recent_faces: int = 32,
        before_evict: Callable[[PersonState], None] | None = None,
        encoder: EncoderInfo | None = None,
        retention: Retention | None = None,
        on_removed: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_in_ram < 1:
            raise ValueError(f"max_in_ram={max_in_ram} should be >= 1")
        self.directory = private_directory(directory)
        self.memory_factory = memory_factory
        self.max_in_ram = max_in_ram
        self.recent_faces = recent_faces
        self.before_evict = before_evict
        self.encoder = encoder
        self.retention = retention if retention is not None else Retention()
        self.on_removed = on_removed
        self.clock = clock
        self._resident: OrderedDict[str, PersonState] = OrderedDict()
        self._on_disk: dict[str, _OnDisk] = {}
        #: Never-labelled persons on disk (key -> last seen), least recently saved first.
        self._unlabelled: OrderedDict[str, float] = OrderedDict()
        self._identities: dict[str, tuple[np.ndarray, int]] = {}
        self.n_evictions = 0
        self.n_quarantined = 0
        self.n_retention_deleted = 0
        self._remove_temporaries()
        self._scan()
        for seen, key in sorted(
            (entry.seen_at, key) for key, entry in self._on_disk.items() if not entry.labelled
        ):
            self._unlabelled[key] = seen
        self.apply_retention()

    # -- access ------------------------------------------------------------------------------
    def get(self, person_id: str) -> PersonState:
        """The person's state, loaded from disk or created on first sight; marks them recent."""
        key = person_key(person_id)
        state = self._resident.get(key)
        if state is None:
            state = self._load(person_id)
            self._resident[key] = state
            self._evict_beyond_limit()
        else:
            self._resident.move_to_end(key)
        state.last_seen = self.clock()
        return state

    def resident(self) -> list[PersonState]:
        """Persons in RAM, least recently seen first."""
        return list(self._resident.values())

    def n_known(self) -> int:
        """Number of persons resident or on disk (cheap: no file is read)."""
        return len(self._resident.keys() | self._on_disk.keys())

    def known_ids(self) -> list[str]:
        """Ids of all persons, resident or on disk (a memory without record: its file key)."""
        ids = {state.person_id for state in self._resident.values()}
        for key, entry in self._on_disk.items():
            if key not in self._resident:
                ids.add(entry.person_id or key)
        return sorted(ids)

    def iter_records(self) -> Iterator[tuple[str, np.ndarray | None, int]]:
        """(person id, identity centroid, count) of every person, resident or on disk."""
        seen: set[str] = set()
        for state in self._resident.values():
            seen.add(state.person_id)
            yield state.person_id, state.identity, state.identity_count
        for person_id, (centroid, count) in self._identities.items():
            if person_id not in seen:
                yield person_id, centroid, count

    # -- persistence -------------------------------------------------------------------------
    def save(self, state: PersonState) -> None:
        """Write the person's memory (if it changed) and record atomically, memory first.

        A state that is no longer resident (evicted or forgotten) is not written: the files
        already hold its last saved version, or must stay deleted. A person with nothing to keep
        (never labelled, no identity centroid) leaves no file.
        """
        if not state.resident:
            return
        if not state.worth_keeping:
            state.dirty = False
            return
        key = person_key(state.person_id)
        if state.memory_changed:
            state.memory.save(self.directory / f"{key}{_MEMORY_SUFFIX}")
            state.saved_memory_episodes = state.memory.n_episodes_
        meta = {
            "format": PERSON_FORMAT,
            "person_id": state.person_id,
            "n_episodes": state.n_episodes,
            "n_faces_learned": state.n_faces_learned,
            "n_imagined": state.n_imagined,
            "imagined_through": state.imagined_through,
            "identity_count": state.identity_count,
            "shown_labels": sorted(state.shown_labels),
            "real_labels": list(state.real_labels),
            "saved_at": time.time(),
            "seen_at": state.last_seen,
            "encoder": None
            if self.encoder is None
            else {"sha256": self.encoder.sha256, "z_dim": self.encoder.z_dim},
        }
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        for name in _RECORD_ARRAYS:
            value = getattr(state, name)
            if value is not None:
                arrays[name] = np.asarray(value, dtype=np.float32)
        # A never-labelled person's record (an identity centroid) is not worth an fsync.
        atomic_savez(self.directory / f"{key}{_RECORD_SUFFIX}", durable=state.fitted, **arrays)
        state.dirty = False
        self._on_disk[key] = _OnDisk(state.person_id, state.fitted, state.last_seen)
        if state.fitted:
            self._unlabelled.pop(key, None)
        else:
            self._unlabelled[key] = state.last_seen
            self._unlabelled.move_to_end(key)
            if len(self._unlabelled) > self.retention.max_unlabelled:
                self.apply_retention()

    def save_if_changed(self, state: PersonState) -> None:
        """:meth:`save` only if something changed since the last save (no needless fsync)."""
        if state.dirty or state.memory_changed:
            self.save(state)

    def save_all(self, prepare: Callable[[PersonState], None] | None = None) -> None:
        """Save every resident person that changed, then apply the retention rules.

        ``prepare(state)`` runs first for each person (the runtime ends their episode there).

        Raises
        ------
        PersonSaveError
            Naming every person that could not be saved, after all the others were.
        """
        failures: dict[str, BaseException] = {}
        for state in list(self._resident.values()):
            try:
                if prepare is not None:
                    prepare(state)
                self.save_if_changed(state)
            except Exception as error:  # collected and raised below, naming the person
                logger.error("could not save person %r: %s", state.person_id, error)
                failures[state.person_id] = error
        self.apply_retention()
        if failures:
            raise PersonSaveError(failures)

    def store_face(self, state: PersonState, label: str, png: bytes) -> Path:
        """Keep one encoded face image of a person under ``faces/<key>/<label key>/`` (0600)."""
        folder = private_directory(
            self.directory / _FACES_FOLDER / person_key(state.person_id) / file_stem(label)
        )
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{time.perf_counter_ns() % 10**9:09d}.png"
        atomic_write_bytes(folder / name, png)
        return folder / name

    def forget(self, person_id: str) -> bool:
        """Delete a person from RAM and disk; True if there was anything to delete.

        Memory, record, quarantined copies, temporaries and stored faces all go: forgetting
        means nothing stays behind.
        """
        key = person_key(person_id)
        state = self._resident.pop(key, None)
        found = state is not None
        if state is not None:
            state.resident = False
        found |= self._delete_files(key, everything=True)
        found |= self._on_disk.pop(key, None) is not None
        self._unlabelled.pop(key, None)
        self._identities.pop(person_id, None)
        if found:
            logger.info("forgot person %r (memory and files deleted)", person_id)
            if self.on_removed is not None:
                self.on_removed(person_id)
        return found

    def apply_retention(self) -> None:
        """Delete never-labelled persons beyond ``max_unlabelled`` or not seen for too long.

        Cheap: it walks the never-labelled persons from the least recently seen and stops at the
        first one that may stay. Resident ones count too (by their last sighting); one with
        labelled faces still pending is never deleted.
        """
        now = self.clock()
        limit, max_age = self.retention.max_unlabelled, self.retention.unlabelled_max_age_s
        excess = len(self._unlabelled) - limit
        doomed: list[str] = []
        resident: list[tuple[float, str]] = []
        for key, seen in self._unlabelled.items():
            if excess <= 0 and now - seen <= max_age:
                break
            state = self._resident.get(key)
            if state is not None:  # judged below by its last sighting
                if not (state.fitted or state.pending_labels):
                    resident.append((state.last_seen, key))
                continue
            doomed.append(key)
            excess -= 1
        for seen, key in sorted(resident):
            if excess > 0 or now - seen > max_age:
                doomed.append(key)
                excess -= 1
        n_old = sum(now - self._unlabelled[key] > max_age for key in doomed)
        for key in doomed:
            del self._unlabelled[key]
            entry = self._on_disk.pop(key, None)
            state = self._resident.pop(key, None)
            if state is not None:
                state.resident = False
            self._delete_files(key)
            self.n_retention_deleted += 1
            person_id = entry.person_id if entry is not None else None
            if person_id is not None:
                self._identities.pop(person_id, None)
                if self.on_removed is not None:
                    self.on_removed(person_id)
        if doomed:
            logger.info(
                "retention: deleted %d never-labelled person(s) (%d not seen for %.0f s, the "
                "rest beyond the limit of %d)",
                len(doomed),
                n_old,
                max_age,
                limit,
            )

    # -- internals ---------------------------------------------------------------------------
    def _evict_beyond_limit(self) -> None:
        while len(self._resident) > self.max_in_ram:
            key, state = next(iter(self._resident.items()))
            if self.before_evict is not None:
                self.before_evict(state)
            self.save_if_changed(state)
            state.resident = False
            del self._resident[key]
            self.n_evictions += 1
            logger.debug("evicted person %r from RAM", state.person_id)

    def _remove_temporaries(self) -> None:
        """Delete what interrupted atomic writes left (complete copies of latents, too)."""
        removed = 0
        folders = [self.directory]
        faces = self.directory / _FACES_FOLDER
        if faces.is_dir():
            folders += [Path(root) for root, _, _ in os.walk(faces)]
        for folder in folders:
            for entry in os.scandir(folder):
                if entry.is_file(follow_symlinks=False) and is_temporary(entry.name):
                    os.unlink(entry.path)
                    removed += 1
        if removed:
            logger.info("removed %d temporary file(s) left by interrupted writes", removed)

    def _scan(self) -> None:
        """Index the persons on disk (ids, labelled or not, last seen, identity centroids)."""
        for entry in sorted(os.scandir(self.directory), key=lambda e: e.name):
            name = entry.name
            if not entry.is_file(follow_symlinks=False):
                continue
            key = stem_of(name)
            if name == f"{key}{_MEMORY_SUFFIX}":
                info = self._on_disk.setdefault(key, _OnDisk(None, True, self.clock()))
                info.labelled = True
            elif name == f"{key}{_RECORD_SUFFIX}":
                try:
                    meta, arrays = self._read_record(Path(entry.path), key)
                except _UNUSABLE as error:
                    memory = self.directory / f"{key}{_MEMORY_SUFFIX}"
                    paths = [Path(entry.path)]
                    if isinstance(error, _EncoderMismatch) and memory.exists():
                        paths.insert(0, memory)  # its latents come from that encoder too
                        self._on_disk.pop(key, None)
                    self._quarantine(paths, error)
                    continue
                info = self._on_disk.setdefault(key, _OnDisk(None, False, 0.0))
                info.person_id = meta["person_id"]
                info.seen_at = float(meta.get("seen_at", meta.get("saved_at", 0.0)))
                if "identity" in arrays and meta["identity_count"] > 0:
                    self._identities[meta["person_id"]] = (
                        arrays["identity"],
                        meta["identity_count"],
                    )

    def _load(self, person_id: str) -> PersonState:
        key = person_key(person_id)
        state = PersonState(
            person_id=person_id,
            memory=self.memory_factory(person_id),
            recent=deque(maxlen=self.recent_faces),
        )
        memory_path = self.directory / f"{key}{_MEMORY_SUFFIX}"
        record_path = self.directory / f"{key}{_RECORD_SUFFIX}"
        record = None
        if record_path.exists():
            try:
                record = self._read_record(record_path, key, person_id)
            except _EncoderMismatch as error:
                self._quarantine([p for p in (memory_path, record_path) if p.exists()], error)
                self._on_disk.pop(key, None)
                return state
            except _UNUSABLE as error:
                self._quarantine([record_path], error)
        if memory_path.exists():
            try:
                memory = GrowingDualMemory.load(memory_path)
                self._check_memory(memory)
            except _UNUSABLE as error:
                self._quarantine([memory_path], error)
                if key in self._on_disk:
                    self._on_disk[key].labelled = False
            else:
                state.memory = memory
                state.saved_memory_episodes = memory.n_episodes_
        if record is not None:
            meta, arrays = record
            for name in _RECORD_COUNTS:
                setattr(state, name, meta[name])
            state.identity_count = meta["identity_count"]
            state.shown_labels = set(meta["shown_labels"])
            for name in _RECORD_ARRAYS:
                setattr(state, name, arrays.get(name))
            state.real_labels = list(meta.get("real_labels", []))
        return state

    def _check_memory(self, memory: GrowingDualMemory) -> None:
        """Refuse a memory of another latent size; apply the configured node bounds to it."""
        if self.encoder is not None and memory.n_features_in_ != self.encoder.z_dim:
            raise _EncoderMismatch(
                f"memory of latent size {memory.n_features_in_}, this encoder's is "
                f"{self.encoder.z_dim}"
            )
        fresh = self.memory_factory("").config
        if fresh is not None:
            bounds = (fresh.episodic.max_nodes, fresh.semantic.max_nodes)
            if bounds != (memory.config_.episodic.max_nodes, memory.config_.semantic.max_nodes):
                memory.set_max_nodes(*bounds)
            stats = memory.stats()
            over = [
                f"{name} {stats[name]['nodes']} > {bound}"
                for name, bound in zip(("episodic", "semantic"), bounds, strict=True)
                if stats[name]["nodes"] > bound
            ]
            if over:
                logger.warning(
                    "a loaded memory holds more nodes than the configured bound (%s); it keeps "
                    "them and grows no further",
                    ", ".join(over),
                )

    def _read_record(
        self, path: Path, key: str, person_id: str | None = None
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Read and check a record completely (raises one of ``_UNUSABLE`` if it is unusable)."""
        arrays = read_npz(path, max_bytes=64 << 20)
        if "meta" not in arrays or arrays["meta"].dtype.kind != "U" or arrays["meta"].ndim != 0:
            raise ValueError("record has no meta string")
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict):
            raise ValueError("record meta is not a mapping")
        version = meta.get("format")
        if not _is_int(version) or not 1 <= version <= PERSON_FORMAT:
            raise ValueError(f"record format {version!r} is not one of 1..{PERSON_FORMAT}")
        owner = check_person_id(meta.get("person_id"))
        if person_key(owner) != key or (person_id is not None and owner != person_id):
            raise ValueError(f"record of person {owner!r} stored under the name {key!r}")
        for name in (*_RECORD_COUNTS, "identity_count"):
            if not _is_int(meta.get(name, 0)) or meta.get(name, 0) < 0:
                raise ValueError(f"record field {name}={meta.get(name)!r} is not a count")
            meta[name] = int(meta.get(name, 0))
        labels = meta.get("shown_labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"record field shown_labels={labels!r} is not a list of labels")
        meta["shown_labels"] = labels
        real = meta.get("real_labels", [])
        if not isinstance(real, list) or not all(isinstance(x, str) for x in real):
            raise ValueError(f"record field real_labels={real!r} is not a list of labels")
        for name in ("saved_at", "seen_at"):
            value = meta.get(name, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"record field {name}={value!r} is not a time")
        recorded = meta.get("encoder")
        z_dim = None if self.encoder is None else self.encoder.z_dim
        if isinstance(recorded, dict):
            sha, width = recorded.get("sha256"), recorded.get("z_dim")
            if not (sha is None or isinstance(sha, str)) or not _is_int(width):
                raise ValueError(f"record field encoder={recorded!r} is damaged")
            if self.encoder is not None:
                reason = self.encoder.mismatch(EncoderInfo(sha, width))
                if reason is not None:
                    raise _EncoderMismatch(f"person {owner!r} was learned with {reason}")
            z_dim = width
        elif recorded is not None:
            raise ValueError(f"record field encoder={recorded!r} is damaged")
        for name, array in arrays.items():
            if name not in _RECORD_ARRAYS:
                raise ValueError(f"record holds an unknown array {name!r}")
            ndim = 1 if name == "identity" else 2
            width = array.shape[-1] if array.ndim else None
            if array.dtype.kind != "f" or array.ndim != ndim or width != (z_dim or width):
                raise ValueError(
                    f"record array {name} of shape {array.shape} and dtype {array.dtype}, "
                    f"expected {ndim}-D float with {z_dim or 'the latent'} columns"
                )
            if not np.all(np.isfinite(array)):
                raise ValueError(f"record array {name} holds non-finite values")
            arrays[name] = array.astype(np.float32)
        widths = {a.shape[-1] for a in arrays.values()}
        if len(widths) > 1:
            raise ValueError(f"record arrays of different widths {sorted(widths)}")
        n_real = len(arrays["real_latents"]) if "real_latents" in arrays else 0
        if len(meta.get("real_labels", [])) > n_real:
            raise ValueError(
                f"record holds {len(meta['real_labels'])} real labels for {n_real} real latents"
            )
        return meta, arrays

    def _delete_files(self, key: str, everything: bool = False) -> bool:
        """Delete a person key's memory and record; with ``everything`` also quarantined copies,
        temporaries and stored faces (a scan of the directory). True if there was any file."""
        found = False
        if everything:
            for entry in os.scandir(self.directory):
                if _is_person_file(entry.name, key) and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    found = True
            faces = self.directory / _FACES_FOLDER / key
            if faces.is_dir():
                shutil.rmtree(faces)
                found = True
            return found
        for suffix in (_MEMORY_SUFFIX, _RECORD_SUFFIX):
            path = self.directory / f"{key}{suffix}"
            if path.exists():
                path.unlink()
                found = True
        return found

    def _quarantine(self, paths: list[Path], error: BaseException) -> None:
        """Rename unusable files out of the way (kept for inspection) with one log line."""
        tag = "other-encoder" if isinstance(error, _EncoderMismatch) else "corrupt"
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        moved = []
        for path in paths:
            target = path.with_name(f"{path.name}.{tag}-{stamp}")
            counter = 1
            while target.exists():
                target = path.with_name(f"{path.name}.{tag}-{stamp}-{counter}")
                counter += 1
            os.replace(path, target)
            moved.append(target.name)
            self.n_quarantined += 1
        what = "was learned with another encoder" if tag == "other-encoder" else "is damaged"
        logger.error(
            "memory file %s %s (%s); moved to %s, the person starts afresh",
            " and ".join(str(p) for p in paths),
            what,
            error,
            ", ".join(moved),
        )


class _EncoderMismatch(ValueError):
    """A person's files hold latents of another encoder."""


def _is_person_file(name: str, key: str) -> bool:
    """Whether a file of the memory directory is one of person ``key``'s (memory or record, a
    quarantined copy of one, or a temporary of one)."""
    rest = name.removeprefix(".")[len(key) :]
    return stem_of(name) == key and rest.startswith((_MEMORY_SUFFIX, _RECORD_SUFFIX))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def append_rows(record: np.ndarray | None, rows: np.ndarray, limit: int) -> np.ndarray:
    """Rows appended to a record, keeping only the newest ``limit``."""
    rows = np.asarray(rows, dtype=np.float32)
    merged = rows if record is None or len(record) == 0 else np.concatenate([record, rows])
    return merged[-limit:]
