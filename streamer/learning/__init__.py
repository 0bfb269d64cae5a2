"""Online learning across a campaign of TXM-XANES fields of view.

- :mod:`~streamer.learning.campaign`: :class:`CampaignModel`, the facade the analyzer calls.
- :mod:`~streamer.learning.standardize`: running (campaign) standardisation of pixel attributes.
- :mod:`~streamer.learning.pixel_clusters`: mini-batch k-means with stable ids and new clusters.
- :mod:`~streamer.learning.population`: river running statistics of confirmed normal particles.
- :mod:`~streamer.learning.particle_scoring`: particle scores against population, neighbours, prior.
- :mod:`~streamer.learning.prior`: what LiCoO2 is known to look like at the Co K-edge.
- :mod:`~streamer.learning.drift`: river drift detectors on the population.
- :mod:`~streamer.learning.checkpoint`: pickle-free checkpoint files.
- :mod:`~streamer.learning.synthetic`: synthetic particle tables for tests and benchmarks.
"""

from streamer.learning.campaign import (
    DEFAULT_EARLY_THRESHOLD,
    DEFAULT_THRESHOLD,
    CampaignModel,
    NewClusterEvent,
    PixelResult,
)
from streamer.learning.drift import DriftEvent, PopulationDriftMonitor
from streamer.learning.particle_scoring import ParticleScore
from streamer.learning.prior import (
    ATTRIBUTES,
    DEFAULT_WEIGHTS,
    LICOO2_CO_K_EARLY_PRIOR,
    LICOO2_CO_K_PRIOR,
    AttributePrior,
)

__all__ = [
    "ATTRIBUTES",
    "DEFAULT_EARLY_THRESHOLD",
    "DEFAULT_THRESHOLD",
    "DEFAULT_WEIGHTS",
    "LICOO2_CO_K_EARLY_PRIOR",
    "LICOO2_CO_K_PRIOR",
    "AttributePrior",
    "CampaignModel",
    "DriftEvent",
    "NewClusterEvent",
    "ParticleScore",
    "PixelResult",
    "PopulationDriftMonitor",
]
