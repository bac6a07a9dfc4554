"""Imagination: a person's faces under expressions they have not shown, in latent space.

CLIFER's Imagination model lets the robot picture a known person with another expression. For each
episodic prototype (a BMU weight, i.e. a latent the person really produced), the generator renders
the face under every other expression c, G(z, c); the encoder maps that picture back to the latent
space, E(G(z, c)); the memories are then trained on these imagined latents with label c. This module
is that computation, and a generator-free baseline to measure it against
(:func:`class_offset_points`), shared by the robot (:mod:`clifer_edge.runtime.scheduler` runs it in
idle time) and the evaluation protocol (:mod:`clifer_edge.evaluation.protocol`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from clifer_edge.labels import canonical_label


def generator_vocabulary(model: Any) -> tuple[str, ...]:
    """The expressions a model's metadata lists (canonical names, in one-hot order)."""
    return tuple(canonical_label(name) for name in model.metadata.vocabulary)


def _check_prototypes(prototypes: np.ndarray, source_labels: Sequence[str]) -> np.ndarray:
    prototypes = np.asarray(prototypes, dtype=np.float32)
    if prototypes.ndim != 2:
        raise ValueError(f"prototypes of shape {prototypes.shape} should be (n_prototypes, z_dim)")
    if len(source_labels) != prototypes.shape[0]:
        raise ValueError(f"{len(source_labels)} source labels for {prototypes.shape[0]} prototypes")
    if not np.all(np.isfinite(prototypes)):
        raise ValueError("prototypes contain NaN or infinite values")
    return prototypes


def imagine_faces(
    prototypes: np.ndarray,
    generator: Any,
    source_labels: Sequence[str],
    targets: Iterable[str] | None = None,
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Render each prototype under every target expression other than its own.

    Parameters
    ----------
    prototypes : ndarray of shape (n_prototypes, z_dim)
        Latents (episodic BMU weights) of one person.
    generator : Generator
        The Imagination model's decoder, ``generate(z, expressions) -> faces``.
    source_labels : sequence of str
        The label of each prototype (its own expression is not imagined again).
    targets : iterable of str, optional
        Expressions to imagine; default: the generator's whole vocabulary.

    Returns
    -------
    faces : ndarray of shape (m, H, W, C), float32 in [-1, 1]
    labels : list of str, length m
        The imagined expression of each face.
    rows : ndarray of int, shape (m,)
        Index of the prototype each face was imagined from.
    """
    prototypes = _check_prototypes(prototypes, source_labels)
    vocabulary = generator_vocabulary(generator)
    if targets is None:
        wanted = vocabulary
    else:
        wanted = tuple(canonical_label(name) for name in targets)
        unknown = [name for name in wanted if name not in vocabulary]
        if unknown:
            raise ValueError(
                f"cannot imagine {unknown}: not in the generator vocabulary {list(vocabulary)}"
            )
    rows: list[int] = []
    labels: list[str] = []
    for row, source in enumerate(source_labels):
        source = canonical_label(source)
        for target in wanted:
            if target != source:
                rows.append(row)
                labels.append(target)
    index = np.asarray(rows, dtype=np.int64)
    if not rows:
        size = generator.metadata.image_size
        return np.zeros((0, size, size, generator.metadata.channels), np.float32), [], index
    z = np.clip(prototypes[index], -1.0, 1.0)
    faces = generator.generate(z, labels)
    return faces, labels, index


def imagine_latents(
    prototypes: np.ndarray,
    encoder: Any,
    generator: Any,
    source_labels: Sequence[str],
    targets: Iterable[str] | None = None,
    residual: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Imagined latents E(G(z, c)) for every prototype z and every other expression c.

    Parameters are as for :func:`imagine_faces`, plus ``encoder`` (``encode(faces) -> latents``)
    and ``residual``: if True, return ``z + E(G(z, c)) - E(G(z, s))`` (s = the prototype's own
    expression) instead, i.e. only the generator's *change of expression* is added to the real
    prototype, which cancels the offset between reconstructed and real faces (the generator's
    reconstruction error) at the cost of one more generate/encode per prototype.

    Returns
    -------
    latents : ndarray of shape (m, z_dim), float32
    labels : list of str, length m
    """
    faces, labels, rows = imagine_faces(prototypes, generator, source_labels, targets)
    if not labels:
        return np.zeros((0, np.asarray(prototypes).shape[1]), np.float32), []
    latents = np.asarray(encoder.encode(faces), dtype=np.float32)
    if residual:
        own = reconstruct_latents(prototypes, encoder, generator, source_labels)
        latents = np.clip(np.asarray(prototypes)[rows] + latents - own[rows], -1.0, 1.0)
    return latents.astype(np.float32), labels


def reconstruct_latents(
    prototypes: np.ndarray, encoder: Any, generator: Any, source_labels: Sequence[str]
) -> np.ndarray:
    """E(G(z, s)) for each prototype z under its own expression s (z itself if G cannot draw s)."""
    prototypes = _check_prototypes(prototypes, source_labels)
    vocabulary = generator_vocabulary(generator)
    own = prototypes.copy()
    drawable = [i for i, label in enumerate(source_labels) if canonical_label(label) in vocabulary]
    if drawable:
        faces = generator.generate(
            np.clip(prototypes[drawable], -1.0, 1.0),
            [canonical_label(source_labels[i]) for i in drawable],
        )
        own[drawable] = np.asarray(encoder.encode(faces), dtype=np.float32)
    return own


def class_offset_points(
    prototypes: np.ndarray,
    source_labels: Sequence[str],
    targets: Iterable[str],
    class_means: np.ndarray,
    mean_labels: Sequence[str],
) -> tuple[np.ndarray, list[str]]:
    """Generator-free imagination, the baseline CLIFER's generator has to beat.

    Each prototype p of expression s is moved by the offset between crowd class means,
    ``p + mean(c) - mean(s)``, for every target c other than s; no face is drawn. All arrays are
    in the same space (the memories' standardised space on the robot). Prototypes whose own
    expression has no class mean (e.g. a label beyond the crowd's seven) are not imagined from.

    Returns
    -------
    points : ndarray of shape (m, d), float32
    labels : list of str, length m
    """
    prototypes = _check_prototypes(prototypes, source_labels)
    means = {label: row for label, row in zip(mean_labels, np.asarray(class_means), strict=True)}
    wanted = [canonical_label(name) for name in targets if canonical_label(name) in means]
    points: list[np.ndarray] = []
    labels: list[str] = []
    for prototype, source in zip(prototypes, source_labels, strict=True):
        source = canonical_label(source)
        if source not in means:
            continue
        for target in wanted:
            if target != source:
                points.append(prototype + means[target] - means[source])
                labels.append(target)
    if not points:
        return np.zeros((0, prototypes.shape[1]), np.float32), []
    return np.stack(points).astype(np.float32), labels


class PersonRecentring:
    """One known person's recentring terms, accumulated chunk by chunk.

    For a pair (s, c) of expressions the person showed for real, the term is their own
    class-mean offset minus G's mean change over their points of s::

        term(s, c) = (mean(c) - mean(s)) - mean over their points x of s of G_change(x, c)

    i.e. how this person really moves from s to c, beyond what G draws. Class means come from all
    the points at once (cheap); G's changes are added in chunks (:meth:`add`), so the caller can
    stop between two of them.
    """

    def __init__(self, points: np.ndarray, labels: Sequence[str], vocabulary: Sequence[str]):
        points = _check_prototypes(points, labels)
        names = np.asarray([canonical_label(name) for name in labels], dtype=object)
        #: Expressions shown that G can draw: the sources and targets of the terms.
        self.classes = [c for c in vocabulary if (names == c).any()]
        self.means = {c: points[names == c].mean(axis=0) for c in self.classes}
        self._sums: dict[tuple[str, str], np.ndarray] = {}
        self._counts: dict[tuple[str, str], int] = {}

    def resume(self, earlier: PersonRecentring) -> None:
        """Take over the G changes ``earlier`` accumulated: its faces are the first of this
        person's snapshot and it measured them for the same expressions (a G change depends on
        the face and the pair only, so only the new faces are left to add)."""
        if earlier.classes != self.classes:
            raise ValueError(f"expressions {earlier.classes} differ from {self.classes}")
        self._sums = {pair: np.array(total, copy=True) for pair, total in earlier._sums.items()}
        self._counts = dict(earlier._counts)

    def add(self, changes: np.ndarray, sources: Sequence[str], targets: Sequence[str]) -> None:
        """Accumulate G's changes of some of the person's points: each point's
        ``to_memory(z + E(G(z, c)) - E(G(z, s))) - x`` for its pair (s, c), with
        ``z = to_latent(x)`` (the scheduler renders them in its preemptible steps)."""
        for change, pair in zip(changes, zip(sources, targets, strict=True), strict=True):
            if pair[0] in self.means and pair[1] in self.means:
                self._sums[pair] = self._sums.get(pair, 0.0) + change
                self._counts[pair] = self._counts.get(pair, 0) + 1

    def terms(self) -> dict[tuple[str, str], np.ndarray]:
        """term(s, c) for every pair with at least one change accumulated."""
        return {
            (s, c): (self.means[c] - self.means[s]) - total / self._counts[s, c]
            for (s, c), total in self._sums.items()
        }


class PeerRecentring:
    """G's change of expression recentred on people already known: a per-(s, c) shift.

    The generator learned its changes of expression from FER2013, so its *average* change from s
    to c is the crowd's, not that of the people in front of this camera. The shift for s -> c is
    the mean, over the known people who showed both s and c, of their
    :class:`PersonRecentring` term. Added to a person's imagined point ``x + G_change`` it keeps
    what G does differently for this person and replaces G's average by the one observed in people
    already known. Pairs fewer than ``min_peers`` of them showed, or that G cannot draw, get no
    shift.

    Parameters
    ----------
    peers : sequence of dict
        Each known person's :meth:`PersonRecentring.terms` (the person imagined for excluded).
    dim : int
        Dimension of the memories' space.
    min_peers : int
        People needed before a pair is shifted (one person's offsets are noisy).
    """

    def __init__(
        self,
        peers: Sequence[dict[tuple[str, str], np.ndarray]],
        dim: int,
        min_peers: int = 1,
    ) -> None:
        self.dim = dim
        pairs: dict[tuple[str, str], list[np.ndarray]] = {}
        for terms in peers:
            for pair, term in terms.items():
                pairs.setdefault(pair, []).append(term)
        self.shifts = {
            pair: np.mean(terms, axis=0) for pair, terms in pairs.items() if len(terms) >= min_peers
        }
        #: How many known people each shifted pair averages.
        self.counts = {pair: len(pairs[pair]) for pair in self.shifts}

    def shift(self, sources: Sequence[str], targets: Sequence[str]) -> np.ndarray:
        """One row per imagined point: the shift of its (source, target) pair, or zeros."""
        rows = [
            self.shifts.get((canonical_label(s), canonical_label(t)), np.zeros(self.dim))
            for s, t in zip(sources, targets, strict=True)
        ]
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), self.dim)
