"""Settings of the Growing Dual Memory, as YAML-loadable frozen dataclasses.

The defaults are CLIFER's (Churamani & Gunes 2020), which take the Growing Dual Memory of Parisi et
al. (2018): the episodic memory inserts readily and learns fast (activation threshold 0.4,
habituation threshold 0.5, rates 0.2 / 0.001), the semantic memory inserts rarely and learns slowly
(0.2, 0.2, 0.02 / 0.001) and is regulated by its own classification errors. Every parameter's type
and range is declared once, in the ``_GWR_SPECS`` / ``_GDM_SPECS`` tables, and checked both when a
dataclass is built directly and when one is read from a dict or YAML file.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["BACKENDS", "GDMConfig", "GWRConfig"]

#: Kernels a memory can run on: ``"cython"`` (compiled), ``"numpy"`` (the readable reference) or
#: ``"auto"`` (compiled when built, else the reference with a warning).
BACKENDS = ("auto", "cython", "numpy")


@dataclass(frozen=True)
class _Spec:
    """Type and closed/open range of one parameter."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high}")
        return f"{self.kind.__name__}" + (f" {' and '.join(parts)}" if parts else "")

    def check(self, key: str, value: Any) -> Any:
        """Return the value (ints accepted for floats) or raise ValueError naming key and value."""
        if self.kind is float:
            ok_type = isinstance(value, int | float) and not isinstance(value, bool)
        elif self.kind is int:
            ok_type = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok_type = isinstance(value, self.kind)
        if not ok_type:
            raise ValueError(f"{key}={value!r} should be {self.describe()}")
        if self.kind is float:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{key}={value!r} should be a finite {self.describe()}")
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise ValueError(f"{key}={value!r} should be {self.describe()}")
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise ValueError(f"{key}={value!r} should be {self.describe()}")
        return value


_GWR_SPECS: dict[str, _Spec] = {
    "activation_threshold": _Spec(float, 0.0, 1.0, low_open=True, high_open=True),
    "habituation_threshold": _Spec(float, 0.0, 1.0, low_open=True),
    "epsilon_b": _Spec(float, 0.0, 1.0, low_open=True),
    "epsilon_n": _Spec(float, 0.0, 1.0),
    "tau_b": _Spec(float, 0.0, 1.0, low_open=True),
    "tau_n": _Spec(float, 0.0, 1.0, low_open=True),
    "kappa": _Spec(float, 1.0, 10.0, low_open=True),
    "max_age": _Spec(int, 1),
    "max_nodes": _Spec(int, 2, 10_000_000),
    "max_degree": _Spec(int, 2, 1024),
    "temporal_degree": _Spec(int, 1, 1024),
    "regulated": _Spec(bool),
    "mod_rate": _Spec(float, 0.0, 1.0),
    "insert_at_input": _Spec(bool),
}


@dataclass(frozen=True)
class GWRConfig:
    """One Grow-When-Required network (episodic or semantic).

    Attributes
    ----------
    activation_threshold : float
        a_T: insert a node when the BMU's activation exp(-distance) is below it
        (higher = more nodes).
    habituation_threshold : float
        h_T: ... and the BMU has fired often enough that its habituation fell below it.
    epsilon_b, epsilon_n : float
        Learning rates of the BMU and of its topological neighbours (scaled by their habituation).
    tau_b, tau_n : float
        Habituation speed of the BMU and of its neighbours.
    kappa : float
        Habituation shape: h <- h + tau * kappa * (1 - h) - tau, so h decays from 1 to the floor
        1 - 1/kappa (0.048 for the reference's 1.05).
    max_age : int
        Edges not refreshed for more than this many updates are removed (checked after each epoch).
    max_nodes : int
        Hard bound on the network size (memory on the robot is O(max_nodes)).
    max_degree : int
        Bound on each node's neighbour list; when full, its oldest edge is dropped.
    temporal_degree : int
        Bound on each node's temporal synapses (successor counts); when full, the weakest goes.
    regulated : bool
        Semantic-memory mode: learn strongly only where the BMU's label is wrong.
    mod_rate : float
        Factor on both rates when a regulated network's BMU already has the right label.
    insert_at_input : bool
        Place a new node at the input instead of halfway between the BMU and the input (GWR's
        rule). A regulated network inserts because its BMU's label is wrong, and halfway towards
        that BMU is the border with the class it confused; the semantic memory inserts at the
        input (docs/gdm.md, deviation 13).
    """

    activation_threshold: float = 0.4
    habituation_threshold: float = 0.5
    epsilon_b: float = 0.2
    epsilon_n: float = 0.001
    tau_b: float = 0.3
    tau_n: float = 0.1
    kappa: float = 1.05
    max_age: int = 1000
    max_nodes: int = 5000
    max_degree: int = 12
    temporal_degree: int = 8
    regulated: bool = False
    mod_rate: float = 0.01
    insert_at_input: bool = False

    def __post_init__(self) -> None:
        for key, spec in _GWR_SPECS.items():
            object.__setattr__(self, key, spec.check(key, getattr(self, key)))
        for key in ("tau_b", "tau_n"):
            # Beyond this the habituation update overshoots its floor (and can turn negative).
            if getattr(self, key) * self.kappa > 1.0:
                raise ValueError(
                    f"{key}={getattr(self, key)!r} with kappa={self.kappa!r}: "
                    f"{key} * kappa should be <= 1"
                )

    @property
    def habituation_floor(self) -> float:
        """The value habituation converges to under repeated firing: 1 - 1/kappa."""
        return 1.0 - 1.0 / self.kappa

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], base: GWRConfig | None = None, where: str = ""
    ) -> GWRConfig:
        """Settings from a mapping; keys not given keep the values of ``base`` (or the defaults)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where or 'gwr'}={data!r} should be a mapping of settings")
        base = base if base is not None else cls()
        for key in data:
            if key not in _GWR_SPECS:
                raise ValueError(
                    f"unknown key {where + '.' if where else ''}{key!s}={data[key]!r}; "
                    f"expected one of {sorted(_GWR_SPECS)}"
                )
        values = {}
        for key, value in data.items():
            values[key] = _GWR_SPECS[key].check(f"{where + '.' if where else ''}{key}", value)
        return dataclasses.replace(base, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _default_episodic() -> GWRConfig:
    return GWRConfig()


def _default_semantic() -> GWRConfig:
    return GWRConfig(
        activation_threshold=0.2,
        habituation_threshold=0.2,
        epsilon_b=0.02,
        epsilon_n=0.001,
        max_age=2000,
        max_nodes=2000,
        regulated=True,
        insert_at_input=True,
    )


_GDM_SPECS: dict[str, _Spec] = {
    "context_depth": _Spec(int, 0, 16),
    "beta": _Spec(float, 0.0, 1.0),
    "epochs": _Spec(int, 1, 10_000),
    "replay_epochs": _Spec(int, 0, 10_000),
    "a_inc": _Spec(float, 0.0, low_open=True),
    "a_dec": _Spec(float, 0.0),
    "rnat_length": _Spec(int, 1, 1000),
    "imagined_margin": _Spec(float, 1.0, 10.0),
    "backend": _Spec(str),
}


@dataclass(frozen=True)
class GDMConfig:
    """The Growing Dual Memory: two GWR networks plus what they share.

    Attributes
    ----------
    episodic, semantic : GWRConfig
        The fast, non-overlapping episodic and the slow, regulated semantic network.
    context_depth : int
        K, the number of temporal context levels per node (0 = no temporal context).
    beta : float
        Weight of the previous BMU's context against its weight in the global context.
    epochs : int
        Passes over each episode given to :meth:`GrowingDualMemory.partial_fit`.
    replay_epochs : int or None
        Passes over the pseudo-replay trajectories; None means ``epochs // 3`` (at least 1).
    a_inc, a_dec : float
        Label-histogram increment for the input's label and decrement for the others.
    rnat_length : int
        Length of each replayed recurrent neural activation trajectory (RNAT); the default 3
        is the reference's 2K+1 for K = 1.
    imagined_margin : float
        How much nearer than the nearest real episodic node an imagined node must lie to answer
        (distance ratio; 1 = strictly nearer). Above 1 a face near the person's real knowledge
        keeps its real answer: imagined knowledge yields to real faces.
    backend : str
        ``"auto"``, ``"cython"`` or ``"numpy"`` (see :data:`BACKENDS`).
    """

    episodic: GWRConfig = field(default_factory=_default_episodic)
    semantic: GWRConfig = field(default_factory=_default_semantic)
    context_depth: int = 1
    beta: float = 0.7
    epochs: int = 10
    replay_epochs: int | None = None
    a_inc: float = 1.0
    a_dec: float = 0.1
    rnat_length: int = 3
    imagined_margin: float = 1.0
    backend: str = "auto"

    def __post_init__(self) -> None:
        for key in ("episodic", "semantic"):
            if not isinstance(getattr(self, key), GWRConfig):
                raise ValueError(f"{key}={getattr(self, key)!r} should be a GWRConfig")
        for key, spec in _GDM_SPECS.items():
            value = getattr(self, key)
            if key == "replay_epochs" and value is None:
                continue
            object.__setattr__(self, key, spec.check(key, value))
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} should be one of {list(BACKENDS)}")

    @property
    def n_replay_epochs(self) -> int:
        """Replay passes: ``replay_epochs`` if set, else ``max(1, epochs // 3)`` as in CLIFER."""
        return self.replay_epochs if self.replay_epochs is not None else max(1, self.epochs // 3)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GDMConfig:
        """Settings from a (possibly partial, possibly nested) mapping; missing keys keep defaults.

        Raises
        ------
        ValueError
            On an unknown key, a wrong type or an out-of-range value, naming the key and value.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"GDM config {data!r} should be a mapping of settings")
        default = cls()
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("episodic", "semantic"):
                values[key] = GWRConfig.from_dict(
                    value if value is not None else {}, getattr(default, key), where=key
                )
            elif key == "replay_epochs" and value is None:
                values[key] = None
            elif key in _GDM_SPECS:
                values[key] = _GDM_SPECS[key].check(key, value)
            else:
                known = sorted([*_GDM_SPECS, "episodic", "semantic"])
                raise ValueError(f"unknown key {key!s}={value!r}; expected one of {known}")
        return dataclasses.replace(default, **values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> GDMConfig:
        """Settings from a YAML file (the mapping may also sit under a top-level ``gdm`` key)."""
        try:
            with open(path, encoding="utf-8") as stream:
                data = yaml.safe_load(stream)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML ({error})") from None
        if isinstance(data, Mapping) and set(data) == {"gdm"}:
            data = data["gdm"]
        return cls.from_dict(data if data is not None else {})

    def to_dict(self) -> dict[str, Any]:
        """Nested JSON/YAML-safe dict; :meth:`from_dict` reads it back to an equal config."""
        return dataclasses.asdict(self)
