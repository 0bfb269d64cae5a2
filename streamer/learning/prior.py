"""What LiCoO2 is known to look like at the Co K-edge: the broad prior of the particle scorer.

The campaign model compares a particle with the population seen so far. Before there is a
population (the first field of view of a campaign) it compares it with its neighbours in the
same field and with this prior. The prior is deliberately broad in *location* (beamlines differ in
energy calibration by about a volt) and informative in *spread* (how different two normal
particles are), and it is worth a fixed number of particles (``pseudo_count``): population
statistics take over from it as confirmed particles accumulate.

Sources: the seed study's LiCoO2 maps (majority edge 7721.4-7722.2 eV, white line 7729.5-7729.6
eV) and the measured pristine / charged LiCoO2 standards (white-line height about 1.6-1.9 edge
steps in this project's normalisation, see ``docs/architecture.md``).

Examples
--------
>>> prior = LICOO2_CO_K_PRIOR["e0_half"]
>>> prior.location, prior.spread
(7722.3, 0.24)
>>> LICOO2_CO_K_EARLY_PRIOR["white_line_height"].location  # on the early reference
1.68
>>> sorted(DEFAULT_WEIGHTS)[:3]
['e0_deriv', 'e0_half', 'edge_jump']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.provisional import ATTRIBUTE_NAMES

__all__ = [
    "ATTRIBUTES",
    "DEFAULT_WEIGHTS",
    "LICOO2_CO_K_PRIOR",
    "SOC_SD",
    "AttributePrior",
    "prior_correlation",
]

#: Per-pixel attribute names (``docs/architecture.md``), in the order the models use them.
ATTRIBUTES = ATTRIBUTE_NAMES

#: The seed study's weights: edge 1, white-line energy 1, white-line height 1, R^2 0.1,
#: noise 0.1, edge jump off. ``e0_deriv`` (not in the seed study) is off by default.
DEFAULT_WEIGHTS = {
    "edge_jump": 0.0,
    "e0_half": 1.0,
    "e0_deriv": 0.0,
    "white_line_energy": 1.0,
    "white_line_height": 1.0,
    "pre_edge_noise": 0.1,
    "r_squared": 0.1,
}


@dataclass(frozen=True)
class AttributePrior:
    """A broad prior for one per-particle attribute (the particle median of a pixel attribute).

    Parameters
    ----------
    location : float or None
        Expected population median (``None``: no prior location, neighbours and population only).
    location_sd : float
        Uncertainty of ``location`` (calibration offsets between beamlines and samples).
    spread : float
        Expected between-particle standard deviation of normal particles (robust).
    pseudo_count : float
        How many particles' worth of evidence ``spread`` (and the prior correlation) is worth in
        the blend with the observed spread (0: used only while nothing else is known).
    soc_slope : float
        Change of the attribute from pristine to fully charged LiCoO2: particles differ mostly
        in state of charge, so attributes with a slope co-vary (see :func:`prior_correlation`).
    """

    location: float | None
    location_sd: float
    spread: float
    pseudo_count: float = 10.0
    soc_slope: float = 0.0

    def __post_init__(self):
        if not (self.location_sd > 0 and self.spread > 0 and self.pseudo_count >= 0):
            raise ValueError(
                f"invalid prior {self!r}: need location_sd > 0, spread > 0, pseudo_count >= 0"
            )


#: Between-particle standard deviation of the state of charge (0 pristine, 1 charged to 4.9 V)
#: assumed by :func:`prior_correlation`.
SOC_SD = 0.2

#: LiCoO2 at the Co K-edge, energies in eV, heights in edge steps. ``soc_slope``: the measured
#: pristine and 4.9 V-charged LiCoO2 TXM standards (``../shared/data/co-k-edge``, as fitted by
#: ``sim.calibration``) differ by +0.93 eV in edge, +2.40 eV in white-line energy and +0.31 in
#: white-line height. ``spread`` = sqrt((SOC_SD * slope)**2 + independent**2), with independent
#: spreads 0.15 eV, 0.2 eV and 0.03.
LICOO2_CO_K_PRIOR: dict[str, AttributePrior] = {
    "e0_half": AttributePrior(7722.3, 1.0, 0.24, 10.0, soc_slope=0.93),
    "e0_deriv": AttributePrior(None, 2.0, 0.4, 0.0),
    "white_line_energy": AttributePrior(7729.0, 1.0, 0.52, 10.0, soc_slope=2.40),
    "white_line_height": AttributePrior(1.7, 0.15, 0.069, 10.0, soc_slope=0.31),
    # Quality attributes: no useful location, a weak guess of the spread.
    "pre_edge_noise": AttributePrior(None, 1.0, 0.01, 0.0),
    "r_squared": AttributePrior(None, 1.0, 0.01, 0.0),
    "edge_jump": AttributePrior(None, 1.0, 0.1, 0.0),
    "unusual_fraction": AttributePrior(0.0, 0.05, 0.05, 5.0),
}

#: The same prior for *early* values (:mod:`streamer.provisional`: edge jump on the fixed early
#: reference 12-20 eV past the edge, before the post-edge window fills). Edge and white-line
#: energies do not depend on the edge jump's reference (the half-jump crossing moves by < 0.2 eV);
#: the white-line height does: on the simulator's LiCoO2 (fitted to the measured standards) it is
#: 1.655 pristine and 1.72 charged on the early reference (``soc_slope`` 0.09, against 0.31 on
#: the complete scan) while a white line 0.5 edge steps stronger stays 0.47 higher. Spread: the
#: state-of-charge term and an independent 0.04 (wider than the complete scan's 0.03: fewer
#: points in the reference).
LICOO2_CO_K_EARLY_PRIOR: dict[str, AttributePrior] = {
    **LICOO2_CO_K_PRIOR,
    "white_line_height": AttributePrior(1.68, 0.15, 0.044, 10.0, soc_slope=0.09),
}


def prior_correlation(
    attributes, priors, *, soc_sd: float = SOC_SD, shrink: float = 0.8
) -> np.ndarray:
    """Prior correlation of per-particle attributes, from their common state-of-charge slope.

    ``corr(a, b) = shrink * soc_sd**2 * slope_a * slope_b / (spread_a * spread_b)`` for
    ``a != b`` (clipped to +-0.95); attributes without a slope or a prior are uncorrelated.
    ``shrink`` pulls the state-of-charge model toward independence: 0.8 is the benchmark's
    trade-off (bench/bench_scorers.py; 16 simulated campaigns, subtle anomalies detected at
    threshold 4: 59 % with no prior correlation, 91 % with 0.8, 94 % with 1.0; false alerts on
    synthetic campaigns whose attributes are independent: 0.41 %, 0.65 %, 1.06 %).

    >>> r = prior_correlation(["e0_half", "white_line_energy", "r_squared"], LICOO2_CO_K_PRIOR)
    >>> np.round(r, 2).tolist()
    [[1.0, 0.57, 0.0], [0.57, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    d = len(attributes)
    slope = np.zeros(d)
    spread = np.ones(d)
    for i, a in enumerate(attributes):
        p = priors.get(a)
        if p is not None:
            slope[i], spread[i] = p.soc_slope, p.spread
    corr = np.clip(shrink * soc_sd**2 * np.outer(slope / spread, slope / spread), -0.95, 0.95)
    np.fill_diagonal(corr, 1.0)
    return corr
