"""The live benchmark's plumbing: msgpack documents, the analyzer behind bluesky's 0MQ dispatcher.

No timing is asserted here (``bench/bench_live.py`` and ``bench/bench_latency.py`` measure);
these tests check that what the benchmarks measure is the real thing: documents survive the
msgpack wire format bit for bit, and a :class:`callbacks.XanesAnalyzer` fed through
``Publisher -> Proxy -> RemoteDispatcher`` in another process flags what the same analyzer flags
in the RunEngine's process.
"""

from __future__ import annotations

import numpy as np
import pytest
from bluesky import RunEngine

from bench.bench_latency import EventClock
from bench.live_sinks import RemoteAnalyzer, pack_document, unpack_document
from callbacks import XanesAnalyzer
from sim.instrument import SimulatedTXM
from sim.plans import xanes_scan2
from sim.sample import make_field_of_view
from sim.spectra import SEED_ENERGIES_EV

ENG_KEV = list(SEED_ENERGIES_EV[::2] / 1000.0)


def test_msgpack_documents_round_trip_arrays_and_scalars():
    frames = np.arange(2 * 3 * 4, dtype="<u2").reshape(2, 3, 4)
    doc = {
        "uid": "e1",
        "seq_num": np.int64(3),
        "data": {"Andor_image": frames, "XEng": np.float64(7.7225), "flag": True},
        "timestamps": {"Andor_image": 1.5},
        "filled": {},
        "shape": (2, 3, 4),
    }
    back = unpack_document(pack_document(doc))
    np.testing.assert_array_equal(back["data"]["Andor_image"], frames)
    assert back["data"]["Andor_image"].dtype == np.dtype("<u2")
    assert back["seq_num"] == 3 and back["data"]["XEng"] == 7.7225
    assert back["shape"] == [2, 3, 4] and back["data"]["flag"] is True


def test_msgpack_refuses_what_it_cannot_encode():
    with pytest.raises(TypeError, match="cannot msgpack"):
        pack_document({"x": object()})


def test_event_clock_times_an_energy_by_its_later_document():
    clock = EventClock()
    clock("descriptor", {"uid": "d1", "run_start": "r", "name": "primary"})
    clock("descriptor", {"uid": "d2", "run_start": "r", "name": "flat"})
    clock("event", {"descriptor": "d1", "seq_num": 1})
    assert clock.energy_complete("r", 0) is None  # the flat is still missing
    clock("event", {"descriptor": "d2", "seq_num": 1})
    done = clock.energy_complete("r", 0)
    assert done == clock.times[("r", "flat", 1)] >= clock.times[("r", "primary", 1)]


def test_remote_dispatcher_analyzer_flags_what_the_local_one_flags():
    fov = make_field_of_view(shape=(64, 64), n_particles=5, anomalies=[{"kind": "reduced"}], seed=4)
    local = XanesAnalyzer(alerts=None, report=False)
    remote = RemoteAnalyzer(timeout=120.0)
    try:
        RE = RunEngine({}, context_managers=[])
        RE.subscribe(local)
        RE.subscribe(remote)
        txm = SimulatedTXM(fov=fov, seed=4)
        (uid,) = RE(xanes_scan2(txm, ENG_KEV, chunk_size=2))
        assert local.flush(timeout=120)
        stats = remote.flush()
    finally:
        remote.close()
        local.close()
    assert stats["dropped_events"] == 0 and stats["worker_errors"] == 0
    assert stats["accepted"] == local.stats["accepted"]
    (summary,) = local.session.runs
    assert summary.flagged, "the planted reduced particle should be flagged"
    assert remote.flagged[uid] == sorted(summary.flagged)
