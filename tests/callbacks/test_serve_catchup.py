"""Catch-up from the catalog after a restart, without processes (the catalog is faked)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

import streamer.catalog
import streamer.catalog_runs
import streamer.replay_source
from callbacks.serve_catchup import CatalogCatchUp
from streamer.alert_journal import AlertJournal
from streamer.catalog_runs import RunSummary

XANES = {"plan_name": "xanes_scan2", "eng_list": [7.7, 7.71], "chunk_size": 2}


class FakeAnalyzer:
    def __init__(self):
        self.docs = []
        self.queue = SimpleNamespace(depth=0.0)

    def __call__(self, name, doc):
        self.docs.append((name, doc.get("run")))

    def flush(self, timeout=None):
        return True


@pytest.fixture
def service(tmp_path, monkeypatch):
    journal = AlertJournal(tmp_path / "journal.jsonl")
    journal.record_start()
    t0 = journal.first_start_
    journal.mark_run_completed("done")
    runs = [
        RunSummary("old", 1, "xanes_scan2", 2, t0 - 100, "success"),  # before the campaign
        RunSummary("done", 2, "xanes_scan2", 2, t0 + 1, "success"),  # journaled as finished
        RunSummary("missed", 3, "xanes_scan2", 2, t0 + 2, "success"),
        RunSummary("count", 4, "count", None, t0 + 3, "success"),  # not XANES
        RunSummary("running", 5, "xanes_scan2", 2, t0 + 4, None),  # no stop document yet
    ]
    stops = {"running": None}
    monkeypatch.setattr(streamer.catalog, "connect", lambda catalog, **kw: "client")
    monkeypatch.setattr(streamer.catalog_runs, "list_runs", lambda client: runs)
    monkeypatch.setattr(
        streamer.catalog_runs,
        "run_start",
        lambda client, uid: {"plan_name": "count"} if uid == "count" else XANES,
    )
    monkeypatch.setattr(
        streamer.catalog_runs,
        "lookup_run",
        lambda client, uid: SimpleNamespace(metadata={"stop": stops.get(uid)}),
    )

    def replay(client, uid):
        yield "start", {"uid": uid, "run": uid}
        yield "stop", {"run_start": uid, "run": uid}

    monkeypatch.setattr(streamer.replay_source, "replay_documents", replay)
    fake = SimpleNamespace(
        journal=journal,
        analyzer=FakeAnalyzer(),
        stop_requested=threading.Event(),
        caught_up=set(),
        deferred=set(),
        stops=stops,
    )
    yield fake
    journal.close()


def test_startup_replays_missed_runs_and_defers_running_ones(service):
    catchup = CatalogCatchUp(service, "catalog-dir")
    catchup.startup()
    assert service.caught_up == {"missed"} and service.deferred == {"running"}
    assert service.analyzer.docs == [("start", "missed"), ("stop", "missed")]
    assert "count" in service.journal.completed_runs_  # not XANES: never looked at again
    catchup.check_deferred()  # still running
    assert service.deferred == {"running"}
    service.stops["running"] = {"exit_status": "success"}
    catchup.check_deferred()
    assert service.deferred == set() and service.caught_up == {"missed", "running"}


def test_a_stop_request_interrupts_the_catch_up(service):
    service.stop_requested.set()
    CatalogCatchUp(service, "catalog-dir").startup()
    assert service.analyzer.docs == [] and service.caught_up == set()


def test_live_documents_of_a_caught_up_run_are_skipped(offline_service):
    service = offline_service()
    seen = []
    real = service.analyzer
    service.analyzer = lambda name, doc: seen.append((name, doc.get("uid")))
    try:
        service.caught_up.add("r1")
        service.deferred.add("r2")
        service.handle("start", {"uid": "r1"})
        service.handle("descriptor", {"uid": "d1", "run_start": "r1"})
        service.handle("event", {"uid": "e1", "descriptor": "d1"})
        service.handle("stop", {"uid": "s1", "run_start": "r1"})
        service.handle("start", {"uid": "r2"})  # deferred, but here live from its start: live
        assert seen == [("start", "r2")] and service.deferred == set()
    finally:
        service.analyzer = real  # the fixture shuts the service down with its real analyzer
