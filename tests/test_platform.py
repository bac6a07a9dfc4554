"""The robot's platform: its CPU (aarch64, under emulation) and its numpy (1.x, for ROS 2 Humble).

Both checks build what they need outside the repository and skip, with the reason, where this
machine cannot run them; ``-m "not platform"`` leaves them out of a quick local run.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PLATFORM_DIR = REPO_ROOT / "tests" / "platform"
#: The robot-side test modules (memory, faces and preprocessing, models, runtime), as patterns.
ROBOT_SIDE_TESTS = [
    line
    for line in (PLATFORM_DIR / "robot-side-tests.txt").read_text().splitlines()
    if line and not line.startswith("#")
]
#: Newest numpy 1.x: what a ROS 2 Humble robot can run (its message libraries need numpy < 2).
NUMPY_1 = "numpy==1.26.*"
#: Skipped by the aarch64 script when this machine cannot run it.
SKIPPED = 77


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.platform
def test_aarch64_agrees_with_x86_64(tmp_path, data_dir):
    """tests/platform/aarch64.sh: the robot-side tests pass on aarch64, same latents and answers."""
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "CLIFER_DATA_DIR": str(data_dir),
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", str(PLATFORM_DIR / "aarch64.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=40 * 60,
    )
    output = done.stdout + done.stderr
    print(output)
    if done.returncode == SKIPPED:
        reasons = [line for line in output.splitlines() if line.startswith("SKIP:")]
        pytest.skip(f"aarch64 check: {reasons[-1][5:].strip() if reasons else 'skipped'}")
    assert done.returncode == 0, f"aarch64 check failed:\n{_tail(output)}"
    assert "PASSED:" in output


def _probe() -> ModuleType:
    """tests/platform/probe.py (a script; its folder is no package)."""
    spec = importlib.util.spec_from_file_location(
        "clifer_platform_probe", PLATFORM_DIR / "probe.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_tests(destination: Path) -> Path:
    """The tests, the benchmark scripts they run and their pytest settings, apart from the
    sources (so they import the install)."""
    destination.mkdir()
    for folder in ("tests", "benchmarks"):
        shutil.copytree(
            REPO_ROOT / folder, destination / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy2(REPO_ROOT / "pyproject.toml", destination)
    return destination


def _copy_sources(destination: Path) -> Path:
    """The source tree without build outputs (pip builds in the tree it is given)."""
    ignore = shutil.ignore_patterns(
        ".git",
        "build",
        "dist",
        "*.egg-info",
        "*.so",
        "__pycache__",
        ".venv*",
        "venv*",
        "runs",
        "demo_out",
        "install",
        "log",
        ".pytest_cache",
        ".ruff_cache",
    )
    shutil.copytree(REPO_ROOT, destination, symlinks=True, ignore=ignore)
    return destination


@pytest.mark.platform
def test_robot_side_tests_pass_with_numpy_1(tmp_path, data_dir):
    """Built and run with numpy 1.26 (as on a Humble robot), the robot-side tests pass."""
    with contextlib.ExitStack() as stack:
        _numpy_1_check(tmp_path, data_dir, stack)


def _numpy_1_check(tmp_path: Path, data_dir: Path, stack: contextlib.ExitStack) -> None:
    """The numpy 1.x check in a virtual environment kept in the platform cache."""
    start = time.perf_counter()
    # Kept between runs (the dependencies take minutes to install); the package is rebuilt.
    cache = Path(os.environ.get("CLIFER_PLATFORM_CACHE", "/var/tmp/clifer-edge"))
    env_dir = cache / f"numpy1-py{sys.version_info[0]}.{sys.version_info[1]}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = stack.enter_context(open(cache / f"{env_dir.name}.lock", "w"))
        fcntl.flock(lock, fcntl.LOCK_EX)  # one run at a time per environment
        if not (env_dir / "bin" / "python").exists():
            venv.create(env_dir, with_pip=True, clear=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"numpy 1.x check: cannot create a virtual environment in {cache} ({error})")
    python = env_dir / "bin" / "python"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env.update(
        TMPDIR=str(tmp_path), CLIFER_DATA_DIR=str(data_dir), PIP_DISABLE_PIP_VERSION_CHECK="1"
    )
    sources = _copy_sources(tmp_path / "src")
    extras, build_requires = _probe().robot_install(REPO_ROOT / "pyproject.toml")
    # As colcon builds it on the robot: the Cython kernels compiled against the numpy 1.x there.
    build_tools = [r for r in build_requires if not r.lower().startswith("numpy")]
    for what, args in (
        ("the build tools", [*build_tools, NUMPY_1]),
        ("the package", ["--no-build-isolation", f"{sources}{extras}", NUMPY_1]),
    ):
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=20 * 60,
        )
        if install.returncode != 0 and "No matching distribution" in install.stderr:
            pytest.skip(f"numpy 1.x check: pip cannot get {what} ({_tail(install.stderr, 3)})")
        assert install.returncode == 0, (
            f"pip install of {what} in {env_dir} (delete it to start afresh):\n"
            f"{_tail(install.stderr)}"
        )
    installed = time.perf_counter()
    tests = _copy_tests(tmp_path / "tests-only")
    modules = sorted(
        {p.name for pattern in ROBOT_SIDE_TESTS for p in (tests / "tests").glob(pattern)}
    )
    assert len(modules) >= len(ROBOT_SIDE_TESTS), f"robot-side test modules missing: {modules}"
    versions = subprocess.run(
        [
            str(python),
            "-c",
            "import numpy, cv2, ai_edge_litert as litert, clifer_edge as package\n"
            "print(numpy.__version__, cv2.__version__, litert.__version__, package.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert versions.stdout.startswith("1.26."), versions.stdout + versions.stderr
    assert str(env_dir) in versions.stdout, "the tests must import the installed package"
    run = subprocess.run(
        [
            str(env_dir / "bin" / "pytest"),
            "-p",
            "no:cacheprovider",
            "-q",
            *(f"tests/{m}" for m in modules),
        ],
        cwd=tests,
        env=env,
        capture_output=True,
        text=True,
        timeout=20 * 60,
    )
    print(
        f"numpy 1.x check: numpy, OpenCV, LiteRT, package: {versions.stdout.strip()}; install "
        f"{installed - start:.0f} s, tests {time.perf_counter() - installed:.0f} s\n"
        f"{_tail(run.stdout, 5)}"
    )
    assert run.returncode == 0, f"robot-side tests failed on {NUMPY_1}:\n{_tail(run.stdout)}"
