"""Run a kernel over horizontal bands of a frame on a small pool of threads.

numpy releases the GIL inside its ufunc loops, so two threads working on two bands of one frame
run in parallel. :class:`BandPool` splits a frame of ``ny`` rows into bands of whole cache blocks,
hands them to whichever thread is free, and gives each call a reusable
:class:`~streamer.exposure_average.BlockScratch` of its own.

Examples
--------
>>> import numpy as np
>>> out = np.zeros((100, 8), np.float32)
>>> with BandPool((100, 8), n_threads=2, block_rows=16) as pool:
...     pool.run(lambda scratch, r0, r1: out[r0:r1].fill(r1 - r0 > 0))
>>> bool(out.all())
True
"""

from __future__ import annotations

import itertools
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from streamer.exposure_average import BlockScratch

__all__ = ["BandPool"]

Work = Callable[[BlockScratch, int, int], object]


class BandPool:
    """Threads that work on horizontal bands of frames of one shape.

    Parameters
    ----------
    shape : (ny, nx)
        Frame shape.
    n_threads : int
        Worker threads (1: everything runs on the calling thread).
    block_rows : int
        Rows per cache block; bands are whole blocks, and each scratch holds one block.
    bands_per_thread : int
        Bands per thread and frame: more bands let a thread that keeps its core take over the
        work of one that loses it (on a shared machine), fewer cost fewer thread wake-ups.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        n_threads: int,
        block_rows: int,
        bands_per_thread: int = 4,
    ) -> None:
        self.shape, self.block_rows = shape, int(block_rows)
        n_blocks = -(-shape[0] // self.block_rows)
        self.n_threads = max(1, min(int(n_threads), n_blocks))
        n_bands = (
            1 if self.n_threads == 1 else min(n_blocks, int(bands_per_thread) * self.n_threads)
        )
        bounds = [
            min(shape[0], (n_blocks * i // n_bands) * self.block_rows) for i in range(n_bands + 1)
        ]
        self.bands = list(itertools.pairwise(bounds))
        self._scratch: queue.SimpleQueue[BlockScratch] = queue.SimpleQueue()
        for _ in range(self.n_threads):
            self._scratch.put(BlockScratch(self.block_rows, shape[1]))
        self._executor: ThreadPoolExecutor | None = None

    def run(
        self,
        work: Work,
        *,
        first_rows: tuple[int, int] | None = None,
        then: Callable[[], object] | None = None,
    ) -> None:
        """Run ``work(scratch, r0, r1)`` over all bands; return when every band is done.

        Four bands per thread, taken by whichever thread is free: on a busy machine a thread
        that loses its core does not hold the frame up for long. With ``then``, the bands that
        overlap ``first_rows`` go first and ``then()`` runs on the calling thread as soon as they
        are done, while the other bands are still being worked on.
        """
        a, b = first_rows or (0, 0)
        bands = sorted(self.bands, key=lambda band: not (band[0] < b and band[1] > a))  # stable

        def band(r0: int, r1: int) -> None:
            sc = self._scratch.get()
            try:
                work(sc, r0, r1)
            finally:
                self._scratch.put(sc)

        if self.n_threads == 1:
            for r0, r1 in bands:
                band(r0, r1)
            if then is not None:
                then()
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.n_threads, thread_name_prefix="spectral-cube")
        futures = [(r0 < b and r1 > a, self._executor.submit(band, r0, r1)) for r0, r1 in bands]
        try:
            if then is not None:
                for needed, future in futures:
                    if needed:
                        future.result()
                then()
        finally:  # never leave bands running on buffers the caller reuses
            for _, future in futures:
                future.result()

    def close(self) -> None:
        """Stop the threads (a later :meth:`run` starts them again)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __enter__(self) -> BandPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
