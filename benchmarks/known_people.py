"""How many people must the robot know before recentring G on them helps?

The robot recentres G's change of expression on the other people it holds
(``imagination.recentre``, :class:`clifer_edge.imagination.PeerRecentring`): each pair of
expressions (s, c) is shifted by the mean, over the known people who showed both, of how they
really move from s to c beyond what G draws. One person's offsets are noisy (JAFFE has two or
three photos per class), so a pair is shifted only once ``imagination.recentre_min_peers`` people
showed it. This runs ``clifer-edge eval`` (condition ``clifer``) with the robot knowing 0, 1, 2,
... of the other subjects (``--known-people``), for the shipped minimum and for a minimum of 1,
and prints the Exp. 2 figures (episodic memory) and a plot.

Run: ``python benchmarks/known_people.py [--data-dir DIR] [--out DIR]`` (about 3 minutes here;
``--known 0,all --max-subjects 3`` for a quick look).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tqdm.auto import tqdm

from clifer_edge.cli import main as cli
from clifer_edge.datasets import default_data_dir
from clifer_edge.runtime import load_config

#: (file in the data folder, extra eval arguments)
DATA_SETS = (("jaffe.npz", ["--detect-faces"]), ("ckplus48.npz", []))
KNOWN = "0,1,2,3,4,5,7,all"


def run_eval(data: Path, extra: list[str], known: int | None, config: Path | None) -> dict:
    """The episodic Exp. 2 summary row of one ``clifer-edge eval`` run of ``clifer``."""
    with tempfile.TemporaryDirectory() as out:
        argv = ["eval", "--data", str(data), "--out", out, "--conditions", "clifer"]
        argv += ["--few-shot-class", "none", "--static-train", "none", "--no-progress", *extra]
        if known is not None:
            argv += ["--known-people", str(known)]
        if config is not None:
            argv += ["--runtime-config", str(config)]
        report = io.StringIO()  # each run prints its whole report; keep the one row
        with contextlib.redirect_stdout(report):
            status = cli(argv)
        if status != 0:
            raise SystemExit(f"clifer-edge {' '.join(argv)} failed:\n{report.getvalue()}")
        rows = json.loads((Path(out) / "results.json").read_text())["summary"]
    return next(r for r in rows if r["experiment"] == 2 and r["memory"] == "episodic")


def measure(
    data_dir: Path, known_counts: list[int | None], max_subjects: int | None = None
) -> list[dict[str, Any]]:
    """One row per data set, minimum and number of people known (None: all)."""
    shipped = load_config(None).imagination.recentre_min_peers
    limit = [] if max_subjects is None else ["--max-subjects", str(max_subjects)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "min1.yaml"
        one.write_text("imagination:\n  recentre_min_peers: 1\n")
        jobs = [
            (name, extra, minimum, known)
            for name, extra in DATA_SETS
            for minimum in (shipped, 1)
            for known in known_counts
        ]
        for name, extra, minimum, known in tqdm(jobs, desc="eval runs", unit="run"):
            config = one if minimum == 1 else None
            row = run_eval(data_dir / name, [*extra, *limit], known, config)
            results.append(
                {
                    "data": name,
                    "min_peers": minimum,
                    "known": "all" if known is None else known,
                    "exp2_steps": round(row["f1_steps_mean"], 3),
                    "unseen_acc": round(row["unseen_acc_steps_mean"], 3),
                    "n_subjects": row["n_subjects"],
                }
            )
    return results


def plot(results: list[dict[str, Any]], path: Path) -> None:
    names = list(dict.fromkeys(r["data"] for r in results))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = [r for r in results if r["data"] == name]
        ticks = list(dict.fromkeys(str(r["known"]) for r in rows))
        for minimum in sorted({r["min_peers"] for r in rows}, reverse=True):
            line = [r for r in rows if r["min_peers"] == minimum]
            ax.plot(
                [ticks.index(str(r["known"])) for r in line],
                [r["unseen_acc"] for r in line],
                marker="o",
                label=f"recentre_min_peers {minimum}",
            )
        others = rows[0]["n_subjects"] - 1
        ax.set_xticks(range(len(ticks)), [t if t != "all" else f"all ({others})" for t in ticks])
        ax.set_xlabel("other subjects the robot knows")
        ax.set_ylabel("unseen-class accuracy over steps")
        ax.set_title(f"{name} ({rows[0]['n_subjects']} subjects), clifer, episodic")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="shared data folder")
    parser.add_argument("--out", type=Path, default=Path("runs/known-people"))
    parser.add_argument(
        "--known", default=KNOWN, help=f"people known, 'all' = every other ({KNOWN})"
    )
    parser.add_argument("--max-subjects", type=int, default=None, help="subjects per data set")
    args = parser.parse_args()
    known = [None if k.strip() == "all" else int(k) for k in args.known.split(",")]
    results = measure(args.data_dir or default_data_dir(), known, args.max_subjects)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "known_people.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "known_people.png")
    print("| data | recentre_min_peers | known | Exp. 2 over steps | unseen acc. |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['data']} | {r['min_peers']} | {r['known']} | {r['exp2_steps']:.3f} | "
            f"{r['unseen_acc']:.3f} |"
        )
    print(f"wrote {args.out / 'known_people.json'}, {args.out / 'known_people.png'}")


if __name__ == "__main__":
    main()
