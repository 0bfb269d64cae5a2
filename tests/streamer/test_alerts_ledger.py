"""The publisher's socket-free bookkeeping: numbering, dedup, events, overload, resolution."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from streamer.alerts import AlertPublisher, AlertSubscriber, make_alert
from streamer.alerts.flow import RateLimiter
from streamer.alerts.ledger import AlertLedger


def ledger(**options):
    return AlertLedger("pub", "epoch-1", limiter=RateLimiter(None), **options)


def cluster(i, severity="info"):
    return make_alert("new_cluster", subject=f"cluster:{i}", severity=severity)


def drained_seqs(book):
    return [seq for _topic, _payload, seq in book.drain()]


def test_overload_evicts_lower_severity_first_and_refuses_without_using_a_seq():
    book = ledger(max_queue=2)
    assert book.submit(cluster(1, "debug"))["seq"] == 1
    assert book.submit(cluster(2, "info"))["seq"] == 2
    assert book.submit(cluster(3, "warning"))["seq"] == 3  # evicts the debug one (seq 1)
    assert book.submit(cluster(4, "debug")) is None  # nothing lower to evict: refused
    assert book.stats()["dropped_overload"] == 2
    assert drained_seqs(book) == [2, 3]  # subscribers will report seq 1 as a gap
    assert book.submit(cluster(5, "debug"))["seq"] == 4  # the refused one used no seq


def test_events_are_not_firing_and_repeats_are_deduplicated():
    book = ledger()
    summary = make_alert("scan_summary", run_uid="r1", message="scan 7: 2 flagged of 9")
    assert book.submit(summary)["revision"] == 0
    assert book.submit(summary) is None
    assert book.firing() == [] and book.snapshot()["seq"] == 1
    assert book.resolve(summary["fingerprint"]) is None
    assert book.stats()["resolve_not_firing"] == 1


def test_partial_dicts_with_numpy_values_are_completed_by_the_publisher(tmp_path):
    log_path = tmp_path / "nested" / "dir" / "alerts.jsonl"
    with AlertPublisher("tcp://127.0.0.1:*", log_path=log_path) as pub:
        sent = pub(
            {
                "kind": "anomalous_particle",
                "particle": {"id": np.int64(3)},
                "score": np.float32(7.5),
                "run_uid": "r1",
                "seq": 999,
            }
        )
        assert sent["seq"] == 1 and sent["particle"]["id"] == 3 and sent["score"] == 7.5
        sent["particle"]["id"] = 4  # the caller's copy: the publisher's state is unaffected
        assert pub.firing[0]["particle"]["id"] == 3
    assert json.loads(log_path.read_text())["seq"] == 1
    with pytest.raises(RuntimeError, match="closed"):
        pub.publish(cluster(1))
    pub.close()  # idempotent


def test_late_subscriber_without_snapshot_socket_warns_and_continues():
    with AlertPublisher("tcp://127.0.0.1:*", snapshot_endpoint=False) as pub:
        pub.publish(cluster(1))
        for _ in range(4000):  # bounded poll: sent before the subscriber connects
            if pub.stats.get("sent") == 1:
                break
            time.sleep(0.005)
        with AlertSubscriber(pub.endpoint, heartbeat_timeout=5.0) as sub:
            for _ in range(400):  # bounded: until the subscriber has synchronised
                first = sub.recv(timeout=0.05)
                if sub.synced:
                    break
            assert sub.synced and first is None  # alert 1 was before it and no snapshot
            assert [e["event"] for e in sub.events] == ["snapshot_failed"]
            sent = pub.publish(cluster(2))
            assert sub.recv(timeout=20.0)["seq"] == sent["seq"]
