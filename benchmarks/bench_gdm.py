"""Benchmark of the Growing Dual Memory: compiled kernels against the numpy reference.

Prints JSON with, for both implementations of the same algorithm:

- predict latency per query at 250 / 1000 / 4000 nodes x 50 / 100 features (a batch of queries
  through the BMU search, divided by the batch size; plus one-query calls of the public
  ``GrowingDualMemory.predict`` for the compiled path);
- training throughput in sample-updates per second (one sample through one network for one epoch)
  with CLIFER's settings on a 600-sample stream of real CK+ faces (PCA pixel features, see
  ``pixel_features``), both as one 600-sample partial_fit and as CLIFER's 5-sample episodes each
  followed by pseudo-replay;
- peak memory (tracemalloc peak of the training run, process max RSS) and the network buffers;
- the speed-up ratios, measured in the same run.

Run single-threaded: ``OMP_NUM_THREADS=1 python benchmarks/bench_gdm.py [--quick] [--table]``.
Targets (issue 2): predict <= 20 us/query at 1000 nodes x 100 features on one core; training
>= 50,000 sample-updates/s; compiled >= 50x numpy at 1000 nodes.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from clifer_edge.datasets import load_npz  # noqa: E402
from clifer_edge.memory import GDMConfig, GrowingDualMemory  # noqa: E402
from clifer_edge.memory._state import NetworkState  # noqa: E402
from clifer_edge.memory.dual import network_class  # noqa: E402

BACKENDS = ("cython", "numpy")


def pixel_features(n_features: int, n_samples: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """A 600-sample CK+ stream in class order: standardised pixels minus each subject's mean face,
    PCA to ``n_features``, scaled to an RMS norm of 3 (the scale CLIFER's thresholds expect)."""
    data = load_npz("ckplus48.npz")
    X = data.images.reshape(len(data), -1).astype(np.float64)
    X = (X - X.mean(axis=1, keepdims=True)) / X.std(axis=1, keepdims=True)
    for subject in np.unique(data.subjects):
        rows = data.subjects == subject
        X[rows] -= X[rows].mean(axis=0)
    Z = PCA(n_features, random_state=0).fit_transform(X)
    Z = 3.0 * Z / np.sqrt((Z**2).sum(axis=1).mean())
    rows = np.random.default_rng(0).permutation(len(data))[:n_samples]
    rows = rows[np.argsort(data.labels[rows], kind="stable")]  # classes one after the other
    return Z[rows].astype(np.float32), data.labels[rows]


def synthetic_network(backend: str, n_nodes: int, n_features: int, config: GDMConfig):
    """A network with exactly ``n_nodes`` random nodes (a chain of edges), for recall timing."""
    rng = np.random.default_rng(n_nodes * 1000 + n_features)
    depth = config.context_depth + 1
    state = NetworkState(
        weights=rng.uniform(-1, 1, (n_nodes, depth, n_features)).astype(np.float32),
        habituation=np.ones(n_nodes, dtype=np.float32),
        histograms=rng.uniform(0, 1, (n_nodes, 7)).astype(np.float32),
        edges=np.stack([np.arange(n_nodes - 1), np.arange(1, n_nodes)], axis=1).astype(np.int64),
        edge_stamps=np.zeros(n_nodes - 1, dtype=np.int64),
        temporal=np.zeros((0, 2), dtype=np.int64),
        temporal_counts=np.zeros(0, dtype=np.float32),
        clock=0,
    )
    gwr = config.episodic
    network = network_class(backend)(
        gwr, n_features, config.context_depth, config.beta, config.a_inc, config.a_dec
    )
    network.ensure_labels(7)
    network.set_state(state)
    return network


def best_time(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Smallest wall time and smallest thread CPU time of ``repeats`` calls.

    On a shared machine the wall time includes waiting for a core; the thread CPU time is the
    single-core work itself. Both are reported; the minimum is the least disturbed run.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        function()
        cpus.append(time.thread_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return min(walls), min(cpus)


def bench_predict(sizes: list[int], dims: list[int], quick: bool) -> dict:
    config = GDMConfig()
    out: dict = {}
    for n_features in dims:
        for n_nodes in sizes:
            key = f"{n_nodes}x{n_features}"
            queries = np.random.default_rng(1).uniform(-1, 1, (1000, n_features)).astype(np.float32)
            row: dict = {}
            for backend in BACKENDS:
                network = synthetic_network(backend, n_nodes, n_features, config)
                batch = queries if backend == "cython" else queries[: 50 if quick else 200]
                wall, cpu = best_time(lambda: network.nearest(batch), 3 if quick else 7)  # noqa: B023
                row[f"{backend}_us_per_query"] = round(1e6 * cpu / len(batch), 3)
                row[f"{backend}_us_per_query_wall"] = round(1e6 * wall / len(batch), 3)
            # One query through the whole public API (validation, BMU, histogram, label).
            memory = GrowingDualMemory(config)
            memory.partial_fit(queries[:2], ["a", "b"])
            memory.episodic_ = synthetic_network("cython", n_nodes, n_features, config)
            memory.semantic_ = synthetic_network("cython", n_nodes, n_features, config)
            memory.labels_ = ["l0", "l1", "l2", "l3", "l4", "l5", "l6"]
            memory.classes_ = list(memory.labels_)
            one = queries[:1]
            wall, cpu = best_time(lambda: [memory.predict(one) for _ in range(200)], 5)  # noqa: B023
            row["cython_api_single_query_us"] = round(1e6 * cpu / 200, 3)
            row["cython_api_single_query_us_wall"] = round(1e6 * wall / 200, 3)
            row["speedup"] = round(row["numpy_us_per_query"] / row["cython_us_per_query"], 1)
            out[key] = row
    return out


def count_updates(memory: GrowingDualMemory) -> list[int]:
    """Wrap both networks' ``train`` to count sample-updates (samples x epochs per network)."""
    counter = [0]
    for network in (memory.episodic_, memory.semantic_):
        original = network.train

        def counted(X, labels, epochs, starts=None, _original=original):
            counter[0] += len(X) * epochs
            return _original(X, labels, epochs, starts)

        network.train = counted
    return counter


def bench_training(n_features: int, backend: str, episodes: bool) -> dict:
    """Throughput and peak memory of learning the 600-sample stream from scratch."""
    X, labels = pixel_features(n_features)
    memory = GrowingDualMemory(GDMConfig(backend=backend), seed=0)
    memory.partial_fit(X[:2], labels[:2])  # creates the networks so that updates can be counted
    counter = count_updates(memory)
    counter[0] = 0
    tracemalloc.start()
    start, cpu = time.perf_counter(), time.thread_time()
    if episodes:
        for first in range(2, len(X), 5):
            memory.partial_fit(X[first : first + 5], labels[first : first + 5])
            memory.replay()
    else:
        memory.partial_fit(X[2:], labels[2:])
    cpu = time.thread_time() - cpu
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    stats = memory.stats()
    return {
        "sample_updates": counter[0],
        "seconds_wall": round(seconds, 4),
        "seconds_cpu": round(cpu, 4),
        "sample_updates_per_s": round(counter[0] / cpu),
        "sample_updates_per_s_wall": round(counter[0] / seconds),
        "tracemalloc_peak_mib": round(peak / 2**20, 3),
        "episodic_nodes": stats["episodic"]["nodes"],
        "semantic_nodes": stats["semantic"]["nodes"],
    }


def bench_update_at(n_nodes: int, n_features: int, quick: bool) -> dict:
    """Cost of one training step (one sample, one network) when the network is full at n_nodes.

    The synthetic network has random prototypes and ``max_nodes = n_nodes``, so every step is a
    BMU search plus a weight/edge/habituation update, the steady state of a long-lived memory.
    """
    base = GDMConfig()
    config = dataclasses.replace(
        base, episodic=dataclasses.replace(base.episodic, max_nodes=n_nodes)
    )
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (100 if quick else 300, n_features)).astype(np.float32)
    y = rng.integers(0, 7, len(X))
    row: dict = {}
    for backend in BACKENDS:
        network = synthetic_network(backend, n_nodes, n_features, config)
        _, cpu = best_time(lambda: network.train(X, y, 1), 1)  # noqa: B023
        row[f"{backend}_us_per_update"] = round(1e6 * cpu / len(X), 3)
    row["speedup"] = round(row["numpy_us_per_update"] / row["cython_us_per_update"], 1)
    return row


def network_bytes(n_nodes: int, n_features: int) -> dict:
    """Bytes held by a compiled network with ``n_nodes`` nodes (buffers at capacity)."""
    network = synthetic_network("cython", n_nodes, n_features, GDMConfig())
    buffers = [value for key, value in vars(network).items() if isinstance(value, np.ndarray)]
    return {
        "nodes": n_nodes,
        "features": n_features,
        "capacity": network.capacity,
        "mib": round(sum(b.nbytes for b in buffers) / 2**20, 3),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes (smoke run)")
    parser.add_argument("--table", action="store_true", help="also print Markdown tables (stderr)")
    args = parser.parse_args(argv)
    sizes = [250, 1000] if args.quick else [250, 1000, 4000]
    dims = [50, 100]
    result: dict = {
        "machine": {
            "cpu": cpu_name(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "cores": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "note": "us/query and updates/s use thread CPU time (one core's work); *_wall "
            "include waiting for a core on a shared machine",
        },
        "predict": bench_predict(sizes, dims, args.quick),
        "training": {},
    }
    for n_features in dims:
        for backend in BACKENDS:
            result["training"][f"stream_{backend}_{n_features}d"] = bench_training(
                n_features, backend, episodes=False
            )
        result["training"][f"episodes_cython_{n_features}d"] = bench_training(
            n_features, "cython", episodes=True
        )
        result["training"][f"update_at_1000_nodes_{n_features}d"] = bench_update_at(
            1000, n_features, args.quick
        )
        fast = result["training"][f"stream_cython_{n_features}d"]["sample_updates_per_s"]
        slow = result["training"][f"stream_numpy_{n_features}d"]["sample_updates_per_s"]
        result["training"][f"stream_speedup_{n_features}d"] = round(fast / slow, 1)
    result["memory"] = {
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "network_4000x100": network_bytes(4000, 100),
    }
    p1000 = result["predict"]["1000x100"]
    result["targets"] = {
        "predict_us_1000x100<=20": p1000["cython_us_per_query"] <= 20,
        "training_updates_per_s>=50000": min(
            result["training"][f"stream_cython_{d}d"]["sample_updates_per_s"] for d in dims
        )
        >= 50_000,
        "speedup_predict_1000_nodes>=50": min(
            result["predict"][f"1000x{d}"]["speedup"] for d in dims
        )
        >= 50,
        "speedup_training_stream>=50": min(result["training"][f"stream_speedup_{d}d"] for d in dims)
        >= 50,
        "speedup_update_at_1000_nodes>=50": min(
            result["training"][f"update_at_1000_nodes_{d}d"]["speedup"] for d in dims
        )
        >= 50,
    }
    print(json.dumps(result, indent=2))
    if args.table:
        print(markdown(result), file=sys.stderr)
    return 0


def markdown(result: dict) -> str:
    lines = [
        "| nodes x features | compiled us/query | numpy us/query | speed-up "
        "| predict() 1 query us |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, row in result["predict"].items():
        lines.append(
            f"| {key} | {row['cython_us_per_query']} | {row['numpy_us_per_query']} | "
            f"{row['speedup']}x | {row['cython_api_single_query_us']} |"
        )
    lines += [
        "",
        "| training run | sample-updates | CPU s | updates/s | tracemalloc peak MiB "
        "| nodes (E/S) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in result["training"].items():
        if isinstance(row, dict) and "speedup" in row:
            lines.append(
                f"| {key} (us/update) | | | compiled {row['cython_us_per_update']}, numpy "
                f"{row['numpy_us_per_update']} ({row['speedup']}x) | | |"
            )
        elif isinstance(row, dict):
            lines.append(
                f"| {key} | {row['sample_updates']} | {row['seconds_cpu']} | "
                f"{row['sample_updates_per_s']} | {row['tracemalloc_peak_mib']} | "
                f"{row['episodic_nodes']}/{row['semantic_nodes']} |"
            )
        else:
            lines.append(f"| {key} | | | {row}x | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
