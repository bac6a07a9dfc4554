"""One Growing Dual Memory per person: creation, LRU residency, persistence.

CLIFER personalises by giving every person their own episodic and semantic memory. On a robot that
meets many people this needs bookkeeping, kept here so the runtime only asks "the memory of person
X":

- **Creation on first sight**: an unknown person id gets a fresh memory (or the one saved on disk).
- **Bounded RAM**: at most ``max_in_ram`` persons are resident; the least recently seen is saved and
  evicted first (its unfinished episode is trained before it goes).
- **Persistence**: each person is two files in the memory directory, ``<key>.gdm`` (the memory,
  written atomically by :meth:`GrowingDualMemory.save`) and ``<key>.person.npz`` (the runtime's own
  record: original id, counts, what was already imagined, identity centroid), also written
  atomically (temporary file, fsync, rename). A crash therefore leaves either the previous or the
  new version of each file, never a torn one.
- **Quarantine**: a file that cannot be read is renamed ``<name>.corrupt-<UTC time>`` and logged;
  the person starts afresh. Nothing is deleted silently; only :meth:`PersonStore.forget` deletes.
- **Privacy**: the files hold latents (prototypes, recent labelled latents) and labels, no face
  images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import zipfile
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.fileio import atomic_savez
from clifer_edge.memory import GrowingDualMemory

logger = logging.getLogger(__name__)

#: Version of the ``.person.npz`` record format.
PERSON_FORMAT = 1
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MEMORY_SUFFIX = ".gdm"
_RECORD_SUFFIX = ".person.npz"
#: Real labelled latents remembered per person (where imagination may start from).
MAX_REAL_LATENTS = 1024
#: PersonState arrays kept in the record file.
_RECORD_ARRAYS = ("real_latents", "imagined_sources", "imagined_latents", "identity")


def person_key(person_id: str) -> str:
    """A file-name stem for a person id: the id itself when it is safe, else a sanitised hash.

    Raises
    ------
    ValueError
        If ``person_id`` is not a non-empty string.
    """
    if not isinstance(person_id, str) or not person_id.strip():
        raise ValueError(f"person id must be a non-empty string, got {person_id!r}")
    if _SAFE_ID.match(person_id) and not person_id.startswith("."):
        return person_id
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", person_id)[:40].strip("_") or "person"
    digest = hashlib.sha1(person_id.encode("utf-8")).hexdigest()[:10]
    return f"{stem}-{digest}"


@dataclass
class PersonState:
    """Everything the runtime keeps about one person while they are resident in RAM."""

    person_id: str
    memory: GrowingDualMemory
    #: Labels the person showed for real (labelled episodes and teach), not imagined ones.
    shown_labels: set[str] = field(default_factory=set)
    #: The newest latents of real labelled faces, shape (k, d) (where imagination may start).
    real_latents: np.ndarray | None = None
    #: Episodic prototypes already imagined and the latents imagined from them, shape (k, d).
    imagined_sources: np.ndarray | None = None
    imagined_latents: np.ndarray | None = None
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
    #: Changed in RAM since the last save (imagination preempted before it could save).
    dirty: bool = False
    #: False once evicted or forgotten: a stale object (e.g. held by the imagination scheduler)
    #: must then never be saved over the files.
    resident: bool = True

    def learn(self, latents: np.ndarray, labels: list[str]) -> None:
        """Train the memory on one real labelled episode and remember what the person showed
        (the labels, and the latents where imagination may start from)."""
        self.memory.partial_fit(latents, labels)
        self.shown_labels.update(labels)
        self.real_latents = append_rows(self.real_latents, latents, MAX_REAL_LATENTS)
        self.n_episodes += 1
        self.n_faces_learned += len(labels)

    @property
    def fitted(self) -> bool:
        """Whether the person's memory has learned anything yet."""
        return getattr(self.memory, "n_features_in_", None) is not None and bool(
            getattr(self.memory, "labels_", [])
        )


class PersonStore:
    """The persons' memories: resident ones in an LRU, all of them on disk.

    Parameters
    ----------
    directory : path-like
        Where memory files live (created if missing).
    memory_factory : callable(person_id) -> GrowingDualMemory
        Makes a fresh, unfitted memory for a new person.
    max_in_ram : int
        Persons kept resident; the least recently used is saved and evicted beyond this.
    recent_faces : int
        Length of each person's buffer of recent unlabelled latents.
    before_evict : callable(PersonState), optional
        Called before a person leaves RAM (the runtime trains their unfinished episode there).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        memory_factory: Callable[[str], GrowingDualMemory],
        max_in_ram: int = 8,
        recent_faces: int = 32,
        before_evict: Callable[[PersonState], None] | None = None,
    ) -> None:
        if max_in_ram < 1:
            raise ValueError(f"max_in_ram={max_in_ram} should be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.memory_factory = memory_factory
        self.max_in_ram = max_in_ram
        self.recent_faces = recent_faces
        self.before_evict = before_evict
        self._resident: OrderedDict[str, PersonState] = OrderedDict()
        self.n_evictions = 0
        self.n_quarantined = 0

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
        state.last_seen = time.time()
        return state

    def resident(self) -> list[PersonState]:
        """Persons in RAM, least recently seen first."""
        return list(self._resident.values())

    def known_ids(self) -> list[str]:
        """Ids of all persons, resident or on disk."""
        ids = {state.person_id for state in self._resident.values()}
        for record in self.directory.glob(f"*{_RECORD_SUFFIX}"):
            meta = self._read_record(record, quarantine=False)
            if meta is not None:
                ids.add(meta[0]["person_id"])
        return sorted(ids)

    def iter_records(self) -> Iterator[tuple[str, np.ndarray | None, int]]:
        """(person id, identity centroid, count) of every person, resident or on disk."""
        seen: set[str] = set()
        for state in self._resident.values():
            seen.add(state.person_id)
            yield state.person_id, state.identity, state.identity_count
        for record in sorted(self.directory.glob(f"*{_RECORD_SUFFIX}")):
            loaded = self._read_record(record, quarantine=False)
            if loaded is None:
                continue
            meta, arrays = loaded
            if meta["person_id"] not in seen:
                yield meta["person_id"], arrays.get("identity"), int(meta.get("identity_count", 0))

    # -- persistence -------------------------------------------------------------------------
    def save(self, state: PersonState) -> None:
        """Write the person's memory and record atomically (memory first, then the record).

        A state that is no longer resident (evicted or forgotten) is not written: the files
        already hold its last saved version, or must stay deleted.
        """
        if not state.resident:
            return
        key = person_key(state.person_id)
        if state.fitted:
            state.memory.save(self.directory / f"{key}{_MEMORY_SUFFIX}")
        meta = {
            "format": PERSON_FORMAT,
            "person_id": state.person_id,
            "n_episodes": state.n_episodes,
            "n_faces_learned": state.n_faces_learned,
            "n_imagined": state.n_imagined,
            "imagined_through": state.imagined_through,
            "identity_count": state.identity_count,
            "shown_labels": sorted(state.shown_labels),
            "saved_at": time.time(),
        }
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        for name in _RECORD_ARRAYS:
            value = getattr(state, name)
            if value is not None:
                arrays[name] = np.asarray(value, dtype=np.float32)
        atomic_savez(self.directory / f"{key}{_RECORD_SUFFIX}", **arrays)
        state.dirty = False

    def save_all(self) -> None:
        """Save every resident person (at shutdown)."""
        for state in list(self._resident.values()):
            self.save(state)

    def forget(self, person_id: str) -> bool:
        """Delete a person's memory from RAM and disk; True if there was anything to delete.

        Quarantined files of that person are deleted too: forgetting means nothing stays behind.
        """
        key = person_key(person_id)
        state = self._resident.pop(key, None)
        found = state is not None
        if state is not None:
            state.resident = False
        for path in self.directory.glob(f"{glob_escape(key)}.*"):
            if _belongs_to(path.name, key):
                path.unlink(missing_ok=True)
                found = True
        if found:
            logger.info("forgot person %r (memory and files deleted)", person_id)
        return found

    # -- internals ---------------------------------------------------------------------------
    def _evict_beyond_limit(self) -> None:
        while len(self._resident) > self.max_in_ram:
            key, state = next(iter(self._resident.items()))
            if self.before_evict is not None:
                self.before_evict(state)
            self.save(state)
            state.resident = False
            del self._resident[key]
            self.n_evictions += 1
            logger.debug("evicted person %r from RAM (saved)", state.person_id)

    def _load(self, person_id: str) -> PersonState:
        key = person_key(person_id)
        state = PersonState(
            person_id=person_id,
            memory=self.memory_factory(person_id),
            recent=deque(maxlen=self.recent_faces),
        )
        memory_path = self.directory / f"{key}{_MEMORY_SUFFIX}"
        if memory_path.exists():
            try:
                state.memory = GrowingDualMemory.load(memory_path)
            except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as error:
                # MemoryFileError is a ValueError; OSError covers unreadable files.
                self._quarantine(memory_path, error)
                state.memory = self.memory_factory(person_id)
                return state
        record = self.directory / f"{key}{_RECORD_SUFFIX}"
        if record.exists():
            loaded = self._read_record(record, quarantine=True)
            if loaded is not None:
                meta, arrays = loaded
                if meta["person_id"] != person_id:
                    logger.warning(
                        "record %s belongs to %r, not %r; ignoring it",
                        record,
                        meta["person_id"],
                        person_id,
                    )
                else:
                    state.n_episodes = int(meta.get("n_episodes", 0))
                    state.n_faces_learned = int(meta.get("n_faces_learned", 0))
                    state.n_imagined = int(meta.get("n_imagined", 0))
                    state.imagined_through = int(meta.get("imagined_through", 0))
                    state.identity_count = int(meta.get("identity_count", 0))
                    state.shown_labels = set(meta.get("shown_labels", []))
                    for name in _RECORD_ARRAYS:
                        setattr(state, name, arrays.get(name))
        return state

    def _read_record(
        self, path: Path, quarantine: bool
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            meta = json.loads(str(arrays.pop("meta")))
            if not isinstance(meta, dict) or not isinstance(meta.get("person_id"), str):
                raise ValueError("record has no person_id")
            if int(meta.get("format", 0)) > PERSON_FORMAT:
                raise ValueError(
                    f"record format {meta.get('format')} is newer than {PERSON_FORMAT}"
                )
        except (ValueError, OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as error:
            if quarantine:
                self._quarantine(path, error)
            return None
        return meta, arrays

    def _quarantine(self, path: Path, error: BaseException) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
            counter += 1
        os.replace(path, target)
        self.n_quarantined += 1
        logger.error(
            "memory file %s is damaged (%s); moved it to %s and started a fresh memory",
            path,
            error,
            target.name,
        )


def append_rows(record: np.ndarray | None, rows: np.ndarray, limit: int) -> np.ndarray:
    """Rows appended to a record, keeping only the newest ``limit``."""
    rows = np.asarray(rows, dtype=np.float32)
    merged = rows if record is None or len(record) == 0 else np.concatenate([record, rows])
    return merged[-limit:]


def glob_escape(text: str) -> str:
    """Escape glob metacharacters (person keys are safe, but keep globbing exact)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _belongs_to(name: str, key: str) -> bool:
    return name.startswith(f"{key}{_MEMORY_SUFFIX}") or name.startswith(f"{key}{_RECORD_SUFFIX}")
