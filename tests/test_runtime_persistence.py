"""Persons' memories on disk: round trip, kill -9 during a save, quarantine of damaged files."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from benchmark_support import run_benchmark_json
from runtime_support import ck_subjects, learn_classes, make_runtime

from clifer_edge.runtime.persons import person_key

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def subjects(data_dir):
    return ck_subjects(data_dir, min_classes=5)


def test_round_trip_restores_memories_and_records(tmp_path, models, subjects):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, subject, subject.classes[:3])
    rt.set_idle(True)
    rt.imagine(30.0)
    tests = [subject.test(label) for label in subject.classes]
    before = [rt.process_face(face, person_id=subject.name) for face in tests]
    stats_before = rt.stats()["persons"][subject.name]
    rt.close()

    again = make_runtime(tmp_path, models)
    after = [again.process_face(face, person_id=subject.name) for face in tests]
    assert [r.label for r in after] == [r.label for r in before]
    for a, b in zip(after, before, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)
    stats_after = again.stats()["persons"][subject.name]
    for key in ("episodes", "faces_learned", "imagined_latents", "shown_labels"):
        assert stats_after[key] == stats_before[key]
    # What was imagined is remembered: nothing is left to imagine after the reload.
    state = again.persons.get(subject.name)
    assert len(again.scheduler.pending(state)[1]) == 0
    assert stats_before["imagined_latents"] > 0


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from runtime_support import ck_subjects, default_models, make_runtime
    from pathlib import Path

    directory, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
    subject = ck_subjects(data_dir, min_classes=5)[0]
    rt = make_runtime(directory, default_models())
    save = rt.persons.save
    episode = [0]

    def announced_save(state):
        print("saving", state.n_episodes, flush=True)
        save(state)
        print("saved", state.n_episodes, flush=True)

    rt.persons.save = announced_save
    print("ready", flush=True)
    for round_ in range(1000):
        for label in subject.classes:
            for image in subject.train(label):
                rt.process_face(image, person_id=subject.name, label=label)
    """
)


@pytest.mark.parametrize("delay_ms", [0.0, 0.3, 1.0, 3.0])
def test_kill_9_during_a_save_loses_nothing_older_than_the_running_episode(
    tmp_path, models, subjects, data_dir, delay_ms
):
    """A writer process learns one class per episode and saves; we SIGKILL it inside a save."""
    subject = subjects[0]
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    directory = tmp_path / "memories"
    path = [str(REPO_ROOT), str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    writer = subprocess.Popen(
        [sys.executable, str(script), str(directory), str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    target = len(subject.classes) + 2  # an episode of the second round: files already exist
    completed = 0
    try:
        for line in writer.stdout:
            words = line.split()
            if words[:1] == ["saved"]:
                completed = int(words[1])
            if words[:1] == ["saving"] and int(words[1]) == target:
                time.sleep(delay_ms / 1000.0)
                writer.send_signal(signal.SIGKILL)
                break
        else:
            pytest.fail(f"writer ended early: {writer.stderr.read()[-2000:]}")
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert completed == target - 1

    rt = make_runtime(directory, models)
    state = rt.persons.get(subject.name)
    assert rt.persons.n_quarantined == 0
    # Every episode before the one being saved survived: all classes, at least target-1 episodes.
    assert state.n_episodes in (target - 1, target)
    assert sorted(state.memory.labels_) == sorted(subject.classes)
    result = rt.process_face(subject.test(subject.classes[0]), person_id=subject.name)
    assert result.memory == "episodic"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
@pytest.mark.parametrize("which", ["memory", "record"])
def test_damaged_file_is_quarantined_not_deleted(tmp_path, models, subjects, caplog, damage, which):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, subject, subject.classes[:2])
    rt.close()
    suffix = ".gdm" if which == "memory" else ".person.npz"
    path = tmp_path / f"{person_key(subject.name)}{suffix}"
    content = path.read_bytes()
    bad = {
        "garbage": np.random.default_rng(0).bytes(len(content)),
        "truncated": content[: len(content) // 2],
        "empty": b"",
    }[damage]
    path.write_bytes(bad)

    caplog.set_level(logging.ERROR, logger="clifer_edge.runtime.persons")
    again = make_runtime(tmp_path, models)
    result = again.process_face(subject.test(subject.classes[0]), person_id=subject.name)
    quarantined = list(tmp_path.glob(f"{path.name}.corrupt-*"))
    assert len(quarantined) == 1
    assert quarantined[0].read_bytes() == bad  # kept as it was, for inspection
    assert any("damaged" in record.getMessage() for record in caplog.records)
    assert again.stats()["quarantined_files"] == 1
    if which == "memory":
        assert result.memory == "fallback"  # a fresh memory
    else:
        assert result.memory == "episodic"  # the memory itself was intact
    # The runtime keeps learning and saving for that person.
    learn_classes(again, subject, subject.classes[:1])
    assert again.process_face(subject.test(subject.classes[0]), subject.name).memory == "episodic"


def test_kill_storm_loses_nothing_and_leaves_no_temporaries(tmp_path, data_dir):
    """A short run of ``benchmarks/kill_storm.py`` (the full one kills 20 times)."""
    result = run_benchmark_json(
        "kill_storm.py",
        *("--kills", "3", "--persons", "3", "--data-dir", str(data_dir)),
        out=tmp_path / "storm.json",
        timeout=300,
    )
    assert result["kills"] == 3 and result["checks"] > 0
    assert result["faces_lost"] == result["files_quarantined"] == 0
    assert result["temporaries_after_last_restart"] == 0
