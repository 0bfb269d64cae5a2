"""Sub-pixel translation of an image by separable linear interpolation, block by block.

:func:`apply_shift` moves a full-resolution image back by a measured drift (sign convention in
:mod:`streamer.registration`: ``out[y, x] = image[y + dy, x + dx]``) and fills the pixels whose
source lies outside the image; :func:`covered_region` says which pixels those are.

It works on flat, contiguous spans of whole rows, ``block_rows`` at a time, so that the working
set stays in the CPU cache, and takes a row range so that threads can share a frame. Measured at
2048x2048 float32 on the project's 2-core machine, one thread: 4.0 ms, against 69 ms for
:func:`scipy.ndimage.shift` with ``order=1, prefilter=False`` (17x; same values to float32
rounding, which the test suite checks).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["apply_shift", "covered_region"]


def _shift_rows(
    image: np.ndarray,
    out: np.ndarray,
    r0: int,
    r1: int,
    iy: int,
    fy: float,
    ix: int,
    fx: float,
    fill: float,
    scratch: np.ndarray,
) -> None:
    """Bilinear shift of output rows [r0, r1) (helper of :func:`apply_shift`).

    Works on flat, contiguous spans of whole rows (strided 2-D views are several times slower in
    numpy); the columns that wrap around a row end compute garbage and are then filled.
    """
    ny, nx = image.shape
    # Output pixel (y, x) reads source (y + iy + fy, x + ix + fx); with a fraction it needs the
    # next source row/column too.
    ey, ex = (1 if fy > 0 else 0), (1 if fx > 0 else 0)
    ylo, yhi = max(r0, -iy), min(r1, ny - iy - ey)
    xlo, xhi = max(0, -ix), min(nx, nx - ix - ex)
    if yhi <= ylo or xhi <= xlo:
        out[r0:r1] = fill
        return
    src, dst = image.reshape(-1), out.reshape(-1)
    off = iy * nx + ix
    lo = max(ylo * nx, -off)
    hi = min(yhi * nx, src.size - off - ex - ey * nx)
    n_t = hi - lo + ey * nx
    if ex:  # interpolate along x: t = a + fx * (b - a)
        t = scratch[:n_t]
        np.subtract(src[lo + off + 1 : lo + off + 1 + n_t], src[lo + off : lo + off + n_t], out=t)
        t *= np.float32(fx)
        t += src[lo + off : lo + off + n_t]
    else:
        t = src[lo + off : lo + off + n_t]
    o = dst[lo:hi]
    if ey:  # interpolate along y into the output
        np.subtract(t[nx : nx + hi - lo], t[: hi - lo], out=o)
        o *= np.float32(fy)
        o += t[: hi - lo]
    else:
        np.copyto(o, t[: hi - lo])
    out[r0:ylo] = fill
    out[yhi:r1] = fill
    out[ylo:yhi, :xlo] = fill
    out[ylo:yhi, xhi:] = fill


def _split_drift(drift, interpolation: str = "linear") -> tuple[int, float, int, float]:
    """Integer and fractional parts ``(iy, fy, ix, fx)`` of a drift, fractions in [0, 1)."""
    dy, dx = (float(v) for v in drift)
    if not (math.isfinite(dy) and math.isfinite(dx)):
        raise ValueError(f"drift must be finite, got {drift!r}")
    if interpolation == "nearest":
        dy, dx = float(round(dy)), float(round(dx))
    elif interpolation != "linear":
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    parts = []
    for d in (dy, dx):
        i = math.floor(d)
        f = d - i
        # Fractions below 1/1000 px are not worth a pass over the data.
        if f < 1e-3:
            f = 0.0
        elif f > 1 - 1e-3:
            i, f = i + 1, 0.0
        parts += [i, f]
    return parts[0], parts[1], parts[2], parts[3]


def covered_region(
    shape: tuple[int, int], drift, *, interpolation: str = "linear"
) -> tuple[slice, slice]:
    """Output rows and columns that :func:`apply_shift` fills with data (the rest is ``fill``).

    Examples
    --------
    >>> covered_region((4, 4), (1, 0.5))
    (slice(0, 3, None), slice(0, 3, None))
    """
    iy, fy, ix, fx = _split_drift(drift, interpolation)
    ny, nx = shape
    ylo, yhi = max(0, -iy), max(0, min(ny, ny - iy - (fy > 0)))
    xlo, xhi = max(0, -ix), max(0, min(nx, nx - ix - (fx > 0)))
    return slice(min(ylo, yhi), yhi), slice(min(xlo, xhi), xhi)


def apply_shift(
    image: np.ndarray,
    drift: np.ndarray | tuple[float, float],
    *,
    out: np.ndarray | None = None,
    fill: float = np.nan,
    rows: tuple[int, int] | None = None,
    block_rows: int = 32,
    interpolation: str = "linear",
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """Register ``image`` by undoing ``drift``: ``out[y, x] = image[y + dy, x + dx]``.

    Parameters
    ----------
    image : ndarray, float32, shape (ny, nx)
        The image to move (not modified).
    drift : (dy, dx)
        Measured drift in pixels (see the module docstring).
    out : ndarray, float32, shape (ny, nx), optional
        Output, must not overlap ``image``. Allocated when omitted.
    fill : float
        Value of output pixels whose source lies outside the image.
    rows : (r0, r1), optional
        Compute only these output rows (to split the work between threads).
    block_rows : int
        Rows per block; a block's working set should stay in the CPU cache.
    interpolation : {"linear", "nearest"}
        Separable linear interpolation (smooths the noise a little, by a drift-dependent amount)
        or the nearest whole-pixel shift (keeps the noise, 0.5 px precision).
    scratch : ndarray, float32, optional
        Reusable work space of at least ``(block_rows + 1) * nx + 1`` elements (saves an
        allocation per call when the caller goes block by block).

    Returns
    -------
    ndarray
        ``out``.

    Examples
    --------
    >>> img = np.arange(16, dtype=np.float32).reshape(4, 4)
    >>> apply_shift(img, (1, 0.5), fill=-1)
    array([[ 4.5,  5.5,  6.5, -1. ],
           [ 8.5,  9.5, 10.5, -1. ],
           [12.5, 13.5, 14.5, -1. ],
           [-1. , -1. , -1. , -1. ]], dtype=float32)
    """
    if image.ndim != 2:
        raise ValueError(f"apply_shift expects a 2-D image, got shape {image.shape}")
    if out is None:
        out = np.empty(image.shape, dtype=np.float32)
    if not (image.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("apply_shift needs C-contiguous image and out")
    if out.shape != image.shape:
        raise ValueError(f"out shape {out.shape} differs from image shape {image.shape}")
    if np.shares_memory(out, image):
        raise ValueError("apply_shift cannot work in place: out overlaps image")
    iy, fy, ix, fx = _split_drift(drift, interpolation)
    r0, r1 = rows if rows is not None else (0, image.shape[0])
    need = (block_rows + 1) * image.shape[1] + 1
    if scratch is None or scratch.size < need or scratch.dtype != np.float32:
        scratch = np.empty(need, dtype=np.float32)
    for b0 in range(r0, r1, block_rows):
        _shift_rows(image, out, b0, min(r1, b0 + block_rows), iy, fy, ix, fx, fill, scratch)
    return out
