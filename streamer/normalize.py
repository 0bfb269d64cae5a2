"""Pre-edge / post-edge normalisation of many spectra at once (like larch's ``pre_edge``).

For every pixel a line is fitted to the pre-edge region and a polynomial (degree ``nnorm``) to
``mu - pre_edge`` in the post-edge region; the edge jump is that polynomial at the edge energy and
the normalised spectrum is ``(mu - pre_edge) / edge_jump``, exactly as larch's ``pre_edge`` does
(``norm``, ``edge_step``). All fits are closed-form least squares: the coefficients are rows of a
projection matrix that depends only on the energy grid, the nominal edge energy and the windows
(:func:`plan_normalization`, cached per grid), so fitting millions of spectra is one matrix product.

Windows are relative to one nominal edge energy ``E0`` for the whole field of view (a hint, or
:func:`estimate_e0` from the mean spectrum), not to each pixel's own edge: per-pixel edges differ by
a few eV, which moves no point across the window limits on a typical grid.

While frames are still arriving (ascending energies, only part of the grid present) the plan
adapts: with fewer than ``min_post_points`` energies in the post-edge window it falls back to a
provisional flat post-edge and says so (``provisional``). The flat post-edge is the mean of
``mu - pre_edge`` over a **fixed early reference** window, ``E0 + early_reference`` (12-20 eV past
the edge by default: after the white line, before the dip that follows it), whenever the grid has
points there; only a grid without any falls back to whatever exists beyond
``E0 + provisional_post_start``. A fixed window makes the provisional attributes one well-defined
quantity at every coverage from the moment the window is complete until the post-edge window fills
(``early_reference_complete``), so provisional values of different fields and runs can be compared
like for like (:mod:`streamer.provisional`, the early decisions of :mod:`streamer.run_analysis`).
On the simulator's LiCoO2 spectra the white-line height on this reference is 1.61-1.67 edge steps
from the pristine to the charged end (1.59-1.92 on the complete scan), and a white line stronger
by 0.5 edge steps is 0.45 higher on it. Without any post-edge point, or without a pre-edge point,
nothing can be normalised (``can_normalize`` is False).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from streamer.edge_operators import larch_smoothed_derivative

__all__ = [
    "EdgeWindows",
    "Normalization",
    "NormalizationPlan",
    "check_energies",
    "edge_significance",
    "estimate_e0",
    "normalize",
    "plan_normalization",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeWindows:
    """Energy windows of the edge analysis, in eV relative to the nominal edge energy ``E0``.

    The defaults suit the Co K edge on the seed study's grid (10 eV steps 7562.4-7702.4, 1 eV to
    7772.4, 10 eV to 7982.4): the pre-edge line through 7562.4-7692.4, the post-edge line through
    7772.4-7982.4.

    Attributes
    ----------
    pre : (float, float)
        Pre-edge line fit (inclusive limits).
    post : (float, float)
        Post-edge polynomial fit (inclusive limits).
    nnorm : int or None
        Degree of the post-edge polynomial; ``None`` chooses from the span of the points present:
        2 if it is 300 eV or more (as larch), 1 if 100 eV or more (larch: 30 eV; a line through a
        short window far from the edge extrapolates badly while a scan is still arriving), else 0.
    min_post_points : int
        Fewer post-edge points than this gives the provisional flat post-edge.
    provisional_post_start : float
        Start of the provisional flat post-edge (all points above it) on a grid without points in
        the ``early_reference`` window.
    early_reference : (float, float)
        Window of the provisional flat post-edge (inclusive limits): fixed, so that provisional
        attributes are the same quantity at every coverage (see the module docstring).
    edge : (float, float)
        Search window for the edge energy (maximum derivative, half-jump crossing).
    white_line : (float, float)
        Search window for the white-line maximum.
    lcf : (float, float)
        Range of the linear-combination fit to reference spectra.
    """

    pre: tuple[float, float] = (-160.0, -25.0)
    post: tuple[float, float] = (50.0, 270.0)
    nnorm: int | None = None
    min_post_points: int = 3
    provisional_post_start: float = 30.0
    early_reference: tuple[float, float] = (12.0, 20.0)
    edge: tuple[float, float] = (-18.0, 15.0)
    white_line: tuple[float, float] = (-5.0, 20.0)
    lcf: tuple[float, float] = (-20.0, 50.0)

    def __post_init__(self):
        for name in ("pre", "post", "edge", "white_line", "lcf", "early_reference"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"EdgeWindows.{name} must be (low, high) with low < high")
        if self.pre[1] >= 0 or self.post[0] <= 0 or self.early_reference[0] <= 0:
            raise ValueError(
                "the pre-edge window must end below E0, the post-edge and early reference above it"
            )
        if self.nnorm is not None and not 0 <= self.nnorm <= 3:
            raise ValueError(f"nnorm must be 0..3 or None, got {self.nnorm}")
        if self.min_post_points < 1:
            raise ValueError("min_post_points must be at least 1")


def check_energies(energies_ev) -> np.ndarray:
    """Return energies as float64 and check that they are 1-D, finite and strictly ascending."""
    e = np.asarray(energies_ev, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"energies_ev must be 1-D, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("energies_ev contains non-finite values")
    if e.size > 1 and not np.all(np.diff(e) > 0):
        raise ValueError("energies_ev must be strictly ascending (sort the cube rows first)")
    if e.size and e[-1] < 100.0:
        raise ValueError(f"energies_ev must be in eV, got values up to {e[-1]:g} (keV?)")
    return e


@dataclass(frozen=True, eq=False)
class NormalizationPlan:
    """Projection rows of the pre- and post-edge fits for one grid, edge energy and windows.

    With ``x = energies_ev - e0_ev``: ``pre_rows @ mu`` gives ``(a, b)`` of the pre-edge line
    ``a + b x``; ``post_rows @ mu`` gives ``(d0, d1, ...)`` of the post-edge polynomial fitted to
    ``mu - pre_edge``, so the edge jump at ``x`` is ``d0 + d1 x + ...``.
    """

    energies_ev: np.ndarray
    e0_ev: float
    windows: EdgeWindows
    pre: slice
    post: slice
    nnorm: int
    provisional: bool
    pre_rows: np.ndarray
    post_rows: np.ndarray
    #: The provisional flat post-edge is the mean over the ``early_reference`` window, and every
    #: energy of that window the grid can have is present (see the module docstring).
    early_reference_complete: bool = False

    @property
    def can_normalize(self) -> bool:
        """Whether both fits have points (otherwise every coefficient row is NaN)."""
        return self.pre.stop > self.pre.start and self.post.stop > self.post.start

    @property
    def x(self) -> np.ndarray:
        """Energies relative to ``e0_ev`` (eV)."""
        return self.energies_ev - self.e0_ev


def _window(e: np.ndarray, lo: float, hi: float) -> slice:
    return slice(int(np.searchsorted(e, lo, "left")), int(np.searchsorted(e, hi, "right")))


def _poly_rows(x: np.ndarray, degree: int) -> np.ndarray:
    """Rows ``P`` with ``P @ y`` = least-squares coefficients (increasing powers of x)."""
    scale = max(float(np.abs(x).max()), 1.0)
    v = np.vander(x / scale, degree + 1, increasing=True)
    return np.linalg.pinv(v) / (scale ** np.arange(degree + 1))[:, None]


@functools.lru_cache(maxsize=64)
def _cached_plan(key: bytes, e0_ev: float, windows: EdgeWindows) -> NormalizationPlan:
    e = np.frombuffer(key, dtype=np.float64)
    n = e.size
    x = e - e0_ev
    pre = _window(x, *windows.pre)
    post = _window(x, *windows.post)
    provisional = early_complete = False
    if post.stop - post.start < windows.min_post_points:
        provisional = True
        early = _window(x, *windows.early_reference)
        if early.stop > early.start:
            post = early
            # complete once an energy beyond the window shows that no more of it can come
            early_complete = early.stop < n or x[-1] >= windows.early_reference[1] - 1e-6
        else:
            post = slice(int(np.searchsorted(x, windows.provisional_post_start, "left")), n)
    n_pre, n_post = pre.stop - pre.start, post.stop - post.start
    pre_rows = np.full((2, n), np.nan)
    if n_pre >= 1:
        pre_rows[:] = 0.0
        if n_pre >= 3:  # like larch: fewer than 3 points give a constant
            pre_rows[:, pre] = _poly_rows(x[pre], 1)
        else:
            pre_rows[0, pre] = 1.0 / n_pre
    if n_post >= 1:
        span = x[post.stop - 1] - x[post.start]
        nnorm = (
            windows.nnorm if windows.nnorm is not None else (2 if span >= 300 else int(span >= 100))
        )
        if provisional or n_post < 2:
            nnorm = 0
        elif n_post < 5:
            nnorm = min(1, nnorm)
        nnorm = min(nnorm, n_post - 1)
        fit = _poly_rows(x[post], nnorm)  # (nnorm + 1, n_post)
        # d = fit @ (mu[post] - a - b x[post]) with (a, b) = pre_rows @ mu
        basis = np.stack([np.ones(n_post), x[post]], axis=1)  # (n_post, 2)
        post_rows = -(fit @ basis) @ pre_rows
        post_rows[:, post] += fit
    else:
        nnorm = 0
        post_rows = np.full((1, n), np.nan)
    for arr in (pre_rows, post_rows):
        arr.setflags(write=False)
    return NormalizationPlan(
        energies_ev=e,
        e0_ev=float(e0_ev),
        windows=windows,
        pre=pre,
        post=post,
        nnorm=int(nnorm),
        provisional=provisional,
        pre_rows=pre_rows,
        post_rows=post_rows,
        early_reference_complete=bool(early_complete),
    )


def plan_normalization(
    energies_ev, *, e0_ev: float, windows: EdgeWindows | None = None
) -> NormalizationPlan:
    """The (cached) fit projections for a grid, a nominal edge energy and windows.

    Examples
    --------
    >>> e = np.concatenate([np.arange(7560.0, 7700, 10), np.arange(7700.0, 7765)])
    >>> plan = plan_normalization(e, e0_ev=7722.0)
    >>> plan.provisional, plan.pre_rows.shape, (plan.post.start, plan.post.stop)
    (True, (2, 79), (48, 57))
    >>> plan.early_reference_complete  # the flat post-edge: mean over 7734-7742 eV, all present
    True
    """
    e = check_energies(energies_ev)
    return _cached_plan(e.tobytes(), float(e0_ev), windows or EdgeWindows())


MEAN_SAMPLE_PIXELS = 20_000
"""Evenly spaced pixels of a field's mean spectrum (:func:`estimate_e0`,
:func:`edge_significance`, and the cube's ``mean_spectrum_``)."""


def estimate_e0(energies_ev, mu, *, max_pixels: int = MEAN_SAMPLE_PIXELS) -> float | None:
    """Nominal edge energy of a field of view: the maximum of the mean spectrum's derivative.

    The mean is over up to ``max_pixels`` evenly spaced pixels with finite values; the derivative
    is larch's smoothed one. Returns the grid energy of the maximum, or ``None`` when the maximum
    is not a clear edge (at the last points of a partial scan, or not above the derivative's
    spread), which is normal before the scan reaches the edge.

    Parameters
    ----------
    energies_ev : ndarray, shape (n_energies,)
    mu : ndarray, shape (n_energies, n_pixels)
    """
    e = check_energies(energies_ev)
    mu = np.asarray(mu)
    if mu.ndim != 2 or mu.shape[0] != e.size:
        raise ValueError(f"mu must have shape ({e.size}, n_pixels), got {mu.shape}")
    if e.size < 7:
        return None
    step = max(1, mu.shape[1] // max_pixels)
    sample = np.asarray(mu[:, ::step], dtype=np.float64)
    sample = sample[:, np.all(np.isfinite(sample), axis=0)]
    if sample.shape[1] == 0:
        return None
    mean = sample.mean(axis=1)
    guess = e[np.argmax(np.gradient(mean) / np.gradient(e))]
    operator, window = larch_smoothed_derivative(e, e0_ev=float(guess))
    deriv = operator @ mean
    k = int(np.argmax(deriv))
    spread = np.median(np.abs(deriv - np.median(deriv)))
    if k >= deriv.size - 3 or deriv[k] <= 5.0 * spread:
        return None
    return float(e[window][k])


def edge_significance(
    energies_ev,
    mu,
    *,
    e0_ev: float,
    windows: EdgeWindows | None = None,
    max_pixels: int = MEAN_SAMPLE_PIXELS,
) -> float:
    """How clearly the field's mean spectrum has an edge at ``e0_ev``: its edge jump over the
    scatter of its pre-edge points about their line.

    A scan still arriving can show a spurious "edge" (a drift of the beam or the flats) before
    the real one, which :func:`estimate_e0` may take for it; an evaluation on such a nominal
    edge segments noise. A real edge of a field with particles is tens to thousands of times
    its pre-edge scatter; a spurious one is a few times. NaN when the pre-edge has fewer than 3
    points (no line to scatter about) or nothing can be normalised; ``inf`` for a noiseless
    pre-edge.

    Examples
    --------
    >>> e = np.arange(7560.0, 7800.0, 2.0)
    >>> noise = 1e-3 * np.random.default_rng(0).standard_normal(e.size)
    >>> mu = (0.1 + 0.3 * (e > 7722.0) + noise)[:, None]
    >>> edge_significance(e, mu, e0_ev=7722.0) > 100
    True
    >>> early = e < 7680.0  # the scan has not reached the edge: a spurious one at 7650 eV
    >>> bool(edge_significance(e[early], mu[early], e0_ev=7650.0) < 10)
    True
    """
    e = check_energies(energies_ev)
    mu = np.asarray(mu)
    step = max(1, mu.shape[1] // max_pixels)
    sample = np.asarray(mu[:, ::step], dtype=np.float64)
    sample = sample[:, np.all(np.isfinite(sample), axis=0)]
    plan = plan_normalization(e, e0_ev=e0_ev, windows=windows)
    if sample.shape[1] == 0 or plan.pre.stop - plan.pre.start < 3 or not plan.can_normalize:
        return float("nan")
    mean = sample.mean(axis=1)
    a, b = plan.pre_rows @ mean
    jump = float((plan.post_rows @ mean)[0])
    x = plan.x[plan.pre]
    residual = mean[plan.pre] - (a + b * x)
    scatter = float(np.sqrt(np.sum(residual**2) / max(x.size - 2, 1)))
    if scatter == 0.0:
        return float("inf") if jump > 0 else 0.0
    return jump / scatter


class Normalization(NamedTuple):
    """Result of :func:`normalize` (per-pixel arrays are float32)."""

    #: Nominal edge energy the windows are relative to (eV).
    e0_ev: float
    #: Edge jump at ``e0_ev``, shape (n_pixels,).
    edge_jump: np.ndarray
    #: Normalised mu, shape (n_energies, n_pixels).
    norm: np.ndarray
    #: Pre-edge line ``a + b (E - e0_ev)``: rows ``a, b``, shape (2, n_pixels).
    pre_edge_coefs: np.ndarray
    #: Post-edge polynomial of ``mu - pre_edge`` in ``E - e0_ev``, shape (nnorm + 1, n_pixels).
    post_edge_coefs: np.ndarray
    #: True when the post-edge fit is the provisional flat one (post-edge window not yet covered).
    provisional: bool
    #: The projections used.
    plan: NormalizationPlan


def normalize(
    energies_ev, mu, *, e0_ev: float | None = None, windows: EdgeWindows | None = None
) -> Normalization:
    """Normalise spectra like larch's ``pre_edge``, for all pixels at once.

    Parameters
    ----------
    energies_ev : array_like, shape (n_energies,)
        Strictly ascending energies (eV); may be only the first part of a scan.
    mu : array_like, shape (n_energies, n_pixels) or (n_energies,)
        Absorbance (optical density) per pixel.
    e0_ev : float, optional
        Nominal edge energy; estimated with :func:`estimate_e0` when omitted.
    windows : EdgeWindows, optional

    Returns
    -------
    Normalization

    Raises
    ------
    ValueError
        If the shapes disagree, or no edge energy is given and none can be estimated.

    Examples
    --------
    >>> e = np.arange(7560.0, 7990.0, 2.0)
    >>> mu = 0.3 + 1e-4 * (e - 7560) + 0.8 * (0.5 + np.arctan((e - 7722) / 2) / np.pi)
    >>> res = normalize(e, mu, e0_ev=7722.0)
    >>> round(float(res.edge_jump[0]), 2), res.provisional
    (0.78, False)
    """
    e = check_energies(energies_ev)
    mu = np.asarray(mu)
    squeeze = mu.ndim == 1
    mu2 = mu.reshape(e.size, -1) if squeeze else mu
    if mu2.ndim != 2 or mu2.shape[0] != e.size:
        raise ValueError(f"mu must have shape ({e.size}, n_pixels), got {mu.shape}")
    if e0_ev is None:
        e0_ev = estimate_e0(e, mu2)
        if e0_ev is None:
            raise ValueError("no edge found in the spectra: pass e0_ev")
    plan = plan_normalization(e, e0_ev=e0_ev, windows=windows)
    data = np.asarray(mu2, dtype=np.float32)
    pre = (plan.pre_rows.astype(np.float32) @ data).astype(np.float32)
    post = (plan.post_rows.astype(np.float32) @ data).astype(np.float32)
    jump = post[0]
    x = plan.x.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = (data - (pre[0] + x * pre[1])) / jump
    if squeeze:
        norm = norm[:, 0]
    return Normalization(
        e0_ev=float(e0_ev),
        edge_jump=jump,
        norm=norm,
        pre_edge_coefs=pre,
        post_edge_coefs=post,
        provisional=plan.provisional,
        plan=plan,
    )
