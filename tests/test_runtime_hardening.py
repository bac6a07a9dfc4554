"""Robot-side hardening (issue 10): names on disk, total loading, forgetting, limits, growth.

Every test uses real CK+ faces and a runtime on the bundled default models, writing only to its
temporary folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import zipfile

import numpy as np
import pytest
from runtime_support import ck_subjects, learn_classes, make_runtime, rewrite_record

from clifer_edge.fileio import file_stem, stem_of
from clifer_edge.labels import canonical_label
from clifer_edge.memory import GrowingDualMemory
from clifer_edge.preprocessing import InvalidImageError
from clifer_edge.runtime import PersonSaveError, load_config
from clifer_edge.runtime.persons import person_key

RECORD, MEMORY = ".person.npz", ".gdm"


@pytest.fixture(scope="module")
def subjects(data_dir):
    return ck_subjects(data_dir, min_classes=4)


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -- 1, 2: names on disk -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "label", ["../../../x", "/tmp/absolute", "..", ".", "a\x00b", "x" * 100_000]
)
def test_labels_that_could_escape_or_flood_are_refused(tmp_path, models, subjects, label):
    memories = tmp_path / "memories"
    rt = make_runtime(memories, models, memory={"store_faces": True})
    face = subjects[0].test(subjects[0].classes[0])
    with pytest.raises(ValueError, match="expression label"):
        rt.process_face(face, person_id="bob", label=label)
    with pytest.raises(ValueError, match="expression label"):
        canonical_label(label)
    rt.close()
    assert [p for p in tmp_path.rglob("*") if p.is_file() and memories not in p.parents] == []


def test_stored_faces_stay_inside_their_person_folder(tmp_path, models, subjects):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models, memory={"store_faces": True})
    for image in subject.train(subject.classes[0]):
        rt.process_face(image, person_id="../../eve", label="wink :)")
    rt.close()
    pngs = list(tmp_path.rglob("*.png"))
    assert len(pngs) == len(subject.train(subject.classes[0]))
    folder = tmp_path / "faces" / person_key("../../eve") / file_stem("wink :)")
    assert {p.parent for p in pngs} == {folder}


def test_file_stems_are_one_to_one_and_never_a_path():
    names = [
        "alice/phone",
        "alice_phone",
        "alice_phone-21a1a81ff2",
        file_stem("alice/phone"),
        "..",
        ".",
        "a.gdm",
        "a",
        "A",
        "../x",
        "x" * 64,
        "x" * 65,
        "ü",
        "u",
        "~",
        "a b",
        "a_b",
    ]
    stems = [file_stem(name) for name in names]
    assert len(set(stems)) == len(names)
    for stem in stems:
        assert "/" not in stem and "\\" not in stem and "." not in stem and len(stem) <= 64
        assert stem_of(f"{stem}.person.npz") == stem == stem_of(f".{stem}.gdm.abc123.tmp")


def test_two_ids_never_share_a_memory(tmp_path, models, subjects):
    """A plain id equal to another id's old escaped file name gets its own memory."""
    first, second = subjects[0], subjects[1]
    phone, plain = "alice/phone", "alice_phone-21a1a81ff2"
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, first, first.classes[:2])  # first.name only to have a second file around
    for image in first.train(first.classes[0]):
        rt.process_face(image, person_id=phone, label=first.classes[0])
    for image in second.train(second.classes[1]):
        rt.process_face(image, person_id=plain, label=second.classes[1])
    rt.close()

    again = make_runtime(tmp_path, models)
    face = first.test(first.classes[0])
    assert set(again.process_face(face, person_id=phone).scores) == {first.classes[0]}
    assert set(again.process_face(face, person_id=plain).scores) == {second.classes[1]}
    assert again.forget(plain)
    assert again.process_face(face, person_id=phone).memory == "episodic"
    assert again.process_face(face, person_id=plain).memory == "fallback"


def test_person_ids_are_validated(tmp_path, models, subjects):
    rt = make_runtime(tmp_path, models)
    face = subjects[0].test(subjects[0].classes[0])
    for bad in ("", "  ", "a\x00b", "line\nbreak", "x" * 1000, 42):
        with pytest.raises(ValueError, match="person"):
            rt.process_face(face, person_id=bad)
        with pytest.raises(ValueError, match="person"):
            rt.forget(bad)
        with pytest.raises(ValueError, match="person"):
            rt.teach(bad, "happiness")
    assert files_under(tmp_path) == []


# -- 3: loading is total, saving saves everyone it can -------------------------------------------
def _two_learned_persons(tmp_path, models, subjects):
    a, b = subjects[0], subjects[1]
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, a, a.classes[:2])
    learn_classes(rt, b, b.classes[:2])
    rt.close()
    return a, b


def _pending_faces(rt, subject, n=3):
    """Labelled faces fewer than an episode: they stay pending until save/close."""
    label = subject.classes[2]
    frames = subject.train(label)[:n]
    for image in frames:
        rt.process_face(image, person_id=subject.name, label=label)
    return len(frames)


BAD_RECORDS = {
    "wrong width": dict(edit_arrays=lambda a: a.update(real_latents=np.zeros((4, 7), np.float32))),
    "wrong field type": dict(edit_meta=lambda m: m.update(n_episodes="many")),
    "labels not a list": dict(edit_meta=lambda m: m.update(shown_labels=7)),
    "real labels not labels": dict(edit_meta=lambda m: m.update(real_labels=[1, 2])),
    "more real labels than latents": dict(
        edit_meta=lambda m: m.update(real_labels=["happiness"] * 5000)
    ),
    "non-finite": dict(
        edit_arrays=lambda a: a.update(real_latents=np.full_like(a["real_latents"], np.nan))
    ),
    "someone else's": dict(edit_meta=lambda m: m.update(person_id="mallory")),
}


@pytest.mark.parametrize("damage", list(BAD_RECORDS))
def test_an_unusable_record_is_quarantined_and_costs_nobody_their_learning(
    tmp_path, models, subjects, caplog, damage
):
    a, b = _two_learned_persons(tmp_path, models, subjects)
    record = tmp_path / f"{person_key(a.name)}{RECORD}"
    rewrite_record(record, **BAD_RECORDS[damage])

    caplog.set_level(logging.ERROR, logger="clifer_edge.runtime.persons")
    rt = make_runtime(tmp_path, models)
    assert rt.process_face(a.test(a.classes[0]), person_id=a.name).memory == "episodic"
    n_a, n_b = _pending_faces(rt, a), _pending_faces(rt, b)
    rt.close()
    assert len(list(tmp_path.glob(f"{record.name}.corrupt-*"))) == 1
    assert len([r for r in caplog.records if record.name in r.getMessage()]) == 1

    again = make_runtime(tmp_path, models)
    assert again.stats()["quarantined_files"] == 0
    assert again.persons.get(a.name).n_faces_learned == n_a  # fresh record, memory kept
    learned_b = again.persons.get(b.name).n_faces_learned
    assert learned_b == sum(len(b.train(c)) for c in b.classes[:2]) + n_b


@pytest.mark.parametrize("suffix, member", [(RECORD, "real_latents"), (MEMORY, "episodic.weights")])
def test_an_array_header_claiming_a_huge_shape_is_quarantined(
    tmp_path, models, subjects, suffix, member
):
    import io

    a, _ = _two_learned_persons(tmp_path, models, subjects)
    path = tmp_path / f"{person_key(a.name)}{suffix}"
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 64)}
    )
    members[f"{member}.npy"] = header.getvalue() + b"\0" * 64
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)

    rt = make_runtime(tmp_path, models)
    expected = "episodic" if suffix == RECORD else "fallback"  # a damaged record keeps the memory
    for _ in range(2):
        assert rt.process_face(a.test(a.classes[0]), person_id=a.name).memory == expected
    assert rt.stats()["quarantined_files"] == 1
    assert len(list(tmp_path.glob(f"{path.name}.corrupt-*"))) == 1


def test_save_saves_everyone_it_can_then_names_who_failed(tmp_path, models, subjects):
    a, b = _two_learned_persons(tmp_path, models, subjects)
    rt = make_runtime(tmp_path, models)
    n_a, n_b = _pending_faces(rt, a), _pending_faces(rt, b)
    blocked = tmp_path / f"{person_key(a.name)}{RECORD}"
    blocked.unlink()
    blocked.mkdir()  # the record of a cannot be replaced: its save fails
    with pytest.raises(PersonSaveError, match=a.name) as raised:
        rt.close()
    assert list(raised.value.failures) == [a.name]
    blocked.rmdir()

    again = make_runtime(tmp_path, models)
    learned_b = again.persons.get(b.name).n_faces_learned
    assert learned_b == sum(len(b.train(c)) for c in b.classes[:2]) + n_b
    assert n_a > 0


# -- 4: forgetting is complete -------------------------------------------------------------------
def test_forget_leaves_nothing_behind(tmp_path, models, subjects):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models, memory={"store_faces": True}, persons={"mode": "identity"})
    learn_classes(rt, subject, subject.classes[:1])
    person = rt.process_face(subject.test(subject.classes[0])).person_id
    for image in subject.train(subject.classes[1]):
        rt.process_face(image, person_id=person, label=subject.classes[1])
    rt.save()
    key = person_key(person)
    # What a kill -9 during a save leaves behind: a complete temporary copy of the latents.
    leftover = tmp_path / f".{key}{RECORD}.x1y2z3.tmp"
    leftover.write_bytes((tmp_path / f"{key}{RECORD}").read_bytes())
    assert list((tmp_path / "faces" / key).rglob("*.png"))
    rt.close()

    again = make_runtime(
        tmp_path, models, memory={"store_faces": True}, persons={"mode": "identity"}
    )
    assert person in {pid for pid, _, _ in again.persons.iter_records()}
    leftover.write_bytes(b"late temporary")
    assert again.forget(person)
    assert not [name for name in files_under(tmp_path) if key in name]
    assert person not in {pid for pid, _, _ in again.persons.iter_records()}
    assert person not in again.identities


# -- 5: permissions ------------------------------------------------------------------------------
def test_memories_and_faces_are_private(tmp_path, models, subjects):
    subject = subjects[0]
    directory = tmp_path / "robot" / "memories"
    rt = make_runtime(directory, models, memory={"store_faces": True})
    learn_classes(rt, subject, subject.classes[:1])
    rt.close()
    folders = [directory, *[p for p in directory.rglob("*") if p.is_dir()]]
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in files) and any(p.suffix == ".gdm" for p in files)
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o700}
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}


# -- 6: the encoder is recorded ------------------------------------------------------------------
def test_memories_of_another_encoder_are_quarantined(tmp_path, models, subjects, caplog):
    a, b = _two_learned_persons(tmp_path, models, subjects)
    record = tmp_path / f"{person_key(a.name)}{RECORD}"
    meta = json.loads(str(np.load(record)["meta"]))
    assert meta["encoder"]["z_dim"] == int(models[0].metadata.z_dim)
    assert len(meta["encoder"]["sha256"]) == 64
    rewrite_record(record, edit_meta=lambda m: m["encoder"].update(sha256="0" * 64))

    caplog.set_level(logging.ERROR, logger="clifer_edge.runtime.persons")
    rt = make_runtime(tmp_path, models)
    assert rt.process_face(a.test(a.classes[0]), person_id=a.name).memory == "fallback"
    assert rt.process_face(b.test(b.classes[0]), person_id=b.name).memory == "episodic"
    lines = [r.getMessage() for r in caplog.records if "another encoder" in r.getMessage()]
    assert len(lines) == 1 and a.name in lines[0]
    assert len(list(tmp_path.glob("*.other-encoder-*"))) == 2  # memory and record, both kept


def test_a_memory_of_another_latent_size_is_quarantined(tmp_path, models, subjects):
    subject = subjects[0]
    foreign = GrowingDualMemory(seed=0).partial_fit(
        np.random.default_rng(0).uniform(-1, 1, (20, 7)).astype(np.float32), ["happiness"] * 20
    )
    foreign.save(tmp_path / f"{person_key(subject.name)}{MEMORY}")
    rt = make_runtime(tmp_path, models)
    for label in subject.classes[:2]:
        assert rt.process_face(subject.test(label), person_id=subject.name).memory == "fallback"
    learn_classes(rt, subject, subject.classes[:2])
    rt.set_idle(True)
    assert rt.imagine(5.0) is not None
    assert rt.stats()["quarantined_files"] == 1


# -- 7: limits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [math.nan, math.inf, -1.0, 0.0])
def test_imagine_refuses_a_budget_that_is_not_a_finite_positive_time(tmp_path, models, budget):
    rt = make_runtime(tmp_path, models)
    rt.set_idle(True)
    with pytest.raises(ValueError, match="budget_s"):
        rt.imagine(budget)


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("imagination", "budget_s", math.inf),
        ("imagination", "idle_timeout_s", math.inf),
        ("learning", "episode_size", 10**12),
        ("memory", "max_nodes", 10**9),
        ("persons", "unlabelled_max_age_days", math.nan),
    ],
)
def test_config_refuses_unbounded_values(section, key, value):
    with pytest.raises(ValueError, match=f"{section}\\.{key}"):
        load_config(None).replace(**{section: {key: value}})


def test_max_nodes_applies_to_memories_loaded_from_disk(tmp_path, models, subjects):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, subject, subject.classes[:1])
    rt.close()
    bound = 6
    again = make_runtime(tmp_path, models, memory={"max_nodes": bound})
    state = again.persons.get(subject.name)
    before = state.memory.stats()["episodic"]["nodes"]
    assert state.memory.config_.episodic.max_nodes == bound
    learn_classes(again, subject, subject.classes[1:])
    assert state.memory.stats()["episodic"]["nodes"] <= max(before, bound)


def test_labels_per_person_are_bounded(tmp_path, models, subjects):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models, learning={"max_labels": 3, "episode_size": 2})
    frames = subject.train(subject.classes[0])
    for i in range(3):
        rt.process_face(frames[0], person_id=subject.name, label=f"label-{i}")
    with pytest.raises(ValueError, match="max_labels"):
        rt.process_face(frames[0], person_id=subject.name, label="label-3")
    rt.process_face(frames[0], person_id=subject.name)
    with pytest.raises(ValueError, match="max_labels"):
        rt.teach(subject.name, "label-4", n_recent=1)
    assert rt.process_face(frames[0], person_id=subject.name, label="label-1").learned


def test_float_images_in_0_to_1_are_refused_and_0_to_255_agree_with_uint8(
    tmp_path, models, subjects
):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, subject, subject.classes[:3])
    face = subject.test(subject.classes[1])
    with pytest.raises(InvalidImageError, match="ambiguous"):
        rt.process_face(face.astype(np.float32) / 255.0, person_id=subject.name)
    as_uint8 = rt.process_face(face, person_id=subject.name)
    as_float = rt.process_face(face.astype(np.float32), person_id=subject.name)
    assert as_float.scores == pytest.approx(as_uint8.scores)


# -- 8: bounded growth ---------------------------------------------------------------------------
def test_one_off_unlabelled_ids_leave_no_files(tmp_path, models, data_dir):
    from clifer_edge.datasets import load_npz

    images = load_npz(data_dir / "ckplus48.npz").images[:300]
    rt = make_runtime(tmp_path, models)
    for i, image in enumerate(images):
        rt.process_face(image, person_id=f"visitor-{i}")
    rt.close()
    assert files_under(tmp_path) == []
    assert rt.stats()["persons_known"] == rt.config.persons.max_in_ram


def test_never_labelled_identities_are_capped_and_expire(tmp_path, models, data_dir, subjects):
    from clifer_edge.datasets import load_npz

    images = load_npz(data_dir / "ckplus48.npz").images[::7]
    settings = {"mode": "identity", "identity_threshold": 0.02, "max_unlabelled": 5}
    rt = make_runtime(tmp_path, models, persons=settings)
    learn_classes(rt, subjects[0], subjects[0].classes[:1])  # one labelled person: kept
    strangers = {rt.process_face(image).person_id for image in images}
    rt.close()
    assert len(strangers) > 20
    records = sorted(tmp_path.glob(f"*{RECORD}"))
    assert len(records) == 1 + 5
    assert rt.stats()["retention_deleted"] >= len(strangers) - 5 - rt.config.persons.max_in_ram
    again = make_runtime(tmp_path, models, persons={**settings, "unlabelled_max_age_days": 0.0})
    assert sorted(p.name for p in tmp_path.glob(f"*{RECORD}")) == [
        f"{person_key(subjects[0].name)}{RECORD}"
    ]
    assert [pid for pid, _, _ in again.persons.iter_records()] == [subjects[0].name]


def test_eviction_rewrites_nothing_that_did_not_change(tmp_path, models, subjects):
    rt = make_runtime(tmp_path, models, persons={"max_in_ram": 2})
    for subject in subjects[:3]:
        learn_classes(rt, subject, subject.classes[:1])
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    evictions = rt.stats()["evictions"]
    for _ in range(3):
        for subject in subjects[:3]:
            rt.process_face(subject.test(subject.classes[0]), person_id=subject.name)
    rt.close()
    assert rt.stats()["evictions"] >= evictions + 6
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_stats_reads_no_file(tmp_path, models, subjects, monkeypatch):
    for subject in subjects[:3]:
        rt = make_runtime(tmp_path, models, persons={"max_in_ram": 1})
        learn_classes(rt, subject, subject.classes[:1])
        rt.close()
    rt = make_runtime(tmp_path, models, persons={"max_in_ram": 1})

    def no_reading(*args, **kwargs):
        raise AssertionError("stats() read a file")

    monkeypatch.setattr(np, "load", no_reading)
    monkeypatch.setattr("clifer_edge.runtime.persons.read_npz", no_reading)
    assert rt.stats()["persons_known"] == 3


def test_temporaries_are_removed_at_start_up(tmp_path, models, subjects):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models, memory={"store_faces": True})
    learn_classes(rt, subject, subject.classes[:1])
    rt.close()
    key = person_key(subject.name)
    left = [tmp_path / f".{key}{MEMORY}.abc.tmp", tmp_path / f".{key}{RECORD}.def.tmp"]
    face_folder = next(p for p in (tmp_path / "faces").rglob("*") if p.is_dir() and p.name != key)
    left.append(face_folder / ".face.png.ghi.tmp")
    for path in left:
        path.write_bytes(b"partial")
    kept = files_under(tmp_path)
    make_runtime(tmp_path, models, memory={"store_faces": True}).close()
    assert not any(path.exists() for path in left)
    assert files_under(tmp_path) == [name for name in kept if not name.endswith(".tmp")]
    assert os.listdir(tmp_path)


def test_identity_index_keeps_every_person_after_removals(models, data_dir):
    from clifer_edge.datasets import load_npz
    from clifer_edge.preprocessing import preprocess_faces
    from clifer_edge.runtime.identity import IdentityIndex

    encoder = models[0]
    images = load_npz(data_dir / "ckplus48.npz").images[::40][:20]
    latents = encoder.encode(preprocess_faces(images, encoder.metadata.image_size))
    index = IdentityIndex(threshold=1e-6)
    for i, latent in enumerate(latents):
        index.update(f"p{i}", latent)
    for i in (0, 7, 19, 3):
        index.remove(f"p{i}")
    assert len(index) == 16
    kept = [i for i in range(20) if i not in (0, 7, 19, 3)]
    assert [index.assign(latents[i]) for i in kept] == [f"p{i}" for i in kept]
    assert index.assign(latents[7]).startswith("person-")
    rebuilt = IdentityIndex(1e-6, [(f"p{i}", latents[i], 1) for i in kept])
    assert [rebuilt.assign(latents[i]) for i in kept] == [f"p{i}" for i in kept]


def test_private_directory_tightens_its_own_folder_only(tmp_path):
    from clifer_edge.fileio import private_directory

    own = tmp_path / "memories"
    own.mkdir(mode=0o755)
    os.chmod(own, 0o755)
    private_directory(own)
    assert stat.S_IMODE(own.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: never changed
    private_directory(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    private_directory(shared / "a" / "b")
    assert stat.S_IMODE((shared / "a").stat().st_mode) == 0o700


def test_forget_deletes_only_the_persons_own_files(tmp_path, models, subjects):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, subject, subject.classes[:1])
    other = tmp_path / "calibration-0123456789abcdef.npz"
    other.write_bytes(b"not a person's file")
    assert not rt.forget("calibration-0123456789abcdef")
    assert other.exists()
    assert rt.process_face(subject.test(subject.classes[0]), subject.name).memory == "episodic"
