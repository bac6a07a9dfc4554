"""clifer-edge: personalised facial expression recognition that keeps learning on a robot.

The package mirrors the data flow: image -> face (:mod:`clifer_edge.faces`) -> latent
(:mod:`clifer_edge.models`) -> memory (:mod:`clifer_edge.memory`) -> expression. It never imports
TensorFlow or rclpy; the ROS 2 node lives in :mod:`clifer_edge.ros` and is imported only by itself.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["GDMConfig", "GrowingDualMemory", "__version__"]


def __getattr__(name: str) -> Any:
    # The memory is imported on first use, so that light modules (labels, preprocessing) can be
    # used by the workstation side without loading the compiled kernels.
    if name in ("GDMConfig", "GrowingDualMemory"):
        from clifer_edge import memory

        return getattr(memory, name)
    raise AttributeError(f"module 'clifer_edge' has no attribute {name!r}")
