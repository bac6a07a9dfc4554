"""The readable numpy Gamma-GWR: the algorithm in plain Python, and the test oracle.

This is the same algorithm as the compiled network in :mod:`clifer_edge.memory.gwr`, written for
reading rather than speed (dicts for edges, one Python iteration per sample). The tests check that
both give the same nodes, edges and predictions on the same stream, and the benchmark measures the
speed-up of the compiled kernels against it. ``docs/gdm.md`` describes the algorithm and lists where
it deliberately differs from Parisi et al.'s reference code.

One training step, for input x with label y (``g``: global context, ``prev``: previous BMU):

1. ``g[0] = x``; ``g[k] = beta * w_prev[k] + (1 - beta) * w_prev[k-1]`` for k = 1..K.
2. distance ``d_j = sum_k alpha_k * ||g[k] - w_j[k]||`` (only k = 0 at the start of a sequence,
   where the context is unknown and taken to match); BMU b and second BMU s.
3. activation ``a = exp(-d_b)``; the step is *strong* unless the network is regulated and b's
   label already is y (then only a weak update with rates times ``mod_rate``).
4. strong and ``a < a_T`` and ``h_b < h_T`` and room left: insert ``n = (w_b + g) / 2`` (or
   ``n = g`` with ``insert_at_input``), edges b-n and s-n replace b-s, histogram of n = a_inc at y.
5. otherwise: habituate b; move b by ``eps_b * h_b`` and its neighbours by ``eps_n * h_n`` towards
   g; habituate the neighbours; label histogram of b: +a_inc for y, -a_dec for others (floor 0);
   refresh edge b-s.
6. temporal synapse prev -> b (or -> n) counted; after each epoch edges older than max_age go;
   after training, isolated nodes go.
"""

from __future__ import annotations

import math

import numpy as np

from clifer_edge.memory._state import NetworkState, context_weights, sorted_pairs
from clifer_edge.memory.config import GWRConfig

__all__ = ["ReferenceGWR"]


class ReferenceGWR:
    """Gamma-GWR network with associative label histograms, in plain numpy.

    Parameters
    ----------
    config : GWRConfig
        This network's settings.
    n_features : int
        d, the input dimension.
    context_depth : int
        K, the number of temporal context levels.
    beta : float
        Global-context mixing weight.
    a_inc, a_dec : float
        Label-histogram increment and decrement.
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
        self.weights = np.zeros((0, self.depth, n_features), dtype=np.float32)
        self.habituation = np.zeros(0, dtype=np.float32)
        self.histograms = np.zeros((0, 0), dtype=np.float32)
        self.neighbours: list[dict[int, int]] = []  # node -> {neighbour: stamp of last refresh}
        self.synapses: list[dict[int, float]] = []  # node -> {next BMU: count}
        self.clock = 0

    # -- size -----------------------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_edges(self) -> int:
        return sum(len(n) for n in self.neighbours) // 2

    def prototypes(self) -> np.ndarray:
        """Level-0 weights, shape (N, d) (a view)."""
        return self.weights[:, 0, :]

    def label_histograms(self) -> np.ndarray:
        """Label histograms, shape (N, L) (a view)."""
        return self.histograms

    def ensure_labels(self, n_labels: int) -> None:
        """Grow the histograms to at least ``n_labels`` columns (the label set is open)."""
        missing = n_labels - self.histograms.shape[1]
        if missing > 0:
            self.histograms = np.hstack(
                [self.histograms, np.zeros((self.n_nodes, missing), dtype=np.float32)]
            )

    # -- training -------------------------------------------------------------------------------

    def train(
        self,
        X: np.ndarray,
        labels: np.ndarray,
        epochs: int,
        starts: np.ndarray | None = None,
    ) -> None:
        """Train on a stream (inputs already validated).

        Parameters
        ----------
        X : ndarray of shape (n, d), float32
        labels : ndarray of shape (n,), int
            Column index of each sample's label (histograms already wide enough).
        epochs : int
            Passes over the stream.
        starts : ndarray of shape (n,), bool, optional
            True where a new sequence starts (the temporal context is reset); the first sample
            always starts one.
        """
        cfg = self.config
        n = X.shape[0]
        starts = np.zeros(n, dtype=bool) if starts is None else starts
        previous = -1
        previous_weights = np.zeros((self.depth, self.n_features), dtype=np.float32)
        for _ in range(epochs):
            for i in range(n):
                if i == 0 or starts[i]:
                    previous = -1
                x, y = X[i], int(labels[i])
                # Global context from the previous BMU (its weights before it was updated).
                g = np.empty((self.depth, self.n_features), dtype=np.float32)
                g[0] = x
                if previous >= 0:
                    for k in range(1, self.depth):
                        g[k] = (
                            self.beta * previous_weights[k].astype(np.float64)
                            + (1.0 - self.beta) * previous_weights[k - 1].astype(np.float64)
                        ).astype(np.float32)
                if self.n_nodes < 2:
                    # Bootstrap: the first two samples become nodes (unknown context = the input).
                    if previous < 0:
                        g[1:] = x
                    node = self._add_node(g, y)
                    if node == 1:
                        self.clock += 1
                        self._connect(0, 1)
                    self._count_transition(previous, node)
                    previous, previous_weights = node, self.weights[node].copy()
                    continue
                distances = self._distances(g, with_context=previous >= 0)
                b, s = self._two_smallest(distances)
                if previous < 0:
                    g[1:] = self.weights[b, 1:]
                activation = math.exp(-float(distances[b]))
                wrong = int(np.argmax(self.histograms[b])) != y
                bmu_weights = self.weights[b].copy()
                if not cfg.regulated or wrong:
                    if (
                        activation < cfg.activation_threshold
                        and float(self.habituation[b]) < cfg.habituation_threshold
                        and self.n_nodes < cfg.max_nodes
                    ):
                        new = g.copy() if cfg.insert_at_input else self._midpoint(b, g)
                        node = self._add_node(new, y)
                        self.clock += 1
                        self._disconnect(b, s)
                        self._connect(b, node)
                        self._connect(s, node)
                        self._count_transition(previous, node)
                    else:
                        self._update(b, s, g, y, cfg.epsilon_b, cfg.epsilon_n)
                        self._count_transition(previous, b)
                else:
                    rate = cfg.mod_rate
                    self._update(b, s, g, y, cfg.epsilon_b * rate, cfg.epsilon_n * rate)
                    self._count_transition(previous, b)
                previous, previous_weights = b, bmu_weights
            self._remove_old_edges()
        self._remove_isolated_nodes()

    def _distances(self, g: np.ndarray, with_context: bool) -> np.ndarray:
        """Weighted sum over context levels of the Euclidean distance to every node."""
        levels = self.depth if with_context else 1
        diff = self.weights[:, :levels, :] - g[None, :levels, :]
        per_level = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff, dtype=np.float64))
        return per_level @ self.alphas[:levels]

    @staticmethod
    def _two_smallest(distances: np.ndarray) -> tuple[int, int]:
        """BMU and second BMU (ties go to the lower index)."""
        order = np.argsort(distances, kind="stable")
        return int(order[0]), int(order[1])

    def _midpoint(self, b: int, g: np.ndarray) -> np.ndarray:
        """GWR's new node: halfway between the BMU and the input, in float64, rounded."""
        middle = 0.5 * (self.weights[b].astype(np.float64) + g.astype(np.float64))
        return middle.astype(np.float32)

    def _add_node(self, weights: np.ndarray, label: int) -> int:
        self.weights = np.concatenate([self.weights, weights[None]], axis=0)
        self.habituation = np.append(self.habituation, np.float32(1.0))
        histogram = np.zeros((1, self.histograms.shape[1]), dtype=np.float32)
        histogram[0, label] = self.a_inc
        self.histograms = np.concatenate([self.histograms, histogram], axis=0)
        self.neighbours.append({})
        self.synapses.append({})
        return self.n_nodes - 1

    def _habituate(self, node: int, tau: float) -> None:
        h = float(self.habituation[node])
        self.habituation[node] = np.float32(h + tau * self.config.kappa * (1.0 - h) - tau)

    def _move(self, node: int, g: np.ndarray, rate: float) -> None:
        """w <- w + rate * h * (g - w), in float64 then rounded to float32."""
        w = self.weights[node].astype(np.float64)
        step = rate * float(self.habituation[node])
        self.weights[node] = (w + step * (g.astype(np.float64) - w)).astype(np.float32)

    def _update(self, b: int, s: int, g: np.ndarray, y: int, rate_b: float, rate_n: float) -> None:
        self._habituate(b, self.config.tau_b)
        self._move(b, g, rate_b)
        histogram = self.histograms[b].astype(np.float64)
        updated = np.maximum(histogram - self.a_dec, 0.0)
        updated[y] = histogram[y] + self.a_inc
        self.histograms[b] = updated.astype(np.float32)
        self.clock += 1
        self._connect(b, s)
        for neighbour in sorted(self.neighbours[b]):
            self._move(neighbour, g, rate_n)
            self._habituate(neighbour, self.config.tau_n)

    # -- edges (bounded degree, ages as clock stamps) -------------------------------------------

    def _connect(self, i: int, j: int) -> None:
        """Create or refresh edge i-j at the current clock; a full node first drops its oldest."""
        if j not in self.neighbours[i]:
            for node in (i, j):
                if len(self.neighbours[node]) >= self.config.max_degree:
                    oldest = min(self.neighbours[node].items(), key=lambda kv: (kv[1], kv[0]))[0]
                    self._disconnect(node, oldest)
        self.neighbours[i][j] = self.clock
        self.neighbours[j][i] = self.clock

    def _disconnect(self, i: int, j: int) -> None:
        self.neighbours[i].pop(j, None)
        self.neighbours[j].pop(i, None)

    def _remove_old_edges(self) -> None:
        for i, links in enumerate(self.neighbours):
            for j, stamp in list(links.items()):
                if self.clock - stamp > self.config.max_age:
                    self._disconnect(i, j)

    def _count_transition(self, previous: int, current: int) -> None:
        """Temporal synapse previous -> current; a full node replaces its weakest synapse."""
        if previous < 0 or previous == current:
            return
        synapses = self.synapses[previous]
        if current not in synapses and len(synapses) >= self.config.temporal_degree:
            weakest = min(synapses.items(), key=lambda kv: (kv[1], kv[0]))[0]
            del synapses[weakest]
        synapses[current] = float(np.float32(synapses.get(current, 0.0) + 1.0))

    def _remove_isolated_nodes(self) -> None:
        """Drop nodes without edges (keeping at least two nodes), renumbering the rest in order."""
        keep = np.ones(self.n_nodes, dtype=bool)
        n_left = self.n_nodes
        for node in range(self.n_nodes):
            if not self.neighbours[node] and n_left > 2:
                keep[node] = False
                n_left -= 1
        if keep.all():
            return
        new_index = np.cumsum(keep) - 1
        self.weights = self.weights[keep]
        self.habituation = self.habituation[keep]
        self.histograms = self.histograms[keep]
        self.neighbours = [
            {int(new_index[j]): stamp for j, stamp in links.items()}
            for node, links in enumerate(self.neighbours)
            if keep[node]
        ]
        self.synapses = [
            {int(new_index[j]): count for j, count in links.items() if keep[j]}
            for node, links in enumerate(self.synapses)
            if keep[node]
        ]

    # -- recall ---------------------------------------------------------------------------------

    def nearest(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """BMU of each row by its prototype (level 0) alone, and that distance.

        Returns
        -------
        bmus : ndarray of shape (n,), int64
        distances : ndarray of shape (n,), float64
        """
        bmus = np.empty(X.shape[0], dtype=np.int64)
        distances = np.empty(X.shape[0], dtype=np.float64)
        prototypes = self.weights[:, 0, :]
        for i, x in enumerate(X):
            diff = prototypes - x
            d = np.sqrt(np.einsum("nd,nd->n", diff, diff, dtype=np.float64))
            bmus[i] = int(np.argmin(d))
            distances[i] = d[bmus[i]]
        return bmus, distances

    def trajectories(self, length: int) -> list[list[int]]:
        """One RNAT per node: from it, follow the strongest temporal synapse ``length - 1`` times.

        A trajectory stops early at a node without outgoing synapses.
        """
        paths = []
        for start in range(self.n_nodes):
            path = [start]
            while len(path) < length and self.synapses[path[-1]]:
                links = self.synapses[path[-1]]
                path.append(min(links.items(), key=lambda kv: (-kv[1], kv[0]))[0])
            paths.append(path)
        return paths

    # -- canonical state ------------------------------------------------------------------------

    def get_state(self) -> NetworkState:
        edges = [
            (i, j, s) for i, links in enumerate(self.neighbours) for j, s in links.items() if i < j
        ]
        synapses = [(i, j, c) for i, links in enumerate(self.synapses) for j, c in links.items()]
        edge_pairs, stamps = sorted_pairs(
            np.array([e[:2] for e in edges], dtype=np.int64).reshape(-1, 2),
            np.array([e[2] for e in edges], dtype=np.int64),
        )
        syn_pairs, counts = sorted_pairs(
            np.array([t[:2] for t in synapses], dtype=np.int64).reshape(-1, 2),
            np.array([t[2] for t in synapses], dtype=np.float32),
        )
        return NetworkState(
            weights=self.weights.copy(),
            habituation=self.habituation.copy(),
            histograms=self.histograms.copy(),
            edges=edge_pairs,
            edge_stamps=stamps,
            temporal=syn_pairs,
            temporal_counts=counts,
            clock=int(self.clock),
        )

    def set_state(self, state: NetworkState) -> None:
        self.weights = state.weights.astype(np.float32, copy=True)
        self.habituation = state.habituation.astype(np.float32, copy=True)
        self.histograms = state.histograms.astype(np.float32, copy=True)
        self.neighbours = [{} for _ in range(state.n_nodes)]
        for (i, j), stamp in zip(state.edges.tolist(), state.edge_stamps.tolist(), strict=True):
            self.neighbours[i][j] = stamp
            self.neighbours[j][i] = stamp
        self.synapses = [{} for _ in range(state.n_nodes)]
        for (i, j), count in zip(
            state.temporal.tolist(), state.temporal_counts.tolist(), strict=True
        ):
            self.synapses[i][j] = count
        self.clock = int(state.clock)
