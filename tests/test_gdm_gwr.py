"""The GWR networks: hand-computed steps, invariants, and compiled == numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from gdm_helpers import BACKENDS, memory_snapshot

from clifer_edge.memory import GDMConfig, GrowingDualMemory, GWRConfig
from clifer_edge.memory._state import context_weights
from clifer_edge.memory.gwr import GWRNetwork
from clifer_edge.memory.reference import ReferenceGWR

NETWORKS = {"cython": GWRNetwork, "numpy": ReferenceGWR}


def make(backend: str, config: GWRConfig, n_features: int, context_depth: int = 0, n_labels=2):
    network = NETWORKS[backend](config, n_features, context_depth, 0.7, 1.0, 0.1)
    network.ensure_labels(n_labels)
    return network


def labelled_stream(n: int, n_features: int, n_classes: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1.5, 1.5, size=(n_classes, n_features))
    y = rng.integers(0, n_classes, size=n)
    X = centres[y] + spread * rng.standard_normal((n, n_features))
    return X.astype(np.float32), y.astype(np.int64)


def test_context_weights() -> None:
    np.testing.assert_allclose(context_weights(1), [1.0])
    alphas = context_weights(3)
    np.testing.assert_allclose(alphas, np.exp(-np.arange(3)) / np.exp(-np.arange(3)).sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_steps(backend) -> None:
    """Five samples through an episodic network (K = 0), every value worked out by hand."""
    network = make(backend, GWRConfig(), n_features=2)
    X = np.array([[0, 0], [4, 0], [0, 0], [0, 3], [0, 3]], dtype=np.float32)
    network.train(X, np.array([0, 0, 0, 1, 1]), epochs=1)
    state = network.get_state()
    f32 = np.float32
    # x0, x1 bootstrap two nodes joined by an edge (clock 1).
    # x2 = node 0 exactly: activation 1 -> update (clock 2): h0 = 1 - 0.3; node 0 does not move;
    #   its neighbour node 1 moves by 0.001 * h1 * (x - w1), then habituates with tau_n = 0.1.
    h0 = f32(1.0 + 0.3 * 1.05 * 0.0 - 0.3)
    w1x = f32(4.0 + 0.001 * 1.0 * (0.0 - 4.0))
    h1 = f32(1.0 + 0.1 * 1.05 * 0.0 - 0.1)
    # x3 = (0, 3): BMU 0 at distance 3, a = exp(-3) < 0.4 but h0 = 0.7 >= 0.5 -> update (clock 3):
    #   h0 habituates, w0 += 0.2 * h0 * (x - w0); label 1 counted, label 0 loses 0.1; node 1 moves.
    h0 = f32(float(h0) + 0.3 * 1.05 * (1 - float(h0)) - 0.3)
    w0y = f32(0.0 + 0.2 * float(h0) * 3.0)
    step = 0.001 * float(h1)
    w1 = [f32(float(w1x) + step * (0.0 - float(w1x))), f32(0.0 + step * 3.0)]
    h1 = f32(float(h1) + 0.1 * 1.05 * (1 - float(h1)) - 0.1)
    # x4 = (0, 3): a < 0.4 and now h0 = 0.4945 < 0.5 -> new node halfway between w0 and x, with
    #   edges 0-2 and 1-2 replacing 0-1 (clock 4).
    assert state.n_nodes == 3
    np.testing.assert_array_equal(
        state.weights[:, 0, :],
        np.array([[0, w0y], w1, [0, f32(0.5 * (float(w0y) + 3.0))]], dtype=np.float32),
    )
    np.testing.assert_array_equal(state.habituation, np.array([h0, h1, 1.0], dtype=np.float32))
    np.testing.assert_array_equal(
        state.histograms, np.array([[2.0 - 0.1, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    )
    np.testing.assert_array_equal(state.edges, [[0, 2], [1, 2]])
    np.testing.assert_array_equal(state.edge_stamps, [4, 4])
    assert state.clock == 4
    # Temporal synapses: 0 -> 1 (bootstrap), 1 -> 0 (x2's BMU), 0 -> 2 (x4's new node).
    np.testing.assert_array_equal(state.temporal, [[0, 1], [0, 2], [1, 0]])
    np.testing.assert_array_equal(state.temporal_counts, [1.0, 1.0, 1.0])
    bmus, _ = network.nearest(np.array([[0, 2.9], [5, 0]], dtype=np.float32))
    np.testing.assert_array_equal(bmus, [2, 1])
    assert network.trajectories(3)[0] == [0, 1, 0]  # ties between equal counts -> lower index


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("insert_at_input", [False, True])
def test_a_regulated_network_inserts_for_a_wrong_label(backend, insert_at_input) -> None:
    """A face of a new class far from a node of another class: the regulated network inserts,
    halfway (GWR) or at the input (the semantic memory's setting), with the new class's label."""
    config = GWRConfig(regulated=True, insert_at_input=insert_at_input)
    network = make(backend, config, n_features=2)
    X = np.array([[0, 0], [0, 1], [0, 0], [0, 0], [4, 0]], dtype=np.float32)
    network.train(X, np.array([0, 0, 0, 0, 1]), epochs=1)
    state = network.get_state()
    # x2, x3 = node 0 with its own label: weak updates that leave it in place, h0 0.4945 < 0.5.
    # x4 = (4, 0): BMU node 0 with the wrong label, a = exp(-4) < 0.4 -> a new node.
    assert state.n_nodes == 3
    assert state.habituation[0] < config.habituation_threshold
    expected = [4, 0] if insert_at_input else [2, 0]
    np.testing.assert_array_equal(state.weights[2, 0], np.array(expected, dtype=np.float32))
    np.testing.assert_array_equal(state.histograms[2], [0.0, 1.0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("regulated", [False, True])
def test_invariants_on_a_long_stream(backend, regulated) -> None:
    config = GWRConfig(
        max_nodes=40, max_degree=3, temporal_degree=2, max_age=60, regulated=regulated
    )
    network = make(backend, config, n_features=8, context_depth=2, n_labels=5)
    X, y = labelled_stream(400, 8, 5, spread=0.6, seed=3)
    network.train(X, y, epochs=3)
    state = network.get_state()
    state.validate(config.max_degree, config.temporal_degree)
    assert 2 < state.n_nodes <= config.max_nodes
    degree = np.bincount(state.edges.ravel(), minlength=state.n_nodes)
    assert degree.min() >= 1, "isolated nodes survived the clean-up"
    assert degree.max() <= config.max_degree
    assert np.all(state.clock - state.edge_stamps <= config.max_age)
    floor = np.float32(config.habituation_floor) - 1e-6
    assert np.all(state.habituation >= floor) and np.all(state.habituation <= 1.0)
    assert np.all(state.histograms >= 0) and np.all(state.histograms.sum(axis=1) > 0)
    assert np.bincount(state.temporal[:, 0], minlength=state.n_nodes).max() <= 2


def test_buffers_grow_geometrically_and_stay_linear_in_nodes() -> None:
    config = GWRConfig(max_nodes=10_000)
    network = make("cython", config, n_features=4, context_depth=1)
    X, y = labelled_stream(600, 4, 2, spread=3.0, seed=0)
    network.train(X, y, epochs=2)
    assert network.n_nodes > 100
    assert network.capacity >= network.n_nodes
    assert network.capacity & (network.capacity - 1) == 0  # 16 doubled: a power of two
    assert network._nbr.shape == (network.capacity, config.max_degree)  # no N x N matrix
    assert network._syn.shape == (network.capacity, config.temporal_degree)


def test_capacity_stops_at_max_nodes() -> None:
    network = make("cython", GWRConfig(max_nodes=37), n_features=4)
    X, y = labelled_stream(300, 4, 2, spread=3.0, seed=1)
    network.train(X, y, epochs=2)
    assert network.n_nodes <= 37 and network.capacity == 37


@pytest.mark.parametrize("regulated", [False, True])
@pytest.mark.parametrize("context_depth", [0, 2])
@pytest.mark.parametrize("insert_at_input", [False, True])
def test_compiled_equals_reference_on_a_stream(regulated, context_depth, insert_at_input) -> None:
    """Same nodes, edges, synapses, histograms and predictions (the reference is the oracle)."""
    config = GWRConfig(
        regulated=regulated,
        insert_at_input=insert_at_input,
        max_degree=4,
        temporal_degree=3,
        max_age=200,
    )
    X, y = labelled_stream(250, 12, 6, spread=0.5, seed=7)
    starts = np.zeros(len(X), dtype=bool)
    starts[::40] = True
    states, networks = [], []
    for backend in ("cython", "numpy"):
        network = make(backend, config, 12, context_depth=context_depth, n_labels=6)
        network.train(X, y, epochs=4, starts=starts)
        states.append(network.get_state())
        networks.append(network)
    fast, ref = states
    assert fast.n_nodes == ref.n_nodes > 10
    np.testing.assert_allclose(fast.weights, ref.weights, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.habituation, ref.habituation, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.histograms, ref.histograms, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(fast.edges, ref.edges)
    np.testing.assert_array_equal(fast.edge_stamps, ref.edge_stamps)
    np.testing.assert_array_equal(fast.temporal, ref.temporal)
    np.testing.assert_array_equal(fast.temporal_counts, ref.temporal_counts)
    assert fast.clock == ref.clock
    queries, _ = labelled_stream(100, 12, 6, spread=0.5, seed=8)
    np.testing.assert_array_equal(networks[0].nearest(queries)[0], networks[1].nearest(queries)[0])
    np.testing.assert_allclose(
        networks[0].nearest(queries)[1], networks[1].nearest(queries)[1], rtol=1e-5
    )
    assert networks[0].trajectories(4) == networks[1].trajectories(4)


def test_compiled_equals_reference_through_the_dual_memory() -> None:
    """The whole GDM (episodes, semantic on episodic BMUs, replay) on both implementations."""
    X, y = labelled_stream(120, 10, 4, spread=0.4, seed=2)
    names = np.array(["neutral", "happiness", "surprise", "anger"])
    memories = [GrowingDualMemory(GDMConfig(backend=b), seed=1) for b in ("cython", "numpy")]
    for memory in memories:
        for start in range(0, len(X), 5):
            memory.partial_fit(X[start : start + 5], names[y[start : start + 5]])
            memory.replay()
    fast, ref = (memory_snapshot(m) for m in memories)
    assert fast["labels"] == ref["labels"]
    for name in ("episodic", "semantic"):
        assert fast[name].n_nodes == ref[name].n_nodes
        np.testing.assert_allclose(fast[name].weights, ref[name].weights, atol=1e-5)
        np.testing.assert_array_equal(fast[name].edges, ref[name].edges)
        queries, _ = labelled_stream(50, 10, 4, spread=0.4, seed=3)
        assert memories[0].predict(queries, memory=name) == memories[1].predict(
            queries, memory=name
        )
