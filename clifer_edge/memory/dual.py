"""The Growing Dual Memory: an episodic and a semantic GWR network that learn for life.

Parisi et al. (2018) pair a fast, non-overlapping *episodic* memory, which learns every sample of an
episode, with a slow, overlapping *semantic* memory, which learns from the episodic memory's
best-matching prototypes and adapts strongly only where it still gets the label wrong. Temporal
synapses between consecutive BMUs let the episodic memory re-generate short trajectories of past
activity (RNATs), which are replayed into both memories so that learning new expressions does not
erase old ones. CLIFER (Churamani & Gunes 2020) uses this memory per person on top of face latents.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from clifer_edge.memory.config import GDMConfig, GWRConfig
from clifer_edge.memory.persistence import (
    MemoryFileError,
    MemoryRecord,
    read_memory_file,
    write_memory_file,
)
from clifer_edge.memory.reference import ReferenceGWR

__all__ = ["GrowingDualMemory", "NotFittedError"]

MemoryName = Literal["episodic", "semantic"]
_MEMORIES = ("episodic", "semantic")


class NotFittedError(ValueError):
    """The memory was used before its first :meth:`GrowingDualMemory.partial_fit`."""


_warned_fallback = False


def network_class(backend: str) -> type:
    """The network implementation for a backend name (see :data:`~clifer_edge.memory.BACKENDS`).

    Raises
    ------
    ImportError
        If ``"cython"`` is asked for and the extension is not built.
    """
    global _warned_fallback
    if backend == "numpy":
        return ReferenceGWR
    try:
        from clifer_edge.memory.gwr import GWRNetwork
    except ImportError as error:
        if backend == "cython":
            raise ImportError(
                "the compiled GDM kernels (clifer_edge.memory._gwr) are not built: run "
                "`pip install .` or `python setup.py build_ext --inplace` "
                f"({error})"
            ) from error
        if not _warned_fallback:
            warnings.warn(
                "clifer_edge.memory._gwr is not built; using the slow numpy reference GDM "
                "(run `python setup.py build_ext --inplace`)",
                RuntimeWarning,
                stacklevel=3,
            )
            _warned_fallback = True
        return ReferenceGWR
    return GWRNetwork


class GrowingDualMemory:
    """Episodic + semantic Grow-When-Required memory with an open label set.

    Parameters
    ----------
    config : GDMConfig or None
        Settings; None means CLIFER's defaults.
    seed : int
        Seeds the order in which pseudo-replay trajectories are presented.

    Attributes
    ----------
    labels_ : list of str
        Every label seen so far, in order of first appearance (the columns of
        :meth:`predict_proba`).
    n_features_in_ : int
        Input dimension, fixed by the first :meth:`partial_fit`.
    episodic_, semantic_ : network
        The two GWR networks (compiled or reference implementation).
    n_episodes_ : int
        Number of successful :meth:`partial_fit` calls.

    Notes
    -----
    One memory is not safe to use from two threads at once: the compiled training loop releases
    the GIL while it updates the buffers in place, so a caller that learns in one thread (e.g.
    idle-time imagination) and predicts in another must hold one lock per memory.

    Examples
    --------
    >>> mem = GrowingDualMemory(seed=0).partial_fit(X, ["happiness"] * len(X))  # doctest: +SKIP
    >>> mem.predict(X_new, memory="semantic")  # doctest: +SKIP
    """

    def __init__(self, config: GDMConfig | None = None, seed: int = 0) -> None:
        self.config = config
        self.seed = seed

    # -- validation (public methods only) -------------------------------------------------------

    def _resolved_config(self) -> GDMConfig:
        if self.config is None:
            return GDMConfig()
        if not isinstance(self.config, GDMConfig):
            raise ValueError(f"config={self.config!r} should be a GDMConfig or None")
        return self.config

    def _check_fitted(self) -> None:
        if not hasattr(self, "labels_"):
            raise NotFittedError(
                "this GrowingDualMemory has not learned anything yet; "
                "call partial_fit(X, labels) first"
            )

    def _check_X(self, X: Any) -> np.ndarray:
        """X as a C-contiguous float32 [n, d] array, or ValueError naming what is wrong."""
        try:
            array = np.asarray(X)
        except (TypeError, ValueError) as error:
            raise ValueError(f"X could not be read as an array: {error}") from None
        if array.dtype.kind not in "fiu":
            raise ValueError(f"X has dtype {array.dtype}, expected real numbers (float32)")
        if array.ndim != 2:
            raise ValueError(
                f"X has shape {array.shape}, expected 2-D [n_samples, n_features] "
                "(use X.reshape(1, -1) for a single sample)"
            )
        if array.shape[0] == 0:
            raise ValueError(
                f"X has shape {array.shape}: the batch is empty, expected n_samples >= 1"
            )
        if array.shape[1] == 0:
            raise ValueError(f"X has shape {array.shape}, expected n_features >= 1")
        expected = getattr(self, "n_features_in_", None)
        if expected is not None and array.shape[1] != expected:
            raise ValueError(
                f"X has {array.shape[1]} features per sample, but this memory expects "
                f"n_features_in_={expected}"
            )
        with np.errstate(over="ignore"):  # overflow to inf is reported just below
            array = np.ascontiguousarray(array, dtype=np.float32)
        bad = ~np.isfinite(array)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"X holds {int(bad.sum())} non-finite value(s) (first X[{row}, {col}]="
                f"{array[row, col]}); expected finite float32 values"
            )
        return array

    @staticmethod
    def _check_labels(labels: Any, n_samples: int) -> list[str]:
        if isinstance(labels, str | bytes) or not isinstance(labels, Sequence | np.ndarray):
            raise ValueError(
                f"labels={labels!r} should be a sequence of str, one per sample "
                f"(n_samples={n_samples})"
            )
        labels = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
        if len(labels) != n_samples:
            raise ValueError(
                f"got {len(labels)} labels for n_samples={n_samples}; expected one per sample"
            )
        for i, label in enumerate(labels):
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"labels[{i}]={label!r} should be a non-empty str")
        return [str(label) for label in labels]

    @staticmethod
    def _check_memory(memory: Any) -> MemoryName:
        if memory not in _MEMORIES:
            raise ValueError(f"memory={memory!r} should be one of {list(_MEMORIES)}")
        return memory

    # -- learning -------------------------------------------------------------------------------

    def _new_network(self, config: GDMConfig, which: MemoryName, n_features: int) -> Any:
        cls = network_class(config.backend)
        return cls(
            getattr(config, which),
            n_features,
            config.context_depth,
            config.beta,
            config.a_inc,
            config.a_dec,
        )

    def partial_fit(self, X: Any, labels: Sequence[str]) -> GrowingDualMemory:
        """Learn one episode: the episodic memory on X, then the semantic memory on its BMUs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One episode (e.g. a handful of face latents), in presentation order.
        labels : sequence of str, length n_samples
            The expression of each sample; a label never seen before opens a new class.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            On a bad config, an empty batch, a wrong dimension, non-finite values or a
            label/sample count mismatch; the memory is then unchanged.
        """
        first = not hasattr(self, "labels_")
        # The settings are fixed by the first episode (a network cannot change its context depth).
        config = self._resolved_config() if first else self.config_
        X = self._check_X(X)
        names = self._check_labels(labels, X.shape[0])
        if first:
            episodic = self._new_network(config, "episodic", X.shape[1])
            semantic = self._new_network(config, "semantic", X.shape[1])
            label_list: list[str] = []
        else:
            episodic, semantic, label_list = self.episodic_, self.semantic_, list(self.labels_)
        index = {name: i for i, name in enumerate(label_list)}
        for name in names:
            if name not in index:
                index[name] = len(label_list)
                label_list.append(name)
        y = np.array([index[name] for name in names], dtype=np.int64)
        # Nothing below can fail on valid input: commit the new state.
        if first:
            self.episodic_, self.semantic_ = episodic, semantic
            self.n_features_in_ = int(X.shape[1])
            self.n_episodes_ = 0
            self.rng_ = np.random.default_rng(self.seed)
            self.config_ = config
        self.labels_ = label_list
        for network in (self.episodic_, self.semantic_):
            network.ensure_labels(len(label_list))
        self.episodic_.train(X, y, config.epochs)
        bmus, _ = self.episodic_.nearest(X)
        recalled = np.ascontiguousarray(self.episodic_.prototypes()[bmus], dtype=np.float32)
        self.semantic_.train(recalled, y, config.epochs)
        self.n_episodes_ += 1
        return self

    def replay(self) -> GrowingDualMemory:
        """Pseudo-rehearsal: replay RNATs generated by the episodic memory into both memories.

        Each episodic node starts one trajectory that follows the strongest temporal synapses
        (``config.rnat_length`` steps); the trajectories, each a sequence of node prototypes
        labelled by their node's histogram, are presented in a seeded random order for
        ``config.n_replay_epochs`` passes.

        Returns
        -------
        self

        Raises
        ------
        NotFittedError
            Before the first :meth:`partial_fit`.
        """
        self._check_fitted()
        config = self.config_
        paths = self.episodic_.trajectories(config.rnat_length)
        order = self.rng_.permutation(len(paths))
        nodes = np.concatenate([np.asarray(paths[i], dtype=np.int64) for i in order])
        starts = np.zeros(nodes.size, dtype=bool)
        starts[np.cumsum([0] + [len(paths[i]) for i in order[:-1]])] = True
        samples = np.ascontiguousarray(self.episodic_.prototypes()[nodes], dtype=np.float32)
        targets = np.argmax(self.episodic_.label_histograms()[nodes], axis=1).astype(np.int64)
        epochs = config.n_replay_epochs
        self.episodic_.train(samples, targets, epochs, starts)
        self.semantic_.train(samples, targets, epochs, starts)
        return self

    # -- recall ---------------------------------------------------------------------------------

    def _network(self, memory: MemoryName) -> Any:
        return self.episodic_ if memory == "episodic" else self.semantic_

    def predict_proba(self, X: Any, memory: MemoryName = "semantic") -> np.ndarray:
        """Per-class scores: the BMU's label histogram, normalised.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        memory : {"episodic", "semantic"}

        Returns
        -------
        ndarray of shape (n_samples, len(labels_)), float64
            Rows sum to 1; the row maximum is the confidence of :meth:`predict`.
        """
        self._check_fitted()
        memory = self._check_memory(memory)
        X = self._check_X(X)
        network = self._network(memory)
        bmus, _ = network.nearest(X)
        scores = network.label_histograms()[bmus, : len(self.labels_)].astype(np.float64)
        totals = scores.sum(axis=1, keepdims=True)
        empty = totals[:, 0] <= 0
        scores[empty] = 1.0
        totals[empty] = scores.shape[1]
        return scores / totals

    def predict(self, X: Any, memory: MemoryName = "semantic") -> list[str]:
        """The label of each sample's BMU (argmax of its histogram; ties to the earlier label).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        memory : {"episodic", "semantic"}

        Returns
        -------
        list of str, length n_samples
        """
        proba = self.predict_proba(X, memory=memory)
        return [self.labels_[i] for i in np.argmax(proba, axis=1)]

    def episodic_prototypes(self) -> tuple[np.ndarray, list[str]]:
        """Episodic nodes' prototypes and labels (the faces the robot can imagine from).

        Returns
        -------
        prototypes : ndarray of shape (n_nodes, n_features), float32 (a copy)
        labels : list of str, length n_nodes
        """
        self._check_fitted()
        prototypes = np.array(self.episodic_.prototypes(), dtype=np.float32, copy=True)
        best = np.argmax(self.episodic_.label_histograms()[:, : len(self.labels_)], axis=1)
        return prototypes, [self.labels_[i] for i in best]

    def stats(self) -> dict[str, Any]:
        """Sizes for monitoring: features, labels, nodes and edges of each memory.

        Works before fitting too (then with zero nodes and ``n_features`` None).
        """
        out: dict[str, Any] = {
            "n_features": getattr(self, "n_features_in_", None),
            "labels": list(getattr(self, "labels_", [])),
            "n_episodes": getattr(self, "n_episodes_", 0),
        }
        for name in _MEMORIES:
            network = getattr(self, f"{name}_", None)
            out[name] = {
                "nodes": 0 if network is None else network.n_nodes,
                "edges": 0 if network is None else network.n_edges,
            }
        if hasattr(self, "episodic_"):
            out["backend"] = "numpy" if isinstance(self.episodic_, ReferenceGWR) else "cython"
        return out

    def set_max_nodes(self, episodic: int, semantic: int) -> GrowingDualMemory:
        """Change each network's node bound (e.g. a loaded memory under a new configuration).

        A network that already holds more nodes keeps them but does not grow any further.

        Returns
        -------
        self

        Raises
        ------
        NotFittedError
            Before the first :meth:`partial_fit` (set ``config`` instead).
        ValueError
            If a bound is out of range.
        """
        self._check_fitted()
        changed = {
            name: GWRConfig.from_dict(
                {"max_nodes": bound}, base=getattr(self.config_, name), where=name
            )
            for name, bound in (("episodic", episodic), ("semantic", semantic))
        }
        self.config_ = dataclasses.replace(self.config_, **changed)
        for name in _MEMORIES:
            self._network(name).config = getattr(self.config_, name)
        return self

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the memory atomically (no pickle); see :mod:`clifer_edge.memory.persistence`.

        Raises
        ------
        NotFittedError
            Before the first :meth:`partial_fit` (there is nothing to keep).
        OSError
            If the file cannot be written; an existing file is then left as it was.
        """
        self._check_fitted()
        record = MemoryRecord(
            config=self.config_,
            labels=list(self.labels_),
            n_features=int(self.n_features_in_),
            n_episodes=int(self.n_episodes_),
            seed=self.seed if isinstance(self.seed, int) else None,
            rng_state=self.rng_.bit_generator.state,
            networks={name: getattr(self, f"{name}_").get_state() for name in _MEMORIES},
        )
        write_memory_file(record, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GrowingDualMemory:
        """Read a memory written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            If there is no file at ``path`` (a person without a memory yet).
        MemoryFileError
            If the file is damaged, truncated, not a memory file or from a newer version.
        """
        record = read_memory_file(path)
        config = record.config
        memory = cls(config=config, seed=record.seed or 0)
        networks = {}
        try:
            for name in _MEMORIES:
                network = network_class(config.backend)(
                    getattr(config, name),
                    record.n_features,
                    config.context_depth,
                    config.beta,
                    config.a_inc,
                    config.a_dec,
                )
                network.ensure_labels(len(record.labels))
                network.set_state(record.networks[name])
                networks[name] = network
        except (TypeError, ValueError) as error:
            raise MemoryFileError(f"{path}: inconsistent memory file ({error})") from None
        rng = np.random.default_rng()
        rng.bit_generator.state = record.rng_state
        memory.config_ = config
        memory.labels_ = list(record.labels)
        memory.n_features_in_ = record.n_features
        memory.n_episodes_ = record.n_episodes
        memory.rng_ = rng
        memory.episodic_ = networks["episodic"]
        memory.semantic_ = networks["semantic"]
        return memory
