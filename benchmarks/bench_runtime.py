"""Throughput, latency and memory of the expression runtime, and the cost of imagination.

Measured on real faces (CK+ crops; JAFFE full frames for the detection path), on one CPU core
(the process is pinned to core 0 where the OS allows), with the bundled int8 models:

- faces per second through preprocess -> int8 encoder -> the person's GDM predict, one face per
  call as on the robot, for 1 and 5 persons with learned memories, with p50/p99 latency; the
  encoder alone is timed in the same run as the baseline (ratio printed);
- the same per full 256x256 JAFFE frame with face detection (the configured detector, YuNet by
  default);
- peak RSS of the process (``ru_maxrss``) after the one-runtime figures above (what a robot
  process holds, with the data sets loaded) and after everything;
- imagination: seconds to imagine 200 prototypes x 6 expressions (generate + encode), and the
  full scheduler (plus training both memories) on the same work;
- learning: the wall time of training the memories on the 5 persons' labelled episodes, with
  each episode followed by RNAT replay (``learning.replay``, the default) and without it (the
  baseline, ratio printed);
- preemption: how long a face waits, and how long until the scheduler yields, when a face arrives
  during imagination (over ``--trials`` arrivals at random moments).

Run: ``python benchmarks/bench_runtime.py [--faces 600] [--trials 30] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from clifer_edge.datasets import default_data_dir, load_npz
from clifer_edge.imagination import imagine_latents
from clifer_edge.preprocessing import preprocess_faces
from clifer_edge.runtime import ExpressionRuntime, load_config


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = 1000.0 * np.asarray(seconds)
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _runtime(directory: str, **sections: dict) -> ExpressionRuntime:
    sections["memory"] = {**sections.get("memory", {}), "directory": directory}
    return ExpressionRuntime(load_config(None).replace(**sections))


def _teach_persons(rt: ExpressionRuntime, ck, persons: list[str]) -> None:
    """Give each person a memory learned from one CK+ subject's labelled faces."""
    for person in persons:
        rows = np.flatnonzero(ck.subjects == person)
        for row in rows:
            rt.process_face(ck.images[row], person_id=person, label=str(ck.labels[row]))
    rt.save()


def _show_first_expression(rt: ExpressionRuntime, ck, person: str) -> int:
    """One more labelled episode: the person's CK+ faces of their first expression."""
    rows = np.flatnonzero(ck.subjects == person)
    rows = rows[ck.labels[rows] == ck.labels[rows[0]]]
    for row in rows:
        rt.process_face(ck.images[row], person_id=person, label=str(ck.labels[row]))
    rt.save()  # ends the episode
    return int(rows.size)


def bench_throughput(rt: ExpressionRuntime, ck, persons: list[str], n_faces: int) -> dict:
    rng = np.random.default_rng(0)
    rows = rng.choice(len(ck), size=n_faces, replace=True)
    who = [persons[i % len(persons)] for i in range(n_faces)]
    for row in rows[:20]:  # warm-up
        rt.process_face(ck.images[row], person_id=who[0])
    latencies = []
    start = time.perf_counter()
    for row, person in zip(rows, who, strict=True):
        t0 = time.perf_counter()
        rt.process_face(ck.images[row], person_id=person)
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {"faces_per_s": round(n_faces / total, 1), **_percentiles(latencies)}


def bench_encoder_only(rt: ExpressionRuntime, ck, n_faces: int) -> dict:
    meta = rt.encoder.metadata
    faces = preprocess_faces(ck.images[:n_faces], meta.image_size, meta.channels)
    latencies = []
    start = time.perf_counter()
    for face in faces:
        t0 = time.perf_counter()
        rt.encoder.encode(face[None])
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {"faces_per_s": round(n_faces / total, 1), **_percentiles(latencies)}


def bench_frames(rt: ExpressionRuntime, jaffe, n_frames: int) -> dict:
    latencies, found = [], 0
    for image in jaffe.images[:n_frames]:
        t0 = time.perf_counter()
        found += len(rt.process_frame(image, person_id="frames"))
        latencies.append(time.perf_counter() - t0)
    return {
        "frames_per_s": round(len(latencies) / sum(latencies), 1),
        "faces_found": found,
        **_percentiles(latencies),
    }


def bench_imagination(rt: ExpressionRuntime, ck, n_prototypes: int = 200) -> dict:
    meta = rt.encoder.metadata
    faces = preprocess_faces(ck.images[:n_prototypes], meta.image_size, meta.channels)
    z = np.asarray(rt.encoder.encode(faces), dtype=np.float32)
    labels = [str(label) for label in ck.labels[:n_prototypes]]
    labels = [label if label in meta.vocabulary else "neutral" for label in labels]
    start = time.perf_counter()
    _, imagined = imagine_latents(z, rt.encoder, rt.generator, labels)
    generate_encode = time.perf_counter() - start
    return {
        "prototypes": n_prototypes,
        "imagined_latents": len(imagined),
        "generate_encode_s": round(generate_encode, 3),
    }


def bench_scheduler(directory: str, ck, persons: list[str], trials: int) -> dict:
    """Full imagination (with training) and the wait of a face that arrives meanwhile."""
    taught = os.path.join(directory, "taught")
    rt = _runtime(taught, imagination={"chunk_prototypes": 4})
    _teach_persons(rt, ck, persons)
    rt.close()
    rt = _runtime(shutil.copytree(taught, os.path.join(directory, "full")))
    for person in persons:  # load the memories before timing
        rt.persons.get(person)
    work = sum(len(rt.scheduler.pending(s)[1]) for s in rt.persons.resident())
    rt.set_idle(True)
    start = time.perf_counter()
    report = rt.imagine(600.0)
    full = time.perf_counter() - start
    rng = np.random.default_rng(1)
    face_waits, yields = [], []
    face = ck.images[0]
    for trial in range(trials):
        busy = _runtime(shutil.copytree(taught, os.path.join(directory, f"trial{trial}")))
        for person in persons:
            busy.persons.get(person)
        busy.set_idle(True)
        done = threading.Event()
        worker = threading.Thread(target=lambda rt=busy, done=done: (rt.imagine(600.0), done.set()))
        worker.start()
        time.sleep(float(rng.uniform(0.005, 0.8 * full)))
        t0 = time.perf_counter()
        busy.process_face(face, person_id=persons[0])
        face_waits.append(time.perf_counter() - t0)
        done.wait(60)
        yields.append(time.perf_counter() - t0)
        worker.join()
        busy.close()
    return {
        "prototypes_pending": work,
        "imagined_latents": report.latents,
        "full_imagination_s": round(full, 3),
        "face_wait": _percentiles(face_waits),
        "scheduler_yield": _percentiles(yields),
    }


def bench_remeasure(directory: str, ck, persons: list[str]) -> dict:
    """Measuring the known people's recentring terms for a newcomer, then again after one of
    them shows an expression again: only their new faces, against all of their faces (their
    entry forgotten first, as every re-measure was before) in the same run."""
    rt = _runtime(os.path.join(directory, "remeasure"), imagination={"recentre_min_peers": 1})
    newcomer, known = persons[0], persons[1:]
    _teach_persons(rt, ck, known)
    _show_first_expression(rt, ck, newcomer)
    lock = threading.RLock()

    def measure() -> tuple[float, int]:
        # The scheduler's measuring step alone (rt.imagine would also imagine for the newcomer).
        rt.scheduler._activity.clear()
        peers, waiting = [rt.persons.get(p) for p in known], [rt.persons.get(newcomer)]
        start = time.perf_counter()
        chunks, complete = rt.scheduler._measure_peers(peers, waiting, set(known), math.inf, lock)
        assert complete
        return time.perf_counter() - start, chunks

    first_s, first_chunks = measure()
    shown_again = _show_first_expression(rt, ck, known[0])
    new_s, new_chunks = measure()
    rt.scheduler.known.forget(known[0])
    all_s, all_chunks = measure()
    rt.close()
    return {
        "known_people": len(known),
        "first_measure_s": round(first_s, 3),
        "first_measure_chunks": first_chunks,
        "again_faces_shown": shown_again,
        "again_new_faces_s": round(new_s, 4),
        "again_new_faces_chunks": new_chunks,
        "again_all_faces_s": round(all_s, 4),
        "again_all_faces_chunks": all_chunks,
        "ratio_all_to_new": round(all_s / new_s, 1),
    }


def bench_learning(directory: str, ck, persons: list[str], rounds: int = 5) -> dict:
    """Learning the persons' labelled CK+ faces, with and without replay after each episode
    (rounds alternate between the two; the median round is reported)."""
    per_episode: dict[bool, list[float]] = {False: [], True: []}
    counts: dict[bool, tuple[int, int]] = {}
    for round_ in range(rounds + 1):  # round 0 warms up (imports, first calls) and is dropped
        for replay in (False, True):
            folder = os.path.join(directory, f"learning_{round_}_{replay}")
            rt = _runtime(folder, learning={"replay": replay})
            _teach_persons(rt, ck, persons)
            stats = rt.stats()
            rt.close()
            episodes = sum(p["episodes"] for p in stats["persons"].values())
            learn = stats["timings"]["learn"]
            counts[replay] = (episodes, learn["count"])
            if round_:
                per_episode[replay].append(1000.0 * learn["total_s"] / episodes)
    results: dict = {}
    for replay in (False, True):
        results["with_replay" if replay else "without_replay"] = {
            "episodes": counts[replay][0],
            "faces": counts[replay][1],
            "ms_per_episode_median": round(float(np.median(per_episode[replay])), 3),
        }
    results["ratio_with_to_without"] = round(
        results["with_replay"]["ms_per_episode_median"]
        / results["without_replay"]["ms_per_episode_median"],
        2,
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=600, help="faces per throughput run")
    parser.add_argument("--frames", type=int, default=60, help="JAFFE frames for detection")
    parser.add_argument("--trials", type=int, default=30, help="preemption trials")
    parser.add_argument("--data-dir", help="shared data folder")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    ck = load_npz(data_dir / "ckplus48.npz")
    jaffe = load_npz(data_dir / "jaffe.npz")
    subjects, counts = np.unique(ck.subjects, return_counts=True)
    persons = [str(s) for s in subjects[np.argsort(-counts, kind="stable")][:5]]
    results: dict = {"python": platform.python_version(), "machine": platform.machine()}
    with tempfile.TemporaryDirectory() as directory:
        rt = _runtime(directory)
        _teach_persons(rt, ck, persons)
        results["encoder_only_baseline"] = bench_encoder_only(rt, ck, args.faces)
        for n in (1, 5):
            key = f"runtime_{n}_person{'s' if n > 1 else ''}"
            results[key] = bench_throughput(rt, ck, persons[:n], args.faces)
            results[key]["ratio_to_encoder_only"] = round(
                results[key]["faces_per_s"] / results["encoder_only_baseline"]["faces_per_s"], 3
            )
        results["full_frames_with_detection"] = bench_frames(rt, jaffe, args.frames)
        results["imagination_200x6"] = bench_imagination(rt, ck)
        # What one robot process holds: one runtime after all of the above (the benchmarks
        # below start many more runtimes, which the process peak then includes).
        results["peak_rss_mb_one_runtime"] = _peak_rss_mb()
        rt.close()
        results["scheduler"] = bench_scheduler(directory, ck, persons, args.trials)
        results["remeasure"] = bench_remeasure(directory, ck, persons)
        results["learning"] = bench_learning(directory, ck, persons)
    results["peak_rss_mb"] = _peak_rss_mb()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
