"""The alert subscriber: alerts in order, with snapshot catch-up and gap, restart, silence checks.

Synchronisation (see :mod:`streamer.alerts.snapshot`): the SUB socket subscribes to every alert
topic, then to heartbeats; alerts that arrive before the first heartbeat are buffered. The first
heartbeat proves the subscriptions are active; the subscriber then asks for a snapshot of the firing
alerts at ``seq`` S, hands those out, and continues with the buffered and later alerts whose ``seq``
is above S. A missing ``seq`` afterwards is a gap (warned with the missing range), a new ``epoch``
a publisher restart (warned, then re-synchronised from a fresh snapshot), and silence longer than
``heartbeat_timeout`` a lost publisher (warned once, then "heartbeats back").

Filters (``kinds``, ``min_severity``, ``mode``) apply client-side, after the sequence checks, so
gap detection keeps working whatever is shown.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import zmq

from .endpoints import DEFAULT_ENDPOINT, with_port
from .heartbeat import HeartbeatMonitor, validate_heartbeat
from .schema import (
    ALERT_TOPIC_PREFIX,
    EVENT_KINDS,
    HEARTBEAT_TOPIC,
    KINDS,
    MODES,
    AlertValidationError,
    loads,
    severity_rank,
    validate_alert,
)
from .snapshot import request_snapshot

log = logging.getLogger(__name__)


class AlertSubscriber:
    """Receive alerts from an :class:`~streamer.alerts.AlertPublisher`.

    Parameters
    ----------
    endpoint
        The publisher's PUB endpoint to connect to.
    topics
        ZeroMQ topic prefixes (default: every alert topic). Custom topics turn gap detection off,
        since the ``seq`` of the alerts not subscribed to are legitimately missing.
    kinds
        Only hand out these kinds (default: all).
    min_severity
        Only hand out this severity and above (default: all).
    mode
        ``"live"``, ``"replay"`` or ``"all"``.
    heartbeat_timeout
        Seconds of silence before warning that heartbeats stopped.
    snapshot
        Start with the alerts already firing (default); otherwise start with what arrives next.
    snapshot_endpoint
        Where to ask for snapshots (default: the port the publisher's heartbeats announce).
    snapshot_timeout
        Seconds to wait for a snapshot reply.
    context
        ZeroMQ context (default: the process-wide instance).

    Attributes
    ----------
    epoch_, publisher_, last_seq_
        The publisher epoch and id followed, and the last ``seq`` accounted for.
    firing_
        Mirror of the publisher's firing alerts by fingerprint (unfiltered).
    events
        Recent notable events (dicts with ``"event"``: gap, restart, heartbeat_lost, ...).
    counts
        Counters: received, shown, filtered, duplicates, gaps, missed, invalid, restarts, stale,
        carried_over (unchanged copies of alerts a restarted publisher adopted, not shown again)...
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        topics: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
        min_severity: str | None = None,
        mode: str = "all",
        heartbeat_timeout: float = 3.0,
        snapshot: bool = True,
        snapshot_endpoint: str | None = None,
        snapshot_timeout: float = 2.0,
        context: zmq.Context | None = None,
    ):
        self.kinds = frozenset(kinds) if kinds else None
        unknown = (self.kinds or frozenset()) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown alert kinds {sorted(unknown)}; expected some of {KINDS}")
        self.min_rank = severity_rank(min_severity) if min_severity else 0
        if mode not in (*MODES, "all"):
            raise ValueError(f"mode must be 'live', 'replay' or 'all'; got {mode!r}")
        self.mode = mode
        self.endpoint = endpoint
        self.snapshot = snapshot
        self.snapshot_endpoint = snapshot_endpoint
        self.snapshot_timeout = float(snapshot_timeout)
        self._context = context or zmq.Context.instance()
        self._gap_detection = topics is None
        self._sub = self._context.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.connect(endpoint)
        for topic in (*(topics or (ALERT_TOPIC_PREFIX,)), HEARTBEAT_TOPIC):  # heartbeat last
            self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._monitor = HeartbeatMonitor(heartbeat_timeout)
        self._synced = False
        self._buffer: list[dict[str, Any]] = []
        self._ready: deque[dict[str, Any]] = deque()
        self._retired_epochs: set[str] = set()
        self.epoch_: str | None = None
        self.publisher_: str | None = None
        self.last_seq_: int | None = None
        self.firing_: dict[str, dict[str, Any]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=1000)
        self.counts: Counter[str] = Counter()
        self._seen_before_restart: set[tuple] = set()

    @property
    def synced(self) -> bool:
        """Whether the subscriber follows a publisher epoch (snapshot applied)."""
        return self._synced

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Return the next alert passing the filters, or ``None`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            remaining = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if self._sub.poll(max(0, int(remaining * 1000)), zmq.POLLIN):
                while not self._ready:  # hand the first alert out before reading the backlog
                    try:
                        frames = self._sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_message(frames)
            if self._monitor.check():
                self._on_silence()
            if deadline is not None and time.monotonic() >= deadline and not self._ready:
                return None
        return self._ready.popleft()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            alert = self.recv()
            if alert is not None:
                yield alert

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sub.close(linger=0)

    def __enter__(self) -> AlertSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ message handling
    def _event(self, name: str, level: int, text: str, **details: Any) -> None:
        self.events.append({"event": name, "time": time.time(), "message": text, **details})
        log.log(level, "%s: %s", self.endpoint, text)

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            if len(frames) != 2:
                raise ValueError(f"expected [topic, json], got {len(frames)} frames")
            message = loads(frames[1])
            if frames[0] == HEARTBEAT_TOPIC.encode():
                validate_heartbeat(message)
                if message["epoch"] not in self._retired_epochs:
                    self._on_heartbeat(message)
                return
            validate_alert(message)
        except (ValueError, AlertValidationError) as err:
            self.counts["invalid"] += 1
            self._event("invalid", logging.WARNING, f"ignoring an invalid message: {err}")
            return
        if message["epoch"] in self._retired_epochs:  # late words of a publisher since restarted
            self.counts["stale"] += 1
            return
        self._on_alert(message)

    def _on_alert(self, alert: dict[str, Any]) -> None:
        if self._synced and alert["epoch"] != self.epoch_:
            self._restart(alert["epoch"], alert["publisher"])
        if not self._synced:
            self._buffer.append(alert)
            if min(a["seq"] for a in self._buffer if a["epoch"] == alert["epoch"]) == 1:
                self._sync(alert["epoch"], alert["publisher"], base=0)  # seen from the start
            return
        self._accept(alert)

    def _on_heartbeat(self, beat: dict[str, Any]) -> None:
        if self._monitor.beat():
            self._event("heartbeat_back", logging.WARNING, "heartbeats back")
        if beat["closing"]:
            self._monitor.mark_lost()
            self._event(
                "publisher_closed", logging.WARNING, f"publisher {beat['publisher']} closed"
            )
        if self._synced and beat["epoch"] != self.epoch_:
            self._restart(beat["epoch"], beat["publisher"])
        if not self._synced:
            self._sync_from_heartbeat(beat)
        elif self._gap_detection and beat["seq"] > self.last_seq_:
            self._gap(self.last_seq_ + 1, beat["seq"])
            self.last_seq_ = beat["seq"]

    def _on_silence(self) -> None:
        what = "no heartbeat" if self.epoch_ is None else "heartbeats stopped"
        self._event(
            "heartbeat_lost",
            logging.WARNING,
            f"{what} for {self._monitor.timeout:g} s (is the publisher running?)",
        )
        if not self._synced and self._buffer:  # a publisher without heartbeats: take what we have
            first = self._buffer[0]
            base = min(a["seq"] for a in self._buffer if a["epoch"] == first["epoch"]) - 1
            self._sync(first["epoch"], first["publisher"], base=base)

    def _sync_from_heartbeat(self, beat: dict[str, Any]) -> None:
        epoch, seq = beat["epoch"], beat["seq"]
        mine = [a["seq"] for a in self._buffer if a["epoch"] == epoch]
        # seq 0 means nothing sent in this epoch yet; but alerts adopted from an earlier lifetime
        # (n_firing > 0) are known only through the snapshot, so ask for it then.
        if (seq == 0 and not beat.get("n_firing")) or (mine and min(mine) == 1):
            self._sync(epoch, beat["publisher"], base=0)
            return
        first_buffered = min(mine, default=seq + 1) - 1
        if not self.snapshot:
            self._sync(epoch, beat["publisher"], base=min(first_buffered, seq))
            return
        endpoint = self.snapshot_endpoint or beat.get("snapshot_endpoint")
        if (
            not self.snapshot_endpoint
            and beat.get("snapshot_port")
            and self.endpoint.startswith("tcp://")
        ):
            endpoint = with_port(self.endpoint, beat["snapshot_port"])
        try:
            if not endpoint:
                raise ValueError("the publisher offers no snapshot socket")
            snap = request_snapshot(endpoint, timeout=self.snapshot_timeout, context=self._context)
            for alert in snap["alerts"]:
                validate_alert(alert)
        except (TimeoutError, ValueError, AlertValidationError) as err:
            base = min(first_buffered, seq)
            self._event(
                "snapshot_failed",
                logging.WARNING,
                f"no snapshot ({err}); alerts published before seq {base + 1} are unknown",
            )
            self._sync(epoch, beat["publisher"], base=base)
            return
        if snap["epoch"] != epoch:  # restarted in between: wait for its next heartbeat
            self._buffer = [a for a in self._buffer if a["epoch"] == snap["epoch"]]
            return
        self.counts["snapshots"] += 1
        self._event(
            "snapshot",
            logging.INFO,
            f"{len(snap['alerts'])} alerts firing at seq {snap['seq']} (snapshot)",
            seq=snap["seq"],
            n_alerts=len(snap["alerts"]),
        )
        self._sync(epoch, beat["publisher"], base=snap["seq"], snapshot=snap["alerts"])

    def _sync(
        self, epoch: str, publisher: str, *, base: int, snapshot: list[dict] | None = None
    ) -> None:
        self.epoch_, self.publisher_, self.last_seq_ = epoch, publisher, base
        self._synced = True
        buffered = sorted((a for a in self._buffer if a["epoch"] == epoch), key=lambda a: a["seq"])
        self._buffer = []
        caught_up = list(snapshot or [])  # plus one-off events seen that a snapshot leaves out
        caught_up += [a for a in buffered if a["seq"] <= base and a["kind"] in EVENT_KINDS]
        for alert in sorted(caught_up, key=lambda a: a["seq"]):
            self._apply(alert)
        for alert in buffered:
            if alert["seq"] > base:
                self._accept(alert)

    def _accept(self, alert: dict[str, Any]) -> None:
        seq = alert["seq"]
        if seq <= self.last_seq_:
            self.counts["duplicates"] += 1
            return
        if self._gap_detection and seq > self.last_seq_ + 1:
            self._gap(self.last_seq_ + 1, seq - 1)
        self.last_seq_ = seq
        self._apply(alert)

    def _apply(self, alert: dict[str, Any]) -> None:
        self.counts["received"] += 1
        if alert["kind"] not in EVENT_KINDS:
            if alert["status"] == "firing":
                self.firing_[alert["fingerprint"]] = alert
            else:
                self.firing_.pop(alert["fingerprint"], None)
        if _identity(alert) in self._seen_before_restart:  # adopted across a restart, unchanged
            self.counts["carried_over"] += 1
            return
        shown = (
            (self.kinds is None or alert["kind"] in self.kinds)
            and severity_rank(alert["severity"]) >= self.min_rank
            and self.mode in ("all", alert["mode"])
        )
        self.counts["shown" if shown else "filtered"] += 1
        if shown:
            self._ready.append(alert)

    def _gap(self, first: int, last: int) -> None:
        self.counts["gaps"] += 1
        self.counts["missed"] += last - first + 1
        span = f"seq {first}" if first == last else f"seq {first}..{last}"
        self._event("gap", logging.WARNING, f"missed {span} ({last - first + 1} alerts)",
                    first=first, last=last)  # fmt: skip

    def _restart(self, epoch: str, publisher: str) -> None:
        self.counts["restarts"] += 1
        self._event(
            "restart",
            logging.WARNING,
            f"publisher {publisher} restarted (epoch {self.epoch_} -> {epoch}); "
            f"{len(self.firing_)} alerts firing before are re-checked against its snapshot",
            old_epoch=self.epoch_,
            new_epoch=epoch,
        )
        self._retired_epochs.add(self.epoch_)
        self._synced = False
        self._buffer = []
        # A restarted publisher may adopt what it left firing (AlertPublisher.adopt) and serve it
        # again in its snapshot, unchanged: those copies update the state but are not shown twice.
        self._seen_before_restart = {_identity(a) for a in self.firing_.values()}
        self.firing_ = {}


def _identity(alert: Mapping[str, Any]) -> tuple:
    """What makes two copies of an alert the same message: where and when it was published."""
    return (alert["fingerprint"], alert["epoch"], alert["seq"], alert.get("revision"))
