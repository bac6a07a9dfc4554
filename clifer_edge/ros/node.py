"""``clifer_edge_node``: personalised expression recognition on a ROS 2 robot, the ROS4HRI way.

A managed (lifecycle) node around :class:`clifer_edge.runtime.ExpressionRuntime`, following
ROS4HRI (REP-155) so that libhri's HRIListener, hri_rviz and hri_visualization see its faces:

- ``mode: camera`` is a ROS4HRI face pipeline: it detects and tracks the faces of one
  ``sensor_msgs/Image`` (or ``CompressedImage``) topic, gives each face a unique id that is never
  reused, and publishes ``/humans/faces/tracked`` (``hri_msgs/IdsList``, latched) and per face
  ``/roi`` (``hri_msgs/NormalizedRegionOfInterest2D``), ``/cropped`` (``sensor_msgs/Image``) and
  ``/expression``. A face that leaves loses its topics within a second.
- ``mode: ros4hri`` follows another face pipeline (e.g. hri_face_detect): the faces listed on
  ``/humans/faces/tracked``, their ``/cropped`` (or ``/aligned``) images, and the persons of
  ``/humans/persons/tracked`` (latched, as hri_person_manager publishes it), whose persistent ids
  key the memories. Anonymous persons are not remembered (unless ``persist_anonymous``); an
  ``alias`` person uses its target's memory.

Each face's expression goes to ``/humans/faces/<face_id>/expression`` as ``hri_msgs/Expression``
(``expression`` is one of its constants or empty, see :func:`~clifer_edge.ros.conversions.
hri_expression`); the full answer (label, scores, person, which memory) goes to ``~/expressions``
(``clifer_msgs/Expression``). ``~/annotated_image`` (computed only while someone subscribes) shows
what the robot recognises. Services ``~/teach``, ``~/forget`` and ``~/save`` manage the memories;
``/diagnostics`` reports rates, latency, malformed messages per class, memories and idle time;
``~/data_notice`` (latched) says what is stored, where and why.

Lifecycle: *configure* loads the runtime and models and creates publishers and services;
*activate* subscribes to the inputs; *deactivate* unsubscribes and retracts the faces; *cleanup*
and *shutdown* save the memories. The launch file drives the transitions; a plain
``clifer-edge-node`` (``autostart: true``) configures and activates itself.

Idle time is the runtime's (one authority, :class:`clifer_edge.runtime.scheduler.
ImaginationScheduler`): the node forwards the behaviour layer's ``idle_topic`` and the faces; the
timeout and the enable switch live in the runtime config. Threads: images in one callback group,
imagination in another, services and diagnostics in a third, on a multi-threaded executor.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
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
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.logging import get_logger
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

from clifer_edge.faces.annotate import FaceAnnotation, draw_faces, to_bgr
from clifer_edge.labels import canonical_label
from clifer_edge.ros.conversions import (
    BadImageMessage,
    compressed_to_array,
    expression_fields,
    image_to_array,
    is_valid_id,
    normalized_roi,
)

try:  # The interface package is built by colcon (ros2_ws/build_msgs.sh on development machines).
    from clifer_msgs.msg import Expression
    from clifer_msgs.srv import Forget, SaveMemories, Teach
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "clifer_msgs is not importable: build it with `ros2_ws/build_msgs.sh` (or `colcon build` "
        "in ros2_ws/) and source ros2_ws/install/setup.bash"
    ) from error
try:  # ROS4HRI: apt on a robot (ros-<distro>-hri-msgs); build_msgs.sh builds the vendored one.
    from hri_msgs.msg import Expression as HriExpression
    from hri_msgs.msg import IdsList, NormalizedRegionOfInterest2D
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "hri_msgs is not importable: install ros-<distro>-hri-msgs, or build it with "
        "`ros2_ws/build_msgs.sh` and source ros2_ws/install/setup.bash"
    ) from error

#: Raised by rclpy for an entity whose destruction was requested (see :func:`main`).
InvalidHandle = rclpy_implementation.InvalidHandle

NODE_NAME = "clifer_edge"
MODES = ("camera", "ros4hri")
FACE_IMAGES = ("cropped", "aligned")
#: Most error lines logged per second per class of error (the rest are only counted).
LOG_LINES_PER_S = 5
#: Longest alias chain followed (person -> alias -> ...); longer ones or cycles are refused.
MAX_ALIAS_DEPTH = 8
#: Longest wait of the spin loop for work (s): how soon a stop signal is acted on.
SPIN_WAIT_S = 0.2

#: Latched, reliable: late subscribers still receive the last message (tracked lists, person ->
#: face ids, the data-processing notice), as hri_person_manager and hri_face_detect publish them.
LATCHED_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
#: Images out (face crops, the live view): reliable, so that both reliable and best-effort
#: subscribers (viewers, ROS4HRI consumers) connect; keep only the newest.
IMAGE_OUT_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
#: Camera frames and face crops in: best effort, keep only the newest, so stale frames are dropped.
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
#: The node's parameters (defaults as in config/clifer_edge.yaml). Idle time and imagination are
#: set in the runtime config (imagination.*), the one place that decides them.
PARAMETERS: dict[str, Param] = {
    "autostart": Param(True, "Configure and activate at start-up (plain runs); the launch file "
                       "sets false and drives the lifecycle itself."),
    "mode": Param("camera", "Input: 'camera' (detect and track faces in camera_topic) or "
                  "'ros4hri' (faces of a ROS4HRI face pipeline)."),
    "camera_topic": Param("/camera/image_raw", "camera mode: sensor_msgs/Image topic."),
    "compressed_topic": Param("", "camera mode: sensor_msgs/CompressedImage topic (PNG/JPEG; "
                              "'' = none)."),
    "camera_person_id": Param("", "camera mode: person id of every face ('' = the runtime's "
                              "persons.mode decides)."),
    "face_image": Param("cropped", "ros4hri mode: face image to read: 'cropped' (REP-155's "
                        "required one) or 'aligned'."),
    "persist_anonymous": Param(False, "ros4hri mode: keep memories of anonymous persons "
                               "(/humans/persons/<id>/anonymous true); false = answer them with "
                               "the person-independent fallback and keep nothing."),
    "runtime_config": Param("", "Runtime YAML file (clifer_edge.runtime); '' = the default."),
    "memory_dir": Param("", "Directory of the persons' memories; '' = the runtime config's."),
    "idle_topic": Param("", "std_msgs/Bool topic of the behaviour layer: true = robot idle, "
                        "false = busy ('' = the runtime's no-face timeout only)."),
    "imagination_period_s": Param(1.0, "Seconds between attempts to imagine (the runtime "
                                  "decides whether the robot is idle).", False, 0.05, 600.0),
    "max_image_side": Param(4096, "Larger images are refused (protects the robot's memory).",
                            True, 16, 16384),
    "diagnostics_period_s": Param(1.0, "Seconds between /diagnostics messages.", False, 0.1, 60.0),
    "autosave_period_s": Param(300.0, "Seconds between automatic saves of the memories (0 = only "
                               "on shutdown and ~/save).", False, 0.0, 86400.0),
    "max_faces": Param(32, "Faces followed (and per-face topics) at once.", False, 1, 1024),
    "max_persons": Param(256, "ros4hri mode: persons followed at once (3 subscriptions each).",
                         False, 1, 4096),
}
# fmt: on


@dataclass
class _Stats:
    """Counters for /diagnostics (written by the image callback group, read by diagnostics)."""

    received: int = 0
    processed: int = 0
    faces: int = 0
    #: Malformed or unprocessable messages per class (BadImageMessage kinds, error types).
    bad: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=300))
    stamps: deque = field(default_factory=lambda: deque(maxlen=300))


@dataclass
class _Person:
    """What ROS4HRI says about one tracked person (ros4hri mode)."""

    subscriptions: list[Any]
    face_id: str = ""
    anonymous: bool = False
    alias: str = ""


@dataclass
class _Face:
    """The per-face topics of one face in view."""

    expression: Any
    roi: Any = None
    cropped: Any = None
    subscription: Any = None


class ExpressionNode(LifecycleNode):
    """Managed ROS 2 node around :class:`~clifer_edge.runtime.ExpressionRuntime` (see the module
    docstring).

    Raises
    ------
    RuntimeError
        At construction, when a parameter is invalid (the message says which and why).
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

        self._runtime: Any = None
        self._tracker: Any = None
        self._memory_dir: Path | None = None
        self._stats = _Stats()
        self._imagining = False
        self._imagination_calls = 0
        self._logged: dict[str, float] = {}
        self._log_window: dict[str, tuple[float, int]] = {}
        self._failures_reported = 0
        self._state = "unconfigured"

        self._images_group = MutuallyExclusiveCallbackGroup()
        self._imagination_group = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()

        self._faces: dict[str, _Face] = {}
        # Held while a message is handled and while a transition tears down what it uses (the
        # lifecycle services run outside the images callback group).
        self._busy = threading.RLock()
        self._persons: dict[str, _Person] = {}
        self._inputs: list[Any] = []  # subscriptions made on activate
        self._configured: list[tuple[str, Any]] = []  # (kind, entity) made on configure
        # Diagnostics run in every state: a node that failed to configure says so.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(
            self._p["diagnostics_period_s"],
            self._publish_diagnostics,
            callback_group=self._control_group,
        )

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the runtime (configuration, models, memories) and create the outputs."""
        try:
            return self._configure()
        except Exception:  # rclpy's lifecycle turns it into a failed transition without a word
            self.get_logger().fatal(f"configure failed:\n{traceback.format_exc()}")
            self.close()
            self._release_outputs()
            return TransitionCallbackReturn.FAILURE

    def _configure(self) -> TransitionCallbackReturn:
        try:
            self._runtime = self._load_runtime()
            if self._p["mode"] == "camera":
                self._tracker = self._runtime.tracker()
        except (RuntimeError, ValueError) as error:  # ValueError: the face detector's model
            self.get_logger().fatal(str(error))
            self.close()
            return TransitionCallbackReturn.FAILURE
        pub = self._made("publisher")
        self._expressions_pub = pub(Expression, "~/expressions", 10)
        self._annotated_pub = pub(Image, "~/annotated_image", IMAGE_OUT_QOS)
        self._notice_pub = pub(String, "~/data_notice", LATCHED_QOS)
        if self._p["mode"] == "camera":
            self._tracked_pub = pub(IdsList, "/humans/faces/tracked", LATCHED_QOS)
        srv = self._made("service")
        srv(Teach, "~/teach", self._on_teach, callback_group=self._control_group)
        srv(Forget, "~/forget", self._on_forget, callback_group=self._control_group)
        srv(SaveMemories, "~/save", self._on_save, callback_group=self._control_group)
        timer = self._made("timer")
        timer(
            self._p["imagination_period_s"],
            self._on_imagination_timer,
            callback_group=self._imagination_group,
        )
        if self._p["autosave_period_s"] > 0:
            timer(self._p["autosave_period_s"], self._autosave, callback_group=self._control_group)
        self._notice_pub.publish(String(data=self._data_notice()))
        self._state = "inactive"
        self.get_logger().info(
            f"configured: mode={self._p['mode']}, memories in {self._memory_dir}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the inputs."""
        sub = self._made_input
        if self._p["mode"] == "camera":
            camera = self._p["camera_topic"]
            sub(Image, camera, self._on_camera_image, IMAGE_QOS, self._images_group)
            if self._p["compressed_topic"]:
                sub(
                    CompressedImage,
                    self._p["compressed_topic"],
                    self._on_camera_compressed,
                    IMAGE_QOS,
                    self._images_group,
                )
            timer = self.create_timer(0.2, self._expire_faces, callback_group=self._images_group)
            self._inputs.append(("timer", timer))
        else:
            # In the images group: face and person bookkeeping never runs during a face.
            group = self._images_group
            sub(IdsList, "/humans/faces/tracked", self._on_tracked_faces, LATCHED_QOS, group)
            sub(IdsList, "/humans/persons/tracked", self._on_tracked_persons, LATCHED_QOS, group)
        if self._p["idle_topic"]:
            sub(Bool, self._p["idle_topic"], self._on_idle, 10)
        self._state = "active"
        self.get_logger().info("active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and retract every face (an empty tracked list, per-face topics gone)."""
        with self._busy:
            self._deactivate()
        return super().on_deactivate(state)

    def _deactivate(self) -> None:
        for kind, entity in self._inputs:
            if kind == "timer":
                self.destroy_timer(entity)
            else:
                self.destroy_subscription(entity)
        self._inputs.clear()
        self._set_faces([])
        if self._p["mode"] == "camera":
            self._publish_tracked(_header(self))
        for person_id in list(self._persons):
            self._drop_person(person_id)
        if self._tracker is not None:
            self._tracker.faces.clear()
        if self._runtime is not None:
            self._runtime.set_idle(None)
        self._state = "inactive"

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Save the memories, release the runtime and the outputs."""
        self.close()
        self._release_outputs()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _release_outputs(self) -> None:
        with self._busy:
            for kind, entity in reversed(self._configured):
                getattr(self, f"destroy_{kind}")(entity)
            self._configured.clear()

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Save the memories on the way out, from any state."""
        if self._state == "active":
            with self._busy:
                self._deactivate()
        self.close()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _made(self, kind: str) -> Any:
        """``create_<kind>`` that also remembers the entity for cleanup."""

        def create(*args: Any, **kwargs: Any) -> Any:
            entity = getattr(self, f"create_{kind}")(*args, **kwargs)
            self._configured.append((kind, entity))
            return entity

        return create

    def _made_input(
        self, msg_type: Any, topic: str, callback: Any, qos: Any, group: Any = None
    ) -> None:
        subscription = self.create_subscription(
            msg_type, topic, callback, qos, callback_group=group or self._control_group
        )
        self._inputs.append(("subscription", subscription))

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

    # ------------------------------------------------------------------ per-face topics
    def _set_faces(self, face_ids: list[str], with_images: bool = False) -> None:
        """Make the faces in view exactly ``face_ids``: topics of the others go at once."""
        for face_id in [f for f in self._faces if f not in face_ids]:
            face = self._faces.pop(face_id)
            for pub in (face.expression, face.roi, face.cropped):
                if pub is not None:
                    self.destroy_publisher(pub)
            if face.subscription is not None:
                self.destroy_subscription(face.subscription)
        for face_id in face_ids:
            if face_id in self._faces:
                continue
            base = f"/humans/faces/{face_id}"
            face = _Face(self.create_publisher(HriExpression, f"{base}/expression", 10))
            if with_images:
                face.roi = self.create_publisher(NormalizedRegionOfInterest2D, f"{base}/roi", 10)
                face.cropped = self.create_publisher(Image, f"{base}/cropped", IMAGE_OUT_QOS)
            self._faces[face_id] = face

    def _publish_tracked(self, header: Any) -> None:
        self._tracked_pub.publish(IdsList(header=header, ids=list(self._faces)))

    # ------------------------------------------------------------------ camera mode
    def _on_camera_image(self, msg: Image) -> None:
        self._handle(msg, lambda: image_to_array(msg, self._p["max_image_side"]), None)

    def _on_camera_compressed(self, msg: CompressedImage) -> None:
        self._handle(msg, lambda: compressed_to_array(msg, self._p["max_image_side"]), None)

    def _expire_faces(self) -> None:
        """Without frames, faces still leave: their topics go within ``lost_after_s`` + 0.2 s."""
        with self._busy:
            if self._tracker is None or self._state != "active":
                return
            in_view = [f.face_id for f in self._tracker.expire()]
            if set(in_view) != set(self._faces):
                self._set_faces(in_view, with_images=True)
                self._publish_tracked(_header(self))

    def _camera_frame(self, msg: Any, image: np.ndarray, order: str) -> list[tuple[str, Any]]:
        """Track, recognise and publish the faces of one camera frame."""
        tracked = self._tracker.update(image, order)[: self._p["max_faces"]]
        person = self._p["camera_person_id"] or None
        results = self._runtime.process_frame(
            image, person_id=person, color_order=order, boxes=[t.box for t in tracked]
        )
        self._set_faces([t.face_id for t in tracked], with_images=True)
        header = msg.header
        self._publish_tracked(header)
        height, width = image.shape[:2]
        for face in tracked:
            pubs = self._faces[face.face_id]
            if pubs.roi.get_subscription_count():
                xmin, ymin, xmax, ymax = normalized_roi(face.box, width, height)
                pubs.roi.publish(
                    NormalizedRegionOfInterest2D(
                        header=header,
                        xmin=xmin,
                        ymin=ymin,
                        xmax=xmax,
                        ymax=ymax,
                        c=float(np.clip(face.score, 0.0, 1.0)),
                    )
                )
            if pubs.cropped.get_subscription_count():
                b = face.box
                crop = image[b.y : b.y + b.height, b.x : b.x + b.width]
                pubs.cropped.publish(_image_msg(crop, order, header))
        pairs = [(face.face_id, result) for face, result in zip(tracked, results, strict=False)]
        if self._annotated_pub.get_subscription_count():
            self._annotate(image, order, header, pairs)
        return pairs

    # ------------------------------------------------------------------ ros4hri mode
    def _on_tracked_faces(self, msg: IdsList) -> None:
        with self._busy:
            if self._state == "active":
                self._track_faces(list(msg.ids))

    def _track_faces(self, ids: list[str]) -> None:
        wanted = self._valid_ids(ids, "face")[: self._p["max_faces"]]
        self._set_faces(wanted)
        for face_id in wanted:
            face = self._faces[face_id]
            if face.subscription is None:
                face.subscription = self.create_subscription(
                    Image,
                    f"/humans/faces/{face_id}/{self._p['face_image']}",
                    lambda m, f=face_id: self._on_face_image(m, f),
                    IMAGE_QOS,
                    callback_group=self._images_group,
                )

    def _on_tracked_persons(self, msg: IdsList) -> None:
        with self._busy:
            if self._state == "active":
                self._track_persons(list(msg.ids))

    def _track_persons(self, ids: list[str]) -> None:
        wanted = self._valid_ids(ids, "person")
        if len(wanted) > self._p["max_persons"]:
            self._log(
                "persons",
                f"{len(wanted)} tracked persons; following the first "
                f"max_persons={self._p['max_persons']}",
            )
            wanted = wanted[: self._p["max_persons"]]
        for person_id in [p for p in self._persons if p not in wanted]:
            self._drop_person(person_id)
        for person_id in wanted:
            if person_id in self._persons:
                continue
            base = f"/humans/persons/{person_id}"
            person = _Person(subscriptions=[])
            self._persons[person_id] = person
            for msg_type, suffix, handler in (
                (String, "face_id", self._on_person_face),
                (Bool, "anonymous", self._on_person_anonymous),
                (String, "alias", self._on_person_alias),
            ):
                person.subscriptions.append(
                    self.create_subscription(
                        msg_type,
                        f"{base}/{suffix}",
                        lambda m, p=person_id, h=handler: h(m, p),
                        LATCHED_QOS,
                        callback_group=self._images_group,
                    )
                )

    def _drop_person(self, person_id: str) -> None:
        for subscription in self._persons.pop(person_id).subscriptions:
            self.destroy_subscription(subscription)

    def _on_person_face(self, msg: String, person_id: str) -> None:
        """A person's current face id; an empty id means the person is not seen now."""
        if person_id not in self._persons:
            return
        face_id = msg.data
        if face_id and not self._valid_ids([face_id], f"face (of person {person_id!r})"):
            face_id = ""
        self._persons[person_id].face_id = face_id

    def _on_person_anonymous(self, msg: Bool, person_id: str) -> None:
        if person_id in self._persons:
            self._persons[person_id].anonymous = bool(msg.data)

    def _on_person_alias(self, msg: String, person_id: str) -> None:
        if person_id not in self._persons:
            return
        alias = msg.data
        if alias and not self._valid_ids([alias], f"alias (of person {person_id!r})"):
            alias = ""
        self._persons[person_id].alias = alias

    def person_of_face(self, face_id: str) -> tuple[str | None, bool]:
        """(person id whose memory answers this face, whether the person is anonymous).

        An alias is followed to its target (at most :data:`MAX_ALIAS_DEPTH` steps); a face whose
        person is not known (yet) gives ``(None, False)``: the runtime's ``persons.mode`` decides.
        """
        person_id = next((p for p, s in self._persons.items() if s.face_id == face_id), None)
        if person_id is None:
            return None, False
        seen = [person_id]
        while (alias := self._persons.get(seen[-1], _Person([])).alias) and len(seen) <= (
            MAX_ALIAS_DEPTH
        ):
            if alias in seen:
                self._log("alias", f"alias cycle {' -> '.join([*seen, alias])}; using {seen[0]!r}")
                return seen[0], self._persons[seen[0]].anonymous
            seen.append(alias)
        target = seen[-1]
        state = self._persons.get(target)
        return target, bool(state and state.anonymous)

    def _on_face_image(self, msg: Image, face_id: str) -> None:
        self._handle(msg, lambda: image_to_array(msg, self._p["max_image_side"]), face_id)

    def _ros4hri_face(self, msg: Any, image: np.ndarray, order: str, face_id: str) -> list:
        if face_id not in self._faces:  # left the tracked list meanwhile
            return []
        person, anonymous = self.person_of_face(face_id)
        anonymous = anonymous and not self._p["persist_anonymous"]
        result = self._runtime.process_face(
            image, person_id=person, color_order=order, anonymous=anonymous
        )
        pairs = [(face_id, result)]
        if self._annotated_pub.get_subscription_count():
            self._annotate(image, order, msg.header, pairs, whole=True)
        return pairs

    def _valid_ids(self, ids: list[str], kind: str) -> list[str]:
        """The ids usable in topic names; the others are logged (throttled) and skipped."""
        for bad in (i for i in ids if not is_valid_id(i)):
            self._log(
                f"id:{kind}",
                f"ignoring {kind} id {bad[:80]!r}: not a valid ROS4HRI id ([A-Za-z]\\w*, at most "
                "64 characters)",
            )
        return list(dict.fromkeys(i for i in ids if is_valid_id(i)))

    # ------------------------------------------------------------------ images
    def _handle(self, msg: Any, decode: Any, face_id: str | None) -> None:
        """Decode, run the runtime, publish; a malformed message or a failure is logged
        (throttled) and counted per class, never fatal. No memory is lost: the runtime saves
        atomically and a failing face changes nothing."""
        with self._busy:
            if self._runtime is not None and self._state == "active":
                self._handle_now(msg, decode, face_id)

    def _handle_now(self, msg: Any, decode: Any, face_id: str | None) -> None:
        self._stats.received += 1
        where = face_id or "camera"
        try:
            image, order = decode()
        except BadImageMessage as error:
            self._count(error.kind, f"bad image on {where}: {error}")
            return
        try:
            if face_id is None:
                pairs = self._camera_frame(msg, image, order)
            else:
                pairs = self._ros4hri_face(msg, image, order, face_id)
        except ValueError as error:  # InvalidImageError and friends: the image, not the node
            self._count("image", f"cannot process image on {where}: {error}")
            return
        except (TypeError, MemoryError, OSError) as error:
            # A message no check foresaw, memory exhausted, the disk full while saving: this
            # image fails, the node carries on with the next.
            kind = type(error).__name__
            self._count(kind, f"{kind} while processing image on {where}: {error}")
            return
        for face, result in pairs:
            fields = expression_fields(result, face)
            full = Expression(header=msg.header, **fields)
            self._expressions_pub.publish(full)
            if face in self._faces:
                self._faces[face].expression.publish(
                    HriExpression(
                        header=msg.header,
                        expression=full.expression,
                        valence=full.valence,
                        arousal=full.arousal,
                        confidence=full.confidence,
                    )
                )
        self._stats.processed += 1
        self._stats.faces += len(pairs)
        stamp = msg.header.stamp
        if stamp.sec > 0 or (stamp.sec == 0 and stamp.nanosec):  # rclpy refuses negative times
            now = self.get_clock().now()
            self._stats.latencies_ms.append((now - Time.from_msg(stamp)).nanoseconds / 1e6)
        self._stats.stamps.append(time.monotonic())

    def _annotate(
        self, image: np.ndarray, order: str, header: Any, pairs: list, whole: bool = False
    ) -> None:
        """Publish the live view of one frame (only called while someone subscribes)."""
        from clifer_edge.preprocessing import FaceBox

        frame = to_bgr(image, order)
        faces = []
        for face_id, result in pairs:
            box = result.box
            if whole or box is None:
                box = FaceBox(0, 0, frame.shape[1] - 1, frame.shape[0] - 1)
            faces.append(
                FaceAnnotation(
                    box, face_id, result.person_id, result.label, result.confidence, result.memory
                )
            )
        draw_faces(frame, faces)
        self._annotated_pub.publish(_image_msg(frame, "bgr", header))

    def _count(self, kind: str, text: str) -> None:
        """Count a failed message under its class and log it (throttled per class)."""
        self._stats.bad[kind] = self._stats.bad.get(kind, 0) + 1
        self._stats.last_error = text
        self._log(kind, text)

    def _log(self, key: str, text: str) -> None:
        """Log an error, throttled: the same text at most once a second, and at most
        :data:`LOG_LINES_PER_S` lines a second per ``key`` (class of error). rclpy's own
        throttling is per call site, so one bad stream would hide a different error."""
        now = time.monotonic()
        if now - self._logged.get(text, -1e9) < 1.0:
            return
        start, count = self._log_window.get(key, (now, 0))
        if now - start >= 1.0:
            start, count = now, 0
        if count >= LOG_LINES_PER_S:
            return
        self._log_window[key] = (start, count + 1)
        if len(self._logged) > 256:
            self._logged.clear()
        self._logged[text] = now
        self.get_logger().error(text)

    # ------------------------------------------------------------------ idle and imagination
    def _on_idle(self, msg: Bool) -> None:
        """Forward the behaviour layer's signal; the runtime decides what idle means."""
        self._runtime.set_idle(bool(msg.data))

    def _on_imagination_timer(self) -> None:
        runtime = self._runtime
        if runtime is None or self._state != "active":
            return
        self._imagining = True
        try:
            report = runtime.imagine()
        except (OSError, MemoryError) as error:
            self._log("imagination", f"imagination failed: {error}")
            return
        except RuntimeError:
            if self._runtime is None:  # closed by a lifecycle transition meanwhile
                return
            raise
        finally:
            self._imagining = False
        if report is not None:
            self._imagination_calls += 1
            self.get_logger().debug(f"imagination: {report}")

    # ------------------------------------------------------------------ services
    def _person_problem(self, person_id: Any) -> str:
        if is_valid_id(person_id):
            return ""
        return f"person_id {str(person_id)[:80]!r} is not a valid ROS4HRI id ([A-Za-z]\\w*, <= 64)"

    def _on_teach(self, request: Teach.Request, response: Teach.Response) -> Teach.Response:
        problem = self._person_problem(request.person_id)
        try:
            if problem:
                raise ValueError(problem)
            label = canonical_label(request.label)
            learned = self._runtime.teach(
                request.person_id, label, n_recent=request.n_recent or None
            )
        except (KeyError, ValueError, OSError) as error:
            response.success, response.learned = False, 0
            response.message = (
                f"cannot teach {request.label[:80]!r} to {request.person_id[:80]!r}: {error}"
            )
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
        problem = self._person_problem(request.person_id)
        if problem:
            response.success, response.message = False, f"cannot forget: {problem}"
            self.get_logger().warning(response.message)
            return response
        try:
            forgotten = self._runtime.forget(request.person_id)
        except (ValueError, OSError) as error:
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
            self._log("autosave", f"autosave failed: {error}")

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
        failures = sum(stats.bad.values())
        values: dict[str, Any] = {
            "mode": self._p["mode"],
            "lifecycle state": self._state,
            "frames received": stats.received,
            "frames processed": stats.processed,
            "bad messages": failures,
            **{f"bad messages: {kind}": n for kind, n in sorted(stats.bad.items())},
            "faces published": stats.faces,
            "rate (Hz)": f"{rate:.2f}",
            "latency p50 (ms)": f"{np.percentile(latencies, 50):.1f}" if latencies.size else "",
            "latency p99 (ms)": f"{np.percentile(latencies, 99):.1f}" if latencies.size else "",
            "imagining": self._imagining,
            "imagination calls": self._imagination_calls,
            "tracked faces": len(self._faces),
            "tracked persons": len(self._persons),
            "last error": stats.last_error,
        }
        if self._runtime is not None:
            values["idle"] = self._runtime.is_idle()
            values.update(_flatten(self._runtime.stats(), "runtime"))
        # WARN while bad input keeps arriving (since the previous report), OK once it stops.
        level, message = DiagnosticStatus.OK, self._state
        if self._runtime is None:
            level, message = DiagnosticStatus.WARN, f"{self._state}: runtime not loaded"
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
        """The latched data-processing notice (wording of docs/runtime.md, with this config)."""
        persons = self._runtime.config.persons
        anonymous = (
            "Anonymous persons are remembered like others."
            if self._p["persist_anonymous"]
            else "Anonymous persons are not remembered."
        )
        return (
            "clifer-edge data processing notice. Purpose: recognise the facial expressions of the "
            "people this robot interacts with, personalised to each person. Processed: face images "
            "from the camera or ROS4HRI, in memory only; images are not stored unless the runtime "
            "config sets memory.store_faces. Stored: per person id, encoded face features (latent "
            "vectors, not images) with the expression labels taught, in files readable only by "
            f"the robot's user, in {self._memory_dir}. {anonymous} People who were never taught "
            "an expression are kept only as an identity feature in identity mode, at most "
            f"{persons.max_unlabelled} of them and for at most {persons.unlabelled_max_age_days:g} "
            "days after they were last seen; taught people are kept until deleted with the "
            f"service {self.resolve_service_name('~/forget')}, which removes every file of that "
            "person (or delete the directory). Nothing leaves the robot."
        )

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Save every memory and release the runtime (idempotent)."""
        with self._busy:
            runtime, self._runtime = self._runtime, None
        if runtime is None:
            return
        try:
            runtime.save()
            self.get_logger().info(f"memories saved to {self._memory_dir}")
        finally:
            runtime.close()


def _check_parameter(name: str, value: Any) -> str:
    """The reason ``value`` is invalid for parameter ``name``, or ``""``."""
    if name == "mode" and value not in MODES:
        return f"mode={value!r} should be one of {list(MODES)}"
    if name == "face_image" and value not in FACE_IMAGES:
        return f"face_image={value!r} should be one of {list(FACE_IMAGES)}"
    if name == "runtime_config" and value and not Path(value).expanduser().is_file():
        return f"runtime_config={value!r}: no such file"
    if name == "camera_person_id" and value and not is_valid_id(value):
        return f"camera_person_id={value!r} should match [A-Za-z][A-Za-z0-9_]* (<= 64 characters)"
    if (
        name in ("camera_topic", "compressed_topic", "idle_topic")
        and value
        and not str(value).startswith(("/", "~"))
        and not str(value)[:1].isalpha()
    ):
        return f"{name}={value!r} is not a valid topic name"
    return ""


def _image_msg(image: np.ndarray, order: str, header: Any) -> Image:
    """A ``sensor_msgs/Image`` of a uint8 grey, RGB or BGR array."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    encoding = "mono8" if channels == 1 else ("rgb8" if order == "rgb" else "bgr8")
    pixels = np.ascontiguousarray(image)
    return Image(
        header=header,
        height=int(pixels.shape[0]),
        width=int(pixels.shape[1]),
        encoding=encoding,
        is_bigendian=0,
        step=int(pixels.shape[1]) * channels,
        data=pixels.tobytes(),
    )


def _flatten(data: Any, prefix: str) -> dict[str, str]:
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: str(data)}


def _header(node: Any) -> Header:
    return Header(stamp=node.get_clock().now().to_msg())


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C, SIGTERM or ROS shutdown; save the memories on the way out.

    With ``autostart`` (the default) the node configures and activates itself; a failed
    configuration (e.g. no models) ends the process with status 1. rclpy's own signal handlers
    would shut the context down before the memories are saved (and the save could no longer be
    logged), and a KeyboardInterrupt can land anywhere, also in the save that a second signal
    (``ros2 launch`` follows SIGINT with SIGTERM) would abort. So SIGINT and SIGTERM only ask
    the spin loop to stop, and the main thread saves once it has.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    # Also SIGINT: a process started in the background by a shell inherits SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        node = ExpressionNode()
    except RuntimeError as error:
        get_logger(NODE_NAME).fatal(str(error))
        rclpy.try_shutdown()
        return 1
    if node.get_parameter("autostart").value:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            node.destroy_node()
            rclpy.try_shutdown()
            return 1
        node.trigger_activate()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            try:
                # A short wait: a signal's handler runs between two waits (Python runs handlers
                # in the main thread only, once the wait returns to the interpreter).
                executor.spin_once(timeout_sec=SPIN_WAIT_S)
            except InvalidHandle:
                # A face's publisher or subscription was destroyed by one callback thread while
                # the executor built its wait set in another (an rclpy race with per-face
                # topics); the next wait set no longer holds it: spin on.
                continue
            except ExternalShutdownException:
                break
    finally:
        executor.shutdown()  # waits for callbacks in flight, e.g. an imagination chunk
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
