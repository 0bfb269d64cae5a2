"""Alerts over real ZeroMQ sockets on 127.0.0.1 (free ports only; no sleeps, no timing asserts)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import zmq

from streamer.alerts import (
    HEARTBEAT_TOPIC,
    AlertPublisher,
    AlertSubscriber,
    make_alert,
    read_alert_log,
    validate_alert,
)
from streamer.alerts.heartbeat import make_heartbeat
from tests.streamer.alert_support import BOUND, rebind_publisher, receive, wait_until

ANY_PORT = "tcp://127.0.0.1:*"


def particle(pid, *, run="run-1", score=5.0, **fields):
    base = {"run_uid": run, "scan_id": 3, "particle": {"id": pid}, "score": score,
            "threshold": 3.0, "energy_index": 50, "n_energies": 106}  # fmt: skip
    return make_alert("anomalous_particle", **{**base, **fields})


@pytest.fixture
def publisher(tmp_path):
    with AlertPublisher(
        ANY_PORT, heartbeat_interval=0.2, log_path=tmp_path / "alerts.jsonl"
    ) as pub:
        yield pub


def sent_all(pub):
    return lambda: pub.stats.get("sent", 0) == pub.stats["seq"]


def test_late_subscriber_gets_firing_alerts_then_every_new_one(publisher):
    first = [publisher.publish(particle(i)) for i in range(4)]
    publisher.publish(particle(1, score=9.0))  # update: revision 1
    publisher.resolve(first[2]["fingerprint"], message="normal after all energies")
    publisher.publish(make_alert("scan_summary", run_uid="run-1", message="scan 3: 4 flagged"))
    wait_until(sent_all(publisher), what="alerts sent before the subscriber starts")

    with AlertSubscriber(publisher.endpoint, heartbeat_timeout=5.0) as sub:
        snapshot = receive(sub, 3)
        assert [a["particle"]["id"] for a in snapshot] == [0, 3, 1]  # by seq: 1 was updated last
        assert [a["revision"] for a in snapshot] == [0, 0, 1] and snapshot[2]["score"] == 9.0
        new = [publisher.publish(particle(i)) for i in range(10, 13)]
        assert [a["seq"] for a in receive(sub, 3)] == [a["seq"] for a in new]
        assert sub.counts["gaps"] == 0 and sub.counts["snapshots"] == 1
        assert set(sub.firing_) == {a["fingerprint"] for a in publisher.firing}


def test_subscriber_joining_during_a_burst_misses_nothing():
    # 2 x 1143 messages fit in the socket buffers (HWMs 10000 + 1000), so nothing may be missed.
    options = {"max_rate_per_s": None, "update_score_tolerance": 0.0, "heartbeat_interval": 0.2}
    with AlertPublisher(ANY_PORT, **options) as pub:
        started, finished = threading.Event(), []

        def produce(offset):
            for i in range(1000):
                sent = pub.publish(particle(offset + i % 50, score=5.0 + i))  # new and updates
                assert sent is not None
                if i % 7 == 0:
                    assert pub.resolve(sent["fingerprint"]) is not None
                if i == 100:
                    started.set()
            finished.append(offset)

        producers = [threading.Thread(target=produce, args=(k * 1000,)) for k in range(2)]
        for thread in producers:
            thread.start()
        assert started.wait(BOUND)
        with AlertSubscriber(pub.endpoint, heartbeat_timeout=5.0) as sub:

            def caught_up():
                while sub.recv(timeout=0.01) is not None:  # syncs while the producers run
                    pass
                return len(finished) == 2 and sub.last_seq_ == pub.stats["seq"]

            wait_until(caught_up, what="subscriber to reach the last seq")
            # (no snapshot is needed if the sender had sent nothing before the subscription)
            assert sub.counts["gaps"] == 0 and sub.counts["invalid"] == 0
            mirror = {fp: a["seq"] for fp, a in sub.firing_.items()}
            assert mirror == {a["fingerprint"]: a["seq"] for a in pub.firing}
        for thread in producers:
            thread.join(BOUND)


def test_subscriber_detects_publisher_restart_and_resynchronises(tmp_path):
    first = AlertPublisher(ANY_PORT, heartbeat_interval=0.1)
    endpoint = first.endpoint
    sub = AlertSubscriber(endpoint, heartbeat_timeout=5.0)
    try:
        first.publish(particle(1))
        assert receive(sub, 1)[0]["epoch"] == first.epoch
        old_epoch = first.epoch
        first.close()
        second = rebind_publisher(endpoint, heartbeat_interval=0.1)
        with second:
            second.publish(particle(2))
            [alert] = receive(sub, 1)
            assert alert["epoch"] == second.epoch != old_epoch
            assert alert["seq"] == 1 and alert["particle"]["id"] == 2
            events = [e["event"] for e in sub.events]
            assert "publisher_closed" in events and "restart" in events
            restart = next(e for e in sub.events if e["event"] == "restart")
            assert (restart["old_epoch"], restart["new_epoch"]) == (old_epoch, second.epoch)
            assert sub.epoch_ == second.epoch and sub.counts["gaps"] == 0
            assert list(sub.firing_) == [alert["fingerprint"]]
    finally:
        sub.close()
        first.close()


@pytest.fixture
def unlimited(tmp_path):
    with AlertPublisher(ANY_PORT, max_rate_per_s=None, log_path=tmp_path / "alerts.jsonl") as pub:
        yield pub


def test_slow_or_vanished_subscribers_never_block_the_publisher(unlimited):
    publisher = unlimited
    context = zmq.Context.instance()
    stuck = context.socket(zmq.SUB)  # connected, subscribed, never reads
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.setsockopt(zmq.RCVBUF, 1024)
    stuck.setsockopt(zmq.SUBSCRIBE, b"")
    stuck.connect(publisher.endpoint)
    gone = AlertSubscriber(publisher.endpoint)
    gone.close()  # vanished
    assert publisher.wait_for_subscribers(BOUND)
    payload = {"blob": "x" * 20_000}
    results = []

    def flood():
        for i in range(1500):
            results.append(publisher.publish(particle(i, extra=payload)))

    flooder = threading.Thread(target=flood)
    flooder.start()
    flooder.join(BOUND)
    assert not flooder.is_alive(), "publish() blocked"
    assert len(results) == 1500 and all(r is not None for r in results)
    wait_until(sent_all(publisher), what="the sending thread to drain its outbox")
    assert publisher.stats["queued"] == 0
    assert publisher.publish(particle(99_999)) is not None
    stuck.close(linger=0)


def test_dedup_updates_and_resolution_on_the_wire(publisher):
    with AlertSubscriber(publisher.endpoint) as sub:
        assert publisher.wait_for_subscribers(BOUND)  # resolved alerts are in no snapshot
        sent = publisher.publish(particle(5, score=5.0))
        assert publisher.publish(particle(5, score=5.2)) is None  # same condition, same content
        update = publisher.publish(particle(5, score=8.0))
        confirmed = publisher.publish(particle(5, score=8.1, energy_index=105))
        assert publisher.stats["deduplicated"] == 1
        assert update["fingerprint"] == confirmed["fingerprint"] == sent["fingerprint"]
        assert (update["revision"], confirmed["revision"], confirmed["provisional"]) == (
            1,
            2,
            False,
        )
        resolved = publisher.resolve(sent["fingerprint"], message="normal after all energies")
        assert publisher.resolve(sent["fingerprint"]) is None  # no longer firing
        assert publisher.firing == []
        got = receive(sub, 4)
        assert [a["seq"] for a in got] == [
            sent["seq"],
            update["seq"],
            confirmed["seq"],
            resolved["seq"],
        ]
        assert got[-1]["status"] == "resolved" and got[-1]["revision"] == 3
        assert got[-1]["message"] == "normal after all energies"
        assert sub.firing_ == {}
        again = publisher.publish({**particle(5), "status": "firing"})
        assert again["revision"] == 0  # a new episode of the same condition
        by_dict = publisher.publish({**particle(5), "status": "resolved"})
        assert by_dict["status"] == "resolved" and publisher.firing == []


def test_every_alert_and_resolution_goes_to_the_jsonl_log(publisher):
    a = publisher.publish(particle(1))
    publisher.publish(particle(2))
    publisher.publish(make_alert("new_cluster", subject="cluster:4", message="cluster 4 emerged"))
    publisher.resolve(a["fingerprint"])
    publisher.close()
    logged = list(read_alert_log(publisher.log_path))
    assert [x["seq"] for x in logged] == [1, 2, 3, 4]
    assert [x["status"] for x in logged] == ["firing"] * 3 + ["resolved"]
    for alert in logged:
        validate_alert(alert)


def test_topics_wire_format_and_first_message_after_waiting_for_subscribers():
    with socket.socket() as probe:  # a free port, so the SUB can connect before the bind
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"txm.alert.replay.")
    sub.connect(f"tcp://127.0.0.1:{port}")
    try:
        options = {
            "wait_for_subscribers": BOUND,
            "snapshot_endpoint": ANY_PORT,
        }  # port+1 may be taken
        with AlertPublisher(f"tcp://127.0.0.1:{port}", **options) as pub:
            pub.publish(particle(1, mode="replay"))  # the very first message
            pub.publish(particle(2))  # live: not subscribed to
            pub.publish(particle(3, mode="replay"))
            assert sub.poll(int(BOUND * 1000))
            topic, body = sub.recv_multipart()
            assert topic == b"txm.alert.replay.anomalous_particle"
            assert json.loads(body)["seq"] == 1
            assert sub.poll(int(BOUND * 1000))
            assert json.loads(sub.recv_multipart()[1])["seq"] == 3
    finally:
        sub.close(linger=0)


def test_rate_limit_counts_and_summarises_the_excess():
    limits = {"new_cluster": 0.001}
    with AlertPublisher(ANY_PORT, max_rate_per_s=limits, burst=2, heartbeat_interval=0.2) as pub:
        outcomes = [
            pub.publish(make_alert("new_cluster", subject=f"cluster:{i}", message=f"cluster {i}"))
            for i in range(5)
        ]
        assert [o is not None for o in outcomes] == [True, True, False, False, False]
        assert pub.stats["rate_limited"] == 3
        assert pub.stats["rate_limited_by_kind"]["new_cluster"] == 3

        def summary():
            return [a for a in pub.firing if a["subject"] == "rate_limit:new_cluster"]

        wait_until(lambda: summary(), what="the rate-limit summary alert")
        [alert] = summary()
        # the first summary goes out at once, covering what was suppressed until then
        n = alert["attributes"]["suppressed"]
        assert alert["kind"] == "data_quality" and 1 <= n <= 3
        assert alert["attributes"]["suppressed_total"] == n
        assert alert["extra"]["examples"] == [f"cluster {i}" for i in range(2, 2 + n)]


def test_subscriber_reports_gaps_silence_and_recovery():
    context = zmq.Context.instance()
    xpub = context.socket(zmq.XPUB)
    xpub.bind(ANY_PORT)
    endpoint = xpub.getsockopt(zmq.LAST_ENDPOINT).decode()

    def beat(seq):
        message = make_heartbeat(
            publisher="fake",
            epoch="e1",
            seq=seq,
            interval=0.1,
            n_firing=0,
            snapshot_port=None,
            snapshot_endpoint=None,
        )
        xpub.send_multipart([HEARTBEAT_TOPIC.encode(), json.dumps(message).encode()])

    def alert(seq):
        message = {
            **particle(seq),
            "seq": seq,
            "epoch": "e1",
            "publisher": "fake",
            "time": time.time(),
            "time_iso": "now",
            "revision": 0,
        }
        xpub.send_multipart([b"txm.alert.live.anomalous_particle", json.dumps(message).encode()])

    sub = AlertSubscriber(endpoint, heartbeat_timeout=0.3, snapshot=False)
    try:
        assert xpub.poll(int(BOUND * 1000))
        wait_until(lambda: xpub.recv() == b"\x01" + HEARTBEAT_TOPIC.encode(), what="subscriptions")
        beat(0)
        for seq in (1, 2, 5):
            alert(seq)
        assert [a["seq"] for a in receive(sub, 3)] == [1, 2, 5]
        beat(7)  # trailing alerts 6 and 7 never arrived

        def seen(name):
            return lambda: (
                sub.recv(timeout=0.02) is None and name in [e["event"] for e in sub.events]
            )

        wait_until(seen("heartbeat_lost"), what="heartbeat loss")
        gaps = [(e["first"], e["last"]) for e in sub.events if e["event"] == "gap"]
        assert gaps == [(3, 4), (6, 7)] and sub.counts["missed"] == 4
        beat(7)
        wait_until(seen("heartbeat_back"), what="heartbeats back")
        assert [e["event"] for e in sub.events].count("heartbeat_lost") == 1
        xpub.send_multipart([b"txm.alert.live.anomalous_particle", b"not json"])
        wait_until(seen("invalid"), what="the invalid message to be reported")
    finally:
        sub.close()
        xpub.close(linger=0)
