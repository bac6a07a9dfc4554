"""Who is this face? The runtime's fallback when the robot has no person ids.

Identity fallback (``persons.mode: identity``) for robots without person recognition: each face's
encoder latent is compared (cosine distance) with a running mean per known person; the nearest one
within ``identity_threshold`` is that person, otherwise a new person ``person-<n>`` is created. Its
limits: the latent is trained for expressions, not identity, so it also moves with expression,
pose and lighting; two similar-looking people can merge and one person can split into several ids,
and a wrong assignment trains the wrong person's memory. Use it only for a handful of users; give
real person ids (ROS4HRI ``/humans/persons``) whenever the robot has them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class IdentityIndex:
    """Open-set nearest-neighbour person identification on face latents (the fallback).

    Each known person is a running mean of their unit-normalised latents; a face joins the nearest
    person within ``threshold`` (cosine distance) or founds a new one. See the module docstring for
    why this is only a fallback. The unit centroids are kept in one matrix, so identifying a face
    is one matrix-vector product however many persons are known.
    """

    def __init__(
        self, threshold: float, records: Iterable[tuple[str, np.ndarray | None, int]] = ()
    ) -> None:
        self.threshold = threshold
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._centroids = np.zeros((0, 0), dtype=np.float32)  # running means, one row per id
        self._units = np.zeros((0, 0), dtype=np.float32)  # the same rows, unit length
        self._counts: list[int] = []
        for person_id, centroid, count in records:
            if centroid is not None and count > 0:
                self._add(person_id, np.asarray(centroid, dtype=np.float32).ravel(), count)

    def assign(self, latent: np.ndarray) -> str:
        """The id of the person this latent belongs to (a new ``person-<n>`` if none is near)."""
        unit = _unit(latent)
        n = len(self._ids)
        if n and self._units.shape[1] == unit.size:
            distance = 1.0 - self._units[:n] @ unit
            best = int(np.argmin(distance))
            if distance[best] <= self.threshold:
                return self._ids[best]
        number = n + 1
        while f"person-{number}" in self._row:
            number += 1
        return f"person-{number}"

    def update(self, person_id: str, latent: np.ndarray) -> tuple[np.ndarray, int]:
        """Add a latent to the person's running mean; returns (centroid, count) to be saved."""
        unit = _unit(latent)
        i = self._row.get(person_id)
        if i is None:
            i = self._add(person_id, unit, 1)
        else:
            self._counts[i] += 1
            self._centroids[i] += (unit - self._centroids[i]) / self._counts[i]
            self._units[i] = _unit(self._centroids[i])
        return self._centroids[i].copy(), self._counts[i]

    def remove(self, person_id: str) -> None:
        """Forget a person's identity."""
        i = self._row.pop(person_id, None)
        if i is None:
            return
        last = len(self._ids) - 1
        if i != last:  # move the last row into the gap
            moved = self._ids[last]
            self._ids[i], self._counts[i] = moved, self._counts[last]
            self._centroids[i], self._units[i] = self._centroids[last], self._units[last]
            self._row[moved] = i
        self._ids.pop()
        self._counts.pop()

    def __contains__(self, person_id: object) -> bool:
        return person_id in self._row

    def __len__(self) -> int:
        return len(self._ids)

    def _add(self, person_id: str, centroid: np.ndarray, count: int) -> int:
        n = len(self._ids)
        if n and centroid.size != self._centroids.shape[1]:
            raise ValueError(
                f"identity of {centroid.size} values, the index holds {self._centroids.shape[1]}"
            )
        if n == 0:
            self._centroids = np.zeros((16, centroid.size), dtype=np.float32)
            self._units = np.zeros_like(self._centroids)
        if n == len(self._centroids):  # full: double the capacity
            self._centroids = np.concatenate([self._centroids, np.zeros_like(self._centroids)])
            self._units = np.concatenate([self._units, np.zeros_like(self._units)])
        self._centroids[n] = centroid
        self._units[n] = _unit(centroid)
        self._ids.append(person_id)
        self._counts.append(count)
        self._row[person_id] = n
        return n


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).ravel()
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
