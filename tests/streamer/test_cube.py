"""SpectralCube: robust averaging, normalisation, deferred flats, masking, memory layout."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from streamer.cube import FrameShapeError, SpectralCube, UnplannedEnergyError
from streamer.flatfield import FlatCache, robust_average

SHAPE = (64, 64)
ENERGIES = np.array([7700.0, 7710.0, 7720.0, 7730.0])


def _od_truth(shape=SHAPE, seed=0) -> np.ndarray:
    """A smooth OD image: a few discs on a weak background, one per energy scaled."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    od = np.full(shape, 0.05, np.float32)
    for _ in range(4):
        cy, cx, r = (
            rng.uniform(12, shape[0] - 12),
            rng.uniform(12, shape[1] - 12),
            rng.uniform(5, 10),
        )
        od += 0.8 * np.clip(1 - ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2, 0, None)
    return od


def _frames(energies=ENERGIES, *, k=5, noise=True, seed=1):
    """Dark stack, per-energy (sample stack, flat stack), and the planted OD per energy."""
    rng = np.random.default_rng(seed)
    dark = np.full(SHAPE, 100.0, np.float32)
    flat_level = 20000.0 * (1 + 0.1 * np.linspace(-1, 1, SHAPE[1]))[None, :] * np.ones(SHAPE)
    base = _od_truth()
    out = []
    for i, _ in enumerate(energies):
        od = base * (1.0 + 0.5 * i)

        def stack(mean):
            s = np.repeat(mean[None], k, axis=0)
            if noise:
                s = s + rng.normal(0, np.sqrt(mean), s.shape)
            return np.clip(np.rint(s), 0, 65535).astype(np.uint16)

        out.append((stack(flat_level * np.exp(-od) + dark), stack(flat_level + dark), od))
    dark_stack = np.repeat(dark[None], k, axis=0).astype(np.uint16)
    return dark_stack, out


def _fxi(cube, dark, frames, order="xanes_scan2", energies=ENERGIES):
    """Feed frames in an FXI order."""
    cube.add_dark(dark)
    if order == "xanes_scan2":
        for e, (s, f, _) in zip(energies, frames, strict=True):
            cube.add_sample(s, energy=e)
            cube.add_flat(f, energy=e)
    elif order == "xanes_scan":
        for e, (s, _, _) in zip(energies, frames, strict=True):
            cube.add_sample(s, energy=e)
        for e, (_, f, _) in zip(energies, frames, strict=True):
            cube.add_flat(f, energy=e)
    elif order == "flat_first":
        for e, (s, f, _) in zip(energies, frames, strict=True):
            cube.add_flat(f, energy=e)
            cube.add_sample(s, energy=e)
    return cube.finalize()


# ------------------------------------------------------------------ robust averaging
@pytest.mark.parametrize("k", [3, 5])
def test_median_network_equals_numpy_median(k):
    rng = np.random.default_rng(k)
    stack = rng.integers(0, 65535, (k, 40, 33), dtype=np.uint16)
    np.testing.assert_array_equal(robust_average(stack), np.median(stack, axis=0))
    floats = rng.normal(size=(k, 40, 33)).astype(np.float32)
    np.testing.assert_allclose(robust_average(floats), np.median(floats, axis=0), rtol=1e-6)


def test_trimmed_mean_and_mean():
    rng = np.random.default_rng(3)
    stack = rng.integers(0, 60000, (6, 35, 20), dtype=np.uint16)
    s = np.sort(stack.astype(np.float64), axis=0)
    np.testing.assert_allclose(robust_average(stack), s[1:-1].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(robust_average(stack, method="mean"), stack.mean(axis=0), rtol=1e-6)
    five = np.sort(stack[:5].astype(np.float64), axis=0)
    np.testing.assert_allclose(
        robust_average(stack[:5], method="trimmed_mean"), five[1:-1].mean(axis=0), rtol=1e-6
    )


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_cosmic_ray_in_one_exposure_does_not_survive(k):
    rng = np.random.default_rng(k)
    stack = rng.normal(1000, 30, (k, 64, 64)).round().astype(np.uint16)
    clean = robust_average(stack)
    hit = stack.copy()
    hit[k // 2, 10:13, 20:23] = 60000  # a cosmic-ray track in one exposure
    avg = robust_average(hit)
    assert np.abs(avg[10:13, 20:23] - 1000).max() < 150  # the hit alone would add >= 10000
    outside = np.ones((64, 64), bool)
    outside[10:13, 20:23] = False
    np.testing.assert_array_equal(avg[outside], clean[outside])


def test_single_exposure_and_2d_frame():
    frame = np.arange(12, dtype=np.uint16).reshape(3, 4)
    np.testing.assert_array_equal(robust_average(frame), frame.astype(np.float32))
    with pytest.raises(ValueError, match="stack_average"):
        robust_average(np.zeros((3, 2, 2)), method="mode")


# ------------------------------------------------------------------ normalisation
def test_normalisation_recovers_planted_od_and_i0_correction():
    dark, frames = _frames(noise=False)
    cube = SpectralCube(frame_shape=SHAPE, energies=ENERGIES, register=False)
    cube.add_dark(dark)
    s, f, od = frames[1]
    cube.add_flat(f, energy=ENERGIES[1], i0=2.0)
    row = cube.add_sample(s, energy=ENERGIES[1], i0=[1.0, 1.0])
    assert row == 1 and cube.ready_.tolist() == [False, True, False, False]
    # ln(I0_sample / I0_flat) = ln(0.5)
    np.testing.assert_allclose(cube.image(1), od + np.log(0.5), atol=2e-3)
    assert cube.od_.dtype == np.float32 and cube.od_.shape == (4, SHAPE[0] * SHAPE[1])
    assert cube.n_received_ == 1 and cube.pending_ == []


def test_i0_correction_off_and_missing_monitor_counted():
    dark, frames = _frames(noise=False)
    cube = SpectralCube(frame_shape=SHAPE, energies=ENERGIES, register=False, i0_correction=False)
    s, f, od = frames[0]
    cube.add_dark(dark)
    cube.add_flat(f, energy=ENERGIES[0], i0=2.0)
    cube.add_sample(s, energy=ENERGIES[0], i0=1.0)
    np.testing.assert_allclose(cube.image(0), od, atol=2e-3)
    cube2 = SpectralCube(frame_shape=SHAPE, energies=ENERGIES, register=False)
    cube2.add_flat(f, energy=ENERGIES[0], i0=2.0)
    cube2.add_sample(s, energy=ENERGIES[0])
    assert cube2.counters_["i0_missing"] == 1


@pytest.mark.parametrize("register", [False, True])
def test_deferred_normalisation_same_cube_in_every_fxi_order(register):
    dark, frames = _frames()
    cubes = {}
    for order in ("xanes_scan2", "xanes_scan", "flat_first"):
        cube = SpectralCube(energies=ENERGIES, register=register)
        cubes[order] = _fxi(cube, dark, frames, order)
        assert cube.ready_.all() and cube.pending_ == []
    np.testing.assert_array_equal(cubes["xanes_scan2"].od_, cubes["xanes_scan"].od_)
    np.testing.assert_array_equal(cubes["xanes_scan2"].od_, cubes["flat_first"].od_)
    np.testing.assert_array_equal(cubes["xanes_scan2"].valid_, cubes["xanes_scan"].valid_)
    od = np.stack([fr[2] for fr in frames]).reshape(len(ENERGIES), -1)
    valid = cubes["xanes_scan"].valid_
    assert np.abs(cubes["xanes_scan"].od_[:, valid] - od[:, valid]).mean() < 0.01


def test_threads_do_not_change_the_result():
    dark, frames = _frames()
    one = _fxi(SpectralCube(energies=ENERGIES, n_threads=1, block_rows=8), dark, frames)
    two = _fxi(SpectralCube(energies=ENERGIES, n_threads=2, block_rows=8), dark, frames)
    np.testing.assert_array_equal(one.od_, two.od_)


def test_global_flat_applies_to_all_and_to_pending():
    dark, frames = _frames(noise=False)
    cube = SpectralCube(frame_shape=SHAPE, energies=ENERGIES, register=False)
    cube.add_dark(dark)
    cube.add_sample(frames[0][0], energy=ENERGIES[0])
    assert cube.pending_ == [ENERGIES[0]]
    cube.add_flat(frames[0][1])  # energy=None: all energies
    assert cube.pending_ == [] and cube.ready_[0]
    cube.add_sample(frames[2][0], energy=ENERGIES[2])  # normalised at once
    assert cube.ready_[2]
    np.testing.assert_allclose(cube.image(2), frames[2][2], atol=2e-3)


def test_cosmic_ray_rejected_in_the_cube():
    dark, frames = _frames()
    s, f, _ = frames[0]
    hit = s.copy()
    hit[2, 30:32, 30:40] = 65000
    a = SpectralCube(frame_shape=SHAPE, energies=ENERGIES[:1], register=False)
    b = SpectralCube(frame_shape=SHAPE, energies=ENERGIES[:1], register=False)
    for cube, stack in ((a, s), (b, hit)):
        cube.add_dark(dark)
        cube.add_flat(f, energy=ENERGIES[0])
        cube.add_sample(stack, energy=ENERGIES[0])
    diff = np.abs(a.image(0) - b.image(0))[30:32, 30:40]
    assert diff.max() < 0.05  # the hit itself would lower the OD by more than 1


# ------------------------------------------------------------------ masking
def test_bad_values_masked_counted_logged_once_and_never_nan(caplog):
    dark, frames = _frames(noise=False)
    cube = SpectralCube(frame_shape=SHAPE, energies=ENERGIES[:2], register=False)
    cube.add_dark(dark)
    s, f, _ = frames[0]
    f = f.copy()
    f[:, 5, 5] = 100  # flat equals dark: zero
    f[:, 6, 6] = 50  # flat below dark: negative
    s = s.astype(np.float32)
    s[:, 7, 7] = np.nan
    s[:, 8, 8] = 0.0  # sample below dark
    s[:, 9, 9] = 100.0  # sample equals dark: infinite OD
    f32 = f.astype(np.float32)
    f32[:, 10, 10] = 50
    s[:, 10, 10] = 60.0  # both negative after the dark: ratio positive, still masked
    cube.add_flat(f32, energy=ENERGIES[0])
    cube.add_sample(s, energy=ENERGIES[0])
    cube.add_flat(frames[1][1], energy=ENERGIES[1])
    cube.add_sample(frames[1][0], energy=ENERGIES[1])
    with caplog.at_level(logging.WARNING, logger="streamer.cube"):
        cube.finalize()
    bad = [(5, 5), (6, 6), (7, 7), (8, 8), (9, 9), (10, 10)]
    assert cube.counters_["masked_values"] == len(bad)
    assert np.isfinite(cube.od_).all()
    valid = cube.valid_.reshape(SHAPE)
    assert not any(valid[p] for p in bad) and valid.sum() == valid.size - len(bad)
    assert all(cube.image(0)[p] == 0.0 for p in bad)
    summary = [r for r in caplog.records if "finalized with warnings" in r.getMessage()]
    assert len(summary) == 1 and "masked_values" in summary[0].getMessage()


def test_fill_value_option():
    dark, frames = _frames(noise=False)
    cube = SpectralCube(frame_shape=SHAPE, energies=ENERGIES[:1], register=False, fill_value=-1.0)
    f = frames[0][1].copy()
    f[:, 0, 0] = 0
    cube.add_dark(dark)
    cube.add_flat(f, energy=ENERGIES[0])
    cube.add_sample(frames[0][0], energy=ENERGIES[0])
    assert cube.image(0)[0, 0] == -1.0 and not cube.valid_[0]


# ------------------------------------------------------------------ errors and bookkeeping
def test_shape_change_raises_specific_error_and_cube_stays_usable():
    dark, frames = _frames(noise=False)
    cube = SpectralCube(energies=ENERGIES, register=False)
    cube.add_dark(dark)
    with pytest.raises(FrameShapeError, match="frame shape"):
        cube.add_sample(np.zeros((5, 32, 64), np.uint16), energy=ENERGIES[0])
    with pytest.raises(FrameShapeError):
        cube.add_flat(np.zeros((2, 3, 4, 5), np.uint16), energy=ENERGIES[0])
    assert issubclass(FrameShapeError, ValueError)
    cube.add_sample(frames[0][0], energy=ENERGIES[0])
    cube.add_flat(frames[0][1], energy=ENERGIES[0])
    assert cube.ready_[0] and cube.n_received_ == 1


def test_unplanned_energy_duplicate_and_late_dark():
    dark, frames = _frames(noise=False)
    cube = SpectralCube(frame_shape=SHAPE, energies=ENERGIES, register=False)
    with pytest.raises(UnplannedEnergyError, match="planned"):
        cube.add_sample(frames[0][0], energy=7705.0)
    assert cube.energy_tolerance == 1.0
    row = cube.add_sample(frames[0][0], energy=7710.6)  # nearest planned energy
    assert row == 1 and cube.measured_energies_[1] == 7710.6
    cube.add_sample(frames[0][0], energy=7710.0)
    assert cube.counters_["duplicate_energy"] == 1 and cube.pending_ == [7710.0]
    cube.add_flat(frames[0][1], energy=7710.0)
    cube.add_dark(dark)
    assert cube.counters_["late_dark"] == 1
    cube.finalize()
    with pytest.raises(RuntimeError, match="finalized"):
        cube.add_sample(frames[0][0], energy=7700.0)


def test_growing_cube_matches_preallocated_and_sorts_rows():
    dark, frames = _frames()
    planned = _fxi(SpectralCube(energies=ENERGIES, register=False), dark, frames)
    grown = SpectralCube(register=False, capacity=1)
    order = [2, 0, 3, 1]  # out of order: rows are inserted in energy order
    grown.add_dark(dark)
    for i in order:
        grown.add_sample(frames[i][0], energy=ENERGIES[i])
        grown.add_flat(frames[i][1], energy=ENERGIES[i])
    grown.finalize()
    np.testing.assert_array_equal(grown.energies_, ENERGIES)
    np.testing.assert_array_equal(grown.od_, planned.od_)
    assert grown.ready_.all() and grown.od_.base is not None  # a view, not a copy
    assert np.shares_memory(grown.image(1), grown.od_)


def test_mean_spectrum_follows_ready_rows_in_every_order():
    dark, frames = _frames()
    cube = SpectralCube(register=False, capacity=1)
    cube.add_dark(dark)
    for i in (2, 0):  # out of order: rows move, their means with them
        cube.add_sample(frames[i][0], energy=ENERGIES[i])
        cube.add_flat(frames[i][1], energy=ENERGIES[i])
    cube.add_sample(frames[3][0], energy=ENERGIES[3])  # waits for its flat: not ready
    assert np.isnan(cube.mean_spectrum_[~cube.ready_]).all()
    expected = cube.od_[cube.ready_].mean(axis=1, dtype=np.float64)  # 4096 px: all sampled
    np.testing.assert_allclose(cube.mean_spectrum_[cube.ready_], expected, rtol=1e-9)
    cube.add_sample(frames[1][0], energy=ENERGIES[0])  # a second sample replaces the first
    assert cube.counters_["duplicate_energy"] == 1
    assert cube.mean_spectrum_[0] == pytest.approx(cube.od_[0].mean(dtype=np.float64))
    cube.finalize()
    np.testing.assert_allclose(
        cube.mean_spectrum_, cube.od_.mean(axis=1, dtype=np.float64), rtol=1e-9
    )


def test_leftover_sample_uses_nearest_flat_with_warning(caplog):
    dark, frames = _frames(noise=False)
    cube = SpectralCube(frame_shape=SHAPE, energies=ENERGIES, register=False)
    cube.add_dark(dark)
    cube.add_sample(frames[0][0], energy=ENERGIES[0])
    cube.add_flat(frames[0][1], energy=ENERGIES[0])
    cube.add_sample(frames[1][0], energy=ENERGIES[1])  # its flat never comes (aborted scan)
    with caplog.at_level(logging.WARNING, logger="streamer.cube"):
        cube.finalize()
    assert cube.ready_[:2].all() and cube.counters_["nearest_flat"] == 1
    assert any("no flat arrived for 7710.00 eV" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(cube.image(1), frames[1][2], atol=2e-3)  # same flat here


def test_no_flats_gives_raw_absorbance_with_warning(caplog):
    dark, frames = _frames(noise=False)
    for expect_flats in (True, False):
        cube = SpectralCube(frame_shape=SHAPE, energies=ENERGIES, register=False,
                            expect_flats=expect_flats, bright_percentile=100.0)  # fmt: skip
        cube.add_dark(dark)
        cube.add_sample(frames[0][0], energy=ENERGIES[0])
        assert cube.ready_[0] == (not expect_flats)
        with caplog.at_level(logging.WARNING, logger="streamer.cube"):
            cube.finalize()
        assert cube.counters_["raw_absorbance"] == 1
        # no flat field: OD relative to the brightest pixel, flat-field gradient left in
        s = frames[0][0][0].astype(np.float64) - 100.0
        np.testing.assert_allclose(cube.image(0), -np.log(s / s[::4, ::4].max()), atol=1e-5)
    assert any("raw absorbance" in r.getMessage() for r in caplog.records)


def test_invalid_options():
    with pytest.raises(ValueError, match="stack_average"):
        SpectralCube(stack_average="mode")
    with pytest.raises(ValueError, match="empty"):
        SpectralCube(energies=[])
    with pytest.raises(ValueError, match="finite"):
        SpectralCube(fill_value=np.nan)
    with pytest.raises(IndexError):
        SpectralCube(frame_shape=SHAPE).image(0)


def test_flat_cache_is_bounded_and_recycles_buffers():
    cache = FlatCache((4, 4), max_flats=2, tolerance=0.5)
    buffers = set()
    for e in (7700.0, 7701.0, 7702.0, 7703.0):
        flat = cache.new(e, i0=[2.0, 4.0])
        assert flat.i0 == 3.0
        buffers.add(id(flat.image))
        cache.keep(flat)
    assert [f.energy for f in cache.per_energy] == [7702.0, 7703.0]
    assert len(buffers) == 3  # two kept plus one in flight, then recycled
    assert cache.for_sample(7702.2).energy == 7702.0 and cache.for_sample(7710.0) is None
    assert cache.nearest(7710.0).energy == 7703.0
    common = FlatCache((4, 4), max_flats=2, tolerance=0.5)
    common.keep(common.new(None, None))
    assert common.for_sample(7000.0) is common.common and common.nearest(1.0) is common.common


def test_memory_overhead_does_not_grow_with_pending_samples():
    """xanes_scan order keeps every raw sample in its own row: no buffer per pending sample."""
    import tracemalloc

    dark, frames = _frames(noise=False)

    def overhead(n):
        energies = 7700.0 + np.arange(float(n))
        tracemalloc.start()
        cube = SpectralCube(frame_shape=SHAPE, energies=energies, n_threads=1)
        cube.add_dark(dark)
        for e in energies:
            cube.add_sample(frames[0][0], energy=e)
        for e in energies:
            cube.add_flat(frames[0][1], energy=e)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert cube.ready_.all()
        return peak - cube.od_.nbytes

    frame = SHAPE[0] * SHAPE[1] * 4
    assert overhead(24) - overhead(4) < 2 * frame
