"""One energy point's work, on threads: average, normalise, register, shift and store a frame.

:class:`FrameIngest` runs the kernels of :mod:`streamer.exposure_average`,
:mod:`streamer.flatfield`, :mod:`streamer.registration` and :mod:`streamer.image_shift` over
horizontal bands of the frame on a :class:`~streamer.band_pool.BandPool`, into caller-owned rows.
It keeps what one frame needs besides the cube: a frame of work space for registration and the
per-pixel validity mask; the bookkeeping of which row, which flat and which warnings is
:class:`streamer.cube.SpectralCube`'s.

Per frame, with registration (the bands of each step are shared by the threads):

1. ``OD = ln((flat - dark) / (sample - dark)) + offset`` into the work frame, the central bands
   (the ones the registration reads) first;
2. as soon as those are done, the drift is measured on the calling thread while the threads
   normalise the outer bands;
3. the work frame is shifted back by the drift into the cube row, block by block, and each block
   is checked for non-finite values right after it is written (still in cache): those pixels get
   ``fill_value`` and lose their validity, and so does the border the shift left without data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from streamer.band_pool import BandPool
from streamer.exposure_average import robust_average
from streamer.flatfield import mask_nonfinite_rows, normalise_rows
from streamer.image_shift import apply_shift, covered_region
from streamer.registration import DriftTracker

__all__ = ["FrameIngest", "FrameResult"]


@dataclass
class FrameResult:
    """What storing one frame found."""

    drift: np.ndarray  # (dy, dx) px; zeros without registration
    n_masked: int  # non-finite values replaced by the fill value
    n_border: int  # pixels the drift correction left without data
    n_failed: int  # rejected registrations (0 or 1)


class FrameIngest:
    """Average, normalise, register and store frames of one shape (see the module docstring).

    Parameters
    ----------
    shape : (ny, nx)
        Frame shape.
    tracker : DriftTracker, optional
        Measures the drift of each frame; None stores frames unregistered.
    fill_value : float
        Value stored for masked pixels and the border without data.
    stack_average : str
        Averaging of exposure stacks (:func:`~streamer.exposure_average.robust_average`).
    n_threads, block_rows : int
        Threads and rows per cache block (:class:`~streamer.band_pool.BandPool`).

    Attributes
    ----------
    valid : ndarray, bool, shape (ny, nx)
        False for every pixel that was masked in any stored frame.
    timings : dict of str to float
        Cumulative seconds in ``average_normalise``, ``register`` and ``shift_store``.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        tracker: DriftTracker | None,
        fill_value: float,
        stack_average: str,
        n_threads: int,
        block_rows: int,
    ) -> None:
        self.shape, self.tracker, self.fill_value = shape, tracker, float(fill_value)
        self.stack_average, self.block_rows = stack_average, int(block_rows)
        self.pool = BandPool(shape, n_threads=n_threads, block_rows=block_rows)
        self.valid = np.ones(shape, bool)
        self.work = np.empty(shape, np.float32) if tracker is not None else None
        self.timings = {"average_normalise": 0.0, "register": 0.0, "shift_store": 0.0}

    @property
    def n_threads(self) -> int:
        return self.pool.n_threads

    def average(self, stack: np.ndarray, out: np.ndarray, *, timed: bool = True) -> None:
        """Robust average of a ``(k, ny, nx)`` stack into ``out`` (float32, ``(ny, nx)``)."""
        t0 = time.perf_counter()
        self.pool.run(
            lambda sc, r0, r1: robust_average(
                stack, method=self.stack_average, out=out, rows=(r0, r1), scratch=sc
            )
        )
        if timed:
            self.timings["average_normalise"] += time.perf_counter() - t0

    def store(
        self,
        sample: np.ndarray,
        flat: np.ndarray | float,
        dark: np.ndarray | None,
        out: np.ndarray,
        *,
        offset: float = 0.0,
        flat_store: np.ndarray | None = None,
    ) -> FrameResult:
        """Normalise, register, shift and store one frame into ``out``.

        Parameters
        ----------
        sample, flat, dark, offset, flat_store
            As for :func:`~streamer.flatfield.normalise_rows`; ``sample`` may be ``out`` itself
            (a raw average waiting in its row).
        out : ndarray, float32, shape (ny, nx)
            The cube row.
        """
        register = self.tracker is not None
        target = self.work if register else out
        drift = np.zeros(2)
        spent = {"register": 0.0}
        failed = [0]

        def measure():  # on this thread, while the workers normalise the outer bands
            t = time.perf_counter()
            before = self.tracker.n_failed_
            drift[:] = self.tracker.update(self.work)
            failed[0] = self.tracker.n_failed_ - before
            spent["register"] = time.perf_counter() - t

        t0 = time.perf_counter()
        self.pool.run(
            lambda sc, r0, r1: normalise_rows(
                sample, flat, dark, target, offset=offset, rows=(r0, r1), scratch=sc,
                method=self.stack_average, flat_store=flat_store,
            ),
            first_rows=self.tracker.rows_used(self.shape) if register else None,
            then=measure if register else None,
        )  # fmt: skip
        t2 = time.perf_counter()
        t1 = t2 - spent["register"]
        counts = []

        def finish(sc, r0, r1):  # block by block: the check reads what the shift just wrote
            n_bad, step = 0, self.block_rows
            for b0 in range(r0, r1, step):
                rows = (b0, min(r1, b0 + step))
                if register:
                    apply_shift(self.work, drift, out=out, fill=self.fill_value, rows=rows,
                                block_rows=step, scratch=sc.shift)  # fmt: skip
                n_bad += mask_nonfinite_rows(
                    out, self.valid, self.fill_value, rows=rows, scratch=sc
                )
            counts.append(n_bad)

        self.pool.run(finish)
        n_border = 0
        if register:  # the border the shift left without data: filled, and not valid
            ys, xs = covered_region(self.shape, drift)
            self.valid[: ys.start], self.valid[ys.stop :] = False, False
            self.valid[:, : xs.start], self.valid[:, xs.stop :] = False, False
            n_border = self.valid.size - (ys.stop - ys.start) * (xs.stop - xs.start)
        self.timings["average_normalise"] += t1 - t0
        self.timings["register"] += t2 - t1
        self.timings["shift_store"] += time.perf_counter() - t2
        return FrameResult(drift, sum(counts), n_border, failed[0])

    def close(self) -> None:
        """Stop the threads."""
        self.pool.close()
