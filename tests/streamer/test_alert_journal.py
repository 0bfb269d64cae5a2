"""The alert journal: restarts publish no alert state twice and lose none."""

from __future__ import annotations

import json

import pytest

from streamer.alert_journal import AlertJournal, JournaledSink, alert_state
from streamer.alerts import AlertPublisher, make_alert, read_alert_log


class FakePublisher:
    """Numbers what it is given like a publisher; refuses resolutions of what it never fired.

    Without ``adopt`` (an older publisher): the sink falls back to re-publishing firing states.
    """

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
    assert sink.stats == {
        "received": 3,
        "published": 2,
        "suppressed": 1,
        "adopted": 0,
        "restored": 0,
    }
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


class AdoptingPublisher(FakePublisher):
    """A publisher that can hold alerts of an earlier lifetime as firing without sending them."""

    def adopt(self, alerts):
        alerts = [a for a in alerts if a["fingerprint"] not in self.firing]
        self.firing.update(a["fingerprint"] for a in alerts)
        return alerts


class Refusing(FakePublisher):
    def adopt(self, alerts):
        raise ValueError("alert field 'schema' must be 'txm-streamer.alert/2'")


def test_alerts_left_firing_come_from_the_log_and_the_journal(tmp_path):
    path, log = tmp_path / "journal.jsonl", tmp_path / "alerts.jsonl"
    journal = AlertJournal(path)
    journal.record_alert({**_particle(1), "epoch": "e0", "seq": 1, "time": 1.0})  # no log then
    journal.record_alert({**_particle(2), "epoch": "e0", "seq": 2, "time": 2.0})
    journal.record_alert({**_particle(5), "epoch": "e1", "seq": 1, "time": 5.0})  # never sent
    journal.close()
    resolved_2 = {**_particle(2, status="resolved"), "epoch": "e1", "seq": 2, "time": 6.0}
    summary = {**make_alert("scan_summary", run_uid="r1", message="done"), "epoch": "e1"}
    lines = [{**_particle(3), "epoch": "e1", "seq": 1, "time": 4.0}, resolved_2,
             {**summary, "seq": 3, "time": 7.0}]  # fmt: skip
    log.write_text("".join(json.dumps(a) + "\n" for a in lines))
    journal = AlertJournal(path, delivery_log=log)
    inherited = journal.inherited_firing_
    assert set(inherited) == {_particle(1)["fingerprint"], _particle(3)["fingerprint"]}
    assert inherited[_particle(1)["fingerprint"]]["epoch"] == "e0"  # the full alert, as sent
    journal.close()


def test_adopted_alerts_resolve_without_being_published_again(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    sink = JournaledSink(AdoptingPublisher("e1"), path)
    sink(_particle(5))
    sink(_particle(6))
    sink.close()
    publisher = AdoptingPublisher("e2")
    sink = JournaledSink(publisher, path)
    adopted = sink.adopt_inherited()
    assert {a["particle"]["id"] for a in adopted} == {5, 6} and publisher.sent == []
    assert sink(_particle(5)) is None  # re-analysis: suppressed
    resolved = sink(_particle(5, severity="info", provisional=False, status="resolved"))
    confirmed = sink(_particle(6, severity="critical", provisional=False))
    assert publisher.sent == [resolved, confirmed]  # nothing restored, nothing twice
    assert sink.stats["adopted"] == 2 and sink.stats["restored"] == 0
    sink.close()
    sink = JournaledSink(Refusing("e3"), path)
    assert sink.adopt_inherited() == [] and "cannot adopt" in caplog.text  # logged, not fatal
    sink.close()
    third = JournaledSink(AdoptingPublisher("e3"), path)
    assert [a["particle"]["id"] for a in third.journal.inherited_firing_.values()] == [6]
    third.close()


def test_a_real_publisher_adopts_through_the_sink(tmp_path):
    log, path = tmp_path / "alerts.jsonl", tmp_path / "journal.jsonl"
    with AlertPublisher("tcp://127.0.0.1:*", log_path=log) as publisher:
        sink = JournaledSink(publisher, path, delivery_log=log)
        first = sink(_particle(1))
        sink.close()
    with AlertPublisher("tcp://127.0.0.1:*", log_path=log) as publisher:
        sink = JournaledSink(publisher, path, delivery_log=log)
        assert [a["seq"] for a in sink.adopt_inherited()] == [first["seq"]]
        assert publisher.firing == [first]
        assert sink(_particle(1)) is None
        resolved = sink(_particle(1, severity="info", provisional=False, status="resolved"))
        sink.close()
    assert resolved["revision"] == 1 and resolved["epoch"] == publisher.epoch
    states = [alert_state(a) for a in read_alert_log(log)]
    assert len(states) == len(set(states)) == 2
