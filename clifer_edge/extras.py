"""Optional dependencies: which pip extra installs a module; one line, not a traceback, if missing.

The plain install (``pip install clifer-edge``) is the robot's: numpy, PyYAML, OpenCV and
LiteRT, all the runtime imports. Commands that need more import it lazily inside
:func:`needs_extra`, which turns ``No module named 'sklearn'`` into a line that says what to
install instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Top-level module -> the extra of ``pyproject.toml`` that installs it.
EXTRA_OF_MODULE: dict[str, str] = {
    "sklearn": "eval",
    "scipy": "eval",
    "matplotlib": "eval",
    "tqdm": "eval",
    "tensorflow": "train",
    "keras": "train",
    "tensorboard": "train",
    "rclpy": "ros",
    "rcl_interfaces": "ros",
    "std_msgs": "ros",
    "sensor_msgs": "ros",
    "diagnostic_msgs": "ros",
}

#: What to do when a module that no extra installs is missing.
_BUILT_SEPARATELY: dict[str, str] = {
    "clifer_msgs": "build the interfaces with ros2_ws/build_msgs.sh (or colcon build in "
    "ros2_ws/) and source ros2_ws/install/setup.bash",
}


def missing_extra_message(error: ModuleNotFoundError, command: str) -> str | None:
    """One line saying what ``command`` lacks and how to install it; None if the missing
    module is not an optional dependency (then the error is a bug and should propagate)."""
    module = (error.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra == "ros":
        hint = (
            "source your ROS 2 setup (/opt/ros/<distro>/setup.bash) or "
            f'pip install "clifer-edge[{extra}]"'
        )
    elif extra is not None:
        hint = f'pip install "clifer-edge[{extra}]"'
    elif module in _BUILT_SEPARATELY:
        hint = _BUILT_SEPARATELY[module]
    else:
        return None
    return f"{command}: error: needs the module {module!r}, which is not installed: {hint}"


@contextmanager
def needs_extra(command: str) -> Iterator[None]:
    """For console scripts: run the block (the lazy imports of ``command``); if an optional
    module is missing, print :func:`missing_extra_message` and exit with status 2."""
    try:
        yield
    except ImportError as error:
        # A module may re-raise the ModuleNotFoundError with advice of its own (clifer_msgs).
        cause = error if isinstance(error, ModuleNotFoundError) else error.__cause__
        message = None
        if isinstance(cause, ModuleNotFoundError):
            message = missing_extra_message(cause, command)
        if message is None:
            raise
        print(message, file=sys.stderr)
        raise SystemExit(2) from None


def require(command: str, *modules: str) -> None:
    """Import ``modules`` (those ``command`` needs only deep inside its work) now, so that a
    missing extra is said before any work is done (see :func:`needs_extra`)."""
    with needs_extra(command):
        for module in modules:
            importlib.import_module(module)
