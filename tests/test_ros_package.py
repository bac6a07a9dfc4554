"""The ROS package files, checked without ROS: launch file, manifests, data files, conversions.

``launch`` is not on PyPI, so the launch file is read as source; on a robot it runs as is.
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from clifer_edge.ros.conversions import (
    AFFECT,
    BadImageMessage,
    affect,
    compressed_to_array,
    expression_fields,
    image_to_array,
    is_valid_id,
)

ROOT = Path(__file__).resolve().parent.parent

#: Python module -> rosdep key, for the non-ROS imports of the node and the launch file.
ROSDEP_KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml"}
#: Imported inside try/except ImportError: optional, documented in package.xml.
OPTIONAL = {"hri_msgs"}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name
    ]


def _kwarg(call: ast.Call, name: str) -> ast.expr:
    return next(k.value for k in call.keywords if k.arg == name)


def _third_party_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "clifer_edge"}


def _manifest(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def _depends(root: ET.Element) -> set[str]:
    tags = ("depend", "exec_depend", "build_depend", "buildtool_depend", "test_depend")
    return {el.text.strip() for tag in tags for el in root.iter(tag) if el.text}


def test_launch_file_starts_the_installed_executable_with_its_arguments():
    tree = ast.parse((ROOT / "launch" / "clifer_edge.launch.py").read_text())
    assert any(
        isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
        for n in tree.body
    )
    (node,) = _calls(tree, "Node")
    assert ast.literal_eval(_kwarg(node, "package")) == "clifer_edge"
    assert ast.literal_eval(_kwarg(node, "executable")) == "clifer_edge_node"
    declared = {ast.literal_eval(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument")}
    assert declared == {"mode", "camera_topic", "params_file", "memory_dir"}
    used = {ast.literal_eval(c.args[0]) for c in _calls(tree, "LaunchConfiguration")}
    assert used == declared
    # The default parameters file, <share>/config/clifer_edge.yaml, exists and is installed.
    (share_path,) = _calls(tree, "PathJoinSubstitution")
    parts = [ast.literal_eval(e) for e in share_path.args[0].elts[1:]]
    assert (ROOT.joinpath(*parts)).is_file()


def test_console_scripts_and_installed_files():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    # clifer_edge.cli.node_main runs clifer_edge.ros.node.main, or says what to install.
    assert scripts["clifer_edge_node"] == "clifer_edge.cli:node_main"
    assert scripts["clifer-edge-node"] == "clifer_edge.cli:node_main"
    setup_py = ast.parse((ROOT / "setup.py").read_text())
    (data_files,) = [
        n.value
        for n in setup_py.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "data_files"
    ]
    targets = {ast.literal_eval(t.elts[0]) for t in data_files.elts}
    assert {
        "share/ament_index/resource_index/packages",
        "share/clifer_edge",
        "share/clifer_edge/launch",
        "share/clifer_edge/config",
    } == targets
    assert (ROOT / "resource" / "clifer_edge").is_file()
    assert "$base/lib/clifer_edge" in (ROOT / "setup.cfg").read_text()


def test_package_xml_declares_every_dependency():
    root = _manifest(ROOT / "package.xml")
    assert root.get("format") == "3"
    assert root.findtext("name") == "clifer_edge"
    assert root.find("export/build_type").text == "ament_python"
    deps = _depends(root)
    for source in [
        *sorted((ROOT / "clifer_edge" / "ros").glob("*.py")),
        ROOT / "launch" / "clifer_edge.launch.py",
    ]:
        for module in _third_party_imports(source) - OPTIONAL:
            assert ROSDEP_KEYS.get(module, module) in deps, f"{source.name} imports {module}"


def test_workspace_holds_both_packages():
    link = ROOT / "ros2_ws" / "src" / "clifer_edge"
    assert link.is_symlink() and link.resolve() == ROOT
    msgs = _manifest(ROOT / "ros2_ws" / "src" / "clifer_msgs" / "package.xml")
    assert msgs.get("format") == "3"
    assert msgs.findtext("member_of_group") == "rosidl_interface_packages"
    assert "std_msgs" in _depends(msgs)
    assert (ROOT / "ros2_ws" / "build_msgs.sh").stat().st_mode & 0o111


def test_expression_message_carries_the_hri_fields():
    lines = (ROOT / "ros2_ws/src/clifer_msgs/msg/Expression.msg").read_text().splitlines()
    fields = {
        line.split()[1]: line.split()[0]
        for line in lines
        if line.strip() and not line.startswith("#") and "=" not in line
    }
    for name, kind in {
        "header": "std_msgs/Header",
        "expression": "string",
        "valence": "float32",
        "arousal": "float32",
        "confidence": "float32",
        "person_id": "string",
        "face_id": "string",
        "labels": "string[]",
        "scores": "float32[]",
        "memory": "string",
    }.items():
        assert fields.get(name) == kind, name


# ----------------------------------------------------------------------------- conversions
def _image(array: np.ndarray, encoding: str, step: int | None = None) -> SimpleNamespace:
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    step = step or width * channels
    rows = np.zeros((height, step), np.uint8)
    rows[:, : width * channels] = array.reshape(height, -1)
    return SimpleNamespace(
        height=height,
        width=width,
        encoding=encoding,
        step=step,
        is_bigendian=0,
        data=rows.tobytes(),
    )


def test_image_to_array_handles_padding_and_channel_orders():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    out, order = image_to_array(_image(grey, "mono8", step=8), max_side=100)
    np.testing.assert_array_equal(out, grey)
    colour = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    out, order = image_to_array(_image(colour, "bgr8", step=20), max_side=100)
    np.testing.assert_array_equal(out, colour)
    assert order == "bgr"
    rgba = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    out, order = image_to_array(_image(rgba, "rgba8"), max_side=100)
    np.testing.assert_array_equal(out, rgba[:, :, :3])
    assert order == "rgb"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"encoding": "yuv422"}, "unsupported image encoding"),
        ({"step": 3}, "smaller than one row"),
        ({"data": b""}, "data holds 0 bytes"),
        ({"width": 0}, "empty"),
        ({"width": 10**6, "step": 10**6}, "max_image_side"),
    ],
)
def test_image_to_array_rejects_bad_messages(change, message):
    msg = _image(np.zeros((4, 4), np.uint8), "mono8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(BadImageMessage, match=message):
        image_to_array(msg, max_side=4096)


def test_compressed_images_decode_and_garbage_is_refused():
    face = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    png = SimpleNamespace(format="png", data=cv2.imencode(".png", face)[1].tobytes())
    out, _ = compressed_to_array(png, max_side=100)
    np.testing.assert_array_equal(out, face)
    with pytest.raises(BadImageMessage, match="max_image_side"):
        compressed_to_array(png, max_side=32)
    with pytest.raises(BadImageMessage, match="cannot decode"):
        compressed_to_array(SimpleNamespace(format="jpeg", data=b"not a jpeg"), max_side=100)
    with pytest.raises(BadImageMessage, match="no data"):
        compressed_to_array(SimpleNamespace(format="jpeg", data=b""), max_side=100)


def test_expression_fields_use_ros4hri_names_and_circumplex_affect():
    result = SimpleNamespace(
        person_id="p1",
        label="happiness",
        confidence=0.75,
        scores={"sadness": 0.25, "happiness": 0.75},
        memory="episodic",
        learned=False,
    )
    fields = expression_fields(result, "f1")
    assert fields["expression"] == "happy"
    assert fields["labels"] == ["happiness", "sadness"]
    assert fields["scores"] == [0.75, 0.25]
    v_happy, a_happy = AFFECT["happiness"]
    v_sad, a_sad = AFFECT["sadness"]
    assert fields["valence"] == pytest.approx(0.75 * v_happy + 0.25 * v_sad)
    assert fields["arousal"] == pytest.approx(0.75 * a_happy + 0.25 * a_sad)
    # A label taught on the robot keeps its name and has no known affect.
    assert affect({"wink": 1.0}) == (0.0, 0.0)
    assert (
        expression_fields(SimpleNamespace(**{**vars(result), "label": "wink"}), "f1")["expression"]
        == "wink"
    )


def test_ids_usable_in_topic_names():
    assert is_valid_id("f1a2b") and is_valid_id("person_7")
    assert not is_valid_id("") and not is_valid_id("1abc") and not is_valid_id("a/b")
