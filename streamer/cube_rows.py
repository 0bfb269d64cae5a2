"""The storage of a spectral cube: one float32 row per energy, ascending, and per-row state.

With planned energies the rows are allocated once; without a plan they grow by doubling
(transiently 3x the rows during the copy) and a new energy is inserted at its sorted position.
With ``prefault`` the memory is committed when it is allocated: a run that does not fit fails at
once, and no frame pays for the first touch of its row (1-2 ms per 16 MB row on bare metal, up to
80 ms on a busy virtual machine).

Examples
--------
>>> rows = CubeRows(None, capacity=1)
>>> rows.allocate(4)
>>> for energy in (8010.0, 8000.0, 8020.0):
...     _ = rows.insert(energy)
>>> rows.energies[: rows.n].tolist(), rows.data.shape
([8000.0, 8010.0, 8020.0], (4, 4))
"""

from __future__ import annotations

import logging
import time

import numpy as np

__all__ = ["CubeRows", "UnplannedEnergyError"]

logger = logging.getLogger(__name__)


class UnplannedEnergyError(ValueError):
    """A sample's energy is not within tolerance of any planned energy."""


class CubeRows:
    """Rows of the OD cube and, per row, its energy, readiness, drift and measured energy.

    Parameters
    ----------
    planned : ndarray, optional
        Planned row energies (eV), unique and ascending; None for a growing cube.
    capacity : int
        Initial rows of a growing cube.
    prefault : bool
        Commit the memory of rows when they are allocated.

    Attributes
    ----------
    data : ndarray, float32, shape (capacity, n_pixels) or None
        The rows (None until :meth:`allocate`); the first ``n`` are in use.
    energies, ready, shifts, measured, means : ndarray
        Per row (``capacity`` of them): energy (eV, +inf beyond ``n``), normalised, drift
        ``(dy, dx)`` px, energy as measured (NaN until a sample), mean OD over the row's pixels
        (NaN until normalised; set by the cube when it stores the row).
    n : int
        Rows in use.
    """

    def __init__(self, planned: np.ndarray | None, *, capacity: int = 16, prefault: bool = True):
        self.planned = planned is not None
        size = planned.size if planned is not None else int(capacity)
        self.energies = planned.copy() if planned is not None else np.full(size, np.inf)
        self.n = size if planned is not None else 0
        self.ready, self.shifts = np.zeros(size, bool), np.zeros((size, 2))
        self.measured = np.full(size, np.nan)
        self.means = np.full(size, np.nan)
        self.prefault = prefault
        self.data: np.ndarray | None = None
        self.warned_order = False

    def allocate(self, n_pixels: int) -> None:
        """Allocate the rows for frames of ``n_pixels`` pixels."""
        self.data = self.new_rows(self.energies.size, n_pixels)

    def new_rows(self, n: int, n_pixels: int) -> np.ndarray:
        """Zeroed rows; with ``prefault``, their memory is committed now, not at the first write."""
        rows = np.zeros((n, n_pixels), np.float32)  # calloc: lazily committed pages
        if self.prefault:
            t0 = time.perf_counter()
            rows.reshape(-1)[::1024] = 0.0  # one write per 4 KiB page
            logger.debug("committed %.0f MB in %.2f s", rows.nbytes / 1e6, time.perf_counter() - t0)
        return rows

    def row_of(self, energy: float) -> int:
        """Index of the row whose energy is ``energy`` (a row energy, not a measured one)."""
        return int(np.searchsorted(self.energies[: self.n], energy))

    def nearest(self, energy: float) -> tuple[int, float]:
        """Index of the row nearest to ``energy`` and its distance (eV); ``(-1, inf)`` if none."""
        rows = self.energies[: self.n]
        if not rows.size:
            return -1, np.inf
        i = int(np.argmin(np.abs(rows - energy)))
        return i, float(abs(rows[i] - energy))

    def match(self, energy: float, tolerance: float) -> int:
        """The row of a sample measured at ``energy`` (eV).

        The nearest row within ``tolerance``; else, growing, a new row; else (planned energies)
        :class:`UnplannedEnergyError`.
        """
        i, distance = self.nearest(energy)
        if i >= 0 and distance <= tolerance:
            return i
        if self.planned:
            rows = self.energies[: self.n]
            raise UnplannedEnergyError(
                f"{energy:.3f} eV is not within {tolerance:.3f} eV of a planned energy"
                f" ({rows[0]:.2f}..{rows[-1]:.2f} eV, {rows.size} points)"
            )
        return self.insert(energy)

    def insert(self, energy: float) -> int:
        """Add a row for ``energy`` at its sorted position (doubling capacity); returns it."""
        n = self.n
        if n == self.energies.size:
            cap = max(2 * n, 1)
            if self.data is not None:
                grown = self.new_rows(cap, self.data.shape[1])
                grown[:n] = self.data[:n]
                self.data = grown
            self.energies = np.concatenate([self.energies, np.full(cap - n, np.inf)])
            self.ready = np.concatenate([self.ready, np.zeros(cap - n, bool)])
            self.shifts = np.concatenate([self.shifts, np.zeros((cap - n, 2))])
            self.measured = np.concatenate([self.measured, np.full(cap - n, np.nan)])
            self.means = np.concatenate([self.means, np.full(cap - n, np.nan)])
        pos = int(np.searchsorted(self.energies[:n], energy))
        if pos < n and not self.warned_order:
            self.warned_order = True
            logger.warning("energies arrive out of order: each such row moves the rows above it")
        if self.data is not None:
            for j in range(n, pos, -1):  # row by row: no temporary copy of the cube
                self.data[j] = self.data[j - 1]
        for arr in (self.energies, self.ready, self.shifts, self.measured, self.means):
            arr[pos + 1 : n + 1] = arr[pos:n].copy()
        self.energies[pos], self.ready[pos] = energy, False
        self.shifts[pos], self.measured[pos], self.means[pos] = 0.0, np.nan, np.nan
        self.n = n + 1
        return pos
