"""The runtime on real faces: configuration, learning, fallback, teach/forget, bad images."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_support import ck_subjects, learn_classes, make_runtime

from clifer_edge.datasets import load_npz
from clifer_edge.faces import FaceDetector
from clifer_edge.preprocessing import InvalidImageError
from clifer_edge.runtime import ExpressionRuntime, RuntimeConfig, load_config
from clifer_edge.runtime.config import config_to_dict

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def subjects(data_dir):
    return ck_subjects(data_dir, min_classes=5)


@pytest.fixture(scope="module")
def jaffe(data_dir):
    return load_npz(data_dir / "jaffe.npz")


# -- configuration -----------------------------------------------------------------------------
def test_shipped_default_matches_the_documented_dataclass_defaults():
    assert config_to_dict(load_config(None)) == config_to_dict(RuntimeConfig())


def test_user_file_overrides_some_keys(tmp_path):
    path = tmp_path / "robot.yaml"
    path.write_text("persons:\n  mode: single\nimagination:\n  idle_timeout_s: 3\n")
    config = load_config(path)
    assert config.persons.mode == "single"
    assert config.imagination.idle_timeout_s == 3.0
    assert config.persons.max_in_ram == RuntimeConfig().persons.max_in_ram


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("robot: {}\n", "robot"),
        ("persons:\n  max_ram: 3\n", "persons.max_ram"),
        ("persons:\n  max_in_ram: three\n", "persons.max_in_ram"),
        ("persons:\n  max_in_ram: 0\n", "persons.max_in_ram"),
        ("persons:\n  mode: crowd\n", "persons.mode"),
        ("imagination:\n  enabled: 1\n", "imagination.enabled"),
        ("imagination:\n  budget_s: .nan\n", "imagination.budget_s"),
        ("memory:\n  directory: null\n", "memory.directory"),
        ("models: [1, 2]\n", "models"),
        ("gdm:\n  no_such_parameter: 1\n", "gdm"),
        ("persons: {mode: single\n", "not valid YAML"),
        ("- a list\n", "must hold a mapping"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(path)


def test_missing_config_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


# -- learning ----------------------------------------------------------------------------------
def test_one_subject_learned_end_to_end(tmp_path, models, subjects):
    """Labelled episodes of one CK+ subject train their memory; unlabelled frames are answered."""
    subject = subjects[0]
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, subject, subject.classes)
    results = [
        rt.process_face(subject.test(label), person_id=subject.name) for label in subject.classes
    ]
    correct = sum(r.label == label for r, label in zip(results, subject.classes, strict=True))
    print(f"\n{subject.name}: {correct}/{len(subject.classes)} held-out frames right")
    for result in results:
        assert result.memory == "episodic"
        assert not result.learned
        assert set(result.scores) == set(subject.classes)
        assert abs(sum(result.scores.values()) - 1.0) < 1e-4
        assert result.confidence == pytest.approx(max(result.scores.values()))
    # Held-out frames are near-duplicates of the training frames: most must come out right.
    assert correct >= len(subject.classes) // 2 + 1
    stats = rt.stats()["persons"][subject.name]
    assert stats["episodes"] == len(subject.classes)
    assert sorted(stats["memory"]["labels"]) == sorted(subject.classes)
    rt.close()


@pytest.mark.parametrize("replay", [True, False])
def test_each_episode_is_rehearsed_with_rnat_replay_unless_turned_off(
    tmp_path, models, subjects, replay
):
    """The robot learns as the evaluation's replay and clifer conditions do: each real episode is
    followed by RNAT pseudo-replay (``learning.replay``), bit for bit as by hand."""
    subject, classes = subjects[0], subjects[0].classes[:3]
    rt = make_runtime(
        tmp_path,
        models,
        learning={"replay": replay, "episode_size": 4096},  # one episode per class
        imagination={"enabled": False},
    )
    learn_classes(rt, subject, classes)
    state = rt.persons.get(subject.name)
    twin = rt.persons.memory_factory(subject.name)
    start = 0
    for label in classes:
        count = len(subject.train(label))
        twin.partial_fit(state.real_latents[start : start + count], [label] * count)
        if replay:
            twin.replay()
        start += count
    assert start == len(state.real_latents) and state.n_episodes == len(classes)
    for network in ("episodic_", "semantic_"):
        np.testing.assert_array_equal(
            getattr(state.memory, network).prototypes(), getattr(twin, network).prototypes()
        )
    rt.close()


def test_semantic_memory_can_answer(tmp_path, models, subjects):
    rt = make_runtime(tmp_path, models, memory={"answer": "semantic"})
    learn_classes(rt, subjects[0], subjects[0].classes[:2])
    assert rt.process_face(subjects[0].test(subjects[0].classes[0]), "a").memory == "fallback"
    result = rt.process_face(subjects[0].test(subjects[0].classes[0]), subjects[0].name)
    assert result.memory == "semantic"


def test_full_frame_is_detected_then_learned(tmp_path, models, jaffe):
    rt = make_runtime(tmp_path, models, learning={"episode_size": 2})
    frames = jaffe.images[jaffe.subjects == "KA"][:2]
    for frame in frames:
        (result,) = rt.process_frame(frame, person_id="KA", label="neutral")
        assert result.learned
        assert result.box is not None and result.box.width >= 40
    (result,) = rt.process_frame(frames[0], person_id="KA")
    assert result.memory == "episodic" and result.label == "neutral"
    assert rt.process_frame(np.full((120, 160), 128, np.uint8)) == []  # no face: no result


def test_tracked_boxes_skip_detection(tmp_path, models, jaffe):
    from clifer_edge.preprocessing import FaceBox

    rt = make_runtime(tmp_path, models, persons={"mode": "identity"})
    frame = np.concatenate([jaffe.images[0], jaffe.images[40]], axis=1)
    boxes = [face.box for face in rt.detector.detect(frame)]
    assert len(boxes) == 2
    results = rt.process_frame(frame, boxes=boxes)
    assert [r.box for r in results] == boxes
    # Boxes given: no detection; a caller-given person takes the first (largest) box only.
    (only,) = rt.process_frame(frame, person_id="KA", boxes=[FaceBox(256, 0, 256, 256), boxes[0]])
    assert only.box == FaceBox(256, 0, 256, 256)
    assert rt.process_frame(frame, boxes=[]) == []


def test_crops_frame_faces_as_fer2013_does_for_the_detector(tmp_path, models, jaffe):
    """The default margin is the detector's FER2013 framing; a configured one wins."""
    from clifer_edge.faces.detector import FER2013_MARGIN
    from clifer_edge.preprocessing import FaceBox

    frame, box = jaffe.images[0], FaceBox(60, 60, 120, 120)

    def scores(name: str, **faces: object) -> dict[str, float]:
        rt = make_runtime(tmp_path / name, models, faces=faces)
        (answer,) = rt.process_frame(frame, person_id="KA", boxes=[box])
        assert rt.margin == faces.get("margin", FER2013_MARGIN[faces.get("detector", "yunet")])
        return answer.scores

    for detector in ("yunet", "haar"):
        margin = FER2013_MARGIN[detector]
        assert FaceDetector(detector).margin == margin
        assert scores(detector, detector=detector) == scores(f"{detector}_set", margin=margin)
    assert scores("default") != scores("haar_margin", margin=FER2013_MARGIN["haar"])
    assert FER2013_MARGIN["yunet"] < FER2013_MARGIN["haar"]  # YuNet's box is the larger


def test_anonymous_faces_are_answered_and_nothing_is_kept(tmp_path, models, subjects):
    rt = make_runtime(tmp_path, models)
    subject = subjects[0]
    result = rt.process_face(subject.test(subject.classes[0]), person_id="anon3", anonymous=True)
    assert result.person_id == "anon3" and result.memory == "fallback"
    assert abs(sum(result.scores.values()) - 1.0) < 1e-4
    rt.save()
    assert "anon3" not in rt.persons.known_ids() and not rt.persons.resident()
    assert not any("anon3" in p.name for p in tmp_path.rglob("*"))


def test_new_person_gets_the_fallback_then_their_own_memory(tmp_path, models, subjects):
    rt = make_runtime(tmp_path, models)
    info = rt.calibration.info
    print(f"\nfallback: FER2013 PublicTest accuracy {info.get('publictest_accuracy')}")
    subject = subjects[1]
    first = rt.process_face(subject.test(subject.classes[0]), person_id=subject.name)
    assert first.memory == "fallback"
    assert set(first.scores) == set(rt.calibration.labels)
    assert abs(sum(first.scores.values()) - 1.0) < 1e-4
    learn_classes(rt, subject, subject.classes[:1])
    assert rt.process_face(subject.test(subject.classes[0]), subject.name).memory == "episodic"


def test_bundled_calibration_belongs_to_the_bundled_encoder(models):
    from clifer_edge.fileio import sha256_file
    from clifer_edge.models.calibration import LatentCalibration

    files = load_config(None).model_files()
    sha = sha256_file(files.encoder)
    calibration = LatentCalibration.load(files.calibration, encoder_sha256=sha)
    assert calibration.z_dim == models[0].metadata.z_dim
    assert calibration.info["publictest_accuracy"] > 1.0 / len(calibration.labels)


def test_calibration_of_another_encoder_is_refused(tmp_path, models):
    from clifer_edge.models.calibration import CalibrationError, LatentCalibration

    calibration = LatentCalibration.load(load_config(None).model_files().calibration)
    calibration.info["encoder_sha256"] = "0" * 64
    calibration.save(tmp_path / "other.npz")
    with pytest.raises(CalibrationError, match="another encoder"):
        LatentCalibration.load(tmp_path / "other.npz", encoder_sha256="1" * 64)
    (tmp_path / "damaged.npz").write_bytes(b"not a calibration")
    with pytest.raises(CalibrationError, match="cannot read"):
        LatentCalibration.load(tmp_path / "damaged.npz")


def test_a_missing_calibration_is_an_error_not_a_silent_build(tmp_path, capsys, data_dir):
    """Starting the runtime never builds a calibration: it says to run clifer-edge calibrate."""
    import shutil

    from clifer_edge.cli import main
    from clifer_edge.models import DEFAULT_MODEL_DIR, CalibrationError

    models = tmp_path / "models"
    models.mkdir()
    for name in ("encoder_int8.tflite", "generator_int8.tflite", "metadata.json"):
        shutil.copy(DEFAULT_MODEL_DIR / name, models / name)
    config = load_config(None).replace(
        models={"directory": str(models)}, memory={"directory": str(tmp_path / "memories")}
    )
    with pytest.raises(CalibrationError, match="clifer-edge calibrate"):
        ExpressionRuntime(config)
    assert not list(tmp_path.rglob("*.npz"))  # nothing was built anywhere
    yaml_file = tmp_path / "runtime.yaml"
    yaml_file.write_text(f"models:\n  directory: {models}\n")
    frames = tmp_path / "frames"
    frames.mkdir()
    face = load_npz(data_dir / "ckplus48.npz").images[0]
    assert cv2.imwrite(str(frames / "face.png"), face)
    code = main(["run", "--config", str(yaml_file), "--images", str(frames)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "clifer-edge calibrate" in err[0]
    # the explicit command builds it beside the models; then the runtime starts. A small real
    # FER2013 sample keeps this quick under the aarch64 emulation of the platform check (the
    # command encodes every face it is given; the full file is 35,887 faces).
    sample = tmp_path / "fer2013_sample.npz"
    with np.load(data_dir / "fer2013.npz", allow_pickle=False) as fer:
        rows = np.concatenate(
            [
                np.flatnonzero((fer["splits"] == split) & (fer["labels"] == label))[:count]
                for split, count in (("Training", 30), ("PublicTest", 10))
                for label in np.unique(fer["labels"])
            ]
        )
        np.savez(sample, **{key: fer[key][rows] for key in fer.files})
    argv = ["calibrate", "--model-dir", str(models), "--data", str(sample)]
    assert main([*argv, "--per-class", "20"]) == 0
    assert "calibration written to" in capsys.readouterr().out
    assert (models / "calibration_int8.npz").exists()
    ExpressionRuntime(config).close()


def test_teach_a_brand_new_label_from_recent_faces(tmp_path, models, subjects):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, subject, subject.classes[:2])
    assert rt.teach(subject.name, "wink") == 0  # nothing seen unlabelled yet
    for image in subject.frames[subject.classes[2]]:
        rt.process_face(image, person_id=subject.name)
    assert rt.teach(subject.name, "wink", n_recent=2) == 2
    result = rt.process_face(subject.test(subject.classes[2]), person_id=subject.name)
    assert "wink" in result.scores
    assert "wink" in rt.stats()["persons"][subject.name]["shown_labels"]


def test_forget_deletes_memory_and_files(tmp_path, models, subjects):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, subject, subject.classes[:2])
    assert any(tmp_path.iterdir())
    assert rt.forget(subject.name)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(subject.name)]
    assert not rt.forget(subject.name)
    assert rt.process_face(subject.test(subject.classes[0]), subject.name).memory == "fallback"


def test_lru_keeps_at_most_n_persons_in_ram_and_reloads_evicted(tmp_path, models, subjects):
    rt = make_runtime(tmp_path, models, persons={"max_in_ram": 2})
    for subject in subjects[:3]:
        learn_classes(rt, subject, subject.classes[:2])
    stats = rt.stats()
    assert stats["persons_in_ram"] == 2
    assert stats["persons_known"] == 3
    assert stats["evictions"] >= 1
    evicted = subjects[0]
    result = rt.process_face(evicted.test(evicted.classes[0]), person_id=evicted.name)
    assert result.memory == "episodic"
    assert set(result.scores) == set(evicted.classes[:2])


def test_single_user_mode_ignores_ids(tmp_path, models, subjects):
    rt = make_runtime(tmp_path, models, persons={"mode": "single", "default_person": "me"})
    result = rt.process_face(subjects[0].test(subjects[0].classes[0]), person_id="someone")
    assert result.person_id == "me"


def test_identity_mode_reidentifies_a_face(tmp_path, models, subjects):
    rt = make_runtime(tmp_path, models, persons={"mode": "identity"})
    face = subjects[0].test(subjects[0].classes[0])
    first = rt.process_face(face)
    again = rt.process_face(face)
    assert first.person_id == again.person_id == "person-1"


def test_faces_are_not_stored_unless_asked(tmp_path, models, subjects):
    subject = subjects[0]
    rt = make_runtime(tmp_path / "off", models)
    learn_classes(rt, subject, subject.classes[:1])
    assert not list((tmp_path / "off").rglob("*.png"))
    rt = make_runtime(tmp_path / "on", models, memory={"store_faces": True})
    learn_classes(rt, subject, subject.classes[:1])
    assert len(list((tmp_path / "on").rglob("*.png"))) == len(subject.train(subject.classes[0]))


# -- bad input ---------------------------------------------------------------------------------
BAD_IMAGES = {
    "empty": np.zeros((0, 0), np.uint8),
    "wrong dtype": np.zeros((48, 48), np.int64),
    "1x1": np.zeros((1, 1), np.uint8),
    "huge": np.zeros((9000, 16), np.uint8),
    "nan": np.full((48, 48), np.nan, np.float32),
    "4 channels": np.zeros((48, 48, 4), np.uint8),
    "not an array": [[0] * 48] * 48,
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_images_give_clear_errors_and_the_runtime_keeps_serving(
    tmp_path, models, subjects, name
):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, subject, subject.classes[:2])
    for method in (rt.process_face, rt.process_frame):
        with pytest.raises(InvalidImageError):
            method(BAD_IMAGES[name], person_id=subject.name)
    result = rt.process_face(subject.test(subject.classes[0]), person_id=subject.name)
    assert result.memory == "episodic"
    assert rt.stats()["rejected_images"] == 2


def test_bad_person_id_and_label(tmp_path, models, subjects):
    rt = make_runtime(tmp_path, models)
    face = subjects[0].test(subjects[0].classes[0])
    with pytest.raises(ValueError, match="person_id"):
        rt.process_face(face, person_id="  ")
    with pytest.raises(ValueError, match="label"):
        rt.process_face(face, person_id="p", label="")
    assert rt.process_face(face, person_id="p").person_id == "p"


def test_closed_runtime_refuses_work(tmp_path, models, subjects):
    rt = make_runtime(tmp_path, models)
    rt.close()
    rt.close()
    with pytest.raises(RuntimeError, match="closed"):
        rt.process_face(subjects[0].test(subjects[0].classes[0]))


# -- architecture wall -------------------------------------------------------------------------
def test_runtime_imports_no_tensorflow_and_no_rclpy(tmp_path, data_dir):
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from clifer_edge.datasets import load_npz
        from clifer_edge.runtime import ExpressionRuntime, load_config
        config = load_config(None).replace(memory={{"directory": {str(tmp_path)!r}}})
        rt = ExpressionRuntime(config)
        jaffe = load_npz({str(data_dir / "jaffe.npz")!r})
        rt.process_frame(jaffe.images[0], person_id="a", label="neutral")
        rt.process_frame(jaffe.images[1], person_id="a", label="happiness")
        rt.save()
        rt.set_idle(True)
        rt.imagine(0.5)
        rt.close()
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "rclpy"))
        print("BAD", bad)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "BAD []" in out.stdout, out.stdout
