"""Per-pixel attributes (streamer.attributes): contract, masks, threads, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from sim.fov import features_of, recipe_params
from sim.spectra import SEED_ENERGIES_EV, licoo2_mu_per_um, normalized_mu
from streamer.attributes import ATTRIBUTE_NAMES, compute_attributes
from streamer.edge_operators import parabola_vertex, rows_argmax

E = np.asarray(SEED_ENERGIES_EV, dtype=np.float64)


#: Reduction shifts (eV) of the simulated pixels: none, or toward reduced Co (Co2+).
SHIFTS_EV = (0.0, 2.5, 4.0, 6.0)
_SOC_GRID = np.linspace(0.0, 1.0, 101)


def simulated_od(n: int, *, seed: int = 0, noise_od: float = 0.0):
    """OD spectra (n_energies, n) of random LiCoO2 chemistry and thickness, and the truth.

    The truth (observable ``e0_half`` and white line of the noiseless model) is interpolated along
    the state of charge from tables on the simulator's fine grid, as the simulator itself does.
    """
    rng = np.random.default_rng(seed)
    soc = rng.uniform(0.0, 1.0, n)
    shift = np.where(rng.random(n) < 0.2, rng.choice(SHIFTS_EV[1:], n), 0.0)
    mu = normalized_mu(E, **recipe_params(soc, shift, 0.0), dtype=np.float64)
    bg, jump = licoo2_mu_per_um(E)
    t = rng.uniform(1.5, 4.0, n)
    od = t * (bg[:, None] + jump[:, None] * mu) + noise_od * rng.standard_normal(mu.shape)
    truth = {}
    for sh in SHIFTS_EV:
        table = features_of(_SOC_GRID, sh, 0.0)
        sel = shift == sh
        for k, v in table.items():
            truth.setdefault(k, np.empty(n))[sel] = np.interp(soc[sel], _SOC_GRID, v)
    return od.astype(np.float32), truth, t


def test_names_dtype_shape_and_validity_of_a_complete_scan():
    od, _, _ = simulated_od(300)
    res = compute_attributes(E, od)
    assert tuple(res.values) == ATTRIBUTE_NAMES
    for name, v in res.values.items():
        assert v.dtype == np.float32 and v.shape == (300,), name
        assert np.all(np.isfinite(v)), name
    assert all(res.valid.values()) and not res.provisional
    assert res.valid_pixels.all() and res.valid_pixels.dtype == bool
    assert 7715.0 < res.e0_ev < 7730.0


def test_noiseless_values_match_the_planted_observables():
    od, truth, t = simulated_od(500)
    v = compute_attributes(E, od).values
    np.testing.assert_allclose(v["e0_half"], truth["e0_half"], atol=0.1)
    np.testing.assert_allclose(v["white_line_energy"], truth["white_line_energy"], atol=0.2)
    np.testing.assert_allclose(v["white_line_height"], truth["white_line_height"], atol=0.06)
    _, jump = licoo2_mu_per_um(np.array([7722.0]))
    np.testing.assert_allclose(v["edge_jump"], t * jump[0], rtol=0.06)  # post-edge shapes differ
    assert np.all(v["r_squared"] > 0.99) and np.all(v["pre_edge_noise"] < 0.01)
    assert np.all(np.abs(v["e0_deriv"] - truth["e0_half"] - 2.5) < 2.5)


def test_noise_lowers_r_squared_and_raises_pre_edge_noise():
    clean = compute_attributes(E, simulated_od(200)[0]).values
    noisy = compute_attributes(E, simulated_od(200, noise_od=0.01)[0]).values
    assert np.median(noisy["r_squared"]) < np.median(clean["r_squared"]) - 0.002
    assert np.median(noisy["pre_edge_noise"]) > 5 * np.median(clean["pre_edge_noise"])


def test_threads_and_chunks_do_not_change_the_result():
    od, _, _ = simulated_od(2000, noise_od=0.006)
    ref = compute_attributes(E, od, e0_hint=7722.0, n_threads=1, chunk=10_000)
    for n_threads, chunk in [(2, 333), (2, 1024), (1, 7)]:
        res = compute_attributes(E, od, e0_hint=7722.0, n_threads=n_threads, chunk=chunk)
        for name in ATTRIBUTE_NAMES:
            np.testing.assert_allclose(res.values[name], ref.values[name], rtol=2e-5, err_msg=name)


def test_float64_and_non_contiguous_input():
    od, _, _ = simulated_od(64, noise_od=0.006)
    ref = compute_attributes(E, od, e0_hint=7722.0)
    wide = np.zeros((E.size, 128), dtype=np.float64)
    wide[:, ::2] = od
    res = compute_attributes(E, wide[:, ::2], e0_hint=7722.0)
    for name in ATTRIBUTE_NAMES:
        np.testing.assert_allclose(res.values[name], ref.values[name], rtol=1e-5, err_msg=name)


def test_nan_and_empty_pixels_are_masked_not_propagated():
    od, _, _ = simulated_od(10)
    od[5, 2] = np.nan
    od[:, 4] = np.inf
    od[:, 6] = 0.3  # flat: no edge
    od[:, 7] = 0.3 - 0.2 * (od[:, 0] - od[0, 0])  # an edge going down (negative jump)
    res = compute_attributes(E, od, e0_hint=7722.0)
    bad = [2, 4, 6, 7]
    assert not res.valid_pixels[bad].any() and res.valid_pixels.sum() == 6
    for v in res.values.values():
        assert np.all(np.isnan(v[bad])) and np.all(np.isfinite(v[res.valid_pixels]))


def test_features_outside_their_window_are_counted():
    e = np.arange(7600.0, 7900.0, 1.0)
    # an arctangent edge has no white line: its maximum is the end of the window
    mu = 0.2 + 0.5 * (0.5 + np.arctan((e - 7722.0) / 2.0) / np.pi)
    res = compute_attributes(e, np.repeat(mu[:, None], 3, axis=1), e0_hint=7722.0)
    assert res.at_window_edge["white_line_energy"] == 3
    assert res.at_window_edge["e0_deriv"] == 0
    np.testing.assert_allclose(res.values["white_line_energy"], 7742.0)
    assert res.valid_pixels.all()


def test_no_edge_yet_gives_nothing_valid():
    od, _, _ = simulated_od(5)
    keep = E < 7700.0
    res = compute_attributes(E[keep], od[keep])
    assert not any(res.valid.values()) and res.provisional
    assert not res.valid_pixels.any() and np.isnan(res.e0_ev)


def test_empty_field_and_bad_input():
    res = compute_attributes(E, np.zeros((E.size, 0), np.float32), e0_hint=7722.0)
    assert res.values["e0_half"].shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        compute_attributes(E, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="ascending"):
        compute_attributes(E[::-1], np.zeros((E.size, 4)))
    with pytest.raises(ValueError, match="positive"):
        compute_attributes(E, np.zeros((E.size, 4)), n_threads=0)


def test_rows_argmax_and_parabola_vertex_agree_with_numpy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 1000)).astype(np.float32)
    idx, best = rows_argmax(x)
    np.testing.assert_array_equal(idx, x.argmax(axis=0))
    np.testing.assert_array_equal(best, x.max(axis=0))
    # a parabola through three points of y = -(x - 0.3)^2 on a non-uniform grid
    xs = np.array([[-1.0], [0.0], [2.0]])
    ys = -((xs - 0.3) ** 2)
    xv, yv = parabola_vertex(*xs, *ys)
    np.testing.assert_allclose([xv[0], yv[0]], [0.3, 0.0], atol=1e-12)
