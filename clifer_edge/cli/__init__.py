"""``clifer-edge``: the robot-side command line (demo, offline/live runs, evaluation).

Each sub-command lives in its own module under :mod:`clifer_edge.cli`, exposing
``add_arguments(parser)`` and ``run(args) -> int``; this package's ``__init__`` only dispatches
(``python -m clifer_edge.cli`` works too).
"""

from __future__ import annotations

import argparse
import importlib
import re

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clifer-edge", description=plain_text(__doc__.splitlines()[0])
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=plain_text(module.__doc__))
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)
