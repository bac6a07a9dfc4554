"""Training configuration: one typed record, loaded from YAML and checked field by field.

The two shipped configurations live next to this module (``configs/default.yaml``: small widths
that train on a 2-core CPU within about an hour; ``configs/paper.yaml``: the paper's widths at
96x96 for a GPU workstation). A YAML file only needs the keys it changes; everything else keeps the
defaults of :class:`TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clifer_edge.labels import BASIC_EXPRESSIONS, canonical_label

#: Directory of the shipped configurations.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TrainConfig:
    """Everything that decides a training run: sizes, loss weights, optimiser, data handling.

    Widths are lists with one entry per block. The encoder halves the image side once per entry of
    ``encoder_filters`` (a block of two 3x3 convolutions, the second strided); the generator
    doubles it once per entry of ``generator_filters`` (the last doubling goes straight to the
    image channels), so ``image_size`` must be divisible by ``2 ** len(...)`` of both.

    The latent ``z`` has two parts (see :mod:`clifer_train.models`): its first
    ``z_expression_dim`` values are the *expression code* (read by the classifier C, trained first
    as a plain expression encoder, :mod:`clifer_train.pretrain`), the rest the *identity code*
    that the generator recombines with the asked expression.
    """

    # --- faces -----------------------------------------------------------------------------
    image_size: int = 48
    channels: int = 1
    vocabulary: list[str] = field(default_factory=lambda: list(BASIC_EXPRESSIONS))
    # --- model sizes -----------------------------------------------------------------------
    z_dim: int = 64
    z_expression_dim: int = 32  # first values of z: the expression code (G skips it by default)
    encoder_filters: list[int] = field(default_factory=lambda: [32, 64, 128])
    encoder_dense: int = 0  # hidden dense units before the expression code (0: none)
    encoder_dropout: float = 0.3  # before the expression code, against FER2013 over-fitting
    identity_block: int = -2  # encoder block (list index) whose output feeds the identity code
    generator_filters: list[int] = field(default_factory=lambda: [128, 64, 32])
    disc_filters: list[int] = field(default_factory=lambda: [16, 32, 64])
    dz_units: list[int] = field(default_factory=lambda: [64, 32, 16])
    classifier_units: list[int] = field(default_factory=lambda: [])  # [] = linear on the code
    kernel_size: int = 5
    generator_upsampling: str = "nonoverlapping"  # 2x2/2 transposed + 3x3 conv | transpose
    # G also reads the source face's expression code (through its own zero-initialised dense
    # layer, so a run started from one without it starts as that run's G)
    generator_reads_expression: bool = False
    # --- loss weights ----------------------------------------------------------------------
    w_reconstruction: float = 1.0
    w_tv: float = 0.05
    w_adv_image: float = 0.05
    w_adv_latent: float = 0.01
    w_cls_real: float = 0.2
    w_cls_generated: float = 0.1
    w_cycle: float = 0.5
    w_latent_cycle: float = 0.2
    # translations land at the person's code moved by the class-mean offset (needs stage 1)
    w_expression_offset: float = 0.0
    # C judges each translation through a random view (mirror, shift, brightness, contrast in the
    # augmentation's ranges): the asked expression must show, not a pattern E's exact view reads
    reencode_views: bool = False
    w_perceptual: float = 0.0
    perceptual_model: str | None = None  # a .keras feature extractor (e.g. converted VGG-Face)
    # --- stage 1: the expression encoder (E's backbone + expression code + C) ----------------
    pretrain_epochs: int = 20  # 0: no stage 1 (E learns expressions only inside the CAAE)
    pretrain_learning_rate: float = 1e-3
    class_balance: str = "sqrt"  # none | sqrt | inverse: loss weight per class from its frequency
    freeze_expression: bool = True  # stage 2 keeps E's backbone, expression code and C fixed
    # --- optimisation ----------------------------------------------------------------------
    batch_size: int = 64
    epochs: int = 6
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    final_lr_fraction: float = 0.0  # linear decay from learning_rate to this fraction of it
    seed: int = 0
    mixed_precision: str = "auto"  # auto (on GPU only), on, off
    # --- data ------------------------------------------------------------------------------
    train_split: str = "Training"
    val_split: str = "PublicTest"
    max_train_samples: int | None = None
    max_val_samples: int | None = 1024
    augment_flip: bool = True
    augment_shift: int = 3  # pixels at 48x48, scaled with image_size
    augment_brightness: float = 0.1  # in the [-1, 1] image range
    augment_contrast: float = 0.2  # contrast factor in [1 - a, 1 + a]
    augment_rotation: float = 10.0  # degrees, both ways
    augment_scale: float = 0.1  # zoom factor in [1 - a, 1 + a]
    grid_faces: int = 8

    def __post_init__(self) -> None:
        self._check_types()
        self._check_values()

    # ------------------------------------------------------------------------------------
    @property
    def frozen_expression_code(self) -> bool:
        """Whether stage 2 keeps a stage-1 expression code fixed (the expression-offset targets
        are its class means)."""
        return self.pretrain_epochs > 0 and self.freeze_expression

    @property
    def shift_pixels(self) -> float:
        """``augment_shift`` (pixels at 48x48) at this ``image_size``."""
        return self.augment_shift * self.image_size / 48

    @property
    def n_classes(self) -> int:
        """Length of the generator's one-hot expression condition."""
        return len(self.vocabulary)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys and wrongly typed values raise ``ValueError``."""
        if not isinstance(values, dict):
            raise ValueError(f"training config should be a mapping, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown training config key(s) {unknown}; known keys: {sorted(known)}"
            )
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Load a YAML file (keys it omits keep their defaults)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ValueError(f"cannot read training config {path}: {error}") from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"training config {path} is not valid YAML: {error}") from None
        try:
            return cls.from_dict(values or {})
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    @classmethod
    def named(cls, name_or_path: str | Path) -> TrainConfig:
        """A shipped config by name (``default``, ``paper``) or a YAML file by path."""
        shipped = CONFIG_DIR / f"{name_or_path}.yaml"
        if isinstance(name_or_path, str) and "/" not in name_or_path and shipped.exists():
            return cls.from_yaml(shipped)
        path = Path(name_or_path)
        if not path.exists():
            names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            raise ValueError(f"training config {str(name_or_path)!r} is neither {names} nor a file")
        return cls.from_yaml(path)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, suitable for YAML/JSON."""
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        """Write all fields, so a run directory documents exactly what was trained."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # ------------------------------------------------------------------------------------
    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _matches(value, hints[f.name]):
                raise ValueError(
                    f"training config key {f.name!r} should be {_type_name(hints[f.name])}, "
                    f"got {type(value).__name__} {value!r}"
                )
        self.vocabulary = [canonical_label(label) for label in self.vocabulary]

    def _check_values(self) -> None:
        positive = ("image_size", "z_dim", "kernel_size", "batch_size", "epochs", "grid_faces")
        for name in positive:
            if getattr(self, name) < 1:
                value = getattr(self, name)
                raise ValueError(f"training config key {name!r}={value} should be >= 1")
        if self.channels not in (1, 3):
            raise ValueError(f"training config key 'channels'={self.channels} should be 1 or 3")
        if len(self.vocabulary) < 2 or len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError(
                f"training config key 'vocabulary'={self.vocabulary} needs >= 2 distinct labels"
            )
        for name in ("encoder_filters", "generator_filters", "disc_filters"):
            widths = getattr(self, name)
            if not widths or min(widths) < 1:
                raise ValueError(f"training config key {name!r}={widths} needs positive widths")
            if self.image_size % (2 ** len(widths)):
                raise ValueError(
                    f"training config: image_size={self.image_size} is not divisible by "
                    f"2**len({name})={2 ** len(widths)}"
                )
        if not 1 <= self.z_expression_dim < self.z_dim:
            raise ValueError(
                f"training config: z_expression_dim={self.z_expression_dim} should be in "
                f"[1, z_dim={self.z_dim}) (the rest of z is the identity code)"
            )
        blocks = len(self.encoder_filters)
        if not -blocks <= self.identity_block < blocks:
            raise ValueError(
                f"training config key 'identity_block'={self.identity_block} should index one of "
                f"the {blocks} encoder blocks (-{blocks} .. {blocks - 1})"
            )
        if not 0 <= self.encoder_dropout < 1:
            raise ValueError("training config key 'encoder_dropout' should be in [0, 1)")
        if self.pretrain_epochs < 0 or not 0 < self.pretrain_learning_rate < 1:
            raise ValueError(
                "training config: pretrain_epochs should be >= 0, pretrain_learning_rate in (0,1)"
            )
        choices = {
            "class_balance": ("none", "sqrt", "inverse"),
            "generator_upsampling": ("nonoverlapping", "transpose"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"training config key {name!r}={getattr(self, name)!r} should be one of "
                    f"{list(allowed)}"
                )
        for name in ("augment_contrast", "augment_scale"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"training config key {name!r} should be in [0, 1)")
        if not 0 <= self.augment_rotation <= 45:
            raise ValueError("training config key 'augment_rotation' should be in [0, 45] degrees")
        for name in ("dz_units", "classifier_units"):
            if min(getattr(self, name), default=1) < 1:
                raise ValueError(f"training config key {name!r} needs positive widths")
        for f in dataclasses.fields(self):
            if f.name.startswith("w_") and getattr(self, f.name) < 0:
                raise ValueError(f"training config key {f.name!r} should be >= 0")
        if not 0 < self.learning_rate < 1 or not 0 <= self.beta_1 < 1:
            raise ValueError("training config: learning_rate should be in (0,1), beta_1 in [0,1)")
        if not 0 <= self.final_lr_fraction <= 1:
            raise ValueError("training config key 'final_lr_fraction' should be in [0, 1]")
        if self.mixed_precision not in ("auto", "on", "off"):
            raise ValueError(
                f"training config key 'mixed_precision'={self.mixed_precision!r} "
                "should be 'auto', 'on' or 'off'"
            )
        if self.w_expression_offset > 0 and not self.frozen_expression_code:
            raise ValueError(
                "training config: w_expression_offset > 0 needs a frozen stage-1 expression code "
                "(pretrain_epochs > 0 and freeze_expression: true)"
            )
        if self.w_perceptual > 0 and not self.perceptual_model:
            raise ValueError("training config: w_perceptual > 0 needs perceptual_model (a file)")


def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a field's type hint (ints count as floats, bools as neither)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
