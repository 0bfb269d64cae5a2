"""The live analyzer on a real RunEngine with the simulated TXM (small frames)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky import plans as bp
from ophyd.sim import det, motor

from callbacks import XanesAnalyzer
from sim.instrument import SimulatedTXM
from sim.plans import survey, xanes_scan2
from sim.sample import make_field_of_view, make_survey
from sim.spectra import SEED_ENERGIES_EV

# every other point of the seed grid keeps the edge and white line sampled at 2 eV, in half the time
ENG_KEV = list(SEED_ENERGIES_EV[::2] / 1000.0)
SHAPE = (64, 64)


@pytest.fixture
def RE():
    return RunEngine({})


def _analyzer(**kw):
    sent = []
    analyzer = XanesAnalyzer(alerts=sent.append, keep_label_maps=True, **kw)
    return analyzer, sent


@pytest.mark.parametrize("plan", ["xanes_scan2", "xanes_scan"])
def test_survey_in_both_dialects_flags_the_planted_particle(RE, plan):
    fovs = make_survey(
        n_fovs=2,
        shape=SHAPE,
        seed=3,
        n_particles=4,
        anomalies_per_survey=[{"kind": "reduced", "fov": 1}],
    )
    txm = SimulatedTXM(fov=fovs[0], seed=3)
    analyzer, sent = _analyzer()
    RE.subscribe(analyzer)
    uids = RE(survey(txm, fovs, plan=plan, eng_list=ENG_KEV, chunk_size=2))
    assert analyzer.flush(timeout=120)
    stats = analyzer.stats
    assert stats["worker_errors"] == 0 and stats["router_errors"] == 0
    assert stats["dropped_events"] == 0
    runs = {s.info.run_uid: s for s in analyzer.session.runs}
    assert set(runs) == set(uids)
    summaries = [a for a in sent if a["kind"] == "scan_summary"]
    assert len(summaries) == 2
    flagged = runs[uids[1]].flagged
    assert flagged, f"the reduced particle was not flagged; alerts: {[a['message'] for a in sent]}"
    truth_labels = fovs[1].labels
    planted = next(p.id for p in fovs[1].particles if p.kind == "reduced")
    detected = runs[uids[1]].labels
    (pid,) = flagged
    overlap = np.bincount(truth_labels[detected == pid], minlength=truth_labels.max() + 1)
    assert overlap.argmax() == planted
    assert not runs[uids[0]].flagged
    analyzer.close()


def test_other_runs_are_ignored_cheaply(RE):
    analyzer, sent = _analyzer()
    RE.subscribe(analyzer)
    RE(bp.count([det], num=3))
    RE(bp.scan([det], motor, 0, 1, 3))
    assert analyzer.flush(timeout=10)
    assert analyzer.ignored_runs == 2 and analyzer.stats["accepted"] == 0 and sent == []
    analyzer.close()


def test_aborted_scan_is_reported_not_raised(RE):
    txm = SimulatedTXM(fov=make_field_of_view(shape=SHAPE, n_particles=3, seed=1), seed=1)
    analyzer, sent = _analyzer()
    RE.subscribe(analyzer)
    RE(xanes_scan2(txm, ENG_KEV, chunk_size=1, abort_after=10))
    assert analyzer.flush(timeout=60)
    assert analyzer.stats["worker_errors"] == 0
    (summary,) = analyzer.session.runs
    assert not summary.exit_ok
    messages = [a["message"] for a in sent if a["kind"] == "data_quality"]
    assert any("aborted" in m for m in messages)
    analyzer.close()


def test_subscribing_mid_run_ignores_the_orphan_documents(RE, caplog):
    txm = SimulatedTXM(fov=make_field_of_view(shape=SHAPE, n_particles=2, seed=2), seed=2)
    analyzer, _sent = _analyzer()
    late = {"on": False}

    def gate(name, doc):
        if name == "event" and not late["on"]:
            late["on"] = True
        if late["on"]:
            analyzer(name, doc)

    RE.subscribe(gate)
    with caplog.at_level(logging.WARNING, logger="callbacks.analyzer"):
        RE(xanes_scan2(txm, ENG_KEV[:6], chunk_size=1))
    assert analyzer.flush(timeout=30)
    assert analyzer.stats["orphan_documents"] > 0 and analyzer.stats["router_errors"] == 0
    assert "never received" in caplog.text
    analyzer.close()


def test_a_failing_alert_sink_never_reaches_the_run_engine(RE):
    def broken(alert):
        raise RuntimeError("subscriber gone")

    fovs = make_survey(
        n_fovs=1,
        shape=SHAPE,
        seed=4,
        n_particles=3,
        anomalies_per_survey=[{"kind": "white_line", "fov": 0}],
    )
    txm = SimulatedTXM(fov=fovs[0], seed=4)
    analyzer = XanesAnalyzer(alerts=broken)
    RE.subscribe(analyzer)
    RE(survey(txm, fovs, eng_list=ENG_KEV, chunk_size=1))
    assert analyzer.flush(timeout=60)
    assert analyzer.session.sink_errors > 0 and analyzer.stats["worker_errors"] == 0
    analyzer.close()


def _generic_scan_without_flats(frames, energies_ev):
    """A generic energy scan: an energy motor, a 2D detector, no flat or dark stream."""
    from ophyd import Signal

    energy = Signal(name="mono_energy", value=energies_ev[0])
    image = Signal(name="cam_image", value=frames[0])

    def plan():
        yield from bps.open_run({"plan_name": "list_scan", "motors": ["mono_energy"]})
        for e, frame in zip(energies_ev, frames, strict=True):
            yield from bps.mv(energy, e)
            image.put(frame)
            yield from bps.trigger_and_read([energy, image])
        yield from bps.close_run()

    return plan()


def test_generic_scan_without_flats_is_analysed_as_raw_absorbance(RE):
    fov = make_field_of_view(shape=SHAPE, n_particles=3, seed=5)
    energies = SEED_ENERGIES_EV[::2]
    counts = 20000.0 * np.exp(-fov.od(energies))
    frames = np.random.default_rng(0).poisson(counts).astype(np.uint16)
    analyzer, sent = _analyzer()
    RE.subscribe(analyzer)
    RE(_generic_scan_without_flats(list(frames), list(energies)))
    assert analyzer.flush(timeout=60)
    assert analyzer.stats["worker_errors"] == 0
    (summary,) = analyzer.session.runs
    assert summary.n_particles >= 2
    assert any("missing flats" in a["message"] for a in sent if a["kind"] == "data_quality")
    analyzer.close()


def test_malformed_documents_are_logged_and_counted(RE, caplog):
    analyzer, _ = _analyzer()
    with caplog.at_level(logging.ERROR, logger="callbacks.analyzer"):
        analyzer(
            "start", {"uid": "u1", "time": 0.0, "plan_name": "xanes_scan2", "eng_list": [7.7, 7.71]}
        )
        analyzer(
            "descriptor",
            {
                "uid": "d1",
                "run_start": "u1",
                "name": "primary",
                "data_keys": {"Andor_image": {"shape": [1, 8, 8]}},
            },
        )
        analyzer("event", {"uid": "e1", "descriptor": "d1", "seq_num": 1})  # no data at all
        analyzer("stop", {"uid": "s1", "run_start": "u1", "exit_status": "success"})
    assert analyzer.flush(timeout=10)
    assert analyzer.stats["router_errors"] + analyzer.stats["worker_errors"] >= 1
    analyzer.close()
