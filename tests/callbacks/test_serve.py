"""``txm-streamer serve`` with real processes: proxy, service, RunEngine, alert subscriber."""

from __future__ import annotations

import signal

import pytest

from callbacks.serve import LAG_SUBJECT, LagMonitor, event_times, parse_source
from streamer.alerts import make_alert, read_alert_log
from streamer.cli import build_parser
from tests.callbacks.serve_support import Campaign, Collector, state_key, wait_for

N_ENERGIES = 53  # the RunEngine script's grid: every other energy of the seed study


def test_parse_source_accepts_zmq_and_refuses_the_rest():
    assert parse_source("zmq://127.0.0.1:5568") == "127.0.0.1:5568"
    for bad in ("127.0.0.1:5568", "kafka://broker:9092", "zmq://127.0.0.1", "zmq://:5568"):
        with pytest.raises(ValueError, match="zmq://HOST:PORT"):
            parse_source(bad)


def test_lag_is_receipt_minus_event_time():
    lag = LagMonitor()
    for t in event_times("event_page", {"time": [10.0, 11.0, 12.0]}):
        lag.observe(t, 13.0)
    assert event_times("start", {"time": 1.0}) == []
    assert lag.take() == {"n_events": 3, "median_s": 2.0, "max_s": 3.0}


def test_lag_above_the_threshold_fires_a_data_quality_alert_then_resolves(
    tmp_path, offline_service
):
    service = offline_service(lag_warning=5.0)
    service.lag.observe(100.0, 112.5)
    service.report_status()
    (alert,) = service.publisher.firing
    assert alert["kind"] == "data_quality" and alert["subject"] == LAG_SUBJECT
    assert alert["extra"]["lag"]["max_s"] == 12.5 and alert["mode"] == "live"
    service.lag.observe(200.0, 200.1)
    service.report_status()
    assert service.publisher.firing == []
    assert service.last_status["lag"]["max_s"] == 0.1
    assert service.shutdown() == 0
    assert (tmp_path / "serve-status.json").exists()
    assert (tmp_path / "campaign-checkpoint.npz").exists()


def test_a_restarted_service_adopts_what_was_left_firing_and_resolves_it(tmp_path, offline_service):
    first = offline_service()
    first.lag.observe(100.0, 112.5)
    first.report_status()  # the lag alert fires
    particle = make_alert(
        "anomalous_particle",
        run_uid="r1",
        particle={"id": 3},
        mode="live",
        severity="warning",
        provisional=True,
        energy_index=10,
        n_energies=53,
    )
    left_firing = {a["fingerprint"] for a in [first.sink(particle), *first.publisher.firing]}
    first.shutdown()  # on disk as after a kill: journal and log are written line by line

    second = offline_service()
    assert {a["fingerprint"] for a in second.publisher.firing} == left_firing
    assert second.sink.stats["adopted"] == 2 and second.publisher.stats["seq"] == 0
    assert second.sink(particle) is None  # the re-analysis re-states it: suppressed
    second.report_status()  # no events in the interval: the lag is back to normal
    resolved = second.sink({**particle, "status": "resolved", "severity": "info"})
    assert second.publisher.firing == [] and second.sink.stats["restored"] == 0
    second.shutdown()
    sent = list(read_alert_log(tmp_path / "alerts.jsonl"))
    assert len({state_key(a) for a in sent}) == len(sent) == 4  # two fired, two resolved: once
    assert resolved["revision"] == 1 and resolved["epoch"] == second.publisher.epoch


def test_help_documents_the_runengine_side():
    sub = build_parser()._subparsers._group_actions[0].choices["serve"]
    text = sub.format_help()
    assert "serializer=dumps" in text and "Archiver" in text and "--catalog" in text


def _anomaly(scan_id, *, confirmed=True):
    def match(alert):
        return (
            alert["kind"] == "anomalous_particle"
            and alert["scan_id"] == scan_id
            and alert["status"] == "firing"
            and alert["provisional"] is (not confirmed)
        )

    return match


def _summary(scan_id):
    return lambda a: a["kind"] == "scan_summary" and a["scan_id"] == scan_id


def test_live_service_publishes_the_planted_anomaly(tmp_path, procs):
    campaign = Campaign(
        tmp_path, procs, n_fovs=2, anomalies=[{"kind": "reduced", "fov": 1}], gates=[]
    )
    campaign.start_proxy()
    service = campaign.start_service()
    alerts = Collector(campaign.endpoint)
    try:
        alerts.wait_synced()
        runengine = campaign.start_runengine()
        campaign.wait_connected()
        campaign.open_gate("start")
        anomaly = alerts.wait(_anomaly(2), "the confirmed anomaly of scan 2")
        alerts.wait(_summary(2), "the summary of scan 2")
    finally:
        alerts.close()
    assert anomaly["mode"] == "live" and anomaly["severity"] == "critical"
    assert [a["scan_id"] for a in alerts.alerts if a["kind"] == "scan_summary"] == [1, 2]
    assert len({state_key(a) for a in alerts.alerts}) == len(alerts.alerts)
    assert runengine.wait(60) == 0, procs.log("runengine")
    wait_for(lambda: campaign.status().get("analyzer", {}).get("processed"), "status counters")
    service.send_signal(signal.SIGTERM)
    assert service.wait(60) == 0, procs.log("serve1")
    status = campaign.status()
    assert status["state"] == "stopped"
    assert status["analyzer"]["dropped_events"] == 0
    assert (campaign.out / "campaign-checkpoint.npz").exists()
    assert "lag over the last" in procs.log("serve1")


def test_service_joining_mid_run_analyses_the_next_run_fully(tmp_path, procs):
    campaign = Campaign(
        tmp_path,
        procs,
        n_fovs=2,
        anomalies=[{"kind": "reduced", "fov": 1}],
        gates=[{"run": 0, "event": 5, "name": "midrun"}],
    )
    campaign.open_gate("start")
    campaign.start_proxy()
    runengine = campaign.start_runengine()
    wait_for(lambda: campaign.gate_paused("midrun"), "the RunEngine to pause in run 1")
    service = campaign.start_service()
    alerts = Collector(campaign.endpoint)
    try:
        alerts.wait_synced()
        campaign.wait_connected()
        campaign.open_gate("midrun")
        summary = alerts.wait(_summary(2), "the summary of scan 2")
        alerts.wait(_anomaly(2), "the confirmed anomaly of scan 2", timeout=10)
    finally:
        alerts.close()
    assert summary["mode"] == "live"
    assert summary["n_energies"] == N_ENERGIES and f"{N_ENERGIES} energies" in summary["message"]
    assert not [a for a in alerts.alerts if a["scan_id"] == 1], "the joined run was analysed"
    assert runengine.wait(60) == 0, procs.log("runengine")
    service.send_signal(signal.SIGTERM)
    assert service.wait(60) == 0
    log = procs.log("serve1")
    assert "whose start document was never received" in log
    assert campaign.status()["analyzer"]["orphan_documents"] > 0
    assert campaign.status()["analyzer"]["ignored_runs"] > 0  # the RunEngine script's probes
