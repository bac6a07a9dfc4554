"""``clifer-edge eval``, ``clifer-edge gdm-demo`` and the person-independent benchmark on real
faces; bad data files."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from benchmark_support import load_benchmark, run_benchmark

from clifer_edge.cli import main
from clifer_edge.cli.evaluate import FeatureSpace, _face_detector, add_arguments
from clifer_edge.evaluation.protocol import SubjectClassMeans
from clifer_edge.evaluation.report import SCHEMA_VERSION, SUMMARY_KEYS
from clifer_edge.faces.detector import FER2013_MARGIN
from clifer_edge.runtime import load_config


def _check_summary(document: dict, conditions: list[str], n_subjects: int) -> None:
    rows = document["summary"]
    expected = {
        (c, e, m)
        for c in conditions
        for e in (1, 2)
        for m in (("mlp",) if c == "mlp" else ("episodic", "semantic"))
    }
    assert {(r["condition"], r["experiment"], r["memory"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for row in rows:
        assert tuple(row) == SUMMARY_KEYS
        assert 0.0 <= row["f1_mean"] <= 1.0 and 0.0 <= row["f1_steps_mean"] <= 1.0
        assert row["f1_ci95"] is None or row["f1_ci95"] >= 0.0
        assert row["n_subjects"] == n_subjects
        unseen, answered = row["unseen_acc_steps_mean"], row["unseen_answered_steps_mean"]
        if row["experiment"] == 1:
            assert unseen is None and row["unseen_acc_fallback_steps_mean"] is None
            assert answered is None
        elif row["condition"] in ("mlp", "gdm", "replay"):
            # a learner of real classes only cannot name an unseen one
            assert unseen == 0.0 and answered == 0.0
        else:
            # a face is recognised as its unseen class only where imagination answered
            assert 0.0 <= unseen <= answered <= 1.0


def test_eval_on_ckplus_subjects_writes_schema(tmp_path, data_dir, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--data", str(data_dir / "ckplus48.npz"), "--out", str(out)]
    argv += ["--max-subjects", "2", "--static-samples", "600", "--shots", "1,2", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| clifer | 2 | semantic |" in printed and "static baseline fallback: F1" in printed
    document = json.loads((out / "results.json").read_text())
    _check_summary(document, ["mlp", "gdm", "replay", "clifer", "offsets"], 2)
    assert document["schema_version"] == SCHEMA_VERSION
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", document["package_version"])
    for model in document["models"].values():
        assert re.fullmatch(r"[0-9a-f]{64}", model["sha256"])
    assert re.fullmatch(r"[0-9a-f]{64}", document["data"]["sha256"])
    assert "whole sequences" in document["split_rule"]
    # CK+48 has one sequence per subject and class: the run says it split inside sequences
    assert document["leaks_near_duplicates"] is True
    assert document["orders"]["default"][:2] == ["happiness", "surprise"]  # CK+ has no neutral
    runs = document["runs"]
    assert len(runs) == 2 * 5 and {r["subject"] for r in runs} == {"S011", "S014"}
    clifer = [r for r in runs if r["condition"] == "clifer"]
    assert all(r["steps"][-1]["imagined"] > 0 for r in clifer)
    offsets = [r for r in runs if r["condition"] == "offsets"]
    assert all(r["steps"][-1]["imagined"] > 0 for r in offsets)
    assert document["few_shot"]["class"] == "contempt"
    baselines = {c["name"]: c for c in document["static_baseline"]["classifiers"]}
    assert set(baselines) == {"fallback", "logreg"}
    for baseline in baselines.values():
        assert baseline["n_subjects"] == 2 and set(baseline["per_subject"]) == {"S011", "S014"}
        assert 0.0 <= baseline["f1_mean"] <= 1.0
    assert document["features"]["latent_space"] == "calibrated"
    assert set(document["models"]) == {
        "encoder",
        "generator",
        "expression",
        "metadata",
        "calibration",
    }
    # the bundled export has an expression model: it, not the latent, answers new persons
    assert "the expression model" in baselines["fallback"]["description"]
    # the fallback is scored on the same unseen-class faces: one value for every condition
    fallback = {
        r["unseen_acc_fallback_steps_mean"] for r in document["summary"] if r["experiment"] == 2
    }
    assert len(fallback) == 1 and 0.0 <= fallback.pop() <= 1.0
    step = clifer[0]["steps"][0]
    assert set(step["unseen_acc"]) == {"episodic", "semantic"}
    assert math.isnan(clifer[0]["steps"][-1]["unseen_acc"]["episodic"] or math.nan)  # none left
    report = (out / "report.md").read_text()
    assert "unseen acc. over steps (fallback)" in report
    assert "unseen answered by imagination" in report
    assert "## Split rule" in report and "| clifer | 2 | semantic |" in report
    # imagination step by step: its unseen accuracies average to the summary's figure
    by_step = [
        line.split("|")[1:-1]
        for line in report.split("## Imagination by step")[1].split("\n## ")[0].splitlines()
        if line.startswith("| clifer |")
    ]
    assert by_step and [int(cells[1]) for cells in by_step] == list(range(1, len(by_step) + 1))
    summary = next(
        r
        for r in document["summary"]
        if (r["condition"], r["experiment"], r["memory"]) == ("clifer", 2, "episodic")
    )
    mean = np.mean([float(cells[6]) for cells in by_step])
    assert mean == pytest.approx(summary["unseen_acc_steps_mean"], abs=2e-3)
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_orders_all_with_detection_on_jaffe(tmp_path, data_dir):
    out = tmp_path / "jaffe"
    argv = ["eval", "--data", str(data_dir / "jaffe.npz"), "--detect-faces", "--out", str(out)]
    argv += ["--conditions", "gdm", "--orders", "all", "--max-subjects", "2"]
    argv += ["--latent-space", "raw", "--latent-scale", "2"]
    argv += ["--static-train", "none", "--few-shot-class", "none", "--no-progress"]
    assert main(argv) == 0
    document = json.loads((out / "results.json").read_text())
    _check_summary(document, ["gdm"], 2)
    assert document["face_detection"]["found"] == 213
    # Cropped as the robot crops (the shipped runtime config): YuNet, FER2013's framing.
    assert document["face_detection"]["method"] == "yunet"
    assert document["face_detection"]["margin"] == FER2013_MARGIN["yunet"]
    assert document["leaks_near_duplicates"] is False
    assert len(document["orders"]) == 7 and len(document["order_comparison"]) == 4
    assert "few_shot" not in document
    assert "calibration" not in document["models"]
    assert document["features"]["latent_scale"] == 2.0
    # raw latents, no calibration: the fallback is still the export's expression model, which
    # reads the faces, so it is scored beside the memories (and alone as a static baseline)
    (baseline,) = document["static_baseline"]["classifiers"]
    assert baseline["name"] == "fallback" and "expression model" in baseline["description"]
    unseen = {r["unseen_acc_fallback_steps_mean"] for r in document["summary"]}
    assert None in unseen and len(unseen) == 2  # Exp. 1 has no unseen faces
    assert (out / "orders.png").exists()
    report = (out / "report.md").read_text()
    assert "Kruskal" in report
    assert "## Imagination by step" not in report  # gdm imagines nothing


def test_eval_detector_overrides():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    faces = load_config(None).faces
    args = parser.parse_args(["--data", "x.npz", "--out", "o", "--detector", "haar"])
    assert (_face_detector(args, faces).method, _face_detector(args, faces).margin) == (
        "haar",
        FER2013_MARGIN["haar"],
    )
    args = parser.parse_args(["--data", "x.npz", "--out", "o", "--margin", "0.3"])
    assert (_face_detector(args, faces).method, _face_detector(args, faces).margin) == (
        "yunet",
        0.3,
    )


def _junk_file(directory) -> str:
    path = directory / "junk.npz"
    path.write_bytes(b"PK\x03\x04 truncated zip")
    return str(path)


def _write_npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: str(p / "missing.npz"), "not found"),
        (
            lambda p: (p / "junk.npz").write_bytes(b"PK\x03\x04 broken") and str(p / "junk.npz"),
            "not a readable npz",
        ),
        (
            lambda p: _write_npz(p / "nolabels.npz", images=np.zeros((4, 48, 48), np.uint8)),
            "missing array 'labels'",
        ),
        (
            lambda p: _write_npz(
                p / "nosubjects.npz",
                images=np.zeros((4, 48, 48), np.uint8),
                labels=np.array(["happy"] * 4),
            ),
            "no 'subjects' array",
        ),
        (
            lambda p: _write_npz(
                p / "float.npz",
                images=np.zeros((4, 48, 48), np.float32),
                labels=np.array(["happy"] * 4),
            ),
            "dtype float32",
        ),
        (
            lambda p: _write_npz(
                p / "short.npz",
                images=np.zeros((4, 48, 48), np.uint8),
                labels=np.array(["happy"] * 4),
                subjects=np.array(["a"] * 3),
            ),
            "subjects has shape",
        ),
    ],
)
def test_eval_bad_data_files_give_clear_errors(tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert main(["eval", "--data", path, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.json").exists()


def test_eval_bad_options(tmp_path, data_dir, capsys):
    data = str(data_dir / "ckplus48.npz")
    out = str(tmp_path / "o")
    assert main(["eval", "--data", data, "--out", out, "--conditions", "gdm,svm"]) == 2
    err = capsys.readouterr().err
    assert "'svm' should be one of" in err and "oracle" in err  # the diagnostic is offered
    assert main(["eval", "--data", data, "--out", out, "--max-subjects", "0"]) == 2
    assert "--max-subjects 0" in capsys.readouterr().err
    argv = ["eval", "--data", data, "--out", out, "--frame-split", "never", "--no-progress"]
    assert main([*argv, "--static-train", "none"]) == 2
    assert "no subject has >= 4 splittable classes" in capsys.readouterr().err
    missing = str(tmp_path / "missing.yaml")
    assert main(["eval", "--data", data, "--out", out, "--runtime-config", missing]) == 2
    assert "cannot read config file" in capsys.readouterr().err
    argv = ["eval", "--data", data, "--out", out, "--latent-space", "raw"]
    assert main([*argv, "--conditions", "replay,offsets"]) == 2
    assert "condition 'offsets' moves prototypes" in capsys.readouterr().err


def test_eval_clifer_follows_the_robot_imagination_settings(tmp_path, data_dir):
    config = tmp_path / "robot.yaml"
    config.write_text("imagination:\n  residual: true\n  chunk_prototypes: 2\n")
    out = tmp_path / "eval"
    argv = ["eval", "--data", str(data_dir / "ckplus48.npz"), "--out", str(out)]
    argv += ["--conditions", "clifer", "--max-subjects", "1", "--runtime-config", str(config)]
    argv += ["--static-train", "none", "--few-shot-class", "none", "--no-progress"]
    assert main(argv) == 0
    document = json.loads((out / "results.json").read_text())
    assert "chunk_prototypes=2, residual=True" in document["imagination"]
    assert document["runs"][0]["steps"][-1]["imagined"] > 0


def test_gdm_demo_on_a_few_subjects(capsys, tmp_path):
    argv = ["gdm-demo", "--max-subjects", "2", "--pca-samples", "2000", "--no-progress"]
    assert main([*argv, "--json", str(tmp_path / "demo.json")]) == 0
    printed = capsys.readouterr().out
    assert "ckplus48 (frame split, leaks)" in printed and "jaffe (sequence-disjoint)" in printed
    assert "face found in 213/213" in printed
    table = [line for line in printed.splitlines() if line.startswith("| gdm | 1 | episodic")]
    assert len(table) == 2 and all(line.endswith("| 2 |") for line in table)
    document = json.loads((tmp_path / "demo.json").read_text())
    assert [len(d["subjects"]) for d in document["datasets"]] == [2, 2]


@pytest.mark.slow
def test_gdm_demo_all_subjects(capsys):
    assert main(["gdm-demo", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "ckplus48: 28 subjects evaluated" in printed
    assert "jaffe: 10 subjects evaluated" in printed


@pytest.mark.slow
@pytest.mark.parametrize("name", ["jaffe.npz", "ckplus48.npz"])
def test_full_eval_run(tmp_path, data_dir, name):
    argv = ["eval", "--data", str(data_dir / name), "--out", str(tmp_path), "--no-progress"]
    if name == "jaffe.npz":
        argv.append("--detect-faces")
    assert main(argv) == 0
    document = json.loads((tmp_path / "results.json").read_text())
    conditions = ["mlp", "gdm", "replay", "clifer", "offsets"]
    _check_summary(document, conditions, 10 if name == "jaffe.npz" else 28)
    assert document["seconds"] < 15 * 60


def test_person_independent_benchmark_on_a_sample(tmp_path, data_dir):
    """A short run of ``benchmarks/person_independent.py`` (the full one scores every face)."""
    out = tmp_path / "rows.json"
    done = run_benchmark(
        "person_independent.py",
        *("--max-faces", "120", "--data-dir", str(data_dir), "--json", str(out)),
        timeout=600,
    )
    rows = {row["data"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"jaffe.npz", "ckplus48.npz"}
    assert rows["jaffe.npz"]["images"] == rows["ckplus48.npz"]["images"] == 120
    assert "contempt" not in rows["ckplus48.npz"]["classes"]  # FER2013 cannot name it
    # Far above chance (1/6 of CK+'s classes) when crops, latents and labels line up.
    assert rows["ckplus48.npz"]["fallback"]["macro_f1"] > 0.35
    assert "| ckplus48.npz | " in done.stdout


def test_person_independent_scores_count_only_the_true_classes():
    """A wrong answer naming a class absent from the data costs recall, not a class of F1 0."""
    score = load_benchmark("person_independent.py").score
    result = score(np.array(["a", "a", "b"]), np.array(["a", "c", "b"]))
    assert result["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2, abs=1e-4)
    assert result["accuracy"] == pytest.approx(2 / 3, abs=1e-4)


def test_eval_diagnostics_imagine_with_other_subjects_or_the_subjects_own_means(tmp_path, data_dir):
    """The diagnostics run only when asked; knowing the person's own class means names the
    classes not learned yet far better than the crowd's offsets."""
    out = tmp_path / "eval"
    conditions = ["offsets", "clifer_alone", "peers", "oracle"]
    argv = ["eval", "--data", str(data_dir / "ckplus48.npz"), "--out", str(out)]
    argv += ["--conditions", ",".join(conditions), "--max-subjects", "3"]
    argv += ["--static-train", "none", "--few-shot-class", "none", "--no-progress"]
    assert main(argv) == 0
    document = json.loads((out / "results.json").read_text())
    _check_summary(document, conditions, 3)
    runs = document["runs"]
    assert all(r["steps"][-1]["imagined"] > 0 for r in runs)
    unseen = {
        row["condition"]: row["unseen_acc_steps_mean"]
        for row in document["summary"]
        if row["experiment"] == 2 and row["memory"] == "episodic"
    }
    assert unseen["oracle"] > unseen["offsets"] + 0.1


def _unseen(out: Path) -> dict[str, float]:
    document = json.loads((out / "results.json").read_text())
    return {
        row["condition"]: row["unseen_acc_steps_mean"]
        for row in document["summary"]
        if row["experiment"] == 2 and row["memory"] == "episodic"
    }


def test_eval_clifer_recentres_on_the_other_subjects_it_knows(tmp_path, data_dir):
    """clifer's robot knows the other subjects and recentres G on them; knowing nobody
    (--known-people 0) it imagines exactly as clifer_alone."""
    config = tmp_path / "robot.yaml"
    config.write_text("imagination:\n  recentre_min_peers: 2\n")
    base = ["eval", "--data", str(data_dir / "ckplus48.npz"), "--max-subjects", "4"]
    base += ["--conditions", "clifer,clifer_alone", "--runtime-config", str(config)]
    base += ["--static-train", "none", "--few-shot-class", "none", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "all")]) == 0
    assert main([*base, "--out", str(tmp_path / "none"), "--known-people", "0"]) == 0
    document = json.loads((tmp_path / "all" / "results.json").read_text())
    assert document["protocol"]["known_people"] == "all"
    assert "recentre_min_peers=2" in document["imagination"]
    known, alone = _unseen(tmp_path / "all"), _unseen(tmp_path / "none")
    assert known["clifer"] != known["clifer_alone"] == alone["clifer_alone"] == alone["clifer"]


def test_known_people_benchmark_short_run(tmp_path, data_dir):
    """A short run of ``benchmarks/known_people.py``: with fewer known people than the shipped
    minimum per pair, the robot imagines as if it knew nobody."""
    out = tmp_path / "known"
    done = run_benchmark(
        "known_people.py",
        *("--known", "0,all", "--max-subjects", "3", "--data-dir", str(data_dir)),
        *("--out", str(out)),
        timeout=600,
    )
    rows = json.loads((out / "known_people.json").read_text())
    assert len(rows) == 2 * 2 * 2 and (out / "known_people.png").stat().st_size > 0
    by = {(r["data"], r["min_peers"], r["known"]): r["unseen_acc"] for r in rows}
    for data in ("jaffe.npz", "ckplus48.npz"):
        assert by[data, 5, 0] == by[data, 5, "all"] == by[data, 1, 0]  # 2 others < 5
    assert "| ckplus48.npz | 1 | all |" in done.stdout


def test_own_class_means_are_the_subjects_means_in_the_same_space():
    space = FeatureSpace(None, 2.0)
    X = np.array([[0.0, 2.0], [2.0, 0.0], [4.0, 4.0], [6.0, 8.0]], dtype=np.float32)
    own = SubjectClassMeans(space, X, ["sadness", "sadness", "anger", "anger"])
    assert own.labels == ["anger", "sadness"]
    np.testing.assert_allclose(own.class_means, [[5.0, 6.0], [1.0, 1.0]])
    latents = np.array([[0.25, -0.5]], dtype=np.float32)
    np.testing.assert_allclose(own.to_memory(latents), space.to_memory(latents))
    np.testing.assert_allclose(own.to_latent(X), space.to_latent(X))
