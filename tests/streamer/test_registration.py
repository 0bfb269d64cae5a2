"""Registration: shift estimate, shift application, drift tracking, cube integration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from streamer.cube import SpectralCube
from streamer.registration import (
    DriftTracker,
    apply_shift,
    covered_region,
    estimate_shift,
    registration_image,
)


def _particles(shape=(256, 256), seed=0, n=25) -> np.ndarray:
    """Two materials: discs of A and of B, smooth edges (float32)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    a = np.zeros(shape, np.float32)
    b = np.zeros(shape, np.float32)
    for i in range(n):
        cy, cx = rng.uniform(20, shape[0] - 20), rng.uniform(20, shape[1] - 20)
        r = rng.uniform(5, 18)
        disc = np.clip(1 - ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2, 0, None) ** 0.5
        (a if i % 3 else b)[...] += disc
    return ndimage.gaussian_filter(a, 0.8), ndimage.gaussian_filter(b, 0.8)


def _frame(a, b, drift, *, ca, cb, noise, rng):
    """Material A with contrast ``ca``, B with ``cb``, content displaced by ``drift``."""
    img = ndimage.shift(ca * a + cb * b, drift, order=3, mode="nearest")
    return (img + rng.normal(0, noise, img.shape)).astype(np.float32)


def _fourier_shift(image, drift):
    """Exact periodic translation of a band-limited image by ``drift`` (content moves by +drift)."""
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    ramp = np.exp(-2j * np.pi * (ky * drift[0] + kx * drift[1]))
    return np.fft.ifft2(np.fft.fft2(image) * ramp).real.astype(np.float32)


def test_estimate_shift_agrees_with_skimage():
    rng = np.random.default_rng(1)
    ref = ndimage.gaussian_filter(rng.random((128, 128)), 2).astype(np.float32)
    ref -= ref.mean()
    for drift in [(0.37, -1.23), (5.5, 2.01), (-3.25, 0.0)]:
        moving = _fourier_shift(ref, drift)
        ours = estimate_shift(ref, moving, upsample_factor=100)
        theirs, _, _ = phase_cross_correlation(ref, moving, upsample_factor=100, normalization=None)
        np.testing.assert_allclose(ours, -theirs, atol=0.015)
        np.testing.assert_allclose(ours, drift, atol=0.02)
    phase = estimate_shift(ref, np.roll(ref, (2, -3), (0, 1)), normalization="phase")
    np.testing.assert_allclose(phase, (2, -3), atol=0.02)
    with pytest.raises(ValueError, match="normalization"):
        estimate_shift(ref, ref, normalization="mean")


@pytest.mark.parametrize("drift", [(2.3, -1.7), (-3.6, 4.2), (0.0, 0.5), (1.5, 0.0), (-2, 3)])
def test_apply_shift_equals_scipy_bilinear(drift):
    img = np.random.default_rng(2).random((50, 70)).astype(np.float32)
    ours = apply_shift(img, drift)
    ref = ndimage.shift(img, (-drift[0], -drift[1]), order=1, mode="constant", cval=np.nan)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    ys, xs = covered_region(img.shape, drift)
    assert np.isfinite(ours[ys, xs]).all() and np.isnan(ours).sum() == img.size - ours[ys, xs].size
    # in bands of rows, block by block: the same
    split = np.empty_like(img)
    for r in [(0, 17), (17, 50)]:
        apply_shift(img, drift, out=split, rows=r, block_rows=4)
    np.testing.assert_array_equal(split, ours)


def test_apply_shift_nearest_and_errors():
    img = np.arange(20, dtype=np.float32).reshape(4, 5)
    np.testing.assert_array_equal(
        apply_shift(img, (0.6, -1.4), interpolation="nearest", fill=0)[0], [0, 5, 6, 7, 8]
    )
    with pytest.raises(ValueError, match="in place"):
        apply_shift(img, (1, 1), out=img)
    with pytest.raises(ValueError, match="finite"):
        apply_shift(img, (np.nan, 0))
    with pytest.raises(ValueError, match="interpolation"):
        apply_shift(img, (1, 0), interpolation="cubic")
    assert np.isnan(apply_shift(img, (10, 0))).all()


@pytest.mark.parametrize("reference", ["first", "running"])
def test_tracker_recovers_drift_across_the_edge(reference):
    """Contrast changes across the edge (B even inverts); noise is strong before the edge."""
    rng = np.random.default_rng(3)
    a, b = _particles()
    tracker = DriftTracker(reference=reference, bin_factor=1, region=256)
    contrasts = [(0.1, 0.12), (0.15, 0.1), (1.0, -0.3), (0.8, 0.5), (0.6, 0.9)] * 3
    planted, measured = [], []
    for i, (ca, cb) in enumerate(contrasts):
        drift = (0.0, 0.0) if i == 0 else tuple(rng.uniform(-4, 4, 2))
        frame = _frame(a, b, drift, ca=ca, cb=cb, noise=0.01, rng=rng)
        measured.append(tracker.update(frame))
        planted.append(drift)
    err = np.array(measured) - np.array(planted)
    assert np.sqrt((err**2).mean()) < 0.1
    assert len(tracker.shifts_) == len(contrasts) and tracker.n_failed_ == 0


def test_tracker_rejects_absurd_shift_and_auto_binning():
    rng = np.random.default_rng(4)
    a, b = _particles()
    tracker = DriftTracker(bin_factor=1, max_shift=2.0)
    tracker.update(_frame(a, b, (0, 0), ca=1, cb=1, noise=0.01, rng=rng))
    np.testing.assert_array_equal(
        tracker.update(_frame(a, b, (5.0, 0), ca=1, cb=1, noise=0.01, rng=rng)), [0, 0]
    )
    assert tracker.n_failed_ == 1
    assert DriftTracker()._bin((2048, 2048)) == 4 and DriftTracker()._bin((64, 64)) == 1
    assert registration_image(np.ones((2048, 2048), np.float32), bin_factor=4).shape == (256, 256)
    with pytest.raises(ValueError, match="reference"):
        DriftTracker(reference="last")


def test_cube_registers_frames_and_reports_drift():
    rng = np.random.default_rng(5)
    a, b = _particles((128, 128), n=12)
    flat = np.full((128, 128), 20000.0)
    energies = [8000.0, 8010.0, 8020.0, 8030.0]
    planted = [(0.0, 0.0), (1.4, -0.6), (-2.2, 1.3), (0.7, 2.5)]
    cube = SpectralCube(energies=energies, drift_tracker=DriftTracker(bin_factor=1))
    for e, d, c in zip(energies, planted, [0.3, 0.5, 1.0, 0.9], strict=True):
        od = ndimage.shift(c * (a + b), d, order=3, mode="nearest")
        sample = flat * np.exp(-od)
        noisy = rng.normal(sample, np.sqrt(sample), (3, 128, 128))
        cube.add_sample(noisy.astype(np.float32), energy=e)
        cube.add_flat(rng.normal(flat, np.sqrt(flat), (3, 128, 128)), energy=e)
    cube.finalize()
    np.testing.assert_allclose(cube.shifts_, planted, atol=0.15)
    # registered rows line up with the reference row (inside the common region)
    ref, last = cube.image(0)[8:-8, 8:-8], cube.image(3)[8:-8, 8:-8] / 0.9 * 0.3
    assert np.abs(last - ref).mean() < 0.02
    assert cube.counters_["border_pixels"] > 0 and cube.counters_["masked_values"] == 0
    assert not cube.valid_.reshape(128, 128)[0].any()  # border left without data at some energy


# ------------------------------------------------------------ simulator ground truth
@pytest.fixture(scope="module")
def sim_scan():
    """An FXI ``xanes_scan2`` of the simulated TXM across the Co K edge, fed to a cube.

    Long exposures and a large drift amplitude make the sample drift by about 11 px during the
    scan. Documents are read the way the callbacks do (stream name, ``XEng`` keV, ``ic3``).
    """
    bluesky = pytest.importorskip("bluesky")
    from sim.instrument import SimulatedTXM
    from sim.plans import xanes_scan2
    from sim.sample import make_field_of_view

    fov = make_field_of_view(shape=(128, 128), n_particles=6, seed=3)
    txm = SimulatedTXM(fov=fov, seed=3, drift_px=10.0, beam={"counts_per_s": 1e4})
    eng_kev = np.round(np.linspace(7.69, 7.78, 12), 4)
    docs = []
    bluesky.RunEngine({})(
        xanes_scan2(txm, eng_kev, chunk_size=3, exposure_time=2.0),
        lambda name, doc: docs.append((name, doc)),
    )
    cube = SpectralCube(energies=eng_kev * 1000)
    streams = {}
    for name, doc in docs:
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        elif name == "event":
            stream, data = streams[doc["descriptor"]], doc["data"]
            frames = np.asarray(data["Andor_image"])
            if stream == "dark":
                cube.add_dark(frames)
            elif stream == "primary":
                cube.add_sample(frames, energy=data["XEng"] * 1000, i0=data["ic3"])
            elif stream == "flat":
                cube.add_flat(frames, energy=data["XEng"] * 1000, i0=data["ic3"])
    cube.finalize()
    truth = [a for a in txm.acquisitions if a["fov_index"] is not None]  # sample frames
    return cube, fov, eng_kev * 1000, np.array([a["shift_px"] for a in truth])


def test_registration_recovers_the_simulators_planted_drift(sim_scan):
    cube, _, _, planted = sim_scan
    planted = planted - planted[0]  # drift relative to the reference (first) frame
    assert np.abs(planted).max() > 5  # a real test: several pixels of drift
    err = cube.shifts_ - planted
    assert np.sqrt((err**2).mean()) < 0.2
    assert cube.tracker.n_failed_ == 0


def test_registered_od_matches_the_simulators_planted_od(sim_scan):
    cube, fov, energies, planted = sim_scan
    assert np.abs(planted[0]).max() < 1e-9  # the reference frame sits where the truth does
    truth = fov.od(energies).reshape(len(energies), -1)
    valid = cube.valid_
    err = cube.od_[:, valid] - truth[:, valid]
    assert np.abs(err.mean(axis=1)).max() < 0.005  # dark, flat and I0 corrections: no bias
    assert np.abs(err).mean() < 0.02  # registered pixel by pixel (noise ~0.005)


def test_registering_while_outer_bands_are_normalised_changes_nothing():
    """The central rows are normalised first and registered while the rest is still running."""
    rng = np.random.default_rng(6)
    a, b = _particles((320, 64), n=6)
    tracker = DriftTracker(bin_factor=1, region=256)
    assert tracker.rows_used((320, 64)) == (32, 288)
    frames = []
    for e, d in zip([1.0, 2.0, 3.0], [(0, 0), (1.3, -0.4), (-0.8, 0.6)], strict=True):
        od = ndimage.shift(a + 0.5 * b, d, order=1, mode="nearest")
        flat = np.full((2, 320, 64), 5000.0) + rng.normal(0, 50, (2, 320, 64))
        frames.append((e, flat, 5000.0 * np.exp(-od)[None]))
    cubes = []
    for n_threads in (1, 2):
        cube = SpectralCube(energies=[1.0, 2.0, 3.0], n_threads=n_threads, block_rows=16,
                            drift_tracker=DriftTracker(bin_factor=1, region=256))  # fmt: skip
        for e, flat, sample in frames:
            cube.add_flat(flat, energy=e)
            cube.add_sample(sample, energy=e)
        cubes.append(cube.finalize())
    np.testing.assert_array_equal(cubes[0].od_, cubes[1].od_)
    np.testing.assert_array_equal(cubes[0].shifts_, cubes[1].shifts_)
