"""The compiled Gamma-GWR network: buffers sized for a robot, loops in :mod:`._gwr`.

Same algorithm and interface as :class:`clifer_edge.memory.reference.ReferenceGWR`, with data
structures that keep every training step O(N * K * d) and the memory O(N * K * d):

- node arrays preallocated with a capacity that doubles when full (up to ``max_nodes``), so an
  insertion never copies the network;
- bounded-degree neighbour lists (``max_degree`` slots per node) instead of an N x N edge matrix;
- edge ages kept as clock stamps (age = clock - stamp), so ageing all edges is one increment;
- bounded temporal-synapse lists (``temporal_degree`` successors per node);
- isolated nodes removed by one stable compaction after training, not per sample.
"""

from __future__ import annotations

import numpy as np

from clifer_edge.memory import _gwr
from clifer_edge.memory._state import NetworkState, context_weights, sorted_pairs
from clifer_edge.memory.config import GWRConfig

__all__ = ["GWRNetwork"]

_INITIAL_CAPACITY = 16


class GWRNetwork:
    """Gamma-GWR network with associative label histograms on compiled kernels.

    Parameters are those of :class:`~clifer_edge.memory.reference.ReferenceGWR`.
    """

    def __init__(
        self,
        config: GWRConfig,
        n_features: int,
        context_depth: int,
        beta: float,
        a_inc: float,
        a_dec: float,
    ) -> None:
        self.config = config
        self.n_features = n_features
        self.depth = context_depth + 1
        self.beta = beta
        self.a_inc = a_inc
        self.a_dec = a_dec
        self.alphas = context_weights(self.depth)
        self._n = 0
        self._n_labels = 0
        self.clock = 0
        self._allocate(min(_INITIAL_CAPACITY, config.max_nodes), 1)

    def _allocate(self, capacity: int, label_capacity: int) -> None:
        """(Re)allocate every buffer, keeping the first ``_n`` nodes and ``_n_labels`` labels."""
        cfg, n, n_labels = self.config, self._n, self._n_labels
        old = getattr(self, "_W", None)
        W = np.zeros((capacity, self.depth, self.n_features), dtype=np.float32)
        hab = np.zeros(capacity, dtype=np.float32)
        hist = np.zeros((capacity, label_capacity), dtype=np.float32)
        nbr = np.full((capacity, cfg.max_degree), -1, dtype=np.int32)
        stamp = np.zeros((capacity, cfg.max_degree), dtype=np.int64)
        deg = np.zeros(capacity, dtype=np.int32)
        syn = np.full((capacity, cfg.temporal_degree), -1, dtype=np.int32)
        syn_cnt = np.zeros((capacity, cfg.temporal_degree), dtype=np.float32)
        syn_deg = np.zeros(capacity, dtype=np.int32)
        if old is not None:
            W[:n] = self._W[:n]
            hab[:n] = self._hab[:n]
            hist[:n, :n_labels] = self._hist[:n, :n_labels]
            nbr[:n] = self._nbr[:n]
            stamp[:n] = self._stamp[:n]
            deg[:n] = self._deg[:n]
            syn[:n] = self._syn[:n]
            syn_cnt[:n] = self._syn_cnt[:n]
            syn_deg[:n] = self._syn_deg[:n]
        self._W, self._hab, self._hist = W, hab, hist
        self._nbr, self._stamp, self._deg = nbr, stamp, deg
        self._syn, self._syn_cnt, self._syn_deg = syn, syn_cnt, syn_deg
        self._scratch = np.zeros((self.depth, capacity), dtype=np.float32)  # kernel work space

    # -- size -----------------------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        return self._n

    @property
    def n_edges(self) -> int:
        return int(self._deg[: self._n].sum()) // 2

    @property
    def capacity(self) -> int:
        return int(self._W.shape[0])

    def prototypes(self) -> np.ndarray:
        """Level-0 weights, shape (N, d) (a view)."""
        return self._W[: self._n, 0, :]

    def label_histograms(self) -> np.ndarray:
        """Label histograms, shape (N, L) (a view)."""
        return self._hist[: self._n, : self._n_labels]

    def ensure_labels(self, n_labels: int) -> None:
        """Make room for ``n_labels`` histogram columns (grown geometrically; the set is open)."""
        if n_labels > self._hist.shape[1]:
            self._allocate(self.capacity, max(n_labels, 2 * self._hist.shape[1]))
        self._n_labels = max(self._n_labels, n_labels)

    # -- training -------------------------------------------------------------------------------

    def train(
        self,
        X: np.ndarray,
        labels: np.ndarray,
        epochs: int,
        starts: np.ndarray | None = None,
    ) -> None:
        """Train on a stream (inputs already validated); see ``ReferenceGWR.train``."""
        cfg = self.config
        n = X.shape[0]
        X = np.ascontiguousarray(X, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        starts_u8 = np.zeros(n, dtype=np.uint8) if starts is None else starts.astype(np.uint8)
        params = {
            "activation_threshold": cfg.activation_threshold,
            "habituation_threshold": cfg.habituation_threshold,
            "epsilon_b": cfg.epsilon_b,
            "epsilon_n": cfg.epsilon_n,
            "tau_b": cfg.tau_b,
            "tau_n": cfg.tau_n,
            "kappa": cfg.kappa,
            "mod_rate": cfg.mod_rate,
            "beta": self.beta,
            "a_inc": self.a_inc,
            "a_dec": self.a_dec,
            "max_age": cfg.max_age,
            "max_nodes": cfg.max_nodes,
            "regulated": cfg.regulated,
            "insert_at_input": cfg.insert_at_input,
            "n_labels": self._n_labels,
        }
        counters = np.array([self._n, self.clock, -1], dtype=np.int64)
        previous_weights = np.zeros((self.depth, self.n_features), dtype=np.float32)
        context = np.zeros((self.depth, self.n_features), dtype=np.float32)
        iteration, total = 0, epochs * n
        while True:
            iteration = _gwr.train(
                X, labels, starts_u8, epochs, iteration,
                self._W, self._hab, self._hist, self._nbr, self._stamp, self._deg,
                self._syn, self._syn_cnt, self._syn_deg,
                counters, previous_weights, context, self._scratch, self.alphas, params,
            )  # fmt: skip
            self._n, self.clock = int(counters[0]), int(counters[1])
            if iteration >= total:
                break
            # A node must be inserted and the buffers are full: double them (bounded by max_nodes).
            self._allocate(min(cfg.max_nodes, 2 * self.capacity), self._hist.shape[1])
        self._remove_isolated_nodes()

    def _remove_isolated_nodes(self) -> None:
        """Drop nodes without edges (keeping at least two) by one stable compaction."""
        n = self._n
        isolated = np.flatnonzero(self._deg[:n] == 0)
        isolated = isolated[: max(0, min(isolated.size, n - 2))]
        if isolated.size == 0:
            return
        keep = np.ones(n, dtype=bool)
        keep[isolated] = False
        m = int(keep.sum())
        new_index = (np.cumsum(keep) - 1).astype(np.int32)
        # Neighbour lists: removed nodes had none, so nobody points at them; renumber the rest.
        # (Only the first deg / syn_deg slots of a row are meaningful; the rest may be stale.)
        nbr = self._nbr[:n][keep]
        used = np.arange(nbr.shape[1])[None, :] < self._deg[:n][keep][:, None]
        nbr = np.where(used, new_index[np.where(used, nbr, 0)], -1)
        # Temporal synapses may point at removed nodes: drop those and re-pack each row.
        syn = self._syn[:n][keep]
        syn_cnt = self._syn_cnt[:n][keep]
        used = np.arange(syn.shape[1])[None, :] < self._syn_deg[:n][keep][:, None]
        syn = np.where(used, syn, 0)
        valid = used & keep[syn]
        order = np.argsort(~valid, axis=1, kind="stable")
        syn = np.take_along_axis(np.where(valid, new_index[syn], -1), order, axis=1)
        syn_cnt = np.take_along_axis(np.where(valid, syn_cnt, 0.0), order, axis=1)
        for buffer, values in (
            (self._W, self._W[:n][keep]),
            (self._hab, self._hab[:n][keep]),
            (self._hist, self._hist[:n][keep]),
            (self._nbr, nbr),
            (self._stamp, self._stamp[:n][keep]),
            (self._deg, self._deg[:n][keep]),
            (self._syn, syn),
            (self._syn_cnt, syn_cnt),
            (self._syn_deg, valid.sum(axis=1)),
        ):
            buffer[:m] = values
        self._n = m

    # -- recall ---------------------------------------------------------------------------------

    def nearest(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """BMU of each row by its prototype (level 0) alone, and that distance.

        Returns
        -------
        bmus : ndarray of shape (n,), int64
        distances : ndarray of shape (n,), float64
        """
        X = np.ascontiguousarray(X, dtype=np.float32)
        bmus = np.empty(X.shape[0], dtype=np.int64)
        distances = np.empty(X.shape[0], dtype=np.float64)
        _gwr.nearest(self._W, self._n, X, self._scratch[0], bmus, distances)
        return bmus, distances

    def trajectories(self, length: int) -> list[list[int]]:
        """One RNAT per node, following the strongest temporal synapses (see the reference)."""
        paths = np.zeros((self._n, length), dtype=np.int64)
        lengths = np.zeros(self._n, dtype=np.int64)
        _gwr.trajectories(self._syn, self._syn_cnt, self._syn_deg, self._n, paths, lengths)
        return [paths[i, : lengths[i]].tolist() for i in range(self._n)]

    # -- canonical state ------------------------------------------------------------------------

    def get_state(self) -> NetworkState:
        n = self._n
        rows = np.repeat(np.arange(n), self.config.max_degree).reshape(n, -1)
        used = np.arange(self.config.max_degree)[None, :] < self._deg[:n, None]
        nbr = self._nbr[:n]
        upper = used & (rows < nbr)
        edges, stamps = sorted_pairs(
            np.stack([rows[upper], nbr[upper]], axis=1), self._stamp[:n][upper]
        )
        rows_t = np.repeat(np.arange(n), self.config.temporal_degree).reshape(n, -1)
        used_t = np.arange(self.config.temporal_degree)[None, :] < self._syn_deg[:n, None]
        temporal, counts = sorted_pairs(
            np.stack([rows_t[used_t], self._syn[:n][used_t]], axis=1), self._syn_cnt[:n][used_t]
        )
        return NetworkState(
            weights=self._W[:n].copy(),
            habituation=self._hab[:n].copy(),
            histograms=self._hist[:n, : self._n_labels].copy(),
            edges=edges.astype(np.int64),
            edge_stamps=stamps.astype(np.int64),
            temporal=temporal.astype(np.int64),
            temporal_counts=counts.astype(np.float32),
            clock=int(self.clock),
        )

    def set_state(self, state: NetworkState) -> None:
        n, n_labels = state.n_nodes, state.histograms.shape[1]
        self._n, self._n_labels = 0, 0
        self._W = None
        capacity = _INITIAL_CAPACITY
        while capacity < n:
            capacity *= 2
        self._allocate(min(max(capacity, n), max(self.config.max_nodes, n)), max(1, n_labels))
        self._n, self._n_labels = n, n_labels
        self._W[:n] = state.weights
        self._hab[:n] = state.habituation
        self._hist[:n, :n_labels] = state.histograms
        for (i, j), stamp in zip(state.edges.tolist(), state.edge_stamps.tolist(), strict=True):
            for u, v in ((i, j), (j, i)):
                self._nbr[u, self._deg[u]] = v
                self._stamp[u, self._deg[u]] = stamp
                self._deg[u] += 1
        for (i, j), count in zip(
            state.temporal.tolist(), state.temporal_counts.tolist(), strict=True
        ):
            self._syn[i, self._syn_deg[i]] = j
            self._syn_cnt[i, self._syn_deg[i]] = count
            self._syn_deg[i] += 1
        self.clock = int(state.clock)
