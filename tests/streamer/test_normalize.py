"""Pre-/post-edge normalisation (streamer.normalize): closed-form fits, provisional plans."""

from __future__ import annotations

import numpy as np
import pytest

from sim.spectra import PRISTINE, SEED_ENERGIES_EV, licoo2_mu_per_um
from streamer.normalize import (
    EdgeWindows,
    check_energies,
    estimate_e0,
    normalize,
    plan_normalization,
)

E = np.asarray(SEED_ENERGIES_EV, dtype=np.float64)


def _od(n: int = 50, *, seed: int = 0, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Optical density of ``n`` pristine LiCoO2 pixels of random thickness (um)."""
    rng = np.random.default_rng(seed)
    bg, jump = licoo2_mu_per_um(E)
    t = rng.uniform(1.0, 4.0, n)
    od = t * (bg[:, None] + jump[:, None] * PRISTINE.mu(E)[:, None])
    od += noise * rng.standard_normal(od.shape)
    return od.astype(np.float32), t


def test_fits_equal_numpy_polyfit_per_pixel():
    od, _ = _od(5, noise=0.01)
    res = normalize(E, od, e0_ev=7722.0)
    plan = res.plan
    x = E - 7722.0
    for j in range(od.shape[1]):
        b, a = np.polyfit(x[plan.pre], od[plan.pre, j].astype(float), 1)
        np.testing.assert_allclose(res.pre_edge_coefs[:, j], [a, b], rtol=2e-4, atol=2e-6)
        resid = od[plan.post, j] - (a + b * x[plan.post])
        coefs = np.polyfit(x[plan.post], resid, plan.nnorm)[::-1]
        np.testing.assert_allclose(res.post_edge_coefs[:, j], coefs, rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(res.edge_jump[j], coefs[0], rtol=1e-4)


def test_default_windows_on_the_seed_grid():
    plan = plan_normalization(E, e0_ev=7722.0)
    assert (E[plan.pre.start], E[plan.pre.stop - 1]) == (7562.4, 7692.4)
    assert (E[plan.post.start], E[plan.post.stop - 1]) == (7772.4, 7982.4)
    assert plan.nnorm == 1 and not plan.provisional and plan.can_normalize


def test_normalised_spectrum_recovers_the_model_and_is_float32():
    od, t = _od(20)
    res = normalize(E, od, e0_ev=7722.0)
    assert res.norm.dtype == np.float32 and res.edge_jump.dtype == np.float32
    assert res.norm.shape == od.shape
    _, jump = licoo2_mu_per_um(np.array([7722.0]))
    # the model's post-edge line sits 3 % below the tabulated jump at the edge
    np.testing.assert_allclose(res.edge_jump, 0.97 * t * jump[0], rtol=0.01)
    # pre-edge ~ 0 and the normalised shape follows the model (up to the post-edge line)
    np.testing.assert_allclose(np.median(res.norm[:10], axis=0), 0.0, atol=0.02)
    assert np.all(np.abs(res.norm[40] - PRISTINE.mu(E)[40]) < 0.05)


def test_one_spectrum_and_estimated_e0():
    od, _ = _od(1)
    res = normalize(E, od[:, 0])
    assert res.norm.shape == (E.size,)
    assert 7715.0 < res.e0_ev < 7730.0
    assert estimate_e0(E, od) == res.e0_ev


@pytest.mark.parametrize("last_ev", [7762.4, 7790.0])
def test_partial_scan_uses_a_provisional_flat_post_edge(last_ev):
    od, _ = _od(3)
    keep = E <= last_ev
    res = normalize(E[keep], od[keep], e0_ev=7722.0)
    assert res.provisional and res.plan.nnorm == 0
    full = normalize(E, od, e0_ev=7722.0)
    # the flat provisional post-edge sits in the dip after the white line (about 0.8 here)
    np.testing.assert_allclose(res.edge_jump, full.edge_jump, rtol=0.3)


def test_no_post_edge_point_cannot_normalise():
    od, _ = _od(2)
    keep = E < 7734.0  # nothing past E0 + 12 eV, where the early reference window starts
    res = normalize(E[keep], od[keep], e0_ev=7722.0)
    assert not res.plan.can_normalize
    assert np.all(np.isnan(res.edge_jump))
    part = normalize(E[E <= 7740.0], od[E <= 7740.0], e0_ev=7722.0)  # part of the window
    assert part.plan.can_normalize and part.provisional
    assert not part.plan.early_reference_complete


def test_few_pre_edge_points_give_a_constant_pre_edge():
    e = np.concatenate([[7600.0, 7610.0], np.arange(7700.0, 7900.0, 2.0)])
    mu = np.where(e > 7722.0, 1.0, 0.2)[:, None] + 0.001 * (e[:, None] - 7600.0)
    plan = plan_normalization(e, e0_ev=7722.0)
    assert plan.pre.stop - plan.pre.start == 2
    assert np.all(plan.pre_rows[1] == 0)
    res = normalize(e, mu, e0_ev=7722.0)
    assert np.isfinite(res.edge_jump[0])


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="ascending"):
        check_energies([7700.0, 7690.0])
    with pytest.raises(ValueError, match="in eV"):
        check_energies([7.70, 7.75])
    with pytest.raises(ValueError, match="non-finite"):
        check_energies([7700.0, np.nan])
    with pytest.raises(ValueError, match="shape"):
        normalize(E, np.zeros((3, 4)), e0_ev=7722.0)
    with pytest.raises(ValueError, match="no edge"):
        normalize(E, np.zeros((E.size, 4)))
    with pytest.raises(ValueError, match="low < high"):
        EdgeWindows(pre=(-20.0, -150.0))


def test_estimate_e0_before_the_edge_is_none():
    od, _ = _od(10, noise=0.002)
    keep = E <= 7700.0
    assert estimate_e0(E[keep], od[keep]) is None


def test_plans_are_cached_per_grid():
    assert plan_normalization(E, e0_ev=7722.0) is plan_normalization(E.copy(), e0_ev=7722.0)
