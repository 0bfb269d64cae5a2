"""Which particles a new pixel cluster falls in.

The pixel-level learner (:mod:`streamer.learning.pixel_model`) notices when a field's pixels form
a cluster the campaign has not seen, but a cluster is a set of pixels: staff need to know which
particle to re-image. A particle that is abnormal over a region only (a third of it, say) barely
moves its median attributes, so no particle alert names it, while its region forms the new
cluster (``docs/detection-results.md``, partial anomalies). :func:`particles_in_cluster` names the
particles that hold a meaningful part of a cluster, for the ``new_cluster`` alert.

Examples
--------
>>> labels = np.zeros((6, 6), np.int32)
>>> labels[:3, :3], labels[3:, 3:] = 1, 2
>>> clusters = np.full(36, -1, np.int16)
>>> clusters[labels.ravel() == 2] = 0
>>> clusters[[0, 1]] = 5  # two pixels of particle 1 in cluster 5
>>> [(p["id"], p["n_pixels"], p["fraction_of_particle"])
...  for p in particles_in_cluster(labels, clusters, 5, min_pixels=2)]
[(1, 2, 0.222)]
"""

from __future__ import annotations

import numpy as np

__all__ = ["particles_in_cluster"]


def particles_in_cluster(
    labels: np.ndarray,
    cluster_map: np.ndarray,
    cluster_id: int,
    *,
    min_pixels: int = 20,
    min_fraction: float = 0.05,
    limit: int = 5,
) -> list[dict]:
    """The particles holding part of pixel cluster ``cluster_id``, most pixels first.

    Parameters
    ----------
    labels
        Particle label map ``(ny, nx)`` (0: no particle).
    cluster_map
        Cluster id per pixel, ``(ny * nx,)`` or ``(ny, nx)`` (``-1``: not clustered).
    cluster_id
        The cluster.
    min_pixels, min_fraction
        A particle is named when it holds at least ``min_pixels`` of the cluster's pixels and
        they are at least ``min_fraction`` of its area (scattered pixels are not a region).
    limit
        At most this many particles.

    Returns
    -------
    list of dict
        ``id``, ``n_pixels`` (of the cluster, in the particle), ``fraction_of_particle`` (of its
        area, rounded to 3 digits) and ``fraction_of_cluster``.
    """
    flat_labels = np.asarray(labels).ravel()
    clusters = np.asarray(cluster_map).ravel()
    if clusters.shape != flat_labels.shape:
        raise ValueError(
            f"cluster_map has {clusters.size} pixels, the label map {flat_labels.size}"
        )
    in_cluster = clusters == cluster_id
    n_cluster = int(np.count_nonzero(in_cluster))
    ids = flat_labels[in_cluster]
    ids = ids[ids > 0]
    if ids.size == 0:
        return []
    counts = np.bincount(ids)
    areas = np.bincount(flat_labels[flat_labels > 0], minlength=counts.size)[: counts.size]
    named = []
    for pid in np.flatnonzero(counts):
        n, area = int(counts[pid]), int(areas[pid])
        if n >= min_pixels and n >= min_fraction * area:
            named.append(
                {
                    "id": int(pid),
                    "n_pixels": n,
                    "fraction_of_particle": round(n / area, 3),
                    "fraction_of_cluster": round(n / n_cluster, 3),
                }
            )
    named.sort(key=lambda p: -p["n_pixels"])
    return named[:limit]
