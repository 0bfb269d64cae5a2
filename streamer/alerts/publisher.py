"""The alert publisher: an XPUB socket, heartbeats, snapshots, deduplication, rate limits, a log.

Threading: :meth:`AlertPublisher.publish` may be called from any thread and never blocks on the
network or the disk. It validates and numbers the alert under a lock and puts it in a bounded
outbox; one background thread, the only one that touches the ZeroMQ sockets (they are not
thread-safe), sends it, appends it to ``alerts.jsonl``, answers snapshot requests and sends
heartbeats.

Deduplication, by :func:`~streamer.alerts.schema.compute_fingerprint`: a firing alert whose
fingerprint is already firing is sent again (as an *update*: same fingerprint, ``revision`` + 1)
only if it changed materially: its ``severity`` or ``provisional`` flag differ from the last sent
version, or its ``score`` moved by more than ``update_score_tolerance`` (relative) either way.
Otherwise it is counted as ``deduplicated`` and :meth:`~AlertPublisher.publish` returns ``None``.
``scan_summary`` alerts are one-off events: never held as firing, deduplicated the same way
against recent events. :meth:`~AlertPublisher.resolve` sends ``status="resolved"`` and forgets it.

Overload: the outbox holds ``max_queue`` messages; when full, a new alert evicts the oldest queued
one of a lower severity (debug first), else it is refused. Heartbeats are never queued (the thread
makes them when due). Both outcomes are counted in :attr:`~AlertPublisher.stats` and logged; an
evicted alert leaves a ``seq`` gap that subscribers report. Rate limits: see
:class:`~streamer.alerts.flow.RateLimiter`.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from pathlib import Path
from secrets import token_hex
from typing import Any

import zmq

from .endpoints import DEFAULT_ENDPOINT, check_bind_endpoint, default_snapshot_endpoint, port_of
from .flow import Outbox, RateLimiter, is_material_update
from .heartbeat import make_heartbeat
from .log import AlertLog
from .schema import (
    EVENT_KINDS,
    HEARTBEAT_TOPIC,
    MAX_MESSAGE_CHARS,
    PUBLISHER_FIELDS,
    AlertValidationError,
    alert_topic,
    dumps,
    iso_time,
    loads,
    make_alert,
    severity_rank,
)
from .snapshot import serve_snapshot_requests

log = logging.getLogger(__name__)

RECENT_EVENTS = 1024


class AlertPublisher:
    """Publish alerts over ZeroMQ (XPUB, multipart ``[topic, json]``) for any number of subscribers.

    Parameters
    ----------
    endpoint
        Where to bind the XPUB socket. Loopback only unless ``allow_remote=True``; use
        ``"tcp://127.0.0.1:*"`` for any free port and read :attr:`endpoint` afterwards.
    publisher_id
        Name in every message (default ``"<hostname>:<pid>"``).
    log_path
        ``alerts.jsonl`` file every sent alert and resolution is appended to (``None``: no log).
    heartbeat_interval
        Seconds between heartbeats on topic ``txm.heartbeat``.
    snapshot_endpoint
        ROUTER endpoint answering snapshot requests (default: PUB port + 1; ``False``: none).
    max_rate_per_s, burst
        Per-kind rate limits, see :class:`~streamer.alerts.flow.RateLimiter`.
    max_queue
        Capacity of the outbox between callers and the sending thread.
    update_score_tolerance
        Relative score change that makes a re-published firing alert an update.
    wait_for_subscribers
        Seconds to wait, before returning, for a first subscription (so it gets the first alert).
    linger
        Seconds :meth:`close` lets queued messages go out.
    allow_remote
        Allow binding a non-loopback address.
    context
        ZeroMQ context (default: the process-wide instance).

    Examples
    --------
    >>> with AlertPublisher("tcp://127.0.0.1:*", heartbeat_interval=0.2) as pub:
    ...     sent = pub.publish({"kind": "data_quality", "subject": "flats", "run_uid": "r1"})
    ...     again = pub({"kind": "data_quality", "subject": "flats", "run_uid": "r1"})
    >>> sent["seq"], sent["status"], again
    (1, 'firing', None)
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        publisher_id: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
        heartbeat_interval: float = 1.0,
        snapshot_endpoint: str | bool | None = None,
        max_rate_per_s: float | dict[str, float] | None = 10.0,
        burst: float | None = None,
        max_queue: int = 10_000,
        update_score_tolerance: float = 0.1,
        wait_for_subscribers: float = 0.0,
        linger: float = 1.0,
        allow_remote: bool = False,
        context: zmq.Context | None = None,
    ):
        if not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0; got {heartbeat_interval}")
        self._bind = check_bind_endpoint(endpoint, allow_remote=allow_remote)
        if snapshot_endpoint is None or snapshot_endpoint is True:
            snapshot_endpoint = default_snapshot_endpoint(endpoint)
        if snapshot_endpoint:
            check_bind_endpoint(snapshot_endpoint, allow_remote=allow_remote)
        self._snapshot_bind = snapshot_endpoint or None
        self.publisher_id = publisher_id or f"{socket.gethostname()}:{os.getpid()}"
        self.epoch = token_hex(8)
        self.heartbeat_interval = float(heartbeat_interval)
        self.update_score_tolerance = float(update_score_tolerance)
        self.linger = float(linger)
        self.endpoint: str = self._bind
        self.snapshot_endpoint: str | None = self._snapshot_bind
        self.log_path = Path(log_path) if log_path is not None else None
        self._log = AlertLog(self.log_path) if self.log_path is not None else None

        self._lock = threading.Lock()
        self._seq = 0
        self._firing: dict[str, dict[str, Any]] = {}
        self._recent_events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._outbox = Outbox(max_queue)
        self._limiter = RateLimiter(max_rate_per_s, burst=burst)
        self._counts: Counter[str] = Counter()
        self._last_warned: dict[str, float] = {}
        self._closed = False

        self._context = context or zmq.Context.instance()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._started = threading.Event()
        self._subscribed = threading.Event()
        self._start_error: BaseException | None = None
        self._last_sent_seq = 0
        self._thread = threading.Thread(target=self._run, name="txm-alert-publisher", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._release()
            raise self._start_error
        atexit.register(self.close)
        log.info("publishing alerts on %s (snapshots on %s)", self.endpoint, self.snapshot_endpoint)
        if wait_for_subscribers > 0 and not self.wait_for_subscribers(wait_for_subscribers):
            log.info("no subscriber within %.3g s; publishing anyway", wait_for_subscribers)

    # ---------------------------------------------------------------- caller side (any thread)
    def publish(self, alert: Mapping[str, Any]) -> dict[str, Any] | None:
        """Queue one alert; return it as it will be sent, or ``None`` if not sent (see module).

        Fields the publisher owns (``seq``, ``epoch``, ``time``...) are (over)written; an alert with
        ``status="resolved"`` resolves its fingerprint like :meth:`resolve`.
        """
        if not isinstance(alert, Mapping):
            raise TypeError(f"an alert is a dict, not {type(alert).__name__}")
        fields = {k: v for k, v in alert.items() if k not in (*PUBLISHER_FIELDS, "schema")}
        if "kind" not in fields:
            raise AlertValidationError("kind", "is missing")
        full = make_alert(fields.pop("kind"), **fields)
        with self._lock:
            self._check_open()
            if full["status"] == "resolved":
                return self._resolve_locked(full["fingerprint"], update=full)
            return self._publish_locked(full)

    __call__ = publish

    def resolve(self, fingerprint: str, *, message: str | None = None) -> dict[str, Any] | None:
        """Send ``status="resolved"`` for a firing alert; ``None`` if it is not firing."""
        with self._lock:
            self._check_open()
            return self._resolve_locked(fingerprint, message=message)

    def wait_for_subscribers(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a first subscription; return whether one came."""
        return self._subscribed.wait(timeout)

    @property
    def firing(self) -> list[dict[str, Any]]:
        """Copies of the currently firing alerts, oldest ``seq`` first."""
        with self._lock:
            return [loads(dumps(a)) for a in sorted(self._firing.values(), key=lambda a: a["seq"])]

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: published, sent, updates, deduplicated, resolved, rate_limited, dropped..."""
        with self._lock:
            return {
                **self._counts,
                "seq": self._seq,
                "queued": len(self._outbox),
                "firing": len(self._firing),
                "rate_limited_by_kind": dict(self._limiter.suppressed_total),
            }

    def close(self) -> None:
        """Send what is queued (waiting up to ``linger`` s), then close everything (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        self._stop.set()
        self._wake()
        self._thread.join(self.linger + 5.0)
        if self._thread.is_alive():
            log.error("alert publisher thread did not stop within %.1f s", self.linger + 5.0)
        self._release()

    def __enter__(self) -> AlertPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AlertPublisher {self.publisher_id} on {self.endpoint} epoch={self.epoch}>"

    # ---------------------------------------------------------------- under self._lock
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def _publish_locked(self, alert: dict[str, Any], *, exempt: bool = False) -> dict | None:
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
            self._warn_throttled("rate", "rate limit: %d alerts suppressed", "rate_limited")
            self._wake()
            return None
        revision = previous["revision"] + 1 if previous is not None else 0
        out = self._enqueue_locked(alert, revision=revision)
        if out is not None:
            known[fp] = out
            self._counts["updates" if previous is not None else "published"] += 1
            if kind in EVENT_KINDS:
                self._recent_events.move_to_end(fp)
                while len(self._recent_events) > RECENT_EVENTS:
                    self._recent_events.popitem(last=False)
        return loads(dumps(out)) if out is not None else None

    def _resolve_locked(
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
        out = self._enqueue_locked(resolved, revision=previous["revision"] + 1)
        if out is None:
            return None
        del self._firing[fingerprint]
        self._counts["resolved"] += 1
        return loads(dumps(out))

    def _enqueue_locked(self, alert: dict[str, Any], *, revision: int) -> dict[str, Any] | None:
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
        accepted, evicted = self._outbox.put(
            (topic, dumps(out), out["seq"]), rank=severity_rank(out["severity"])
        )
        if not accepted or evicted is not None:
            self._counts["dropped_overload"] += 1
            self._warn_throttled("overload", "outbox full: %d alerts dropped", "dropped_overload")
        if not accepted:
            return None
        self._seq += 1
        self._wake()
        return out

    def _warn_throttled(self, key: str, message: str, counter: str, every: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._last_warned.get(key, -every) >= every:
            self._last_warned[key] = now
            log.warning(message, self._counts[counter])

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):  # already awake-pending (buffer full) or closing
            pass

    # ---------------------------------------------------------------- the socket thread
    def _run(self) -> None:
        xpub = router = None
        try:
            xpub = self._context.socket(zmq.XPUB)
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            xpub.setsockopt(zmq.SNDHWM, 10_000)
            xpub.bind(self._bind)
            self.endpoint = xpub.getsockopt(zmq.LAST_ENDPOINT).decode()
            if self._snapshot_bind:
                router = self._context.socket(zmq.ROUTER)
                router.bind(self._snapshot_bind)
                self.snapshot_endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
        except Exception as err:  # reported to the constructor, which raises it
            self._start_error = err
            for sock in (xpub, router):
                if sock is not None:
                    sock.close(linger=0)
            self._started.set()
            return
        self._started.set()
        try:
            self._loop(xpub, router)
        except Exception:
            log.exception("alert publisher thread failed; no more alerts will be sent")
        finally:
            linger_ms = int(self.linger * 1000)
            xpub.close(linger=linger_ms)
            if router is not None:
                router.close(linger=0)

    def _loop(self, xpub: zmq.Socket, router: zmq.Socket | None) -> None:
        poller = zmq.Poller()
        poller.register(xpub, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        if router is not None:
            poller.register(router, zmq.POLLIN)
        next_heartbeat = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            wait = 0 if stopping else min(0.25, max(0.0, next_heartbeat - time.monotonic()))
            events = dict(poller.poll(int(wait * 1000)))
            if self._wake_r.fileno() in events:
                self._wake_r.recv(4096)
            if xpub in events:
                self._handle_subscriptions(xpub)
            if router is not None and router in events:
                n = serve_snapshot_requests(router, self._snapshot_state)
                with self._lock:
                    self._counts["snapshots_served"] += n
            self._summarise_rate_limits()
            self._send_queued(xpub)
            if stopping or time.monotonic() >= next_heartbeat:
                self._send_heartbeat(xpub, closing=stopping)
                next_heartbeat = time.monotonic() + self.heartbeat_interval
            if stopping:
                return

    def _handle_subscriptions(self, xpub: zmq.Socket) -> None:
        while True:
            try:
                message = xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if message[:1] == b"\x01":
                self._subscribed.set()
                with self._lock:
                    self._counts["subscriptions"] += 1
                if HEARTBEAT_TOPIC.encode().startswith(message[1:]):
                    self._send_heartbeat(xpub)  # tells the subscriber its subscriptions are active
            elif message[:1] == b"\x00":
                with self._lock:
                    self._counts["unsubscriptions"] += 1

    def _snapshot_state(self) -> dict[str, Any]:
        with self._lock:
            alerts = sorted(self._firing.values(), key=lambda a: a["seq"])
            return {
                "publisher": self.publisher_id,
                "epoch": self.epoch,
                "seq": self._seq,
                "alerts": alerts,
            }

    def _summarise_rate_limits(self) -> None:
        with self._lock:
            for action, fields in self._limiter.due():
                summary = make_alert("data_quality", **fields)
                if action == "fire":
                    self._publish_locked(summary, exempt=True)
                else:
                    self._resolve_locked(summary["fingerprint"], message=fields["message"])

    def _send_queued(self, xpub: zmq.Socket) -> None:
        with self._lock:
            items = self._outbox.drain()
        for topic, payload, seq in items:
            try:
                xpub.send_multipart([topic, payload], zmq.NOBLOCK)
            except zmq.ZMQError as err:
                with self._lock:
                    self._counts["send_errors"] += 1
                log.error("could not send alert seq %d: %s", seq, err)
            self._last_sent_seq = seq
            if self._log is not None:
                try:
                    self._log.write_line(payload)
                except (OSError, ValueError) as err:
                    with self._lock:
                        self._counts["log_errors"] += 1
                    log.error("could not append alert seq %d to %s: %s", seq, self.log_path, err)
        if items:
            with self._lock:
                self._counts["sent"] += len(items)

    def _send_heartbeat(self, xpub: zmq.Socket, *, closing: bool = False) -> None:
        with self._lock:
            counts, n_firing = dict(self._counts), len(self._firing)
            self._counts["heartbeats"] += 1
        snapshot = self.snapshot_endpoint
        beat = make_heartbeat(
            publisher=self.publisher_id,
            epoch=self.epoch,
            seq=self._last_sent_seq,
            interval=self.heartbeat_interval,
            n_firing=n_firing,
            snapshot_port=port_of(snapshot) if snapshot else None,
            snapshot_endpoint=snapshot,
            closing=closing,
            counts=counts,
        )
        try:
            xpub.send_multipart([HEARTBEAT_TOPIC.encode(), dumps(beat)], zmq.NOBLOCK)
        except zmq.ZMQError as err:
            log.warning("could not send heartbeat: %s", err)

    def _release(self) -> None:
        for sock in (self._wake_r, self._wake_w):
            sock.close()
        if self._log is not None:
            self._log.close()
