"""The alert publisher: an XPUB socket, heartbeats, snapshots, deduplication, rate limits, a log.

Threading: :meth:`AlertPublisher.publish` may be called from any thread and never blocks on the
network or the disk. It validates and numbers the alert under a lock and puts it in a bounded
outbox; one background thread, the only one that touches the ZeroMQ sockets (they are not
thread-safe), sends it, appends it to ``alerts.jsonl``, answers snapshot requests and sends
heartbeats.

Deduplication, by :func:`~streamer.alerts.schema.compute_fingerprint`: a firing alert whose
fingerprint is already firing is sent again (as an *update*: same fingerprint, ``revision`` + 1)
only if it changed materially: its ``severity``, ``provisional`` flag or ``extra`` object differ
from the last sent version, or its ``score`` moved by more than ``update_score_tolerance``
(relative) either way.
Otherwise it is counted as ``deduplicated`` and :meth:`~AlertPublisher.publish` returns ``None``.
``scan_summary`` alerts are one-off events: never held as firing, deduplicated the same way
against recent events. :meth:`~AlertPublisher.resolve` sends ``status="resolved"`` and forgets it.
The bookkeeping lives in :class:`~streamer.alerts.ledger.AlertLedger`.

Adoption after a restart: :meth:`AlertPublisher.adopt` holds the alerts an earlier lifetime left
firing as firing *without sending them* (see :mod:`streamer.alerts.adoption`).

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
from collections.abc import Iterable, Mapping
from pathlib import Path
from secrets import token_hex
from typing import Any

import zmq

from .adoption import AdoptingLedger, adoptable
from .endpoints import DEFAULT_ENDPOINT, check_bind_endpoint, default_snapshot_endpoint, port_of
from .flow import RateLimiter
from .heartbeat import make_heartbeat
from .log import AlertLog
from .schema import HEARTBEAT_TOPIC, PUBLISHER_FIELDS, AlertValidationError, dumps, make_alert
from .snapshot import serve_snapshot_requests

log = logging.getLogger(__name__)


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
        ZeroMQ context. Default: a private one that :meth:`close` terminates, so queued messages
        really get ``linger`` seconds to leave even if the process exits next. Pass a shared one
        to publish on ``inproc://``.

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
        self.linger = float(linger)
        self.endpoint: str = self._bind
        self.snapshot_endpoint: str | None = self._snapshot_bind
        self.log_path = Path(log_path) if log_path is not None else None
        self._log = AlertLog(self.log_path) if self.log_path is not None else None

        self._ledger = AdoptingLedger(
            self.publisher_id,
            self.epoch,
            max_queue=max_queue,
            limiter=RateLimiter(max_rate_per_s, burst=burst),
            update_score_tolerance=update_score_tolerance,
            on_enqueue=self._wake,
        )

        self._own_context = context is None
        self._context = context or zmq.Context()
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
        return self._ledger.submit(make_alert(fields.pop("kind"), **fields))

    __call__ = publish

    def resolve(self, fingerprint: str, *, message: str | None = None) -> dict[str, Any] | None:
        """Send ``status="resolved"`` for a firing alert; ``None`` if it is not firing."""
        return self._ledger.resolve(fingerprint, message=message)

    def adopt(self, alerts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Hold alerts sent by an earlier lifetime as firing, without sending them again.

        Parameters
        ----------
        alerts
            Published alerts (every field, as they went out: see
            :attr:`streamer.alert_journal.AlertJournal.inherited_firing_`), ``status="firing"``.
            ``scan_summary`` events only join the deduplication memory.

        Returns
        -------
        list of dict
            Copies of the alerts adopted. A fingerprint this publisher already holds is skipped
            (what it holds is newer). The publisher's own rate-limit summaries (``data_quality``,
            ``subject="rate_limit:<kind>"``) are adopted and resolved at once: the new lifetime's
            rate limiter starts afresh and would never resolve them.

        Raises
        ------
        AlertValidationError
            If an alert breaks the schema (nothing is adopted then).
        ValueError
            If an alert is not firing.

        Examples
        --------
        >>> with AlertPublisher("tcp://127.0.0.1:*") as old:
        ...     sent = old.publish({"kind": "data_quality", "subject": "flats", "run_uid": "r1"})
        >>> with AlertPublisher("tcp://127.0.0.1:*") as new:       # after a restart
        ...     adopted = new.adopt([sent])
        ...     again = new.publish({"kind": "data_quality", "subject": "flats", "run_uid": "r1"})
        ...     resolved = new.resolve(sent["fingerprint"])
        >>> len(adopted), again, new.stats["adopted"], new.stats.get("published", 0)
        (1, None, 1, 0)
        >>> resolved["status"], resolved["revision"], resolved["epoch"] == sent["epoch"]
        ('resolved', 1, False)
        """
        adopted = self._ledger.adopt(adoptable(alerts))
        if adopted:
            log.info("adopted %d firing alerts of an earlier lifetime", len(adopted))
        return adopted

    def wait_for_subscribers(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a first subscription; return whether one came."""
        return self._subscribed.wait(timeout)

    @property
    def firing(self) -> list[dict[str, Any]]:
        """Copies of the currently firing alerts, oldest ``seq`` first."""
        return self._ledger.firing()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: published, sent, updates, deduplicated, resolved, rate_limited, dropped..."""
        return self._ledger.stats()

    def close(self) -> None:
        """Send what is queued (waiting up to ``linger`` s), then close everything (idempotent)."""
        if not self._ledger.close():
            return
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
            self._ledger.close()  # publish() now raises instead of queueing into the void
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
                self._ledger.count(
                    "snapshots", serve_snapshot_requests(router, self._ledger.snapshot)
                )
            self._ledger.summarise_rate_limits()
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
                self._ledger.count("subscriptions")
                if HEARTBEAT_TOPIC.encode().startswith(message[1:]):
                    self._send_heartbeat(xpub)  # tells the subscriber its subscriptions are active
            elif message[:1] == b"\x00":
                self._ledger.count("unsubscriptions")

    def _send_queued(self, xpub: zmq.Socket) -> None:
        items = self._ledger.drain()
        for topic, payload, seq in items:
            try:
                xpub.send_multipart([topic, payload], zmq.NOBLOCK)
            except zmq.ZMQError as err:
                self._ledger.count("send_errors")
                log.error("could not send alert seq %d: %s", seq, err)
            self._last_sent_seq = seq
            if self._log is not None:
                try:
                    self._log.write_line(payload)
                except (OSError, ValueError) as err:
                    self._ledger.count("log_errors")
                    log.error("could not append alert seq %d to %s: %s", seq, self.log_path, err)
        if items:
            self._ledger.count("sent", len(items))

    def _send_heartbeat(self, xpub: zmq.Socket, *, closing: bool = False) -> None:
        stats = self._ledger.stats()
        self._ledger.count("heartbeats")
        snapshot = self.snapshot_endpoint
        beat = make_heartbeat(
            publisher=self.publisher_id,
            epoch=self.epoch,
            seq=self._last_sent_seq,
            interval=self.heartbeat_interval,
            n_firing=stats.pop("firing"),
            snapshot_port=port_of(snapshot) if snapshot else None,
            snapshot_endpoint=snapshot,
            closing=closing,
            counts={k: v for k, v in stats.items() if isinstance(v, int)},
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
        if self._own_context and not self._thread.is_alive():
            # term() waits up to ``linger`` for queued messages to leave, but libzmq can hang in
            # it in rare cases (zeromq/libzmq#2586): give it a bounded wait on a helper thread.
            terminator = threading.Thread(target=self._context.term, daemon=True)
            terminator.start()
            terminator.join(self.linger + 1.0)
            if terminator.is_alive():
                log.warning("ZeroMQ context of %r did not terminate; abandoning it", self)
