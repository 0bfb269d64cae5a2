"""Everything the per-pixel attribute kernel precomputes for one grid and nominal edge energy.

:func:`plan_attributes` turns an energy grid, a nominal edge energy and the analysis windows into
float32 matrices and lookup tables (cached per grid): one stacked projection whose product with
``mu`` gives every linear quantity at once (pre-edge line, post-edge polynomial, the larch
smoothed derivative across the edge, sums for the R^2 denominator, projections onto references),
the rows of the half-jump and white-line windows, the residual operator of the pre-edge line and
the banded blocks of the Savitzky-Golay residual used for R^2. :mod:`streamer.attributes` applies
it chunk by chunk.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from streamer.edge_operators import (
    larch_smoothed_derivative,
    savgol_smoothing,
)
from streamer.lcf import ReferenceSet, reference_set
from streamer.normalize import EdgeWindows, NormalizationPlan, check_energies, plan_normalization

__all__ = ["AttributePlan", "plan_attributes"]

#: Savitzky-Golay smoother of the R^2 model: half width (points) and degree.
SAVGOL_HALF_WIDTH = 3
SAVGOL_DEGREE = 2
#: Rows per block of the banded R^2 residual product.
_BLOCK_ROWS = 16


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


@dataclass(frozen=True, eq=False)
class AttributePlan:
    """Precomputed operators of the attribute kernel (see the module docstring).

    Row slices index ``lin_rows``; ``*_rows`` slices index the energy grid.
    """

    normalization: NormalizationPlan
    e0_ev: float
    n_energies: int
    #: Stacked projection, shape (n_linear, n_energies).
    lin_rows: np.ndarray
    pre_coefs: slice  # (a, b) of the pre-edge line
    post_coefs: slice  # post-edge polynomial, increasing powers
    sum_row: int  # sum of mu
    xsum_row: int  # sum of (x - mean x) mu
    deriv: slice | None  # smoothed derivative at deriv_x
    lcf: slice | None  # projections onto the references (not normalised)
    deriv_x: np.ndarray
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

    @property
    def can_normalize(self) -> bool:
        return self.normalization.can_normalize


@functools.lru_cache(maxsize=32)
def _cached_core(key: bytes, e0_ev: float, windows: EdgeWindows) -> dict:
    e = np.frombuffer(key, dtype=np.float64)
    n = e.size
    x = e - e0_ev
    norm = plan_normalization(e, e0_ev=e0_ev, windows=windows)
    blocks: list[np.ndarray] = [norm.pre_rows, norm.post_rows]
    xc = x - x.mean()
    blocks.append(np.ones((1, n)))
    blocks.append(xc[None, :])
    deriv_x = np.zeros(0)
    if n >= 4:
        operator, window = larch_smoothed_derivative(e, e0_ev=e0_ev)
        rows = _rows_in(x, *windows.edge, within=window)
        local = slice(rows.start - window.start, rows.stop - window.start)
        if rows.stop - rows.start >= 3:
            blocks.append(operator[local])
            deriv_x = x[rows]
    half_rows = _rows_in(x, *windows.edge)
    wl_rows = _rows_in(x, *windows.white_line)
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
    return {
        "normalization": norm,
        "blocks": blocks,
        "deriv_x": _f32(deriv_x),
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
    core = _cached_core(e.tobytes(), float(e0_ev), windows)
    blocks = list(core["blocks"])
    sizes = [b.shape[0] for b in blocks]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    has_deriv = core["deriv_x"].size > 0
    refs = ref_sums = ref_xsums = None
    lcf = None
    if references:
        x = e - e0_ev
        rows = _rows_in(x, *windows.lcf)
        refs = reference_set(e, references, rows=rows)
        lin = np.zeros((len(refs.names), e.size))
        lin[:, rows] = refs.spectra
        start = int(offsets[-1])
        blocks.append(lin)
        lcf = slice(start, start + len(refs.names))
        ref_sums = _f32(refs.spectra.sum(axis=1))
        ref_xsums = _f32(refs.spectra @ x[rows])
    lin_rows = _f32(np.concatenate(blocks, axis=0))
    return AttributePlan(
        normalization=core["normalization"],
        e0_ev=float(e0_ev),
        n_energies=e.size,
        lin_rows=lin_rows,
        pre_coefs=slice(0, 2),
        post_coefs=slice(int(offsets[1]), int(offsets[2])),
        sum_row=int(offsets[2]),
        xsum_row=int(offsets[3]),
        deriv=slice(int(offsets[4]), int(offsets[5])) if has_deriv else None,
        lcf=lcf,
        deriv_x=core["deriv_x"],
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
