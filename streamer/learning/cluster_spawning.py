"""New-cluster detection for the campaign's pixel clusters: compact groups far from all centres.

Before :class:`~streamer.learning.pixel_clusters.OnlinePixelClusters` learns a field, the field's
pixels are compared with the existing centres: a pixel is *far* when its distance to the nearest
centre exceeds ``far_factor`` times that cluster's running RMS radius (floored at the median
radius). When the far pixels number at least ``min_new_pixels`` (and ``min_new_fraction`` of the
field) and form a compact group (their RMS spread about their centre below half its distance to
the nearest centre), :func:`spawn_clusters` adds a centre there and reports it
(:class:`SpawnedCluster`); up to three per field.

>>> import numpy as np
>>> squared_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0]])).ravel().tolist()
[0.0, 25.0]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sklearn.cluster import KMeans

__all__ = ["GrowingClusters", "SpawnedCluster", "spawn_clusters", "squared_distances"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpawnedCluster:
    """A centre added because a field held a compact group of pixels far from all centres."""

    cluster_id: int
    n_pixels: int
    fraction: float
    center: np.ndarray
    nearest_cluster: int
    distance: float
    radius: float


def squared_distances(Z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, shape ``(n, k)``, of rows ``Z`` (n, d) to ``centers`` (k, d)."""
    d2 = (Z * Z).sum(1)[:, None] - 2.0 * Z @ centers.T + (centers * centers).sum(1)[None, :]
    return np.maximum(d2, 0.0)


class GrowingClusters(Protocol):
    """What :func:`spawn_clusters` needs of a clustering model (``OnlinePixelClusters`` has it)."""

    far_factor: float
    min_new_pixels: int
    min_new_fraction: float
    max_clusters: int
    seed: int
    n_assigned_: np.ndarray

    @property
    def centers_(self) -> np.ndarray: ...

    @property
    def radii_(self) -> np.ndarray: ...

    def predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def add_center(self, center: np.ndarray, count: int, spread: float) -> int: ...


def spawn_clusters(model: GrowingClusters, Z: np.ndarray) -> list[SpawnedCluster]:
    """Add a centre to ``model`` for each compact group of ``Z``'s pixels far from every centre.

    Up to three per call, largest group first; the far pixels are recomputed after each
    addition. Returns what was added (empty when nothing qualifies or ``max_clusters`` is
    reached, which is logged as a warning).
    """
    spawned: list[SpawnedCluster] = []
    n = Z.shape[0]
    floor = (
        float(np.median(model.radii_[model.n_assigned_ > 0])) if model.n_assigned_.any() else 1.0
    )
    for _ in range(3):
        labels, dist = model.predict(Z)
        radius = np.maximum(model.radii_[labels], floor)
        far = dist > model.far_factor * radius
        n_far = int(far.sum())
        if n_far < max(model.min_new_pixels, model.min_new_fraction * n):
            break
        F = Z[far]
        n_groups = int(min(3, n_far // model.min_new_pixels))
        km = KMeans(n_groups, n_init=3, random_state=model.seed).fit(F)
        sizes = np.bincount(km.labels_, minlength=n_groups)
        added = False
        for g in np.argsort(-sizes, kind="stable"):
            sub = F[km.labels_ == g]
            if sub.shape[0] < model.min_new_pixels:
                continue
            members = _neighbourhood(model, F, sub, floor)
            if members.shape[0] < model.min_new_pixels:
                continue
            center = np.median(members, axis=0)
            spread = float(np.sqrt(((members - center) ** 2).sum(1).mean()))
            d_all = np.sqrt(squared_distances(center[None], model.centers_))[0]
            nearest = int(np.argmin(d_all))
            distance = float(d_all[nearest])
            if distance <= model.far_factor * max(model.radii_[nearest], floor):
                continue  # a tail of an existing cluster, not a new place
            if spread >= 0.5 * distance:
                continue  # diffuse far pixels (noise), not a compact group
            if model.centers_.shape[0] >= model.max_clusters:
                logger.warning(
                    "a new pixel cluster was found but max_clusters=%d is reached",
                    model.max_clusters,
                )
                return spawned
            cid = model.add_center(center, members.shape[0], spread)
            spawned.append(
                SpawnedCluster(
                    cid,
                    int(members.shape[0]),
                    members.shape[0] / n,
                    center.copy(),
                    nearest,
                    distance,
                    spread,
                )
            )
            added = True
            break  # recompute the far pixels with the new centre
        if not added:
            break
    return spawned


def _neighbourhood(
    model: GrowingClusters, F: np.ndarray, sub: np.ndarray, floor: float
) -> np.ndarray:
    """Far pixels around a k-means piece ``sub`` of them, nearer to it than to any centre."""
    center = np.median(sub, axis=0)
    spread = float(np.sqrt(((sub - center) ** 2).sum(1).mean()))
    reach = model.far_factor * max(spread, floor)
    d_c = np.sqrt(((F - center) ** 2).sum(1))
    d_existing = np.sqrt(squared_distances(F, model.centers_).min(axis=1))
    return F[(d_c <= reach) & (d_c < d_existing)]
