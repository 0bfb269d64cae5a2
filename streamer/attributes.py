"""Per-pixel spectroscopic attributes of a whole field of view, vectorised and provisional.

:func:`compute_attributes` takes the cube ``mu`` of shape ``(n_energies, n_pixels)`` (energies
ascending, possibly only the part of the scan that has arrived) and returns, per pixel, float32:

``edge_jump``
    Post-edge minus pre-edge fit at the pixel's edge energy (``e0_deriv``), as larch's
    ``pre_edge`` ``edge_step`` (OD units); see :mod:`streamer.normalize`.
``e0_deriv``
    Maximum of larch ``find_e0``'s smoothed derivative (the same Lorentzian-smoothed
    ``dmu/dE``), refined below the grid step by a parabola through the maximum and its neighbours.
``e0_half``
    Energy where the normalised spectrum crosses 0.5 in the edge window, linearly interpolated.
    The crossing index is the number of window points below one half, which equals the first
    crossing for a monotonic rise and is robust to single noisy points.
``white_line_energy``, ``white_line_height``
    Maximum of the normalised spectrum in the white-line window, refined by the parabola through
    the maximum and its two neighbours (the least biased of the sub-grid estimators we compared
    on the simulator's spectra, with or without noise); height in edge steps (pre-edge 0, edge
    step 1).
``pre_edge_noise``
    Standard deviation of the residual of the pre-edge line fit (``n - 2`` degrees of freedom)
    divided by the edge jump.
``r_squared``
    ``1 - SS_res / SS_tot`` of the normalised spectrum against its Savitzky-Golay smoothed version
    (7 points, quadratic, on the actual non-uniform grid) over all energies: 1 for a smooth
    spectrum, lower for noise and glitches. The pre-edge line and the edge jump cancel, so no
    normalised spectrum is ever formed.
``frac_<name>``
    Non-negative weights of a linear-combination fit of the normalised spectrum to reference
    spectra over the ``lcf`` window (not forced to sum to one; see :mod:`streamer.lcf`).

Masked pixels (any non-finite value in ``mu``, an edge jump not above ``min_edge_jump``, or an
attribute whose energies are present that still came out non-finite) get NaN in every attribute
and ``False`` in ``valid_pixels``. A feature outside its search window (no maximum inside the
white-line window, say) is not masked: the value is the window limit, an extreme that later
stages see as unusual, and ``at_window_edge`` counts such pixels per attribute.

Speed: pixels are processed in chunks that fit in cache, on ``n_threads`` threads (numpy and BLAS
release the GIL; BLAS is limited to one thread per worker meanwhile). Each chunk costs one matrix
product for every linear quantity, a banded product for R^2, and a few passes over the edge and
white-line windows; there is no Python loop over pixels.
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from streamer.attribute_plan import AttributePlan, plan_attributes
from streamer.edge_operators import parabola_vertex, rows_argmax
from streamer.lcf import nnls_all_subsets
from streamer.normalize import EdgeWindows, check_energies, estimate_e0
from streamer.provisional import (
    ATTRIBUTE_NAMES,
    NEEDS_NORMALIZATION,
    attribute_requirements,
    attribute_validity,
)

__all__ = ["ATTRIBUTE_NAMES", "AttributeResult", "compute_attributes"]

logger = logging.getLogger(__name__)

#: Default number of pixels per chunk (4096 x 106 float32 is 1.7 MB per chunk).
DEFAULT_CHUNK = 4096
#: Padding (floats) of the per-thread chunk buffer rows.
_PAD = 16

_blas_controller = None


def _blas_single_thread():
    """Context limiting BLAS to one thread (the controller is built once: it scans libraries)."""
    global _blas_controller
    try:
        if _blas_controller is None:
            from threadpoolctl import ThreadpoolController

            _blas_controller = ThreadpoolController()
        return _blas_controller.limit(limits=1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return nullcontext()


@dataclass
class AttributeResult:
    """Per-pixel attributes of one field of view (see :func:`compute_attributes`)."""

    #: ``name -> (n_pixels,)`` float32; NaN where ``valid_pixels`` is False.
    values: dict[str, np.ndarray]
    #: ``name -> bool``: the energies the attribute needs are present (its value is usable).
    valid: dict[str, bool]
    #: True while the result may still change as energies arrive (see ``compute_attributes``).
    provisional: bool
    #: Pixels whose attributes are all determined, shape (n_pixels,).
    valid_pixels: np.ndarray
    #: Nominal edge energy (eV) the windows were placed around; NaN if no edge was found.
    e0_ev: float
    #: Energies used (eV).
    energies_ev: np.ndarray
    #: ``name -> (low, high)`` energies each attribute needs (eV).
    requirements: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: ``name -> count`` of pixels with finite data where an attribute whose energies are present
    #: could not be determined (such pixels are masked).
    failures: dict[str, int] = field(default_factory=dict)
    #: ``name -> count`` of pixels whose feature lies on the edge of its search window (no
    #: maximum, or no half-jump crossing, inside it): the value is then the window limit.
    at_window_edge: dict[str, int] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values)


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
    return x0 + frac * (xh[i] - x0), (below == 0) | (below == n)


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


def _sorted_projection(plan: AttributePlan, src: np.ndarray, mu: np.ndarray):
    """Copy ``src`` into ``mu`` grouped by larch's first edge estimate, and project it.

    Returns the stacked projection ``(n_rows, m)`` of the reordered pixels and the order
    (``mu[:, j]`` is ``src[:, order[j]]``), or ``None`` for the order when there are no
    derivative rows (then ``mu`` is a plain copy).
    """
    if plan.deriv is None:
        np.copyto(mu, src, casting="same_kind")
        return plan.static_rows @ mu, None
    dr = plan.deriv_rows
    raw = src[dr.start + 1 : dr.stop + 1] - src[dr.start - 1 : dr.stop - 1]
    raw *= plan.deriv_inv_span
    first, _ = rows_argmax(raw)
    keys = first.astype(np.uint8) if raw.shape[0] < 256 else first
    order = np.argsort(keys, kind="stable")  # a radix sort for small integer keys
    counts = np.bincount(first, minlength=raw.shape[0])
    np.take(src.astype(np.float32, copy=False), order, axis=1, out=mu, mode="clip")
    lin = None
    start = 0
    for k in np.flatnonzero(counts):
        stop = start + int(counts[k])
        proj = plan.projection(int(k))
        if lin is None:
            lin = np.empty((proj.shape[0], mu.shape[1]), dtype=np.float32)
        np.matmul(proj, mu[:, start:stop], out=lin[:, start:stop])
        start = stop
    return lin, order


def _kernel(plan: AttributePlan, src: np.ndarray, buf: np.ndarray, out: dict, sl: slice):
    """All attributes for the pixels ``sl`` (columns ``src`` of the cube), written into ``out``.

    ``buf`` is this thread's scratch of shape ``(n_energies, >= m)``. Returns ``name -> count``
    of finite pixels whose feature lies on the edge of its window.
    """
    with np.errstate(all="ignore"):
        m = src.shape[1]
        mu = buf[:, :m]
        cols = np.arange(m)
        lin, order = _sorted_projection(plan, src, mu)
        values = {}
        # the sum row weighs every energy: any NaN or inf in a spectrum makes it non-finite
        finite = np.isfinite(lin[plan.sum_row])
        values["_finite"] = finite
        hits = {}
        a, b = lin[0], lin[1]
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
        for name, v in values.items():
            if order is None:
                out[name][sl] = v
            else:
                out[name][sl][order] = v
        return {k: int(np.count_nonzero(v & finite)) for k, v in hits.items()}


def compute_attributes(
    energies_ev,
    mu,
    *,
    e0_hint: float | None = None,
    references=None,
    windows: EdgeWindows | None = None,
    planned_energies_ev=None,
    n_threads: int = 2,
    chunk: int = DEFAULT_CHUNK,
    min_edge_jump: float = 1e-6,
) -> AttributeResult:
    """Attributes of every pixel's spectrum; provisional while energies are missing.

    Parameters
    ----------
    energies_ev : array_like, shape (n_energies,)
        Strictly ascending energies present (eV).
    mu : array_like, shape (n_energies, n_pixels)
        Absorbance per pixel (float32 preferred; other dtypes are converted chunk by chunk).
    e0_hint : float, optional
        Nominal edge energy of the field of view (eV); estimated from the mean spectrum when
        omitted (:func:`streamer.normalize.estimate_e0`).
    references : mapping, optional
        ``name -> (energies_ev, normalised_mu)`` for ``frac_<name>`` (at most 6).
    windows : EdgeWindows, optional
        Analysis windows relative to the nominal edge.
    planned_energies_ev : array_like, optional
        The whole planned grid: requirements are clipped to it, and the result is provisional
        until every planned energy is present.
    n_threads : int
        Worker threads over chunks of pixels.
    chunk : int
        Pixels per chunk.
    min_edge_jump : float
        Pixels with a smaller (or negative) edge jump are masked.

    Returns
    -------
    AttributeResult
        ``provisional`` is True if a planned energy is missing, or while the post-edge window has
        too few points and the provisional flat post-edge is used (then the attributes that
        depend on the edge jump are not ``valid``, though their provisional values are given).

    Examples
    --------
    >>> e = np.arange(7600.0, 7900.0, 1.0)
    >>> mu = (0.2 + 0.5 * (0.5 + np.arctan((e - 7722.0) / 2) / np.pi))[:, None].repeat(3, 1)
    >>> res = compute_attributes(e, mu, e0_hint=7722.0)
    >>> round(float(res.values["e0_half"][0]), 1), res.valid["e0_half"], res.provisional
    (7722.0, True, False)
    """
    e = check_energies(energies_ev)
    mu = np.asarray(mu)
    if mu.ndim != 2 or mu.shape[0] != e.size:
        raise ValueError(f"mu must have shape ({e.size}, n_pixels), got {mu.shape}")
    if n_threads < 1 or chunk < 1:
        raise ValueError("n_threads and chunk must be positive")
    n_pix = mu.shape[1]
    ref_names = tuple(references or ())
    names = ATTRIBUTE_NAMES + tuple(f"frac_{r}" for r in ref_names)
    out = {name: np.full(n_pix, np.nan, dtype=np.float32) for name in names}
    e0 = e0_hint if e0_hint is not None else (estimate_e0(e, mu) if n_pix else None)
    if e0 is None or not math.isfinite(e0):
        logger.debug("no edge energy yet (%d energies): attributes not computed", e.size)
        return AttributeResult(
            values=out,
            valid=dict.fromkeys(names, False),
            provisional=True,
            valid_pixels=np.zeros(n_pix, dtype=bool),
            e0_ev=math.nan,
            energies_ev=e,
        )
    plan = plan_attributes(e, e0_ev=float(e0), windows=windows, references=references)
    out["_finite"] = np.zeros(n_pix, dtype=bool)
    if not np.issubdtype(mu.dtype, np.floating):
        mu = mu.astype(np.float32)
    bounds = [slice(s, min(s + chunk, n_pix)) for s in range(0, n_pix, chunk)]
    local = threading.local()

    def run(sl: slice) -> dict[str, int]:
        # Each chunk is copied into this thread's contiguous buffer; the padding keeps its rows
        # off power-of-two strides, which alias in the caches (a 2048 x 2048 cube has them).
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty((e.size, min(chunk, n_pix) + _PAD), dtype=np.float32)
        return _kernel(plan, mu[:, sl], buf, out, sl)

    workers = min(n_threads, len(bounds))
    with _blas_single_thread():
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                counts = list(pool.map(run, bounds))
        else:
            counts = [run(sl) for sl in bounds]
    at_edge = {k: sum(c.get(k, 0) for c in counts) for k in counts[0]} if counts else {}
    return _finish(plan, e, out, names, ref_names, planned_energies_ev, min_edge_jump, at_edge)


def _finish(plan, e, out, names, ref_names, planned, min_edge_jump, at_edge) -> AttributeResult:
    finite = out.pop("_finite")
    windows = plan.normalization.windows
    requirements = attribute_requirements(plan.e0_ev, windows=windows, references=ref_names)
    valid = attribute_validity(e, requirements, planned_energies_ev=planned)
    missing = 0
    if planned is not None:
        missing = np.setdiff1d(np.round(np.asarray(planned, float), 3), np.round(e, 3)).size
    # the provisional flat post-edge is a placeholder, unless the planned grid has no more
    flat_placeholder = plan.normalization.provisional and (planned is None or missing > 0)
    if not plan.can_normalize or flat_placeholder:
        for name in names:
            if name in NEEDS_NORMALIZATION or name.startswith("frac_"):
                valid[name] = False
    ok = finite.copy()
    if plan.can_normalize:
        with np.errstate(invalid="ignore"):
            ok &= out["edge_jump"] > min_edge_jump
    failures = {}
    for name in names:
        if valid[name]:
            bad = ok & ~np.isfinite(out[name])
            failures[name] = int(np.count_nonzero(bad))
            ok &= ~bad
    for name in names:
        out[name][~ok] = np.nan
    if any(failures.values()):
        logger.debug("attributes not determined for some pixels: %s", failures)
    if "white_line_energy" in at_edge:
        at_edge["white_line_height"] = at_edge["white_line_energy"]
    provisional = flat_placeholder or missing > 0
    return AttributeResult(
        values=out,
        valid=valid,
        provisional=bool(provisional),
        valid_pixels=ok,
        e0_ev=plan.e0_ev,
        energies_ev=e,
        requirements=requirements,
        failures=failures,
        at_window_edge=at_edge,
    )
