"""How fast the simulated TXM makes 2048x2048 XANES data, against the real FXI beamline.

One energy point of FXI's ``xanes_scan2`` with ``chunk_size=5`` is 5 sample frames and 5 flat
frames (plus moving the sample out and back in); the beamline takes about 6 s for it. Here the
whole point runs through a real RunEngine: energy move, sample stack (optical density of the
field of view at that energy, drift shift, flat field, shot noise), stage move, flat stack, both
written as AD_HDF5 external files with their resource/datum documents. The one-time set-up of a
field of view (geometry and per-pixel spectral parameters) is reported separately.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

import numpy as np
from bluesky import RunEngine

from sim.instrument import SimulatedTXM
from sim.plans import xanes_scan2
from sim.sample import make_field_of_view
from sim.spectra import SEED_ENERGIES_EV

logger = logging.getLogger(__name__)

#: Seconds the real FXI beamline needs per energy (5 sample + 5 flat frames, 2560x2160).
FXI_SECONDS_PER_ENERGY = 6.0


def run(*, quick: bool = False) -> dict[str, dict]:
    """Measure the simulator at 2048x2048 (``quick``: 3 energies instead of 6)."""
    shape = (2048, 2048)
    n_energies = 3 if quick else 6
    chunk = 5
    # energies across the edge, where the spectral model is busiest
    eng_kev = list(np.round(SEED_ENERGIES_EV[40 : 40 + n_energies * 4 : 4] / 1e3, 5))

    t0 = time.perf_counter()
    fov = make_field_of_view(shape=shape, n_particles=10, anomalies=[{"kind": "reduced"}], seed=1)
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as data_dir:
        txm = SimulatedTXM(fov=fov, seed=1, external=True, data_dir=data_dir)
        fov.od([7700.0])  # per-pixel tables and the xraydb attenuation, once per field of view
        setup_s = time.perf_counter() - t0

        RE = RunEngine({})
        flat_times = []  # wall-clock time of each flat event: one per completed energy point
        streams = {}

        def clock(name, doc):
            if name == "descriptor":
                streams[doc["uid"]] = doc["name"]
            elif name == "event" and streams[doc["descriptor"]] == "flat":
                flat_times.append(time.perf_counter())

        RE.subscribe(clock)
        t1, c1 = time.perf_counter(), time.process_time()
        RE(xanes_scan2(txm, eng_kev, chunk_size=chunk))
        run_s, cpu_s = time.perf_counter() - t1, time.process_time() - c1
    # steady-state cadence: from one energy point's flat to the next one's (excludes the dark
    # stack and run start/stop, which the whole-run average below includes)
    per_energy = float(np.mean(np.diff(flat_times)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    frames = n_energies * 2 * chunk + chunk
    logger.info(
        "simulated %d energies (%d frames of %dx%d) in %.2f s: %.2f s per energy",
        n_energies,
        frames,
        *shape,
        run_s,
        per_energy,
    )
    return {
        "sim_seconds_per_energy_2048": {
            "value": per_energy,
            "unit": "s",
            "n_energies": n_energies,
            "chunk_size": chunk,
            "frame_shape": list(shape),
            "run_seconds_per_energy": run_s / n_energies,
            "cpu_seconds_per_energy": cpu_s / n_energies,
            "load_average_1min": load,
            "includes": "RunEngine, energy and stage moves, 5 sample + 5 flat frames, AD_HDF5 "
            "writes (steady-state cadence; run_seconds_per_energy amortises dark and run set-up)",
        },
        "sim_speed_vs_fxi_ratio": {
            "value": FXI_SECONDS_PER_ENERGY / per_energy,
            "unit": "x",
            "fxi_seconds_per_energy": FXI_SECONDS_PER_ENERGY,
            "sim_seconds_per_energy": per_energy,
        },
        "sim_fov_setup_seconds_2048": {
            "value": setup_s,
            "unit": "s",
            "note": "make_field_of_view + per-pixel spectral tables, once per field of view",
        },
        "sim_frames_per_second_2048": {
            "value": frames / run_s,
            "unit": "frames/s",
        },
    }
