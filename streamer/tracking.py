"""Keep particle ids stable between evaluations of the same field of view.

Segmenting the provisional edge jump early in a scan and the final one at its end gives label maps
that agree on the particles but not necessarily on their numbers. Alerts are keyed by particle id,
so a particle must keep the id it was first alerted under.
"""

from __future__ import annotations

import numpy as np


def match_labels(previous: np.ndarray, current: np.ndarray, *, min_iou: float = 0.5) -> np.ndarray:
    """Renumber ``current`` so that each particle keeps the id of its best match in ``previous``.

    A current particle inherits the id of the previous particle it overlaps most, when their
    intersection over union is at least ``min_iou`` and no better-overlapping current particle
    claimed that id first. Unmatched particles get new ids above every id used so far.

    Parameters
    ----------
    previous, current : ndarray of int, shape (ny, nx)
        Label maps, 0 = background.
    min_iou : float
        Least overlap for two particles to be the same.

    Returns
    -------
    ndarray of int32
        ``current`` relabelled.

    Examples
    --------
    >>> prev = np.array([[1, 1, 0, 2, 2]])
    >>> cur = np.array([[2, 2, 0, 1, 1]])
    >>> match_labels(prev, cur).tolist()
    [[1, 1, 0, 2, 2]]
    >>> match_labels(prev, np.array([[0, 0, 0, 0, 5]])).tolist()  # IoU 0.5: same particle
    [[0, 0, 0, 0, 2]]
    """
    previous = np.asarray(previous)
    current = np.asarray(current)
    if previous.shape != current.shape:
        raise ValueError(f"label maps differ in shape: {previous.shape} vs {current.shape}")
    p = previous.ravel().astype(np.int64)
    c = current.ravel().astype(np.int64)
    n_p, n_c = int(p.max(initial=0)) + 1, int(c.max(initial=0)) + 1
    both = (p > 0) & (c > 0)
    overlap = np.bincount(p[both] * n_c + c[both], minlength=n_p * n_c).reshape(n_p, n_c)
    area_p = np.bincount(p, minlength=n_p)
    area_c = np.bincount(c, minlength=n_c)
    iou = overlap / np.maximum(area_p[:, None] + area_c[None, :] - overlap, 1)
    iou[0, :] = 0
    iou[:, 0] = 0
    mapping = np.zeros(n_c, dtype=np.int64)
    taken: set[int] = set()
    # greedy on decreasing IoU: the best pairs claim their ids first
    order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
    for pi, ci in order:
        if iou[pi, ci] < min_iou:
            break
        if mapping[ci] == 0 and pi not in taken:
            mapping[ci] = pi
            taken.add(int(pi))
    next_id = max(n_p - 1, 0) + 1
    for ci in range(1, n_c):
        if area_c[ci] and mapping[ci] == 0:
            mapping[ci] = next_id
            next_id += 1
    return mapping[current].astype(np.int32)
