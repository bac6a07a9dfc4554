"""Saving and loading a Growing Dual Memory without pickle.

A memory file is an uncompressed npz archive (read with ``allow_pickle=False``) holding each
network's canonical state arrays plus one ``header`` array: UTF-8 JSON with the format name, the
schema version, the config, the label names, the random-generator state and a SHA-256 checksum over
the header and every array. Schema 2 adds the imagined network (when the memory has one) and the
``classes`` list (real and imagined labels, the columns of ``predict_proba``); files of schema 1
still load, as a memory without imagined knowledge. Schema 3 stores ``insert_at_input`` in each
network's settings; a file of schema 1 or 2 predates it and keeps GWR's halfway insertion in both
networks, as it was created with. It is written atomically (temporary file in
the same directory, fsync, rename), so a crash or a full disk never leaves a half-written memory in
place of a good one, and a file that fails any check is rejected with :class:`MemoryFileError`
without touching anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.fileio import atomic_savez, read_npz
from clifer_edge.memory._state import NetworkState
from clifer_edge.memory.config import GDMConfig

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "MemoryFileError",
    "MemoryRecord",
    "read_memory_file",
    "write_memory_file",
]

#: Identifies clifer-edge memory files among other npz archives.
FORMAT = "clifer-edge-gdm"
#: Bumped whenever the layout changes; files with a larger version are refused.
SCHEMA_VERSION = 3

_NETWORKS = ("episodic", "semantic")
#: The network of imagined samples (schema >= 2, present only when it has nodes).
_IMAGINED = "imagined"


class MemoryFileError(ValueError):
    """A memory file is damaged, truncated, not a memory file, or from a newer version."""


@dataclass
class MemoryRecord:
    """Everything a memory file holds: the fitted state of a :class:`GrowingDualMemory`.

    The memory turns itself into a record (:meth:`GrowingDualMemory.save`) and back
    (:meth:`GrowingDualMemory.load`); this module only reads and writes records.
    """

    config: GDMConfig
    labels: list[str]
    n_features: int
    n_episodes: int
    seed: int | None
    rng_state: dict[str, Any]
    #: ``episodic`` and ``semantic`` network states (histogram columns: ``labels``), and
    #: ``imagined`` if the memory has imagined nodes (histogram columns: ``classes``).
    networks: dict[str, NetworkState]
    #: Every label, real or imagined, in order of first appearance (``labels`` is a subset).
    classes: list[str]


def _checksum(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(header, sort_keys=True).encode("utf-8"))
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()


def write_memory_file(record: MemoryRecord, path: str | os.PathLike[str]) -> None:
    """Write a memory record to ``path`` atomically (inputs already validated)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    clocks = {}
    for name in (*_NETWORKS, _IMAGINED):
        if name not in record.networks:
            continue
        state = record.networks[name]
        for key in NetworkState.FIELDS:
            arrays[f"{name}.{key}"] = getattr(state, key)
        clocks[name] = state.clock
    header: dict[str, Any] = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "config": record.config.to_dict(),
        "labels": list(record.labels),
        "classes": list(record.classes),
        "n_features": int(record.n_features),
        "n_episodes": int(record.n_episodes),
        "seed": record.seed,
        "rng_state": record.rng_state,
        "clocks": clocks,
    }
    header["checksum"] = _checksum(header, arrays)
    encoded = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    atomic_savez(path, header=encoded, **arrays)


def _read_archive(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        arrays = read_npz(path)
    except FileNotFoundError:
        raise
    except ValueError as error:
        if str(error).startswith("a bare"):
            raise MemoryFileError(f"{path}: not a clifer-edge memory file ({error})") from None
        raise MemoryFileError(
            f"{path}: not a readable memory file (damaged or truncated: {error})"
        ) from None
    if "header" not in arrays:
        raise MemoryFileError(
            f"{path}: not a clifer-edge memory file "
            f"(npz without a header; has {sorted(arrays)[:5]})"
        )
    raw = arrays.pop("header")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise MemoryFileError(
            f"{path}: not a clifer-edge memory file (header of dtype {raw.dtype})"
        )
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MemoryFileError(f"{path}: damaged header ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise MemoryFileError(
            f"{path}: not a clifer-edge memory file (format {found!r}, expected {FORMAT!r})"
        )
    version = header.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MemoryFileError(f"{path}: damaged header (schema_version={version!r})")
    if version > SCHEMA_VERSION:
        raise MemoryFileError(
            f"{path}: written by a newer clifer-edge (schema_version={version}, this version reads "
            f"<= {SCHEMA_VERSION}); upgrade clifer-edge to load it"
        )
    stored = header.pop("checksum", None)
    if stored != _checksum(header, arrays):
        raise MemoryFileError(f"{path}: damaged (checksum mismatch)")
    return header, arrays


def _upgraded_config(config: Any, version: int) -> Any:
    """Schema < 3 settings with the value they were created with for keys added since."""
    if version >= 3 or not isinstance(config, dict):
        return config
    config = dict(config)
    for name in _NETWORKS:
        network = config.get(name)
        if isinstance(network, dict):
            config[name] = {"insert_at_input": False, **network}
    return config


def read_memory_file(path: str | os.PathLike[str]) -> MemoryRecord:
    """Read and check a memory file written by :func:`write_memory_file`.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    MemoryFileError
        If the file is damaged, truncated, not a memory file or from a newer schema version.
    """
    path = Path(path)
    header, arrays = _read_archive(path)
    try:
        config = GDMConfig.from_dict(_upgraded_config(header["config"], header["schema_version"]))
        labels = header["labels"]
        n_features = header["n_features"]
        if not (
            isinstance(labels, list) and all(isinstance(x, str) and x for x in labels) and labels
        ):
            raise ValueError(f"labels={labels!r} should be a non-empty list of str")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels={labels!r} has duplicates")
        if not isinstance(n_features, int) or n_features < 1:
            raise ValueError(f"n_features={n_features!r} should be an int >= 1")
        # Schema 1 had no imagined network: its classes are its labels.
        classes = header["classes"] if header["schema_version"] >= 2 else list(labels)
        if not (isinstance(classes, list) and all(isinstance(x, str) and x for x in classes)):
            raise ValueError(f"classes={classes!r} should be a list of str")
        if len(set(classes)) != len(classes) or not set(labels) <= set(classes):
            raise ValueError(f"classes={classes!r} should hold every label once")
        networks = {}
        names = [*_NETWORKS, *([_IMAGINED] if _IMAGINED in header["clocks"] else [])]
        for name in names:
            state = NetworkState(
                **{key: arrays[f"{name}.{key}"] for key in NetworkState.FIELDS},
                clock=int(header["clocks"][name]),
            )
            # The imagined network has the episodic network's settings.
            gwr = config.episodic if name == _IMAGINED else getattr(config, name)
            state.validate(gwr.max_degree, gwr.temporal_degree)
            if state.weights.shape[1:] != (config.context_depth + 1, n_features):
                raise ValueError(
                    f"{name} weights of shape {state.weights.shape}, expected "
                    f"[N, {config.context_depth + 1}, {n_features}]"
                )
            columns = classes if name == _IMAGINED else labels
            if state.histograms.shape[1] != len(columns):
                raise ValueError(
                    f"{name} histograms have {state.histograms.shape[1]} columns "
                    f"for {len(columns)} labels"
                )
            networks[name] = state
        rng_state = header["rng_state"]
        np.random.default_rng().bit_generator.state = rng_state  # checks it before use
        record = MemoryRecord(
            config=config,
            labels=list(labels),
            n_features=n_features,
            n_episodes=int(header["n_episodes"]),
            seed=header.get("seed"),
            rng_state=rng_state,
            networks=networks,
            classes=list(classes),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise MemoryFileError(f"{path}: inconsistent memory file ({error})") from None
    return record
