"""The campaign model's checkpoint: its state as a JSON document and arrays, and back.

:meth:`CampaignModel.save <streamer.learning.campaign.CampaignModel.save>` writes
:func:`campaign_state` with :func:`~streamer.learning.checkpoint.write_checkpoint` (``.npz`` with
a JSON document, no pickle); :meth:`~streamer.learning.campaign.CampaignModel.load` rebuilds the
model with :func:`restore_campaign`. Version 3 adds the early population (early decisions);
version 2 checkpoints load with an empty one, the default early prior and threshold: early alerts
then rest on the field's neighbours and the prior until the first fields are confirmed, so nothing
needs migrating.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.learning.drift import DriftEvent, PopulationDriftMonitor
from streamer.learning.population import ParticlePopulation
from streamer.learning.prior import AttributePrior

if TYPE_CHECKING:
    from streamer.learning.campaign import CampaignModel

__all__ = ["CHECKPOINT_VERSION", "READABLE_VERSIONS", "campaign_state", "restore_campaign"]

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 3
"""Version written."""
READABLE_VERSIONS = (2, 3)
"""Versions read."""


def campaign_state(model: CampaignModel) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The model's JSON-able document and its arrays by dotted name."""
    pixel_meta, pixel_arrays = model.pixels.state()
    pop_meta, pop_arrays = model.population.state()
    early_meta, early_arrays = model.early_population.state()
    meta = {
        "version": CHECKPOINT_VERSION,
        "init": {
            "attributes": list(model.attributes),
            "weights": model.weights,
            "particle_weights": model.particle_weights,
            "seed": model.seed,
            "threshold": model.threshold,
            "early_threshold": model.early_threshold,
            "kind_z": model.kind_z,
            "field_offset": model.field_offset,
            "correlation_pseudo_count": model.correlation_pseudo_count,
            "provisional_offset": model.provisional_offset,
            "quality_z": model.quality_z,
            **model._options,
            "prior": {a: asdict(p) for a, p in model.prior.items()},
            "early_prior": {a: asdict(p) for a, p in model.early_prior.items()},
        },
        "pixels": pixel_meta,
        "population": pop_meta,
        "early_population": early_meta,
        "drift": model.drift.state(),
        "drift_events": [asdict(e) for e in model.drift_events_],
        "pending_drift": len(model._pending_drift),
        "particle_fields": model.particle_fields_,
        "n_held_out": model.n_held_out_,
    }
    arrays = {f"pixels.{k}": v for k, v in pixel_arrays.items()}
    arrays.update({f"population.{k}": v for k, v in pop_arrays.items()})
    arrays.update({f"early_population.{k}": v for k, v in early_arrays.items()})
    return meta, arrays


def restore_campaign(
    cls: type[CampaignModel],
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
    *,
    source: str = "checkpoint",
) -> CampaignModel:
    """A ``cls`` model from :func:`campaign_state`'s document and arrays.

    ``source`` names the checkpoint in messages.
    """
    if meta.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"unsupported checkpoint version {meta.get('version')!r} in {source} "
            f"(this version reads {READABLE_VERSIONS})"
        )
    init = dict(meta["init"])
    for key in ("prior", "early_prior"):
        if key in init:
            init[key] = {a: AttributePrior(**p) for a, p in init[key].items()}
    model = cls(**init)

    def part(prefix: str) -> dict[str, np.ndarray]:
        return {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + ".")}

    model.pixels.restore(meta["pixels"], part("pixels"))
    model.population = ParticlePopulation.from_state(meta["population"], part("population"))
    if "early_population" in meta:
        model.early_population = ParticlePopulation.from_state(
            meta["early_population"], part("early_population")
        )
    else:
        logger.info("checkpoint %s has no early population (version 2): starting one", source)
    model.drift = PopulationDriftMonitor.from_state(meta["drift"])
    model.drift_events_ = [DriftEvent(**e) for e in meta["drift_events"]]
    n_pending = int(meta["pending_drift"])
    model._pending_drift = model.drift_events_[len(model.drift_events_) - n_pending :]
    model.particle_fields_ = list(meta["particle_fields"])
    model.n_held_out_ = int(meta["n_held_out"])
    return model
