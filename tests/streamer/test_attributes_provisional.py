"""Provisional attributes: validity flips as the energies of a scan arrive in ascending order."""

from __future__ import annotations

import numpy as np

from streamer.attributes import compute_attributes
from streamer.provisional import NEEDS_NORMALIZATION, attribute_requirements, attribute_validity
from tests.streamer.test_attributes import E, simulated_od

E0 = 7722.0


def _run(n_present: int, od: np.ndarray, **kwargs):
    return compute_attributes(E[:n_present], od[:n_present], e0_hint=E0, **kwargs)


def test_validity_flips_in_order_as_energies_arrive():
    od, _, _ = simulated_od(200, noise_od=0.003)
    first_valid = {}
    for n in range(8, E.size + 1):
        res = _run(n, od)
        for name, ok in res.valid.items():
            if ok:
                first_valid.setdefault(name, E[n - 1])
            else:
                assert name not in first_valid, f"{name} became invalid again at {E[n - 1]}"
    # every attribute becomes valid, the edge energy first, the jump-dependent ones once the
    # post-edge window holds three points (7792.4 eV on the seed grid)
    assert set(first_valid) == set(res.valid)
    assert first_valid["e0_deriv"] <= E0 + 15.5 and first_valid["white_line_energy"] <= E0 + 20.5
    for name in NEEDS_NORMALIZATION:
        assert first_valid[name] == 7792.4, name
    assert first_valid["e0_deriv"] < first_valid["edge_jump"]


def test_values_that_are_valid_early_are_already_right():
    od, _, _ = simulated_od(300, noise_od=0.003)
    final = _run(E.size, od).values
    at_edge = _run(int(np.searchsorted(E, E0 + 16.0)), od)
    assert at_edge.valid["e0_deriv"] and at_edge.provisional
    np.testing.assert_allclose(at_edge.values["e0_deriv"], final["e0_deriv"], atol=0.05)
    early = _run(int(np.searchsorted(E, 7793.0)), od)
    assert early.valid["e0_half"] and early.valid["white_line_height"]
    assert np.median(np.abs(early.values["e0_half"] - final["e0_half"])) < 0.1
    # before that the provisional flat post-edge gives values, flagged not valid
    flat = _run(int(np.searchsorted(E, 7760.0)), od)
    assert flat.provisional and not flat.valid["e0_half"] and flat.valid["e0_deriv"]
    assert np.all(np.isfinite(flat.values["e0_half"][flat.valid_pixels]))


def test_planned_grid_decides_provisional_and_clips_requirements():
    od, _, _ = simulated_od(20)
    short = E <= 7772.4  # a plan that ends before the default post-edge window fills
    done = compute_attributes(E[short], od[short], e0_hint=E0, planned_energies_ev=E[short])
    assert not done.provisional and all(done.valid.values())
    running = compute_attributes(E[:60], od[:60], e0_hint=E0, planned_energies_ev=E)
    assert running.provisional
    complete = compute_attributes(E, od, e0_hint=E0, planned_energies_ev=E)
    assert not complete.provisional and all(complete.valid.values())


def test_requirements_and_validity_helpers():
    req = attribute_requirements(E0, references=["pristine"])
    assert set(req) >= {"frac_pristine", "e0_deriv", "white_line_energy"}
    lo, hi = req["white_line_energy"]
    assert lo < E0 < hi
    assert attribute_validity([], req) == dict.fromkeys(req, False)
    valid = attribute_validity(E, req)
    assert all(valid.values())
