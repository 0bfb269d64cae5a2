"""Attributes against the simulator's planted truth, at its nominal noise.

Nominal noise: 0.006 OD per energy, which makes the pre-edge noise about 2 % of the edge jump for
the simulated particles (1.5-4 um of LiCoO2), the seed study's median (``noisemap_stack``).
"""

from __future__ import annotations

import numpy as np

from sim.sample import make_field_of_view
from sim.spectra import SEED_ENERGIES_EV
from streamer.attributes import compute_attributes
from tests.streamer.test_attributes import simulated_od

E = np.asarray(SEED_ENERGIES_EV, dtype=np.float64)
NOMINAL_NOISE_OD = 0.006


def test_ten_thousand_noisy_spectra_recover_planted_edge_and_white_line():
    od, truth, _ = simulated_od(10_000, seed=5, noise_od=NOMINAL_NOISE_OD)
    res = compute_attributes(E, od)
    assert res.valid_pixels.all() and not res.provisional
    assert 0.015 < np.median(res.values["pre_edge_noise"]) < 0.03
    for name in ("e0_half", "white_line_energy"):
        err = res.values[name] - truth[name]
        assert abs(np.median(err)) < 0.1, name  # unbiased to 0.1 eV
        assert np.percentile(np.abs(err), 90) < 0.3, name  # 90 % of pixels within 0.3 eV
    err_h = res.values["white_line_height"] - truth["white_line_height"]
    assert abs(np.median(err_h)) < 0.03 and np.percentile(np.abs(err_h), 90) < 0.1


def test_field_of_view_particles_match_their_truth_maps():
    fov = make_field_of_view(
        shape=(64, 64),
        n_particles=4,
        anomalies=[{"kind": "reduced"}, {"kind": "white_line"}],
        seed=2,
        subtle=False,
    )
    rng = np.random.default_rng(0)
    od = fov.od(E).reshape(E.size, -1)
    od += NOMINAL_NOISE_OD * rng.standard_normal(od.shape).astype(np.float32)
    res = compute_attributes(E, od)
    truth = {k: v.reshape(-1) for k, v in fov.observed_maps().items()}
    labels = fov.labels.reshape(-1)
    thick = fov.thickness_um.reshape(-1) > 1.0  # the thin rim is dominated by noise
    for p in fov.particles:
        sel = (labels == p.id) & thick & res.valid_pixels
        assert sel.sum() > 20
        for name in ("e0_half", "white_line_energy"):
            got = np.median(res.values[name][sel])
            want = np.median(truth[name][sel])
            assert abs(got - want) < 0.3, (p.id, p.kind, name, got, want)
    population = np.median(res.values["e0_half"][(labels > 0) & thick])
    reduced = next(p for p in fov.particles if p.kind == "reduced")
    sel = (labels == reduced.id) & thick
    assert np.median(res.values["e0_half"][sel]) < population - 1.5
