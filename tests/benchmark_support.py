"""Running a committed benchmark script as a user does, for its short real-data run in CI."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<script> <args>`` with the repository on ``PYTHONPATH``; a non-zero
    exit fails the test with the end of its output."""
    repo = str(BENCHMARKS.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def run_benchmark_json(script: str, *args: str, out: Path, timeout: float) -> Any:
    """:func:`run_benchmark` with ``--json out``: the figures the script wrote there."""
    run_benchmark(script, *args, "--json", str(out), timeout=timeout)
    return json.loads(out.read_text())


def load_benchmark(script: str) -> ModuleType:
    """A benchmark script imported as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
