"""Particle shapes for a simulated field of view: irregular blobs, thickness profiles, placement.

Each particle is a perturbed ellipse in polar coordinates (a few low-order Fourier harmonics on
the radius), with an ellipsoid-like thickness profile ``t = t_max * sqrt(1 - rho^2)`` where
``rho`` is the normalised radius (0 at the centre, 1 at the outline). Particles may touch (some
are deliberately placed against a neighbour) but never share pixels, so each stays separable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["Blob", "place_blobs", "rasterize"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Blob:
    """Outline of one particle (pixels): centre, semi-axes, rotation and radial harmonics."""

    row: float
    col: float
    a: float
    b: float
    angle: float
    harmonics: tuple[tuple[int, float, float], ...]  # (order, relative amplitude, phase)
    t_max_um: float

    @property
    def mean_radius(self) -> float:
        return 0.5 * (self.a + self.b)

    @property
    def max_radius(self) -> float:
        return max(self.a, self.b) * (1.0 + sum(abs(h[1]) for h in self.harmonics))

    def radius(self, theta: np.ndarray) -> np.ndarray:
        """Outline radius (px) in direction ``theta`` (radians, image frame)."""
        phi = theta - self.angle
        r = self.a * self.b / np.sqrt((self.b * np.cos(phi)) ** 2 + (self.a * np.sin(phi)) ** 2)
        wobble = 1.0 + sum(amp * np.cos(order * theta + ph) for order, amp, ph in self.harmonics)
        return r * wobble


def _random_blob(rng: np.random.Generator, row, col, mean_radius, pixel_size_um) -> Blob:
    elong = rng.uniform(1.0, 1.5)
    a = mean_radius * np.sqrt(elong)
    b = mean_radius / np.sqrt(elong)
    harmonics = tuple(
        (order, float(rng.uniform(0.0, 0.12 / (order - 1))), float(rng.uniform(0, 2 * np.pi)))
        for order in (2, 3, 4, 5)
    )
    t_max = 2.0 * mean_radius * pixel_size_um * rng.uniform(0.35, 0.6)
    return Blob(
        row=float(row),
        col=float(col),
        a=float(a),
        b=float(b),
        angle=float(rng.uniform(0, np.pi)),
        harmonics=harmonics,
        t_max_um=float(t_max),
    )


def place_blobs(
    rng: np.random.Generator,
    *,
    shape: tuple[int, int],
    n: int,
    radius_range: tuple[float, float],
    pixel_size_um: float,
    touch_fraction: float = 0.3,
    max_tries: int = 2000,
) -> list[Blob]:
    """Place ``n`` non-overlapping blobs inside the frame.

    A fraction ``touch_fraction`` of them is placed right against an earlier one (touching
    neighbours, as in real powder samples). Logs a warning when fewer than ``n`` fit.
    """
    ny, nx = shape
    blobs: list[Blob] = []
    tries = 0
    while len(blobs) < n and tries < max_tries:
        tries += 1
        r = rng.uniform(*radius_range)
        if blobs and rng.random() < touch_fraction:
            other = blobs[int(rng.integers(len(blobs)))]
            direction = rng.uniform(0, 2 * np.pi)
            dist = (other.mean_radius + r) * rng.uniform(0.95, 1.05)
            row = other.row + dist * np.sin(direction)
            col = other.col + dist * np.cos(direction)
        else:
            row, col = rng.uniform(0, ny), rng.uniform(0, nx)
        blob = _random_blob(rng, row, col, r, pixel_size_um)
        margin = blob.max_radius + 2
        if not (margin <= row <= ny - margin and margin <= col <= nx - margin):
            continue
        if any(
            np.hypot(row - o.row, col - o.col) < 0.9 * (blob.mean_radius + o.mean_radius)
            for o in blobs
        ):
            continue
        blobs.append(blob)
    if len(blobs) < n:
        logger.warning("only %d of %d particles fit in a %dx%d frame", len(blobs), n, ny, nx)
    return blobs


def rasterize(
    blobs: list[Blob], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label map, thickness (um) and normalised radius of ``blobs`` on a ``shape`` grid.

    Where two outlines overlap, the pixel goes to the particle in whose interior it lies deeper
    (smaller normalised radius), so particles touch without sharing pixels.

    Returns
    -------
    labels : int32 (ny, nx), 0 = background, blob ``i`` has label ``i + 1``
    thickness_um : float32 (ny, nx)
    rho : float32 (ny, nx), normalised radius inside particles, 1 elsewhere
    """
    ny, nx = shape
    labels = np.zeros(shape, dtype=np.int32)
    thickness = np.zeros(shape, dtype=np.float32)
    rho = np.ones(shape, dtype=np.float32)
    for i, blob in enumerate(blobs):
        rmax = blob.max_radius + 1
        r0, r1 = max(int(blob.row - rmax), 0), min(int(blob.row + rmax) + 2, ny)
        c0, c1 = max(int(blob.col - rmax), 0), min(int(blob.col + rmax) + 2, nx)
        rr, cc = np.mgrid[r0:r1, c0:c1]
        dr, dc = rr + 0.5 - blob.row - 0.5, cc + 0.5 - blob.col - 0.5
        rad = np.hypot(dr, dc)
        p = (rad / blob.radius(np.arctan2(dr, dc))).astype(np.float32)
        win = (p < 1.0) & (p < rho[r0:r1, c0:c1])
        labels[r0:r1, c0:c1][win] = i + 1
        rho[r0:r1, c0:c1][win] = p[win]
        thickness[r0:r1, c0:c1][win] = blob.t_max_um * np.sqrt(1.0 - p[win] ** 2)
    return labels, thickness, rho
