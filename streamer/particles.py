"""Particle segmentation and per-particle aggregates over per-pixel attribute maps.

Per-pixel attributes (see ``docs/architecture.md``) are float32 arrays of shape ``(n_pixels,)``
that reshape to ``(ny, nx)`` images; ``NaN`` marks masked pixels. This module turns the edge-jump
image (optical density jump across the edge, proportional to the amount of absorber along the
beam) into a label map of particles and aggregates every attribute per particle into the particle
table. The pixel masks it builds on (:func:`thickness_mask`, :func:`odd_value_mask`) live in
:mod:`streamer.masks` and are re-exported here.

Everything is vectorised over pixels: labelling and distance transforms come from
:mod:`scipy.ndimage`, the split of touching particles from :func:`skimage.segmentation.watershed`,
and the per-particle medians from one sort per particle (all attributes at once).

Examples
--------
>>> import numpy as np
>>> yy, xx = np.mgrid[:64, :64]
>>> edge_jump = np.where((yy - 20) ** 2 + (xx - 20) ** 2 < 100, 0.5, 0.0).astype(np.float32)
>>> edge_jump[(yy - 45) ** 2 + (xx - 40) ** 2 < 64] = 0.3
>>> labels = segment_particles(edge_jump)
>>> int(labels.max())
2
>>> table = particle_table(labels, {"edge_jump": edge_jump})
>>> [row["area_px"] for row in table]
[301, 193]
>>> table[0]["edge_jump_median"]
0.5
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from streamer.masks import (
    DEFAULT_RANGES,
    edge_jump_threshold,
    odd_value_mask,
    require_image_2d,
    thickness_mask,
)

__all__ = [
    "DEFAULT_RANGES",
    "edge_jump_threshold",
    "odd_value_mask",
    "particle_table",
    "segment_particles",
    "thickness_mask",
]

logger = logging.getLogger(__name__)


def segment_particles(
    edge_jump_image: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    threshold: float | None = None,
    min_area_px: int = 20,
    split_touching: bool = True,
    split_by: str = "shape_and_edge_jump",
    min_distance_px: int = 3,
    split_depth: float = 0.25,
    min_split_depth_px: float = 1.0,
    smooth_sigma_px: float = 1.5,
    n_sigma: float = 3.0,
    median_size_px: int = 3,
) -> np.ndarray:
    """Label the particles in an edge-jump image.

    The thickness mask (:func:`thickness_mask`, or ``mask`` when given) is labelled into
    connected components (8-connectivity); components smaller than ``min_area_px`` are dropped.
    With ``split_touching``, each component is split by a marker-controlled watershed over a
    landscape that peaks inside particles and dips where they touch, seeded at its local maxima
    (at least ``min_distance_px`` apart):

    * ``split_by="shape"``: the Euclidean distance to the background (a neck in the outline);
    * ``split_by="shape_and_edge_jump"`` (default): that distance times the smoothed edge jump
      above background. Projected particles thin out toward their outline, so two touching
      particles show a valley of edge jump along their contact even when the outline has no
      neck (a tight cluster of small particles).

    Over-splitting of irregular shapes is then undone by merging neighbouring regions, highest
    saddle first, unless the saddle between them is clearly below the smaller of their two peaks:
    a split is kept only when ``peak - saddle >= split_depth * peak`` (and, for
    ``split_by="shape"``, ``>= min_split_depth_px``) and both regions have ``min_area_px``.
    An ellipse, a bean or a wavy outline of even thickness has saddles close to its peak and
    stays whole.

    Parameters
    ----------
    edge_jump_image : ndarray, shape (ny, nx)
        Edge jump per pixel (OD units); ``NaN`` marks masked pixels.
    mask : ndarray of bool, optional
        Use this foreground instead of computing the thickness mask.
    threshold : float, optional
        Edge-jump threshold passed to :func:`thickness_mask` (automatic when omitted).
    min_area_px : int
        Smallest particle kept, in pixels.
    split_touching : bool
        Split touching particles (watershed); otherwise particles are connected components.
    split_by : {"shape_and_edge_jump", "shape"}
        Landscape of the watershed (see above).
    min_distance_px : int
        Minimum distance between watershed seeds.
    split_depth : float
        Relative depth of the saddle needed to keep two touching particles apart (0-1).
    min_split_depth_px : float
        Absolute depth (pixels of distance) needed to keep a split with ``split_by="shape"``.
    smooth_sigma_px : float
        Gaussian smoothing of the edge jump for ``split_by="shape_and_edge_jump"``.
    n_sigma, median_size_px
        Automatic threshold (multiple of the background noise) and median filter, passed to
        :func:`thickness_mask`. A low ``n_sigma`` keeps the thin rims of rounded particles; the
        isolated noise pixels it lets through are removed by ``min_area_px``.

    Returns
    -------
    ndarray of int32, shape (ny, nx)
        Particle labels ``1..n`` (0 = background), numbered in raster order of their first pixel.
    """
    image = require_image_2d(edge_jump_image, name="edge_jump_image")
    if mask is None:
        mask = thickness_mask(
            image, threshold=threshold, n_sigma=n_sigma, median_size_px=median_size_px
        )
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape:
            raise ValueError(f"mask has shape {mask.shape}, image has {image.shape}")
    components, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros(image.shape, dtype=np.int32)
    areas = np.bincount(components.ravel(), minlength=n + 1)
    keep = areas >= min_area_px
    keep[0] = False
    foreground = keep[components]
    if not split_touching:
        return _relabel_raster(np.where(foreground, components, 0))
    if split_by not in ("shape", "shape_and_edge_jump"):
        raise ValueError(f"split_by must be 'shape' or 'shape_and_edge_jump', got {split_by!r}")
    landscape = ndimage.distance_transform_edt(foreground)
    min_depth = min_split_depth_px
    if split_by == "shape_and_edge_jump":
        landscape *= _edge_jump_above_background(image, foreground, smooth_sigma_px)
        min_depth = 0.0
    seeds = peak_local_max(
        landscape,
        min_distance=max(1, int(min_distance_px)),
        labels=np.where(foreground, components, 0),
        exclude_border=False,
    )
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[components[tuple(seeds.T)]] = True
    unseeded = np.flatnonzero(keep & ~seeded)
    if unseeded.size:  # a component must never vanish for lack of a seed
        extra = ndimage.maximum_position(landscape, components, unseeded)
        seeds = np.concatenate([seeds.reshape(-1, 2), np.asarray(extra).reshape(-1, 2)])
    markers = np.zeros(image.shape, dtype=np.int32)
    markers[tuple(seeds.T)] = np.arange(1, len(seeds) + 1, dtype=np.int32)
    regions = watershed(-landscape, markers, mask=foreground)
    merged = _merge_shallow_splits(
        regions,
        landscape,
        split_depth=split_depth,
        min_split_depth_px=min_depth,
        min_area_px=min_area_px,
    )
    labels = _relabel_raster(merged)
    logger.debug(
        "%d particles from %d components (%d watershed seeds)", labels.max(), keep.sum(), len(seeds)
    )
    return labels


def _edge_jump_above_background(
    image: np.ndarray, foreground: np.ndarray, sigma_px: float
) -> np.ndarray:
    """Smoothed edge jump minus the background median, clipped at 0, zero outside particles."""
    finite = np.isfinite(image)
    smooth = np.where(finite, image, 0.0).astype(np.float64)
    if sigma_px > 0:
        weights = ndimage.gaussian_filter(finite.astype(np.float64), sigma_px)
        smooth = ndimage.gaussian_filter(smooth, sigma_px) / np.maximum(weights, 1e-6)
    outside = ~foreground & finite
    background = float(np.median(smooth[outside])) if outside.any() else 0.0
    return np.where(foreground, np.clip(smooth - background, 0.0, None), 0.0)


def _relabel_raster(labels: np.ndarray) -> np.ndarray:
    """Renumber labels ``1..n`` in raster order of their first pixel, as int32."""
    flat = labels.ravel()
    present, first = np.unique(flat, return_index=True)
    first = first[present > 0]
    present = present[present > 0]
    lookup = np.zeros(int(flat.max(initial=0)) + 1, dtype=np.int32)
    lookup[present[np.argsort(first)]] = np.arange(1, present.size + 1, dtype=np.int32)
    return lookup[labels]


def _merge_shallow_splits(
    regions: np.ndarray,
    landscape: np.ndarray,
    *,
    split_depth: float,
    min_split_depth_px: float,
    min_area_px: int,
) -> np.ndarray:
    """Merge watershed regions separated by a shallow neck (see :func:`segment_particles`)."""
    n = int(regions.max())
    if n < 2:
        return regions
    # Saddle of each adjacent pair: highest value, along the shared boundary, of the lower side.
    keys, saddles = [], []
    for a, b, da, db in (
        (regions[:, :-1], regions[:, 1:], landscape[:, :-1], landscape[:, 1:]),
        (regions[:-1, :], regions[1:, :], landscape[:-1, :], landscape[1:, :]),
    ):
        touching = (a != b) & (a > 0) & (b > 0)
        lo = np.minimum(a[touching], b[touching]).astype(np.int64)
        hi = np.maximum(a[touching], b[touching]).astype(np.int64)
        keys.append(lo * (n + 1) + hi)
        saddles.append(np.minimum(da[touching], db[touching]))
    keys = np.concatenate(keys)
    saddles = np.concatenate(saddles)
    if keys.size == 0:
        return regions
    order = np.lexsort((-saddles, keys))
    keys, saddles = keys[order], saddles[order]
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    pair_keys, pair_saddles = keys[first], saddles[first]
    peak = np.full(n + 1, -np.inf)
    np.maximum.at(peak, regions.ravel(), landscape.ravel())
    area = np.bincount(regions.ravel(), minlength=n + 1).astype(np.int64)
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k in np.argsort(-pair_saddles, kind="stable"):
        ra, rb = root(int(pair_keys[k] // (n + 1))), root(int(pair_keys[k] % (n + 1)))
        if ra == rb:
            continue
        smaller_peak = min(peak[ra], peak[rb])
        depth = smaller_peak - pair_saddles[k]
        shallow = depth < max(min_split_depth_px, split_depth * smaller_peak)
        if shallow or min(area[ra], area[rb]) < min_area_px:
            parent[rb] = ra
            peak[ra] = max(peak[ra], peak[rb])
            area[ra] += area[rb]
    roots = np.array([root(i) for i in range(n + 1)])
    return roots[regions]


def _group_quantiles(
    groups: np.ndarray, values: np.ndarray, ids: np.ndarray, quantiles: tuple[float, ...]
) -> np.ndarray:
    """Linear-interpolated quantiles of each row of ``values`` per group, ignoring non-finite
    values; shape ``(len(quantiles), n_rows, len(ids))``, NaN for a group with no finite value.

    The pixels are sorted by group once (a stable sort of a few runs); each group's block of all
    attributes is then sorted along its rows (non-finite values last), which costs far less than
    sorting every attribute of the whole field by value and by group.
    """
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.r_[ids, ids[-1] + 1], side="left")
    block_values = np.asarray(values)[:, order]
    if not np.issubdtype(block_values.dtype, np.floating):
        block_values = block_values.astype(np.float64)
    block_values[~np.isfinite(block_values)] = np.nan  # sorted last, in its own precision
    q = np.asarray(quantiles, dtype=np.float64)[:, None]
    out = np.full((q.size, block_values.shape[0], ids.size), np.nan)
    for i in range(ids.size):
        block = np.sort(block_values[:, bounds[i] : bounds[i + 1]], axis=1)
        n_finite = np.count_nonzero(~np.isnan(block), axis=1)
        last = np.maximum(n_finite - 1, 0)
        position = q * last  # (n_quantiles, n_rows)
        low = np.floor(position).astype(np.intp)
        high = np.minimum(low + 1, last)
        weight = position - low
        rows = np.arange(block.shape[0])
        below = block[rows, low].astype(np.float64)
        result = below * (1.0 - weight) + block[rows, high].astype(np.float64) * weight
        out[:, :, i] = np.where(n_finite > 0, result, np.nan)
    return out


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def particle_table(
    labels: np.ndarray,
    attributes: Mapping[str, np.ndarray],
    *,
    unusual: np.ndarray | None = None,
) -> list[dict]:
    """Aggregate per-pixel attributes per particle.

    Parameters
    ----------
    labels : ndarray of int, shape (ny, nx)
        Particle labels, 0 = background (from :func:`segment_particles`).
    attributes : mapping of str to ndarray
        Per-pixel attributes, each of shape ``(ny, nx)`` or ``(ny * nx,)``. Non-finite values
        (masked pixels) are left out of the statistics.
    unusual : ndarray of bool, optional
        Pixels flagged unusual (odd values, outlying cluster...), shape like ``labels``.

    Returns
    -------
    list of dict
        One JSON-serialisable dict per particle, in increasing ``id``: ``id``, ``area_px``,
        ``centroid_px`` ``[row, col]``, ``bbox_px`` ``[row0, col0, row1, col1]`` (half-open),
        ``touches_border`` (the particle may be cut by the field of view), for every attribute
        ``<attr>_median`` and ``<attr>_iqr`` (75th minus 25th percentile; ``None`` when the
        particle has no finite value), and ``unusual_fraction`` (0.0 when ``unusual`` is
        omitted).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 2D integer image, got {labels.dtype} {labels.shape}")
    if labels.min(initial=0) < 0:
        raise ValueError("labels must be non-negative (0 = background)")
    flat = labels.ravel()
    inside = np.flatnonzero(flat)  # pixel indices (one pass; gathers are cheaper than masks)
    groups = flat[inside].astype(np.int64)
    ids = np.unique(groups)
    if ids.size == 0:
        return []
    area = np.bincount(groups, minlength=int(ids[-1]) + 1)
    rows, cols = np.divmod(inside, labels.shape[1])
    centroid_row = np.bincount(groups, weights=rows, minlength=area.size)[ids] / area[ids]
    centroid_col = np.bincount(groups, weights=cols, minlength=area.size)[ids] / area[ids]
    slices = ndimage.find_objects(labels)
    if unusual is None:
        unusual_fraction = np.zeros(ids.size)
    else:
        unusual = np.asarray(unusual, dtype=bool)
        if unusual.size != labels.size:
            raise ValueError(f"unusual has shape {unusual.shape}, labels have {labels.shape}")
        counts = np.bincount(groups, weights=unusual.ravel()[inside], minlength=area.size)
        unusual_fraction = counts[ids] / area[ids]
    names = list(attributes)
    columns = []
    for name in names:
        values = np.asarray(attributes[name])
        if values.size != labels.size:
            raise ValueError(
                f"attribute {name!r} has shape {values.shape}, labels have {labels.shape}"
            )
        columns.append(values.ravel()[inside])
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if names:
        median, q25, q75 = _group_quantiles(groups, np.stack(columns), ids, (0.5, 0.25, 0.75))
        for k, name in enumerate(names):
            stats[name] = (median[k], q75[k] - q25[k])
    ny, nx = labels.shape
    table = []
    for i, particle_id in enumerate(ids):
        box = slices[particle_id - 1]
        bbox = [box[0].start, box[1].start, box[0].stop, box[1].stop]
        row = {
            "id": int(particle_id),
            "area_px": int(area[particle_id]),
            "centroid_px": [float(centroid_row[i]), float(centroid_col[i])],
            "bbox_px": [int(v) for v in bbox],
            "touches_border": bool(bbox[0] == 0 or bbox[1] == 0 or bbox[2] == ny or bbox[3] == nx),
        }
        for name, (median, iqr) in stats.items():
            row[f"{name}_median"] = _json_float(median[i])
            row[f"{name}_iqr"] = _json_float(iqr[i])
        row["unusual_fraction"] = float(unusual_fraction[i])
        table.append(row)
    return table
