"""What a user installs: the lean robot install, extras that say what is missing, one version,
a wheel without the compiled kernel's sources, tests that keep out of the home folder."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

import clifer_edge
from clifer_edge.datasets import load_npz

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Modules of the extras; the plain (robot) install has none of them.
EVAL_MODULES = ("sklearn", "scipy", "matplotlib", "tqdm")
WORKSTATION_MODULES = ("tensorflow", "keras", "tensorboard")
ROS_MODULES = ("rclpy",)


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_plain_install_holds_only_what_the_runtime_imports():
    project = _pyproject()["project"]
    base = _requirement_names(project["dependencies"])
    assert base == {"numpy", "pyyaml", "opencv-python-headless", "ai-edge-litert"}
    extras = project["optional-dependencies"]
    assert {"scikit-learn", "scipy", "matplotlib", "tqdm"} <= _requirement_names(extras["eval"])
    # The workstation trains, exports and writes parity reports with the evaluation's tools.
    for workstation in ("train", "gpu"):
        assert "clifer-edge[eval]" in extras[workstation]


def _run_without(blocked: tuple[str, ...], code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which importing ``blocked`` fails as if the
    modules were not installed."""
    prelude = textwrap.dedent(
        f"""
        import sys

        class _NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {blocked!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, _NotInstalled())
        """
    )
    paths = [str(REPO_ROOT), str(REPO_ROOT / "training"), str(REPO_ROOT / "export")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_run_works_without_any_extra(tmp_path, data_dir):
    """``clifer-edge run`` (the runtime) on the plain install: no evaluation, TF or ROS module."""
    ckplus = load_npz(data_dir / "ckplus48.npz")
    frames = tmp_path / "faces"
    frames.mkdir()
    for i, row in enumerate(np.flatnonzero(ckplus.labels == "happiness")[:2]):
        cv2.imwrite(str(frames / f"{i}.png"), ckplus.images[row])
    argv = ["run", "--images", str(frames), "--cropped", "--label", "happy"]
    argv += ["--person", "p1", "--memory-dir", str(tmp_path / "memories")]
    code = f"""
        from clifer_edge.cli import main
        status = main({argv!r})
        leaked = sorted(m for m in {EVAL_MODULES + WORKSTATION_MODULES + ROS_MODULES!r}
                        if m in sys.modules)
        print("leaked", leaked)
        sys.exit(status)
    """
    blocked = EVAL_MODULES + WORKSTATION_MODULES + ROS_MODULES
    done = _run_without(blocked, code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("expression=") == 2
    assert "leaked []" in done.stdout
    assert f"memories: {tmp_path / 'memories'}" in done.stderr


@pytest.mark.parametrize(
    ("blocked", "code", "extra"),
    [
        (EVAL_MODULES, "from clifer_edge.cli import main; sys.exit(main(['demo']))", "eval"),
        (
            EVAL_MODULES,
            "from clifer_edge.cli import main; sys.exit(main(['eval', '--data', 'x.npz']))",
            "eval",
        ),
        (("sklearn",), "from clifer_edge.cli import main; sys.exit(main(['gdm-demo']))", "eval"),
        (("tqdm",), "from clifer_edge.cli import main; sys.exit(main(['calibrate']))", "eval"),
        (ROS_MODULES, "from clifer_edge.cli import node_main; sys.exit(node_main())", "ros"),
        (
            ("keras", "tensorflow"),
            "from clifer_train.cli import main; sys.exit(main(['--data', 'x', '--out', 'y']))",
            "train",
        ),
        (
            ("keras", "tensorflow"),
            "from clifer_export.cli import main; sys.exit(main(['--checkpoint=x', '--out=o']))",
            "train",
        ),
    ],
)
def test_a_missing_extra_is_one_line_that_says_what_to_install(tmp_path, blocked, code, extra):
    done = _run_without(blocked, code, tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert f'pip install "clifer-edge[{extra}]"' in line
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written on the way out


def test_the_node_without_its_interfaces_says_how_to_build_them(tmp_path):
    if importlib.util.find_spec("rclpy") is None:
        pytest.skip("ROS 2 (the ros extra) is what the node needs first")
    code = "from clifer_edge.cli import node_main; sys.exit(node_main())"
    done = _run_without(("clifer_msgs",), code, tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "'clifer_msgs'" in line and "ros2_ws/build_msgs.sh" in line


def test_top_level_help_lists_the_commands_that_need_an_extra(tmp_path):
    code = "from clifer_edge.cli import main; sys.exit(main(['--help']))"
    done = _run_without(EVAL_MODULES, code, tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("demo", "run", "eval", "gdm-demo", "calibrate"):
        assert command in done.stdout


def test_a_bug_in_a_command_module_is_not_taken_for_a_missing_extra(tmp_path):
    code = "from clifer_edge.cli import main; sys.exit(main(['run', '--images', '.']))"
    done = _run_without(("cv2",), code, tmp_path)  # not an extra: a broken install
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr and "cv2" in done.stderr


def _manifest_version(path: Path) -> str | None:
    return ET.parse(path).getroot().findtext("version")


def test_one_version_everywhere():
    version = clifer_edge.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    project = _pyproject()
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    source = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert source == "clifer_edge.__version__"
    for manifest in ("package.xml", "ros2_ws/src/clifer_msgs/package.xml"):
        assert _manifest_version(REPO_ROOT / manifest) == version, manifest
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)


def test_built_package_carries_py_typed_and_no_sources_of_compiled_modules(tmp_path):
    """What setuptools puts beside the compiled kernel in the wheel (its build_py step)."""
    pytest.importorskip("Cython", reason="setup.py cythonizes the kernel (test extra)")
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "setup.py", "setup.cfg", "README.md", "package.xml"):
        shutil.copy2(REPO_ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info", "build")
    for name in ("clifer_edge", "training", "export", "launch", "config", "resource"):
        shutil.copytree(REPO_ROOT / name, tree / name, ignore=ignore)
    lib = tmp_path / "lib"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
        cwd=tree,
        check=True,
        capture_output=True,
        timeout=300,
    )
    files = {p.relative_to(lib).as_posix() for p in lib.rglob("*") if p.is_file()}
    assert "clifer_edge/py.typed" in files
    assert "clifer_edge/memory/gwr.py" in files
    assert "clifer_edge/models/default/encoder_int8.tflite" in files
    assert not [f for f in files if f.endswith((".c", ".pyx", ".pxd", ".html"))]


def test_tools_write_their_own_files_into_the_sessions_scratch_folder():
    """ROS 2 logs, Keras' config and Matplotlib's cache go to a temporary folder, not ~."""
    scratch = Path(tempfile.gettempdir()).resolve()
    for variable in ("ROS_HOME", "ROS_LOG_DIR", "KERAS_HOME", "MPLCONFIGDIR"):
        folder = Path(os.environ[variable]).resolve()
        assert folder.is_dir(), variable
        assert folder.is_relative_to(scratch), f"{variable}={folder}"
