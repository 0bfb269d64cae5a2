"""``txm-streamer serve``: the analyzer as its own service, fed through bluesky's 0MQ proxy.

Three processes::

    RunEngine ──Publisher──▶ bluesky-0MQ-proxy ──▶ txm-streamer serve ──▶ alerts (ZeroMQ XPUB)
      (beamline)  :5567       (in 5567, out 5568)    RemoteDispatcher        :5577
      └──Archiver──▶ catalog directory ◀── catch-up after a restart (--catalog)

The RunEngine side must publish with txm-streamer's pickle-free serializer (the service never
unpickles anything from the network)::

    from bluesky.callbacks.zmq import Publisher
    from streamer.wire import dumps
    RE.subscribe(Publisher("127.0.0.1:5567", serializer=dumps))
    # for --catalog: archive every run too
    from callbacks.handlers import HANDLER_REGISTRY
    from streamer.archive import Archiver
    RE.subscribe(Archiver("/data/txm-catalog", handler_registry=HANDLER_REGISTRY))

What the service does (:class:`LiveService`):

- A receiver thread runs a ``RemoteDispatcher`` (deserializer :func:`streamer.wire.loads`) and
  puts ``(name, doc, receipt time)`` into a bounded queue (``max_pending`` documents; when full
  the receiver waits, ZeroMQ buffers, and past its high-water mark the proxy drops: PUB/SUB
  semantics). The main thread feeds the queue to one :class:`callbacks.XanesAnalyzer`
  (``mode="live"``), whose own bounded queue and overload policy apply.
- Joining mid-run: documents of a run whose start document the service never saw are ignored by
  the analyzer (logged once per run); the next run is analysed fully.
- Lag: for every event, receipt time minus the event's ``time``. Every ``status_interval`` seconds
  it is logged at INFO (median and max), written to ``OUT/serve-status.json`` with the counters, and
  when the max exceeds ``lag_warning`` a warning is logged and a ``data_quality`` alert
  (``subject="service_lag"``) fires; it is resolved after a whole interval below the threshold.
- Resume: alerts go through a :class:`streamer.journaled_sink.JournaledSink`
  (``OUT/journal/alerts-journal.jsonl``), so a restarted service publishes no alert state twice;
  the alerts the previous lifetime left firing are adopted by the new publisher
  (:meth:`streamer.alerts.AlertPublisher.adopt`: held as firing, in its snapshot, not re-sent), so
  their confirmations and resolutions go out as such. The campaign model resumes from
  ``--checkpoint`` (saved after every finished run). With ``--catalog``, the runs started since the
  campaign's first ``serve`` that are not journaled as finished are analysed from the catalog
  *before* live documents (their live documents, if any, are then skipped); a run still in progress
  there is analysed as soon as its stop document is archived. Catch-up alerts carry ``mode: live``:
  they are about the live campaign, and the same fingerprints as the live alerts of the same run,
  so the journal can deduplicate them.
- SIGINT or SIGTERM: stop receiving, analyse what was received, save the checkpoint, close the
  journal and the publisher; exit status 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq

from callbacks.serve_receiver import DocumentReceiver, LagMonitor, event_times

__all__ = ["DocumentReceiver", "LagMonitor", "LiveService", "event_times", "parse_source", "run"]

log = logging.getLogger(__name__)

STATUS_FILE = "serve-status.json"
JOURNAL_FILE = Path("journal") / "alerts-journal.jsonl"
LAG_SUBJECT = "service_lag"


def parse_source(source: str) -> str:
    """The proxy address of a ``--source`` URL: ``zmq://host:port`` -> ``host:port``.

    >>> parse_source("zmq://127.0.0.1:5568")
    '127.0.0.1:5568'
    """
    scheme, sep, rest = source.partition("://")
    if not sep or scheme != "zmq":
        raise ValueError(
            f"unsupported document source {source!r}: expected zmq://HOST:PORT (the outbound port "
            "of bluesky-0MQ-proxy); Kafka is not supported by this build"
        )
    host, colon, port = rest.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"document source {source!r} needs a host and a port: zmq://HOST:PORT")
    return rest


class LiveService:
    """The ``serve`` service: receiver, catch-up, analyzer, journaled alerts, status.

    Parameters
    ----------
    source
        ``zmq://HOST:PORT``, the proxy's outbound address.
    out_dir
        Output directory: ``alerts.jsonl``, the journal, reports, ``serve-status.json``.
    endpoint
        Alert endpoint (loopback unless named otherwise).
    checkpoint
        Campaign checkpoint (default ``OUT/campaign-checkpoint.npz``): resumed if present.
    catalog
        Catalog directory the RunEngine side archives into, for catch-up after a restart.
    lag_warning, status_interval
        Lag threshold and status period, seconds.
    wait_for_subscribers
        Seconds to wait for a first alert subscriber before analysing anything.
    journal_fsync
        ``"line"``, ``"batch"`` or ``"never"`` (see :mod:`streamer.alert_journal`).
    """

    def __init__(
        self,
        *,
        source: str,
        out_dir: str | Path,
        endpoint: str,
        checkpoint: str | Path | None = None,
        catalog: str | Path | None = None,
        lag_warning: float = 30.0,
        status_interval: float = 10.0,
        wait_for_subscribers: float = 0.0,
        journal_fsync: str = "line",
    ) -> None:
        from callbacks.analyzer import XanesAnalyzer
        from streamer.alerts import AlertPublisher
        from streamer.journaled_sink import JournaledSink

        self.address = parse_source(source)
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.checkpoint = Path(checkpoint or self.out / "campaign-checkpoint.npz")
        self.catalog = catalog
        self.lag_warning = float(lag_warning)
        self.status_interval = float(status_interval)
        self.stop_requested = threading.Event()
        self.state = "starting"
        self.publisher = AlertPublisher(endpoint, log_path=self.out / "alerts.jsonl")
        self.sink = JournaledSink(
            self.publisher,
            self.out / JOURNAL_FILE,
            fsync=journal_fsync,
            delivery_log=self.out / "alerts.jsonl",
        )
        self.journal = self.sink.journal
        self._lag_alert: str | None = None
        self.adopt_inherited_alerts()  # before any subscriber can ask for a snapshot
        if wait_for_subscribers > 0 and not self.publisher.wait_for_subscribers(
            wait_for_subscribers
        ):
            log.info("no alert subscriber within %.3g s; analysing anyway", wait_for_subscribers)
        self.journal.record_start(source=source, endpoint=self.publisher.endpoint)
        if self.checkpoint.exists():
            log.info("resuming the campaign model from %s", self.checkpoint)
        self.analyzer = XanesAnalyzer(
            mode="live", alerts=self.sink, out_dir=self.out, checkpoint=self.checkpoint
        )
        self.lag = LagMonitor()
        self.receiver = DocumentReceiver(self.address, lag=self.lag)
        self.caught_up: set[str] = set()  # analysed from the catalog: skip their live documents
        self.deferred: set[str] = set()  # in the catalog, not finished yet
        self._skipped_descriptors: set[str] = set()
        self._calm_intervals = 0
        self.last_status: dict[str, Any] = {}

    def adopt_inherited_alerts(self) -> list[dict[str, Any]]:
        """Hand the new publisher the alerts the previous lifetime left firing (none re-sent).

        A lag alert among them is this service's again: resolved when the lag is back to normal.
        """
        adopted = self.sink.adopt_inherited()
        for alert in adopted:
            if alert["kind"] == "data_quality" and alert.get("subject") == LAG_SUBJECT:
                self._lag_alert = alert["fingerprint"]
        if adopted:
            log.info(
                "restart: %d alerts left firing by the previous lifetime are held, not re-sent",
                len(adopted),
            )
        return adopted

    # ---------------------------------------------------------------- main loop
    def run(self) -> int:
        """Serve until :attr:`stop_requested` is set; return the exit status."""
        from callbacks.serve_catchup import CatalogCatchUp

        self.receiver.start()  # first, so no document is missed while catching up
        log.info(
            "documents of a run already in progress are ignored (no start document seen); "
            "the next run is analysed fully"
        )
        catchup = None
        if self.catalog is not None:
            self.state = "catching_up"
            self.write_status()
            catchup = CatalogCatchUp(self, self.catalog)
            catchup.startup()
        self.state = "live"
        self.write_status()
        log.info("live: analysing documents from %s", self.address)
        next_status = time.monotonic() + self.status_interval
        while not self.stop_requested.is_set():
            try:
                name, doc, _ = self.receiver.queue.get(timeout=0.2)
                self.handle(name, doc)
            except queue.Empty:
                pass
            if time.monotonic() >= next_status:
                if catchup is not None and self.deferred:
                    catchup.check_deferred()
                self.report_status()
                next_status = time.monotonic() + self.status_interval
            if self.receiver.error is not None:
                log.error("stopping: the document receiver failed")
                break
        return self.shutdown()

    def handle(self, name: str, doc: Mapping[str, Any]) -> None:
        """Give one live document to the analyzer, skipping runs analysed from the catalog."""
        if name == "start":
            uid = doc.get("uid")
            if uid in self.caught_up:
                log.info(
                    "run %s was analysed from the catalog; its live documents are skipped", uid
                )
                return
            self.deferred.discard(uid)
        elif name == "descriptor" and doc.get("run_start") in self.caught_up:
            self._skipped_descriptors.add(doc.get("uid"))
            return
        elif name in ("event", "event_page") and doc.get("descriptor") in self._skipped_descriptors:
            return
        elif name == "stop" and doc.get("run_start") in self.caught_up:
            return
        self.analyzer(name, doc)

    def shutdown(self) -> int:
        """Stop receiving, analyse what was received, save, close everything."""
        self.state = "stopping"
        log.info("shutting down: analysing the documents received so far")
        self.receiver.stop()
        while True:
            try:
                name, doc, _ = self.receiver.queue.get_nowait()
            except queue.Empty:
                break
            self.handle(name, doc)
        if not self.analyzer.flush(timeout=120):
            log.warning("the analyzer did not finish its queue within 120 s")
        self.analyzer.close()  # saves the campaign checkpoint
        self.sink.close()
        self.publisher.close()
        self.state = "stopped"
        self.write_status()
        log.info("stopped; campaign checkpoint in %s", self.checkpoint)
        return 0

    # ---------------------------------------------------------------- status and lag
    def report_status(self) -> None:
        """Log the lag and counters, write the status file, fire or resolve the lag alert."""
        window = self.lag.take()
        stats = self.analyzer.stats
        log.log(
            logging.INFO if window["n_events"] else logging.DEBUG,
            "lag over the last %.0f s: %d events, median %s s, max %s s; queue %d documents, "
            "%d orphan documents ignored, %d dropped events",
            self.status_interval,
            window["n_events"],
            window["median_s"],
            window["max_s"],
            self.receiver.queue.qsize(),
            stats["orphan_documents"],
            stats["dropped_events"],
        )
        if window["max_s"] is not None and window["max_s"] > self.lag_warning:
            self._calm_intervals = 0
            log.warning(
                "documents arrive %.1f s after they were made (threshold %.1f s)",
                window["max_s"],
                self.lag_warning,
            )
            self._fire_lag_alert(window)
        elif self._lag_alert is not None:
            self._calm_intervals += 1
            if self._calm_intervals >= 1:
                self.publisher.resolve(self._lag_alert, message="document lag back to normal")
                self._lag_alert = None
        self.write_status(lag=window)

    def _fire_lag_alert(self, window: dict[str, Any]) -> None:
        sent = self.publisher.publish(
            {
                "kind": "data_quality",
                "severity": "warning",
                "mode": "live",
                "subject": LAG_SUBJECT,
                "message": (
                    f"analysis service lag: documents arrive up to {window['max_s']:.1f} s late "
                    f"(threshold {self.lag_warning:.1f} s)"
                ),
                "extra": {"lag": window, "threshold_s": self.lag_warning},
            }
        )
        if sent is not None:
            self._lag_alert = sent["fingerprint"]

    def write_status(self, **extra: Any) -> None:
        """Write ``OUT/serve-status.json`` atomically (state, counters, lag)."""
        status = {
            "state": self.state,
            "pid": os.getpid(),
            "time": time.time(),
            "source": self.address,
            "alert_endpoint": self.publisher.endpoint,
            "received_documents": self.receiver.received,
            "pending_documents": self.receiver.queue.qsize(),
            "caught_up_runs": sorted(self.caught_up),
            "deferred_runs": sorted(self.deferred),
            "analyzer": self.analyzer.stats,
            "alerts": self.sink.stats,
            **extra,
        }
        self.last_status = status
        path = self.out / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=1, default=str))
        os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    """The ``txm-streamer serve`` subcommand."""
    try:
        service = LiveService(
            source=args.source,
            out_dir=args.out,
            endpoint=args.endpoint,
            checkpoint=args.checkpoint,
            catalog=getattr(args, "catalog", None),
            lag_warning=getattr(args, "lag_warning", 30.0),
            status_interval=getattr(args, "status_interval", 10.0),
            wait_for_subscribers=getattr(args, "wait_for_subscribers", 0.0),
            journal_fsync=getattr(args, "journal_fsync", "line"),
        )
    except ValueError as err:
        log.error("%s", err)
        return 2
    except zmq.ZMQError as err:  # e.g. the alert endpoint is already in use
        log.error("cannot publish alerts on %s: %s", args.endpoint, err)
        return 1

    def request_stop(signum: int, frame: Any) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        service.stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return service.run()
