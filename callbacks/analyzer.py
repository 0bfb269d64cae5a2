"""``XanesAnalyzer``: the callback a beamline subscribes to its RunEngine.

Reading order for a newcomer following one frame to an alert:

1. :class:`XanesAnalyzer` (this module), on the RunEngine's thread: a ``RunRouter`` asks
   :func:`~callbacks.dialects.detect_dialect` whether a new run is XANES; for a XANES run it
   creates one :class:`~callbacks.processor.XanesRunProcessor` and forwards that run's documents
   into a bounded :class:`~callbacks.worker.DocumentQueue`. Nothing else happens on that thread.
2. :class:`~callbacks.worker.AnalysisWorker`, the analysis thread, hands each document to its
   run's processor, which fills external frames and calls the engine.
3. :class:`streamer.run_analysis.RunAnalysis` accumulates the spectra (:mod:`streamer.cube`),
   computes provisional attributes (:mod:`streamer.attributes`), segments particles
   (:mod:`streamer.particles`) and asks the campaign model (:mod:`streamer.learning`) for scores.
4. :mod:`streamer.decisions` turns scores into alert dicts, which go to the ``alerts`` callable:
   usually a :class:`streamer.alerts.AlertPublisher` (ZeroMQ).

With ``backend="process"`` steps 1 to 4 run in a child process (:mod:`callbacks.process_child`,
an ordinary thread-backend analyzer); in the RunEngine's process this object only forwards the
documents (:mod:`callbacks.process_backend`) and hands the alerts that come back to ``alerts``.

Which backend: ``bench/bench_live.py`` runs the same 256x256 x 106-energy scan with and without
the analyzer (the simulator computing frames flat out on the RunEngine's thread, a worst case);
``README.md`` and ``bench/results.json`` have the figures. With ``backend="thread"`` the scan
is a third slower (the GIL; neither ``nice`` nor one BLAS thread helped). With ``"process"`` and
``nice="idle"`` the child never takes the RunEngine's core: what is left of the slowdown is the
child's memory traffic on the other core (a ``SCHED_IDLE`` counting loop there costs the scan
nothing measurable, a process streaming 64 MB arrays about 20 %), which is why the analysis reads
the cube as little as it can while frames arrive. With 0.1 s of detector time per trigger both
backends stay within a few percent. Hence ``"process"`` with ``"idle"`` for a RunEngine in the
same process. The frames travel to the child as zero-copy 0MQ frames (in-band msgpack had cost
the forwarding thread 0.27 s of GIL per scan).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import event_model

from callbacks.dialects import detect_dialect
from callbacks.handlers import HANDLER_REGISTRY
from callbacks.process_backend import AnalysisProcess, DocumentForwarder, handler_paths
from callbacks.processor import XanesRunProcessor
from callbacks.worker import AnalysisWorker, DocumentQueue
from streamer.session import AnalysisSession

log = logging.getLogger(__name__)

BACKENDS = ("thread", "process")


class _TolerantRunRouter(event_model.RunRouter):
    """A ``RunRouter`` that ignores documents of runs whose start it never saw.

    A callback subscribed mid-run (or fed from a proxy it joined late) sees descriptors and events
    that refer to an unknown start; the stock router raises ``KeyError``. Here they are counted
    and logged once per unknown run.
    """

    def __init__(self, factories: list, **kwargs: Any) -> None:
        super().__init__(factories, **kwargs)
        self.orphan_documents = 0
        self._orphan_runs: set[str] = set()
        self._resource_runs: dict[str, set[str]] = {}

    def _known(self, name: str, start_uid: str | None) -> bool:
        if start_uid is not None and start_uid in self._start_to_start_doc:
            return True
        self.orphan_documents += 1
        key = start_uid or "?"
        if key not in self._orphan_runs and len(self._orphan_runs) < 1000:
            self._orphan_runs.add(key)
            log.warning(
                "ignoring %s of run %s whose start document was never received "
                "(subscribed mid-run?); further documents of that run are ignored silently",
                name,
                key[:8],
            )
        return False

    def descriptor(self, doc: Mapping[str, Any]) -> None:
        if self._known("descriptor", doc.get("run_start")):
            super().descriptor(doc)

    def event_page(self, doc: Mapping[str, Any]) -> None:
        start = self._descriptor_to_start.get(doc.get("descriptor"))
        if self._known("event", start):
            super().event_page(doc)

    def resource(self, doc: Mapping[str, Any]) -> None:
        start = doc.get("run_start")
        if start is None or self._known("resource", start):
            if start is not None:
                self._resource_runs.setdefault(start, set()).add(doc["uid"])
            super().resource(doc)

    def datum_page(self, doc: Mapping[str, Any]) -> None:
        resource = doc.get("resource")
        if resource in self._resources or resource in self._unlabeled_resources:
            super().datum_page(doc)
        else:
            self._known("datum", None)

    def stop(self, doc: Mapping[str, Any]) -> None:
        start = doc.get("run_start")
        if self._known("stop", start):
            super().stop(doc)
            # The stock router keys resources by resource uid but cleans them by start uid.
            for resource_uid in self._resource_runs.pop(start, ()):
                self._resources.pop(resource_uid, None)


class _Forward:
    """The per-run callback on the RunEngine's thread: enqueue, never analyse."""

    __slots__ = ("processor", "queue", "run_uid")

    def __init__(self, queue: DocumentQueue, processor: XanesRunProcessor, run_uid: str) -> None:
        self.queue = queue
        self.processor = processor
        self.run_uid = run_uid

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        self.queue.put(self.processor, name, doc, run_key=self.run_uid)


class XanesAnalyzer:
    """Live TXM-XANES analysis of bluesky documents, subscribable to a RunEngine.

    Parameters
    ----------
    alerts
        Where alerts go: an :class:`streamer.alerts.AlertPublisher`, or any callable taking one
        alert dict (``print``, ``list.append``...). ``None`` keeps them only in the session.
    out_dir
        Directory for ``alerts.jsonl`` is the publisher's business; here the per-field report
        figures and the campaign checkpoint are written (``None``: nothing on disk).
    mode
        ``"live"`` or ``"replay"``, copied into every alert.
    session
        An existing :class:`streamer.session.AnalysisSession` (campaign model and alert policy) to
        share between analyzers; by default one is created from the other options.
    checkpoint
        Campaign checkpoint file, loaded if it exists and saved after every run.
    handler_registry, root_map
        For ``event_model.Filler``; default: :data:`callbacks.handlers.HANDLER_REGISTRY`.
    max_queue_events, max_queue_bytes
        Bounds of the hand-off queue (see :mod:`callbacks.worker` for the overload policy).
    block
        Make the caller wait for room in the queue instead of dropping events, and never skip
        provisional evaluations for being behind. Default: ``True`` in replay mode (deterministic,
        nothing lost), ``False`` live (the RunEngine is never blocked).
    report
        Write PNG figures per field of view and a campaign report under ``out_dir/report``.
    backend
        Where the analysis runs. ``"thread"`` (default): a worker thread of this process, sharing
        the interpreter (and its GIL) with the RunEngine; :attr:`session` is the live session.
        ``"process"``: a child process (:mod:`callbacks.process_backend`); this object only
        hands documents on and alerts come back to ``alerts`` in this process. :attr:`session`
        is then ``None`` (read :meth:`run_flags` and :attr:`stats`), and ``session``,
        ``campaign`` and handlers that are not module-level classes are refused. Use
        ``"process"`` when the RunEngine runs in this process; ``"thread"`` stays the default
        for processes that do nothing but analyse (``txm-streamer serve``, replay) and for code
        that reads :attr:`session`.
    nice
        How much lower the analysis's scheduling priority is than the caller's: a Linux
        niceness increment (0 to 19) or ``"idle"`` (``SCHED_IDLE``: it runs only on a core
        nothing else wants), for the analysis thread with ``backend="thread"`` and the child
        with ``"process"``. Default: ``"idle"`` for a live process backend, 10 for a live
        thread, 0 in replay (where the analysis is the work).

    Examples
    --------
    >>> from bluesky import RunEngine                       # doctest: +SKIP
    >>> RE = RunEngine()                                    # doctest: +SKIP
    >>> analyzer = XanesAnalyzer(alerts=print)              # doctest: +SKIP
    >>> RE.subscribe(analyzer)                              # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        alerts: Callable[[dict], Any] | None = None,
        out_dir: str | Path | None = None,
        mode: str = "live",
        session: AnalysisSession | None = None,
        checkpoint: str | Path | None = None,
        handler_registry: Mapping[str, Any] | None = None,
        root_map: Mapping[str, str] | None = None,
        max_queue_events: int = 512,
        max_queue_bytes: int = 2 * 1024**3,
        block: bool | None = None,
        report: bool = True,
        backend: str = "thread",
        nice: int | str | None = None,
        **session_options: Any,
    ) -> None:
        if mode not in ("live", "replay"):
            raise ValueError(f"mode must be 'live' or 'replay', not {mode!r}")
        if alerts is not None and not callable(alerts):
            raise TypeError(f"alerts must be callable (a publisher or a function), not {alerts!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if nice is None:
            nice = 0 if mode == "replay" else ("idle" if backend == "process" else 10)
        if nice != "idle" and not (isinstance(nice, int) and 0 <= nice <= 19):
            raise ValueError(f"nice must be 'idle' or an integer from 0 to 19, not {nice!r}")
        self.mode = mode
        self.backend = backend
        self.handler_registry = dict(handler_registry or HANDLER_REGISTRY)
        self.root_map = dict(root_map or {})
        self.block = (mode == "replay") if block is None else bool(block)
        self.queue = DocumentQueue(
            max_events=max_queue_events, max_bytes=max_queue_bytes, block=self.block
        )
        self.backlog_source: Callable[[], float] | None = None
        self.ignored_runs = 0
        self.errors = 0
        self._router = _TolerantRunRouter([self._factory])
        self._runs: dict[str, _Forward] = {}  # start uid -> the run's forwarder
        self._process: AnalysisProcess | None = None
        if backend == "process":
            self.session = None
            self._process = self._start_process(
                alerts, session, out_dir=out_dir, checkpoint=checkpoint, report=report,
                max_queue_bytes=max_queue_bytes, nice=nice, session_options=session_options,
            )  # fmt: skip
            self.worker = self._forwarder = DocumentForwarder(self.queue, self._process)
        else:
            self.session = session or AnalysisSession(
                alerts=alerts,
                out_dir=out_dir,
                checkpoint=checkpoint,
                report=report,
                **session_options,
            )
            self.worker = AnalysisWorker(self.queue, nice=nice)
        self.worker.start()

    def _start_process(
        self, alerts: Any, session: Any, *, session_options: dict, **options: Any
    ) -> AnalysisProcess:
        if session is not None:
            raise ValueError("backend='process' cannot share a session object with the child")
        policy = session_options.get("policy")
        if policy is not None:
            session_options = {**session_options, "policy": dataclasses.asdict(policy)}
        if "campaign" in session_options:
            raise ValueError("backend='process' loads its campaign from `checkpoint` instead")
        for key in ("out_dir", "checkpoint"):
            if options[key] is not None:
                options[key] = str(options[key])
        analyzer = {
            "mode": self.mode,
            "block": self.block,
            "handler_registry": handler_paths(self.handler_registry),
            "root_map": self.root_map,
            "out_dir": options["out_dir"],
            "checkpoint": options["checkpoint"],
            "report": options["report"],
            "max_queue_bytes": options["max_queue_bytes"],
        }
        payload = {"analyzer": analyzer, "session": session_options}
        return AnalysisProcess(payload, alerts=alerts, nice=options["nice"])

    def _factory(self, name: str, start: Mapping[str, Any]) -> tuple[list, list]:
        dialect = detect_dialect(start)
        if dialect is None:
            self.ignored_runs += 1
            return [], []
        log.info(
            "run %s (scan %s, %s) recognised as %s XANES with %s planned energies",
            start["uid"][:8],
            start.get("scan_id"),
            start.get("plan_name"),
            dialect.name,
            len(dialect.planned_energies_ev or ()) or "unknown",
        )
        if self.backlog_source is not None:
            backlog = self.backlog_source
        else:
            backlog = (lambda: 0.0) if self.block else (lambda: self.queue.depth)
        processor = XanesRunProcessor(
            dialect,
            begin_run=lambda info: self.session.begin_run(info, backlog=backlog),
            handler_registry=self.handler_registry,
            root_map=self.root_map,
            mode=self.mode,
        )
        forward = self._runs[start["uid"]] = _Forward(self.queue, processor, start["uid"])
        return [forward], []

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        """Take one document; never raises into the RunEngine."""
        try:
            if self._process is not None:
                self._forwarder.put(name, doc, run_key=doc.get("descriptor", ""))
            elif name == "dropped":  # an event the RunEngine's process dropped (process backend)
                self._route_dropped(doc)
            else:
                self._router(name, doc)
                if name == "stop":
                    self._runs.pop(doc.get("run_start"), None)
        except Exception:
            self.errors += 1
            log.exception(
                "XanesAnalyzer could not route a %r document (uid %s); it is skipped",
                name,
                doc.get("uid") if isinstance(doc, Mapping) else "?",
            )

    def _route_dropped(self, marker: Mapping[str, Any]) -> None:
        start = self._router._descriptor_to_start.get(marker.get("descriptor"))
        forward = self._runs.get(start)
        if forward is not None:
            forward.queue.put(forward.processor, "dropped", marker, run_key=forward.run_uid)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every document received so far is analysed; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._process is None:
            return self.queue.join(timeout)
        return self._request("flush", deadline)

    def _request(self, kind: str, deadline: float | None) -> bool:
        process = self._process
        if not process.alive:
            return False
        answered, _ = process.request(
            kind, lambda doc: self.queue.put(lambda n, d: process.send(kind, n, d), kind, doc)
        )
        while not answered.wait(0.2):
            if not process.alive or (deadline is not None and time.monotonic() > deadline):
                return False
        return kind == "close" or process.alive

    def close(self, timeout: float | None = 60.0) -> None:
        """Finish queued work, stop the analysis (thread or process) and close the session."""
        if self._process is None:
            self.worker.stop(timeout)
            self.session.close()
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._process.alive:
            self._request("close", deadline)
        self.worker.stop(0 if deadline is None else max(deadline - time.monotonic(), 0.0))
        self._process.wait(None if deadline is None else max(deadline - time.monotonic(), 1.0))

    def run_flags(self) -> dict[str, list[int]]:
        """``run uid -> flagged particle ids`` of finished runs (process: as of the last flush)."""
        if self._process is not None:
            return dict(self._process.last_report.get("flagged", {}))
        return {r.info.run_uid: sorted(r.flagged) for r in self.session.runs}

    def __enter__(self) -> XanesAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters for monitoring: queue, drops, errors, ignored runs, orphan documents.

        With ``backend="process"`` the analysis counters are the child's as of the last
        :meth:`flush`, and ``forward_errors`` counts documents that could not be sent to it.
        """
        q = self.queue.stats
        stats = {
            "accepted": q.accepted,
            "processed": q.processed,
            "dropped_events": q.dropped_events,
            "max_queue_depth": q.max_depth,
            "worker_errors": q.errors,
            "router_errors": self.errors,
            "ignored_runs": self.ignored_runs,
            "orphan_documents": self._router.orphan_documents,
            "worker_busy_s": round(self.worker.busy_seconds, 3),
        }
        if self._process is not None:
            child = self._process.last_report.get("stats", {})
            stats["forward_errors"] = q.errors
            for key in ("processed", "worker_errors", "router_errors", "ignored_runs"):
                stats[key] = child.get(key, 0)
            stats["orphan_documents"] = child.get("orphan_documents", 0)
            stats["worker_busy_s"] = child.get("worker_busy_s", 0.0)
            stats["sink_errors"] = self._process.sink_errors
        return stats
