"""``clifer_edge_node``: personalised expression recognition on a ROS 2 robot.

The node wraps :class:`clifer_edge.runtime.ExpressionRuntime` and follows ROS4HRI (REP-155):

- ``mode: ros4hri`` reads the aligned (or cropped) face images that a ROS4HRI face pipeline
  publishes on ``/humans/faces/<face_id>/aligned``; the faces are listed by
  ``/humans/faces/tracked`` (``hri_msgs/IdsList``) when hri_msgs is installed, otherwise found
  in the ROS graph. Persistent person ids, which key the memories, come from
  ``/humans/persons/<person_id>/face_id``.
- ``mode: camera`` subscribes to one ``sensor_msgs/Image`` (and optionally a
  ``sensor_msgs/CompressedImage``) topic and detects faces itself.

Each face's expression goes to ``/humans/faces/<face_id>/expression`` as ``clifer_msgs/Expression``;
on a robot with hri_msgs installed that REP-155 topic carries ``hri_msgs/Expression`` instead (so
ROS4HRI consumers work unchanged) and the clifer message moves to ``.../clifer_expression``. Every
face also goes to ``~/expressions`` (``clifer_msgs/Expression``, the one topic to subscribe to).
Services ``~/teach``, ``~/forget`` and ``~/save`` manage the memories; ``/diagnostics`` reports
rates, latency, memories and the idle/imagining state; ``~/data_notice`` (latched) says what is
stored, where and why.

Threads: images are processed in one callback group, imagination runs in its own group during idle
time, services and diagnostics in a third, on a multi-threaded executor. The runtime is thread-safe
and preemptible: an arriving face stops an imagination chunk in progress at its next step, so the
image never waits for a whole chunk.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, Header, String

from clifer_edge.labels import canonical_label
from clifer_edge.ros.conversions import (
    BadImageMessage,
    compressed_to_array,
    expression_fields,
    image_to_array,
    is_valid_id,
)

try:  # The interface package is built by colcon (ros2_ws/build_msgs.sh on development machines).
    from clifer_msgs.msg import Expression
    from clifer_msgs.srv import Forget, SaveMemories, Teach
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "clifer_msgs is not importable: build it with `ros2_ws/build_msgs.sh` (or `colcon build` "
        "in ros2_ws/) and source ros2_ws/install/setup.bash"
    ) from error

try:  # ROS4HRI messages: on robots with ROS4HRI installed (not on PyPI).
    from hri_msgs.msg import Expression as HriExpression
    from hri_msgs.msg import IdsList
except ImportError:
    HriExpression = None
    IdsList = None

NODE_NAME = "clifer_edge"
MODES = ("camera", "ros4hri")
FACE_IMAGES = ("aligned", "cropped")

#: Latched, reliable: late subscribers still receive the last message (ROS4HRI person -> face ids,
#: the data-processing notice).
LATCHED_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
#: Camera frames and face crops: best effort, keep only the newest, so stale frames are dropped.
IMAGE_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=qos_profile_sensor_data.reliability,
    durability=DurabilityPolicy.VOLATILE,
)


class Param(NamedTuple):
    """One declared ROS parameter: default, description, whether it can change while running, and
    the inclusive range of a number (rclpy enforces it; choices are checked by the node)."""

    default: Any
    description: str
    dynamic: bool = False
    low: float | None = None
    high: float | None = None

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(description=self.description, read_only=not self.dynamic)
        if self.low is not None and isinstance(self.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=self.low, to_value=self.high, step=0.0)
            ]
        elif self.low is not None:
            descriptor.integer_range = [
                IntegerRange(from_value=int(self.low), to_value=int(self.high), step=1)
            ]
        return descriptor


# fmt: off
#: The node's parameters (defaults as in config/clifer_edge.yaml).
PARAMETERS: dict[str, Param] = {
    "mode": Param("camera", "Input: 'camera' (detect faces in camera_topic) or 'ros4hri' "
                  "(aligned faces from a ROS4HRI pipeline)."),
    "camera_topic": Param("/camera/image_raw", "camera mode: sensor_msgs/Image topic."),
    "compressed_topic": Param("", "camera mode: sensor_msgs/CompressedImage topic ('' = none)."),
    "camera_person_id": Param("", "camera mode: person id of every face ('' = the runtime's "
                              "persons.mode decides)."),
    "face_image": Param("aligned", "ros4hri mode: face image to read: 'aligned' or 'cropped'."),
    "runtime_config": Param("", "Runtime YAML file (clifer_edge.runtime); '' = the default."),
    "memory_dir": Param("", "Directory of the persons' memories; '' = the runtime config's."),
    "idle_topic": Param("", "std_msgs/Bool topic of the behaviour layer: true = robot idle, "
                        "false = busy ('' = no-face timeout only)."),
    "idle_timeout_s": Param(10.0, "Seconds without faces after which the robot counts as idle.",
                            True, 0.5, 3600.0),
    "imagination_enabled": Param(True, "Imagine unseen expressions during idle time.", True),
    "imagination_budget_s": Param(0.2, "Imagination time per timer tick (s); an arriving face "
                                  "stops it after the step in progress.", True, 0.01, 5.0),
    "imagination_period_s": Param(1.0, "Seconds between imagination ticks while idle.",
                                  False, 0.05, 600.0),
    "max_image_side": Param(4096, "Larger images are refused (protects the robot's memory).",
                            True, 16, 16384),
    "diagnostics_period_s": Param(1.0, "Seconds between /diagnostics messages.", False, 0.1, 60.0),
    "autosave_period_s": Param(300.0, "Seconds between automatic saves of the memories (0 = only "
                               "on shutdown and ~/save).", False, 0.0, 86400.0),
    "graph_poll_period_s": Param(0.5, "ros4hri mode without hri_msgs: seconds between scans of "
                                 "the ROS graph for face topics.", False, 0.05, 60.0),
    "max_faces": Param(32, "Face topics and publishers kept at once (least recently seen "
                       "dropped).", False, 1, 1024),
}
# fmt: on


@dataclass
class _Stats:
    """Counters for /diagnostics (written by the image callback group, read by diagnostics)."""

    received: int = 0
    processed: int = 0
    bad: int = 0
    errors: int = 0
    faces: int = 0
    last_error: str = ""
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=300))
    stamps: deque = field(default_factory=lambda: deque(maxlen=300))


class ExpressionNode(Node):
    """ROS 2 node around :class:`~clifer_edge.runtime.ExpressionRuntime` (see module docstring).

    Raises
    ------
    RuntimeError
        At construction, when the runtime configuration or the models cannot be loaded (the message
        says what to do).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, param in PARAMETERS.items():
            self.declare_parameter(name, param.default, param.descriptor())
        problems = [
            reason
            for name in PARAMETERS
            if (reason := _check_parameter(name, self.get_parameter(name).value))
        ]
        if problems:
            raise RuntimeError("invalid parameters: " + "; ".join(problems))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._p = {name: self.get_parameter(name).value for name in PARAMETERS}

        self._runtime = self._load_runtime()
        self._stats = _Stats()
        self._last_face_time = time.monotonic()
        self._idle_signal: bool | None = None
        self._imagining = False
        self._imagination_calls = 0
        self._closed = False
        self._error_logged: dict[str, float] = {}
        self._failures_reported = 0

        self._images_group = MutuallyExclusiveCallbackGroup()
        self._imagination_group = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()

        self._expressions_pub = self.create_publisher(Expression, "~/expressions", 10)
        self._face_pubs: dict[str, tuple[Any, Any]] = {}
        self._face_seen: dict[str, float] = {}
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._notice_pub = self.create_publisher(String, "~/data_notice", LATCHED_QOS)

        self._face_subs: dict[str, Any] = {}
        self._person_subs: dict[str, Any] = {}
        self._face_to_person: dict[str, str] = {}
        if self._p["mode"] == "camera":
            self._setup_camera()
        else:
            self._setup_ros4hri()

        if self._p["idle_topic"]:
            self.create_subscription(
                Bool,
                self._p["idle_topic"],
                self._on_idle,
                10,
                callback_group=self._control_group,
            )
        self.create_service(Teach, "~/teach", self._on_teach, callback_group=self._control_group)
        self.create_service(Forget, "~/forget", self._on_forget, callback_group=self._control_group)
        self.create_service(
            SaveMemories, "~/save", self._on_save, callback_group=self._control_group
        )
        self.create_timer(
            self._p["imagination_period_s"],
            self._on_imagination_timer,
            callback_group=self._imagination_group,
        )
        self.create_timer(
            self._p["diagnostics_period_s"],
            self._publish_diagnostics,
            callback_group=self._control_group,
        )
        if self._p["autosave_period_s"] > 0:
            self.create_timer(
                self._p["autosave_period_s"], self._autosave, callback_group=self._control_group
            )
        self._notice_pub.publish(String(data=self._data_notice()))
        self.get_logger().info(
            f"ready: mode={self._p['mode']}, memories in {self._memory_dir}, "
            f"hri_msgs {'found' if HriExpression is not None else 'not installed'}"
        )

    # ------------------------------------------------------------------ start-up
    def _load_runtime(self) -> Any:
        """Load the runtime configuration and the models, or fail with what to do."""
        from clifer_edge.runtime import ExpressionRuntime, load_config

        config_path = self._p["runtime_config"] or None
        try:
            config = load_config(config_path)
            if self._p["memory_dir"]:
                config = config.replace(memory={"directory": self._p["memory_dir"]})
        except ValueError as error:
            raise RuntimeError(f"runtime config {config_path or '(default)'}: {error}") from None
        self._memory_dir = config.memory_directory()
        try:
            return ExpressionRuntime(config)
        except (OSError, ValueError) as error:
            hint = (
                " Model files missing or damaged? Have you run clifer-export? Point "
                "models.directory of the runtime config (parameter runtime_config) at its "
                "output, or reinstall clifer-edge for the bundled default models."
            )
            if "clifer-export" in str(error):
                hint = ""
            raise RuntimeError(f"cannot start the expression runtime: {error}.{hint}") from None

    def _setup_camera(self) -> None:
        self.create_subscription(
            Image,
            self._p["camera_topic"],
            self._on_camera_image,
            IMAGE_QOS,
            callback_group=self._images_group,
        )
        if self._p["compressed_topic"]:
            self.create_subscription(
                CompressedImage,
                self._p["compressed_topic"],
                self._on_camera_compressed,
                IMAGE_QOS,
                callback_group=self._images_group,
            )

    def _setup_ros4hri(self) -> None:
        if IdsList is not None:
            self.create_subscription(
                IdsList,
                "/humans/faces/tracked",
                self._on_tracked_faces,
                1,
                callback_group=self._control_group,
            )
            self.create_subscription(
                IdsList,
                "/humans/persons/tracked",
                self._on_tracked_persons,
                1,
                callback_group=self._control_group,
            )
        else:
            self.get_logger().info(
                "hri_msgs not installed: finding /humans/faces/<id>/"
                f"{self._p['face_image']} and /humans/persons/<id>/face_id in the ROS graph"
            )
            self.create_timer(
                self._p["graph_poll_period_s"], self._poll_graph, callback_group=self._control_group
            )

    # ------------------------------------------------------------------ ROS4HRI bookkeeping
    def _on_tracked_faces(self, msg: Any) -> None:
        self._track_faces(list(msg.ids))

    def _on_tracked_persons(self, msg: Any) -> None:
        self._track_persons(list(msg.ids))

    def _poll_graph(self) -> None:
        """Without hri_msgs: the face and person ids are the ones that have topics."""
        suffix = "/" + self._p["face_image"]
        faces, persons = [], []
        for name, _types in self.get_topic_names_and_types():
            parts = name.split("/")
            if (
                len(parts) == 5
                and parts[1] == "humans"
                and "/" + parts[4] == suffix
                and parts[2] == "faces"
                and self.count_publishers(name) > 0
            ):
                faces.append(parts[3])
            elif (
                len(parts) == 5
                and parts[1:3] == ["humans", "persons"]
                and parts[4] == "face_id"
                and self.count_publishers(name) > 0
            ):
                persons.append(parts[3])
        self._track_faces(faces)
        self._track_persons(persons)

    def _valid_ids(self, ids: list[str], kind: str) -> list[str]:
        """The ids usable in topic names; the others are logged (once a second each) and skipped."""
        for bad in (i for i in ids if not is_valid_id(i)):
            self._log_error(f"ignoring {kind} id {bad!r}: not a valid ROS4HRI id ([A-Za-z]\\w*)")
        return [i for i in ids if is_valid_id(i)]

    def _track_faces(self, ids: list[str]) -> None:
        wanted = self._valid_ids(ids, "face")[: self._p["max_faces"]]
        for face_id in set(self._face_subs) - set(wanted):
            self.destroy_subscription(self._face_subs.pop(face_id))
        for face_id in wanted:
            if face_id not in self._face_subs:
                topic = f"/humans/faces/{face_id}/{self._p['face_image']}"
                self._face_subs[face_id] = self.create_subscription(
                    Image,
                    topic,
                    lambda msg, f=face_id: self._on_face_image(msg, f),
                    IMAGE_QOS,
                    callback_group=self._images_group,
                )

    def _track_persons(self, ids: list[str]) -> None:
        wanted = self._valid_ids(ids, "person")
        for person_id in set(self._person_subs) - set(wanted):
            self.destroy_subscription(self._person_subs.pop(person_id))
        for person_id in wanted:
            if person_id not in self._person_subs:
                self._person_subs[person_id] = self.create_subscription(
                    String,
                    f"/humans/persons/{person_id}/face_id",
                    lambda msg, p=person_id: self._on_person_face(msg, p),
                    LATCHED_QOS,
                    callback_group=self._control_group,
                )

    def _on_person_face(self, msg: String, person_id: str) -> None:
        """A person's current face id (ROS4HRI); an empty id means the person is not seen now."""
        for face_id, known in list(self._face_to_person.items()):
            if known == person_id and face_id != msg.data:
                del self._face_to_person[face_id]
        if msg.data and not self._valid_ids([msg.data], f"face (of person {person_id!r})"):
            return
        if msg.data:
            self._face_to_person[msg.data] = person_id

    # ------------------------------------------------------------------ images
    def _on_camera_image(self, msg: Image) -> None:
        self._handle(msg, lambda: image_to_array(msg, self._p["max_image_side"]), None)

    def _on_camera_compressed(self, msg: CompressedImage) -> None:
        self._handle(msg, lambda: compressed_to_array(msg, self._p["max_image_side"]), None)

    def _on_face_image(self, msg: Image, face_id: str) -> None:
        self._handle(msg, lambda: image_to_array(msg, self._p["max_image_side"]), face_id)

    def _handle(self, msg: Any, decode: Any, face_id: str | None) -> None:
        """Decode, run the runtime, publish; a bad message is logged and counted, never fatal."""
        self._stats.received += 1
        try:
            image, color_order = decode()
        except BadImageMessage as error:
            self._stats.bad += 1
            self._stats.last_error = f"bad image on {face_id or 'camera'}: {error}"
            self._log_error(self._stats.last_error)
            return
        try:
            if face_id is None:
                person = self._p["camera_person_id"] or None
                results = self._runtime.process_frame(
                    image, person_id=person, color_order=color_order
                )
                pairs = [(f"face{i}", r) for i, r in enumerate(results)]
            else:
                person = self._face_to_person.get(face_id)
                result = self._runtime.process_face(
                    image, person_id=person, color_order=color_order
                )
                pairs = [(face_id, result)]
        except ValueError as error:  # InvalidImageError and friends: the image, not the node
            self._stats.errors += 1
            self._stats.last_error = f"cannot process image on {face_id or 'camera'}: {error}"
            self._log_error(self._stats.last_error)
            return
        if pairs:  # camera frames without a face do not end idle time
            self._last_face_time = time.monotonic()
        for face, result in pairs:
            self._publish_expression(msg.header, face, result)
        self._stats.processed += 1
        self._stats.faces += len(pairs)
        now = self.get_clock().now()
        stamp = Time.from_msg(msg.header.stamp)
        if msg.header.stamp.sec or msg.header.stamp.nanosec:
            self._stats.latencies_ms.append((now - stamp).nanoseconds / 1e6)
        self._stats.stamps.append(time.monotonic())

    def _log_error(self, text: str) -> None:
        """Log an input error; the same error text at most once a second.

        (rclpy's own throttling is per call site, so one bad stream would hide a different error.)
        """
        now = time.monotonic()
        if now - self._error_logged.get(text, -1e9) >= 1.0:
            if len(self._error_logged) > 256:
                self._error_logged.clear()
            self._error_logged[text] = now
            self.get_logger().error(text)

    def _publish_expression(self, header: Any, face_id: str, result: Any) -> None:
        fields = expression_fields(result, face_id)
        msg = Expression(header=header, **fields)
        self._expressions_pub.publish(msg)
        clifer_pub, hri_pub = self._face_publishers(face_id)
        clifer_pub.publish(msg)
        if hri_pub is not None:
            hri_pub.publish(
                HriExpression(
                    header=header,
                    expression=msg.expression,
                    valence=msg.valence,
                    arousal=msg.arousal,
                    confidence=msg.confidence,
                )
            )

    def _face_publishers(self, face_id: str) -> tuple[Any, Any]:
        """Per-face publishers, created on first use; the least recently used are dropped."""
        self._face_seen[face_id] = time.monotonic()
        if face_id not in self._face_pubs:
            while len(self._face_pubs) >= self._p["max_faces"]:
                oldest = min(self._face_pubs, key=lambda f: self._face_seen.get(f, 0.0))
                for pub in self._face_pubs.pop(oldest):
                    if pub is not None:
                        self.destroy_publisher(pub)
                self._face_seen.pop(oldest, None)
            base = f"/humans/faces/{face_id}"
            if HriExpression is not None:
                pubs = (
                    self.create_publisher(Expression, f"{base}/clifer_expression", 10),
                    self.create_publisher(HriExpression, f"{base}/expression", 10),
                )
            else:
                pubs = (self.create_publisher(Expression, f"{base}/expression", 10), None)
            self._face_pubs[face_id] = pubs
        return self._face_pubs[face_id]

    # ------------------------------------------------------------------ idle and imagination
    def _on_idle(self, msg: Bool) -> None:
        self._idle_signal = bool(msg.data)

    def is_idle(self) -> bool:
        """Idle: no face for ``idle_timeout_s``, and no busy signal."""
        quiet = time.monotonic() - self._last_face_time >= self._p["idle_timeout_s"]
        return quiet and self._idle_signal is not False

    def _on_imagination_timer(self) -> None:
        idle = self.is_idle()
        # The node decides: False also restarts the runtime's own idle timer.
        self._runtime.set_idle(idle)
        if not (idle and self._p["imagination_enabled"]):
            return
        self._imagining = True
        try:
            report = self._runtime.imagine(self._p["imagination_budget_s"])
        finally:
            self._imagining = False
        if report is not None:
            self._imagination_calls += 1
            self.get_logger().debug(f"imagination: {report}")

    # ------------------------------------------------------------------ services
    def _on_teach(self, request: Teach.Request, response: Teach.Response) -> Teach.Response:
        try:
            label = canonical_label(request.label)
            learned = self._runtime.teach(
                request.person_id, label, n_recent=request.n_recent or None
            )
        except (KeyError, ValueError) as error:
            response.success, response.learned = False, 0
            response.message = f"cannot teach {request.label!r} to {request.person_id!r}: {error}"
            self.get_logger().warning(response.message)
            return response
        response.learned = int(learned)
        response.success = learned > 0
        response.message = (
            f"learned {learned} faces of {request.person_id!r} as {label!r}"
            if learned
            else f"no recent faces of {request.person_id!r} to learn"
        )
        self.get_logger().info(response.message)
        return response

    def _on_forget(self, request: Forget.Request, response: Forget.Response) -> Forget.Response:
        try:
            forgotten = self._runtime.forget(request.person_id)
        except ValueError as error:
            response.success, response.message = False, f"cannot forget: {error}"
            return response
        response.success = bool(forgotten)
        response.message = (
            f"forgot {request.person_id!r}: memory and files deleted"
            if forgotten
            else f"nothing stored for {request.person_id!r}"
        )
        self.get_logger().info(response.message)
        return response

    def _on_save(
        self, request: SaveMemories.Request, response: SaveMemories.Response
    ) -> SaveMemories.Response:
        try:
            self._runtime.save()
        except OSError as error:
            response.success, response.message = False, f"saving failed: {error}"
            self.get_logger().error(response.message)
            return response
        response.success, response.message = True, f"memories saved to {self._memory_dir}"
        return response

    def _autosave(self) -> None:
        try:
            self._runtime.save()
        except OSError as error:
            self.get_logger().error(f"autosave failed: {error}")

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Refuse invalid values with a reason (ranges are also checked by rclpy itself)."""
        for param in params:
            if param.name not in PARAMETERS:
                continue
            reason = _check_parameter(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        for param in params:
            if param.name in PARAMETERS:
                self._p[param.name] = param.value
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        stats = self._stats
        now = time.monotonic()
        recent = [t for t in stats.stamps if now - t <= 5.0]
        rate = (
            (len(recent) - 1) / (recent[-1] - recent[0])
            if len(recent) > 1 and recent[-1] > recent[0]
            else 0.0
        )
        latencies = np.asarray(stats.latencies_ms, dtype=float)
        values = {
            "mode": self._p["mode"],
            "frames received": stats.received,
            "frames processed": stats.processed,
            "bad messages": stats.bad,
            "processing errors": stats.errors,
            "faces published": stats.faces,
            "rate (Hz)": f"{rate:.2f}",
            "latency p50 (ms)": f"{np.percentile(latencies, 50):.1f}" if latencies.size else "",
            "latency p99 (ms)": f"{np.percentile(latencies, 99):.1f}" if latencies.size else "",
            "idle": self.is_idle(),
            "imagining": self._imagining,
            "imagination calls": self._imagination_calls,
            "tracked faces": len(self._face_subs) or len(self._face_pubs),
            "last error": stats.last_error,
        }
        values.update(_flatten(self._runtime.stats(), "runtime"))
        # WARN while bad input keeps arriving (since the previous report), OK once it stops.
        failures = stats.errors + stats.bad
        level, message = DiagnosticStatus.OK, "running"
        if failures > self._failures_reported:
            level, message = DiagnosticStatus.WARN, stats.last_error
        self._failures_reported = failures
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: expression recognition",
            message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        self._diag_pub.publish(DiagnosticArray(header=_header(self), status=[status]))

    def _data_notice(self) -> str:
        return (
            "clifer-edge data processing notice. Purpose: recognise the facial expressions of the "
            "people this robot interacts with, personalised to each person. Processed: face images "
            "from the camera or ROS4HRI, in memory only; images are not stored unless the runtime "
            "config sets memory.store_faces. Stored: per person, a memory of encoded face features "
            "(latent vectors, not images) with expression labels, keyed by the person id, in "
            f"{self._memory_dir}. Nothing leaves the robot. Retention: until deleted; delete one "
            f"person with the service {self.resolve_service_name('~/forget')} (files removed), "
            "or delete the directory."
        )

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Save every memory and release the runtime (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._runtime.save()
            self.get_logger().info(f"memories saved to {self._memory_dir}")
        finally:
            self._runtime.close()


def _check_parameter(name: str, value: Any) -> str:
    """The reason ``value`` is invalid for parameter ``name``, or ``""``."""
    if name == "mode" and value not in MODES:
        return f"mode={value!r} should be one of {list(MODES)}"
    if name == "face_image" and value not in FACE_IMAGES:
        return f"face_image={value!r} should be one of {list(FACE_IMAGES)}"
    if name == "runtime_config" and value and not Path(value).expanduser().is_file():
        return f"runtime_config={value!r}: no such file"
    if name == "camera_person_id" and value and not is_valid_id(value):
        return f"camera_person_id={value!r} should match [A-Za-z][A-Za-z0-9_]*"
    if (
        name in ("camera_topic", "compressed_topic", "idle_topic")
        and value
        and not str(value).startswith(("/", "~"))
        and not str(value)[:1].isalpha()
    ):
        return f"{name}={value!r} is not a valid topic name"
    return ""


def _flatten(data: Any, prefix: str) -> dict[str, str]:
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: str(data)}


def _header(node: Node) -> Header:
    return Header(stamp=node.get_clock().now().to_msg())


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C, SIGTERM or ROS shutdown; save the memories on the way out.

    rclpy's own signal handlers would shut the context down before the memories are saved (and the
    save could no longer be logged), so SIGINT and SIGTERM raise KeyboardInterrupt here instead.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    # Also SIGINT: a process started in the background by a shell inherits SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    try:
        node = ExpressionNode()
    except RuntimeError as error:
        get_logger(NODE_NAME).fatal(str(error))
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()  # waits for callbacks in flight, e.g. an imagination chunk
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
