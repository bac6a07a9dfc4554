"""Kill storm: ``kill -9`` the runtime again and again while it learns and saves; nothing is lost.

A writer process runs the runtime on real CK+ faces for ``--persons`` persons: labelled episodes
(each ends in a save of memory and record), unlabelled faces, evictions (``max_in_ram`` 2) and
imagination slices. It prints a line after every completed save. The storm starts it, kills it
with SIGKILL at a random moment (half of the kills 0-4 ms after a save began, so they land inside
the write; the others 0.2-2 s after its first completed save), counts the temporaries the kill
left, and starts it again on the same memory directory, ``--kills`` times. Every restart must find
each person with at least the faces of their last completed save, no file quarantined and no
temporary left behind (they are removed at start-up).

Printed (JSON): kills, kills inside a save, temporaries found after kills, persons and faces
checked, faces lost (must be 0), files quarantined (must be 0), temporaries after the last
restart (must be 0).

Run: ``python benchmarks/kill_storm.py [--kills 20] [--json FILE]`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from clifer_edge.datasets import default_data_dir

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from clifer_edge.datasets import load_npz
    from clifer_edge.labels import BASIC_EXPRESSIONS
    from clifer_edge.runtime import ExpressionRuntime, load_config

    directory, data = Path(sys.argv[1]), Path(sys.argv[2])
    n_persons, seed = int(sys.argv[3]), int(sys.argv[4])
    ck = load_npz(data / "ckplus48.npz")
    names = sorted(set(ck.subjects.tolist()))[:n_persons]
    config = load_config(None).replace(
        memory={"directory": str(directory)},
        persons={"max_in_ram": 2},
        learning={"episode_size": 4},
    )
    rt = ExpressionRuntime(config)
    for name in names:
        state = rt.persons.get(name)
        print("loaded", name, state.n_faces_learned, flush=True)
    print("quarantined", rt.stats()["quarantined_files"], flush=True)
    save = rt.persons.save

    def announced_save(state):
        print("saving", state.person_id, flush=True)
        save(state)
        print("saved", state.person_id, state.n_faces_learned, flush=True)

    rt.persons.save = announced_save
    rng = np.random.default_rng(seed)
    print("ready", flush=True)
    while True:
        name = names[int(rng.integers(len(names)))]
        rows = np.flatnonzero((ck.subjects == name) & np.isin(ck.labels, BASIC_EXPRESSIONS))
        label = str(ck.labels[rng.choice(rows)])
        for row in rows[ck.labels[rows] == label]:
            rt.process_face(ck.images[row], person_id=name, label=label)
        for row in rng.choice(rows, 3):
            rt.process_face(ck.images[row], person_id=name)
        if rng.random() < 0.3:
            rt.set_idle(True)
            rt.imagine(0.05)
            rt.set_idle(False)
        if rng.random() < 0.2:
            rt.save()
    """
)


def _start(script: Path, directory: Path, data_dir: Path, persons: int, seed: int):
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, str(script), str(directory), str(data_dir), str(persons), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _read_start(writer: subprocess.Popen) -> tuple[dict[str, int], int]:
    """The writer's start-up report: faces learned per person as loaded, files quarantined."""
    loaded: dict[str, int] = {}
    for line in writer.stdout:
        words = line.split()
        if words[:1] == ["loaded"]:
            loaded[words[1]] = int(words[2])
        elif words[:1] == ["quarantined"]:
            quarantined = int(words[1])
        elif words[:1] == ["ready"]:
            return loaded, quarantined
    raise RuntimeError("the writer ended before it was ready")


def storm(args: argparse.Namespace, directory: Path, data_dir: Path) -> dict:
    rng = np.random.default_rng(args.seed)
    script = directory.parent / "writer.py"
    script.write_text(WRITER)
    acknowledged: dict[str, int] = {}
    lost = quarantined = in_save = temporaries = checked = 0
    for kill in range(args.kills + 1):
        writer = _start(script, directory, data_dir, args.persons, kill)
        try:
            loaded, n_quarantined = _read_start(writer)
            quarantined += n_quarantined
            for person, faces in acknowledged.items():
                checked += 1
                lost += max(0, faces - loaded.get(person, 0))
            if kill == args.kills:
                break
            inside = rng.random() < 0.5
            # Outside a save, kill 0.2-2 s after the writer's first save of this life, however
            # slowly it starts (under emulation, say, learning one episode can take seconds).
            delay = float(rng.uniform(0.2, 2.0))
            deadline = math.inf
            saving = False
            for line in writer.stdout:
                words = line.split()
                if words[:1] == ["saved"]:
                    acknowledged[words[1]] = int(words[2])
                    saving = False
                    deadline = min(deadline, time.monotonic() + delay)
                elif words[:1] == ["saving"]:
                    saving = True
                    if inside:
                        time.sleep(float(rng.uniform(0.0, 0.004)))  # somewhere in the write
                        break
                if not inside and time.monotonic() >= deadline:
                    break
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
            in_save += saving
            temporaries += sum(p.name.endswith(".tmp") for p in directory.iterdir())
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait(timeout=30)
    left = sum(p.name.endswith(".tmp") for p in directory.rglob("*"))
    return {
        "kills": args.kills,
        "kills_inside_a_save": int(in_save),
        "temporaries_found_after_kills": int(temporaries),
        "persons": len(acknowledged),
        "checks": checked,
        "faces_acknowledged": int(sum(acknowledged.values())),
        "faces_lost": int(lost),
        "files_quarantined": int(quarantined),
        "temporaries_after_last_restart": int(left),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--persons", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", help="shared data folder")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    with tempfile.TemporaryDirectory(prefix="clifer-kill-storm-") as tmp:
        directory = Path(tmp) / "memories"
        result = storm(args, directory, data_dir)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    ok = result["faces_lost"] == 0 and result["files_quarantined"] == 0
    return 0 if ok and result["temporaries_after_last_restart"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
