"""A durable journal of the alerts a service published, so a restarted service repeats none.

A live service (``txm-streamer serve``) that dies mid-campaign and restarts re-analyses the run
that was in progress (from the catalog). Its alerts have the same fingerprints as before (the
fingerprint is ``[kind, mode, run_uid, particle id, subject]``, see :mod:`streamer.alerts.schema`),
but the new publisher's memory is empty, so without help it would publish them all again.
:class:`~streamer.journaled_sink.JournaledSink` sits between the analyzer and the publisher: it
suppresses an alert whose **state** was already published in an earlier lifetime, and passes
everything else on.

The state of an alert is ``(fingerprint, status, severity, provisional)``: a provisional warning,
its confirmation (``critical``, not provisional) and its resolution are three states of one
fingerprint, so re-analysing a run does not repeat its provisional warning, while a confirmation
first reached after the restart is still published. Score-only updates of a suppressed state are
suppressed too (they would reach subscribers as a new firing alert).

Alerts still firing when the earlier lifetime ended are *adopted* by the new publisher
(:meth:`~streamer.journaled_sink.JournaledSink.adopt_inherited`,
:meth:`~streamer.alerts.AlertPublisher.adopt`): held as firing without being sent again, so they
are in its snapshot, and their confirmation or resolution goes out as an update or resolution of
the alert subscribers already know.

Journal file (JSON lines, append-only, one record per line)::

    {"type": "alert", "fingerprint": ..., "status": ..., "severity": ..., "provisional": ...,
     "kind": ..., "run_uid": ..., "epoch": ..., "seq": ..., "revision": ..., "time": ...,
     "alert": {the alert as published}}
    {"type": "run_done", "run_uid": ..., "time": ...}
    {"type": "service_start", "time": ..., "pid": ...}

``run_done`` records the runs whose analysis ended (their ``scan_summary`` went through the
sink): a restarted service re-analyses the runs of its catalog that have no such record.

Durability and latency: every record is written and flushed to the operating system at once, so a
killed process (SIGKILL, a crash) never loses a record. ``fsync="line"`` (default) also forces each
record to the disk before :meth:`~streamer.journaled_sink.JournaledSink.__call__` returns, which
survives a power cut or a kernel crash at the price of one disk flush per alert (typically 0.1 to
10 ms: alerts come a few per run, so this is cheap). ``fsync="batch"`` forces the disk at most
every ``fsync_interval`` seconds and on :meth:`AlertJournal.close` (an OS crash may then lose the
last interval's records, which would be published again); ``fsync="never"`` leaves it to the OS.

What "published" means: the sink journals an alert when :meth:`AlertPublisher.publish` accepts
it, which is a moment before the publisher's thread sends it. A process killed in between would
leave journaled alerts that never reached the wire. When the publisher keeps a log
(``alerts.jsonl``, written right after each send), give it as ``delivery_log``: on load, the
journal's alerts of an epoch that the log covers count only if the log has them, and the log's
alerts count even if the journal missed them. Both windows are then a few microseconds wide.
The alerts left firing (:attr:`AlertJournal.inherited_firing_`) come from the log for the epochs
it covers, and from the journal's ``alert`` copies for the others.

The sink itself, :class:`~streamer.journaled_sink.JournaledSink`, is in
:mod:`streamer.journaled_sink` (importable from here too).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from streamer.alerts.log import read_json_lines
from streamer.alerts.schema import EVENT_KINDS

log = logging.getLogger(__name__)

AlertState = tuple[str, str, str, bool]
"""``(fingerprint, status, severity, provisional)``."""

FSYNC_POLICIES = ("line", "batch", "never")


def alert_state(alert: Mapping[str, Any]) -> AlertState:
    """The state of an alert that the journal deduplicates on.

    >>> alert_state({"fingerprint": "ab", "status": "firing", "severity": "warning",
    ...              "provisional": True})
    ('ab', 'firing', 'warning', True)
    """
    return (
        str(alert["fingerprint"]),
        str(alert.get("status", "firing")),
        str(alert.get("severity")),
        bool(alert.get("provisional", False)),
    )


class AlertJournal:
    """Append-only JSON-lines journal of published alert states and finished runs.

    Parameters
    ----------
    path
        Journal file; created (with its directory) if absent, read back if present.
    fsync
        ``"line"``, ``"batch"`` or ``"never"`` (see the module docstring).
    fsync_interval
        Seconds between disk flushes with ``fsync="batch"``.
    delivery_log
        The publisher's ``alerts.jsonl`` (optional): corrects the journal with what was really sent.

    Attributes
    ----------
    published_
        Alert states published by earlier lifetimes (and this one).
    completed_runs_
        Run uids whose analysis ended.
    first_start_
        Unix time of the first ``service_start`` record (``None`` before :meth:`record_start`).
    inherited_firing_
        Fingerprint -> the alert (as published) that earlier lifetimes left firing: delivered and
        neither resolved nor a one-off event, as loaded (not updated by this lifetime).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: str = "line",
        fsync_interval: float = 1.0,
        delivery_log: str | os.PathLike[str] | None = None,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self.path = Path(path)
        self.fsync = fsync
        self.fsync_interval = float(fsync_interval)
        self.published_: set[AlertState] = set()
        self.completed_runs_: set[str] = set()
        self.first_start_: float | None = None
        self.inherited_firing_: dict[str, dict[str, Any]] = {}
        self.n_loaded = 0
        records = list(_read_records(self.path)) if self.path.exists() else []
        self._load(records, delivery_log)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")
        self._lock = threading.Lock()
        self._last_sync = time.monotonic()
        self._unsynced = 0

    def _load(self, records: list[dict], delivery_log: str | os.PathLike[str] | None) -> None:
        delivered: dict[str, set[int]] = {}
        delivered_states: set[AlertState] = set()
        sent_alerts: list[dict[str, Any]] = []  # full alerts, to find what was left firing
        if delivery_log is not None and Path(delivery_log).exists():
            for alert in _read_records(Path(delivery_log)):
                if alert.get("fingerprint") and alert.get("epoch") is not None:
                    delivered.setdefault(alert["epoch"], set()).add(alert.get("seq"))
                    delivered_states.add(alert_state(alert))
                    sent_alerts.append(alert)
        undelivered = 0
        for record in records:
            kind = record.get("type")
            if kind == "alert":
                sent = delivered.get(record.get("epoch"))
                if sent is not None and record.get("seq") not in sent:
                    undelivered += 1  # accepted but never sent: the process died in between
                    continue
                self.published_.add(alert_state(record))
                if sent is None and isinstance(record.get("alert"), dict):
                    sent_alerts.append(record["alert"])  # an epoch the log does not cover
            elif kind == "run_done":
                self.completed_runs_.add(record["run_uid"])
            elif kind == "service_start" and self.first_start_ is None:
                self.first_start_ = float(record["time"])
            self.n_loaded += 1
        self.published_ |= delivered_states
        self.inherited_firing_ = left_firing(sent_alerts)
        if records or delivered_states:
            log.info(
                "alert journal %s: %d published alert states, %d left firing, %d finished runs%s",
                self.path,
                len(self.published_),
                len(self.inherited_firing_),
                len(self.completed_runs_),
                f", {undelivered} accepted but never sent (will be published)"
                if undelivered
                else "",
            )

    def record_alert(self, alert: Mapping[str, Any]) -> None:
        """Journal one published alert (as returned by the publisher)."""
        state = alert_state(alert)
        self.published_.add(state)
        fingerprint, status, severity, provisional = state
        self._append(
            {
                "type": "alert",
                "fingerprint": fingerprint,
                "status": status,
                "severity": severity,
                "provisional": provisional,
                "kind": alert.get("kind"),
                "run_uid": alert.get("run_uid"),
                "epoch": alert.get("epoch"),
                "seq": alert.get("seq"),
                "revision": alert.get("revision"),
                "time": time.time(),
                "alert": dict(alert),
            }
        )

    def mark_run_completed(self, run_uid: str, *, reason: str | None = None) -> None:
        """Journal that the analysis of run ``run_uid`` ended (idempotent)."""
        if run_uid in self.completed_runs_:
            return
        self.completed_runs_.add(run_uid)
        record = {"type": "run_done", "run_uid": run_uid, "time": time.time()}
        if reason:
            record["reason"] = reason
        self._append(record)

    def record_start(self, **info: Any) -> None:
        """Journal that a service (re)started; the first one dates the campaign."""
        now = time.time()
        if self.first_start_ is None:
            self.first_start_ = now
        self._append({"type": "service_start", "time": now, "pid": os.getpid(), **info})

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self._file.closed:
                raise ValueError(f"alert journal {self.path} is closed")
            self._file.write(line)
            self._file.flush()
            self._unsynced += 1
            now = time.monotonic()
            if self.fsync == "line" or (
                self.fsync == "batch" and now - self._last_sync >= self.fsync_interval
            ):
                os.fsync(self._file.fileno())
                self._last_sync, self._unsynced = now, 0

    def sync(self) -> None:
        """Force what was written to the disk now."""
        with self._lock:
            if not self._file.closed and self._unsynced:
                os.fsync(self._file.fileno())
                self._last_sync, self._unsynced = time.monotonic(), 0

    def close(self) -> None:
        """Sync and close (idempotent)."""
        if self.fsync != "never":
            self.sync()
        with self._lock:
            self._file.close()


def left_firing(alerts: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Fingerprint -> last firing alert, of sent ``alerts`` folded in ``(time, seq)`` order.

    One-off events (``scan_summary``) are never firing; a resolution ends its fingerprint.

    >>> fired = {"fingerprint": "f", "kind": "data_quality", "status": "firing", "time": 1.0}
    >>> list(left_firing([fired])), left_firing([fired, {**fired, "status": "resolved",
    ...                                                  "time": 2.0}])
    (['f'], {})
    """
    firing: dict[str, dict[str, Any]] = {}
    order = sorted(alerts, key=lambda a: (float(a.get("time") or 0.0), int(a.get("seq") or 0)))
    for alert in order:
        fingerprint = alert.get("fingerprint")
        if not fingerprint or alert.get("kind") in EVENT_KINDS:
            continue
        if alert.get("status") == "firing":
            firing[fingerprint] = dict(alert)
        else:
            firing.pop(fingerprint, None)
    return firing


def _read_records(path: Path) -> Iterable[dict[str, Any]]:
    """JSON objects of a JSON-lines file; a truncated last line (a crash mid-write) is skipped."""
    for record in read_json_lines(path, parse=json.loads, what="JSON record"):
        if isinstance(record, dict):
            yield record


def __getattr__(name: str) -> Any:
    """``JournaledSink`` is importable from here too (lazily: its module imports this one)."""
    if name == "JournaledSink":
        from streamer.journaled_sink import JournaledSink

        return JournaledSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
