"""AlertPublisher.adopt: alerts left firing by an earlier lifetime are held, never re-sent."""

from __future__ import annotations

import pytest

from streamer.alerts import (
    AlertPublisher,
    AlertSubscriber,
    AlertValidationError,
    make_alert,
    read_alert_log,
)
from tests.streamer.alert_support import rebind_publisher, receive, wait_until

ANY_PORT = "tcp://127.0.0.1:*"


def particle(pid, **fields):
    base = {"run_uid": "r1", "scan_id": 2, "particle": {"id": pid}, "score": 5.0,
            "threshold": 3.0, "energy_index": 10, "n_energies": 53}  # fmt: skip
    return make_alert("anomalous_particle", **{**base, **fields})


@pytest.fixture
def earlier_lifetime(tmp_path):
    """What a first publisher sent: particles 1 and 2 firing, 3 fired then resolved."""
    log = tmp_path / "alerts.jsonl"
    with AlertPublisher(ANY_PORT, log_path=log) as pub:
        sent = [pub.publish(particle(i, severity="warning", provisional=True)) for i in (1, 2, 3)]
        pub.resolve(sent[2]["fingerprint"])
        firing = pub.firing
    assert len(list(read_alert_log(log))) == 4
    return log, firing


def test_adopted_alerts_are_held_and_sent_nowhere(tmp_path, earlier_lifetime):
    log, firing = earlier_lifetime
    with AlertPublisher(ANY_PORT, log_path=log, heartbeat_interval=0.2) as pub:
        adopted = pub.adopt(firing)
        assert adopted == firing and pub.firing == firing
        assert pub.stats["adopted"] == 2 and pub.stats["seq"] == 0
        assert pub.publish(particle(1, severity="warning", provisional=True)) is None  # dedup
        confirmed = pub.publish(particle(1, severity="critical", provisional=False))
        wait_until(lambda: pub.stats.get("sent") == 1, "the update to be sent")
        # (a late subscriber asks for a snapshot: it learns adopted and new alerts alike)
        with AlertSubscriber(pub.endpoint, heartbeat_timeout=5.0) as late:
            snapshot = receive(late, 2)  # a late subscriber learns the adopted alert
            old = firing[1]  # adopted, unchanged: as the earlier lifetime sent it
            assert [(a["fingerprint"], a["epoch"], a["seq"]) for a in snapshot] == [
                (confirmed["fingerprint"], pub.epoch, 1),
                (old["fingerprint"], old["epoch"], old["seq"]),
            ]
            resolved = pub.resolve(firing[1]["fingerprint"], message="normal after all")
            assert [a["seq"] for a in receive(late, 1)] == [2]
            assert late.counts["gaps"] == 0 and set(late.firing_) == {confirmed["fingerprint"]}
    assert confirmed["revision"] == 1 and confirmed["epoch"] == pub.epoch
    assert resolved["status"] == "resolved" and resolved["revision"] == 1
    assert pub.stats.get("published", 0) == 0 and pub.stats["updates"] == 1
    lines = list(read_alert_log(log))
    assert len(lines) == 6  # the earlier lifetime's four, then the update and the resolution
    assert [a["seq"] for a in lines[4:]] == [1, 2]


def test_adopt_skips_what_is_held_and_refuses_what_is_not_a_firing_alert(earlier_lifetime):
    _, firing = earlier_lifetime
    with AlertPublisher(ANY_PORT) as pub:
        newer = pub.publish(particle(1, severity="critical", provisional=False))
        assert [a["fingerprint"] for a in pub.adopt(firing)] == [firing[1]["fingerprint"]]
        held = {a["fingerprint"]: a for a in pub.firing}
        assert held[newer["fingerprint"]]["seq"] == 1  # the newer state stays
        assert pub.adopt(firing) == []  # idempotent
        with pytest.raises(ValueError, match="only firing"):
            pub.adopt([{**firing[0], "status": "resolved"}])
        with pytest.raises(AlertValidationError):
            pub.adopt([particle(9)])  # never published: no seq, epoch...


def test_an_adopted_rate_limit_summary_is_resolved_at_once():
    with AlertPublisher(ANY_PORT) as old:
        summary = old.publish(make_alert("data_quality", subject="rate_limit:new_cluster",
                                         severity="warning", message="rate limit"))  # fmt: skip
    with AlertPublisher(ANY_PORT) as pub:
        (adopted,) = pub.adopt([summary])
        assert pub.firing == [] and pub.stats["resolved"] == 1
    assert adopted["fingerprint"] == summary["fingerprint"]


def test_a_subscriber_joining_before_any_new_alert_learns_the_adopted_ones(earlier_lifetime):
    _, firing = earlier_lifetime
    with AlertPublisher(ANY_PORT, heartbeat_interval=0.2) as pub:
        pub.adopt(firing)
        assert pub.stats["seq"] == 0  # nothing sent in this epoch
        with AlertSubscriber(pub.endpoint, heartbeat_timeout=5.0) as late:
            snapshot = receive(late, 2)
            assert {a["fingerprint"] for a in snapshot} == {a["fingerprint"] for a in firing}
            assert set(late.firing_) == {a["fingerprint"] for a in firing}
            assert late.counts["gaps"] == 0


def test_a_subscriber_living_across_the_restart_is_not_shown_adopted_alerts_twice():
    first = AlertPublisher(ANY_PORT, heartbeat_interval=0.1)
    endpoint = first.endpoint
    sub = AlertSubscriber(endpoint, heartbeat_timeout=5.0)
    try:
        sent = [first.publish(particle(i)) for i in (1, 2)]
        assert [a["seq"] for a in receive(sub, 2)] == [1, 2]
        firing = first.firing
        first.close()
        second = rebind_publisher(endpoint, heartbeat_interval=0.1)
        with second:
            second.adopt(firing)

            def resynchronised():
                assert sub.recv(timeout=0.01) is None  # the adopted copies are not shown
                return sub.epoch_ == second.epoch

            wait_until(resynchronised, "the subscriber to follow the new epoch")
            assert sub.counts["restarts"] == 1 and sub.counts["carried_over"] == 2
            resolved = second.resolve(sent[0]["fingerprint"])
            [shown] = receive(sub, 1)  # the resolution; the adopted copies are not shown again
            assert shown["status"] == "resolved" and shown["epoch"] == second.epoch
            assert resolved["fingerprint"] == shown["fingerprint"]
            assert sub.counts["carried_over"] == 2 and sub.counts["gaps"] == 0
            assert list(sub.firing_) == [sent[1]["fingerprint"]]
    finally:
        sub.close()
        first.close()
