"""Helpers for the ROS 2 tests: build clifer_msgs, start the node as a process, talk to it over DDS.

Every test talks to a real node process over real DDS, confined to this machine
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, and ``ROS_LOCALHOST_ONLY=1`` for Humble) on a
``ROS_DOMAIN_ID`` chosen from the process id, so parallel runs do not hear each other.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = REPO_ROOT / "ros2_ws"
INSTALL = WORKSPACE / "install"
#: The vendored ROS 2 launch wheels (pure Python, importable from the .whl files as they are).
LAUNCH_WHEELS = REPO_ROOT.parent / "shared" / "vendor" / "ros2_launch" / "wheels"


def rclpy_missing_reason() -> str:
    """Why the ROS tests must be skipped (rclpy not importable), or ``""``."""
    try:
        import rclpy  # noqa: F401
    except ImportError as error:
        return f"rclpy is not importable ({error}); install the `ros` extra"
    return ""


@dataclass
class RosEnv:
    """Environment shared by the node processes and the test's own ROS context."""

    env: dict[str, str]
    domain_id: int


def prepare_ros_env(data_dir: Path) -> RosEnv:
    """Build clifer_msgs (skipped when up to date) and make it importable here and in children.

    ``data_dir`` (the shared real data) is passed on as ``CLIFER_DATA_DIR``: the runtime builds
    its latent calibration from FER2013 when the models do not ship one.

    The test process started before the messages were built, so its dynamic loader cannot find
    their libraries through ``LD_LIBRARY_PATH``; loading them by path first lets the type-support
    lookups (``dlopen`` by name) find them. Child processes simply get ``LD_LIBRARY_PATH``.
    """
    build = subprocess.run(
        ["bash", str(WORKSPACE / "build_msgs.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if build.returncode != 0:
        raise RuntimeError(
            f"ros2_ws/build_msgs.sh failed ({build.returncode}):\n{build.stdout[-3000:]}\n"
            f"{build.stderr[-3000:]}"
        )
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    prefixes = sorted(p for p in INSTALL.iterdir() if (p / "share").is_dir())
    sites = [str(p / "lib" / version / "site-packages") for p in prefixes]
    lib_dirs = [str(p / "lib") for p in prefixes]
    # None of clifer_msgs, hri_msgs and composition_interfaces needs another's libraries.
    for lib_dir in lib_dirs:
        for lib in sorted(Path(lib_dir).glob("lib*.so")):  # inter-library links use their RPATH
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    for site in sites:
        if site not in sys.path:
            sys.path.insert(0, site)

    domain_id = 10 + os.getpid() % 90
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONPATH=os.pathsep.join(
            p for p in (os.environ.get("PYTHONPATH", ""), *sites, str(REPO_ROOT)) if p
        ),
        LD_LIBRARY_PATH=os.pathsep.join(
            p for p in (*lib_dirs, os.environ.get("LD_LIBRARY_PATH", "")) if p
        ),
        AMENT_PREFIX_PATH=os.pathsep.join(
            p
            for p in (
                *(str(p) for p in prefixes),
                os.environ.get("AMENT_PREFIX_PATH", sys.prefix),
            )
            if p
        ),
        CLIFER_DATA_DIR=str(data_dir),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        RCUTILS_COLORIZED_OUTPUT="0",
    )
    if os.environ.get("ROS_DISTRO") == "humble":  # Humble predates the discovery range
        env["ROS_LOCALHOST_ONLY"] = "1"
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY"):
        if key in env:
            os.environ[key] = env[key]
    return RosEnv(env=env, domain_id=domain_id)


@dataclass
class NodeProcess:
    """``python -m clifer_edge.ros.node --ros-args --params-file FILE`` as a child process."""

    name: str
    params: dict[str, Any]
    workdir: Path
    ros: RosEnv
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def start(self) -> NodeProcess:
        params_file = self.workdir / f"{self.name}.yaml"
        params_file.write_text(yaml.safe_dump({self.name: {"ros__parameters": self.params}}))
        self.log_path = self.workdir / f"{self.name}.log"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clifer_edge.ros.node",
                "--ros-args",
                "--params-file",
                str(params_file),
                "-r",
                f"__node:={self.name}",
            ],
            env=self.ros.env,
            cwd=self.workdir,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait; kill after ``timeout``. Returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class Driver:
    """The test's own ROS node: publishes faces, collects messages, calls services."""

    def __init__(self, name: str = "clifer_test_driver") -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = {}

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def spin_until(
        self,
        done: Callable[[], bool],
        timeout: float,
        every: Callable[[], None] | None = None,
        period: float = 0.2,
    ) -> bool:
        """Spin until ``done()``; call ``every()`` (e.g. publish again) each ``period`` seconds."""
        end = time.monotonic() + timeout
        next_call = 0.0
        while time.monotonic() < end:
            if done():
                return True
            if every is not None and time.monotonic() >= next_call:
                every()
                next_call = time.monotonic() + period
            self.executor.spin_once(timeout_sec=0.02)
        return done()

    def collect(self, msg_type: Any, topic: str, qos: Any = 10) -> list[Any]:
        """Subscribe once and keep every message of ``topic`` in ``self.received[topic]``."""
        if topic not in self.received:
            self.received[topic] = []
            self.node.create_subscription(msg_type, topic, self.received[topic].append, qos)
        return self.received[topic]

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 20.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            assert self.spin_until(client.service_is_ready, timeout), f"service {name} not ready"
            future = client.call_async(request)
            assert self.spin_until(future.done, timeout), f"service {name} did not answer"
            return future.result()
        finally:
            self.node.destroy_client(client)


def image_msg(
    image: np.ndarray, stamp: Any, encoding: str | None = None, frame_id: str = "camera"
) -> Any:
    """A ``sensor_msgs/Image`` holding ``image`` (uint8, grey or RGB)."""
    from sensor_msgs.msg import Image

    channels = 1 if image.ndim == 2 else image.shape[2]
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding or ("mono8" if channels == 1 else "rgb8")
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    return msg


def camera_frame(face: np.ndarray, side: int = 160, pad: float = 0.35) -> np.ndarray:
    """A camera-like frame: a 48x48 CK+ face enlarged to ``side`` px on a plain background."""
    import cv2

    enlarged = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    offset = int(side * pad)
    frame = np.full((side + 2 * offset, side + 2 * offset), int(np.median(face)), np.uint8)
    frame[offset : offset + side, offset : offset + side] = enlarged
    return frame


def faces_of(data: Any, subject: str, label: str) -> np.ndarray:
    """The CK+ face crops of one subject and expression (canonical label)."""
    mask = (data["subjects"] == subject) & (data["labels"] == label)
    return data["images"][mask]
