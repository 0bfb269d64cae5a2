"""A simulated full-field TXM (NSLS-II FXI-like) for XANES: sample, ophyd devices and plans.

Modules: :mod:`sim.spectra` (Co K-edge model), :mod:`sim.sample` (fields of view, anomalies,
surveys), :mod:`sim.instrument` (ophyd devices, :class:`SimulatedTXM`), :mod:`sim.plans`
(``xanes_scan2``, ``xanes_scan``, ``survey``), :mod:`sim.truth` (ground truth per run).

The names below are imported lazily, so ``import sim.spectra`` does not import ophyd or bluesky.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SEED_ENERGIES_EV": "sim.spectra",
    "normalized_mu": "sim.spectra",
    "PRISTINE": "sim.spectra",
    "CHARGED": "sim.spectra",
    "REDUCED": "sim.spectra",
    "Anomaly": "sim.sample",
    "FieldOfView": "sim.fov",
    "ParticleTruth": "sim.fov",
    "make_field_of_view": "sim.sample",
    "make_survey": "sim.sample",
    "SimulatedTXM": "sim.instrument",
    "xanes_scan": "sim.plans",
    "xanes_scan2": "sim.plans",
    "survey": "sim.plans",
    "TruthRecorder": "sim.truth",
    "write_truth": "sim.truth",
    "read_truth": "sim.truth",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
