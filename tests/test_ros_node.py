"""The ROS 2 node end to end over real DDS: real CK+ faces in, expressions out, services, errors.

The node runs as its own process (started with a params file, as on a robot); this test process
publishes faces and calls services like any other ROS node would. Skipped only when rclpy cannot
be imported at all.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ros_support import (
    Driver,
    NodeProcess,
    RosEnv,
    camera_frame,
    faces_of,
    image_msg,
    prepare_ros_env,
    rclpy_missing_reason,
)

pytestmark = pytest.mark.skipif(bool(rclpy_missing_reason()), reason=rclpy_missing_reason())

CAMERA_SUBJECT = "S011"
HRI_SUBJECT = "S014"
STARTUP_S = 60.0  # first start imports numpy, OpenCV and LiteRT on a loaded 2-core machine
CAM_EXPRESSIONS = "/clifer_cam/expressions"
HRI_CONSTANTS = ("neutral", "happy", "surprised", "angry", "scared", "sad", "disgusted")


@pytest.fixture(scope="module")
def ros(data_dir: Path) -> RosEnv:
    return prepare_ros_env(data_dir)


@pytest.fixture(scope="module")
def memory_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One memory directory for all nodes of this module (each test uses its own persons), so
    that the runtime's latent calibration is built (or found) once."""
    return tmp_path_factory.mktemp("memories")


@pytest.fixture(scope="module")
def ckplus(data_dir: Path) -> dict[str, np.ndarray]:
    with np.load(data_dir / "ckplus48.npz") as data:
        return {key: data[key] for key in ("images", "labels", "subjects")}


@pytest.fixture(scope="module")
def driver(ros: RosEnv) -> Iterator[Driver]:
    drv = Driver()
    yield drv
    drv.close()


def runtime_yaml(tmp: Path, idle_timeout_s: float = 30.0, **sections: Any) -> str:
    """A runtime config file (idle time is the runtime's to decide)."""
    import yaml

    path = tmp / f"runtime_{len(list(tmp.glob('runtime_*.yaml')))}.yaml"
    config = {"imagination": {"idle_timeout_s": idle_timeout_s}, **sections}
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _node(ros: RosEnv, tmp: Path, memory_dir: Path, name: str, **params: Any) -> NodeProcess:
    base = {
        "memory_dir": str(memory_dir),
        "diagnostics_period_s": 0.2,
    }
    if "runtime_config" not in params:
        base["runtime_config"] = runtime_yaml(tmp)
    return NodeProcess(name, {**base, **params}, tmp, ros).start()


def _wait_ready(driver: Driver, node: NodeProcess) -> None:
    from clifer_msgs.srv import SaveMemories

    client = driver.node.create_client(SaveMemories, f"/{node.name}/save")
    try:
        ready = driver.spin_until(lambda: client.service_is_ready() or not node.alive(), STARTUP_S)
    finally:
        driver.node.destroy_client(client)
    assert node.alive(), f"node {node.name} exited:\n{node.log()}"
    assert ready, f"node {node.name} not ready after {STARTUP_S} s:\n{node.log()}"


@pytest.fixture(scope="module")
def camera_node(
    ros: RosEnv, driver: Driver, memory_dir: Path, tmp_path_factory: pytest.TempPathFactory
):
    node = _node(
        ros,
        tmp_path_factory.mktemp("camera"),
        memory_dir,
        "clifer_cam",
        mode="camera",
        camera_topic="/test_cam/image",
        compressed_topic="/test_cam/image/compressed",
        camera_person_id="alice",
        max_image_side=2048,
    )
    _wait_ready(driver, node)
    yield node
    node.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def hri_node(
    ros: RosEnv, driver: Driver, memory_dir: Path, tmp_path_factory: pytest.TempPathFactory
):
    node = _node(ros, tmp_path_factory.mktemp("hri"), memory_dir, "clifer_hri", mode="ros4hri")
    _wait_ready(driver, node)
    yield node
    node.stop(signal.SIGKILL)


class FaceSender:
    """Publishes one face image repeatedly until the node's Expression for it comes back."""

    def __init__(
        self,
        driver: Driver,
        image_topic: str,
        expression_topic: str,
        node: NodeProcess | None = None,
        world: Ros4hriWorld | None = None,
    ) -> None:
        """``expression_topic``: the node's ``~/expressions`` (clifer_msgs/Expression); with
        ``node``, a face left unanswered reports the node's last diagnostics and log; with
        ``world``, its tracked lists are published again with every resend (another node's
        latched list may reach the node under test late: see :meth:`Ros4hriWorld.track`)."""
        from clifer_msgs.msg import Expression
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        self.driver = driver
        self.pub = driver.node.create_publisher(Image, image_topic, qos_profile_sensor_data)
        self.expressions = driver.collect(Expression, expression_topic)
        self.node = node
        self.world = world
        self.diagnostics = _diagnostics_of(driver, node.name) if node is not None else None

    def send(self, image: np.ndarray, encoding: str | None = None, timeout: float = 30.0) -> Any:
        stamp = self.driver.node.get_clock().now().to_msg()
        msg = image_msg(image, stamp, encoding)

        def answered() -> Any:
            return next((e for e in self.expressions if e.header.stamp == stamp), None)

        def resend() -> None:
            if self.world is not None:
                self.world.republish()
            self.pub.publish(msg)

        ok = self.driver.spin_until(lambda: answered() is not None, timeout, every=resend)
        assert ok, f"no Expression for the face sent at {stamp}" + self._state()
        return answered()

    def _state(self) -> str:
        if self.node is None:
            return ""
        return (
            f"; node {'alive' if self.node.alive() else 'exited'}, last diagnostics "
            f"{self.diagnostics()}, log:\n{self.node.log()[-3000:]}"
        )

    def send_raw(self, msg: Any) -> None:
        self.pub.publish(msg)


def _teach(driver: Driver, node: str, person: str, label: str, n: int) -> Any:
    from clifer_msgs.srv import Teach

    return driver.call(
        Teach, f"/{node}/teach", Teach.Request(person_id=person, label=label, n_recent=n)
    )


# ----------------------------------------------------------------------------- camera mode
def test_camera_faces_give_expressions_with_person_and_face_ids(camera_node, driver, ckplus):
    from hri_msgs.msg import Expression as HriExpression

    from clifer_edge.ros.conversions import is_valid_id

    sender = FaceSender(driver, "/test_cam/image", CAM_EXPRESSIONS, camera_node)
    face = faces_of(ckplus, CAMERA_SUBJECT, "happiness")[0]
    grey = sender.send(camera_frame(face))
    rgb = sender.send(np.repeat(camera_frame(face)[:, :, None], 3, axis=2), "rgb8")
    for expression in (grey, rgb):
        assert expression.person_id == "alice"
        assert is_valid_id(expression.face_id)
        assert expression.header.frame_id == "camera"
        assert 0.0 <= expression.confidence <= 1.0
        assert -1.0 <= expression.valence <= 1.0 and -1.0 <= expression.arousal <= 1.0
        assert len(expression.labels) == len(expression.scores) >= 1
        assert expression.memory in ("episodic", "semantic", "fallback")
        assert expression.label in expression.labels
    # Its REP-155 topic carries hri_msgs/Expression while the face stays in view (a steady
    # stream: a pause longer than faces.lost_after_s ends the track, and the id with it).
    answer = sender.send(camera_frame(face))
    hri = driver.collect(HriExpression, f"/humans/faces/{answer.face_id}/expression")
    frame = camera_frame(face)
    assert driver.spin_until(
        lambda: bool(hri),
        10.0,
        every=lambda: sender.send_raw(image_msg(frame, driver.node.get_clock().now().to_msg())),
        period=0.1,
    )
    assert hri[-1].expression in ("", *HRI_CONSTANTS)


def test_compressed_camera_images_are_decoded(camera_node, driver, ckplus):
    import cv2
    from clifer_msgs.msg import Expression
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    pub = driver.node.create_publisher(
        CompressedImage, "/test_cam/image/compressed", qos_profile_sensor_data
    )
    expressions = driver.collect(Expression, CAM_EXPRESSIONS)
    frame = camera_frame(faces_of(ckplus, CAMERA_SUBJECT, "surprise")[0])
    msg = CompressedImage(format="png", data=cv2.imencode(".png", frame)[1].tobytes())
    msg.header.stamp = driver.node.get_clock().now().to_msg()
    assert driver.spin_until(
        lambda: any(e.header.stamp == msg.header.stamp for e in expressions),
        30.0,
        every=lambda: pub.publish(msg),
    ), "no Expression for a PNG CompressedImage"


def test_teach_then_the_taught_labels_come_back(camera_node, driver, ckplus):
    sender = FaceSender(driver, "/test_cam/image", CAM_EXPRESSIONS, camera_node)
    happy = faces_of(ckplus, CAMERA_SUBJECT, "happiness")
    surprised = faces_of(ckplus, CAMERA_SUBJECT, "surprise")

    for face in happy:
        sender.send(camera_frame(face))
    response = _teach(driver, "clifer_cam", "alice", "happy", len(happy))
    assert response.success, response.message
    assert response.learned == len(happy)

    # A label never seen before: taught from the latest faces, which are the surprised ones.
    for face in surprised:
        sender.send(camera_frame(face))
    response = _teach(driver, "clifer_cam", "alice", "wink", len(surprised))
    assert response.success, response.message
    assert response.learned == len(surprised)

    answer_happy = sender.send(camera_frame(happy[0]))
    answer_wink = sender.send(camera_frame(surprised[0]))
    assert answer_happy.expression == "happy"  # the ROS4HRI constant of "happiness"
    assert answer_happy.label == "happiness"
    assert answer_wink.expression == ""  # no ROS4HRI constant: the hri field stays empty
    assert answer_wink.label == "wink"
    assert {"happiness", "wink"} <= set(answer_wink.labels)
    assert answer_wink.memory in ("episodic", "semantic")
    assert answer_wink.person_id == "alice"


def test_teach_for_unknown_person_fails_cleanly(camera_node, driver):
    response = _teach(driver, "clifer_cam", "nobody_seen", "happy", 3)
    assert not response.success
    assert "nobody_seen" in response.message
    assert camera_node.alive()


@pytest.mark.parametrize("person", ["../../etc", "a/b", "", "x" * 65, "9lives", "bob\n"])
def test_teach_and_forget_refuse_invalid_person_ids(camera_node, driver, person):
    from clifer_msgs.srv import Forget

    response = _teach(driver, "clifer_cam", person, "happy", 3)
    assert not response.success and "not a valid ROS4HRI id" in response.message
    response = driver.call(Forget, "/clifer_cam/forget", Forget.Request(person_id=person))
    assert not response.success and "not a valid ROS4HRI id" in response.message
    assert camera_node.alive()


def _files_of(memory_dir: Path, person: str) -> list[Path]:
    return sorted(p for p in memory_dir.rglob("*") if p.is_file() and person in p.name)


def test_save_writes_and_forget_removes_memory_files(camera_node, driver):
    from clifer_msgs.srv import Forget, SaveMemories

    memory_dir = Path(camera_node.params["memory_dir"])
    response = driver.call(SaveMemories, "/clifer_cam/save", SaveMemories.Request())
    assert response.success, response.message
    assert _files_of(memory_dir, "alice"), f"save wrote nothing for alice to {memory_dir}"

    response = driver.call(Forget, "/clifer_cam/forget", Forget.Request(person_id="alice"))
    assert response.success, response.message
    assert _files_of(memory_dir, "alice") == [], "forget left files behind"

    response = driver.call(Forget, "/clifer_cam/forget", Forget.Request(person_id="alice"))
    assert not response.success  # nothing left to forget


def _bad_messages(driver: Driver) -> list[tuple[str, Any]]:
    stamp = driver.node.get_clock().now().to_msg()
    good = image_msg(np.zeros((64, 64), np.uint8), stamp)
    wrong_encoding = image_msg(np.zeros((64, 64), np.uint8), stamp)
    wrong_encoding.encoding = "yuv422_yuy2"
    step_mismatch = image_msg(np.zeros((64, 64), np.uint8), stamp)
    step_mismatch.step = 80  # data holds 64 bytes per row
    empty = image_msg(np.zeros((64, 64), np.uint8), stamp)
    empty.data = b""
    huge = image_msg(np.zeros((8, 8), np.uint8), stamp)
    huge.width, huge.height, huge.step = 100_000, 8, 100_000  # refused before any copy
    long_step = image_msg(np.zeros((8, 8), np.uint8), stamp)
    long_step.step = 1 << 20  # 1 MiB rows of an 8-pixel image: refused before any copy
    assert good.encoding == "mono8"
    return [
        ("unsupported image encoding", wrong_encoding),
        ("step x height", step_mismatch),
        ("data holds 0 bytes", empty),
        ("exceeds max_image_side", huge),
        ("bytes of padding", long_step),
    ]


def test_bad_images_are_logged_and_the_node_keeps_working(camera_node, driver, ckplus):
    sender = FaceSender(driver, "/test_cam/image", CAM_EXPRESSIONS, camera_node)
    for expected, msg in _bad_messages(driver):
        # Best effort, as cameras publish: sent until the node has read it (a message published
        # before the node has matched this new publisher is lost).
        assert driver.spin_until(
            lambda e=expected: e in camera_node.log(),
            15.0,
            every=lambda m=msg: sender.send_raw(m),
            period=0.5,
        ), f"no error mentioning {expected!r} in the node's log"
        assert camera_node.alive()
        # The next good message is answered.
        sender.send(camera_frame(faces_of(ckplus, CAMERA_SUBJECT, "happiness")[1]))
    # A stamp rclpy cannot turn into a time (negative seconds): answered, no latency, no crash.
    from clifer_msgs.msg import Expression

    frame = camera_frame(faces_of(ckplus, CAMERA_SUBJECT, "happiness")[2])
    negative = image_msg(frame, driver.node.get_clock().now().to_msg())
    negative.header.stamp.sec = -5
    expressions = driver.collect(Expression, CAM_EXPRESSIONS)
    assert driver.spin_until(
        lambda: any(e.header.stamp.sec == -5 for e in expressions),
        20.0,
        every=lambda: sender.send_raw(negative),
    )
    assert camera_node.alive()
    sender.send(camera_frame(faces_of(ckplus, CAMERA_SUBJECT, "happiness")[1]))


def test_diagnostics_report_rates_and_errors(camera_node, driver):
    ours = _diagnostics_of(driver, "clifer_cam")
    assert driver.spin_until(lambda: ours() is not None, 10.0)
    values = ours()
    assert int(values["frames processed"]) > 0
    assert int(values["bad messages"]) >= 5
    # Counted per class of malformed message.
    for kind in ("encoding", "size", "step", "data"):
        assert int(values[f"bad messages: {kind}"]) >= 1, kind
    assert values["idle"] in ("True", "False")
    assert values["lifecycle state"] == "active"
    assert float(values["latency p50 (ms)"]) >= 0.0


def test_data_processing_notice_is_latched(camera_node, driver):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    latched = QoSProfile(
        depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
    )
    notices = driver.collect(String, "/clifer_cam/data_notice", latched)  # subscribed late
    assert driver.spin_until(lambda: bool(notices), 10.0)
    assert camera_node.params["memory_dir"] in notices[0].data
    assert "forget" in notices[0].data


def test_invalid_parameters_are_rejected_with_a_reason(camera_node, driver):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    def set_param(name: str, value: ParameterValue) -> Any:
        request = SetParameters.Request(parameters=[Parameter(name=name, value=value)])
        return driver.call(SetParameters, "/clifer_cam/set_parameters", request).results[0]

    integer = ParameterType.PARAMETER_INTEGER
    result = set_param("max_image_side", ParameterValue(type=integer, integer_value=-5))
    assert not result.successful and result.reason
    result = set_param("max_image_side", ParameterValue(type=integer, integer_value=10**6))
    assert not result.successful and result.reason
    string = ParameterType.PARAMETER_STRING
    result = set_param("mode", ParameterValue(type=string, string_value="sonar"))
    assert not result.successful and result.reason
    result = set_param("max_image_side", ParameterValue(type=integer, integer_value=2048))
    assert result.successful, result.reason
    assert camera_node.alive()


# ----------------------------------------------------------------------------- ROS4HRI mode
def _latched() -> Any:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
    )


class Ros4hriWorld:
    """What a ROS4HRI pipeline (hri_face_detect + hri_person_manager) publishes, latched.

    Its publishers end with the test (:meth:`close`): a latched list left behind would reach the
    next test's node too, in any order with that test's own.
    """

    def __init__(self, driver: Driver) -> None:
        from hri_msgs.msg import IdsList

        self.driver = driver
        self.faces = driver.node.create_publisher(IdsList, "/humans/faces/tracked", _latched())
        self.persons = driver.node.create_publisher(IdsList, "/humans/persons/tracked", _latched())
        self.person_pubs: dict[str, Any] = {}
        self.lists: tuple[list[str], list[str]] | None = None

    def republish(self) -> None:
        """Publish the last tracked lists again (if :meth:`track` published any)."""
        from hri_msgs.msg import IdsList

        if self.lists is not None:
            self.faces.publish(IdsList(ids=self.lists[0]))
            self.persons.publish(IdsList(ids=self.lists[1]))

    def track(self, faces: list[str], persons: list[str], node: str | None = None) -> None:
        """Publish the tracked lists; with ``node``, until its diagnostics count them. Another
        node in the test's domain (the camera-mode node) also publishes ``/humans/faces/tracked``,
        latched: the node under test may take that list after ours, as a robot would, even after
        its diagnostics counted ours (DDS discovery of that node can finish late), so senders
        given this world publish the lists again while they wait."""
        self.lists = (list(faces), list(persons))
        self.republish()
        if node is None:
            return
        latest = _diagnostics_of(self.driver, node)
        counts = (str(len(faces)), str(len(persons)))
        assert self.driver.spin_until(
            lambda: (
                (d := latest()) is not None and (d["tracked faces"], d["tracked persons"]) == counts
            ),
            15.0,
            every=self.republish,
            period=0.5,
        ), f"{node} does not track {faces} and {persons}: {latest()}"

    def person(self, person_id: str, face_id: str = "", **extra: Any) -> None:
        """Publish a person's face id, and ``anonymous=`` / ``alias=`` if given."""
        from std_msgs.msg import Bool, String

        for key, value in {"face_id": face_id, **extra}.items():
            topic = f"/humans/persons/{person_id}/{key}"
            if topic not in self.person_pubs:
                kind = Bool if key == "anonymous" else String
                self.person_pubs[topic] = self.driver.node.create_publisher(kind, topic, _latched())
            msg = Bool(data=value) if key == "anonymous" else String(data=value)
            self.person_pubs[topic].publish(msg)

    def close(self) -> None:
        for pub in (self.faces, self.persons, *self.person_pubs.values()):
            self.driver.node.destroy_publisher(pub)


@pytest.fixture
def world(driver: Driver) -> Iterator[Ros4hriWorld]:
    hri = Ros4hriWorld(driver)
    yield hri
    hri.close()


def _diagnostics_of(driver: Driver, node: str) -> Any:
    from diagnostic_msgs.msg import DiagnosticArray

    arrays = driver.collect(DiagnosticArray, "/diagnostics")
    earlier = len(arrays)  # received before this call: the node's state back then

    def latest() -> dict[str, str] | None:
        for array in reversed(arrays[earlier:]):
            for status in array.status:
                if status.name.startswith(node):
                    return {kv.key: kv.value for kv in status.values}
        return None

    return latest


def test_ros4hri_cropped_faces_use_persistent_person_ids(hri_node, driver, ckplus, world):
    world.person("bob", "fa1")
    world.track(["fa1", "fb2"], ["bob"], node="clifer_hri")

    bob = FaceSender(
        driver, "/humans/faces/fa1/cropped", "/clifer_hri/expressions", hri_node, world
    )
    stranger = FaceSender(
        driver, "/humans/faces/fb2/cropped", "/clifer_hri/expressions", hri_node, world
    )
    happy = faces_of(ckplus, HRI_SUBJECT, "happiness")
    sad = faces_of(ckplus, HRI_SUBJECT, "sadness")

    first = bob.send(happy[0])  # 48x48 mono8 crops, as a ROS4HRI pipeline publishes them
    deadline = time.monotonic() + 20.0
    while first.person_id != "bob" and time.monotonic() < deadline:
        first = bob.send(happy[0])  # the person -> face mapping may arrive after the first face
    assert first.person_id == "bob"
    assert first.face_id == "fa1"

    other = stranger.send(sad[0])
    assert other.face_id == "fb2"
    assert other.person_id != "bob"

    for face in happy:
        bob.send(face)
    response = _teach(driver, "clifer_hri", "bob", "happiness", len(happy))
    assert response.success, response.message
    assert bob.send(happy[1]).expression == "happy"

    # An alias uses its target's memory; an anonymous person is answered but not remembered.
    world.person("robert", "fc3", alias="bob")
    world.person("anon7", "fd4", anonymous=True)
    world.track(["fa1", "fb2", "fc3", "fd4"], ["bob", "robert", "anon7"], node="clifer_hri")
    robert = FaceSender(
        driver, "/humans/faces/fc3/cropped", "/clifer_hri/expressions", hri_node, world
    )
    anon = FaceSender(
        driver, "/humans/faces/fd4/cropped", "/clifer_hri/expressions", hri_node, world
    )
    answer = robert.send(happy[1])
    while answer.person_id != "bob" and time.monotonic() < deadline + 20.0:
        answer = robert.send(happy[1])
    assert answer.person_id == "bob" and answer.memory != "fallback"
    answer = anon.send(happy[1])
    while answer.person_id != "anon7" and time.monotonic() < deadline + 30.0:
        answer = anon.send(happy[1])
    assert answer.person_id == "anon7" and answer.memory == "fallback"
    from clifer_msgs.srv import SaveMemories

    assert driver.call(SaveMemories, "/clifer_hri/save", SaveMemories.Request()).success
    memory_dir = Path(hri_node.params["memory_dir"])
    assert _files_of(memory_dir, "anon7") == [], "an anonymous person was persisted"

    # A person whose face id cannot be a ROS4HRI id: a clear error, and the node carries on.
    world.person("dave", "9 bad/id")
    world.track(["fa1"], ["bob", "dave"], node="clifer_hri")
    assert driver.spin_until(lambda: "'9 bad/id': not a valid ROS4HRI id" in hri_node.log(), 15.0)
    assert bob.send(happy[2]).person_id == "bob"
    assert hri_node.alive()


def test_person_subscriptions_are_bounded(ros, driver, memory_dir, tmp_path, world):
    node = _node(ros, tmp_path, memory_dir, "clifer_many", mode="ros4hri", max_persons=5)
    try:
        _wait_ready(driver, node)
        persons = [f"p{i}" for i in range(40)]
        world.track([], persons)
        latest = _diagnostics_of(driver, "clifer_many")
        assert driver.spin_until(
            lambda: (d := latest()) is not None and d["tracked persons"] == "5",
            15.0,
            every=lambda: world.track([], persons),
            period=0.5,
        ), latest()
        assert "following the first max_persons=5" in node.log()
    finally:
        node.stop(signal.SIGKILL)


# ----------------------------------------------------------------------------- idle time
def test_imagination_runs_only_while_idle_and_faces_still_get_answers(
    ros, driver, ckplus, memory_dir, tmp_path
):
    from std_msgs.msg import Bool

    node = _node(
        ros,
        tmp_path,
        memory_dir,
        "clifer_idle",
        mode="camera",
        camera_topic="/idle_cam/image",
        camera_person_id="erin",
        idle_topic="/test_idle",
        runtime_config=runtime_yaml(tmp_path, imagination={"idle_timeout_s": 0.5, "budget_s": 0.2}),
        imagination_period_s=0.1,
    )
    try:
        _wait_ready(driver, node)
        sender = FaceSender(driver, "/idle_cam/image", "/clifer_idle/expressions", node)
        happy = faces_of(ckplus, CAMERA_SUBJECT, "happiness")
        for face in happy:
            sender.send(camera_frame(face))
        assert _teach(driver, "clifer_idle", "erin", "happy", len(happy)).success
        latest = _diagnostics_of(driver, "clifer_idle")
        idle_pub = driver.node.create_publisher(Bool, "/test_idle", 10)

        # The behaviour layer says busy: no imagination even without faces.
        busy = Bool(data=False)
        assert driver.spin_until(
            lambda: (d := latest()) is not None and d["idle"] == "False",
            10.0,
            every=lambda: idle_pub.publish(busy),
        )
        # A chunk that started before the busy signal may still finish: let it, then count.
        driver.spin_until(lambda: False, 1.0, every=lambda: idle_pub.publish(busy))
        chunks = int(latest()["imagination calls"])
        driver.spin_until(lambda: False, 1.5, every=lambda: idle_pub.publish(busy))
        assert int(latest()["imagination calls"]) == chunks

        # Idle: imagination runs, also while the camera keeps sending frames without faces ...
        idle = Bool(data=True)
        empty_room = np.full((240, 320), 128, np.uint8)

        def idle_and_no_faces() -> None:
            idle_pub.publish(idle)
            sender.send_raw(image_msg(empty_room, driver.node.get_clock().now().to_msg()))

        assert driver.spin_until(
            lambda: int(latest()["imagination calls"]) > chunks,
            30.0,
            every=idle_and_no_faces,
        ), f"no imagination while idle: {latest()}"
        # ... and a face arriving meanwhile is answered, by erin's memory.
        answer = sender.send(camera_frame(happy[0]))
        assert answer.person_id == "erin" and answer.memory != "fallback"
    finally:
        node.stop(signal.SIGINT)
    assert node.process.returncode == 0, node.log()


# ----------------------------------------------------------------------------- shutdown, start-up
def test_sigint_saves_and_a_restarted_node_remembers(ros, driver, ckplus, memory_dir, tmp_path):
    params = {
        "mode": "camera",
        "camera_topic": "/stop_cam/image",
        "camera_person_id": "carol",
        "autosave_period_s": 0.0,
    }
    happy = faces_of(ckplus, CAMERA_SUBJECT, "happiness")
    node = _node(ros, tmp_path, memory_dir, "clifer_stop", **params)
    try:
        _wait_ready(driver, node)
        sender = FaceSender(driver, "/stop_cam/image", "/clifer_stop/expressions", node)
        for face in happy:
            sender.send(camera_frame(face))
        assert _teach(driver, "clifer_stop", "carol", "happy", len(happy)).success
    finally:
        # ros2 launch follows SIGINT with SIGTERM when a node is slow to exit: the second
        # signal must not abort the save.
        node.process.send_signal(signal.SIGINT)
        code = node.stop(signal.SIGTERM)
    assert code == 0, node.log()
    assert "memories saved" in node.log()
    assert _files_of(memory_dir, "carol"), f"nothing saved for carol:\n{node.log()}"

    again = _node(ros, tmp_path, memory_dir, "clifer_stop2", **params)
    try:
        _wait_ready(driver, again)
        sender = FaceSender(driver, "/stop_cam/image", "/clifer_stop2/expressions", again)
        answer = sender.send(camera_frame(happy[0]))
    finally:
        again.stop(signal.SIGTERM)
    assert answer.person_id == "carol"
    assert answer.memory != "fallback", "the restarted node did not load carol's memory"
    assert answer.expression == "happy"
    assert again.process.returncode == 0, again.log()


def test_missing_models_give_a_helpful_error(ros, driver, tmp_path):
    config = tmp_path / "runtime.yaml"
    config.write_text(f"models:\n  directory: {tmp_path / 'no_models_here'}\n")
    node = _node(ros, tmp_path, tmp_path, "clifer_nomodel", runtime_config=str(config))
    code = node.process.wait(STARTUP_S)
    assert code == 1
    assert "clifer-export" in node.log()


def test_bad_runtime_config_path_is_refused(ros, tmp_path):
    missing = str(tmp_path / "missing.yaml")
    node = _node(ros, tmp_path, tmp_path, "clifer_badcfg", runtime_config=missing)
    code = node.process.wait(STARTUP_S)
    assert code == 1
    assert "no such file" in node.log()


def test_shipped_params_file_matches_the_declared_parameters(ros):
    import yaml

    from clifer_edge.ros.node import PARAMETERS

    shipped = yaml.safe_load((Path(__file__).parent.parent / "config/clifer_edge.yaml").read_text())
    values = shipped["/**"]["ros__parameters"]
    assert set(values) == set(PARAMETERS)
    for name, param in PARAMETERS.items():
        assert values[name] == param.default, name
        assert type(values[name]) is type(param.default), name
