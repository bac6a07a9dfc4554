"""End-to-end latency of the ROS node: camera image stamp to Expression message, over real DDS.

Starts ``clifer_edge_node`` (camera mode) as its own process, pinned to one CPU core (``--cpus``),
publishes real CK+ faces as ``sensor_msgs/Image`` frames at a fixed rate with 1 and with 5 faces
per frame, and measures for each frame the time from its header stamp to the arrival of its last
face's ``clifer_msgs/Expression`` on ``~/expressions``. Frames the node skipped (keep-last-1
sensor QoS drops stale frames instead of queueing them) count as dropped. CPU% is the node
process's user + system time over the wall time of the run (100% = one core); CPU ms/frame divides
that time by the frames answered, a figure that depends much less on other load on the machine.

    python benchmarks/bench_ros_node.py [--fps 30] [--seconds 10] [--faces 1 5] [--cpus 0]
        [--view-png docs/img/ros_annotated.png]

``--view-png`` saves one frame of ``~/annotated_image`` (the live view) of the last case, taken
after the timed run (the view costs time only while someone subscribes).

Needs the ``ros`` extra (rclpy); builds clifer_msgs first with ``ros2_ws/build_msgs.sh``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the DDS helpers shared with the ROS tests

from ros_support import (  # noqa: E402
    Driver,
    NodeProcess,
    camera_frame,
    image_msg,
    prepare_ros_env,
)

from clifer_edge.datasets import default_data_dir  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _frames(people: list[np.ndarray], per_frame: int, count: int) -> list[np.ndarray]:
    """``count`` frames, each a row of ``per_frame`` enlarged CK+ faces: position j always shows
    person j (five people in front of the robot), with their expressions changing frame by frame.
    """
    frames = []
    for i in range(count):
        tiles = [camera_frame(people[j][i % len(people[j])], side=120) for j in range(per_frame)]
        frames.append(np.concatenate(tiles, axis=1))
    return frames


def run_case(
    driver: Driver,
    node: NodeProcess,
    faces: list[np.ndarray],
    per_frame: int,
    fps: float,
    seconds: float,
) -> dict[str, float]:
    from clifer_msgs.msg import Expression
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    topic = f"/bench_cam_{per_frame}/image"
    pub = driver.node.create_publisher(Image, topic, qos_profile_sensor_data)
    arrivals: dict[tuple[int, int], list[float]] = {}

    def on_expression(msg: Expression) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        arrivals.setdefault(key, []).append(time.time())

    sub = driver.node.create_subscription(
        Expression, f"/{node.name}/expressions", on_expression, 100
    )
    frames = _frames(faces, per_frame, 64)
    # Warm up (discovery, first inference) until an answer comes back.
    warm = image_msg(frames[0], driver.node.get_clock().now().to_msg())
    assert driver.spin_until(lambda: bool(arrivals), 60.0, every=lambda: pub.publish(warm))
    arrivals.clear()

    sent: dict[tuple[int, int], float] = {}
    cpu0, wall0 = _cpu_seconds(node.process.pid), time.monotonic()
    period = 1.0 / fps
    next_time = time.monotonic()
    for i in range(int(seconds * fps)):
        now_ros = driver.node.get_clock().now()
        msg = image_msg(frames[i % len(frames)], now_ros.to_msg())
        sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = now_ros.nanoseconds / 1e9
        pub.publish(msg)
        next_time += period
        while time.monotonic() < next_time:
            driver.executor.spin_once(timeout_sec=max(0.0, next_time - time.monotonic()))
    driver.spin_until(lambda: False, 2.0)  # let the last answers arrive
    cpu = _cpu_seconds(node.process.pid) - cpu0
    wall = time.monotonic() - wall0
    driver.node.destroy_subscription(sub)
    driver.node.destroy_publisher(pub)

    answered = [k for k in sent if k in arrivals]
    latencies = np.array([max(arrivals[k]) - sent[k] for k in answered]) * 1000.0
    faces_found = np.array([len(arrivals[k]) for k in answered])
    return {
        "faces": per_frame,
        "frames sent": len(sent),
        "frames answered": len(answered),
        "dropped %": 100.0 * (1 - len(answered) / len(sent)),
        "faces/frame": float(faces_found.mean()) if answered else 0.0,
        "p50 ms": float(np.percentile(latencies, 50)) if answered else float("nan"),
        "p99 ms": float(np.percentile(latencies, 99)) if answered else float("nan"),
        "node CPU %": 100.0 * cpu / wall,
        # Independent of how busy the machine is: CPU time the node spent per frame it answered.
        "CPU ms/frame": 1000.0 * cpu / max(1, len(answered)),
    }


def save_view(
    driver: Driver, node: NodeProcess, faces: list[np.ndarray], per_frame: int, path: Path
) -> None:
    """Subscribe to the node's live view, send a few frames, save the last view as PNG."""
    import cv2
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    views = driver.collect(Image, f"/{node.name}/annotated_image", 5)
    pub = driver.node.create_publisher(
        Image, f"/bench_cam_{per_frame}/image", qos_profile_sensor_data
    )
    frames = _frames(faces, per_frame, 8)
    sent = [0]

    def send() -> None:
        pub.publish(
            image_msg(frames[sent[0] % len(frames)], driver.node.get_clock().now().to_msg())
        )
        sent[0] += 1

    assert driver.spin_until(lambda: len(views) >= 5, 30.0, every=send, period=0.1)
    view = views[-1]
    pixels = np.frombuffer(bytes(view.data), np.uint8).reshape(view.height, view.width, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), pixels)
    print(f"live view ({view.width}x{view.height}, {view.encoding}) saved to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 5])
    parser.add_argument(
        "--cpus", type=int, nargs="+", default=[0], help="CPU cores the node may use (default: 0)"
    )
    parser.add_argument("--view-png", type=Path, help="save one frame of ~/annotated_image here")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data dir with ckplus48.npz (default ../shared/data)",
    )
    args = parser.parse_args(argv)

    data_dir = args.data or default_data_dir()
    if not (data_dir / "ckplus48.npz").exists():  # run from elsewhere than the repo root
        data_dir = ROOT.parent / "shared" / "data"
    with np.load(data_dir / "ckplus48.npz") as data:
        images, subjects = data["images"], data["subjects"]
    names, counts = np.unique(subjects, return_counts=True)
    faces = [images[subjects == name] for name in names[np.argsort(-counts)][: max(args.faces)]]
    ros = prepare_ros_env(data_dir)
    driver = Driver("clifer_bench_driver")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for per_frame in args.faces:
            params = {
                "mode": "camera",
                "camera_topic": f"/bench_cam_{per_frame}/image",
                "memory_dir": str(Path(tmp) / "memories"),
                "idle_timeout_s": 3600.0,
                "max_image_side": 4096,
            }
            if per_frame == 1:
                params["camera_person_id"] = "bench"
            else:
                # Several faces per frame are several persons: the runtime identifies each one
                # (with a caller-given person id it would take the frame as one person's).
                runtime_yaml = Path(tmp) / "runtime.yaml"
                runtime_yaml.write_text(
                    f"persons:\n  mode: identity\nfaces:\n  max_faces: {per_frame}\n"
                )
                params["runtime_config"] = str(runtime_yaml)
            # The node inherits this process's CPU affinity at start: pin, start, unpin.
            everything = os.sched_getaffinity(0)
            os.sched_setaffinity(0, set(args.cpus))
            try:
                node = NodeProcess(f"clifer_bench_{per_frame}", params, Path(tmp), ros).start()
            finally:
                os.sched_setaffinity(0, everything)
            try:
                rows.append(run_case(driver, node, faces, per_frame, args.fps, args.seconds))
                if args.view_png is not None and per_frame == args.faces[-1]:
                    save_view(driver, node, faces, per_frame, args.view_png)
            finally:
                node.stop(signal.SIGINT)
    driver.close()

    header = list(rows[0])
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} CPUs, node pinned to CPU {args.cpus}, 1-min load average "
        f"{load:.1f} at the end"
    )
    print(
        f"clifer_edge_node end to end, {args.fps:g} fps for {args.seconds:g} s per case "
        f"(image stamp -> last Expression of the frame)"
    )
    print(" | ".join(f"{h:>15}" for h in header))
    for row in rows:
        print(
            " | ".join(
                f"{row[h]:>15.1f}" if isinstance(row[h], float) else f"{row[h]:>15}" for h in header
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
