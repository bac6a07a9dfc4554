"""Growing Dual Memory (GDM): episodic + semantic Grow-When-Required networks.

The memory of CLIFER's robot side (Parisi et al. 2018, as used by Churamani & Gunes 2020): it learns
face latents one episode at a time, keeps an open label set, replays its own neural trajectories so
that old expressions are not forgotten, and is saved without pickle. The hot loops are compiled
(:mod:`clifer_edge.memory._gwr`); :mod:`clifer_edge.memory.reference` is the same algorithm in plain
numpy. The memory imports no OpenCV, TFLite or ROS.
"""

from __future__ import annotations

from clifer_edge.memory.config import BACKENDS, GDMConfig, GWRConfig
from clifer_edge.memory.dual import GrowingDualMemory, NotFittedError
from clifer_edge.memory.persistence import MemoryFileError

__all__ = [
    "BACKENDS",
    "GDMConfig",
    "GWRConfig",
    "GrowingDualMemory",
    "MemoryFileError",
    "NotFittedError",
]
