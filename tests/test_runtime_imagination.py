"""Imagination: imagined latents, the idle scheduler (preemption, memory of work done), and
whether imagining improves recognition of expressions a CK+ subject has not shown yet."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from runtime_support import ck_subjects, learn_classes, make_runtime, rewrite_record
from sklearn.metrics import f1_score

from clifer_edge.imagination import imagine_latents


@pytest.fixture(scope="module")
def subjects(data_dir):
    return ck_subjects(data_dir, min_classes=4)


class SlowGenerator:
    """The real generator made as slow as a small board, so preemption is measurable here."""

    def __init__(self, generator, seconds_per_call: float) -> None:
        self.generator = generator
        self.metadata = generator.metadata
        self.seconds_per_call = seconds_per_call

    def generate(self, z, expressions):
        time.sleep(self.seconds_per_call)
        return self.generator.generate(z, expressions)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_imagine_latents_every_other_expression(models, subjects):
    encoder, generator = models
    faces = np.stack([subjects[0].test(label) for label in subjects[0].classes[:2]])
    from clifer_edge.preprocessing import preprocess_faces

    meta = encoder.metadata
    z = encoder.encode(preprocess_faces(faces, meta.image_size, meta.channels))
    latents, labels = imagine_latents(z, encoder, generator, subjects[0].classes[:2])
    vocabulary = list(meta.vocabulary)
    assert latents.shape == (2 * (len(vocabulary) - 1), meta.z_dim)
    assert latents.dtype == np.float32 and np.all(np.abs(latents) <= 1.0 + 1e-6)
    assert labels[: len(vocabulary) - 1] == [c for c in vocabulary if c != subjects[0].classes[0]]
    some, labels = imagine_latents(z, encoder, generator, ["neutral", "neutral"], ["anger"])
    assert labels == ["anger", "anger"] and some.shape == (2, meta.z_dim)
    with pytest.raises(ValueError, match="not in the generator vocabulary"):
        imagine_latents(z, encoder, generator, ["neutral"] * 2, ["contempt"])
    with pytest.raises(ValueError, match="source labels"):
        imagine_latents(z, encoder, generator, ["neutral"])


def test_imagination_runs_only_when_idle(tmp_path, models, subjects):
    clock = FakeClock()
    encoder, generator = models
    from clifer_edge.runtime import ExpressionRuntime, load_config

    config = load_config(None).replace(
        memory={"directory": str(tmp_path)}, imagination={"idle_timeout_s": 10.0}
    )
    rt = ExpressionRuntime(config, encoder=encoder, generator=generator, clock=clock)
    learn_classes(rt, subjects[0], subjects[0].classes[:2])
    assert rt.imagine(1.0) is None  # a face was just seen
    clock.now += 9.0
    assert rt.imagine(1.0) is None
    clock.now += 1.5
    report = rt.imagine(30.0)
    assert report is not None and report.latents > 0 and report.done and not report.preempted
    # It remembers what it imagined: a second idle period has nothing left to do.
    again = rt.imagine(30.0)
    assert again is not None and again.latents == 0 and again.done
    # A new labelled episode brings new prototypes to imagine.
    learn_classes(rt, subjects[0], subjects[0].classes[2:3])
    clock.now += 11.0
    assert rt.imagine(30.0).latents > 0
    # The external signal: busy stops it, idle allows it before the timeout.
    rt.set_idle(False)
    assert rt.imagine(1.0) is None
    rt.set_idle(True)
    assert rt.imagine(1.0) is not None
    rt.process_face(subjects[0].test(subjects[0].classes[0]), person_id=subjects[0].name)
    assert rt.imagine(1.0) is None  # a face ends the external idle period too
    # Busy holds until the signal changes (the behaviour layer may say it only once) ...
    rt.set_idle(False)
    clock.now += 60.0
    assert not rt.is_idle() and rt.imagine(1.0) is None
    # ... and without a signal the no-face timeout alone decides.
    rt.set_idle(None)
    assert rt.is_idle()


def test_disabled_imagination_never_runs(tmp_path, models, subjects):
    rt = make_runtime(tmp_path, models, imagination={"enabled": False})
    learn_classes(rt, subjects[0], subjects[0].classes[:2])
    rt.set_idle(True)
    assert rt.imagine(1.0) is None


def test_a_face_preempts_imagination_at_once(tmp_path, models, subjects):
    encoder, generator = models
    from clifer_edge.runtime import ExpressionRuntime, load_config

    seconds_per_call = 0.05
    config = load_config(None).replace(
        memory={"directory": str(tmp_path)}, imagination={"chunk_prototypes": 1}
    )
    rt = ExpressionRuntime(
        config, encoder=encoder, generator=SlowGenerator(generator, seconds_per_call)
    )
    for subject in subjects[:3]:
        learn_classes(rt, subject, subject.classes)
    work = sum(len(rt.scheduler.pending(state)[1]) for state in rt.persons.resident())
    assert work >= 10  # >= 0.5 s of imagination ahead
    rt.set_idle(True)
    reports = []
    worker = threading.Thread(target=lambda: reports.append(rt.imagine(60.0)))
    worker.start()
    while rt.scheduler.total_latents == 0 and not any(s.n_imagined for s in rt.persons.resident()):
        time.sleep(0.005)
    face = subjects[0].test(subjects[0].classes[0])
    start = time.perf_counter()
    result = rt.process_face(face, person_id=subjects[0].name)
    face_latency = time.perf_counter() - start
    worker.join(timeout=30)
    stopped_after = time.perf_counter() - start
    assert not worker.is_alive()
    (report,) = reports
    print(
        f"\npreemption: face answered after {1000 * face_latency:.1f} ms, imagination stopped "
        f"after {1000 * stopped_after:.1f} ms ({report.chunks} of {work} chunks done, "
        f"{1000 * seconds_per_call:.0f} ms per generator call)"
    )
    assert result.memory == "episodic"
    assert report.preempted and not report.done
    assert report.chunks < work
    # One step at most: far less than the remaining work (>= 0.5 s).
    assert stopped_after < 0.5 * work * seconds_per_call
    assert not rt.is_idle()


def _unseen_f1(rt, subject, seen: list[str]) -> tuple[float, float]:
    """Macro F1 over all the subject's classes, and over its unseen classes only."""
    truth = list(subject.classes)
    predicted = [rt.process_face(subject.test(c), person_id=subject.name).label for c in truth]
    unseen = [c for c in subject.classes if c not in seen]
    return (
        float(f1_score(truth, predicted, labels=truth, average="macro", zero_division=0.0)),
        float(f1_score(truth, predicted, labels=unseen, average="macro", zero_division=0.0)),
    )


def _imagination_effect(tmp_path, models, subjects, n_seen: int) -> dict[str, np.ndarray]:
    figures = {key: [] for key in ("all", "all_imagined", "unseen", "unseen_imagined")}
    for i, subject in enumerate(subjects):
        seen = subject.classes[:n_seen]
        plain = make_runtime(tmp_path / f"plain{i}", models, imagination={"enabled": False})
        imagining = make_runtime(tmp_path / f"imag{i}", models)
        for rt in (plain, imagining):
            learn_classes(rt, subject, seen)
        imagining.set_idle(True)
        report = imagining.imagine(60.0)
        assert report.done and report.latents > 0
        known = imagining.persons.get(subject.name).memory.classes_
        assert set(subject.classes) <= set(known)  # it can now name unseen expressions
        assert set(plain.persons.get(subject.name).memory.labels_) == set(seen)
        f1_all, f1_unseen = _unseen_f1(plain, subject, seen)
        g1_all, g1_unseen = _unseen_f1(imagining, subject, seen)
        assert f1_unseen == 0.0  # without imagination an unseen class can never be named
        for key, value in zip(figures, (f1_all, g1_all, f1_unseen, g1_unseen), strict=True):
            figures[key].append(value)
        print(
            f"{subject.name}: seen {seen}; all-class F1 {f1_all:.3f} -> {g1_all:.3f} "
            f"with imagination; unseen-class F1 {f1_unseen:.3f} -> {g1_unseen:.3f}"
        )
    result = {key: np.array(value) for key, value in figures.items()}
    print(
        f"mean over {len(subjects)} CK+ subjects: all-class F1 {result['all'].mean():.3f} -> "
        f"{result['all_imagined'].mean():.3f}, unseen-class F1 {result['unseen'].mean():.3f} -> "
        f"{result['unseen_imagined'].mean():.3f}"
    )
    return result


def test_imagination_on_ck_subjects_small(tmp_path, models, subjects):
    """Two classes taught, the rest imagined, on 6 CK+ subjects (figures printed, see -s)."""
    print()
    _imagination_effect(tmp_path, models, subjects[:6], n_seen=2)


@pytest.mark.slow
def test_imagination_on_all_ck_subjects(tmp_path, models, subjects):
    """All CK+ subjects with >= 4 basic classes; asserts imagination names some unseen class."""
    print()
    figures = _imagination_effect(tmp_path, models, subjects, n_seen=2)
    assert figures["unseen_imagined"].mean() > figures["unseen"].mean()


def test_forgetting_a_person_during_imagination_leaves_no_files(tmp_path, models, subjects):
    encoder, generator = models
    from clifer_edge.runtime import ExpressionRuntime, load_config

    config = load_config(None).replace(
        memory={"directory": str(tmp_path)}, imagination={"chunk_prototypes": 1}
    )
    rt = ExpressionRuntime(config, encoder=encoder, generator=SlowGenerator(generator, 0.03))
    subject = subjects[0]
    learn_classes(rt, subject, subject.classes)
    rt.set_idle(True)
    reports = []
    worker = threading.Thread(target=lambda: reports.append(rt.imagine(60.0)))
    worker.start()
    while not rt.persons.get(subject.name).n_imagined:
        time.sleep(0.005)
    assert rt.forget(subject.name)
    worker.join(timeout=30)
    assert not worker.is_alive()
    rt.close()
    assert not list(tmp_path.glob(f"{subject.name}*"))


def test_the_protocol_imagines_with_the_robots_scheduler(models, subjects):
    """``clifer`` in the evaluation protocol picks, imagines and learns prototypes exactly as the
    runtime's idle scheduler: after each class nothing is left pending for the scheduler, only
    really shown classes were imagined from, and unseen classes get answers."""
    from clifer_edge.evaluation.protocol import ImaginationModel, ProtocolConfig, make_learner
    from clifer_edge.models import ModelFiles
    from clifer_edge.preprocessing import preprocess_faces

    encoder = models[0]
    calibration = ModelFiles.locate().load_calibration(encoder)
    learner = make_learner("clifer", ProtocolConfig(), ImaginationModel(*models, calibration))
    subject = subjects[0]
    meta = encoder.metadata
    for label in subject.classes[:2]:
        faces = preprocess_faces(np.stack(subject.train(label)), meta.image_size, meta.channels)
        learner.learn(calibration.to_memory(encoder.encode(faces)), [label] * len(faces))
        person = learner.person
        assert len(learner._scheduler.pending(person)[1]) == 0
        assert person.imagined_through == person.n_episodes and person.n_imagined > 0
    assert person.shown_labels == set(subject.classes[:2])
    assert learner.imagined == person.n_imagined
    # the memories now know classes the subject never showed
    assert set(learner.memory.classes_) > person.shown_labels
    assert learner.memory.labels_ == list(subject.classes[:2])  # imagined ones stay apart


def test_class_offset_points_move_prototypes_by_class_mean_differences():
    from clifer_edge.imagination import class_offset_points

    means = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], np.float32)
    names = ["neutral", "happiness", "surprise"]
    prototypes = np.array([[5.0, 5.0], [7.0, 7.0], [9.0, 9.0]], np.float32)
    points, labels = class_offset_points(
        prototypes, ["neutral", "happy", "contempt"], ["happiness", "surprise"], means, names
    )
    # neutral -> happiness, surprise; happy (= happiness) -> surprise; contempt has no mean
    assert labels == ["happiness", "surprise", "surprise"]
    np.testing.assert_allclose(points, [[6.0, 5.0], [5.0, 7.0], [6.0, 9.0]])
    none, no_labels = class_offset_points(prototypes[:1], ["neutral"], ["neutral"], means, names)
    assert none.shape == (0, 2) and no_labels == []


class NoDrawing:
    """A generator that must not be asked to draw (the class-offset imagination needs none)."""

    def __init__(self, generator) -> None:
        self.metadata = generator.metadata

    def generate(self, z, expressions):
        raise AssertionError("class_offsets imagination drew a face")


def test_class_offsets_imagination_needs_no_generator(tmp_path, models, subjects):
    encoder, generator = models
    rt = make_runtime(
        tmp_path,
        (encoder, NoDrawing(generator)),
        imagination={"method": "class_offsets"},
    )
    subject = subjects[0]
    learn_classes(rt, subject, subject.classes[:2])
    rt.set_idle(True)
    report = rt.imagine(30.0)
    assert report is not None and report.latents > 0 and report.done
    vocabulary = list(encoder.metadata.vocabulary)
    assert report.latents == report.prototypes * (len(vocabulary) - 2)
    # an unseen class can now be answered, by the imagined network only
    unseen = [c for c in vocabulary if c not in subject.classes[:2]]
    scores = rt.process_face(subject.test(subject.classes[2]), person_id=subject.name).scores
    assert set(unseen) <= set(scores)


def _memory_points(calibration, encoder, faces):
    from clifer_edge.preprocessing import preprocess_faces

    meta = encoder.metadata
    return calibration.to_memory(
        encoder.encode(preprocess_faces(np.stack(faces), meta.image_size, meta.channels))
    )


def _terms_by_definition(points, labels, encoder, generator, calibration):
    """Every pair's recentring term straight from its definition, one (s, c) at a time."""
    from clifer_edge.imagination import generator_vocabulary

    names = np.asarray(labels)
    shown = [c for c in generator_vocabulary(generator) if (names == c).any()]
    terms = {}
    for source in shown:
        mine = points[names == source]
        for target in shown:
            if target == source:
                continue
            changed, _ = imagine_latents(
                calibration.to_latent(mine),
                encoder,
                generator,
                [source] * len(mine),
                [target],
                True,
            )
            offset = points[names == target].mean(0) - mine.mean(0)
            terms[source, target] = offset - (calibration.to_memory(changed) - mine).mean(0)
    return terms


def _measured(scheduler, points, labels):
    """A person's terms as the robot measures them (the scheduler's steps), in one chunk."""
    from clifer_edge.imagination import PersonRecentring, generator_vocabulary

    person = PersonRecentring(points, labels, generator_vocabulary(scheduler.generator))
    rendered, targets, rows = scheduler._render(points, labels, person.classes, threading.Lock())
    person.add(rendered - points[rows], [labels[i] for i in rows], targets)
    return person


def test_peer_recentring_replaces_gs_mean_change_by_the_peers_offset(models, subjects):
    """term(s, c) = a person's class-mean offset minus G's mean change over their faces of s;
    the shift averages the terms of the people who showed both; the scheduler adds it to each
    point G imagines; pairs too few people showed, or G cannot draw, are left alone."""
    from clifer_edge.imagination import PeerRecentring
    from clifer_edge.models import ModelFiles
    from clifer_edge.runtime.config import ImaginationConfig
    from clifer_edge.runtime.scheduler import ImaginationScheduler

    encoder, generator = models
    calibration = ModelFiles.locate().load_calibration(encoder)
    config = ImaginationConfig(enabled=True, residual=True)
    scheduler = ImaginationScheduler(config, encoder, generator, calibration)
    people = []
    for subject in subjects[1:4]:
        labels = [label for label in subject.classes for _ in subject.train(label)]
        faces = [face for label in subject.classes for face in subject.train(label)]
        people.append((_memory_points(calibration, encoder, faces), labels))
    terms = [_measured(scheduler, points, labels).terms() for points, labels in people]
    points, labels = people[0]
    expected = _terms_by_definition(points, labels, encoder, generator, calibration)
    assert terms[0].keys() == expected.keys()
    for pair, term in expected.items():
        np.testing.assert_allclose(terms[0][pair], term, atol=1e-5)
    source, target = sorted(terms[0])[0]
    mine = points[np.asarray(labels) == source]

    recentring = PeerRecentring(terms, encoder.metadata.z_dim, min_peers=1)
    sharing = [t[source, target] for t in terms if (source, target) in t]
    assert recentring.counts[source, target] == len(sharing)
    got = recentring.shift([source, "neutral"], [target, "contempt"])
    np.testing.assert_allclose(got[0], np.mean(sharing, axis=0), atol=1e-6)
    np.testing.assert_array_equal(got[1], 0.0)  # G cannot draw contempt: no shift
    strict = PeerRecentring(terms, encoder.metadata.z_dim, min_peers=len(terms) + 1)
    assert strict.shifts == {}
    np.testing.assert_array_equal(strict.shift([source], [target]), np.zeros((1, mine.shape[1])))
    # Someone who showed one class gives no pair at all.
    assert _measured(scheduler, mine, [source] * len(mine)).terms() == {}

    lock = threading.Lock()
    before, imagined = scheduler._generate(mine[:2], [source] * 2, [target], lock)
    after, again = scheduler._generate(mine[:2], [source] * 2, [target], lock, recentring)
    assert imagined == again == [target, target]
    np.testing.assert_allclose(after - before, np.stack([got[0], got[0]]), atol=1e-5)


def test_the_robot_recentres_on_the_other_people_it_holds(tmp_path, models, subjects):
    """In idle time the runtime measures the other resident persons' terms on their real
    labelled faces, chunk by chunk (equal to the terms' definition), uses them for each person
    but never that person's own, and drops a forgotten person's."""
    from clifer_edge.imagination import PeerRecentring

    encoder, generator = models
    rt = make_runtime(
        tmp_path,
        models,
        imagination={"recentre_min_peers": 2, "chunk_prototypes": 3},
    )
    # Two people showed three expressions, the last one two: each of the first two showed one
    # the last has not learned, so the robot measures them for the last.
    people = subjects[:3]
    for subject, n in zip(people, (3, 3, 2), strict=True):
        learn_classes(rt, subject, subject.classes[:n])
    rt.set_idle(True)
    report = rt.imagine(300.0)
    assert report is not None and report.done and report.latents > 0
    states = {s.name: rt.persons.get(s.name) for s in people}
    known = rt.scheduler.known
    calibration = rt.scheduler.calibration
    terms = {}
    for subject in people[:2]:
        state = states[subject.name]
        assert not known.stale(state)
        assert state.real_labels and len(state.real_labels) == state.n_faces_learned
        terms[subject.name] = _terms_by_definition(
            state.real_latents, state.real_labels, encoder, generator, calibration
        )
        chunked = known._people[subject.name].recentring.terms()
        assert chunked.keys() == terms[subject.name].keys()
        for pair, term in terms[subject.name].items():
            np.testing.assert_allclose(chunked[pair], term, atol=1e-4)
    last = states[people[2].name]
    used = known.recentring(last, list(states), 2)
    others = PeerRecentring([terms[s.name] for s in people[:2]], used.dim, 2)
    assert used.shifts.keys() == others.shifts.keys() and used.shifts
    for pair, shift in others.shifts.items():
        np.testing.assert_allclose(used.shifts[pair], shift, atol=1e-4)
    # The person imagined for never counts for themself.
    mine = known.recentring(states[people[0].name], [people[0].name], 1)
    assert mine is None

    assert rt.forget(people[1].name)
    assert people[1].name not in known._people
    assert known.recentring(last, None, 2) is None  # one peer left


def test_people_measured_before_they_were_evicted_still_count(
    tmp_path, models, subjects, monkeypatch
):
    """A robot that holds fewer people in RAM than it knows recentres on everyone it measured:
    an evicted person's terms stay valid until they learn again."""
    from clifer_edge.imagination import PeerRecentring

    rt = make_runtime(
        tmp_path,
        models,
        persons={"max_in_ram": 2},
        imagination={"recentre_min_peers": 1},
    )
    first, second, newcomer = subjects[:3]
    learn_classes(rt, first, first.classes[:3])
    learn_classes(rt, second, second.classes[:2])  # waits for first's third expression
    rt.set_idle(True)
    assert rt.imagine(300.0).done
    known = rt.scheduler.known
    assert known.measured() == [first.name]
    terms = known._people[first.name].recentring.terms()

    rt.process_face(second.train(second.classes[0])[0], person_id=second.name)
    learn_classes(rt, newcomer, newcomer.classes[:2])  # evicts first, the least recently seen
    assert {s.person_id for s in rt.persons.resident()} == {second.name, newcomer.name}
    used = []
    recentring = known.recentring

    def recording(state, peers, min_peers):
        result = recentring(state, peers, min_peers)
        used.append((state.person_id, result))
        return result

    monkeypatch.setattr(known, "recentring", recording)
    rt.set_idle(True)
    assert rt.imagine(300.0).done
    got = [result for person, result in used if person == newcomer.name]
    assert got and got[-1] is not None
    expected = PeerRecentring([terms], got[-1].dim, 1)
    assert got[-1].shifts.keys() == expected.shifts.keys()
    for pair, shift in expected.shifts.items():
        np.testing.assert_allclose(got[-1].shifts[pair], shift, atol=1e-6)
    state = rt.persons.get(newcomer.name)
    assert recentring(state, [second.name], 1) is None  # the resident people alone: nobody


def test_a_known_person_is_measured_again_only_on_their_new_faces(
    tmp_path, models, subjects, monkeypatch
):
    """After a person shows an expression again, only their new faces are measured (the earlier
    faces' G changes are kept); a new expression measures all of them again. Either way the
    terms equal their definition on the newest faces."""
    import math

    from clifer_edge.imagination import generator_vocabulary

    encoder, generator = models
    vocabulary = generator_vocabulary(generator)
    rt = make_runtime(tmp_path, models, imagination={"recentre_min_peers": 2})
    again = subjects[0]
    grows = next(s for s in subjects[1:] if set(s.classes[3:]) & set(vocabulary))
    waiting = next(s for s in subjects[1:] if s is not grows)
    for subject, n in ((again, 3), (grows, 3), (waiting, 2)):
        learn_classes(rt, subject, subject.classes[:n])
    rt.set_idle(True)
    assert rt.imagine(300.0).done
    known = rt.scheduler.known
    first_size = known._people[again.name].size

    created = {}
    entry = known.entry

    def recording(state, points, labels, vocabulary):
        made = entry(state, points, labels, vocabulary)
        created.setdefault(state.person_id, (made.measured, made.size))
        return made

    monkeypatch.setattr(known, "entry", recording)
    learn_classes(rt, again, again.classes[:1])
    learn_classes(rt, grows, [next(c for c in grows.classes[3:] if c in vocabulary)])
    states = [rt.persons.get(s.name) for s in (again, grows, waiting)]
    rt.scheduler._activity.clear()  # as run() does once idle: the faces above were activity
    others = {s.person_id for s in states[:2]}
    measured, complete = rt.scheduler._measure_peers(
        states[:2], states[2:], others, math.inf, threading.RLock()
    )
    assert complete and measured > 0
    assert created[again.name][0] == first_size < created[again.name][1]
    assert created[grows.name][0] == 0
    for state in states[:2]:
        assert not known.stale(state)
        points, labels = rt.scheduler.real_faces(state)
        expected = _terms_by_definition(
            points, labels, encoder, generator, rt.scheduler.calibration
        )
        got = known._people[state.person_id].recentring.terms()
        assert not known._people[state.person_id].starts(points[1:], labels[1:])  # one fell out
        assert got.keys() == expected.keys()
        for pair, term in expected.items():
            np.testing.assert_allclose(got[pair], term, atol=1e-4)


def test_measuring_the_known_people_resumes_across_idle_periods(tmp_path, models, subjects):
    """Measuring runs in chunks within the budget like imagination: a short idle period leaves
    it part-done, the next ones go on from there, and imagination starts once it is done."""
    encoder, generator = models
    slow = (encoder, SlowGenerator(generator, 0.02))  # a chunk takes >= 40 ms on any machine
    rt = make_runtime(tmp_path, slow, imagination={"recentre_min_peers": 2, "chunk_prototypes": 1})
    people = subjects[:3]
    for subject, n in zip(people, (3, 3, 2), strict=True):
        learn_classes(rt, subject, subject.classes[:n])
    known = rt.scheduler.known
    rt.set_idle(True)
    measured, calls = [], 0
    while calls < 500:
        report = rt.imagine(0.05)
        calls += 1
        measured.append(sum(e.measured for e in known._people.values()))
        if report.latents:
            break
        assert not report.done
    assert report.latents > 0
    assert all(not known.stale(rt.persons.get(s.name)) for s in people[:2])
    assert measured == sorted(measured)  # never started over
    assert len(set(measured[:-1])) >= 2  # spread over several idle periods


def test_record_keeps_the_labels_of_the_real_latents(tmp_path, models, subjects):
    subject = subjects[0]
    rt = make_runtime(tmp_path, models)
    learn_classes(rt, subject, subject.classes[:2])
    labels = list(rt.persons.get(subject.name).real_labels)
    rt.close()
    assert labels == [c for c in subject.classes[:2] for _ in subject.train(c)]
    again = make_runtime(tmp_path, models)
    state = again.persons.get(subject.name)
    assert state.real_labels == labels and len(state.real_latents) == len(labels)
    again.close()
    # A record of format 2 kept the latents without their labels: they load, unlabelled.
    from clifer_edge.runtime.persons import person_key

    record = tmp_path / f"{person_key(subject.name)}.person.npz"
    rewrite_record(record, edit_meta=lambda m: (m.pop("real_labels"), m.update(format=2)))
    old = make_runtime(tmp_path, models).persons.get(subject.name)
    assert old.real_labels == [] and len(old.real_latents) == len(labels)
