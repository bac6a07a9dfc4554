"""What the platform check compares between the robot's CPU (aarch64) and x86_64.

``probe.py run`` records, with the bundled int8 models and real faces from the shared data, what
must not depend on the CPU: the encoder's latents (CK+ crops and FER2013 PublicTest faces), the
generator's images, the runtime's answers for CK+ persons before learning, after learning their
classes and after imagination, and face boxes and answers on full JAFFE photos (OpenCV detection).
``probe.py compare A B`` checks two such records: bit-identical latents and images, the same
labels and boxes, the same models on both sides. ``probe.py constraints`` pins the runtime
dependencies to the versions installed here, so both sides run the same library versions;
``probe.py install`` says which extras and build requirements a robot-side test run installs.

Run by ``tests/platform/aarch64.sh``; it uses only the installed package's public API.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

#: Persons taught in the runtime part (CK+ subjects with >= 4 basic classes, by name).
N_PERSONS = 8
#: FER2013 PublicTest faces encoded besides all of CK+.
N_FER = 512
#: JAFFE photos (full frames, detection + crop) run through the runtime.
N_JAFFE = 40


def _versions(names: list[str]) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _runtime_requirements(pyproject: Path) -> list[str]:
    """Names of the package's install requirements (from pyproject.toml)."""
    import tomllib

    with open(pyproject, "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    return [re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0] for dep in dependencies]


def constraints(pyproject: Path) -> str:
    """pip constraints: each runtime requirement at the version installed here."""
    pins = _versions(_runtime_requirements(pyproject))
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def robot_install(pyproject: Path) -> tuple[str, list[str]]:
    """What a robot-side test run installs: the package with every extra but the workstation's
    and ROS's (the test tools, and any split-off extra the tests use), and the build requirements.
    """
    import tomllib

    with open(pyproject, "rb") as handle:
        project = tomllib.load(handle)
    extras = [
        name
        for name in project["project"].get("optional-dependencies", {})
        if name not in ("train", "gpu", "ros")
    ]
    return (f"[{','.join(extras)}]" if extras else ""), project["build-system"]["requires"]


def run(data_dir: Path, out: Path) -> None:
    """Record latents, images and answers of the installed package on this machine."""
    import clifer_edge
    from clifer_edge.datasets import load_npz
    from clifer_edge.models import load_default_models
    from clifer_edge.preprocessing import preprocess_faces
    from clifer_edge.runtime import ExpressionRuntime, load_config

    encoder, generator = load_default_models(variant="int8", num_threads=1)
    meta = encoder.metadata
    size, channels = meta.image_size, meta.channels
    ck = load_npz(data_dir / "ckplus48.npz")
    fer = load_npz(data_dir / "fer2013.npz")
    fer_faces = fer.images[fer.splits == "PublicTest"][:N_FER]
    ck_latents = encoder.encode(preprocess_faces(ck.images, size, channels))
    fer_latents = encoder.encode(preprocess_faces(fer_faces, size, channels))
    vocabulary = list(generator.vocabulary)
    wanted = [vocabulary[i % len(vocabulary)] for i in range(32)]
    generated = generator.generate(ck_latents[:32], wanted)

    keys, labels, confidences = [], [], []
    boxes = []
    with tempfile.TemporaryDirectory(prefix="clifer-probe-") as memories:
        config = load_config(None).replace(memory={"directory": memories})
        rt = ExpressionRuntime(config, encoder=encoder, generator=generator)

        def answer(stage: str, name: str, frames: dict[str, list[np.ndarray]]) -> None:
            for label, images in frames.items():
                result = rt.process_face(images[-1], person_id=name)
                keys.append(f"{name}/{stage}/{label}")
                labels.append(result.label)
                confidences.append(result.confidence)

        # The tests' CK+ reader (one place for the subjects and their frame order): beside this
        # folder on the development machine and in the emulated robot root alike.
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from runtime_support import ck_subjects

        persons = [(s.name, s.frames) for s in ck_subjects(data_dir)[:N_PERSONS]]
        for name, frames in persons:
            answer("before", name, frames)
            for label, images in frames.items():
                for image in images[:-1]:
                    rt.process_face(image, person_id=name, label=label)
            rt.save()
            answer("learned", name, frames)
        rt.set_idle(True)
        for _ in range(10):  # until the work runs out, not the clock (emulation is slower)
            report = rt.imagine(budget_s=3600.0)
            if report is None or report.done:
                break
        rt.set_idle(False)
        for name, frames in persons:
            answer("imagined", name, frames)

        jaffe = load_npz(data_dir / "jaffe.npz")
        for i in range(min(N_JAFFE, len(jaffe))):
            found = rt.process_frame(jaffe.images[i], person_id=f"jaffe-{jaffe.subjects[i]}")
            box = found[0].box if found else None
            boxes.append((box.x, box.y, box.width, box.height) if box else (-1, -1, -1, -1))
            keys.append(f"jaffe/{i}")
            labels.append(found[0].label if found else "")
            confidences.append(found[0].confidence if found else np.nan)
        rt.close()

    info = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "package": str(Path(clifer_edge.__file__).parent),
        "backend": encoder.model.backend,
        "versions": _versions(["numpy", "ai-edge-litert", "opencv-python-headless", "PyYAML"]),
        "models": {name: entry.get("sha256") for name, entry in meta.models.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        info=np.array(json.dumps(info)),
        ck_latents=ck_latents,
        fer_latents=fer_latents,
        generated=generated,
        keys=np.array(keys),
        labels=np.array(labels),
        confidences=np.array(confidences, np.float64),
        jaffe_boxes=np.array(boxes, np.int64).reshape(-1, 4),
    )
    print(f"{info['machine']}: {len(ck_latents) + len(fer_latents)} latents, {len(keys)} answers")


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def compare(reference: Path, other: Path) -> list[str]:
    """Differences between two probe records (empty when the platforms agree); prints a table."""
    a, b = np.load(reference), np.load(other)
    info_a, info_b = json.loads(str(a["info"])), json.loads(str(b["info"]))
    name_a, name_b = info_a["machine"], info_b["machine"]
    problems = []
    for info in (info_a, info_b):
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        print(f"{info['machine']}: Python {info['python']}, {info['backend']}, {versions}")
    if info_a["models"] != info_b["models"]:
        problems.append(
            f"the two sides ran different model files: {info_a['models']} vs {info_b['models']}"
        )
    for key, what in (
        ("ck_latents", "encoder latents, CK+"),
        ("fer_latents", "encoder latents, FER2013 PublicTest"),
        ("generated", "generator images"),
    ):
        x, y = a[key], b[key]
        same = _bits_equal(x, y)
        if x.shape == y.shape:
            differing = int(np.count_nonzero(x != y))
            worst = float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0
        else:
            differing, worst = -1, float("nan")
        verdict = "bit-identical" if same else f"{differing} values differ, max |diff| {worst:.3g}"
        print(f"{what}: {x.shape[0]} x {x.shape[1:]} -> {verdict}")
        if not same:
            problems.append(f"{what} differ between {name_a} and {name_b}: {verdict}")
    if not np.array_equal(a["keys"], b["keys"]):
        problems.append("the two records answered different faces (other data or probe version)")
        return problems
    keys, la, lb = a["keys"], a["labels"], b["labels"]
    for group in ("before", "learned", "imagined", "jaffe"):
        rows = np.array([group in str(k).split("/")[:2] for k in keys])
        agree = int(np.sum(la[rows] == lb[rows]))
        conf = np.abs(a["confidences"][rows] - b["confidences"][rows])
        worst = float(np.nanmax(conf)) if rows.any() else 0.0
        print(
            f"answers, {group}: {agree}/{int(rows.sum())} same labels, "
            f"max |confidence diff| {worst:.3g}"
        )
        if agree != rows.sum():
            problems.append(f"runtime answers ({group}) differ on {int(rows.sum()) - agree} faces")
    same_boxes = int(np.sum(np.all(a["jaffe_boxes"] == b["jaffe_boxes"], axis=1)))
    print(f"JAFFE face boxes: {same_boxes}/{len(a['jaffe_boxes'])} identical")
    if same_boxes != len(a["jaffe_boxes"]):
        problems.append(
            f"face detection differs on {len(a['jaffe_boxes']) - same_boxes} JAFFE photos"
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="record this machine's results")
    run_parser.add_argument("--data-dir", type=Path, required=True)
    run_parser.add_argument("--out", type=Path, required=True)
    compare_parser = commands.add_parser("compare", help="compare two records")
    compare_parser.add_argument("reference", type=Path)
    compare_parser.add_argument("other", type=Path)
    pins = commands.add_parser("constraints", help="pip constraints of the installed versions")
    pins.add_argument("pyproject", type=Path)
    install = commands.add_parser(
        "install", help="the package's extras and build requirements for a robot-side test run"
    )
    install.add_argument("pyproject", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.data_dir, args.out)
    elif args.command == "constraints":
        sys.stdout.write(constraints(args.pyproject))
    elif args.command == "install":
        extras, build_requires = robot_install(args.pyproject)
        print(shlex.quote(extras or "[]"), *map(shlex.quote, build_requires))
    else:
        problems = compare(args.reference, args.other)
        for problem in problems:
            print(f"FAILED: {problem}")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
