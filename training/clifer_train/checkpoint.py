"""Per-epoch checkpoints that any Keras backend writes and reads (TensorFlow, JAX).

A checkpoint is one ``.npz`` file: every variable of the named models and optimisers (and of the
CAAE's random seed generator), in their fixed creation order, plus the number of epochs done.
Written atomically (``clifer_edge.fileio.atomic_savez``), the last two kept; a run interrupted at
any point resumes from the last complete epoch with the same weights, optimiser moments and random
state, under either backend.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np

from clifer_edge.fileio import atomic_savez

_NAME = re.compile(r"epoch_(\d{3,})\.npz$")


def _state(holders: dict[str, list]) -> dict[str, np.ndarray]:
    return {
        f"{name}/{i:04d}": keras.ops.convert_to_numpy(variable)
        for name, variables in holders.items()
        for i, variable in enumerate(variables)
    }


def save(directory: Path, epoch: int, holders: dict[str, list], keep: int = 2) -> Path:
    """Write ``directory/epoch_NNN.npz`` with all variables of ``holders``; prune older files."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"epoch_{epoch:03d}.npz"
    atomic_savez(path, epochs_done=np.int64(epoch), **_state(holders))
    for old in sorted(directory.glob("epoch_*.npz"))[:-keep]:
        old.unlink()
    return path


def latest(directory: Path) -> Path | None:
    """The newest complete checkpoint in ``directory`` (None if there is none)."""
    found = sorted(p for p in directory.glob("epoch_*.npz") if _NAME.search(p.name))
    return found[-1] if found else None


def restore(path: Path, holders: dict[str, list]) -> int:
    """Assign every variable of ``holders`` from ``path``; return the epochs done.

    Raises ``ValueError`` naming the variable when the checkpoint does not match the models (a
    different configuration), so a resumed run never silently mixes two runs.
    """
    with np.load(path) as stored:
        expected = _state(holders)
        missing = sorted(set(expected) - set(stored.files))
        if missing:
            raise ValueError(f"{path}: does not match this run's models (missing {missing[:3]})")
        for name, variables in holders.items():
            for i, variable in enumerate(variables):
                value = stored[f"{name}/{i:04d}"]
                if tuple(value.shape) != tuple(variable.shape):
                    raise ValueError(
                        f"{path}: {name} variable {variable.path} has shape {value.shape}, "
                        f"the model has {tuple(variable.shape)} (another configuration?)"
                    )
                variable.assign(value)
        return int(stored["epochs_done"])
