"""``clifer-edge``: the robot-side command line (demo, offline/live runs, evaluation).

Each sub-command lives in its own module under :mod:`clifer_edge.cli`, exposing
``add_arguments(parser)`` and ``run(args) -> int``; this package's ``__init__`` only dispatches
(``python -m clifer_edge.cli`` works too). Only the chosen sub-command's module is imported; one
whose optional dependencies are not installed (the evaluation's, in a plain robot install) says
which extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from clifer_edge.extras import needs_extra

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "gdm-demo": ("clifer_edge.cli.gdm_demo", "GDM on real faces (PCA features), per subject"),
    "demo": ("clifer_edge.cli.demo", "the main job: real faces through the learning runtime"),
    "run": ("clifer_edge.cli.run", "recognise (and learn) faces from a video, camera or images"),
    "calibrate": ("clifer_edge.cli.calibrate", "calibrate the memories' latent space + fallback"),
    "eval": ("clifer_edge.cli.evaluate", "CLIFER per-subject protocol on a data set"),
}


def plain_text(docstring: str) -> str:
    """A docstring without its reStructuredText markup, for ``--help``: ``code`` -> code,
    :role:`~package.module.name` -> name, :role:`text <target>` -> text."""
    text = re.sub(r":[a-z]+:`~?([^`<]*?)\s*<[^`]*>`", r"\1", docstring)
    text = re.sub(r":[a-z]+:`~([^`]*)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = re.sub(r":[a-z]+:`([^`]*)`", r"\1", text)
    return text.replace("``", "")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``clifer-edge`` parser. Only ``command``'s module is imported (every sub-command's
    when None): a command starts without the other commands' dependencies, and the plain
    install's ``clifer-edge run`` never touches the evaluation's."""
    parser = argparse.ArgumentParser(
        prog="clifer-edge", description=plain_text(__doc__.splitlines()[0])
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name, help=help_text)  # listed in the top-level help only
            continue
        module = importlib.import_module(module_name)
        parsed = sub.add_parser(name, help=help_text, description=plain_text(module.__doc__))
        module.add_arguments(parsed)
        parsed.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((arg for arg in argv if not arg.startswith("-")), "")
    # A missing optional module, on import or deep in the work, is one line naming the extra.
    with needs_extra(f"clifer-edge {command}"):
        args = build_parser(command).parse_args(argv)
        return int(args._run(args) or 0)


def node_main(args: list[str] | None = None) -> int:
    """``clifer-edge-node``: the ROS 2 node (:func:`clifer_edge.ros.node.main`), or one line
    saying what to install or build when ROS 2 or the interfaces are missing."""
    with needs_extra("clifer-edge-node"):
        from clifer_edge.ros.node import main as run_node
    return int(run_node(args) or 0)
