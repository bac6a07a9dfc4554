"""The robot runtime: per-person continual learning with idle-time imagination.

Data flow: image -> face (:mod:`clifer_edge.faces`) -> latent (:mod:`clifer_edge.models`) ->
the person's Growing Dual Memory (:mod:`clifer_edge.runtime.persons`) -> expression, with
imagination (:mod:`clifer_edge.imagination`, scheduled by :mod:`clifer_edge.runtime.scheduler`)
filling idle time. No TensorFlow, no rclpy.
"""

from __future__ import annotations

from clifer_edge.imagination import imagine_latents
from clifer_edge.runtime.config import RuntimeConfig, load_config
from clifer_edge.runtime.persons import PersonSaveError
from clifer_edge.runtime.runtime import ExpressionRuntime, FaceResult
from clifer_edge.runtime.scheduler import ImaginationReport

__all__ = [
    "ExpressionRuntime",
    "FaceResult",
    "ImaginationReport",
    "PersonSaveError",
    "RuntimeConfig",
    "imagine_latents",
    "load_config",
]
