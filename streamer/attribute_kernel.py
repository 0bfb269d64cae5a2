"""The per-chunk kernel of :func:`streamer.attributes.compute_attributes`.

:func:`attributes_of_chunk` computes every attribute for a block of pixels (columns of the cube)
with the operators of an :class:`~streamer.attribute_plan.AttributePlan`:

1. the raw derivative across the edge gives larch's first estimate ``e1`` per pixel; pixels are
   copied into a contiguous, padded scratch buffer grouped by it (a radix sort of small keys);
2. one matrix product per group gives every linear quantity (pre-edge line, post-edge polynomial,
   sums, reference projections, and the smoothed derivative with that group's larch smoothing);
3. peaks (edge energy, white line) are found with row-wise argmax and a parabola through the
   maximum and its neighbours, the half-jump crossing by counting points below half the jump,
   R^2 from a banded Savitzky-Golay residual;
4. results are scattered back into the caller's arrays in the original pixel order.

The pixels are a slice of the cube's columns or any ascending set of them (only the particles of
a field, say): either way they are gathered straight from the cube into the scratch buffer.
"""

from __future__ import annotations

import numpy as np

from streamer.attribute_plan import AttributePlan
from streamer.edge_operators import parabola_vertex, rows_argmax
from streamer.lcf import nnls_all_subsets

__all__ = ["attributes_of_chunk"]


def _gather(rows: np.ndarray, index: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows[index[j], j]`` for a C-contiguous ``(n_rows, m)`` array."""
    return np.take(rows.reshape(-1), index * rows.shape[1] + cols)


def _peak(x: np.ndarray, rows: np.ndarray, cols: np.ndarray):
    """Sub-grid maximum of each column of ``rows`` (sampled at ``x``).

    Returns the vertex position and value, and whether the maximum lies on the first or last
    row (then the grid point itself is returned).
    """
    k, best = rows_argmax(rows)
    n = rows.shape[0]
    kc = np.clip(k, 1, n - 2)
    xv, top = parabola_vertex(
        x[kc - 1],
        x[kc],
        x[kc + 1],
        _gather(rows, kc - 1, cols),
        _gather(rows, kc, cols),
        _gather(rows, kc + 1, cols),
    )
    edge = (k == 0) | (k == n - 1)
    return np.where(edge, x[k], xv), np.where(edge, best, top), edge


def _half_crossing(plan, mu, a, b, jump, cols):
    """Crossing of half the edge jump in the edge window, and whether it is outside the window."""
    rows = mu[plan.half_rows]
    n = rows.shape[0]
    xh = plan.half_x
    g = rows - (b * xh[:, None] + (a + np.float32(0.5) * jump))
    below = (g < 0).view(np.uint8).sum(axis=0, dtype=np.uint8 if n < 256 else np.int32)
    below = below.astype(np.intp)
    i = np.clip(below, 1, n - 1)
    g0, g1 = _gather(g, i - 1, cols), _gather(g, i, cols)
    frac = np.clip(-g0 / (g1 - g0), 0, 1)
    frac = np.where(below == 0, 0, np.where(below == n, 1, frac))
    x0 = xh[i - 1]
    known = np.isfinite(jump)  # no crossing without an edge jump (nothing past the edge yet)
    x_cross = np.where(known, x0 + frac * (xh[i] - x0), np.float32(np.nan))
    return x_cross, known & ((below == 0) | (below == n))


def _r_squared(plan: AttributePlan, mu, lin, b) -> np.ndarray:
    scratch = np.empty_like(mu)
    for out_rows, in_rows, op in plan.savgol_blocks:
        np.matmul(op, mu[in_rows], out=scratch[out_rows])
    ss_res = np.einsum("ij,ij->j", scratch, scratch)
    ref = mu[plan.ref_row]
    np.subtract(mu, ref, out=scratch)
    ss_dev = np.einsum("ij,ij->j", scratch, scratch)
    n = plan.n_energies
    sum_d = lin[plan.sum_row] - n * ref
    ss_tot = ss_dev - 2 * b * lin[plan.xsum_row] + b * b * np.float32(plan.sum_xc2)
    ss_tot -= sum_d * sum_d / np.float32(n)
    return 1 - ss_res / ss_tot


def _columns(src: np.ndarray, pixels: slice | np.ndarray, rows: slice | None = None) -> np.ndarray:
    """Rows ``rows`` (all when ``None``) of the columns ``pixels`` of ``src``."""
    block = src if rows is None else src[rows]
    return block[:, pixels]


def _sorted_projection(plan: AttributePlan, src: np.ndarray, pixels, mu: np.ndarray):
    """Copy columns ``pixels`` of ``src`` into ``mu`` grouped by larch's first edge estimate, and
    project them.

    ``pixels`` is a slice or an ascending array of column indices. Returns the stacked projection
    ``(n_rows, m)`` of the reordered pixels and their column indices in ``src`` (``mu[:, j]`` is
    ``src[:, where[j]]``).
    """
    where = (
        np.arange(pixels.start, pixels.stop) if isinstance(pixels, slice) else np.asarray(pixels)
    )
    if plan.deriv is None:
        np.take(src, where, axis=1, out=mu, mode="clip")
        return plan.static_rows @ mu, where
    dr = plan.deriv_rows
    above = _columns(src, pixels, slice(dr.start + 1, dr.stop + 1))
    raw = above - _columns(src, pixels, slice(dr.start - 1, dr.stop - 1))
    raw *= plan.deriv_inv_span
    first, _ = rows_argmax(raw)
    keys = first.astype(np.uint8) if raw.shape[0] < 256 else first
    order = np.argsort(keys, kind="stable")  # a radix sort for small integer keys
    counts = np.bincount(first, minlength=raw.shape[0])
    where = where[order]
    # one gather straight from the cube: no intermediate copy of the chunk
    np.take(src, where, axis=1, out=mu, mode="clip")
    lin = None
    start = 0
    for k in np.flatnonzero(counts):
        stop = start + int(counts[k])
        proj = plan.projection(int(k))
        if lin is None:
            lin = np.empty((proj.shape[0], mu.shape[1]), dtype=np.float32)
        np.matmul(proj, mu[:, start:stop], out=lin[:, start:stop])
        start = stop
    return lin, where


def _features(plan: AttributePlan, mu, lin, jump, cols, values: dict, hits: dict) -> None:
    """Every attribute besides the edge jump and ``e0_deriv``, into ``values`` and ``hits``."""
    a, b = lin[0], lin[1]
    if plan.half_rows.stop - plan.half_rows.start >= 2:
        x_half, hits["e0_half"] = _half_crossing(plan, mu, a, b, jump, cols)
        values["e0_half"] = plan.e0_ev + x_half
    if plan.wl_x.size >= 3:
        y = mu[plan.wl_rows] - b * plan.wl_x[:, None]
        x_wl, top, hits["white_line_energy"] = _peak(plan.wl_x, y, cols)
        values["white_line_energy"] = plan.e0_ev + x_wl
        values["white_line_height"] = (top - a) / jump
    if plan.pre_residual is not None:
        r = plan.pre_residual @ mu[plan.pre_rows]
        dof = np.float32(r.shape[0] - 2)
        values["pre_edge_noise"] = np.sqrt(np.einsum("ij,ij->j", r, r) / dof) / jump
    if plan.savgol_blocks:
        values["r_squared"] = _r_squared(plan, mu, lin, b)
    if plan.references is not None:
        proj = lin[plan.lcf] - plan.ref_sums[:, None] * a - plan.ref_xsums[:, None] * b
        weights = nnls_all_subsets(plan.references, proj / jump)
        for name, w in zip(plan.references.names, weights, strict=True):
            values[f"frac_{name}"] = w


def attributes_of_chunk(
    plan: AttributePlan,
    cube: np.ndarray,
    pixels: slice | np.ndarray,
    buf: np.ndarray,
    out: dict,
    *,
    edge_jump_only: bool = False,
) -> dict[str, int]:
    """All attributes for the pixel columns ``pixels`` of ``cube``, written into ``out``.

    ``cube`` is float32 ``(n_energies, n_pixels)``; ``pixels`` a slice or an ascending array of
    column indices (``m`` of them); ``buf`` is this thread's scratch of shape
    ``(n_energies, >= m)`` float32; ``out`` maps names (and ``"_finite"``) to whole-field
    arrays. ``edge_jump_only`` stops after the edge jump (and ``e0_deriv``). Returns
    ``name -> count`` of finite pixels whose feature lies on the edge of its window.
    """
    with np.errstate(all="ignore"):
        m = len(range(cube.shape[1])[pixels]) if isinstance(pixels, slice) else len(pixels)
        mu = buf[:, :m]
        cols = np.arange(m)
        lin, where = _sorted_projection(plan, cube, pixels, mu)
        values = {}
        # the sum row weighs every energy: any NaN or inf in a spectrum makes it non-finite
        finite = np.isfinite(lin[plan.sum_row])
        values["_finite"] = finite
        hits = {}
        x_edge = np.zeros(m, dtype=np.float32)
        if plan.deriv is not None:
            x_edge, _, hits["e0_deriv"] = _peak(plan.deriv_x, lin[plan.deriv], cols)
            values["e0_deriv"] = plan.e0_ev + x_edge
        post = lin[plan.post_coefs]
        jump = post[-1].copy()
        for c in post[-2::-1]:
            jump *= x_edge
            jump += c
        values["edge_jump"] = jump
        if not edge_jump_only:
            _features(plan, mu, lin, jump, cols, values, hits)
        for name, v in values.items():
            out[name][where] = v
        return {k: int(np.count_nonzero(v & finite)) for k, v in hits.items()}
