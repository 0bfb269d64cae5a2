"""Pixel masks over per-pixel attribute maps: how much absorber, and which values are odd.

The edge jump (optical density jump across the absorption edge) is proportional to the amount of
absorber along the beam. :func:`thickness_mask` keeps the pixels with enough of it for a
meaningful spectrum, with an automatic noise-based threshold (:func:`edge_jump_threshold`);
:func:`odd_value_mask` flags pixels whose attributes are non-finite or physically implausible.
Attribute names and conventions are those of ``docs/architecture.md``.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> image = rng.normal(0.0, 0.01, (64, 64))
>>> image[20:40, 10:30] += 0.4
>>> mask = thickness_mask(image)
>>> int(mask[20:40, 10:30].sum()), int(mask.sum())  # the median filter rounds 4 corners
(396, 396)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

__all__ = ["DEFAULT_RANGES", "edge_jump_threshold", "odd_value_mask", "thickness_mask"]

logger = logging.getLogger(__name__)

#: Physically meaningful ranges ``(low, high)`` (inclusive) of the per-pixel attributes of a
#: normalised K-edge spectrum. Energies (``e0_*``, ``white_line_energy``) are checked against the
#: scanned energy range when :func:`odd_value_mask` is given one. Attributes not listed here are
#: only checked for being finite.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "edge_jump": (0.0, 6.0),  # OD; above ~6 almost no photons are transmitted
    "white_line_height": (0.5, 3.0),  # normalised mu, edge step = 1
    "pre_edge_noise": (0.0, 0.5),  # RMS residual relative to the edge jump
    "r_squared": (0.0, 1.0),
}

#: Lowest automatic threshold, as a fraction of the way from the background level to Otsu's.
_FLOOR_FRACTION = 0.2

_ENERGY_ATTRIBUTES = ("e0_half", "e0_deriv", "white_line_energy")


def finite_image_2d(image: np.ndarray, *, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2D image (ny, nx), got shape {image.shape}")
    return image


def edge_jump_threshold(
    edge_jump_image: np.ndarray, *, method: str = "noise", n_sigma: float = 5.0
) -> float:
    """Choose the edge-jump level that separates absorber from empty background.

    Parameters
    ----------
    edge_jump_image : ndarray, shape (ny, nx)
        Edge jump per pixel (OD units); non-finite pixels are ignored.
    method : {"noise", "otsu"}
        ``"otsu"``: Otsu's threshold on the histogram of finite values. It sits between the
        background and particle modes, so it cuts off the thin rims of rounded particles.
        ``"noise"`` (default): ``background + n_sigma * sigma``, where the background level is
        the median of Otsu's lower class and ``sigma`` the spread of that class measured on its
        lower side only (particles add positive edge jump, so the lower side is pure noise). The
        result is kept between ``background + 0.2 * (otsu - background)`` (so that noiseless or
        blurred data do not grow particles into their tails) and Otsu's threshold (so that a
        very noisy image falls back to Otsu).
    n_sigma : float
        Multiple of the background noise for ``method="noise"``.

    Returns
    -------
    float
        The threshold; pixels strictly above it are absorber.

    Raises
    ------
    ValueError
        If the image has fewer than two distinct finite values or the method is unknown.
    """
    values = np.asarray(edge_jump_image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2 or values.min() == values.max():
        raise ValueError("edge-jump image has fewer than two distinct finite values")
    otsu = float(threshold_otsu(values))
    if method == "otsu":
        return otsu
    if method != "noise":
        raise ValueError(f"unknown threshold method {method!r}; use 'noise' or 'otsu'")
    background = values[values <= otsu]
    level = float(np.median(background))
    lower = background[background <= level] - level
    sigma = float(np.sqrt(np.mean(lower**2))) if lower.size else 0.0
    threshold = min(max(level + n_sigma * sigma, level + _FLOOR_FRACTION * (otsu - level)), otsu)
    logger.debug(
        "edge-jump threshold %.4g (background %.4g, sigma %.3g, otsu %.4g)",
        threshold,
        level,
        sigma,
        otsu,
    )
    return threshold


def thickness_mask(
    edge_jump_image: np.ndarray,
    *,
    threshold: float | None = None,
    method: str = "noise",
    n_sigma: float = 5.0,
    median_size_px: int = 3,
    fill_holes: bool = True,
) -> np.ndarray:
    """Boolean mask of pixels with enough absorber for a meaningful spectrum.

    The image is median-filtered (which lowers pixel noise about 2.4 times for a 3x3 window
    while keeping particle outlines in place, unlike a Gaussian blur), thresholded, and its
    enclosed holes are filled.

    Parameters
    ----------
    edge_jump_image : ndarray, shape (ny, nx)
        Edge jump per pixel (OD units); ``NaN`` pixels take the median of their neighbours, and
        stay out of the mask when most of their neighbours are ``NaN``.
    threshold : float, optional
        Edge-jump level (of the filtered image); chosen by :func:`edge_jump_threshold` on the
        filtered image when omitted.
    method, n_sigma
        Passed to :func:`edge_jump_threshold` when ``threshold`` is omitted.
    median_size_px : int
        Width of the square median filter; 1 or less disables it.
    fill_holes : bool
        Fill enclosed holes (cracks, dead pixels inside a particle).

    Returns
    -------
    ndarray of bool, shape (ny, nx)
    """
    image = finite_image_2d(edge_jump_image, name="edge_jump_image").astype(np.float64)
    finite = np.isfinite(image)
    if not finite.any():
        logger.warning("edge-jump image has no finite pixel; the thickness mask is empty")
        return np.zeros(image.shape, dtype=bool)
    if median_size_px > 1:
        # -inf ranks below every value, so an isolated NaN pixel takes its neighbours' median.
        image = ndimage.median_filter(np.where(finite, image, -np.inf), size=int(median_size_px))
        image[~np.isfinite(image)] = np.nan
    if threshold is None:
        threshold = edge_jump_threshold(image, method=method, n_sigma=n_sigma)
    with np.errstate(invalid="ignore"):
        mask = image > threshold
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    return mask


def odd_value_mask(
    attributes: Mapping[str, np.ndarray],
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    energy_range_ev: tuple[float, float] | None = None,
    within: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels where any attribute is non-finite or outside its physical range.

    Parameters
    ----------
    attributes : mapping of str to ndarray
        Attribute arrays of one common shape (``(n_pixels,)`` or ``(ny, nx)``).
    ranges : mapping of str to (low, high), optional
        Inclusive valid range per attribute; defaults to :data:`DEFAULT_RANGES`. Entries given
        here replace the defaults of the same name.
    energy_range_ev : (float, float), optional
        Scanned energy range; ``e0_half``, ``e0_deriv`` and ``white_line_energy`` outside it
        are odd.
    within : ndarray of bool, optional
        Only these pixels can be flagged (for example the thickness mask); the counts logged
        refer to them.

    Returns
    -------
    ndarray of bool
        True where the pixel is odd, in the shape of the attributes.

    Examples
    --------
    >>> import numpy as np
    >>> odd_value_mask({"r_squared": np.array([0.9, 1.2, np.nan], dtype=np.float32)})
    array([False,  True,  True])
    """
    if not attributes:
        raise ValueError("odd_value_mask needs at least one attribute")
    limits = dict(DEFAULT_RANGES)
    if ranges is not None:
        limits.update(ranges)
    if energy_range_ev is not None:
        for name in _ENERGY_ATTRIBUTES:
            limits.setdefault(name, (float(energy_range_ev[0]), float(energy_range_ev[1])))
    shape = np.shape(next(iter(attributes.values())))
    region = np.ones(shape, dtype=bool) if within is None else np.asarray(within, dtype=bool)
    if region.shape != shape:
        raise ValueError(f"'within' has shape {region.shape}, attributes have {shape}")
    odd = np.zeros(shape, dtype=bool)
    for name, values in attributes.items():
        values = np.asarray(values)
        if values.shape != shape:
            raise ValueError(f"attribute {name!r} has shape {values.shape}, expected {shape}")
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values)
            if name in limits:
                low, high = limits[name]
                bad |= (values < low) | (values > high)
        bad &= region
        if bad.any():
            logger.debug("%d odd pixels in %s", int(bad.sum()), name)
        odd |= bad
    return odd
