"""The Growing Dual Memory: an episodic and a semantic GWR network that learn for life.

Parisi et al. (2018) pair a fast, non-overlapping *episodic* memory, which learns every sample of an
episode, with a slow, overlapping *semantic* memory, which learns from the episodic memory's
best-matching prototypes and adapts strongly only where it still gets the label wrong. Temporal
synapses between consecutive BMUs let the episodic memory re-generate short trajectories of past
activity (RNATs), which are replayed into both memories so that learning new expressions does not
erase old ones. CLIFER (Churamani & Gunes 2020) uses this memory per person on top of face latents.

Imagined samples (a person's faces rendered under expressions they have not shown yet) are kept
apart, in a third, episodic-style network, and *yield to real faces*: an imagined node answers only
for a class not learned for real, and only where it lies nearer to the query than every real
episodic node; once a class is learned for real, its imagined nodes are pruned.
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
#: Every network a memory can hold (the imagined one only once it has nodes).
_NETWORKS = (*_MEMORIES, "imagined")


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
        Every label learned for real (from real samples), in order of first appearance.
    classes_ : list of str
        Every label, real or imagined, in order of first appearance (the columns of
        :meth:`predict_proba`; it only ever grows, so its order is stable).
    n_features_in_ : int
        Input dimension, fixed by the first :meth:`partial_fit`.
    episodic_, semantic_ : network
        The two GWR networks of real samples (compiled or reference implementation); their
        label histograms have the columns of ``labels_``.
    imagined_ : network or None
        The network of imagined samples (episodic settings; histogram columns of ``classes_``),
        None while there are no imagined nodes.
    n_episodes_ : int
        Number of :meth:`partial_fit` calls that changed the memory, real or imagined (a caller
        can tell from it whether the memory learned since it last saved it).

    Notes
    -----
    Imagined knowledge yields to real knowledge. ``partial_fit(X, labels, imagined=True)`` trains
    only ``imagined_``; samples of a class already learned for real are skipped, and when a class
    is learned for real, the imagined nodes labelled with it (argmax of their histogram) are
    pruned. :meth:`predict` and :meth:`predict_proba` give the real memory's answer, except for a
    query whose nearest imagined node is strictly nearer than its nearest real *episodic* node
    (for both ``memory`` values: the episodic memory is the fine record of the real faces): that
    imagined node answers instead. Imagined samples never reach the real networks, ``labels_``,
    :meth:`replay` or :meth:`episodic_prototypes`.

    New knowledge reaches the semantic memory slowly: it inserts rarely, so a class shown a few
    times may label none of its nodes yet (:meth:`consolidated`), and rehearsal of the older
    classes can relabel the node it moved. As in complementary learning systems, what is not
    consolidated yet is recalled from the episodic memory: a semantic query whose episodic BMU is
    labelled with such a class gets the episodic answer.

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

    def partial_fit(
        self, X: Any, labels: Sequence[str], imagined: bool = False
    ) -> GrowingDualMemory:
        """Learn one episode: the episodic memory on X, then the semantic memory on its BMUs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One episode (e.g. a handful of face latents), in presentation order.
        labels : sequence of str, length n_samples
            The expression of each sample; a label never seen before opens a new class.
        imagined : bool
            True for imagined samples: they train only the imagined network (``imagined_``),
            except those of a class already learned for real, which are skipped (see the class
            notes). A real episode prunes the imagined nodes of the classes it learns.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            On a bad config, an empty batch, a wrong dimension, non-finite values or a
            label/sample count mismatch; the memory is then unchanged.
        NotFittedError
            For imagined samples before any real one (imagination starts from real faces).
        """
        if imagined:
            return self._fit_imagined(X, labels)
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
            self.imagined_ = None
            self.classes_: list[str] = []
        self.labels_ = label_list
        self.classes_ += [name for name in label_list if name not in self.classes_]
        for network in (self.episodic_, self.semantic_):
            network.ensure_labels(len(label_list))
        self.episodic_.train(X, y, config.epochs)
        bmus, _ = self.episodic_.nearest(X)
        recalled = np.ascontiguousarray(self.episodic_.prototypes()[bmus], dtype=np.float32)
        self.semantic_.train(recalled, y, config.epochs)
        self.n_episodes_ += 1
        self._prune_imagined()
        return self

    def _fit_imagined(self, X: Any, labels: Sequence[str]) -> GrowingDualMemory:
        if not hasattr(self, "labels_"):
            raise NotFittedError(
                "imagined samples need a memory that learned real faces first; "
                "call partial_fit(X, labels) on real samples before partial_fit(..., imagined=True)"
            )
        X = self._check_X(X)
        names = self._check_labels(labels, X.shape[0])
        real = set(self.labels_)
        rows = [i for i, name in enumerate(names) if name not in real]
        if not rows:
            return self
        classes = list(self.classes_)
        classes += [name for name in dict.fromkeys(names[i] for i in rows) if name not in classes]
        index = {name: i for i, name in enumerate(classes)}
        y = np.array([index[names[i]] for i in rows], dtype=np.int64)
        samples = np.ascontiguousarray(X[rows])
        network = self.imagined_
        if network is None:
            network = self._new_network(self.config_, "episodic", self.n_features_in_)
        # Nothing below can fail on valid input: commit the new state.
        self.imagined_, self.classes_ = network, classes
        network.ensure_labels(len(classes))
        network.train(samples, y, self.config_.epochs)
        self.n_episodes_ += 1
        return self

    def _imagined_histograms(self) -> np.ndarray:
        """The imagined nodes' label histograms over ``classes_`` (columns of classes added since
        the imagined network last trained, e.g. a real class G cannot draw, are zeros)."""
        histograms = self.imagined_.label_histograms()[:, : len(self.classes_)]
        missing = len(self.classes_) - histograms.shape[1]
        return np.pad(histograms, ((0, 0), (0, missing))) if missing else histograms

    def _imagined_labels(self) -> np.ndarray:
        """Each imagined node's label: the ``classes_`` index of its histogram's argmax."""
        return np.argmax(self._imagined_histograms(), axis=1)

    def _prune_imagined(self) -> None:
        """Drop the imagined nodes of classes learned for real (they would never answer again)."""
        if self.imagined_ is None:
            return
        real = np.isin(np.asarray(self.classes_), self.labels_)
        keep = ~real[self._imagined_labels()]
        if keep.all():
            return
        if not keep.any():
            self.imagined_ = None
            return
        self.imagined_.set_state(self.imagined_.get_state().subset(keep))

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

        The BMU is that of the chosen real memory, with two exceptions. In the semantic memory,
        a query whose episodic BMU is labelled with a class no semantic node carries yet (not
        consolidated, see the class notes) takes the episodic BMU's histogram. And a query whose
        nearest imagined node of a class not learned for real is strictly nearer than its
        nearest real episodic node takes that imagined node's histogram with the columns of real
        classes set to 0, normalised. A BMU with an empty histogram gives equal scores to the
        real classes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        memory : {"episodic", "semantic"}

        Returns
        -------
        ndarray of shape (n_samples, len(classes_)), float64
            Columns in ``classes_`` order (equal to ``labels_`` without imagination); rows sum
            to 1; the row maximum is the confidence of :meth:`predict`.
        """
        self._check_fitted()
        memory = self._check_memory(memory)
        X = self._check_X(X)
        network = self._network(memory)
        bmus, _ = network.nearest(X)
        n_real = len(self.labels_)
        real = network.label_histograms()[bmus, :n_real].astype(np.float64)
        if memory == "semantic":
            self._recall_unconsolidated(X, real)
        totals = real.sum(axis=1, keepdims=True)
        empty = totals[:, 0] <= 0
        real[empty] = 1.0
        totals[empty] = n_real
        column = {name: i for i, name in enumerate(self.classes_)}
        scores = np.zeros((X.shape[0], len(self.classes_)), dtype=np.float64)
        scores[:, [column[name] for name in self.labels_]] = real / totals
        if self.imagined_ is not None:
            self._imagined_answers(X, scores)
        return scores

    def consolidated(self) -> list[str]:
        """The real classes the semantic memory carries: the label of at least one of its
        nodes (argmax of a non-empty histogram)."""
        self._check_fitted()
        return [self.labels_[i] for i in np.flatnonzero(self._carried())]

    def _carried(self) -> np.ndarray:
        """Per real label (``labels_`` order), whether a semantic node carries it."""
        histograms = self.semantic_.label_histograms()[:, : len(self.labels_)]
        label = np.argmax(histograms, axis=1)
        counted = histograms[np.arange(len(label)), label] > 0  # counts are >= 0: else empty
        carried = np.zeros(len(self.labels_), dtype=bool)
        carried[label[counted]] = True
        return carried

    def _recall_unconsolidated(self, X: np.ndarray, rows: np.ndarray) -> None:
        """Overwrite, in place, the semantic rows whose episodic BMU is labelled with a class
        not consolidated yet by that BMU's histogram (see the class notes)."""
        carried = self._carried()
        if carried.all():
            return
        bmus, _ = self.episodic_.nearest(X)
        episodic = self.episodic_.label_histograms()[bmus, : len(self.labels_)]
        fresh = (episodic.sum(axis=1) > 0) & ~carried[np.argmax(episodic, axis=1)]
        rows[fresh] = episodic[fresh]

    def _imagined_answers(self, X: np.ndarray, scores: np.ndarray) -> None:
        """Overwrite, in place, the rows that an imagined node answers (see predict_proba)."""
        is_real = np.isin(np.asarray(self.classes_), self.labels_)
        active = np.flatnonzero(~is_real[self._imagined_labels()])
        if active.size == 0:
            return
        nodes, distance = _nearest_rows(X, self.imagined_.prototypes()[active])
        _, real_distance = self.episodic_.nearest(X)
        wins = np.flatnonzero(distance * self.config_.imagined_margin < real_distance)
        if wins.size == 0:
            return
        rows = self._imagined_histograms()[active[nodes[wins]]]
        rows = np.where(is_real, 0.0, rows.astype(np.float64))
        scores[wins] = rows / rows.sum(axis=1, keepdims=True)

    def predict(self, X: Any, memory: MemoryName = "semantic") -> list[str]:
        """The argmax of :meth:`predict_proba` (ties to the earlier class of ``classes_``): the real
        BMU's label, or an imagined node's where it yields no real knowledge (class notes).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        memory : {"episodic", "semantic"}

        Returns
        -------
        list of str, length n_samples
        """
        proba = self.predict_proba(X, memory=memory)
        return [self.classes_[i] for i in np.argmax(proba, axis=1)]

    def episodic_prototypes(self) -> tuple[np.ndarray, list[str]]:
        """Episodic nodes' prototypes and labels (real faces only: the faces the robot can
        imagine from).

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

        ``labels`` are those learned for real, ``classes`` adds the imagined ones; ``imagined``
        counts the nodes and edges of imagined knowledge. Works before fitting too (then with
        zero nodes and ``n_features`` None).
        """
        out: dict[str, Any] = {
            "n_features": getattr(self, "n_features_in_", None),
            "labels": list(getattr(self, "labels_", [])),
            "classes": list(getattr(self, "classes_", [])),
            "n_episodes": getattr(self, "n_episodes_", 0),
        }
        for name in _NETWORKS:
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

        A network that already holds more nodes keeps them but does not grow any further. The
        imagined network follows the episodic bound.

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
        if self.imagined_ is not None:
            self.imagined_.config = self.config_.episodic
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
            networks={
                name: network.get_state()
                for name in _NETWORKS
                if (network := getattr(self, f"{name}_")) is not None
            },
            classes=list(self.classes_),
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
            for name, state in record.networks.items():
                imagined = name == "imagined"
                # The imagined network has the episodic network's settings.
                which = "episodic" if imagined else name
                network = memory._new_network(config, which, record.n_features)
                network.ensure_labels(len(record.classes if imagined else record.labels))
                network.set_state(state)
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
        memory.classes_ = list(record.classes)
        memory.episodic_ = networks["episodic"]
        memory.semantic_ = networks["semantic"]
        memory.imagined_ = networks.get("imagined")
        return memory


def _nearest_rows(X: np.ndarray, prototypes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each row's nearest prototype and that Euclidean distance (float64)."""
    P = prototypes.astype(np.float64)
    squared = np.einsum("nd,nd->n", P, P)
    index = np.empty(X.shape[0], dtype=np.int64)
    distance = np.empty(X.shape[0], dtype=np.float64)
    for start in range(0, X.shape[0], 256):
        x = X[start : start + 256].astype(np.float64)
        d = np.einsum("nd,nd->n", x, x)[:, None] - 2.0 * x @ P.T + squared[None, :]
        index[start : start + 256] = np.argmin(d, axis=1)
        distance[start : start + 256] = np.sqrt(np.maximum(d.min(axis=1), 0.0))
    return index, distance
