"""The per-subject split on real CK+ and JAFFE: never a sequence on both sides."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clifer_edge.datasets import FaceDataset, load_npz
from clifer_edge.evaluation import class_order, kruskal_wallis, mean_ci95, split_subject
from clifer_edge.evaluation.report import summary_table


@pytest.fixture(scope="module")
def ckplus(data_dir) -> FaceDataset:
    return load_npz(data_dir / "ckplus48.npz")


@pytest.fixture(scope="module")
def jaffe(data_dir) -> FaceDataset:
    return load_npz(data_dir / "jaffe.npz")


def _pooled_ckplus(ckplus: FaceDataset) -> FaceDataset:
    """All CK+ as one 'subject' whose sequences are the real subject/sequence recordings:
    real near-duplicate triples, many sequences per class, so the sequence rule has work to do."""
    return FaceDataset(
        images=ckplus.images,
        labels=ckplus.labels,
        subjects=np.full(len(ckplus), "pool"),
        sequences=ckplus.sequence_keys(),
        source="ckplus48 pooled",
    )


def _assert_no_sequence_leak(dataset: FaceDataset, split) -> None:
    keys = dataset.sequence_keys()
    assert set(keys[split.train]).isdisjoint(keys[split.test])
    assert set(split.train).isdisjoint(split.test)


def test_split_never_leaks_a_sequence(ckplus):
    pooled = _pooled_ckplus(ckplus)
    split = split_subject(pooled, "pool", test_fraction=1 / 3, seed=3)
    _assert_no_sequence_leak(pooled, split)
    assert split.frame_split == () and split.dropped == ()
    assert set(split.classes) == set(ckplus.labels)
    # whole sequences: three frames each, about a third of them held out per class
    assert len(split.test) % 3 == 0 and len(split.train) % 3 == 0
    assert 0.25 < len(split.test) / len(pooled) < 0.4
    for label in split.classes:
        assert np.any(pooled.labels[split.test] == label)
        assert np.any(pooled.labels[split.train] == label)


def test_split_is_seeded_and_stable(ckplus):
    pooled = _pooled_ckplus(ckplus)
    a = split_subject(pooled, "pool", seed=1)
    b = split_subject(pooled, "pool", seed=1)
    c = split_subject(pooled, "pool", seed=2)
    assert np.array_equal(a.test, b.test)
    assert not np.array_equal(a.test, c.test)


def test_ckplus_single_sequence_classes_are_dropped_unless_frame_split(ckplus):
    # CK+48 holds one sequence per subject and class: the strict rule cannot split any class.
    strict = split_subject(ckplus, "S011")
    assert strict.classes == () and len(strict.dropped) == 6
    assert strict.train.size == 0 and strict.test.size == 0
    loose = split_subject(ckplus, "S011", allow_frame_split=True)
    assert len(loose.classes) == 6 and loose.frame_split == loose.classes
    assert len(loose.test) == 6 and len(loose.train) == 12  # last frame of each triple held out
    keys = ckplus.sequence_keys()
    # the held-out frame is the last (peak) one of its sequence
    assert all(row > max(r for r in loose.train if keys[r] == keys[row]) for row in loose.test)


def test_jaffe_split_holds_out_one_photo_per_class(jaffe):
    for subject in sorted(set(jaffe.subjects)):
        split = split_subject(jaffe, subject)
        _assert_no_sequence_leak(jaffe, split)
        assert len(split.classes) == 7
        assert sorted(jaffe.labels[split.test]) == sorted(split.classes)


def test_split_errors(ckplus):
    with pytest.raises(ValueError, match="not in"):
        split_subject(ckplus, "nobody")
    with pytest.raises(ValueError, match="test_fraction"):
        split_subject(ckplus, "S011", test_fraction=1.0)
    no_subjects = FaceDataset(images=ckplus.images[:3], labels=ckplus.labels[:3])
    with pytest.raises(ValueError, match="subjects"):
        split_subject(no_subjects, "S011")


def test_class_order_default_and_rotations():
    classes = ["contempt", "disgust", "happiness", "neutral", "surprise"]
    assert class_order(classes) == ["neutral", "happiness", "surprise", "disgust", "contempt"]
    assert class_order(classes, "surprise") == [
        "surprise",
        "disgust",
        "contempt",
        "neutral",
        "happiness",
    ]
    # a start the subject lacks still fixes the cycle position
    assert class_order(["neutral", "fear"], "anger") == ["fear", "neutral"]
    with pytest.raises(ValueError, match="order start"):
        class_order(classes, "boredom")


def test_mean_ci95_matches_hand_computation():
    mean, half = mean_ci95([0.5, 0.7, 0.9])
    # sd = 0.2, sem = 0.2 / sqrt(3), t(0.975, 2) = 4.302653
    assert mean == pytest.approx(0.7)
    assert half == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-5)
    assert math.isnan(mean_ci95([0.4])[1]) and mean_ci95([0.4])[0] == 0.4
    assert math.isnan(mean_ci95([])[0])


def test_no_confidence_interval_from_fewer_than_three_subjects():
    # From two values t(0.975, 1) = 12.7 gives an interval wider than the F1 range.
    mean, half = mean_ci95([0.5, 0.9])
    assert mean == pytest.approx(0.7) and math.isnan(half)
    row = {
        "condition": "gdm",
        "experiment": 1,
        "memory": "episodic",
        "f1_mean": 0.7,
        "f1_ci95": half,
        "f1_steps_mean": 0.8,
        "n_subjects": 2,
    }
    line = summary_table([row])[-1]
    assert "| 0.700 |" in line and "±" not in line
    assert "0.700 ± 0.497" in summary_table([{**row, "f1_ci95": 0.4966, "n_subjects": 3}])[-1]


def test_kruskal_wallis_across_orders():
    result = kruskal_wallis({"a": [0.1, 0.2, 0.3], "b": [0.7, 0.8, 0.9]})
    assert result["n_groups"] == 2 and result["p"] < 0.1 and result["H"] > 3
    assert kruskal_wallis({"a": [0.5, 0.5], "b": [0.5]}) is None
    assert kruskal_wallis({"a": [0.5]}) is None
