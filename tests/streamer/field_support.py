"""A small simulated field and its noisy cube on the seed grid, shared by the evaluation tests."""

from __future__ import annotations

import numpy as np

from sim.sample import FieldOfView, make_field_of_view
from sim.spectra import SEED_ENERGIES_EV

E = np.asarray(SEED_ENERGIES_EV, dtype=np.float64)
"""The seed study's 106 energies (eV)."""

DECISIVE = ("e0_half", "white_line_energy", "white_line_height")
"""The attributes a decision needs (``DecisionPolicy.decisive``)."""


def noisy_field(
    kind: str, *, seed: int, noise: float, noise_seed: int
) -> tuple[FieldOfView, np.ndarray]:
    """A 64x64 field of 4 particles, one of ``kind``, and its OD cube ``(106, 4096)`` with noise."""
    fov = make_field_of_view(
        shape=(64, 64), n_particles=4, anomalies=[{"kind": kind}], seed=seed, subtle=False
    )
    od = fov.od(E).reshape(E.size, -1)
    od += noise * np.random.default_rng(noise_seed).standard_normal(od.shape).astype(np.float32)
    return fov, np.ascontiguousarray(od, dtype=np.float32)
