"""Correctness against larch (``find_e0``, ``pre_edge``) on real standards and noisy spectra.

larch returns a grid point for E0; our ``e0_deriv`` is the same smoothed-derivative maximum refined
below the grid step, so it must lie within half the local energy step of larch's. Edge jumps are
compared with ``pre_edge``'s ``edge_step`` over the same pre- and post-edge points.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.spectra import SEED_ENERGIES_EV
from streamer.attributes import compute_attributes
from streamer.normalize import EdgeWindows, plan_normalization
from tests.streamer.test_attributes import simulated_od

larch_xafs = pytest.importorskip("larch.xafs")
larch_preedge = pytest.importorskip("larch.xafs.pre_edge").preedge

STANDARDS = {
    "licoo2_pristine_txm.dat": 7725.0,
    "licoo2_charged_4p9V_txm.dat": 7727.0,
    "co_metal_rt.xdi": 7709.0,
}


def _load(folder, name: str) -> tuple[np.ndarray, np.ndarray]:
    path = folder / "co-k-edge" / name
    if name.endswith(".xdi"):
        energy, i0, itrans = np.loadtxt(path, comments="#", unpack=True)
        return energy, np.log(i0 / itrans)
    energy, mu = np.loadtxt(path, unpack=True)
    return energy, mu


def _half_local_step(energies: np.ndarray, at: float) -> float:
    i = int(np.argmin(np.abs(energies - at)))
    return 0.5 * min(energies[i] - energies[i - 1], energies[i + 1] - energies[i])


def _matching_windows(energies: np.ndarray, e0: float) -> EdgeWindows:
    """Default windows, with the post-edge stopping before the last point (larch excludes it)."""
    last = energies[-1] - e0 - 0.5 * (energies[-1] - energies[-2])
    return EdgeWindows(post=(EdgeWindows().post[0], min(EdgeWindows().post[1], last)))


def _larch_edge_step(energies, mu, *, e0_larch, e0_nominal, windows) -> float:
    """larch's edge_step over exactly the points our plan fits (larch slices [p1:p2))."""
    plan = plan_normalization(energies, e0_ev=e0_nominal, windows=windows)
    res = larch_preedge(
        energies,
        mu,
        e0=e0_larch,
        pre1=energies[plan.pre.start] - e0_larch,
        pre2=energies[plan.pre.stop] - e0_larch,
        norm1=energies[plan.post.start] - e0_larch,
        norm2=energies[plan.post.stop] - e0_larch,
        nnorm=plan.nnorm,
    )
    return res["edge_step"]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", list(STANDARDS))
def test_edge_energy_and_jump_agree_with_larch_on_real_standards(shared_data, name):
    energies, mu = _load(shared_data, name)
    e0_larch = larch_xafs.find_e0(energies, mu)
    assert e0_larch == STANDARDS[name]
    first = compute_attributes(energies, mu[:, None])
    windows = _matching_windows(energies, first.e0_ev)
    res = compute_attributes(energies, mu[:, None], e0_hint=first.e0_ev, windows=windows)
    assert all(res.valid.values()) and res.valid_pixels[0]
    ours = float(res.values["e0_deriv"][0])
    assert abs(ours - e0_larch) <= _half_local_step(energies, e0_larch)
    step = _larch_edge_step(energies, mu, e0_larch=e0_larch, e0_nominal=res.e0_ev, windows=windows)
    assert float(res.values["edge_jump"][0]) == pytest.approx(step, rel=0.03)


@pytest.mark.shared_data
def test_pristine_to_charged_edge_shift_by_half_jump(shared_data):
    e_half = {}
    for name in ("licoo2_pristine_txm.dat", "licoo2_charged_4p9V_txm.dat"):
        energies, mu = _load(shared_data, name)
        res = compute_attributes(energies, mu[:, None])
        assert res.valid["e0_half"]
        e_half[name] = float(res.values["e0_half"][0])
    shift = e_half["licoo2_charged_4p9V_txm.dat"] - e_half["licoo2_pristine_txm.dat"]
    assert shift == pytest.approx(1.0, abs=0.3)


def test_agrees_with_larch_on_noisy_simulated_spectra():
    """200 spectra at the nominal noise (pre-edge noise about 2 % of the jump, as the seed's)."""
    energies = np.asarray(SEED_ENERGIES_EV, dtype=np.float64)
    od, _, _ = simulated_od(200, seed=11, noise_od=0.006)
    res = compute_attributes(energies, od)
    windows = _matching_windows(energies, res.e0_ev)
    res = compute_attributes(energies, od, e0_hint=res.e0_ev, windows=windows)
    assert 0.015 < np.median(res.values["pre_edge_noise"]) < 0.03
    agree, rel = [], []
    for j in range(od.shape[1]):
        mu = od[:, j].astype(np.float64)
        e0 = larch_xafs.find_e0(energies, mu)
        agree.append(abs(res.values["e0_deriv"][j] - e0) <= _half_local_step(energies, e0))
        step = _larch_edge_step(energies, mu, e0_larch=e0, e0_nominal=res.e0_ev, windows=windows)
        rel.append(res.values["edge_jump"][j] / step - 1.0)
    assert np.mean(agree) >= 0.99
    assert np.max(np.abs(rel)) < 0.03
