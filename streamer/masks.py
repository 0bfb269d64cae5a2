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
>>> int(mask[20:40, 10:30].sum())  # of 400: the median filter rounds a corner
399
>>> int(mask.sum()) - 399  # 3-sigma noise specks outside (segment_particles drops them)
18
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

__all__ = [
    "DEFAULT_RANGES",
    "edge_jump_threshold",
    "estimate_noise_sigma",
    "odd_value_mask",
    "thickness_mask",
    "thickness_mask_and_threshold",
]

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

#: Lowest automatic threshold, as a fraction of the way from the background to the 99th percentile.
_FLOOR_FRACTION = 0.02

_ENERGY_ATTRIBUTES = ("e0_half", "e0_deriv", "white_line_energy")


def require_image_2d(image: np.ndarray, *, name: str) -> np.ndarray:
    """``image`` as an array, or a ValueError naming it when it is not 2D."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2D image (ny, nx), got shape {image.shape}")
    return image


#: Immerkaer's noise-estimation kernel (the product of two second differences): it cancels any
#: quadratic signal and turns white noise of sigma ``s`` into noise of sigma ``6 s``.
_NOISE_KERNEL = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


@functools.lru_cache(maxsize=8)
def _median_noise_factor(size: int) -> float:
    """Standard deviation of a ``size`` x ``size`` median of white noise of unit sigma (0.41
    for 3x3), measured once on seeded noise."""
    noise = np.random.default_rng(0).standard_normal((256, 256))
    return float(ndimage.median_filter(noise, size=size).std())


def estimate_noise_sigma(edge_jump_image: np.ndarray) -> float:
    """Per-pixel noise of an image, robust to the particles in it and to masked pixels.

    The image is filtered with Immerkaer's 3x3 second-difference kernel, which removes smooth
    signal (flat background, thickness gradients) and keeps the pixel noise; the median absolute
    deviation of the result ignores particle outlines. Pixels whose 3x3 window holds a
    non-finite value are left out, so the estimate holds when most of the background is masked.

    Raises
    ------
    ValueError
        If fewer than 16 pixels have a fully finite neighbourhood.

    Examples
    --------
    >>> image = np.random.default_rng(1).normal(0.0, 0.05, (128, 128))
    >>> image[30:90, 30:90] += 0.5
    >>> round(estimate_noise_sigma(image), 3)
    0.05
    """
    image = np.asarray(edge_jump_image, dtype=np.float64)
    finite = np.isfinite(image)
    full = ndimage.minimum_filter(finite.astype(np.uint8), size=3, mode="constant").astype(bool)
    if full.sum() < 16:
        raise ValueError("too few pixels with finite neighbours to estimate the noise")
    response = ndimage.convolve(np.where(finite, image, 0.0), _NOISE_KERNEL)[full]
    return float(1.4826 * np.median(np.abs(response - np.median(response)))) / 6.0


def edge_jump_threshold(
    edge_jump_image: np.ndarray,
    *,
    method: str = "noise",
    n_sigma: float = 3.0,
    noise_sigma: float | None = None,
) -> float:
    """Choose the edge-jump level that separates absorber from empty background.

    Parameters
    ----------
    edge_jump_image : ndarray, shape (ny, nx)
        Edge jump per pixel (OD units); non-finite pixels are ignored.
    method : {"noise", "otsu"}
        ``"otsu"``: Otsu's threshold on the histogram of finite values. It sits between the
        background and particle modes, so it cuts off the thin rims of rounded particles.
        ``"noise"`` (default): ``background + n_sigma * noise_sigma``, where the background
        level is the median of Otsu's lower class (0, the physical value, when most pixels are
        masked and the background cannot be measured) and the noise comes from
        :func:`estimate_noise_sigma` unless given. Noiseless data give a threshold just above
        the background (``+ 2 %`` of the way to the 99th percentile).
    n_sigma : float
        Multiple of the noise for ``method="noise"``.
    noise_sigma : float, optional
        Per-pixel noise of this image, when known (for example after a median filter).

    Returns
    -------
    float
        The threshold; pixels strictly above it are absorber.

    Raises
    ------
    ValueError
        If the image has fewer than two distinct finite values or the method is unknown.
    """
    image = np.asarray(edge_jump_image, dtype=np.float64)
    values = image[np.isfinite(image)]
    if values.size < 2 or values.min() == values.max():
        raise ValueError("edge-jump image has fewer than two distinct finite values")
    otsu = float(threshold_otsu(values))
    if method == "otsu":
        return otsu
    if method != "noise":
        raise ValueError(f"unknown threshold method {method!r}; use 'noise' or 'otsu'")
    if values.size >= 0.5 * image.size:
        level = float(np.median(values[values <= otsu]))
    else:  # most pixels masked: the background cannot be measured, take its physical value
        logger.warning(
            "%d of %d edge-jump pixels are masked: assuming a background edge jump of 0; "
            "segment the edge jump of all pixels, masking only unusable ones",
            image.size - values.size,
            image.size,
        )
        level = 0.0
    sigma = estimate_noise_sigma(image) if noise_sigma is None else float(noise_sigma)
    floor = level + _FLOOR_FRACTION * (float(np.percentile(values, 99.0)) - level)
    threshold = max(level + n_sigma * sigma, floor)
    logger.debug(
        "edge-jump threshold %.4g (background %.4g, noise %.3g, otsu %.4g)",
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
    n_sigma: float = 3.0,
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
        Empty (with a warning) when the image has no contrast to threshold automatically.
    """
    return thickness_mask_and_threshold(
        edge_jump_image,
        threshold=threshold,
        method=method,
        n_sigma=n_sigma,
        median_size_px=median_size_px,
        fill_holes=fill_holes,
    )[0]


def thickness_mask_and_threshold(
    edge_jump_image: np.ndarray,
    *,
    threshold: float | None = None,
    method: str = "noise",
    n_sigma: float = 3.0,
    median_size_px: int = 3,
    fill_holes: bool = True,
) -> tuple[np.ndarray, float | None]:
    """:func:`thickness_mask` and the threshold it applied to the filtered image (``None`` when
    the image has no contrast), to compare a later estimate of the same edge jump with the mask.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(0.0, 0.01, (64, 64))
    >>> image[20:40, 10:30] += 0.4
    >>> mask, t = thickness_mask_and_threshold(image)
    >>> bool((mask == thickness_mask(image, threshold=t)).all()), 0.0 < t < 0.4
    (True, True)
    """
    image, threshold = _filtered_and_threshold(
        edge_jump_image, threshold, method, n_sigma, median_size_px
    )
    if threshold is None:
        return np.zeros(image.shape, dtype=bool), None
    with np.errstate(invalid="ignore"):
        mask = image > threshold
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    return mask, threshold


def _filtered_and_threshold(
    edge_jump_image, threshold, method, n_sigma, median_size_px
) -> tuple[np.ndarray, float | None]:
    """The median-filtered image and its threshold (given, automatic, or ``None``)."""
    image = require_image_2d(edge_jump_image, name="edge_jump_image").astype(np.float64)
    finite = np.isfinite(image)
    values = image[finite]
    if threshold is None and (values.size < 2 or values.min() == values.max()):
        logger.warning(
            "edge-jump image has no contrast (%d finite pixels, all equal): the thickness mask "
            "is empty",
            values.size,
        )
        return image, None
    noise_sigma = None
    if threshold is None and method == "noise":
        try:
            noise_sigma = estimate_noise_sigma(image)
        except ValueError as err:
            logger.warning("%s: thresholding the edge jump by Otsu's method", err)
            method = "otsu"
    if median_size_px > 1:
        # -inf ranks below every value, so an isolated NaN pixel takes its neighbours' median.
        image = ndimage.median_filter(np.where(finite, image, -np.inf), size=int(median_size_px))
        image[~np.isfinite(image)] = np.nan
        if noise_sigma is not None:
            noise_sigma *= _median_noise_factor(int(median_size_px))
    if threshold is None:
        threshold = edge_jump_threshold(
            image, method=method, n_sigma=n_sigma, noise_sigma=noise_sigma
        )
    return image, float(threshold)


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
