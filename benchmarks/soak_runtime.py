"""Soak: a long simulated day of faces through the runtime, and whether anything grows unbounded.

Real CK+ faces stream through one :class:`ExpressionRuntime` (bundled int8 models) as a robot
would see them: ``--fps`` frames per simulated second with ``--faces-per-frame`` people in view,
for ``--minutes`` simulated minutes, over ``--ids`` person ids (CK+ subjects). Visitors come in
groups that stay ``--visit-s`` seconds; at the start of each visit every visitor shows one
expression labelled for a few seconds (learning episodes, saves), afterwards they are only
recognised. Every ``--gap-every-s`` seconds the scene empties for ``--gap-s`` seconds: the robot is
idle and imagines (``imagine()`` slices until done). Time is simulated (the idle timer runs on the
simulated clock); the work is real. ``memory.max_in_ram`` stays at its default, so persons are
evicted and reloaded all day.

Printed (JSON): faces and faces/s (wall time of the face calls), imagination time, peak RSS
(``ru_maxrss``), nodes per memory (episodic/semantic, max and mean over persons), files and bytes
on disk, evictions, and the time of one ``stats()`` call at the end. A second phase measures the
old worst case of eviction: unlabelled faces alternating over all ids (``max_in_ram`` 8), where
every face evicts one person (nothing changed: no write) and reloads another from disk; the same
loop with the old rule (every eviction rewrites and fsyncs) runs first as the in-run baseline.
A third phase runs ``identity`` mode with a new stranger in every face (``--strangers``, CK+
faces with +-2 grey levels of noise): time per face for the first and last 300, and records left
on disk (at most ``persons.max_unlabelled``).

Run: ``python benchmarks/soak_runtime.py [--minutes 10] [--json FILE]`` (about 2-4 minutes on one
core).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clifer_edge.datasets import default_data_dir, load_npz
from clifer_edge.labels import BASIC_EXPRESSIONS
from clifer_edge.memory import GrowingDualMemory
from clifer_edge.runtime import ExpressionRuntime, load_config


class SimClock:
    """The simulated time the runtime's idle timer reads."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _subjects(ck, n_ids: int) -> dict[str, np.ndarray]:
    """Row indices of each of the first ``n_ids`` CK+ subjects with basic-expression faces."""
    out = {}
    for name in sorted(set(ck.subjects.tolist())):
        rows = np.flatnonzero((ck.subjects == name) & np.isin(ck.labels, BASIC_EXPRESSIONS))
        if len(rows) >= 6:
            out[name] = rows
        if len(out) == n_ids:
            break
    return out


def soak(args: argparse.Namespace, ck, directory: Path) -> dict:
    clock = SimClock()
    config = load_config(None).replace(memory={"directory": str(directory)})
    rt = ExpressionRuntime(config, clock=clock)
    persons = _subjects(ck, args.ids)
    names = list(persons)
    rng = np.random.default_rng(0)
    frame_dt = 1.0 / args.fps
    n_frames = int(args.minutes * 60 * args.fps)
    face_seconds = imagine_seconds = 0.0
    n_faces = n_learned = 0
    group: list[str] = []
    taught: dict[str, str] = {}
    visit_start = -1e9
    for frame in range(n_frames):
        clock.now = frame * frame_dt
        in_gap = (clock.now % args.gap_every_s) >= args.gap_every_s - args.gap_s
        if in_gap:
            if rt.is_idle():
                start = time.perf_counter()
                for _ in range(20):
                    report = rt.imagine(0.5)
                    if report is None or report.done:
                        break
                imagine_seconds += time.perf_counter() - start
            continue
        if clock.now - visit_start >= args.visit_s:
            visit_start = clock.now
            group = list(rng.choice(names, size=args.faces_per_frame, replace=False))
            for person in group:
                taught[person] = str(rng.choice(ck.labels[persons[person]]))
        labelling = clock.now - visit_start < args.label_s
        start = time.perf_counter()
        for person in group:
            rows = persons[person]
            if labelling:
                rows = rows[ck.labels[rows] == taught[person]]
            row = int(rng.choice(rows))
            label = taught[person] if labelling else None
            rt.process_face(ck.images[row], person_id=person, label=label)
            n_learned += label is not None
        face_seconds += time.perf_counter() - start
        n_faces += len(group)
    start = time.perf_counter()
    stats = rt.stats()
    stats_ms = 1000.0 * (time.perf_counter() - start)
    rt.close()
    nodes = {"episodic": [], "semantic": []}
    for path in sorted(directory.glob("*.gdm")):
        memory = GrowingDualMemory.load(path).stats()
        for name in nodes:
            nodes[name].append(memory[name]["nodes"])
    files = [p for p in directory.rglob("*") if p.is_file()]
    return {
        "simulated_minutes": args.minutes,
        "ids": len(names),
        "faces": n_faces,
        "faces_labelled": n_learned,
        "faces_per_s": round(n_faces / face_seconds, 1),
        "imagination_s": round(imagine_seconds, 2),
        "imagined_latents": stats["imagination"]["latents"],
        "evictions": stats["evictions"],
        "persons_known": stats["persons_known"],
        "stats_call_ms": round(stats_ms, 3),
        "nodes_per_memory": {
            name: {"max": int(max(v)), "mean": round(float(np.mean(v)), 1)}
            for name, v in nodes.items()
            if v
        },
        "max_nodes_config": config.memory.max_nodes,
        "files_on_disk": len(files),
        "bytes_on_disk": sum(p.stat().st_size for p in files),
        "temporaries_left": sum(p.name.endswith(".tmp") for p in files),
    }


def alternating(ck, directory: Path, n_ids: int, n_faces: int) -> dict:
    """Unlabelled faces over ``n_ids`` learned persons in turn: every face evicts someone.

    Run twice in the same process: with the old rule (every eviction rewrites and fsyncs the
    person) as the baseline, then with the current one (only what changed is written).
    """
    rt = ExpressionRuntime(load_config(None).replace(memory={"directory": str(directory)}))
    persons = _subjects(ck, n_ids)
    names = list(persons)
    for name in names:  # give everyone a memory first
        rows = persons[name][:4]
        for row in rows:
            rt.process_face(ck.images[row], person_id=name, label=str(ck.labels[rows[0]]))
    rt.save()
    store = rt.persons
    writes = [0]
    save = store.save

    def counted_save(state):
        writes[0] += 1
        save(state)

    def old_rule(state):  # memory and record rewritten whether they changed or not
        state.saved_memory_episodes = None
        counted_save(state)

    store.save = counted_save
    result: dict = {"ids": len(names), "faces": n_faces}
    for rule in ("old_rule_save_every_eviction", "only_changes"):
        if rule.startswith("old"):
            store.save_if_changed = old_rule
        else:
            del store.save_if_changed  # back to the class's method
        writes[0] = 0
        evictions = rt.stats()["evictions"]
        start = time.perf_counter()
        for i in range(n_faces):
            name = names[i % len(names)]
            rt.process_face(ck.images[persons[name][i % len(persons[name])]], person_id=name)
        seconds = time.perf_counter() - start
        result[rule] = {
            "faces_per_s": round(n_faces / seconds, 1),
            "evictions": rt.stats()["evictions"] - evictions,
            "writes": writes[0],
        }
    result["speed_ratio"] = round(
        result["only_changes"]["faces_per_s"]
        / result["old_rule_save_every_eviction"]["faces_per_s"],
        2,
    )
    rt.close()
    return result


def strangers(ck, directory: Path, n_faces: int) -> dict:
    """Identity mode with a new stranger in every face: the cost per face as the ids pile up."""
    settings = {"mode": "identity", "identity_threshold": 1e-4}
    rt = ExpressionRuntime(
        load_config(None).replace(memory={"directory": str(directory)}, persons=settings)
    )
    rng = np.random.default_rng(0)
    seconds = []
    for i in range(n_faces):
        face = ck.images[i % len(ck.images)].astype(np.int16) + rng.integers(-2, 3, (48, 48))
        start = time.perf_counter()
        rt.process_face(np.clip(face, 0, 255).astype(np.uint8))
        seconds.append(time.perf_counter() - start)
    stats = rt.stats()
    rt.close()
    window = min(300, n_faces // 2)
    return {
        "faces": n_faces,
        "ids_created": stats["persons_known"] + stats["retention_deleted"],
        "first_faces_ms": round(1000 * float(np.mean(seconds[:window])), 3),
        "last_faces_ms": round(1000 * float(np.mean(seconds[-window:])), 3),
        "records_on_disk": len(list(directory.glob("*.person.npz"))),
        "max_unlabelled": rt.config.persons.max_unlabelled,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="simulated minutes")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--faces-per-frame", type=int, default=5)
    parser.add_argument("--ids", type=int, default=50, help="person ids (CK+ subjects)")
    parser.add_argument("--visit-s", type=float, default=20.0, help="seconds a group stays")
    parser.add_argument("--label-s", type=float, default=2.0, help="labelled seconds per visit")
    parser.add_argument("--gap-every-s", type=float, default=60.0, help="an idle gap every ...")
    parser.add_argument("--gap-s", type=float, default=10.0, help="... of this many seconds")
    parser.add_argument("--alternating-faces", type=int, default=5000)
    parser.add_argument("--strangers", type=int, default=3000, help="identity-mode strangers")
    parser.add_argument("--data-dir", help="shared data folder")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    ck = load_npz(data_dir / "ckplus48.npz")
    with tempfile.TemporaryDirectory(prefix="clifer-soak-") as tmp:
        results = {"soak": soak(args, ck, Path(tmp) / "soak")}
        results["alternating"] = alternating(
            ck, Path(tmp) / "alternating", args.ids, args.alternating_faces
        )
        results["identity_strangers"] = strangers(ck, Path(tmp) / "strangers", args.strangers)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
