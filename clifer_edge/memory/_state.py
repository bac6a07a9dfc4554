"""What both GWR implementations share: the canonical network state and the context weights.

A network's state is exported in one canonical, implementation-independent form (nodes in index
order, edges and temporal synapses as sorted pairs), so that the compiled network and the numpy
reference can be compared exactly, and so that a saved memory does not depend on how its buffers
were laid out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def context_weights(depth: int) -> np.ndarray:
    """alpha_k = exp(-k), normalised to sum 1 (k = 0 is the input itself, k >= 1 its context)."""
    alphas = np.exp(-np.arange(depth, dtype=np.float64))
    return alphas / alphas.sum()


@dataclass
class NetworkState:
    """A GWR network as plain arrays (``N`` nodes, ``depth = K + 1``, ``d`` features, ``L`` labels).

    Attributes
    ----------
    weights : ndarray of shape (N, depth, d), float32
        Level 0 is the node's prototype, levels 1..K its temporal context.
    habituation : ndarray of shape (N,), float32
        1 for a fresh node, decaying towards the habituation floor each time it fires.
    histograms : ndarray of shape (N, L), float32
        Associative label counts (>= 0), columns in the memory's label order.
    edges : ndarray of shape (E, 2), int64
        Undirected edges ``i < j``, sorted.
    edge_stamps : ndarray of shape (E,), int64
        Clock value of each edge's last refresh (its age is ``clock - stamp``).
    temporal : ndarray of shape (T, 2), int64
        Directed temporal synapses ``(previous BMU, next BMU)``, sorted.
    temporal_counts : ndarray of shape (T,), float32
        How often each transition was seen.
    clock : int
        Number of edge updates so far (edge ages are differences of it).
    """

    weights: np.ndarray
    habituation: np.ndarray
    histograms: np.ndarray
    edges: np.ndarray
    edge_stamps: np.ndarray
    temporal: np.ndarray
    temporal_counts: np.ndarray
    clock: int

    FIELDS = (
        "weights",
        "habituation",
        "histograms",
        "edges",
        "edge_stamps",
        "temporal",
        "temporal_counts",
    )

    @property
    def n_nodes(self) -> int:
        return int(self.weights.shape[0])

    def validate(self, max_degree: int, temporal_degree: int) -> None:
        """Check shapes, dtypes and index ranges (used on loaded files).

        Raises
        ------
        ValueError
            Naming the first inconsistency found.
        """
        w = self.weights
        if w.dtype != np.float32 or w.ndim != 3 or w.shape[0] < 1:
            raise ValueError(f"weights: {w.dtype} {w.shape}, expected float32 [N>=1, depth, d]")
        n = w.shape[0]
        expected = {
            "habituation": (np.float32, (n,)),
            "histograms": (
                np.float32,
                (n, self.histograms.shape[1] if self.histograms.ndim == 2 else -1),
            ),
            "edges": (np.int64, (self.edges.shape[0], 2)),
            "edge_stamps": (np.int64, (self.edges.shape[0],)),
            "temporal": (np.int64, (self.temporal.shape[0], 2)),
            "temporal_counts": (np.float32, (self.temporal.shape[0],)),
        }
        for key, (dtype, shape) in expected.items():
            array = getattr(self, key)
            if array.dtype != dtype or array.shape != shape:
                raise ValueError(
                    f"{key}: {array.dtype} {array.shape}, expected {np.dtype(dtype)} {shape}"
                )
        for key in ("weights", "habituation", "histograms", "temporal_counts"):
            if not np.all(np.isfinite(getattr(self, key))):
                raise ValueError(f"{key}: holds non-finite values")
        if np.any(self.habituation <= 0) or np.any(self.habituation > 1):
            raise ValueError("habituation: values outside (0, 1]")
        if np.any(self.histograms < 0):
            raise ValueError("histograms: negative counts")
        if np.any(self.temporal_counts <= 0):
            raise ValueError("temporal_counts: non-positive counts")
        if self.edges.size and (
            np.any(self.edges < 0)
            or np.any(self.edges >= n)
            or np.any(self.edges[:, 0] >= self.edges[:, 1])
        ):
            raise ValueError("edges: node index out of range or not i < j")
        if self.temporal.size and (
            np.any(self.temporal < 0)
            or np.any(self.temporal >= n)
            or np.any(self.temporal[:, 0] == self.temporal[:, 1])
        ):
            raise ValueError("temporal: node index out of range or a self-transition")
        if len(np.unique(self.edges, axis=0)) != len(self.edges):
            raise ValueError("edges: duplicates")
        if len(np.unique(self.temporal, axis=0)) != len(self.temporal):
            raise ValueError("temporal: duplicates")
        if np.any(self.edge_stamps < 0) or np.any(self.edge_stamps > self.clock):
            raise ValueError(f"edge_stamps: outside [0, clock={self.clock}]")
        degree = np.bincount(self.edges.ravel(), minlength=n)
        if degree.size and degree.max() > max_degree:
            raise ValueError(f"edges: a node has degree {degree.max()} > max_degree={max_degree}")
        out = np.bincount(self.temporal[:, 0], minlength=n)
        if out.size and out.max() > temporal_degree:
            raise ValueError(
                f"temporal: a node has {out.max()} synapses > temporal_degree={temporal_degree}"
            )

    def subset(self, keep: np.ndarray) -> NetworkState:
        """The network with only the nodes where ``keep`` is True (renumbered in order), the edges
        and temporal synapses between kept nodes, and the same clock."""
        keep = np.asarray(keep, dtype=bool)
        new_index = np.cumsum(keep) - 1

        def pairs(pairs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # Renumbering is monotone, so the sorted order of the kept pairs is preserved.
            both = keep[pairs[:, 0]] & keep[pairs[:, 1]] if pairs.size else np.zeros(0, bool)
            return new_index[pairs[both]].astype(np.int64).reshape(-1, 2), values[both]

        edges, stamps = pairs(self.edges, self.edge_stamps)
        temporal, counts = pairs(self.temporal, self.temporal_counts)
        return NetworkState(
            weights=self.weights[keep].copy(),
            habituation=self.habituation[keep].copy(),
            histograms=self.histograms[keep].copy(),
            edges=edges,
            edge_stamps=stamps.copy(),
            temporal=temporal,
            temporal_counts=counts.copy(),
            clock=self.clock,
        )

    def equals(self, other: NetworkState) -> bool:
        """Bit-exact equality of all arrays and the clock."""
        return self.clock == other.clock and all(
            getattr(self, key).dtype == getattr(other, key).dtype
            and np.array_equal(getattr(self, key), getattr(other, key))
            for key in self.FIELDS
        )


def sorted_pairs(pairs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs sorted lexicographically (first column, then second) with their values aligned."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order], np.asarray(values)[order]
