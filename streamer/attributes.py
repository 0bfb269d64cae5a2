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
release the GIL; BLAS is limited to one thread per worker meanwhile). Each chunk costs a few matrix
products for every linear quantity (one per group of pixels sharing larch's first edge estimate),
a banded product for R^2, and a few passes over the edge and white-line windows; there is no
Python loop over pixels (:mod:`streamer.attribute_kernel`).
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from streamer.attribute_kernel import attributes_of_chunk
from streamer.attribute_plan import plan_attributes
from streamer.normalize import EdgeWindows, check_energies, estimate_e0, plan_normalization
from streamer.provisional import (
    ATTRIBUTE_NAMES,
    NEEDS_NORMALIZATION,
    attribute_requirements,
    attribute_validity,
)

__all__ = ["ATTRIBUTE_NAMES", "AttributeResult", "compute_attributes", "expected_validity"]

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
    #: ``name -> bool``: the value is *early-valid* (:mod:`streamer.provisional`): determined on
    #: the fixed early reference while the post-edge window is still short (attributes that do
    #: not need the edge jump: as ``valid``).
    early_valid: dict[str, bool] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values)


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
    pixels=None,
    edge_jump_only: bool = False,
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
    pixels : array_like of int, optional
        Compute only these pixels (columns of ``mu``, for example the particles of a field and a
        margin around them); the others are NaN and not in ``valid_pixels``. Each computed pixel
        gets the value it would get in a computation of all pixels with the same ``e0_hint``
        (without one, the edge energy is still estimated from all pixels).
    edge_jump_only : bool
        Compute only ``edge_jump`` (and ``e0_deriv``, where it is evaluated), about half the
        work, to segment particles; the other attributes are NaN and not ``valid``, and
        ``valid_pixels`` then only requires finite data and the edge jump.

    Returns
    -------
    AttributeResult
        ``provisional`` is True if a planned energy is missing, or while the post-edge window has
        too few points and the provisional flat post-edge is used (then the attributes that
        depend on the edge jump are not ``valid``, though their provisional values are given;
        ``early_valid`` says which are determined on the fixed early reference).

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
    if pixels is not None:
        pixels = np.asarray(pixels, dtype=np.intp).ravel()
        if pixels.size > 1 and not (pixels[1:] > pixels[:-1]).all():
            pixels = np.unique(pixels)  # ascending, no repeats
        if pixels.size and (pixels[0] < 0 or pixels[-1] >= mu.shape[1]):
            raise ValueError(f"pixels must be column indices of mu (0..{mu.shape[1] - 1})")
    with _blas_single_thread():  # also while building plans: BLAS threads only add overhead here
        return _compute(
            e,
            mu,
            e0_hint,
            references,
            windows,
            planned_energies_ev,
            n_threads,
            chunk,
            min_edge_jump,
            pixels,
            edge_jump_only,
        )


def _compute(
    e, mu, e0_hint, references, windows, planned, n_threads, chunk, min_edge_jump, pixels, only
):
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
    n_sel = n_pix if pixels is None else pixels.size
    bounds = [slice(s, min(s + chunk, n_sel)) for s in range(0, n_sel, chunk)]
    local = threading.local()

    def run(sl: slice) -> dict[str, int]:
        # Each chunk is gathered into this thread's contiguous buffer; the padding keeps its rows
        # off power-of-two strides, which alias in the caches (a 2048 x 2048 cube has them).
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty((e.size, min(chunk, n_sel) + _PAD), dtype=np.float32)
        columns = sl if pixels is None else pixels[sl]
        if mu.dtype == np.float32:
            return attributes_of_chunk(plan, mu, columns, buf, out, edge_jump_only=only)
        # other dtypes: convert this chunk only, compute it, and scatter its results
        src = np.ascontiguousarray(mu[:, columns], dtype=np.float32)
        part = {
            name: np.full(src.shape[1], v.dtype.type(0) if v.dtype == bool else np.nan, v.dtype)
            for name, v in out.items()
        }
        counts = attributes_of_chunk(
            plan, src, slice(0, src.shape[1]), buf, part, edge_jump_only=only
        )
        for name, v in part.items():
            out[name][columns] = v
        return counts

    workers = min(n_threads, len(bounds))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            counts = list(pool.map(run, bounds))
    else:
        counts = [run(sl) for sl in bounds]
    at_edge = {k: sum(c.get(k, 0) for c in counts) for k in counts[0]} if counts else {}
    if only:
        out["_computed"] = ("edge_jump", "e0_deriv")
    return _finish(plan, e, out, names, ref_names, planned, min_edge_jump, at_edge)


def _validity(norm, e0_ev, e, names, ref_names, planned):
    """Which attributes the energies ``e`` determine under the normalisation plan ``norm`` (see
    :func:`_finish`): ``(valid, requirements, provisional, early_valid)``."""
    windows = norm.windows
    requirements = attribute_requirements(e0_ev, windows=windows, references=ref_names)
    valid = attribute_validity(e, requirements, planned_energies_ev=planned)
    missing = 0
    if planned is not None:
        missing = np.setdiff1d(np.round(np.asarray(planned, float), 3), np.round(e, 3)).size
    # the provisional flat post-edge is a placeholder, unless the planned grid has no more
    flat_placeholder = norm.provisional and (planned is None or missing > 0)
    early = dict(valid)
    if flat_placeholder and norm.can_normalize and norm.early_reference_complete:
        early_req = attribute_requirements(e0_ev, windows=windows, references=ref_names, early=True)
        covered = attribute_validity(e, early_req, planned_energies_ev=planned)
        early.update({k: v for k, v in covered.items() if k in NEEDS_NORMALIZATION})
    else:
        early.update(dict.fromkeys(NEEDS_NORMALIZATION, False))
    for name in names:
        if name.startswith("frac_"):
            early[name] = False
    if not norm.can_normalize or flat_placeholder:
        for name in names:
            if name in NEEDS_NORMALIZATION or name.startswith("frac_"):
                valid[name] = False
    return valid, requirements, flat_placeholder or missing > 0, early


def expected_validity(
    energies_ev,
    *,
    e0_ev: float,
    planned_energies_ev=None,
    windows: EdgeWindows | None = None,
    references=None,
    early: bool = False,
) -> dict[str, bool]:
    """``AttributeResult.valid`` (with ``early``: ``early_valid``) of :func:`compute_attributes`
    with ``e0_hint=e0_ev``, without computing any pixel (to decide beforehand what an evaluation
    is worth).

    Examples
    --------
    >>> e = np.arange(7600.0, 7900.0, 1.0)
    >>> expected_validity(e, e0_ev=7722.0)["white_line_height"]
    True
    >>> expected_validity(e[e < 7760.0], e0_ev=7722.0)["white_line_height"]
    False
    >>> expected_validity(e[e < 7760.0], e0_ev=7722.0, early=True)["white_line_height"]
    True
    """
    e = check_energies(energies_ev)
    norm = plan_normalization(e, e0_ev=float(e0_ev), windows=windows)  # no kernel operators
    ref_names = tuple(references or ())
    names = ATTRIBUTE_NAMES + tuple(f"frac_{r}" for r in ref_names)
    valid = _validity(norm, float(e0_ev), e, names, ref_names, planned_energies_ev)
    return valid[3 if early else 0]


def _finish(plan, e, out, names, ref_names, planned, min_edge_jump, at_edge) -> AttributeResult:
    finite = out.pop("_finite")
    valid, requirements, provisional, early = _validity(
        plan.normalization, plan.e0_ev, e, names, ref_names, planned
    )
    computed = out.pop("_computed", None)
    if computed is not None:  # edge_jump_only: the others are not usable
        for name in names:
            valid[name] = valid[name] and name in computed
            early[name] = early[name] and name in computed
    ok = finite.copy()
    if plan.can_normalize:
        with np.errstate(invalid="ignore"):
            ok &= out["edge_jump"] > min_edge_jump
    failures = {}
    for name in names:
        if valid[name] or early[name]:
            bad = ok & ~np.isfinite(out[name])
            failures[name] = int(np.count_nonzero(bad))
            ok &= ~bad
    for name in names:
        out[name][~ok] = np.nan
    if any(failures.values()):
        logger.debug("attributes not determined for some pixels: %s", failures)
    if "white_line_energy" in at_edge:
        at_edge["white_line_height"] = at_edge["white_line_energy"]
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
        early_valid=early,
    )
