"""Alerts over ZeroMQ: the message schema, the publisher, the subscriber and the console.

- :mod:`.schema`      the versioned JSON alert, :func:`make_alert`, :func:`validate_alert`
- :mod:`.publisher`   :class:`AlertPublisher` (XPUB, heartbeats, snapshots, dedup, rate limits, log)
- :mod:`.subscriber`  :class:`AlertSubscriber` (snapshot catch-up, gaps, restarts, silence)
- :mod:`.snapshot`    the Clone-pattern snapshot request/reply
- :mod:`.heartbeat`   heartbeat messages and loss detection
- :mod:`.flow`        token buckets, rate limiter, bounded outbox, the update rule
- :mod:`.log`         the ``alerts.jsonl`` log
- :mod:`.console`     the ``txm-streamer alerts`` command
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
