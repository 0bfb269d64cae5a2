"""Incremental per-pixel spectra: dark, flat and sample frames in, one float32 OD cube out.

:class:`SpectralCube` takes detector frames as they arrive, in whatever order a document dialect
produces them (FXI ``xanes_scan2``: dark, then per energy a sample stack and its flat stack; FXI
``xanes_scan``: all samples, then all flats; generic runs: perhaps no flat or dark at all), and
keeps one optical-density cube ``(n_energies, n_pixels)`` float32, registered between energies.

Per energy point:

1. **Robust average** of the ``k`` exposures of a stack, so that a cosmic-ray hit in one exposure
   does not survive (:func:`streamer.exposure_average.robust_average`: a sorting-network median for
   k = 3 or 5, a trimmed mean otherwise; measured choice documented there).
2. **Normalisation** ``OD = -ln((sample - dark) / (flat - dark))``, plus ``ln(I0_sample / I0_flat)``
   when ``i0_correction`` is on and both monitors were given. A sample whose flat has not arrived
   yet is **deferred**: its raw average waits in its own cube row (no extra memory) and is
   normalised when the flat for that energy comes (FXI sends it after the sample, or at the end).
   :meth:`SpectralCube.finalize` normalises leftovers with the nearest-energy cached flat (a logged
   warning), or, if no flat ever came, as raw absorbance ``-ln((sample - dark) / bright)`` where
   ``bright`` is the ``bright_percentile`` of the frame (open beam around the particles; detector
   non-uniformity stays in the data: a logged warning). ``expect_flats=False`` does this at once.
3. **Registration** (:mod:`streamer.registration`): the drift of each new OD image against the
   reference is measured on a reduced edge image and undone with a bilinear shift into the row
   (:class:`streamer.frame_ingest.FrameIngest` runs these steps on threads, band by band).

What downstream sees
--------------------
``od_`` is always finite. A pixel whose sample or flat (minus dark) is zero, negative or
non-finite, or whose OD is not finite, is stored as ``fill_value`` (default 0.0) in that row and
``valid_`` is False for it from then on (one mask per pixel, for all energies); so are the pixels
along the border that a drift correction left without data. Counts are in ``counters_`` and are
logged once, at :meth:`~SpectralCube.finalize`. Rows whose ``ready_`` is False hold nothing
meaningful (zeros, or a raw average waiting for its flat): use ``ready_`` before reading a row.

Memory: one float32 cube (:class:`streamer.cube_rows.CubeRows`), committed when allocated
(``prefault``). With ``energies`` planned, it is allocated once (rows are the planned energies,
ascending; a sample maps to the nearest planned energy within ``energy_tolerance`` and any other
energy raises :class:`UnplannedEnergyError`). Without a plan it grows by doubling (transiently 3x
the rows during a copy), inserting rows in energy order. Besides the cube: one frame of work space
for registration, the dark, up to ``max_cached_flats`` flats plus a global one, and per-thread
scratch of ``block_rows`` rows.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> flat = rng.poisson(1000, (3, 32, 32)).astype(np.uint16)
>>> cube = SpectralCube(frame_shape=(32, 32), energies=[8000.0, 8010.0], register=False)
>>> row = cube.add_sample((flat * 0.5).astype(np.uint16), energy=8010.0)
>>> cube.ready_.tolist(), cube.pending_
([False, False], [8010.0])
>>> cube.add_flat(flat, energy=8010.0)
>>> cube.ready_.tolist(), round(float(cube.image(row).mean()), 2)
([False, True], 0.69)
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from streamer.cube_rows import CubeRows, UnplannedEnergyError
from streamer.flatfield import Flat, FlatCache, monitor_value, resolve_method
from streamer.frame_ingest import FrameIngest
from streamer.normalize import MEAN_SAMPLE_PIXELS
from streamer.registration import DriftTracker

__all__ = ["FrameShapeError", "SpectralCube", "UnplannedEnergyError"]

logger = logging.getLogger(__name__)


class FrameShapeError(ValueError):
    """A frame's shape differs from the run's frame shape."""


@dataclass
class _Pending:
    energy: float  # measured energy of the sample
    i0: float | None


class SpectralCube:
    """Per-pixel spectra that grow frame by frame (see the module docstring).

    Parameters
    ----------
    frame_shape : (ny, nx), optional
        Detector frame shape; taken from the first frame when omitted.
    energies : array-like of float, optional
        Planned energies (eV). The cube is preallocated with one row per planned energy.
    register : bool
        Correct the drift between energies (:class:`~streamer.registration.DriftTracker`).
    i0_correction : bool
        Add ``ln(I0_sample / I0_flat)`` to the OD when both monitors are given.
    reference : {"first", "running"}
        Registration reference: the first normalised image or the running average.
    energy_tolerance : float, optional
        Largest distance (eV) at which a sample maps to a planned energy, or a flat to a sample.
        Default: half the smallest planned step but at most 1 eV (0.25 eV without a plan).
    expect_flats : bool
        False: normalise samples at once as raw absorbance (runs that have no flats).
    stack_average : {"auto", "median", "trimmed_mean", "mean"}
        How the exposures of a stack are averaged (:func:`~streamer.flatfield.robust_average`).
    fill_value : float
        Value stored for masked pixels; finite, so that nothing downstream sees NaN.
    capacity : int
        Initial rows of a growing cube.
    max_cached_flats : int
        Per-energy flats kept for later samples and for the nearest-flat fallback.
    bright_percentile : float
        Percentile of ``sample - dark`` (every 4th pixel of every 4th row) taken as the open
        beam for raw absorbance.
    n_threads : int, optional
        Threads working on horizontal bands of a frame (default: up to 2 CPUs).
    drift_tracker : DriftTracker, optional
        A configured tracker (overrides ``reference``).
    block_rows : int
        Rows per cache block.
    prefault : bool
        Commit the cube's memory when it is allocated, not row by row as frames arrive
        (:class:`~streamer.cube_rows.CubeRows` says why).

    Attributes
    ----------
    energies_, od_, ready_, valid_, shifts_, measured_energies_ : ndarray
        Row energies (eV, ascending), the cube view ``(n_rows, n_pixels)``, normalised rows,
        usable pixels, drift ``(dy, dx)`` px per row, energies as measured (NaN until a sample).
    mean_spectrum_ : ndarray, float64, shape (n_rows,)
        Mean OD of each normalised row (NaN where not ``ready_``) over up to 20 000 evenly spaced
        pixels (``MEAN_SAMPLE_PIXELS``), taken as the row is stored: the field's mean spectrum,
        which a live analysis checks at every energy, without reading the whole cube each time.
    n_received_ : int
        Sample stacks received.
    counters_ : dict of str to int
        Warnings by kind: ``masked_values``, ``border_pixels``, ``nearest_flat``,
        ``raw_absorbance``, ``i0_missing``, ``duplicate_energy``, ``late_dark``,
        ``registration_failed``.
    timings_ : dict of str to float
        Cumulative seconds in ``average_normalise``, ``register`` and ``shift_store``.
    """

    def __init__(
        self,
        *,
        frame_shape: tuple[int, int] | None = None,
        energies=None,
        register: bool = True,
        i0_correction: bool = True,
        reference: str = "first",
        energy_tolerance: float | None = None,
        expect_flats: bool = True,
        stack_average: str = "auto",
        fill_value: float = 0.0,
        capacity: int = 16,
        max_cached_flats: int = 2,
        bright_percentile: float = 99.0,
        n_threads: int | None = None,
        drift_tracker: DriftTracker | None = None,
        block_rows: int = 64,
        prefault: bool = True,
    ) -> None:
        resolve_method(stack_average, 3)
        self.register, self.i0_correction, self.expect_flats = register, i0_correction, expect_flats
        self.stack_average, self.fill_value, self.block_rows = stack_average, fill_value, block_rows
        self.max_cached_flats, self.bright_percentile = max_cached_flats, bright_percentile
        self.prefault = prefault
        if not math.isfinite(fill_value):
            raise ValueError(
                f"fill_value must be finite (nothing downstream sees NaN), got {fill_value}"
            )
        self.n_threads = n_threads or max(1, min(2, os.cpu_count() or 1))
        self.tracker = drift_tracker or DriftTracker(reference=reference)
        planned = None if energies is None else np.unique(np.asarray(energies, np.float64))
        if planned is not None and planned.size == 0:
            raise ValueError("energies, when given, must not be empty")
        if energy_tolerance is None:
            step = np.diff(planned).min() if planned is not None and planned.size > 1 else 0.5
            energy_tolerance = min(0.5 * step, 1.0)
        self.energy_tolerance = float(energy_tolerance)
        self._rows = CubeRows(planned, capacity=capacity, prefault=prefault)
        self._shape: tuple[int, int] | None = None
        self._ingest: FrameIngest | None = None
        self._dark: np.ndarray | None = None
        self._flats: FlatCache | None = None
        self._pending: dict[float, _Pending] = {}
        self._finalized = False
        self.n_received_ = 0
        self.counters_ = dict.fromkeys(
            ("masked_values", "border_pixels", "nearest_flat", "raw_absorbance", "i0_missing",
             "duplicate_energy", "late_dark", "registration_failed"), 0)  # fmt: skip
        self.timings_ = {"average_normalise": 0.0, "register": 0.0, "shift_store": 0.0}
        if frame_shape is not None:
            self._allocate(tuple(int(v) for v in frame_shape))

    # ----------------------------------------------------------------- results
    @property
    def energies_(self) -> np.ndarray:
        return self._rows.energies[: self._rows.n]

    @property
    def od_(self) -> np.ndarray:
        if self._rows.data is None:
            return np.zeros((self._rows.n, 0), np.float32)
        return self._rows.data[: self._rows.n]

    @property
    def ready_(self) -> np.ndarray:
        return self._rows.ready[: self._rows.n]

    @property
    def valid_(self) -> np.ndarray | None:
        return None if self._ingest is None else self._ingest.valid.reshape(-1)

    @property
    def mean_spectrum_(self) -> np.ndarray:
        return self._rows.means[: self._rows.n]

    @property
    def shifts_(self) -> np.ndarray:
        return self._rows.shifts[: self._rows.n]

    @property
    def measured_energies_(self) -> np.ndarray:
        return self._rows.measured[: self._rows.n]

    @property
    def frame_shape_(self) -> tuple[int, int] | None:
        return self._shape

    @property
    def pending_(self) -> list[float]:
        """Row energies (eV) of samples waiting for their flat."""
        return sorted(self._pending)

    def image(self, row: int) -> np.ndarray:
        """Row ``row`` of the cube as an ``(ny, nx)`` view."""
        if self._rows.data is None or not 0 <= row < self._rows.n:
            raise IndexError(f"row {row} out of range (cube has {self._rows.n} rows)")
        return self._rows.data[row].reshape(self._shape)

    # ------------------------------------------------------------------ inputs
    def add_dark(self, stack: np.ndarray) -> None:
        """Average and keep a dark stack; it applies to every later normalisation."""
        stack = self._check(stack)
        done = int(self.ready_.sum())
        if done:
            self._warn(
                "late_dark", done, "dark arrived after %d rows were normalised without it", done
            )
        if self._dark is None:
            self._dark = np.empty(self._shape, np.float32)
        self._ingest.average(stack, self._dark, timed=False)

    def add_flat(self, stack: np.ndarray, *, energy: float | None = None, i0=None) -> None:
        """Add a flat (open beam) stack for ``energy`` (eV), or for all energies when None.

        Samples waiting for this flat are normalised now.
        """
        stack = self._check(stack)
        flat = self._flats.new(energy, i0)
        if energy is None:
            targets = sorted(self._pending)
        else:
            targets = [e for e in sorted(self._pending) if self._flats.matches(flat, e)]
        if targets:
            self._normalise(targets[0], flat, flat_stack=stack)
            for e in targets[1:]:
                self._normalise(e, flat)
        else:
            self._ingest.average(stack, flat.image, timed=False)
        self._flats.keep(flat)

    def add_sample(self, stack: np.ndarray, *, energy: float, i0=None) -> int:
        """Add the sample stack measured at ``energy`` (eV); returns its row index.

        Raises
        ------
        FrameShapeError
            The frames do not have the run's frame shape.
        UnplannedEnergyError
            ``energy`` is not within ``energy_tolerance`` of a planned energy.
        """
        stack = self._check(stack)
        key = self._row_energy(float(energy))
        row = self._rows.row_of(key)
        self._rows.measured[row] = float(energy)
        self.n_received_ += 1
        pending = _Pending(float(energy), monitor_value(i0))
        flat = self._flats.for_sample(key)
        if flat is not None:
            self._pending[key] = pending
            self._normalise(key, flat, sample_stack=stack)
        else:
            self._ingest.average(stack, self.image(row))
            self._pending[key] = pending
            if not self.expect_flats:
                self._normalise(key, None)
        return self._rows.row_of(key)

    def finalize(self) -> SpectralCube:
        """Normalise leftovers (nearest flat, or raw absorbance), log the counters, stop threads."""
        for key in sorted(self._pending):
            flat = self._flats.nearest(key) if self._flats is not None else None
            if flat is not None:
                self._warn(
                    "nearest_flat", 1, "no flat arrived for %.2f eV: normalised with the flat %s",
                    key, "for all energies" if flat.energy is None else f"of {flat.energy:.2f} eV",
                )  # fmt: skip
                self._normalise(key, flat)
            else:
                self._normalise(key, None)
        bad = {k: v for k, v in self.counters_.items() if v}
        if bad:
            logger.warning("spectral cube finalized with warnings: %s", bad)
        self.close()
        self._finalized = True
        return self

    def close(self) -> None:
        """Stop the worker threads (the results stay available)."""
        if self._ingest is not None:
            self._ingest.close()

    def __enter__(self) -> SpectralCube:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --------------------------------------------------------------- internals
    def _allocate(self, shape: tuple[int, int]) -> None:
        if len(shape) != 2 or min(shape) < 1:
            raise FrameShapeError(f"frame_shape must be (ny, nx), got {shape}")
        self._shape = shape
        self._rows.allocate(shape[0] * shape[1])
        self._flats = FlatCache(
            shape, max_flats=self.max_cached_flats, tolerance=self.energy_tolerance
        )
        self._ingest = FrameIngest(
            shape, tracker=self.tracker if self.register else None, fill_value=self.fill_value,
            stack_average=self.stack_average, n_threads=self.n_threads, block_rows=self.block_rows,
        )  # fmt: skip
        self._ingest.timings = self.timings_  # one dict: the cube's figures are the ingest's

    def _check(self, stack) -> np.ndarray:
        """A (k, ny, nx) view of ``stack``; checks the frame shape."""
        if self._finalized:
            raise RuntimeError("the cube is finalized; start a new SpectralCube for a new run")
        stack = np.asarray(stack)
        stack = stack[None] if stack.ndim == 2 else stack
        if stack.ndim != 3 or stack.shape[0] < 1 or not np.issubdtype(stack.dtype, np.number):
            raise FrameShapeError(f"expected a (k, ny, nx) numeric stack, got {stack.shape}")
        if self._shape is None:
            self._allocate(stack.shape[1:])
        elif stack.shape[1:] != self._shape:
            raise FrameShapeError(f"frame shape {stack.shape[1:]} differs from {self._shape}")
        return np.ascontiguousarray(stack)

    def _row_energy(self, energy: float) -> float:
        """The row energy a sample at ``energy`` belongs to (adds a row when growing)."""
        n_rows = self._rows.n
        i = self._rows.match(energy, self.energy_tolerance)
        key = float(self._rows.energies[i])
        if self._rows.n == n_rows and (self._rows.ready[i] or key in self._pending):
            self._warn(
                "duplicate_energy", 1, "a second sample at %.2f eV replaces the first", energy
            )
            self._pending.pop(key, None)
            self._rows.ready[i] = False
            self._rows.means[i] = np.nan
        return key

    def _warn(self, kind: str, count: int, message: str, *args) -> None:
        """Count a warning; log the first of its kind (all are summarised at finalize)."""
        self.counters_[kind] += count
        if self.counters_[kind] == count:
            logger.warning(message + " (further ones are only counted)", *args)
        else:
            logger.debug(message, *args)

    def _i0_offset(self, pending: _Pending, flat: Flat | None) -> float:
        if not self.i0_correction or flat is None:
            return 0.0
        if pending.i0 is None or flat.i0 is None:
            if pending.i0 is not None or flat.i0 is not None:
                self.counters_["i0_missing"] += 1
            return 0.0
        return math.log(pending.i0 / flat.i0)

    def _normalise(self, key: float, flat: Flat | None, *, sample_stack=None, flat_stack=None):
        """Normalise, register and store the sample of row energy ``key``.

        The sample is ``sample_stack`` or else the raw average waiting in its row; the flat is
        ``flat_stack`` (whose average is kept in ``flat.image``) or else ``flat.image``; no flat
        means raw absorbance.
        """
        pending = self._pending.pop(key)
        row = self._rows.row_of(key)
        dst = self.image(row)
        sample = dst if sample_stack is None else sample_stack
        flat_src: np.ndarray | float
        if flat is None:  # raw absorbance divides by a level that is already dark-subtracted
            msg = "no flat for %.2f eV: raw absorbance against the frame's bright level"
            self._warn("raw_absorbance", 1, msg, key)
            bright = dst[::4, ::4] - (self._dark[::4, ::4] if self._dark is not None else 0)
            flat_src = float(np.nanpercentile(bright, self.bright_percentile))
        else:
            flat_src = flat.image if flat_stack is None else flat_stack
        result = self._ingest.store(
            sample, flat_src, self._dark, dst, offset=self._i0_offset(pending, flat),
            flat_store=None if flat_stack is None else flat.image,
        )  # fmt: skip
        self.counters_["registration_failed"] += result.n_failed
        self.counters_["border_pixels"] += result.n_border
        self.counters_["masked_values"] += result.n_masked
        self._rows.ready[row], self._rows.shifts[row] = True, result.drift
        self._rows.means[row] = _row_mean(dst)


def _row_mean(row: np.ndarray) -> float:
    """Mean of a stored row over up to ``MEAN_SAMPLE_PIXELS`` evenly spaced pixels (float64
    sum), the sample :func:`~streamer.normalize.estimate_e0` takes, at a fixed cost per frame
    (0.2 ms of a 2048x2048 frame instead of the 3 ms of a pass over its 16 MB); over their
    finite values should any not be."""
    flat = row.reshape(-1)
    sample = flat[:: max(1, flat.size // MEAN_SAMPLE_PIXELS)]
    mean = float(sample.mean(dtype=np.float64))
    if math.isfinite(mean):
        return mean
    finite = sample[np.isfinite(sample)]
    return float(finite.mean(dtype=np.float64)) if finite.size else math.nan
