"""Kill ``txm-streamer serve`` (SIGKILL) mid-campaign, restart it: nothing lost, nothing twice.

Real processes on 127.0.0.1: the bluesky 0MQ proxy, the RunEngine script (a 3-field survey with
two planted anomalies, published through the proxy and archived into a catalog), the service
(twice), and an alert subscriber in the test process that lives across both service lifetimes.
The RunEngine pauses at file gates the test opens, so the kill lands in the middle of run 2 and
the restart happens before run 3; no fixed sleep anywhere.
"""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest

from streamer.alert_journal import AlertJournal
from tests.callbacks.test_serve_support import (
    Campaign,
    Collector,
    Processes,
    state_key,
    wait_for,
)


@pytest.fixture
def procs(tmp_path):
    processes = Processes(tmp_path)
    yield processes
    processes.close()


def test_kill_and_restart_loses_and_repeats_nothing(tmp_path, procs):
    campaign = Campaign(
        tmp_path,
        procs,
        n_fovs=3,
        anomalies=[{"kind": "reduced", "fov": 1}, {"kind": "white_line", "fov": 2}],
        gates=[
            {
                "run": 1,
                "event": 53,
                "name": "kill",
            },  # last energy of run 2: provisional decisions out
            {"run": 1, "event": "stop", "name": "restart"},  # run 2 archived, run 3 not begun
        ],
        catalog=True,
    )
    campaign.start_proxy()
    first = campaign.start_service()
    alerts = Collector(campaign.endpoint)
    try:
        alerts.wait_synced()
        runengine = campaign.start_runengine()
        campaign.wait_connected()
        campaign.open_gate("start")
        wait_for(lambda: campaign.gate_paused("kill"), "the RunEngine to pause in run 2")
        alerts.wait(lambda a: a["kind"] == "scan_summary" and a["scan_id"] == 1, "scan 1 done")
        alerts.wait(
            lambda a: a["scan_id"] == 2 and a["provisional"],
            "a provisional alert of scan 2",
            timeout=90,
        )
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
        before_kill = list(alerts.alerts)
        campaign.open_gate("kill")
        wait_for(lambda: campaign.gate_paused("restart"), "run 2 to end while the service is down")
        campaign.start_service("--wait-for-subscribers", "60", while_waiting=alerts.pump)
        campaign.wait_connected()
        campaign.open_gate("restart")
        alerts.wait(lambda a: a["kind"] == "scan_summary" and a["scan_id"] == 3, "scan 3 done")
        alerts.pump(0.5)
    finally:
        alerts.close()
    assert runengine.wait(60) == 0, procs.log("runengine")
    campaign.service.send_signal(signal.SIGTERM)
    assert campaign.service.wait(60) == 0, procs.log("serve2")

    received = alerts.alerts
    restored = [a for a in received if (a["extra"] or {}).get("restored_after_restart")]
    twice = [
        k for k, n in Counter(state_key(a) for a in received if a not in restored).items() if n > 1
    ]
    assert not twice, f"received twice: {twice}"
    for alert in restored:  # re-announced only to be resolved (see JournaledSink)
        assert any(
            a["fingerprint"] == alert["fingerprint"] and a["status"] == "resolved" for a in received
        )
    summaries = Counter(a["scan_id"] for a in received if a["kind"] == "scan_summary")
    assert summaries == {1: 1, 2: 1, 3: 1}
    for scan_id in (2, 3):
        assert any(
            a["kind"] == "anomalous_particle"
            and a["scan_id"] == scan_id
            and a["status"] == "firing"
            and a["severity"] == "critical"
            for a in received
        ), f"no confirmed anomaly for scan {scan_id}"
    assert all(a["mode"] == "live" for a in received)
    status = campaign.status()
    uids = json.loads((tmp_path / "uids.json").read_text())
    assert status["caught_up_runs"] == [uids[1]]
    scan2_before = [a for a in before_kill if a["scan_id"] == 2]
    assert status["alerts"]["suppressed"] >= len(scan2_before) > 0
    journal = AlertJournal(campaign.out / "journal" / "alerts-journal.jsonl")
    assert set(uids) <= journal.completed_runs_
    journal.close()
    assert "campaign model resumed" in procs.log("serve2") or "resuming the campaign" in procs.log(
        "serve2"
    )
