"""Everything the per-pixel attribute kernel precomputes for one grid and nominal edge energy.

:func:`plan_attributes` turns an energy grid, a nominal edge energy and the analysis windows into
float32 matrices and lookup tables (cached per grid): one stacked projection whose product with
``mu`` gives every linear quantity at once (pre-edge line, post-edge polynomial, sums for the R^2
denominator, projections onto references, and larch's smoothed derivative across the edge), the
rows of the half-jump and white-line windows, the residual operator of the pre-edge line and the
banded blocks of the Savitzky-Golay residual used for R^2. :mod:`streamer.attributes` applies it
chunk by chunk.

larch's ``find_e0`` smooths with a width that depends on its first, unsmoothed estimate ``e1``
(the maximum of the raw derivative), and the result is sensitive to it (the uniform grid it
interpolates onto shifts with the width). To agree with larch pixel by pixel, the derivative rows
of the stacked projection are built per ``e1`` grid point (:meth:`AttributePlan.projection`,
cached), and the kernel groups pixels by their ``e1``.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from streamer.edge_operators import larch_smoothed_derivative, savgol_smoothing
from streamer.lcf import ReferenceSet, reference_set
from streamer.normalize import EdgeWindows, NormalizationPlan, check_energies, plan_normalization

__all__ = ["AttributePlan", "plan_attributes"]

logger = logging.getLogger(__name__)

#: Savitzky-Golay smoother of the R^2 model: half width (points) and degree.
SAVGOL_HALF_WIDTH = 3
SAVGOL_DEGREE = 2
#: Rows per block of the banded R^2 residual product.
_BLOCK_ROWS = 8  # small blocks: OpenBLAS is fastest here on 8 x 14 pieces


def _f32(a: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(a, dtype=np.float32)
    out.setflags(write=False)
    return out


def _rows_in(x: np.ndarray, lo: float, hi: float, within: slice | None = None) -> slice:
    start = int(np.searchsorted(x, lo, "left"))
    stop = int(np.searchsorted(x, hi, "right"))
    if within is not None:
        start, stop = max(start, within.start), min(stop, within.stop)
    return slice(start, max(start, stop))


@functools.lru_cache(maxsize=512)
def _derivative_rows(key: bytes, e1_ev: float, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of larch's smoothed derivative for the first estimate ``e1_ev``."""
    e = np.frombuffer(key, dtype=np.float64)
    operator, _ = larch_smoothed_derivative(e, e0_ev=e1_ev, rows=np.arange(start, stop))
    return operator


@dataclass(frozen=True, eq=False)
class AttributePlan:
    """Precomputed operators of the attribute kernel (see the module docstring).

    Row indices and slices named ``*_coefs``/``*_row``/``lcf``/``deriv`` index the stacked
    projection; ``*_rows`` slices index the energy grid.
    """

    normalization: NormalizationPlan
    e0_ev: float
    energies_ev: np.ndarray
    #: The energy-independent part of the stacked projection, shape (n_static, n_energies).
    static_rows: np.ndarray
    pre_coefs: slice  # (a, b) of the pre-edge line
    post_coefs: slice  # post-edge polynomial, increasing powers
    sum_row: int  # sum of mu
    xsum_row: int  # sum of (x - mean x) mu
    lcf: slice | None  # projections onto the references (not normalised)
    deriv: slice | None  # smoothed derivative at deriv_x (after the static rows)
    #: Grid rows of the edge-energy search (interior points only) and their x = E - e0.
    deriv_rows: slice
    deriv_x: np.ndarray
    #: 1 / (E[i+1] - E[i-1]) for the raw derivative (larch's first estimate) on deriv_rows.
    deriv_inv_span: np.ndarray
    half_rows: slice
    half_x: np.ndarray
    wl_rows: slice
    wl_x: np.ndarray
    pre_rows: slice
    pre_residual: np.ndarray | None  # (I - hat) of the pre-edge line, (n_pre, n_pre)
    #: Banded blocks of the Savitzky-Golay residual: (output rows, input rows, matrix).
    savgol_blocks: tuple[tuple[slice, slice, np.ndarray], ...]
    ref_row: int  # row subtracted before sums of squares (R^2 denominator)
    sum_xc2: float
    references: ReferenceSet | None
    #: Per reference: sum over the fit rows, and sum of x times it (to subtract the pre-edge line).
    ref_sums: np.ndarray | None
    ref_xsums: np.ndarray | None
    _projections: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def can_normalize(self) -> bool:
        return self.normalization.can_normalize

    @property
    def n_energies(self) -> int:
        return self.energies_ev.size

    def build_projections(self) -> AttributePlan:
        """Build every stacked projection now and return the plan.

        Each is otherwise built the first time a pixel needs it (a few ms per edge-estimate
        row, tens of ms for a grid), which a live evaluation can do ahead of time for the grid
        its next evaluation will have.
        """
        for k1 in range(max(self.deriv_rows.stop - self.deriv_rows.start, 1)):
            self.projection(k1)
        return self

    def projection(self, k1: int) -> np.ndarray:
        """The stacked projection for pixels whose raw derivative peaks at ``deriv_rows[k1]``.

        float32, shape (n_static + n_deriv, n_energies); built once per ``k1`` (thread-safe).
        """
        proj = self._projections.get(k1)
        if proj is None:
            with self._lock:
                proj = self._projections.get(k1)
                if proj is None:
                    if self.deriv is None:
                        proj = self.static_rows
                    else:
                        e1 = float(self.energies_ev[self.deriv_rows.start + k1])
                        rows = _derivative_rows(
                            self.energies_ev.tobytes(),
                            e1,
                            self.deriv_rows.start,
                            self.deriv_rows.stop,
                        )
                        proj = _f32(np.concatenate([self.static_rows, rows], axis=0))
                    self._projections[k1] = proj
        return proj


@functools.lru_cache(maxsize=32)
def _cached_core(key: bytes, e0_ev: float, windows: EdgeWindows) -> dict:
    e = np.frombuffer(key, dtype=np.float64)
    n = e.size
    x = e - e0_ev
    norm = plan_normalization(e, e0_ev=e0_ev, windows=windows)
    xc = x - x.mean()
    static = [norm.pre_rows, norm.post_rows, np.ones((1, n)), xc[None, :]]
    deriv_rows = _rows_in(x, *windows.edge, within=slice(1, max(1, n - 1)))
    if deriv_rows.stop - deriv_rows.start < 3:
        deriv_rows = slice(0, 0)
    dr = deriv_rows
    inv_span = (
        1.0 / (e[dr.start + 1 : dr.stop + 1] - e[dr.start - 1 : dr.stop - 1]) if dr.stop else []
    )
    pre = norm.pre
    n_pre = pre.stop - pre.start
    pre_residual = None
    if n_pre >= 3:
        v = np.vander(x[pre] / 100.0, 2, increasing=True)
        pre_residual = np.eye(n_pre) - v @ np.linalg.pinv(v)
    savgol_blocks = []
    if n >= 2 * SAVGOL_HALF_WIDTH + 1:
        resid = np.eye(n) - savgol_smoothing(e, half_width=SAVGOL_HALF_WIDTH, degree=SAVGOL_DEGREE)
        for r0 in range(0, n, _BLOCK_ROWS):
            out_rows = slice(r0, min(n, r0 + _BLOCK_ROWS))
            cols = np.flatnonzero(np.any(resid[out_rows] != 0, axis=0))
            in_rows = slice(int(cols.min()), int(cols.max()) + 1)
            savgol_blocks.append((out_rows, in_rows, _f32(resid[out_rows, in_rows])))
    half_rows = _rows_in(x, *windows.edge)
    wl_rows = _rows_in(x, *windows.white_line)
    return {
        "normalization": norm,
        "static": static,
        "deriv_rows": deriv_rows,
        "deriv_x": _f32(x[deriv_rows]),
        "deriv_inv_span": _f32(np.asarray(inv_span).reshape(-1, 1)),
        "half_rows": half_rows,
        "half_x": _f32(x[half_rows]),
        "wl_rows": wl_rows,
        "wl_x": _f32(x[wl_rows]),
        "pre_residual": None if pre_residual is None else _f32(pre_residual),
        "savgol_blocks": tuple(savgol_blocks),
        "ref_row": int(np.abs(x).argmin()),
        "sum_xc2": float(np.sum(xc * xc)),
    }


def plan_attributes(
    energies_ev, *, e0_ev: float, windows: EdgeWindows | None = None, references=None
) -> AttributePlan:
    """Build (or fetch from the cache) the attribute kernel's operators.

    Parameters
    ----------
    energies_ev : array_like
        Strictly ascending energies present (eV).
    e0_ev : float
        Nominal edge energy of the field of view.
    windows : EdgeWindows, optional
    references : mapping, optional
        ``name -> (energies_ev, normalised_mu)`` for the linear-combination fit.
    """
    e = check_energies(energies_ev)
    windows = windows or EdgeWindows()
    if not references:
        return _cached_plan(e.tobytes(), float(e0_ev), windows)
    return _build_plan(e, float(e0_ev), windows, references)


@functools.lru_cache(maxsize=32)
def _cached_plan(key: bytes, e0_ev: float, windows: EdgeWindows) -> AttributePlan:
    return _build_plan(np.frombuffer(key, dtype=np.float64), e0_ev, windows, None)


def _renormalized(references, e0_ev: float, windows: EdgeWindows) -> dict:
    """References normalised with the same windows as the data, where their grid allows it.

    The fractions are only meaningful if references and pixels share one normalisation; a
    reference that does not cover the pre- and post-edge windows is used as given.
    """
    out = {}
    for name, (energies, mu) in references.items():
        energies = np.asarray(energies, dtype=np.float64)
        mu = np.asarray(mu, dtype=np.float64)
        order = np.argsort(energies)
        energies, mu = energies[order], mu[order]
        try:
            plan = plan_normalization(energies, e0_ev=e0_ev, windows=windows)
        except ValueError:
            plan = None
        if plan is None or not plan.can_normalize or plan.provisional:
            logger.warning(
                "reference %r does not cover the normalisation windows: used as given", name
            )
            out[name] = (energies, mu)
            continue
        pre = plan.pre_rows @ mu
        jump = (plan.post_rows @ mu)[0]
        out[name] = (energies, (mu - pre[0] - pre[1] * plan.x) / jump)
    return out


def _build_plan(e: np.ndarray, e0_ev: float, windows: EdgeWindows, references) -> AttributePlan:
    core = _cached_core(e.tobytes(), e0_ev, windows)
    blocks = list(core["static"])
    refs = ref_sums = ref_xsums = None
    lcf = None
    n_static = sum(b.shape[0] for b in blocks)
    if references:
        x = e - e0_ev
        rows = _rows_in(x, *windows.lcf)
        refs = reference_set(e, _renormalized(references, e0_ev, windows), rows=rows)
        lin = np.zeros((len(refs.names), e.size))
        lin[:, rows] = refs.spectra
        blocks.append(lin)
        lcf = slice(n_static, n_static + len(refs.names))
        n_static += len(refs.names)
        ref_sums = _f32(refs.spectra.sum(axis=1))
        ref_xsums = _f32(refs.spectra @ x[rows])
    n_post = core["normalization"].post_rows.shape[0]
    n_deriv = core["deriv_rows"].stop - core["deriv_rows"].start
    return AttributePlan(
        normalization=core["normalization"],
        e0_ev=e0_ev,
        energies_ev=e,
        static_rows=_f32(np.concatenate(blocks, axis=0)),
        pre_coefs=slice(0, 2),
        post_coefs=slice(2, 2 + n_post),
        sum_row=2 + n_post,
        xsum_row=3 + n_post,
        lcf=lcf,
        deriv=slice(n_static, n_static + n_deriv) if n_deriv else None,
        deriv_rows=core["deriv_rows"],
        deriv_x=core["deriv_x"],
        deriv_inv_span=core["deriv_inv_span"],
        half_rows=core["half_rows"],
        half_x=core["half_x"],
        wl_rows=core["wl_rows"],
        wl_x=core["wl_x"],
        pre_rows=core["normalization"].pre,
        pre_residual=core["pre_residual"],
        savgol_blocks=core["savgol_blocks"],
        ref_row=core["ref_row"],
        sum_xc2=core["sum_xc2"],
        references=refs,
        ref_sums=ref_sums,
        ref_xsums=ref_xsums,
    )
