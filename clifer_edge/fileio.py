"""File helpers shared by the memory, the runtime and the tools: checksums and atomic writes.

Memories are the robot's only record of what it learned about a person, so every file that holds
them is written atomically: a crash or ``kill -9`` leaves either the old or the new file, never a
torn one. Model and data files are identified by SHA-256 wherever results or calibrations refer
to them. Standard library and numpy only, so that every layer may use it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_savez(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """Write an uncompressed npz atomically: temporary file, fsync, rename, fsync the directory."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); silently impossible on some file systems."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def git_commit(directory: str | os.PathLike[str]) -> str | None:
    """Commit of the checkout holding ``directory`` (``-dirty`` if it had local changes), or None
    outside a git checkout: recorded with trained models and reports as their provenance."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(directory), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit or None
