"""File helpers shared by the memory, the runtime and the tools: names, checksums, atomic writes.

Memories are the robot's only record of what it learned about a person, so every file that holds
them is written atomically: a crash or ``kill -9`` leaves either the old or the new file, never a
torn one, and only the owner may read it (0600; temporaries are ``.<name>.<random>.tmp``). Names
that come from outside (person ids, expression labels) reach the file system only through
:func:`file_stem`, one-to-one and without path separators. Archives are read through
:func:`read_npz`, which checks every array header against the bytes really stored before
allocating anything. Model and data files are identified by SHA-256 wherever results or
calibrations refer to them. Standard library and numpy only, so that every layer may use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import stat
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Names kept as they are on disk: ASCII letters, digits, ``_`` and ``-`` (no dot, no ``~``).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Prefix and suffix of the temporaries :func:`atomic_savez` writes next to their target.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"


def file_stem(name: str) -> str:
    """The file-name stem of an outside name (person id, label): one-to-one, no path separator.

    A plain name (1-64 of ``A-Z a-z 0-9 _ -``) is its own stem. Any other name becomes
    ``<readable part>~<SHA-256 prefix>``: plain stems never contain ``~``, so the two kinds never
    meet, and the 80-bit hash tells different names apart (their files also record the name
    itself). Stems never contain ``.``, so ``<stem>.<suffix>`` always parses back to one stem.

    Raises
    ------
    ValueError
        If ``name`` is not a non-empty string.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a name on disk must be a non-empty string, got {name!r}")
    if _PLAIN_NAME.fullmatch(name):
        return name
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:32].strip("_") or "x"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    return f"{readable}~{digest}"


def stem_of(file_name: str) -> str:
    """The :func:`file_stem` a file name in a memory directory belongs to (temporaries included)."""
    if file_name.startswith(TEMP_PREFIX):
        file_name = file_name[len(TEMP_PREFIX) :]
    return file_name.split(".", 1)[0]


def is_temporary(file_name: str) -> bool:
    """Whether a file name is a temporary left by an interrupted :func:`atomic_savez`."""
    return file_name.startswith(TEMP_PREFIX) and file_name.endswith(TEMP_SUFFIX)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _atomic_stream(path: str | os.PathLike[str], durable: bool) -> Iterator[Any]:
    """A binary stream to a hidden temporary file beside ``path`` (mode 0600: mkstemp's, so only
    the owner reads memories), renamed onto ``path`` when the block ends without error; with
    ``durable``, the file and then its directory are fsynced. On error the temporary is removed
    and ``path`` is untouched."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_directory(path.parent)


def atomic_savez(path: str | os.PathLike[str], durable: bool = True, **arrays: np.ndarray) -> None:
    """Write an uncompressed npz atomically: temporary file, fsync, rename, fsync the directory.

    ``durable=False`` skips both fsyncs (the rename stays atomic; after a power cut the file may
    be older, or, on some file systems, empty) for data not worth the wait.
    """
    with _atomic_stream(path, durable) as stream:
        np.savez(stream, **arrays)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, durable: bool = False) -> None:
    """Write a small file atomically with mode 0600 (temporary file, rename; fsync if durable)."""
    with _atomic_stream(path, durable) as stream:
        stream.write(data)


def private_directory(path: str | os.PathLike[str]) -> Path:
    """Create a directory (and missing parents) readable by the owner only (0700).

    An existing directory that others may read is tightened to 0700 when it is plainly this
    user's own folder (owned by them, not sticky like ``/tmp``, not their home or ``/``);
    otherwise a warning says so and it is left as it is.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    info = path.stat()
    if info.st_mode & 0o077:
        shared = info.st_mode & stat.S_ISVTX or path.resolve() in (Path.home().resolve(), Path("/"))
        if info.st_uid == os.getuid() and not shared:
            os.chmod(path, 0o700)
        else:
            logger.warning(
                "%s can be read by other users (mode %o); keep people's data in a folder of its "
                "own (it is then made 0700)",
                path,
                stat.S_IMODE(info.st_mode),
            )
    return path


def read_npz(path: str | os.PathLike[str], max_bytes: int = 1 << 30) -> dict[str, np.ndarray]:
    """Every array of an npz archive, read without pickle and without trusting its headers.

    Each member's header (shape, dtype) must agree with the bytes stored for it, and all arrays
    together may hold at most ``max_bytes``, so a damaged or hostile file can neither claim a
    huge shape (and exhaust RAM) nor smuggle in objects.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        For anything else that makes the archive unusable; the message says what.
    """
    arrays: dict[str, np.ndarray] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                array = _read_member(archive, info)
                total += array.nbytes
                if total > max_bytes:
                    raise ValueError(f"arrays larger than {max_bytes} bytes in all")
                arrays[info.filename[: -len(".npy")]] = array
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error) as error:
        with open(path, "rb") as stream:
            if stream.read(6) == b"\x93NUMPY":
                raise ValueError("a bare .npy array, not an npz archive") from None
        raise ValueError(f"not a readable npz archive ({error})") from None
    return arrays


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member, its header checked against its stored size before reading."""
    name = info.filename
    if not name.endswith(".npy"):
        raise ValueError(f"member {name!r} is not a .npy array")
    with archive.open(info) as stream:
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"npy format version {version} is not supported")
        except ValueError as error:
            raise ValueError(f"member {name!r}: damaged array header ({error})") from None
        if dtype.hasobject:
            raise ValueError(f"member {name!r} holds Python objects (refused: no pickle)")
        size = math.prod(shape) * dtype.itemsize
        stored = info.file_size - stream.tell()
        if size != stored:
            raise ValueError(
                f"member {name!r} claims shape {shape} of {dtype} ({size} bytes) but stores "
                f"{stored} bytes"
            )
        data = stream.read(size)
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return array.copy()


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
