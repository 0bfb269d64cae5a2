"""The parametric Co K-edge model and the LiCoO2 attenuation."""

from __future__ import annotations

import numpy as np
import pytest

from sim import spectra


def test_seed_grid_structure():
    e = spectra.SEED_ENERGIES_EV
    assert e.shape == (106,)
    assert e[0] == pytest.approx(7562.4) and e[-1] == pytest.approx(7982.4)
    steps = np.round(np.diff(e), 6)
    assert set(steps[:14]) == {10.0}
    assert set(steps[14:84]) == {1.0}
    assert set(steps[84:]) == {10.0}
    assert e[84] == pytest.approx(7772.4)
    assert not e.flags.writeable


def test_seed_grid_matches_seed_study(shared_data):
    scipy_io = pytest.importorskip("scipy.io")
    es = np.ravel(scipy_io.loadmat(shared_data / "seed-licoo2-maps" / "energies.mat")["Es"])
    np.testing.assert_allclose(spectra.SEED_ENERGIES_EV, es, atol=1e-6)


def test_normalized_mu_broadcasts_over_pixels():
    e = spectra.SEED_ENERGIES_EV
    params = spectra.state_params(np.linspace(0, 1, 7))
    mu = spectra.normalized_mu(e, **params)
    assert mu.shape == (106, 7) and mu.dtype == np.float32
    scalar = spectra.normalized_mu(e, **spectra.PRISTINE.params())
    assert scalar.shape == (106,)
    np.testing.assert_allclose(mu[:, 0], scalar, atol=1e-5)
    # pre-edge near 0, post-edge near 1
    assert np.all(np.abs(mu[e < 7700]) < 0.05)
    assert np.all(np.abs(mu[e > 7900].mean(axis=0) - 1.0) < 0.15)


def test_normalized_mu_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        spectra.normalized_mu(np.ones((2, 2)), e0=7722, wl_energy=7728, wl_height=1.6)
    with pytest.raises(ValueError, match="positive"):
        spectra.normalized_mu([7700.0], e0=7722, wl_energy=7728, wl_height=1.6, wl_width=0)
    with pytest.raises(ValueError, match="post_coeffs"):
        spectra.normalized_mu([7700.0], e0=7722, wl_energy=7728, wl_height=1.6, post_coeffs=[1.0])


def test_state_of_charge_moves_features_monotonically():
    fine = np.arange(7700, 7760, 0.05)
    soc = np.linspace(0, 1, 11)
    feats = spectra.spectrum_features(
        fine, spectra.normalized_mu(fine, **spectra.state_params(soc))
    )
    for name in ("e0_half", "white_line_energy", "white_line_height"):
        assert np.all(np.diff(feats[name]) > 0), name
    assert feats["e0_half"][-1] - feats["e0_half"][0] == pytest.approx(1.0, abs=0.2)
    assert feats["white_line_energy"][-1] - feats["white_line_energy"][0] == pytest.approx(
        2.4, abs=0.3
    )


def test_reduced_state_has_a_lower_edge_and_changed_white_line():
    fine = np.arange(7700, 7760, 0.05)
    p = spectra.spectrum_features(fine, spectra.PRISTINE.mu(fine))
    r = spectra.spectrum_features(fine, spectra.REDUCED.mu(fine))
    assert 5.0 < p["e0_half"] - r["e0_half"] < 7.0
    assert r["white_line_energy"] < p["white_line_energy"] - 2.5
    assert r["white_line_height"] < p["white_line_height"]


def test_licoo2_attenuation_is_physical():
    e = np.array([7600.0, 7700.0, 7730.0, 7900.0])
    bg, jump = spectra.licoo2_mu_per_um(e)
    # xraydb: LiCoO2 at 5 g/cm3 ~ 0.017/um below the Co K edge, ~0.109/um above
    assert np.all((bg > 0.014) & (bg < 0.02))
    assert np.all(np.diff(bg) < 0)
    assert 0.085 < jump[2] < 0.095
    # a particle a few um thick has an edge jump of a few tenths in OD
    assert 0.1 < 2.0 * jump[2] < 1.5 and 0.1 < 10.0 * jump[2] < 1.5


def test_spectrum_features_on_a_known_shape():
    e = np.linspace(7700, 7760, 601)
    mu = 0.5 + np.arctan((e - 7720) / 1.0) / np.pi + 0.6 * np.exp(-0.5 * ((e - 7728) / 1.5) ** 2)
    f = spectra.spectrum_features(e, mu)
    assert f["e0_half"] == pytest.approx(7720.0, abs=0.2)
    assert f["white_line_energy"] == pytest.approx(7728.0, abs=0.2)
    assert f["white_line_height"] == pytest.approx(mu.max(), abs=0.01)
