"""The CLIFER protocol end to end on a handful of real CK+ and JAFFE subjects."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clifer_edge.datasets import FaceDataset, load_npz
from clifer_edge.evaluation import ProtocolConfig, prepare_subjects, run_protocol, summarise
from clifer_edge.evaluation.features import PixelPCA, prepare_faces
from clifer_edge.evaluation.protocol import (
    compare_orders,
    few_shot_class,
    run_few_shot_all,
)
from clifer_edge.faces import FaceDetector


@pytest.fixture(scope="module")
def pca(data_dir) -> PixelPCA:
    fer = load_npz(data_dir / "fer2013.npz")
    rows = np.flatnonzero(fer.splits == "Training")[::10]
    return PixelPCA(n_components=30).fit(prepare_faces(fer.subset(rows), progress=False).faces)


@pytest.fixture(scope="module")
def ckplus(data_dir, pca):
    dataset = load_npz(data_dir / "ckplus48.npz")
    return dataset, pca.transform(prepare_faces(dataset, progress=False).faces)


def _check_run(run: dict, classes: tuple[str, ...]) -> None:
    steps = run["steps"]
    assert [s["learned"] for s in steps] == run["class_order"]
    assert sorted(run["class_order"]) == sorted(classes)
    memories = ("mlp",) if run["condition"] == "mlp" else ("episodic", "semantic")
    for step in steps:
        for experiment in ("1", "2"):
            assert set(step["f1"][experiment]) == set(memories)
            for value in step["f1"][experiment].values():
                assert 0.0 <= value <= 1.0
    for memory in memories:
        # after one class, a learner that knows one label answers it: Exp. 1 F1 is exactly 1
        assert steps[0]["f1"]["1"][memory] == 1.0
        # after the last class, "seen" and "all" classes coincide
        assert steps[-1]["f1"]["1"][memory] == steps[-1]["f1"]["2"][memory]
        # in Exp. 2 a learner that knows one class of n cannot exceed F1 = 1/n... (one class right)
        assert steps[0]["f1"]["2"][memory] <= 1.0 / len(classes) + 1e-9


def test_protocol_on_ckplus_subjects(ckplus):
    dataset, features = ckplus
    subjects, skipped = prepare_subjects(
        dataset, features, min_classes=4, max_subjects=3, allow_frame_split=True
    )
    assert len(subjects) == 3
    assert skipped["S005"] == "1 splittable classes < 4"
    result = run_protocol(subjects, ["mlp", "gdm", "replay"], ProtocolConfig(), progress=False)
    assert len(result.runs) == 9
    by_subject = {s.subject: s for s in subjects}
    for run in result.runs:
        _check_run(run, by_subject[run["subject"]].split.classes)
        if run["condition"] != "mlp":
            nodes = run["steps"][-1]["nodes"]
            assert nodes["episodic"] >= 1 and nodes["semantic"] >= 1
    summary = summarise(result)
    assert len(summary) == 2 + 2 * 4
    assert all(row["n_subjects"] == 3 for row in summary)
    # near-duplicate frames (CK+ frame split) make the batch MLP nearly perfect on seen classes
    mlp = next(r for r in summary if r["condition"] == "mlp" and r["experiment"] == 1)
    assert mlp["f1_mean"] > 0.8


def test_orders_and_kruskal_on_jaffe(data_dir, pca):
    dataset = load_npz(data_dir / "jaffe.npz")
    subset = dataset.subset(np.isin(dataset.subjects, ["KA", "KL", "KM"]))
    prepared = prepare_faces(subset, detector=FaceDetector(), progress=False)
    assert prepared.valid.all()
    features = pca.transform(prepared.faces)
    subjects, skipped = prepare_subjects(subset, features, min_classes=7)
    assert len(subjects) == 3 and not skipped
    result = run_protocol(subjects, ["gdm"], ProtocolConfig(), orders="all", progress=False)
    assert len(result.orders) == 7 and len(result.runs) == 7 * 3
    assert list(result.orders) == [
        "default",
        "happiness",
        "surprise",
        "anger",
        "fear",
        "sadness",
        "disgust",
    ]
    assert result.orders["default"][0] == "neutral"
    assert result.orders["fear"][:2] == ["fear", "sadness"]
    for run in result.runs:
        assert run["class_order"][0] == ("neutral" if run["order"] == "default" else run["order"])
    rows = compare_orders(result)
    assert {(r["experiment"], r["memory"]) for r in rows} == {
        (e, m) for e in (1, 2) for m in ("episodic", "semantic")
    }
    for row in rows:
        assert set(row["f1_mean_by_order"]) == set(result.orders)
        if row["kruskal_wallis"] is not None:
            assert 0.0 <= row["kruskal_wallis"]["p"] <= 1.0


def test_few_shot_contempt_on_ckplus(ckplus):
    dataset, features = ckplus
    assert few_shot_class(dataset) == "contempt"
    results, skipped = run_few_shot_all(
        dataset,
        features,
        "contempt",
        ["gdm"],
        ProtocolConfig(),
        shots=(1, 3),
        min_classes=3,
        max_subjects=2,
        allow_frame_split=True,
        progress=False,
    )
    assert len(results) == 2
    for entry in results:
        assert entry["n_new_train"] == 2 and entry["n_new_test"] == 1
        one, three = entry["shots"]
        assert one["k"] == 1 and three == {"k": 3, "skipped": "only 2 training faces"}
        for values in one["memories"].values():
            assert values["new_class_accuracy"] in (0.0, 1.0)
            assert not math.isnan(values["old_f1_before"])
            # The new class is one more column of the all-class F1: missed, it scores 0 there.
            if values["new_class_accuracy"] == 0.0:
                old = values["old_f1_after"]
                assert values["all_f1_after"] < old or values["all_f1_after"] == old == 0.0
            else:
                assert values["all_f1_after"] > 0.0
    assert any("contempt" in reason for reason in skipped.values())


def test_colour_and_grey_data_give_the_same_faces(data_dir):
    dataset = load_npz(data_dir / "jaffe.npz")
    grey = dataset.subset(np.arange(6))
    colour = FaceDataset(
        images=np.repeat(grey.images[..., None], 3, axis=3),
        labels=grey.labels,
        subjects=grey.subjects,
        source="jaffe rgb",
    )
    detector = FaceDetector()
    a = prepare_faces(grey, detector=detector, progress=False)
    b = prepare_faces(colour, detector=detector, progress=False)
    assert a.valid.all() and b.valid.all()
    np.testing.assert_allclose(a.faces, b.faces, atol=1e-5)
    # without a detector, full frames are taken as face crops and merely resized
    c = prepare_faces(grey, size=32, progress=False)
    assert c.faces.shape == (6, 32, 32, 1) and c.detection is None
