"""The runtime's configuration: one YAML file, validated when it is loaded.

A robot should refuse a bad configuration at start-up, with the offending key named, rather than
fail hours later. :func:`load_config` reads the shipped default
(``clifer_edge/config/default.yaml``, every key documented there), overlays the user's file on it,
and checks every key, type and range; the ``gdm`` section is validated by
:meth:`clifer_edge.memory.GDMConfig.from_dict`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from clifer_edge.faces import FaceDetector
    from clifer_edge.models.files import ModelFiles

#: The documented default configuration shipped with the package.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "default.yaml"


@dataclass(frozen=True)
class ModelsConfig:
    """Which encoder/generator files to load and how to run them."""

    #: Directory holding ``encoder_<variant>.tflite``, ``generator_<variant>.tflite`` and
    #: ``metadata.json``; ``None`` means the bundled default models.
    directory: str | None = None
    #: Model file variant, e.g. ``int8`` (the robot default) or ``float32``.
    variant: str = "int8"
    #: Interpreter threads per model.
    num_threads: int = 1
    #: Expected model input side; ``None`` = from the metadata, a number is checked against it.
    image_size: int | None = None
    #: Latent calibration (standardisation for the memories + fallback classifier, see
    #: :mod:`clifer_edge.models.calibration`); ``None`` means
    #: ``<directory>/calibration_<variant>.npz``.
    calibration: str | None = None


@dataclass(frozen=True)
class FacesConfig:
    """Face detection on full frames (pre-cropped faces skip it)."""

    #: ``yunet`` (bundled model, the default) or ``haar`` (ships with OpenCV 4.x).
    detector: str = "yunet"
    #: Path to a YuNet ONNX file; ``None`` = the bundled one.
    yunet_model: str | None = None
    #: Smallest face side in pixels that the detector reports.
    min_face_size: int = 40
    #: Border added around a detected box before cropping, as a fraction of its side; ``None``
    #: = the detector's framing of FER2013 faces (``faces.detector.FER2013_MARGIN``).
    margin: float | None = None
    #: Most faces handled per frame (largest first); the rest are ignored.
    max_faces: int = 5
    #: Video (node camera mode, ``clifer-edge run``): detect on every n-th frame only; tracked
    #: faces keep their boxes in between.
    detect_every: int = 3
    #: Video: frames wider than this are downscaled to it for detection (0 = full size).
    detect_width: int = 640
    #: Video: a face missed by detection and not re-detected for this many seconds has left
    #: (its id is not reused); so have all faces when no frame arrives for this long.
    lost_after_s: float = 0.5

    def build_detector(self, **overrides: Any) -> FaceDetector:
        """The face detector these settings describe, the one place that turns them into one.

        ``overrides`` are :class:`~clifer_edge.faces.FaceDetector` arguments (``method``,
        ``model_path``, ``margin``, ...); None keeps the setting. Commands that must crop as the
        robot does (``clifer-edge eval --detect-faces``, the export parity report) build it here.
        """
        from clifer_edge.faces import FaceDetector  # OpenCV loads on use

        kwargs: dict[str, Any] = {
            "method": self.detector,
            "model_path": self.yunet_model,
            "min_size": self.min_face_size,
            "max_faces": self.max_faces,
            "margin": self.margin,
        }
        kwargs.update({key: value for key, value in overrides.items() if value is not None})
        if kwargs["method"] != "yunet":
            kwargs["model_path"] = None
        return FaceDetector(**kwargs)


@dataclass(frozen=True)
class PersonsConfig:
    """Who a face belongs to, and how many persons' memories are kept in RAM."""

    #: ``caller`` (ids come with each face, e.g. ROS4HRI person ids; missing ids fall back to
    #: ``default_person``), ``single`` (every face is ``default_person``) or ``identity`` (open-set
    #: nearest neighbour on an identity descriptor; see :mod:`clifer_edge.runtime.persons`).
    mode: str = "caller"
    #: Person id used in single-user mode and when the caller gives none.
    default_person: str = "user"
    #: ``identity`` mode: cosine distance above which a face starts a new person.
    identity_threshold: float = 0.25
    #: Person memories held in RAM; the least recently seen are saved and evicted.
    max_in_ram: int = 8
    #: Persons never labelled (no memory, only an identity centroid) kept on disk; beyond it the
    #: least recently seen are deleted. Labelled persons are only deleted by ``forget``.
    max_unlabelled: int = 1000
    #: Days after their last sighting when never-labelled persons are deleted.
    unlabelled_max_age_days: float = 30.0


@dataclass(frozen=True)
class MemoryConfig:
    """Where the persons' memories live and how they answer."""

    #: Directory of the persons' memory files (``~`` is expanded).
    directory: str = "~/.local/share/clifer-edge/memories"
    #: Upper bound on nodes per memory network (episodic and semantic each).
    max_nodes: int = 300
    #: Memory that classifies faces of known persons: ``episodic`` or ``semantic``.
    answer: str = "episodic"
    #: Also save the cropped faces of labelled episodes as PNG files (privacy: off by default).
    store_faces: bool = False


@dataclass(frozen=True)
class LearningConfig:
    """Online learning from labelled faces."""

    #: Labelled faces gathered before the memories are trained (a change of label, teach, idle,
    #: save and close also end an episode).
    episode_size: int = 16
    #: Latents of the latest unlabelled faces kept per person for :meth:`teach` (no images).
    recent_faces: int = 32
    #: Faces used by ``teach`` when the caller does not say how many.
    teach_recent: int = 8
    #: Expression labels one person may have (a new label beyond it is refused).
    max_labels: int = 32
    #: After each real episode, replay RNATs of the person's episodic memory into both memories
    #: (GDM pseudo-rehearsal, as in CLIFER): the semantic memory then keeps earlier classes
    #: (:meth:`~clifer_edge.memory.GrowingDualMemory.replay`).
    replay: bool = True


@dataclass(frozen=True)
class ImaginationConfig:
    """Idle-time imagination of the expressions a person has not shown yet."""

    #: Run imagination at all.
    enabled: bool = True
    #: Seconds without faces after which the robot counts as idle.
    idle_timeout_s: float = 10.0
    #: Default time budget of one :meth:`ExpressionRuntime.imagine` call, in seconds.
    budget_s: float = 0.5
    #: Episodic prototypes imagined per preemptible chunk (x the other expressions).
    chunk_prototypes: int = 4
    #: Imagine ``z + E(G(z, c)) - E(G(z, own))`` instead of ``E(G(z, c))``: keeps only the
    #: generator's change of expression, cancelling its reconstruction error (see
    #: :func:`clifer_edge.imagination.imagine_latents`).
    residual: bool = True
    #: Where imagined latents come from: ``"generator"``, CLIFER's E(G(z, c)); or
    #: ``"class_offsets"``, a generator-free baseline that moves each prototype by the offset
    #: between the FER2013 class means of the calibration, mean(c) - mean(own expression).
    method: str = "generator"
    #: A prototype that moved further than this (Euclidean, in the memories' standardised space)
    #: since it was imagined is imagined again.
    reimagine_distance: float = 0.5
    #: Recentre G's change of expression on the people the robot already knows
    #: (:class:`~clifer_edge.imagination.PeerRecentring`; the generator's residual form only).
    recentre: bool = True
    #: Known people who must have shown both expressions of a pair before it is recentred.
    recentre_min_peers: int = 5


@dataclass(frozen=True)
class RuntimeConfig:
    """The whole runtime configuration (see ``clifer_edge/config/default.yaml``)."""

    models: ModelsConfig = field(default_factory=ModelsConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    persons: PersonsConfig = field(default_factory=PersonsConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    imagination: ImaginationConfig = field(default_factory=ImaginationConfig)
    #: Growing Dual Memory hyper-parameters, passed to ``GDMConfig.from_dict``.
    gdm: dict[str, Any] = field(default_factory=dict)

    def replace(self, **sections: dict[str, Any]) -> RuntimeConfig:
        """A copy with some keys of some sections changed, validated like a file.

        Example: ``cfg.replace(memory={"directory": "/tmp/m"}, persons={"mode": "single"})``.
        """
        return config_from_dict(_deep_merge(config_to_dict(self), sections))

    def memory_directory(self) -> Path:
        """The memory directory with ``~`` and environment variables expanded."""
        return Path(os.path.expandvars(os.path.expanduser(self.memory.directory)))

    def model_files(self) -> ModelFiles:
        """The configured model, metadata and calibration files (see ``models.*``)."""
        from clifer_edge.models.files import ModelFiles

        models = self.models
        return ModelFiles.locate(models.directory, models.variant, models.calibration)


#: Allowed values of string keys.
_CHOICES: dict[str, tuple[str, ...]] = {
    "imagination.method": ("generator", "class_offsets"),
    "faces.detector": ("haar", "yunet"),
    "persons.mode": ("caller", "single", "identity"),
    "memory.answer": ("episodic", "semantic"),
}

#: Inclusive bounds of numeric keys (every number is bounded: a robot must not accept a budget
#: of infinity or an episode of 10^12 faces).
_RANGES: dict[str, tuple[float, float]] = {
    "models.num_threads": (1, 64),
    "models.image_size": (8, 1024),
    "faces.min_face_size": (8, 8192),
    "faces.margin": (0.0, 1.0),
    "faces.max_faces": (1, 64),
    "faces.detect_every": (1, 100),
    "faces.detect_width": (0, 8192),
    "faces.lost_after_s": (0.01, 60.0),
    "persons.identity_threshold": (0.0, 2.0),
    "persons.max_in_ram": (1, 1024),
    "persons.max_unlabelled": (0, 1_000_000),
    "persons.unlabelled_max_age_days": (0.0, 36500.0),
    "memory.max_nodes": (2, 100_000),
    "learning.episode_size": (1, 4096),
    "learning.recent_faces": (1, 4096),
    "learning.teach_recent": (1, 4096),
    "learning.max_labels": (1, 1000),
    "imagination.idle_timeout_s": (0.0, 86400.0),
    "imagination.budget_s": (0.001, 3600.0),
    "imagination.chunk_prototypes": (1, 1024),
    "imagination.reimagine_distance": (0.0, 1000.0),
    "imagination.recentre_min_peers": (1, 1_000_000),
}

_SECTIONS: dict[str, type] = {
    "models": ModelsConfig,
    "faces": FacesConfig,
    "persons": PersonsConfig,
    "memory": MemoryConfig,
    "learning": LearningConfig,
    "imagination": ImaginationConfig,
}


def load_config(path: str | os.PathLike[str] | None = None) -> RuntimeConfig:
    """Load the runtime configuration.

    Parameters
    ----------
    path : path-like, optional
        A YAML file whose keys override the shipped default; ``None`` gives the default alone.

    Raises
    ------
    ValueError
        If the file is missing or not valid YAML, or a key is unknown, has the wrong type or lies
        out of range (the message names the key, e.g. ``persons.max_in_ram``).
    """
    base = _read_yaml(DEFAULT_CONFIG_PATH)
    if path is None:
        return config_from_dict(base)
    return config_from_dict(_deep_merge(base, _read_yaml(Path(path))))


def config_from_dict(data: dict[str, Any]) -> RuntimeConfig:
    """Build and validate a :class:`RuntimeConfig` from nested dicts (missing keys get defaults)."""
    if not isinstance(data, dict):
        raise ValueError(f"config must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_SECTIONS) - {"gdm"})
    if unknown:
        raise ValueError(f"unknown config key {unknown[0]!r} (sections: {[*_SECTIONS, 'gdm']})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        sections[name] = _build_section(name, cls, data.get(name) or {})
    gdm = data.get("gdm") or {}
    if not isinstance(gdm, dict):
        raise ValueError(f"config key 'gdm' must be a mapping, got {type(gdm).__name__}")
    _validate_gdm(gdm)
    return RuntimeConfig(**sections, gdm=dict(gdm))


def config_to_dict(config: RuntimeConfig) -> dict[str, Any]:
    """The configuration as plain nested dicts (what a YAML file would hold)."""
    return dataclasses.asdict(config)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read config file {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"config file {path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build_section(name: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"config key {name!r} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ValueError(f"unknown config key '{name}.{key}' (known: {sorted(known)})")
    checked = {
        key: _check_value(f"{name}.{key}", hints[key], value) for key, value in values.items()
    }
    return cls(**checked)


def _check_value(key: str, hint: Any, value: Any) -> Any:
    """Check one value against its annotated type, choices and range; return it normalised."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ValueError(f"config key {key!r} must not be null")
    kinds = [kind for kind in allowed if kind is not type(None)]
    kind = kinds[0]
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config key {key!r} must be true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key {key!r} must be an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {key!r} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"config key {key!r} must be a finite number, got {value!r}")
    elif kind is str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"config key {key!r} must be a non-empty string, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ValueError(f"config key {key!r} is {value!r}, should be one of {list(_CHOICES[key])}")
    if key in _RANGES:
        low, high = _RANGES[key]
        if not low <= value <= high:
            raise ValueError(f"config key {key!r} is {value!r}, should be in [{low}, {high}]")
    return value


def _validate_gdm(gdm: dict[str, Any]) -> None:
    from clifer_edge.memory import GDMConfig

    try:
        GDMConfig.from_dict(gdm)
    except ValueError as error:
        raise ValueError(f"config section 'gdm': {error}") from None


def default_memory_factory(gdm: dict[str, Any], max_nodes: int) -> Callable[[str], Any]:
    """A factory of fresh memories with the configured GDM parameters and node bound.

    The seed is derived from the person id, so a person's memory grows the same way on every run.
    """
    from clifer_edge.memory import GDMConfig, GrowingDualMemory

    config = GDMConfig.from_dict(_with_max_nodes(GDMConfig, gdm, max_nodes))

    def make(person_id: str) -> GrowingDualMemory:
        return GrowingDualMemory(config=config, seed=zlib.crc32(person_id.encode("utf-8")))

    return make


def _with_max_nodes(config_cls: Any, gdm: dict[str, Any], max_nodes: int) -> dict[str, Any]:
    """Put the runtime's node bound into both networks' settings unless the GDM section sets one."""
    defaults = config_cls().to_dict()
    out = dict(gdm)
    for network in ("episodic", "semantic"):
        if isinstance(defaults.get(network), dict) and "max_nodes" in defaults[network]:
            settings = dict(out.get(network) or {})
            settings.setdefault("max_nodes", max_nodes)
            out[network] = settings
    return out
