"""The GrowingDualMemory public API: config, validation, learning, recall (both backends)."""

from __future__ import annotations

import numpy as np
import pytest
from gdm_helpers import (
    BACKENDS,
    clustered_stream,
    fitted_memory,
    memory_snapshot,
    snapshots_equal,
    test_points,
)

from clifer_edge import GrowingDualMemory as ReExported
from clifer_edge.memory import GDMConfig, GrowingDualMemory, GWRConfig, NotFittedError

# -- config -------------------------------------------------------------------------------------


def test_defaults_are_clifers() -> None:
    config = GDMConfig()
    assert (config.episodic.activation_threshold, config.semantic.activation_threshold) == (
        0.4,
        0.2,
    )
    assert (config.episodic.habituation_threshold, config.semantic.habituation_threshold) == (
        0.5,
        0.2,
    )
    assert (config.episodic.epsilon_b, config.episodic.epsilon_n) == (0.2, 0.001)
    assert (config.semantic.epsilon_b, config.semantic.epsilon_n) == (0.02, 0.001)
    assert (config.episodic.max_age, config.semantic.max_age) == (1000, 2000)
    assert (config.episodic.regulated, config.semantic.regulated) == (False, True)
    assert config.beta == 0.7 and config.epochs == 10 and config.n_replay_epochs == 3
    assert GDMConfig(epochs=2).n_replay_epochs == 1


def test_config_round_trips_through_dict_and_yaml(tmp_path) -> None:
    config = GDMConfig.from_dict({"epochs": 4, "semantic": {"max_nodes": 50}, "context_depth": 2})
    assert config.semantic.max_nodes == 50
    assert config.semantic.activation_threshold == 0.2  # untouched keys keep semantic defaults
    assert GDMConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "gdm.yaml"
    path.write_text("gdm:\n  epochs: 4\n  context_depth: 2\n  semantic:\n    max_nodes: 50\n")
    assert GDMConfig.from_yaml(path) == config


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"epoch": 3}, ["epoch", "3"]),
        ({"episodic": {"max_nodez": 10}}, ["episodic.max_nodez", "10"]),
        ({"epochs": "10"}, ["epochs", "'10'"]),
        ({"epochs": 2.5}, ["epochs", "2.5"]),
        ({"beta": True}, ["beta", "True"]),
        ({"beta": 1.5}, ["beta", "1.5"]),
        ({"semantic": {"activation_threshold": 0.0}}, ["semantic.activation_threshold", "0.0"]),
        ({"episodic": {"max_nodes": 1}}, ["episodic.max_nodes", "1"]),
        ({"a_inc": float("nan")}, ["a_inc", "nan"]),
        ({"backend": "gpu"}, ["backend", "'gpu'"]),
        ({"episodic": 3}, ["episodic", "3"]),
    ],
)
def test_bad_config_names_key_and_value(data, names) -> None:
    with pytest.raises(ValueError) as info:
        GDMConfig.from_dict(data)
    for name in names:
        assert name in str(info.value)


def test_bad_yaml_is_a_value_error(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        GDMConfig.from_yaml(path)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match=r"epsilon_b=-0\.1"):
        GWRConfig(epsilon_b=-0.1)


# -- shared API check ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_estimator_api(backend) -> None:
    """The scikit-learn conventions every memory object follows."""
    config = GDMConfig(backend=backend, epochs=3)
    memory = GrowingDualMemory(config, seed=7)
    assert memory.config is config and memory.seed == 7
    assert not hasattr(memory, "labels_") and not hasattr(memory, "n_features_in_")
    assert memory.stats()["episodic"]["nodes"] == 0
    for call in (
        lambda: memory.predict(np.zeros((1, 4))),
        lambda: memory.predict_proba(np.zeros((1, 4))),
        memory.replay,
        memory.episodic_prototypes,
    ):
        with pytest.raises(NotFittedError, match="partial_fit"):
            call()
    X = np.random.default_rng(0).uniform(-1, 1, (6, 4)).astype(np.float32)
    assert memory.partial_fit(X, ["a", "a", "a", "b", "b", "b"]) is memory
    assert memory.replay() is memory
    assert memory.labels_ == ["a", "b"] and memory.n_features_in_ == 4
    stats = memory.stats()
    assert (
        stats["n_features"] == 4 and stats["labels"] == ["a", "b"] and stats["backend"] == backend
    )
    for name in ("episodic", "semantic"):
        assert stats[name]["nodes"] >= 2 and stats[name]["edges"] >= 1
        assert isinstance(memory.predict(X, memory=name), list)
        proba = memory.predict_proba(X, memory=name)
        assert proba.shape == (6, 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert [memory.labels_[i] for i in proba.argmax(axis=1)] == memory.predict(X, memory=name)
    prototypes, labels = memory.episodic_prototypes()
    assert prototypes.dtype == np.float32 and prototypes.shape == (stats["episodic"]["nodes"], 4)
    assert set(labels) <= {"a", "b"} and len(labels) == len(prototypes)
    assert ReExported is GrowingDualMemory


def test_bad_config_is_rejected_at_first_fit_not_init() -> None:
    memory = GrowingDualMemory(config={"epochs": 3})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="should be a GDMConfig"):
        memory.partial_fit(np.zeros((2, 3)), ["a", "b"])
    assert not hasattr(memory, "labels_")


# -- validation: every rejected call leaves the memory unchanged ----------------------------------

BAD_CALLS = {
    "wrong dimension": (lambda X: X[:, :-1], None, "n_features_in_=16"),
    "1-D sample": (lambda X: X[0], None, "expected 2-D"),
    "NaN": (
        lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X),
        None,
        "non-finite",
    ),
    "inf": (
        lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.inf, X),
        None,
        "non-finite",
    ),
    "overflow to inf": (lambda X: X.astype(np.float64) * 1e300, None, "non-finite"),
    "empty batch": (lambda X: X[:0], None, "empty"),
    "strings": (lambda X: X.astype(str), None, "dtype"),
    "label count": (lambda X: X, lambda y: y[:-1], "4 labels for n_samples=5"),
    "bare str labels": (lambda X: X, lambda y: "class0", "sequence of str"),
    "empty label": (lambda X: X, lambda y: [*y[:-1], " "], r"labels\[4\]"),
    "non-str label": (lambda X: X, lambda y: [*y[:-1], 3], r"labels\[4\]=3"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_partial_fit_is_rejected_and_memory_unchanged(backend, case) -> None:
    memory = fitted_memory(backend, replay=False)
    before = memory_snapshot(memory)
    _, _, episodes = clustered_stream(seed=5)
    X, labels = episodes[0]
    make_X, make_labels, message = BAD_CALLS[case]
    with pytest.raises(ValueError, match=message):
        memory.partial_fit(make_X(X), make_labels(labels) if make_labels else labels)
    assert snapshots_equal(before, memory_snapshot(memory))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_predict_is_rejected(backend) -> None:
    memory = fitted_memory(backend, replay=False)
    before = memory_snapshot(memory)
    good = np.zeros((2, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="n_features_in_=16"):
        memory.predict(np.zeros((2, 15)))
    with pytest.raises(ValueError, match="non-finite"):
        memory.predict_proba(np.full((2, 16), np.nan))
    with pytest.raises(ValueError, match="empty"):
        memory.predict(good[:0])
    with pytest.raises(ValueError, match="memory='working'"):
        memory.predict(good, memory="working")
    assert snapshots_equal(before, memory_snapshot(memory))


# -- learning -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_learns_classes_one_at_a_time_and_a_new_label_later(backend) -> None:
    centres, names, episodes = clustered_stream(n_classes=5)
    memory = GrowingDualMemory(GDMConfig(backend=backend), seed=0)
    for X, labels in episodes[:4]:
        memory.partial_fit(X, labels)
        memory.replay()
    X_test, y_test = test_points(centres, names)
    known = y_test != names[4]
    for name in ("episodic", "semantic"):
        assert np.mean(np.array(memory.predict(X_test[known], memory=name)) == y_test[known]) >= 0.9
    assert memory.labels_ == [str(n) for n in names[:4]]
    # A label never seen before, taught with a few samples after the others.
    memory.partial_fit(*episodes[4])
    memory.replay()
    assert memory.labels_[-1] == names[4]
    for name in ("episodic", "semantic"):
        predicted = np.array(memory.predict(X_test, memory=name))
        assert np.mean(predicted[~known] == names[4]) >= 0.9, name
        assert np.mean(predicted[known] == y_test[known]) >= 0.9, name  # the old ones are kept
        assert memory.predict_proba(X_test, memory=name).shape == (len(X_test), 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_memory(backend) -> None:
    a = fitted_memory(backend, seed=3)
    b = fitted_memory(backend, seed=3)
    assert snapshots_equal(memory_snapshot(a), memory_snapshot(b))


def test_seed_orders_the_replay() -> None:
    a = fitted_memory("numpy", seed=3)
    b = fitted_memory("numpy", seed=4)
    assert a.rng_.bit_generator.state != b.rng_.bit_generator.state


@pytest.mark.parametrize("backend", BACKENDS)
def test_accepts_float64_lists_and_numpy_labels(backend) -> None:
    memory = GrowingDualMemory(GDMConfig(backend=backend, epochs=2))
    memory.partial_fit([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], np.array(["x", "y", "x"]))
    assert memory.predict([[0.0, 1.0]], memory="episodic") == ["x"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("replay", [False, True])
def test_semantic_memory_recalls_what_it_has_not_consolidated(backend, replay) -> None:
    """One face of a new class, near the old class (too near for the semantic memory to insert
    a node, far enough for the episodic one): the semantic memory carries no node of it yet, so
    its answer there comes from the episodic memory; elsewhere it answers alone."""
    rng = np.random.default_rng(0)
    old = rng.normal(0.0, 0.3, (40, 8)).astype(np.float32)
    memory = GrowingDualMemory(GDMConfig(backend=backend), seed=0)
    for start in range(0, 40, 5):
        memory.partial_fit(old[start : start + 5], ["a"] * 5)
        if replay:
            memory.replay()
    new = (old.mean(axis=0) + np.r_[1.3, np.zeros(7)]).astype(np.float32)[None]
    memory.partial_fit(new, ["b"])
    if replay:
        memory.replay()
    assert memory.consolidated() == ["a"]
    assert memory.predict(new, memory="semantic") == ["b"] == memory.predict(new, "episodic")
    np.testing.assert_allclose(
        memory.predict_proba(new, memory="semantic"), memory.predict_proba(new, "episodic")
    )
    bmu, _ = memory.semantic_.nearest(new)
    assert np.argmax(memory.semantic_.label_histograms()[bmu[0]]) == 0  # alone it says "a"
    assert memory.predict(old[:5], memory="semantic") == ["a"] * 5
