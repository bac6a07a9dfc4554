"""ROS4HRI over real DDS: the camera-mode face pipeline as a ROS4HRI consumer sees it, the live
view, the lifecycle, a late-joining node, and the launch file run by the real ``launch``.

Every node runs as its own process; this test process is the consumer (like libhri's
HRIListener: the tracked list first, then each face's topics). Real JAFFE photos.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ros_support import (
    LAUNCH_WHEELS,
    REPO_ROOT,
    Driver,
    NodeProcess,
    RosEnv,
    image_msg,
    prepare_ros_env,
    rclpy_missing_reason,
)

pytestmark = pytest.mark.skipif(bool(rclpy_missing_reason()), reason=rclpy_missing_reason())

STARTUP_S = 60.0
HRI_CONSTANTS = ("neutral", "happy", "surprised", "angry", "scared", "sad", "disgusted")


@pytest.fixture(scope="module")
def ros(data_dir: Path) -> RosEnv:
    return prepare_ros_env(data_dir)


@pytest.fixture(scope="module")
def driver(ros: RosEnv):
    drv = Driver("clifer_hri_consumer")
    yield drv
    drv.close()


@pytest.fixture(scope="module")
def jaffe(data_dir: Path) -> dict[str, np.ndarray]:
    with np.load(data_dir / "jaffe.npz") as data:
        return {key: data[key] for key in ("images", "labels", "subjects")}


def _photos(jaffe: dict[str, np.ndarray], n: int = 12) -> list[np.ndarray]:
    """One subject's photos (256x256 grey, one face each), as a camera would stream them."""
    subject = jaffe["subjects"][0]
    return list(jaffe["images"][jaffe["subjects"] == subject][:n])


def _latched() -> Any:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
    )


def _start(ros: RosEnv, tmp: Path, name: str, extra_yaml: str = "", **params: Any) -> NodeProcess:
    runtime = tmp / f"{name}_runtime.yaml"
    runtime.write_text("imagination:\n  idle_timeout_s: 600\n" + extra_yaml)
    base = {
        "memory_dir": str(tmp / "memories"),
        "runtime_config": str(runtime),
        "diagnostics_period_s": 0.2,
    }
    return NodeProcess(name, {**base, **params}, tmp, ros).start()


def _wait_service(driver: Driver, node: NodeProcess, srv_type: Any, name: str) -> None:
    client = driver.node.create_client(srv_type, name)
    try:
        ready = driver.spin_until(lambda: client.service_is_ready() or not node.alive(), STARTUP_S)
    finally:
        driver.node.destroy_client(client)
    assert node.alive(), f"node {node.name} exited:\n{node.log()}"
    assert ready, f"{name} not ready after {STARTUP_S} s:\n{node.log()}"


class Consumer:
    """A ROS4HRI consumer: follows /humans/faces/tracked and subscribes to each face's topics."""

    def __init__(self, driver: Driver) -> None:
        from hri_msgs.msg import IdsList

        self.driver = driver
        self.tracked: list[tuple[float, list[str]]] = []
        self.topics: dict[str, dict[str, list[Any]]] = {}
        driver.node.create_subscription(
            IdsList, "/humans/faces/tracked", self._on_tracked, _latched()
        )

    def _on_tracked(self, msg: Any) -> None:
        from hri_msgs.msg import Expression, NormalizedRegionOfInterest2D
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        self.tracked.append((time.monotonic(), list(msg.ids)))
        for face_id in msg.ids:
            if face_id in self.topics:
                continue
            got: dict[str, list[Any]] = {"roi": [], "cropped": [], "expression": []}
            base = f"/humans/faces/{face_id}"
            node = self.driver.node
            node.create_subscription(
                NormalizedRegionOfInterest2D, f"{base}/roi", got["roi"].append, 10
            )
            node.create_subscription(
                Image, f"{base}/cropped", got["cropped"].append, qos_profile_sensor_data
            )
            node.create_subscription(Expression, f"{base}/expression", got["expression"].append, 10)
            self.topics[face_id] = got


def test_camera_mode_is_a_ros4hri_face_pipeline(ros, driver, jaffe, tmp_path):
    from sensor_msgs.msg import Image

    # A loaded test machine may starve the node for more than the default 0.5 s, which (no frame
    # that long) ends every track; 1 s keeps one id through that and still ends a track in time.
    node = _start(
        ros,
        tmp_path,
        "clifer_hricam",
        extra_yaml="faces:\n  lost_after_s: 1.0\n",
        mode="camera",
        camera_topic="/hricam/image",
    )
    try:
        from clifer_msgs.srv import SaveMemories

        _wait_service(driver, node, SaveMemories, "/clifer_hricam/save")
        consumer = Consumer(driver)
        annotated = driver.collect(Image, "/clifer_hricam/annotated_image", 5)
        pub = driver.node.create_publisher(Image, "/hricam/image", 10)
        photos = _photos(jaffe)
        sent = [0]

        def send_photo() -> None:
            pub.publish(
                image_msg(photos[sent[0] % len(photos)], driver.node.get_clock().now().to_msg())
            )
            sent[0] += 1

        def complete() -> bool:
            ids = [i for _, ids in consumer.tracked for i in ids]
            return (
                bool(ids)
                and all(
                    consumer.topics.get(i) and all(consumer.topics[i].values()) for i in set(ids)
                )
                and bool(annotated)
                and sent[0] >= 30
            )

        assert driver.spin_until(complete, 60.0, every=send_photo, period=0.1), (
            f"tracked={consumer.tracked[-3:]}, topics="
            f"{ {f: {k: len(v) for k, v in t.items()} for f, t in consumer.topics.items()} }, "
            f"annotated={len(annotated)}\n{node.log()[-2000:]}"
        )
        # One stable face: every non-empty tracked list is the same single id.
        lists = [ids for _, ids in consumer.tracked if ids]
        assert all(ids == lists[0] for ids in lists) and len(lists[0]) == 1, lists
        (face_id,) = lists[0]
        got = consumer.topics[face_id]
        roi = got["roi"][-1]
        assert 0.0 <= roi.xmin < roi.xmax <= 1.0 and 0.0 <= roi.ymin < roi.ymax <= 1.0
        assert 0.0 < roi.c <= 1.0
        crop = got["cropped"][-1]
        assert crop.encoding == "mono8" and 40 <= crop.width <= 256 and 40 <= crop.height <= 256
        assert all(e.expression in ("", *HRI_CONSTANTS) for e in got["expression"])
        assert all(0.0 <= e.confidence <= 1.0 for e in got["expression"])
        view = annotated[-1]
        assert (view.encoding, view.width, view.height) == ("bgr8", 256, 256)

        # The face leaves (the camera now sees an empty room): the tracked list empties and the
        # face's topics go within about a second.
        empty = np.full((256, 256), 128, np.uint8)
        left = time.monotonic()
        assert driver.spin_until(
            lambda: consumer.tracked[-1][1] == [],
            10.0,
            every=lambda: pub.publish(image_msg(empty, driver.node.get_clock().now().to_msg())),
            period=0.1,
        )
        emptied = consumer.tracked[-1][0] - left
        topic = f"/humans/faces/{face_id}/expression"
        assert driver.spin_until(lambda: driver.node.count_publishers(topic) == 0, 10.0)
        gone = time.monotonic() - left
        print(
            f"\nface left: tracked list empty after {emptied:.2f} s, topics gone after {gone:.2f} s"
        )
        assert emptied <= 2.0, emptied  # lost_after_s 1.0 + the 0.2 s expiry timer + DDS
        # A face coming back gets a new id: ids are never reused.
        consumer.tracked.clear()
        assert driver.spin_until(
            lambda: any(ids for _, ids in consumer.tracked), 30.0, every=send_photo, period=0.1
        ), f"the face did not come back: {consumer.tracked[-3:]}\n{node.log()[-3000:]}"
        new_id = next(ids for _, ids in consumer.tracked if ids)[0]
        assert new_id != face_id
        assert node.alive()
    finally:
        node.stop(signal.SIGKILL)


def test_lifecycle_transitions(ros, driver, jaffe, tmp_path):
    from clifer_msgs.msg import Expression
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from sensor_msgs.msg import Image

    node = _start(
        ros, tmp_path, "clifer_life", mode="camera", camera_topic="/life/image", autostart=False
    )
    try:
        _wait_service(driver, node, GetState, "/clifer_life/get_state")

        def state() -> int:
            return driver.call(
                GetState, "/clifer_life/get_state", GetState.Request()
            ).current_state.id

        def change(transition: int) -> bool:
            request = ChangeState.Request(transition=Transition(id=transition))
            return driver.call(ChangeState, "/clifer_life/change_state", request, 60.0).success

        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert change(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        expressions = driver.collect(Expression, "/clifer_life/expressions")
        pub = driver.node.create_publisher(Image, "/life/image", 10)
        photo = _photos(jaffe, 1)[0]

        def send() -> None:
            pub.publish(image_msg(photo, driver.node.get_clock().now().to_msg()))

        # Inactive: configured (models loaded) but not subscribed: no answers.
        driver.spin_until(lambda: bool(expressions), 2.0, every=send)
        assert not expressions
        assert change(Transition.TRANSITION_ACTIVATE)
        assert state() == State.PRIMARY_STATE_ACTIVE
        assert driver.spin_until(lambda: bool(expressions), 30.0, every=send)
        assert change(Transition.TRANSITION_DEACTIVATE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        assert change(Transition.TRANSITION_CLEANUP)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert "memories saved" in node.log()
        assert change(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert state() == State.PRIMARY_STATE_FINALIZED
    finally:
        code = node.stop(signal.SIGINT)
    assert code == 0, node.log()


def test_a_late_joining_node_learns_the_current_persons(ros, driver, jaffe, tmp_path):
    from clifer_msgs.msg import Expression
    from hri_msgs.msg import IdsList
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    # hri_person_manager and hri_face_detect published before the node started (latched).
    persons = driver.node.create_publisher(IdsList, "/humans/persons/tracked", _latched())
    faces = driver.node.create_publisher(IdsList, "/humans/faces/tracked", _latched())
    face_of_zoe = driver.node.create_publisher(String, "/humans/persons/zoe/face_id", _latched())
    persons.publish(IdsList(ids=["zoe"]))
    faces.publish(IdsList(ids=["fz1"]))
    face_of_zoe.publish(String(data="fz1"))
    driver.spin_until(lambda: False, 0.5)

    node = _start(ros, tmp_path, "clifer_late", mode="ros4hri")
    try:
        expressions = driver.collect(Expression, "/clifer_late/expressions")
        crop = driver.node.create_publisher(Image, "/humans/faces/fz1/cropped", 10)
        photo = _photos(jaffe, 1)[0]
        assert driver.spin_until(
            lambda: any(e.person_id == "zoe" for e in expressions),
            STARTUP_S,
            every=lambda: crop.publish(image_msg(photo, driver.node.get_clock().now().to_msg())),
        ), f"never answered as zoe: {[e.person_id for e in expressions][-5:]}\n{node.log()}"
        assert all(e.face_id == "fz1" for e in expressions)
    finally:
        node.stop(signal.SIGKILL)
        # Latched lists left behind would reach later nodes of this module too.
        for pub in (persons, faces, face_of_zoe):
            driver.node.destroy_publisher(pub)


@contextlib.contextmanager
def _inprocess_node(name: str, tmp_path: Path, **params: Any) -> Iterator[Any]:
    """An unconfigured ExpressionNode in this process, in its own ROS context (torn down after)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from clifer_edge.ros.node import ExpressionNode

    context = Context()
    rclpy.init(context=context)
    overrides = {"autostart": False, "memory_dir": str(tmp_path / "memories"), **params}
    node = ExpressionNode(
        context=context,
        # Not the launch file's node name: a vanished node's services may linger in discovery.
        cli_args=["--ros-args", "-r", f"__node:={name}"],
        parameter_overrides=[Parameter(key, value=value) for key, value in overrides.items()],
    )
    try:
        yield node
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_handle_survives_unexpected_errors_and_counts_them(ros, jaffe, tmp_path):
    """TypeError, MemoryError and OSError (disk full) inside the runtime: the image fails, is
    counted per class and logged; the node answers the next image."""
    from rclpy.lifecycle import TransitionCallbackReturn

    runtime = tmp_path / "runtime.yaml"
    runtime.write_text("imagination:\n  idle_timeout_s: 600\n")
    with _inprocess_node("clifer_inprocess", tmp_path, runtime_config=str(runtime)) as node:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        process_frame = node._runtime.process_frame
        msg = image_msg(_photos(jaffe, 1)[0], node.get_clock().now().to_msg())
        for error in (
            TypeError("bad field"),
            MemoryError(),
            OSError(28, "No space left on device"),
        ):

            def failing(*args: Any, error: BaseException = error, **kwargs: Any) -> Any:
                raise error

            node._runtime.process_frame = failing
            node._on_camera_image(msg)  # must not raise
        node._runtime.process_frame = process_frame
        node._on_camera_image(msg)
        assert node._stats.bad == {"TypeError": 1, "MemoryError": 1, "OSError": 1}
        assert node._stats.processed == 1


def test_an_unexpected_configure_error_is_logged_not_swallowed(ros, tmp_path, capfd, monkeypatch):
    """rclpy's lifecycle turns an exception in on_configure into a silent failed transition."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from clifer_edge.ros.node import ExpressionNode

    def broken(self: Any) -> Any:
        raise KeyError("a bug, not a configuration problem")

    monkeypatch.setattr(ExpressionNode, "_load_runtime", broken)
    with _inprocess_node("clifer_broken", tmp_path) as node:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._configured == []  # nothing half-made left behind
    log = capfd.readouterr().err
    assert "configure failed" in log and "KeyError: 'a bug, not a configuration problem'" in log


def _install_prefix(prefix: Path) -> None:
    """The ament install layout of the package, as setup.py's data_files and setup.cfg declare
    it (colcon/pip would put the same files there), with the node's executable."""
    import ast

    setup_py = ast.parse((REPO_ROOT / "setup.py").read_text())
    (data_files,) = [
        n.value
        for n in setup_py.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "data_files"
    ]
    for entry in data_files.elts:
        target = ast.literal_eval(entry.elts[0])
        call = entry.elts[1]
        sources = (
            ast.literal_eval(call)
            if isinstance(call, ast.List)
            else sorted(
                str(p.relative_to(REPO_ROOT))
                for p in REPO_ROOT.glob(ast.literal_eval(call.args[0].args[0]))
            )
        )
        (prefix / target).mkdir(parents=True, exist_ok=True)
        for source in sources:
            (prefix / target / Path(source).name).write_bytes((REPO_ROOT / source).read_bytes())
    executable = prefix / "lib" / "clifer_edge" / "clifer_edge_node"
    executable.parent.mkdir(parents=True, exist_ok=True)
    executable.write_text(
        f"#!{sys.executable}\nimport sys\nfrom clifer_edge.ros.node import main\nsys.exit(main())\n"
    )
    executable.chmod(0o755)


@pytest.mark.skipif(not LAUNCH_WHEELS.is_dir(), reason=f"no launch wheels in {LAUNCH_WHEELS}")
def test_launch_file_brings_the_node_to_active(ros, driver, jaffe, tmp_path):
    from clifer_msgs.msg import Expression
    from lifecycle_msgs.msg import State
    from lifecycle_msgs.srv import GetState
    from sensor_msgs.msg import Image

    prefix = tmp_path / "install"
    _install_prefix(prefix)
    env = dict(ros.env)
    env["PYTHONPATH"] = os.pathsep.join(
        [*map(str, sorted(LAUNCH_WHEELS.glob("*.whl"))), env["PYTHONPATH"]]
    )
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), env["AMENT_PREFIX_PATH"]])
    env["ROS_HOME"] = str(tmp_path / "ros_home")  # launch logs, not ~/.ros
    launch_file = str(prefix / "share/clifer_edge/launch/clifer_edge.launch.py")
    arguments = {"camera_topic": "/launch_cam/image", "memory_dir": str(tmp_path / "mem")}
    script = (
        # As from a terminal: a process started in the background by a non-interactive shell
        # (e.g. a CI runner's job) inherits SIGINT ignored, and launch only listens to a SIGINT
        # that Python handles.
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from launch import LaunchDescription, LaunchService\n"
        "from launch.actions import IncludeLaunchDescription\n"
        "from launch.launch_description_sources import PythonLaunchDescriptionSource\n"
        "service = LaunchService()\n"
        "service.include_launch_description(LaunchDescription([IncludeLaunchDescription(\n"
        f"    PythonLaunchDescriptionSource({launch_file!r}),\n"
        f"    launch_arguments={arguments!r}.items())]))\n"
        "sys.exit(service.run())\n"
    )
    log = (tmp_path / "launch.log").open("wb")
    launch = subprocess.Popen(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        client = driver.node.create_client(GetState, "/clifer_edge/get_state")

        def active() -> bool:
            if launch.poll() is not None or not client.service_is_ready():
                return False
            future = client.call_async(GetState.Request())
            driver.spin_until(future.done, 5.0)
            return future.done() and future.result().current_state.id == State.PRIMARY_STATE_ACTIVE

        assert driver.spin_until(active, STARTUP_S, period=1.0), (
            tmp_path / "launch.log"
        ).read_text()
        expressions = driver.collect(Expression, "/clifer_edge/expressions")
        pub = driver.node.create_publisher(Image, "/launch_cam/image", 10)
        photo = _photos(jaffe, 1)[0]
        assert driver.spin_until(
            lambda: bool(expressions),
            30.0,
            every=lambda: pub.publish(image_msg(photo, driver.node.get_clock().now().to_msg())),
        )
    finally:
        launch.send_signal(signal.SIGINT)
        try:
            # Saving the memories and leaving DDS took over 30 s once on a loaded 2-core CI run.
            launch.wait(90)
        except subprocess.TimeoutExpired:
            launch.kill()
            launch.wait()
    text = (tmp_path / "launch.log").read_text()
    assert "memories saved" in text, text
