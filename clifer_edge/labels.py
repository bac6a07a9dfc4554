"""The one label vocabulary shared by training, export and the robot.

The data sets spell expressions as nouns (``happiness``); ROS4HRI's ``hri_msgs/Expression`` uses
adjectives (``happy``). Everything inside clifer-edge uses the canonical nouns below; conversion to
and from ROS4HRI happens only through :func:`to_ros4hri` and :func:`canonical_label`.

The label set of a memory is open (a person can be taught a new expression at any time), so
:func:`canonical_label` passes unknown names through, normalised, instead of rejecting them.
"""

from __future__ import annotations

#: The seven basic expressions of FER2013, in CLIFER's default presentation order (neutral first,
#: which the paper found best). The Imagination model's one-hot condition uses this order.
BASIC_EXPRESSIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "anger",
    "fear",
    "sadness",
    "disgust",
)

#: Expressions found in the shared data sets beyond the basic seven (CK+ has contempt).
EXTRA_EXPRESSIONS: tuple[str, ...] = ("contempt",)

#: Canonical name -> ROS4HRI ``hri_msgs/Expression`` constant (REP-155). Contempt has no constant.
ROS4HRI_EXPRESSIONS: dict[str, str] = {
    "neutral": "neutral",
    "happiness": "happy",
    "surprise": "surprised",
    "anger": "angry",
    "fear": "scared",
    "sadness": "sad",
    "disgust": "disgusted",
}

#: Longest accepted expression label, in characters.
MAX_LABEL_LENGTH = 64

_ALIASES: dict[str, str] = {
    **{ros: canonical for canonical, ros in ROS4HRI_EXPRESSIONS.items()},
    "happy": "happiness",
    "surprised": "surprise",
    "surprise": "surprise",
    "angry": "anger",
    "afraid": "fear",
    "fearful": "fear",
    "sad": "sadness",
    "disgusted": "disgust",
    "contemptuous": "contempt",
    "calm": "neutral",
}


def canonical_label(name: str) -> str:
    """Return the canonical spelling of an expression label.

    Known synonyms (ROS4HRI constants, adjectives) map to the canonical noun; any other valid
    name is kept, lower-cased and stripped, because a robot may be taught a new expression.

    Raises
    ------
    ValueError
        If ``name`` is not a string, is empty after stripping, is longer than
        :data:`MAX_LABEL_LENGTH`, holds a non-printable character or a path separator, or is
        ``.`` or ``..``.
    """
    if not isinstance(name, str):
        raise ValueError(f"expression label must be a str, got {type(name).__name__}: {name!r}")
    key = name.strip().lower()
    if not key:
        raise ValueError("expression label is empty")
    if len(key) > MAX_LABEL_LENGTH:
        raise ValueError(
            f"expression label of {len(key)} characters is longer than {MAX_LABEL_LENGTH} "
            f"({key[:20]!r}...)"
        )
    if not key.isprintable() or "/" in key or "\\" in key or key in (".", ".."):
        raise ValueError(
            f"expression label {key!r} is not usable: give printable characters without "
            "'/' or '\\', not '.' or '..'"
        )
    return _ALIASES.get(key, key)


def to_ros4hri(name: str) -> str:
    """Return the ROS4HRI expression constant for a label, or the canonical name if it has none."""
    label = canonical_label(name)
    return ROS4HRI_EXPRESSIONS.get(label, label)


def one_hot_index(name: str, vocabulary: tuple[str, ...] = BASIC_EXPRESSIONS) -> int:
    """Index of a label in the Imagination model's condition vector.

    Raises
    ------
    ValueError
        If the label is not one the model was trained to imagine.
    """
    label = canonical_label(name)
    try:
        return vocabulary.index(label)
    except ValueError:
        raise ValueError(
            f"expression {label!r} is not in the model vocabulary {list(vocabulary)}"
        ) from None
