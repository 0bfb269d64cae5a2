"""Heartbeats: the publisher's sign of life on topic ``txm.heartbeat``, and their loss detector.

A heartbeat is a JSON object, schema ``txm-streamer.heartbeat/1``::

    {"schema", "publisher", "epoch", "seq": last alert seq sent, "time", "time_iso",
     "interval": seconds to the next one, "n_firing", "snapshot_port", "snapshot_endpoint",
     "closing": true in the last one sent by close(), "counts": {publisher counters}}

Heartbeats and alerts leave through one socket in order, so a heartbeat whose ``seq`` is above the
last alert a subscriber received reveals lost trailing alerts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .schema import HEARTBEAT_SCHEMA, iso_time


def make_heartbeat(
    *,
    publisher: str,
    epoch: str,
    seq: int,
    interval: float,
    n_firing: int,
    snapshot_port: int | None,
    snapshot_endpoint: str | None,
    closing: bool = False,
    counts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Build one heartbeat message (see the module docstring)."""
    now = time.time()
    return {
        "schema": HEARTBEAT_SCHEMA,
        "publisher": publisher,
        "epoch": epoch,
        "seq": int(seq),
        "time": now,
        "time_iso": iso_time(now),
        "interval": float(interval),
        "n_firing": int(n_firing),
        "snapshot_port": snapshot_port,
        "snapshot_endpoint": snapshot_endpoint,
        "closing": bool(closing),
        "counts": dict(counts or {}),
    }


def validate_heartbeat(beat: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if ``beat`` is not a heartbeat this code understands."""
    if beat.get("schema") != HEARTBEAT_SCHEMA:
        raise ValueError(f"not a {HEARTBEAT_SCHEMA} message: schema={beat.get('schema')!r}")
    for field, types in (("epoch", str), ("seq", int), ("publisher", str)):
        if not isinstance(beat.get(field), types) or isinstance(beat.get(field), bool):
            raise ValueError(f"heartbeat field {field!r} must be {types.__name__}")


class HeartbeatMonitor:
    """Notice when heartbeats stop, once, and when they come back.

    Parameters
    ----------
    timeout
        Seconds of silence after which heartbeats count as lost.
    clock
        Monotonic clock (injectable for tests).

    Examples
    --------
    >>> now = [0.0]
    >>> monitor = HeartbeatMonitor(3.0, clock=lambda: now[0])
    >>> now[0] = 3.5
    >>> monitor.check(), monitor.check()     # lost: reported once
    (True, False)
    >>> monitor.beat()                       # back
    True
    """

    def __init__(self, timeout: float, *, clock: Callable[[], float] = time.monotonic):
        if not timeout > 0:
            raise ValueError(f"heartbeat timeout must be > 0; got {timeout}")
        self.timeout = float(timeout)
        self._clock = clock
        self.last_beat = clock()
        self.lost = False

    def silence(self) -> float:
        """Seconds since the last heartbeat (or since the monitor started)."""
        return self._clock() - self.last_beat

    def beat(self) -> bool:
        """Record a heartbeat; return ``True`` if it ends a loss."""
        self.last_beat = self._clock()
        was_lost, self.lost = self.lost, False
        return was_lost

    def check(self) -> bool:
        """Return ``True`` exactly once when the silence first exceeds ``timeout``."""
        if not self.lost and self.silence() > self.timeout:
            self.lost = True
            return True
        return False

    def mark_lost(self) -> None:
        """Count heartbeats as lost now (the publisher said it is closing)."""
        self.lost = True
