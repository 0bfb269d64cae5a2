"""Kill ``txm-streamer serve`` (SIGKILL) mid-campaign, restart it: nothing lost, nothing twice.

Real processes on 127.0.0.1: the bluesky 0MQ proxy, the RunEngine script (a 3-field survey with
two planted anomalies, published through the proxy and archived into a catalog), the service
(twice), and an alert subscriber in the test process that lives across both service lifetimes.
The RunEngine pauses at file gates the test opens, so the kill lands in the middle of run 2 and
the restart happens before run 3; no fixed sleep anywhere. The alerts left firing at the kill are
adopted by the restarted service's publisher: never sent again, and their confirmations and
resolutions still go out.
"""

from __future__ import annotations

import json
import signal
from collections import Counter

from streamer.alert_journal import AlertJournal
from streamer.alert_journal import left_firing as left_firing_by
from streamer.alerts import read_alert_log
from tests.callbacks.serve_support import Campaign, Collector, state_key, wait_for


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
    # What was published: the service's log over both lifetimes, and the subscriber's alerts
    # with a snapshot's copy of an alert it had already received (same epoch and seq) counted once.
    published = list(read_alert_log(campaign.out / "alerts.jsonl"))
    on_the_wire = list({(a["epoch"], a["seq"]): a for a in received}.values())
    for alerts_seen in (published, on_the_wire):
        twice = [k for k, n in Counter(map(state_key, alerts_seen)).items() if n > 1]
        assert not twice, f"published twice: {twice}"
        assert not [a for a in alerts_seen if (a["extra"] or {}).get("restored_after_restart")]
    first_epoch = published[0]["epoch"]
    left_firing = left_firing_by(a for a in published if a["epoch"] == first_epoch)
    assert left_firing, "nothing was firing at the kill: the test does not test adoption"
    after_restart = [a for a in published if a["epoch"] != first_epoch]
    for fingerprint in left_firing:  # adopted: confirmed or resolved in the new epoch, not re-sent
        follow_up = [a for a in after_restart if a["fingerprint"] == fingerprint]
        assert all(a["revision"] > left_firing[fingerprint]["revision"] for a in follow_up)
    assert any(a["fingerprint"] in left_firing for a in after_restart), "no follow-up went out"
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
    assert status["alerts"]["adopted"] == len(left_firing) and status["alerts"]["restored"] == 0
    journal = AlertJournal(campaign.out / "journal" / "alerts-journal.jsonl")
    assert set(uids) <= journal.completed_runs_
    journal.close()
    assert "campaign model resumed" in procs.log("serve2") or "resuming the campaign" in procs.log(
        "serve2"
    )
