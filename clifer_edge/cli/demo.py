"""The main job: real faces of several people stream through the full runtime, which learns each
person's expressions class by class and imagines the missing ones while the robot is idle.

Subjects come from the shared data: JAFFE full-frame photos (so the face detector runs) and CK+
face crops. For each subject the expressions are presented one class at a time in CLIFER's order
(:func:`clifer_edge.evaluation.class_order`: neutral first where there is one), as labelled
episodes; between classes the robot is idle and the imagination scheduler runs. After each class
the subject's held-out faces are classified (unlabelled, through the runtime). The same stream goes
through a second runtime with imagination switched off. Reported per person: macro F1 on the
classes seen so far and on all of the subject's classes (mean over the steps), with and without
imagination, and timings. Held-out faces and F1 are those of ``clifer-edge eval``
(:data:`clifer_edge.evaluation.SPLIT_RULE`): JAFFE one of each class's three photos; CK+ the last
of the three frames of the class's sequence (a frame split: near-duplicates of the training
frames, so CK+ seen-class F1 is optimistic; unseen-class F1 is not affected).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from clifer_edge.datasets import (
    DATA_DIR_ENV,
    DatasetError,
    FaceDataset,
    default_data_dir,
    load_npz,
)
from clifer_edge.evaluation.features import prepare_faces
from clifer_edge.evaluation.protocol import class_order, macro_f1
from clifer_edge.evaluation.split import split_subject
from clifer_edge.labels import BASIC_EXPRESSIONS
from clifer_edge.models import CalibrationError, ModelFileError
from clifer_edge.preprocessing import to_uint8
from clifer_edge.runtime.config import load_config
from clifer_edge.runtime.runtime import ExpressionRuntime

logger = logging.getLogger(__name__)

#: Label given to a held-out face when no face was detected in it (counts as wrong).
NO_FACE = "no-face"

#: The shared data files the demo reads (JAFFE full photos, CK+ crops).
DATA_FILES = ("jaffe.npz", "ckplus48.npz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out/)")
    parser.add_argument("--config", help="runtime YAML (default: the shipped default)")
    parser.add_argument(
        "--data-dir",
        help=f"shared data folder holding {' and '.join(DATA_FILES)} "
        f"(default: ${DATA_DIR_ENV}, else ../shared/data)",
    )
    parser.add_argument("--jaffe-subjects", type=int, default=10, help="JAFFE subjects (of 10)")
    parser.add_argument(
        "--ck-subjects", type=int, default=8, help="CK+ subjects, most classes first (8)"
    )
    parser.add_argument(
        "--idle-budget", type=float, default=3.0, help="seconds of imagination per idle gap"
    )
    parser.add_argument("--seed", type=int, default=0)


@dataclass
class Subject:
    """One person's stream: per class (in presentation order), training and held-out rows."""

    name: str
    dataset: str
    full_frames: bool
    data: FaceDataset
    classes: list[str]
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]

    def images(self, rows: np.ndarray) -> list[np.ndarray]:
        return [self.data.images[i] for i in rows]


@dataclass
class Curves:
    """F1 after each learned class, for one subject and one runtime."""

    seen: list[float] = field(default_factory=list)
    all: list[float] = field(default_factory=list)


def split_subjects(
    data: FaceDataset, names: list[str], prefix: str, full_frames: bool, seed: int
) -> list[Subject]:
    """The evaluation's split and class order for each named subject (basic expressions only:
    the generator imagines those). Classes recorded in one sequence (CK+) hold out their last
    frame."""
    data = data.subset(np.isin(data.labels, BASIC_EXPRESSIONS))
    out = []
    for name in names:
        split = split_subject(data, name, seed=seed, allow_frame_split=True)
        classes = class_order(split.classes)
        train = {c: split.train[data.labels[split.train] == c] for c in classes}
        test = {c: split.test[data.labels[split.test] == c] for c in classes}
        dataset = "JAFFE" if full_frames else "CK+"
        out.append(Subject(f"{prefix}-{name}", dataset, full_frames, data, classes, train, test))
    return out


def jaffe_subjects(data: FaceDataset, count: int, seed: int = 0) -> list[Subject]:
    """The first ``count`` JAFFE subjects (by name)."""
    names = sorted(set(data.subjects.tolist()))[:count]
    return split_subjects(data, names, "jaffe", True, seed)


def ck_subjects(data: FaceDataset, count: int, seed: int = 0) -> list[Subject]:
    """The ``count`` CK+ subjects with the most basic classes."""
    basic = np.isin(data.labels, BASIC_EXPRESSIONS)
    n_classes = {
        name: len(set(data.labels[(data.subjects == name) & basic].tolist()))
        for name in set(data.subjects.tolist())
    }
    names = sorted(n_classes, key=lambda name: (-n_classes[name], name))[:count]
    return split_subjects(data, names, "ck", False, seed)


def n_test(subject: Subject) -> int:
    """Held-out faces of a subject."""
    return sum(len(rows) for rows in subject.test.values())


class SimClock:
    """The idle timer's clock: real time plus simulated idle gaps (the demo cannot wait 10 s)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def skip(self, seconds: float) -> None:
        self.offset += seconds


def _feed(rt: ExpressionRuntime, subject: Subject, image: np.ndarray, label: str | None) -> str:
    """One face through the runtime; the predicted label (``no-face`` if none was detected)."""
    if subject.full_frames:
        results = rt.process_frame(image, person_id=subject.name, label=label)
        return results[0].label if results else NO_FACE
    return rt.process_face(image, person_id=subject.name, label=label).label


def evaluate(rt: ExpressionRuntime, subject: Subject, seen: list[str]) -> tuple[float, float]:
    """Macro F1 (the evaluation's) on the held-out faces of the seen classes and of all the
    subject's classes."""
    truth, predicted = [], []
    for label in subject.classes:
        for image in subject.images(subject.test[label]):
            truth.append(label)
            predicted.append(_feed(rt, subject, image, None))
    truth_array, predicted_array = np.asarray(truth), np.asarray(predicted)
    is_seen = np.isin(truth_array, seen)
    f1_seen = macro_f1(truth_array[is_seen], predicted_array[is_seen], seen)
    return f1_seen, macro_f1(truth_array, predicted_array, subject.classes)


def _face_crop(rt: ExpressionRuntime, subject: Subject, row: int) -> np.ndarray | None:
    """The model input of one of the subject's images (the evaluation's face preparation with
    the runtime's detector); None if no face is found."""
    detector = rt.detector if subject.full_frames else None
    one = subject.data.subset(np.array([row]))
    prepared = prepare_faces(one, rt.image_size, rt.channels, detector, progress=False)
    return prepared.faces[0] if prepared.valid[0] else None


def imagined_grid(rt: ExpressionRuntime, subjects: list[Subject], path: Path) -> int:
    """Decode one episodic prototype per subject under every expression; save a PNG grid.

    The prototype is one of the subject's first class (neutral for JAFFE): the row shows a real
    face of that class, then what the robot imagines the person looks like with each expression.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vocabulary = [str(c) for c in rt.generator.metadata.vocabulary]
    rows: list[tuple[str, str, np.ndarray, np.ndarray | None]] = []
    for subject in subjects:
        state = rt.persons.get(subject.name)
        prototypes, labels = rt.scheduler.real_prototypes(state)
        first = [i for i, label in enumerate(labels) if label == subject.classes[0]]
        if first:
            real = _face_crop(rt, subject, int(subject.train[subject.classes[0]][0]))
            rows.append((subject.name, labels[first[0]], prototypes[first[0]], real))
    if not rows:
        return 0
    z = rt.calibration.to_latent(np.stack([row[2] for row in rows]))
    faces = rt.generator.generate(np.repeat(z, len(vocabulary), axis=0), vocabulary * len(rows))
    images = to_uint8(faces)
    columns = len(vocabulary) + 1
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.3 * columns, 1.4 * len(rows)), squeeze=False
    )
    for r, (name, source, _, real) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                if real is not None:
                    ax.imshow(to_uint8(real)[..., 0], cmap="gray", vmin=0, vmax=255)
                ax.set_ylabel(f"{name}\n({source})", fontsize=7)
                if r == 0:
                    ax.set_title("real face", fontsize=8)
                continue
            target = vocabulary[c - 1]
            ax.imshow(images[r * len(vocabulary) + c - 1][..., 0], cmap="gray", vmin=0, vmax=255)
            if r == 0:
                ax.set_title(target, fontsize=8)
            if target == source:
                for spine in ax.spines.values():
                    spine.set_color("tab:green")
                    spine.set_linewidth(2)
    fig.suptitle(
        "a real face, then G(episodic prototype, expression); green = the expression shown",
        fontsize=9,
    )
    # keep about 0.4 inch at the top for the title, above the column headings
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(rows)


def plot_curves(subjects: list[Subject], curves: dict[str, dict[str, Curves]], path: Path) -> None:
    """F1 as classes are learned, mean over the subjects of each data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({s.dataset for s in subjects})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        names = [s.name for s in subjects if s.dataset == dataset]
        # colour = with or without imagination; line and marker = which classes are tested
        for mode, color, what in (
            ("imagination", "tab:green", "with imagination"),
            ("no imagination", "tab:gray", "no imagination"),
        ):
            for part, style, marker in (("all", "-", "o"), ("seen", ":", "s")):
                series = [getattr(curves[mode][name], part) for name in names]
                length = max(len(s) for s in series)
                mean = [np.mean([s[k] for s in series if len(s) > k]) for k in range(length)]
                ax.plot(
                    range(1, length + 1),
                    mean,
                    style,
                    color=color,
                    marker=marker,
                    linewidth=2.2 if mode == "imagination" else 1.4,
                    label=f"{what}, {part} classes",
                )
        ax.set_title(f"{dataset}: mean over {len(names)} subjects")
        ax.set_xlabel("classes learned")
        ax.set_ylabel("macro F1 (held-out faces)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    # one legend for both panels, below them, where it hides no curve
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def missing_data(data_dir: Path) -> str | None:
    """One line naming the folder and how to point at the data, or None if it is all there."""
    missing = [name for name in DATA_FILES if not (data_dir / name).is_file()]
    if not missing:
        return None
    what = "no such folder" if not data_dir.is_dir() else f"no {' or '.join(missing)} there"
    return (
        f"shared data not found in {data_dir} ({what}): pass --data-dir DIR or set "
        f"{DATA_DIR_ENV}=DIR to the folder holding {' and '.join(DATA_FILES)}"
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    problem = missing_data(data_dir)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config)
    files = config.model_files()
    try:
        encoder, generator = files.load(config.models.num_threads)
        calibration = files.load_calibration(encoder)
    except (ModelFileError, CalibrationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    try:
        jaffe, ckplus = (load_npz(data_dir / name) for name in DATA_FILES)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    subjects = jaffe_subjects(jaffe, args.jaffe_subjects, args.seed)
    subjects += ck_subjects(ckplus, args.ck_subjects, args.seed)
    clock = SimClock()
    runtimes: dict[str, ExpressionRuntime] = {}
    for mode, enabled in (("imagination", True), ("no imagination", False)):
        memory_dir = out / "memories" / mode.replace(" ", "-")
        if memory_dir.exists():
            shutil.rmtree(memory_dir)  # the demo's own memories from a previous run
        runtimes[mode] = ExpressionRuntime(
            config.replace(memory={"directory": str(memory_dir)}, imagination={"enabled": enabled}),
            encoder=encoder,
            generator=generator,
            calibration=calibration,
            clock=clock,
        )
    curves = {mode: {s.name: Curves() for s in subjects} for mode in runtimes}
    before = {}
    imagination_s = {s.name: 0.0 for s in subjects}
    n_steps = max(len(s.classes) for s in subjects)
    total = sum(
        2 * (sum(len(v) for v in s.train.values()) + (len(s.classes) + 1) * n_test(s))
        for s in subjects
    )
    with tqdm(total=total, desc="faces", unit="face") as progress:
        for subject in subjects:  # before learning: the fallback answers
            _, before[subject.name] = evaluate(runtimes["imagination"], subject, [])
            evaluate(runtimes["no imagination"], subject, [])
            progress.update(2 * n_test(subject))
        for step in range(n_steps):
            for subject in subjects:
                if step >= len(subject.classes):
                    continue
                label = subject.classes[step]
                seen = subject.classes[: step + 1]
                for mode, rt in runtimes.items():
                    for image in subject.images(subject.train[label]):
                        _feed(rt, subject, image, label)
                        progress.update(1)
                    # The person leaves: an idle gap, in which imagination may run.
                    clock.skip(config.imagination.idle_timeout_s + 1.0)
                    deadline = time.perf_counter() + args.idle_budget
                    while time.perf_counter() < deadline:
                        report = rt.imagine(min(0.5, args.idle_budget))
                        if report is None:
                            break
                        if mode == "imagination":
                            imagination_s[subject.name] += report.seconds
                        if report.done:
                            break
                    f1_seen, f1_all = evaluate(rt, subject, seen)
                    curves[mode][subject.name].seen.append(f1_seen)
                    curves[mode][subject.name].all.append(f1_all)
                    progress.update(n_test(subject))

    grid_rows = imagined_grid(runtimes["imagination"], subjects, out / "imagined.png")
    plot_curves(subjects, curves, out / "f1_curves.png")
    stats = {mode: rt.stats() for mode, rt in runtimes.items()}
    for rt in runtimes.values():
        rt.close()
    results = _table(subjects, curves, before, imagination_s)
    elapsed = time.perf_counter() - started
    timings = stats["imagination"]["timings"]
    summary = {
        "subjects": results,
        "seconds": round(elapsed, 1),
        "timings_ms_per_face": {k: v["mean_ms"] for k, v in timings.items()},
        "imagined_latents": stats["imagination"]["imagination"]["latents"],
        "fallback_publictest_accuracy": calibration.info.get("publictest_accuracy"),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(
        "\ntimings (ms per face): "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in summary["timings_ms_per_face"].items())
    )
    print(
        f"imagined {summary['imagined_latents']} latents; wrote {out / 'f1_curves.png'}, "
        f"{out / 'imagined.png'} ({grid_rows} prototypes), {out / 'results.json'}; "
        f"total {elapsed:.0f} s"
    )
    return 0


def _table(
    subjects: list[Subject],
    curves: dict[str, dict[str, Curves]],
    before: dict[str, float],
    imagination_s: dict[str, float],
) -> list[dict[str, Any]]:
    """Print the per-person table and return its rows."""
    header = (
        f"{'person':<13}{'data':<6}{'cls':>4}{'fallback':>9}"
        f"{'seen F1':>9}{'+imag':>7}{'all F1':>8}{'+imag':>7}{'gain':>7}{'imag s':>8}"
    )
    print("\nmacro F1 on held-out faces, mean over the steps of class-incremental learning")
    print("(seen = classes taught so far; all = all the person's classes; +imag = with")
    print(" imagination; gain = all F1 +imag - all F1; imag s = seconds spent imagining)")
    print(header)
    print("-" * len(header))
    rows = []
    for subject in subjects:
        plain, imag = curves["no imagination"][subject.name], curves["imagination"][subject.name]
        row = {
            "person": subject.name,
            "dataset": subject.dataset,
            "classes": len(subject.classes),
            "fallback_f1_all": before[subject.name],
            "f1_seen": float(np.mean(plain.seen)),
            "f1_seen_imagination": float(np.mean(imag.seen)),
            "f1_all": float(np.mean(plain.all)),
            "f1_all_imagination": float(np.mean(imag.all)),
            "imagination_s": imagination_s[subject.name],
            "curve_all": plain.all,
            "curve_all_imagination": imag.all,
        }
        rows.append(row)
        print(_format_row(row))
    for dataset in sorted({s.dataset for s in subjects}):
        group = [r for r in rows if r["dataset"] == dataset]
        mean = {
            key: float(np.mean([r[key] for r in group]))
            for key in group[0]
            if isinstance(group[0][key], float)
        }
        print(_format_row({"person": f"mean {dataset}", "dataset": "", "classes": "", **mean}))
    return rows


def _format_row(row: dict[str, Any]) -> str:
    gain = row["f1_all_imagination"] - row["f1_all"]
    return (
        f"{row['person']:<13}{row['dataset']:<6}{row['classes']!s:>4}"
        f"{row['fallback_f1_all']:>9.3f}{row['f1_seen']:>9.3f}{row['f1_seen_imagination']:>7.3f}"
        f"{row['f1_all']:>8.3f}{row['f1_all_imagination']:>7.3f}{gain:>+7.3f}"
        f"{row['imagination_s']:>8.2f}"
    )
