"""The publisher's bookkeeping, free of sockets: numbering, firing set, dedup, rate limits, outbox.

:class:`AlertLedger` decides what is sent and in which order; the publisher's socket thread only
drains its outbox. Every method takes the ledger's lock, so any thread may call it.

Rules (also summarised in :mod:`streamer.alerts.publisher`):

- ``seq`` is assigned when an alert enters the outbox, so the outbox (and the wire) is in ``seq``
  order; a refused alert gets no ``seq``, an evicted one leaves a gap subscribers report.
- A firing alert whose fingerprint is already firing is an *update* (``revision`` + 1) only if
  :func:`~streamer.alerts.flow.is_material_update`; otherwise it is counted ``deduplicated``.
- ``scan_summary`` alerts (:data:`~streamer.alerts.schema.EVENT_KINDS`) are never held as firing;
  they are deduplicated against the last :data:`RECENT_EVENTS` events.
- Resolutions are never rate limited; everything else passes the per-kind token buckets, whose
  excess is summarised by a ``data_quality`` alert (``subject="rate_limit:<kind>"``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from .flow import Outbox, RateLimiter, is_material_update
from .schema import (
    EVENT_KINDS,
    MAX_MESSAGE_CHARS,
    alert_topic,
    dumps,
    iso_time,
    loads,
    make_alert,
    severity_rank,
)

log = logging.getLogger(__name__)

RECENT_EVENTS = 1024
Queued = tuple[bytes, bytes, int]
"""An outbox entry: ``(topic, json payload, seq)``."""


class AlertLedger:
    """What a publisher has sent, what is firing, and what waits to be sent.

    Parameters
    ----------
    publisher_id, epoch
        Stamped into every alert.
    max_queue
        Outbox capacity (see :class:`~streamer.alerts.flow.Outbox` for the overload policy).
    limiter
        Rate limiter applied to firing alerts and updates.
    update_score_tolerance
        Relative score change that makes a re-published firing alert an update.
    on_enqueue
        Called (under the lock, must not block) when the outbox stops being empty, and when a
        rate-limit summary may be due: the sender thread should then drain the outbox.

    Examples
    --------
    >>> ledger = AlertLedger("pub", "e1", limiter=RateLimiter(None))
    >>> alert = make_alert("data_quality", subject="flats", run_uid="r1")
    >>> ledger.submit(alert)["seq"], ledger.submit(alert), ledger.stats()["deduplicated"]
    (1, None, 1)
    >>> ledger.resolve(alert["fingerprint"])["status"], [seq for *_, seq in ledger.drain()]
    ('resolved', [1, 2])
    """

    def __init__(
        self,
        publisher_id: str,
        epoch: str,
        *,
        max_queue: int = 10_000,
        limiter: RateLimiter,
        update_score_tolerance: float = 0.1,
        on_enqueue: Callable[[], None] = lambda: None,
    ):
        self.publisher_id, self.epoch = publisher_id, epoch
        self.update_score_tolerance = float(update_score_tolerance)
        self._limiter = limiter
        self._on_enqueue = on_enqueue
        self._lock = threading.Lock()
        self._seq = 0
        self._firing: dict[str, dict[str, Any]] = {}
        self._recent_events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._outbox = Outbox(max_queue)
        self._counts: Counter[str] = Counter()
        self._last_warned: dict[str, float] = {}
        self._last_payload = b""
        self.closed = False

    # ------------------------------------------------------------------ public, locking
    def submit(self, alert: dict[str, Any]) -> dict[str, Any] | None:
        """Queue a :func:`~streamer.alerts.schema.make_alert` alert (firing or resolved)."""
        with self._lock:
            self._check_open()
            if alert["status"] == "resolved":
                return self._resolve(alert["fingerprint"], update=alert)
            return self._fire(alert)

    def resolve(self, fingerprint: str, *, message: str | None = None) -> dict[str, Any] | None:
        """Queue ``status="resolved"`` for a firing alert; ``None`` if it is not firing."""
        with self._lock:
            self._check_open()
            return self._resolve(fingerprint, message=message)

    def summarise_rate_limits(self) -> None:
        """Queue the rate-limit summaries (and their resolutions) that are due."""
        with self._lock:
            for action, fields in self._limiter.due():
                summary = make_alert("data_quality", **fields)
                if action == "fire":
                    self._fire(summary, exempt=True)
                else:
                    self._resolve(summary["fingerprint"], message=fields["message"])

    def drain(self) -> list[Queued]:
        """Take every queued message, oldest (lowest ``seq``) first."""
        with self._lock:
            return self._outbox.drain()

    def snapshot(self) -> dict[str, Any]:
        """The firing alerts and the ``seq`` they are current at, consistently."""
        with self._lock:
            alerts = sorted(self._firing.values(), key=lambda a: a["seq"])
            return {
                "publisher": self.publisher_id,
                "epoch": self.epoch,
                "seq": self._seq,
                "alerts": alerts,
            }

    def firing(self) -> list[dict[str, Any]]:
        """Copies of the firing alerts, oldest ``seq`` first."""
        return [loads(dumps(alert)) for alert in self.snapshot()["alerts"]]

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            self._counts[name] += n

    def stats(self) -> dict[str, Any]:
        """Counters plus ``seq``, ``queued``, ``firing`` and ``rate_limited_by_kind``."""
        with self._lock:
            return {
                **self._counts,
                "seq": self._seq,
                "queued": len(self._outbox),
                "firing": len(self._firing),
                "rate_limited_by_kind": dict(self._limiter.suppressed_total),
            }

    def close(self) -> bool:
        """Refuse further alerts (what is queued can still be drained); ``False`` if already."""
        with self._lock:
            was_open, self.closed = not self.closed, True
            return was_open

    # ------------------------------------------------------------------ under the lock
    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"alert publisher {self.publisher_id} is closed")

    def _fire(self, alert: dict[str, Any], *, exempt: bool = False) -> dict[str, Any] | None:
        fp, kind = alert["fingerprint"], alert["kind"]
        known = self._recent_events if kind in EVENT_KINDS else self._firing
        previous = known.get(fp)
        if previous is not None and not exempt:
            if not is_material_update(previous, alert, tolerance=self.update_score_tolerance):
                self._counts["deduplicated"] += 1
                return None
        if not exempt and not self._limiter.allow(
            kind, mode=alert["mode"], message=alert["message"]
        ):
            self._counts["rate_limited"] += 1
            self._warn_throttled("rate limit: %d alerts suppressed so far", "rate_limited")
            self._on_enqueue()  # lets the sender thread publish the summary promptly
            return None
        out = self._enqueue(alert, revision=0 if previous is None else previous["revision"] + 1)
        if out is None:
            return None
        known[fp] = out
        self._counts["published" if previous is None else "updates"] += 1
        if kind in EVENT_KINDS:
            self._recent_events.move_to_end(fp)
            while len(self._recent_events) > RECENT_EVENTS:
                self._recent_events.popitem(last=False)
        return loads(self._last_payload)  # a copy the caller may change freely

    def _resolve(
        self, fingerprint: str, *, message: str | None = None, update: Mapping | None = None
    ) -> dict[str, Any] | None:
        previous = self._firing.get(fingerprint)
        if previous is None:
            self._counts["resolve_not_firing"] += 1
            log.info("resolve: no firing alert with fingerprint %s", fingerprint)
            return None
        resolved = {**previous, **(update or {}), "status": "resolved"}
        text = message or (update or {}).get("message") or f"resolved: {previous['message']}"
        resolved["message"] = text[:MAX_MESSAGE_CHARS]
        out = self._enqueue(resolved, revision=previous["revision"] + 1)
        if out is None:
            return None
        del self._firing[fingerprint]
        self._counts["resolved"] += 1
        return loads(self._last_payload)  # a copy the caller may change freely

    def _enqueue(self, alert: dict[str, Any], *, revision: int) -> dict[str, Any] | None:
        now = time.time()
        out = {
            **alert,
            "seq": self._seq + 1,
            "epoch": self.epoch,
            "publisher": self.publisher_id,
            "time": now,
            "time_iso": iso_time(now),
            "revision": revision,
        }
        topic = alert_topic(out["mode"], out["kind"]).encode()
        rank = severity_rank(out["severity"])
        payload = dumps(out)
        accepted, evicted = self._outbox.put((topic, payload, out["seq"]), rank=rank)
        if not accepted or evicted is not None:
            self._counts["dropped_overload"] += 1
            self._warn_throttled("outbox full: %d alerts dropped so far", "dropped_overload")
        if not accepted:
            return None
        self._seq += 1
        self._last_payload = payload
        if len(self._outbox) == 1:  # the sender drains everything: wake it only when needed
            self._on_enqueue()
        return out

    def _warn_throttled(self, message: str, counter: str, every: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._last_warned.get(counter, -every) >= every:
            self._last_warned[counter] = now
            log.warning(message, self._counts[counter])
