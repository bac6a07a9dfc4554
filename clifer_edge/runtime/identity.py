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
    why this is only a fallback.
    """

    def __init__(
        self, threshold: float, records: Iterable[tuple[str, np.ndarray | None, int]] = ()
    ) -> None:
        self.threshold = threshold
        self._ids: list[str] = []
        self._centroids: list[np.ndarray] = []
        self._counts: list[int] = []
        for person_id, centroid, count in records:
            if centroid is not None and count > 0:
                self._ids.append(person_id)
                self._centroids.append(np.asarray(centroid, dtype=np.float32))
                self._counts.append(count)

    def assign(self, latent: np.ndarray) -> str:
        """The id of the person this latent belongs to (a new ``person-<n>`` if none is near)."""
        unit = _unit(latent)
        if self._centroids:
            centroids = np.stack([_unit(c) for c in self._centroids])
            distance = 1.0 - centroids @ unit
            best = int(np.argmin(distance))
            if distance[best] <= self.threshold:
                return self._ids[best]
        number = len(self._ids) + 1
        while f"person-{number}" in self._ids:
            number += 1
        return f"person-{number}"

    def update(self, person_id: str, latent: np.ndarray) -> tuple[np.ndarray, int]:
        """Add a latent to the person's running mean; returns (centroid, count) to be saved."""
        unit = _unit(latent)
        if person_id in self._ids:
            i = self._ids.index(person_id)
            self._counts[i] += 1
            self._centroids[i] = self._centroids[i] + (unit - self._centroids[i]) / self._counts[i]
        else:
            self._ids.append(person_id)
            self._centroids.append(unit)
            self._counts.append(1)
            i = len(self._ids) - 1
        return self._centroids[i], self._counts[i]

    def remove(self, person_id: str) -> None:
        """Forget a person's identity."""
        if person_id in self._ids:
            i = self._ids.index(person_id)
            del self._ids[i], self._centroids[i], self._counts[i]


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).ravel()
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
