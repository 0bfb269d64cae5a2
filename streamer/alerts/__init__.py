"""Alerts over ZeroMQ: the message schema, the publisher, the subscriber and the console.

- :mod:`.schema`      the versioned JSON alert, :func:`make_alert`, :func:`validate_alert`
- :mod:`.publisher`   :class:`AlertPublisher` (XPUB, heartbeats, snapshots, dedup, rate limits, log)
- :mod:`.ledger`      the publisher's socket-free bookkeeping (seq, firing set, dedup, outbox)
- :mod:`.subscriber`  :class:`AlertSubscriber` (snapshot catch-up, gaps, restarts, silence)
- :mod:`.snapshot`    the Clone-pattern snapshot request/reply
- :mod:`.heartbeat`   heartbeat messages and loss detection
- :mod:`.flow`        token buckets, rate limiter, bounded outbox, the update rule
- :mod:`.log`         the ``alerts.jsonl`` log
- :mod:`.endpoints`   loopback-only binding, the snapshot endpoint beside the PUB one
- :mod:`.console`     the ``txm-streamer alerts`` command

Quick start::

    from streamer.alerts import AlertPublisher, AlertSubscriber, make_alert

    with AlertPublisher(log_path="out/alerts.jsonl") as publish:       # tcp://127.0.0.1:5577
        publish(make_alert("anomalous_particle", run_uid=uid, particle={"id": 7}, score=6.2))

    for alert in AlertSubscriber("tcp://127.0.0.1:5577", min_severity="warning"):
        print(alert["message"])
"""

from .endpoints import DEFAULT_ENDPOINT
from .log import AlertLog, read_alert_log
from .publisher import AlertPublisher
from .schema import (
    EVENT_KINDS,
    HEARTBEAT_TOPIC,
    KINDS,
    SCHEMA,
    SEVERITIES,
    AlertValidationError,
    alert_topic,
    compute_fingerprint,
    make_alert,
    validate_alert,
)
from .subscriber import AlertSubscriber

__all__ = [
    "DEFAULT_ENDPOINT",
    "EVENT_KINDS",
    "HEARTBEAT_TOPIC",
    "KINDS",
    "SCHEMA",
    "SEVERITIES",
    "AlertLog",
    "AlertPublisher",
    "AlertSubscriber",
    "AlertValidationError",
    "alert_topic",
    "compute_fingerprint",
    "make_alert",
    "read_alert_log",
    "validate_alert",
]
