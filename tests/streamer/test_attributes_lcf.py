"""Non-negative linear-combination fractions (streamer.lcf, frac_<ref> attributes)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import nnls

from sim.spectra import CHARGED, PRISTINE, REDUCED, SEED_ENERGIES_EV, licoo2_mu_per_um
from streamer.attributes import compute_attributes
from streamer.lcf import nnls_all_subsets, reference_set

E = np.asarray(SEED_ENERGIES_EV, dtype=np.float64)
FINE = np.arange(7500.0, 8050.0, 0.5)
REFS = {s.name: (FINE, s.mu(FINE)) for s in (PRISTINE, CHARGED, REDUCED)}


def _mixtures(fractions: np.ndarray, *, noise_od: float, seed: int = 0) -> np.ndarray:
    """OD of pixels whose normalised spectrum mixes the references with ``fractions`` (k, n)."""
    rng = np.random.default_rng(seed)
    mu = np.stack([s.mu(E) for s in (PRISTINE, CHARGED, REDUCED)], axis=1) @ fractions
    bg, jump = licoo2_mu_per_um(E)
    t = rng.uniform(2.0, 4.0, fractions.shape[1])
    od = t * (bg[:, None] + jump[:, None] * mu)
    return (od + noise_od * rng.standard_normal(od.shape)).astype(np.float32)


def test_recovers_planted_fractions():
    rng = np.random.default_rng(3)
    n = 3000
    f = rng.dirichlet([1.0, 1.0, 1.0], n).T
    f[2, : n // 3] = 0.0  # a third with no reduced component: the constraint is active
    f /= f.sum(axis=0)
    res = compute_attributes(E, _mixtures(f, noise_od=0.003), e0_hint=7722.0, references=REFS)
    assert all(res.valid[f"frac_{k}"] for k in REFS)
    got = np.stack([res.values[f"frac_{k}"] for k in REFS])
    assert got.dtype == np.float32 and np.all(got >= 0)
    err = np.abs(got - f)
    assert np.median(err) < 0.03 and np.percentile(err, 95) < 0.12
    assert np.median(np.abs(got.sum(axis=0) - 1.0)) < 0.03


def test_noiseless_two_reference_mixtures_are_exact():
    f = np.array([[0.0, 0.25, 0.5, 1.0], [1.0, 0.75, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    refs = {k: REFS[k] for k in ("pristine", "charged")}
    res = compute_attributes(E, _mixtures(f, noise_od=0.0), e0_hint=7722.0, references=refs)
    np.testing.assert_allclose(res.values["frac_pristine"], f[0], atol=0.02)
    np.testing.assert_allclose(res.values["frac_charged"], f[1], atol=0.02)


def test_all_subsets_solution_equals_scipy_nnls():
    rng = np.random.default_rng(0)
    e = np.linspace(0.0, 1.0, 60)
    spectra = {f"r{i}": (e, np.sin((i + 1) * 2.0 * e) + 0.1 * i) for i in range(4)}
    refs = reference_set(e, spectra, rows=slice(0, 60))
    y = rng.standard_normal((60, 200)) + refs.spectra.T @ rng.uniform(-1, 1, (4, 200))
    ours = nnls_all_subsets(refs, refs.spectra @ y)
    for j in range(200):
        expected, _ = nnls(refs.spectra.T, y[:, j])
        np.testing.assert_allclose(ours[:, j], expected, atol=1e-8)


def test_bad_references_are_rejected():
    short = {"a": (np.array([7700.0, 7750.0]), np.array([0.0, 1.0]))}
    with pytest.raises(ValueError, match="covers"):
        compute_attributes(E, np.zeros((E.size, 2)), e0_hint=7722.0, references=short)
    twins = {"a": REFS["pristine"], "b": REFS["pristine"]}
    with pytest.raises(ValueError, match="dependent"):
        reference_set(E, twins, rows=slice(10, 80))
    many = {f"r{i}": REFS["pristine"] for i in range(7)}
    with pytest.raises(ValueError, match="1 to 6"):
        reference_set(E, many, rows=slice(10, 80))
