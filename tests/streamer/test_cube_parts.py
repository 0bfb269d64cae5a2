"""The parts a SpectralCube is built of: row storage, the band pool, the per-frame ingest."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamer.band_pool import BandPool
from streamer.cube_rows import CubeRows
from streamer.flatfield import normalise_rows
from streamer.frame_ingest import FrameIngest
from streamer.registration import DriftTracker


def test_cube_rows_grow_in_energy_order_and_keep_row_state(caplog):
    rows = CubeRows(None, capacity=1, prefault=True)
    rows.allocate(3)
    for i, energy in enumerate((8020.0, 8000.0, 8010.0, 8030.0)):
        pos = rows.insert(energy)
        rows.data[pos] = i
        rows.ready[pos], rows.shifts[pos] = True, (i, -i)
    assert rows.n == 4 and rows.energies[:4].tolist() == [8000.0, 8010.0, 8020.0, 8030.0]
    assert rows.data[:4, 0].tolist() == [1.0, 2.0, 0.0, 3.0]
    assert rows.shifts[:4, 0].tolist() == [1.0, 2.0, 0.0, 3.0] and rows.ready[:4].all()
    assert rows.row_of(8020.0) == 2 and rows.nearest(8012.0) == (1, 2.0)
    assert "out of order" in caplog.text
    assert CubeRows(None).nearest(1.0) == (-1, np.inf)


def test_planned_rows_are_allocated_once():
    rows = CubeRows(np.array([1.0, 2.0, 3.0]), prefault=False)
    rows.allocate(5)
    assert rows.n == 3 and rows.data.shape == (3, 5) and not rows.data.any()


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_band_pool_covers_every_row_once_and_runs_then_after_the_first_rows(n_threads):
    shape = (200, 7)
    hits = np.zeros(shape[0], int)
    lock = threading.Lock()
    done_before_then = []

    def work(scratch, r0, r1):
        assert scratch.shape == (16, 7)
        with lock:
            hits[r0:r1] += 1

    def then():
        done_before_then.append(hits[96:128].min())

    with BandPool(shape, n_threads=n_threads, block_rows=16) as pool:
        pool.run(work, first_rows=(100, 120), then=then)
        assert all(r0 % 16 == 0 for r0, _ in pool.bands)
    assert (hits == 1).all() and done_before_then == [1]


def test_band_pool_propagates_a_failing_band():
    def work(scratch, r0, r1):
        if r0 == 0:
            raise RuntimeError("band failed")

    with BandPool((64, 4), n_threads=2, block_rows=8) as pool:
        with pytest.raises(RuntimeError, match="band failed"):
            pool.run(work)


def test_both_negative_masked_next_to_a_nan_flat():
    """A NaN flat in a block must not hide a pixel whose flat and sample are both below dark."""
    sample = np.full((4, 6), 500.0, np.float32)
    flat = np.full((4, 6), 1000.0, np.float32)
    dark = np.full((4, 6), 100.0, np.float32)
    flat[1, 1] = np.nan
    flat[2, 3], sample[2, 3] = 50.0, 60.0  # both below dark: positive ratio
    out = np.empty((4, 6), np.float32)
    normalise_rows(sample, flat, dark, out)
    assert np.isnan(out[1, 1]) and not np.isfinite(out[2, 3])
    assert np.isfinite(np.delete(out.ravel(), [1 * 6 + 1, 2 * 6 + 3])).all()


def test_frame_ingest_registers_and_masks_the_border():
    rng = np.random.default_rng(3)
    shape = (64, 64)
    od = np.zeros(shape, np.float32)
    od[20:40, 24:44] = 1.0
    flat = np.full(shape, 10000.0, np.float32)
    ingest = FrameIngest(
        shape, tracker=DriftTracker(bin_factor=1, region=64), fill_value=-1.0,
        stack_average="auto", n_threads=2, block_rows=8,
    )  # fmt: skip
    out = np.empty(shape, np.float32)
    first = ingest.store(flat * np.exp(-od), flat, None, out)
    moved = np.roll(od, (2, -3), axis=(0, 1)) + rng.normal(0, 1e-3, shape).astype(np.float32)
    second = ingest.store(flat * np.exp(-moved), flat, None, out)
    ingest.close()
    assert first.n_border == 0 and second.n_failed == 0
    np.testing.assert_allclose(second.drift, (2, -3), atol=0.05)
    assert second.n_border == 64 * 64 - 62 * 61 and (out[-2:] == -1.0).all()
    assert not ingest.valid[-2:].any() and ingest.valid[:62, 3:].all()
    np.testing.assert_allclose(out[:62, 3:], od[:62, 3:], atol=0.02)
