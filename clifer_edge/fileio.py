"""File helpers shared by the memory, the runtime and the tools: checksums and atomic writes.

Memories are the robot's only record of what it learned about a person, so every file that holds
them is written atomically: a crash or ``kill -9`` leaves either the old or the new file, never a
torn one. Model and data files are identified by SHA-256 wherever results or calibrations refer
to them. Standard library and numpy only, so that every layer may use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
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


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a UTF-8 text file atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it is fsynced and renamed onto
    ``path`` (then the directory is fsynced), on error it is removed and ``path`` is untouched.

    ``suffix`` ends the temporary name (hidden, ``.<name>.<random><suffix>``): writers that pick
    the format by the suffix (Keras) pass the real one.
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        with open(temp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def git_commit(directory: str | os.PathLike[str]) -> str | None:
    """The commit checked out in ``directory``'s git work tree, with ``-dirty`` if it has local
    changes (``None`` outside a git checkout)."""
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None
