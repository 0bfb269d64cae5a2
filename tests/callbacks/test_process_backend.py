"""``XanesAnalyzer(backend="process")``: the wire, the forwarding policy and a real child."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine

from callbacks import XanesAnalyzer
from callbacks.process_backend import DocumentForwarder, decode_message, encode_message
from callbacks.worker import DocumentQueue
from sim.instrument import SimulatedTXM
from sim.plans import xanes_scan2
from sim.sample import make_field_of_view
from sim.spectra import SEED_ENERGIES_EV

ENG_KEV = list(SEED_ENERGIES_EV[::2] / 1000.0)


def test_frames_travel_out_of_band_and_the_document_is_left_alone():
    frames = np.arange(2 * 3 * 4, dtype="<u2").reshape(2, 3, 4)
    doc = {"uid": "e1", "seq_num": 1, "data": {"img": frames, "XEng": 7.7, "n": np.int64(3)}}
    wire = encode_message("doc", "event", doc, 0.25)
    assert len(wire) == 2 and bytes(wire[1]) == frames.tobytes()
    assert doc["data"]["img"] is frames  # the RunEngine's document is not modified
    kind, name, back, depth = decode_message([bytes(f) for f in wire])
    assert (kind, name, depth) == ("doc", "event", 0.25)
    assert back["data"]["XEng"] == 7.7 and back["data"]["n"] == 3
    np.testing.assert_array_equal(back["data"]["img"], frames)
    assert back["data"]["img"].dtype == frames.dtype and not back["data"]["img"].flags.writeable


def test_a_message_with_missing_frames_is_refused():
    wire = encode_message("doc", "event", {"data": {"img": np.zeros((2, 2))}}, 0.0)
    with pytest.raises(ValueError, match="announces 1 arrays"):
        decode_message(wire[:1])


class FakeProcess:
    """Stands in for the child: ``try_send`` succeeds only once ``open`` is set."""

    def __init__(self):
        self.sent = []
        self.open = threading.Event()
        self.alive = True

    def try_send(self, kind, name, doc, depth=0.0):
        if not self.open.is_set():
            return False
        self.sent.append(name)
        return True

    def send(self, kind, name, doc, depth=0.0):
        self.open.wait()
        self.sent.append(name)


def _event(i):
    return {"uid": f"e{i}", "seq_num": i, "descriptor": "d", "data": {}}


def test_forwarder_sends_directly_in_order_when_nothing_waits():
    queue, process = DocumentQueue(max_events=1), FakeProcess()
    process.open.set()
    forwarder = DocumentForwarder(queue, process)
    forwarder.start()
    for name, doc in [("start", {}), ("event", _event(1)), ("event", _event(2)), ("stop", {})]:
        forwarder.put(name, doc)
    forwarder.stop(10)
    assert process.sent == ["start", "event", "event", "stop"]
    assert queue.stats.accepted == 4 and queue.stats.dropped_events == 0


def test_a_stuck_child_fills_the_queue_and_events_are_dropped_not_waited_for():
    queue, process = DocumentQueue(max_events=1), FakeProcess()
    forwarder = DocumentForwarder(queue, process)
    forwarder.start()
    forwarder.put("start", {})
    forwarder.put("event", _event(1))
    forwarder.put("event", _event(2), run_key="d")  # the child takes nothing: dropped
    forwarder.put("stop", {})  # control documents are always accepted
    assert queue.stats.dropped_events == 1 and queue.stats.dropped_by_run == {"d": 1}
    process.open.set()
    assert queue.join(10)
    forwarder.stop(10)
    assert process.sent == ["start", "event", "dropped", "stop"]


def test_options_the_child_cannot_take_are_refused_before_it_starts():
    with pytest.raises(ValueError, match="backend must be"):
        XanesAnalyzer(backend="fork")
    with pytest.raises(ValueError, match="nice must be"):
        XanesAnalyzer(backend="process", nice=25)
    with pytest.raises(ValueError, match="cannot share a session"):
        XanesAnalyzer(backend="process", session=object())


@pytest.fixture(scope="module")
def scan_docs():
    """The documents of one small xanes_scan2 run with a planted reduced particle."""
    fov = make_field_of_view(shape=(64, 64), n_particles=4, anomalies=[{"kind": "reduced"}], seed=3)
    docs = []
    RE = RunEngine({})
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(xanes_scan2(SimulatedTXM(fov=fov, seed=3), ENG_KEV, chunk_size=1))
    return docs


def _analyse(docs, **options):
    alerts = []
    with XanesAnalyzer(alerts=alerts.append, report=False, **options) as analyzer:
        for name, doc in docs:
            analyzer(name, doc)
        assert analyzer.flush(timeout=120)
        flags, stats = analyzer.run_flags(), analyzer.stats
    return flags, stats, alerts


def test_the_child_analyses_like_the_thread_and_its_alerts_come_back(scan_docs):
    thread_flags, _, thread_alerts = _analyse(scan_docs, backend="thread")
    flags, stats, alerts = _analyse(scan_docs, backend="process")
    assert flags == thread_flags and len(flags) == 1
    assert [a["kind"] for a in alerts] == [a["kind"] for a in thread_alerts]
    particles = [(a.get("particle") or {}).get("id") for a in alerts]
    assert particles == [(a.get("particle") or {}).get("id") for a in thread_alerts]
    assert stats["processed"] == len(scan_docs) and stats["dropped_events"] == 0
    assert stats["worker_errors"] == stats["forward_errors"] == stats["router_errors"] == 0


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
def test_every_thread_of_the_child_runs_at_idle_priority(scan_docs):
    """Linux sets a policy per thread: 0MQ's I/O threads must not run at the RunEngine's."""
    with XanesAnalyzer(alerts=None, report=False, backend="process", nice="idle") as analyzer:
        for name, doc in scan_docs[:10]:
            analyzer(name, doc)
        assert analyzer.flush(timeout=60)
        tasks = Path(f"/proc/{analyzer._process.proc.pid}/task")
        policies = {int(t.name): os.sched_getscheduler(int(t.name)) for t in tasks.iterdir()}
    assert len(policies) >= 3  # main, 0MQ I/O, analysis
    assert set(policies.values()) == {os.SCHED_IDLE}, policies


def test_a_dead_child_never_reaches_the_run_engine(scan_docs, caplog):
    analyzer = XanesAnalyzer(alerts=None, report=False, backend="process")
    analyzer._process.proc.kill()
    analyzer._process.proc.wait()
    for name, doc in scan_docs[:20]:
        analyzer(name, doc)  # never raises
    assert not analyzer.flush(timeout=10)
    analyzer.close(timeout=10)
    stats = analyzer.stats
    assert stats["router_errors"] == 0 and stats["forward_errors"] > 0


def test_a_dropped_marker_from_the_run_engine_process_reaches_its_run(scan_docs):
    """What the child receives when the parent's queue dropped an event."""
    docs = list(scan_docs)
    k, (_, lost) = next((i, d) for i, d in enumerate(docs) if d[0] == "event" and i > 20)
    marker = {"name": "event", "doc_uid": lost["uid"], "seq_num": lost["seq_num"]}
    docs[k] = ("dropped", {**marker, "descriptor": lost["descriptor"], "nbytes": 0})
    _, stats, alerts = _analyse(docs, backend="thread")
    assert stats["router_errors"] == stats["worker_errors"] == 0
    assert any(a.get("subject") == "check:dropped_frames" for a in alerts) or any(
        "dropped" in a["message"] for a in alerts if a["kind"] == "data_quality"
    )
