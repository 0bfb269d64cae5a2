"""The alert journal: restarts publish no alert state twice and lose none."""

from __future__ import annotations

import json

import pytest

from streamer.alert_journal import AlertJournal, JournaledSink, alert_state
from streamer.alerts import AlertPublisher, make_alert, read_alert_log


class FakePublisher:
    """Numbers what it is given like a publisher; refuses resolutions of what it never fired."""

    def __init__(self, epoch: str = "e1") -> None:
        self.epoch, self.sent, self.firing = epoch, [], set()

    def publish(self, alert):
        if alert["status"] == "resolved" and alert["fingerprint"] not in self.firing:
            return None
        self.firing.add(alert["fingerprint"])
        out = {**alert, "seq": len(self.sent) + 1, "epoch": self.epoch, "revision": 0}
        self.sent.append(out)
        return out


def _particle(pid, *, severity="warning", provisional=True, status="firing", run="r1"):
    alert = make_alert(
        "anomalous_particle",
        run_uid=run,
        particle={"id": pid},
        severity=severity,
        provisional=provisional,
        energy_index=10,
        n_energies=50,
    )
    alert["status"] = status
    return alert


def test_a_restart_suppresses_published_states_and_passes_new_ones(tmp_path):
    path = tmp_path / "journal.jsonl"
    first = FakePublisher("e1")
    sink = JournaledSink(first, path)
    assert sink(_particle(1)) is not None
    assert sink(make_alert("scan_summary", run_uid="r1", message="done")) is not None
    sink.close()

    second = FakePublisher("e2")
    sink = JournaledSink(second, path)
    assert "r1" in sink.journal.completed_runs_
    assert sink(_particle(1)) is None  # same state: suppressed
    assert sink(_particle(1, severity="critical", provisional=False))["seq"] == 1  # confirmation
    assert sink(_particle(2))["seq"] == 2  # a new fingerprint
    assert sink.stats == {"received": 3, "published": 2, "suppressed": 1, "restored": 0}
    sink.close()
    third = JournaledSink(FakePublisher("e3"), path)
    assert third(_particle(1, severity="critical", provisional=False)) is None
    third.close()


def test_a_resolution_after_a_suppressed_firing_state_is_not_lost(tmp_path):
    path = tmp_path / "journal.jsonl"
    sink = JournaledSink(FakePublisher(), path)
    sink(_particle(5))
    sink.close()
    publisher = FakePublisher("e2")
    sink = JournaledSink(publisher, path)
    assert sink(_particle(5)) is None
    resolved = _particle(5, severity="info", provisional=False, status="resolved")
    assert sink(resolved)["status"] == "resolved"
    restored, resolution = publisher.sent
    assert restored["extra"]["restored_after_restart"] is True and restored["status"] == "firing"
    assert resolution["status"] == "resolved"
    assert sink.stats["restored"] == 1
    sink.close()


def test_the_delivery_log_corrects_the_journal_both_ways(tmp_path):
    path, log = tmp_path / "journal.jsonl", tmp_path / "alerts.jsonl"
    journal = AlertJournal(path)
    accepted_not_sent = {**_particle(1), "epoch": "e1", "seq": 2}
    journal.record_alert({**_particle(3), "epoch": "e1", "seq": 1})
    journal.record_alert(accepted_not_sent)
    journal.close()
    sent_not_journaled = {**_particle(4), "epoch": "e1", "seq": 3}
    lines = [{**_particle(3), "epoch": "e1", "seq": 1}, sent_not_journaled]
    log.write_text("".join(json.dumps(a) + "\n" for a in lines))
    journal = AlertJournal(path, delivery_log=log)
    assert alert_state(accepted_not_sent) not in journal.published_  # will be published again
    assert alert_state(sent_not_journaled) in journal.published_  # will not
    assert alert_state(_particle(3)) in journal.published_
    journal.close()


def test_a_truncated_last_line_is_skipped_and_appending_goes_on(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = AlertJournal(path, fsync="batch")
    journal.record_alert(_particle(1))
    journal.mark_run_completed("r1")
    journal.mark_run_completed("r1")  # idempotent
    journal.close()
    with open(path, "ab") as file:
        file.write(b'{"type": "alert", "fingerp')  # the process died mid-write
    journal = AlertJournal(path, fsync="never")
    assert journal.completed_runs_ == {"r1"} and alert_state(_particle(1)) in journal.published_
    journal.close()
    with pytest.raises(ValueError, match="fsync"):
        AlertJournal(path, fsync="sometimes")


def test_journal_start_records_date_the_campaign(tmp_path):
    path = tmp_path / "j" / "journal.jsonl"
    journal = AlertJournal(path)
    assert journal.first_start_ is None
    journal.record_start(source="zmq://127.0.0.1:1")
    first = journal.first_start_
    journal.close()
    journal = AlertJournal(path)
    journal.record_start()
    assert journal.first_start_ == first
    journal.close()


def test_with_a_real_publisher(tmp_path):
    log = tmp_path / "alerts.jsonl"
    with AlertPublisher("tcp://127.0.0.1:*", log_path=log, heartbeat_interval=0.2) as publisher:
        sink = JournaledSink(publisher, tmp_path / "journal.jsonl", delivery_log=log)
        assert sink(_particle(1))["seq"] == 1
        assert sink(_particle(1)) is None  # the publisher's own deduplication
        sink.close()
    with AlertPublisher("tcp://127.0.0.1:*", log_path=log, heartbeat_interval=0.2) as publisher:
        sink = JournaledSink(publisher, tmp_path / "journal.jsonl", delivery_log=log)
        assert sink(_particle(1)) is None and sink.stats["suppressed"] == 1
        sink.close()
    assert len(list(read_alert_log(log))) == 1
