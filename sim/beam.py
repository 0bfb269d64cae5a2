"""Beam, detector and stage physics of the simulated TXM (pure numpy, no ophyd).

* :class:`Beam`: incident intensity ``I0(E, t)`` (a smooth spectrum times the storage-ring current,
  which decays exponentially and is topped up periodically), the flat field ``flat(x, y, E)``
  (illumination envelope times a fixed scintillator pattern, with a small energy-dependent
  gradient) and the camera's dark image.
* :class:`Drift`: the sample's smooth random drift (pixels) as a function of time.
* :func:`noisy_counts`: detector counts with Poisson noise, drawn as the Gaussian
  ``N(lam, lam)`` where the expected count ``lam`` is at least :data:`GAUSSIAN_POISSON_MIN` (the
  skewness of Poisson, ``lam**-0.5``, is then below 3 %; the Gaussian is several times faster
  than ``Generator.poisson`` on 2048x2048 stacks) and exactly Poisson below it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["GAUSSIAN_POISSON_MIN", "Beam", "Drift", "noisy_counts"]

logger = logging.getLogger(__name__)

#: Smallest expected count for which Poisson noise is drawn as a Gaussian.
GAUSSIAN_POISSON_MIN = 1000.0
_U16_MAX = 65535.0


def _smooth_pattern(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (float32)."""
    # Draw at reduced resolution and zoom up: cheap for 2048x2048 frames.
    factor = max(1, int(sigma // 4))
    small = tuple(max(4, s // factor) for s in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(small), sigma / factor, mode="wrap")
    zoom = [s / m for s, m in zip(shape, small, strict=True)]
    field = ndimage.zoom(field, zoom, order=1, mode="grid-wrap", grid_mode=True)[
        : shape[0], : shape[1]
    ]
    field -= field.mean()
    return (field / max(float(field.std()), 1e-12)).astype(np.float32)


@dataclass
class Beam:
    """Incident beam, flat field and dark current of the simulated TXM.

    Parameters
    ----------
    frame_shape : (ny, nx)
    seed : int
    counts_per_s : float
        Detector counts per pixel per second at the centre of the flat field, 400 mA, 7700 eV.
    dark_level : float
        Mean dark counts per frame.
    read_noise : float
        Gaussian read noise (counts RMS).
    ring_current_ma, lifetime_s, topup_period_s :
        Storage ring current right after top-up, beam lifetime and top-up period.
    flat_energy_gradient : float
        Relative change of the flat-field pattern across 300 eV (the flat varies with energy).
    """

    frame_shape: tuple[int, int]
    seed: int = 0
    counts_per_s: float = 3.0e5
    dark_level: float = 100.0
    read_noise: float = 3.0
    ring_current_ma: float = 400.0
    lifetime_s: float = 10.0 * 3600.0
    topup_period_s: float = 120.0
    flat_energy_gradient: float = 0.03

    def __post_init__(self):
        ny, nx = self.frame_shape
        rng = np.random.default_rng([self.seed, 0xF1A7])
        yy = (np.arange(ny, dtype=np.float32) - ny / 2 + ny * rng.uniform(-0.05, 0.05)) / ny
        xx = (np.arange(nx, dtype=np.float32) - nx / 2 + nx * rng.uniform(-0.05, 0.05)) / nx
        envelope = np.exp(-(yy[:, None] ** 2) / 0.9 - (xx[None, :] ** 2) / 0.7)
        scale = min(ny, nx) / 64.0
        pattern = 1.0 + 0.03 * _smooth_pattern(rng, (ny, nx), 1.5 * scale)
        self._flat0 = (envelope * pattern).astype(np.float32)
        self._flat_slope = _smooth_pattern(rng, (ny, nx), 12.0 * scale)
        self._dark = (
            self.dark_level * (1.0 + 0.02 * _smooth_pattern(rng, (ny, nx), 2.0 * scale))
        ).astype(np.float32)
        self._spectrum_coeffs = (rng.uniform(-0.12, -0.05), rng.uniform(-0.03, 0.03))

    def ring_current(self, t_s) -> np.ndarray:
        """Storage-ring current (mA): exponential decay, topped up every ``topup_period_s``."""
        since = np.mod(np.asarray(t_s, dtype=np.float64), self.topup_period_s)
        return self.ring_current_ma * np.exp(-since / self.lifetime_s)

    def i0(self, energy_ev, t_s) -> np.ndarray:
        """Incident counts per pixel per second at the flat-field centre."""
        x = (np.asarray(energy_ev, dtype=np.float64) - 7700.0) / 300.0
        a, b = self._spectrum_coeffs
        return (
            self.counts_per_s
            * (1.0 + a * x + b * x**2)
            * self.ring_current(t_s)
            / self.ring_current_ma
        )

    def flat(self, energy_ev: float) -> np.ndarray:
        """Relative flat field (about 1 at the centre) at ``energy_ev``, float32 (ny, nx)."""
        g = np.float32(self.flat_energy_gradient * (float(energy_ev) - 7700.0) / 300.0)
        return self._flat0 * (1.0 + g * self._flat_slope)

    @property
    def dark(self) -> np.ndarray:
        """Mean dark counts per frame, float32 (ny, nx)."""
        return self._dark


@dataclass
class Drift:
    """Smooth random sample drift (pixels, ``(dy, dx)``) as a function of time (s).

    A slow linear (thermal) drift plus three random sinusoids of periods 200-2000 s, scaled so
    that a 10-minute scan typically moves by ``amplitude_px`` (sub-pixel to a few pixels).
    ``amplitude_px = 0`` disables drift. Drift is zero at ``t = 0``.
    """

    seed: int = 0
    amplitude_px: float = 1.0

    def __post_init__(self):
        rng = np.random.default_rng([self.seed, 0xD21F7])
        self._velocity = rng.normal(0.0, 0.6, size=2) / 600.0
        self._amp = rng.normal(0.0, 0.35, size=(3, 2))
        self._period = rng.uniform(200.0, 2000.0, size=(3, 1))
        self._phase = rng.uniform(0.0, 2 * np.pi, size=(3, 2))

    def __call__(self, t_s: float) -> tuple[float, float]:
        if self.amplitude_px == 0:
            return (0.0, 0.0)
        t = float(t_s)
        osc = self._amp * (np.sin(2 * np.pi * t / self._period + self._phase) - np.sin(self._phase))
        d = self.amplitude_px * (self._velocity * t + osc.sum(axis=0))
        return (float(d[0]), float(d[1]))


def shift_image(image: np.ndarray, shift_px: tuple[float, float]) -> np.ndarray:
    """Shift an image by ``(dy, dx)`` pixels (bilinear, zero fill); no-op for a zero shift."""
    if shift_px == (0.0, 0.0):
        return image
    return ndimage.shift(image, shift_px, order=1, mode="constant", cval=0.0, prefilter=False)


def _poisson(rng: np.random.Generator, lam: np.ndarray, n_frames: int) -> np.ndarray:
    """Poisson draws of shape ``(n_frames, *lam.shape)`` as float32 (zeros when lam is all 0)."""
    if not lam.any():
        return np.zeros((n_frames, *lam.shape), np.float32)
    return rng.poisson(lam, size=(n_frames, *lam.shape)).astype(np.float32)


def noisy_counts(
    expected: np.ndarray,
    n_frames: int,
    rng: np.random.Generator,
    *,
    dark: np.ndarray,
    read_noise: float,
) -> np.ndarray:
    """``n_frames`` uint16 frames with Poisson shot noise on ``expected`` plus dark and read noise.

    Parameters
    ----------
    expected : float32 (ny, nx)
        Expected photon counts per frame (before the dark offset).
    n_frames : int
    rng : numpy Generator
    dark : float32 (ny, nx)
        Mean dark counts.
    read_noise : float
        Gaussian read noise RMS (counts).

    Returns
    -------
    uint16 (n_frames, ny, nx), clipped to the 16-bit range (saturation is logged).
    """
    lam = np.asarray(expected, dtype=np.float32)
    shape = (n_frames, *lam.shape)
    low = lam < GAUSSIAN_POISSON_MIN
    read = np.float32(read_noise)
    if low.all():  # e.g. dark frames: exact Poisson plus read noise everywhere
        counts = _poisson(rng, lam, n_frames) + dark
        counts += read * rng.standard_normal(shape, dtype=np.float32)
    else:
        # Gaussian N(lam, lam + read^2), then exact Poisson where the expected count is low
        counts = rng.standard_normal(shape, dtype=np.float32)
        counts *= np.sqrt(lam + read**2)
        counts += lam + dark
        if low.any():
            where = np.nonzero(low)
            shot = _poisson(rng, lam[where], n_frames)
            shot += dark[where] + read * rng.standard_normal(shot.shape, dtype=np.float32)
            counts[(slice(None), *where)] = shot
    # round half up and clip to the 16-bit range (astype truncates the +0.5-shifted values)
    counts += np.float32(0.5)
    if float(lam.max(initial=0.0) + dark.max(initial=0.0)) > 0.9 * _U16_MAX:
        saturated = int((counts >= _U16_MAX + 1).sum())
        if saturated:
            logger.warning("detector saturated: %d pixel values clipped at 65535", saturated)
    np.clip(counts, 0.0, _U16_MAX, out=counts)
    return counts.astype(np.uint16)
