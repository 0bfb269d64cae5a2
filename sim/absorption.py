"""Absolute X-ray absorption of LiCoO2 around the Co K edge (xraydb, Elam tables).

The simulation multiplies a pixel's thickness by ``background + jump * mu_n``, where ``mu_n`` is
the normalised spectrum of :mod:`sim.spectra` and ``background`` and ``jump`` come from
:func:`licoo2_mu_per_um`.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["LICOO2_DENSITY_G_CM3", "licoo2_mu_per_um"]

#: Density used for LiCoO2 (g/cm^3); the crystallographic value is about 5.05.
LICOO2_DENSITY_G_CM3 = 5.0


@functools.lru_cache(maxsize=1)
def _loglog_fits(density: float) -> tuple[np.ndarray, np.ndarray]:
    import xraydb

    below = np.linspace(7400.0, 7690.0, 30)
    above = np.linspace(7760.0, 8200.0, 45)
    fb = np.polyfit(np.log(below), np.log(xraydb.material_mu("LiCoO2", below, density=density)), 1)
    fa = np.polyfit(np.log(above), np.log(xraydb.material_mu("LiCoO2", above, density=density)), 1)
    return fb, fa


def licoo2_mu_per_um(
    energies_ev: np.ndarray, *, density: float = LICOO2_DENSITY_G_CM3
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth background and Co K edge jump of LiCoO2 attenuation, in 1/um.

    Power laws fitted (log-log) to xraydb's ``material_mu`` below (7400-7690 eV) and above
    (7760-8200 eV) the edge, extrapolated across it. The absorption of a pixel of thickness ``t``
    (um) with normalised spectrum ``mu_n`` is then ``t * (background + jump * mu_n)``.

    Returns
    -------
    background, jump : ndarray, shape like ``energies_ev`` (float64)

    Examples
    --------
    >>> bg, jump = licoo2_mu_per_um(np.array([7700.0, 7750.0]))
    >>> bool(0.015 < bg[0] < 0.02 and 0.08 < jump[1] < 0.1)
    True
    """
    e = np.asarray(energies_ev, dtype=np.float64)
    fb, fa = _loglog_fits(float(density))
    background = np.exp(np.polyval(fb, np.log(e))) * 1e-4
    above = np.exp(np.polyval(fa, np.log(e))) * 1e-4
    return background, above - background
