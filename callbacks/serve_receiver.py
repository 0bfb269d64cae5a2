"""The document receiver of ``txm-streamer serve``: a ``RemoteDispatcher`` thread, and lag.

The receiver never unpickles: it deserializes with :func:`streamer.wire.loads` (msgpack with numpy
frames, or JSON), so the RunEngine side must publish with :func:`streamer.wire.dumps`.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


class LagMonitor:
    """Receipt-minus-event-time lag over a sliding interval (seconds).

    >>> lag = LagMonitor()
    >>> lag.observe(100.0, 100.5); lag.observe(100.0, 102.0)
    >>> window = lag.take()
    >>> window["n_events"], window["max_s"], lag.take()["n_events"]
    (2, 2.0, 0)
    """

    def __init__(self) -> None:
        self._lags: list[float] = []
        self._lock = threading.Lock()
        self.total_events = 0

    def observe(self, event_time: float, received: float) -> None:
        """Record one event's lag."""
        with self._lock:
            self._lags.append(received - float(event_time))
            self.total_events += 1

    def take(self) -> dict[str, Any]:
        """Statistics of the lags observed since the last call, and reset."""
        with self._lock:
            lags, self._lags = self._lags, []
        if not lags:
            return {"n_events": 0, "median_s": None, "max_s": None}
        return {
            "n_events": len(lags),
            "median_s": round(statistics.median(lags), 3),
            "max_s": round(max(lags), 3),
        }


def event_times(name: str, doc: Mapping[str, Any]) -> list[float]:
    """The ``time`` of an event, or the times of an event page."""
    if name == "event" and "time" in doc:
        return [doc["time"]]
    if name == "event_page":
        return list(doc.get("time") or ())
    return []


class DocumentReceiver:
    """A thread running a ``RemoteDispatcher`` that queues ``(name, doc, receipt time)``."""

    def __init__(self, address: str, *, lag: LagMonitor, max_pending: int = 10_000) -> None:
        from bluesky.callbacks.zmq import RemoteDispatcher

        from streamer.wire import loads

        self.address = address
        self.lag = lag
        self.queue: queue.Queue[tuple[str, dict, float]] = queue.Queue(max_pending)
        self.received = 0
        self.error: BaseException | None = None
        self._dispatcher = RemoteDispatcher(address, deserializer=loads)
        self._dispatcher.subscribe(self._receive)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="txm-serve-receiver", daemon=True)

    def _receive(self, name: str, doc: dict) -> None:
        now = time.time()
        for t in event_times(name, doc):
            self.lag.observe(t, now)
        self.received += 1
        while not self._stopping.is_set():
            try:
                self.queue.put((name, doc, now), timeout=0.5)
                return
            except queue.Full:
                log.warning(
                    "%d documents waiting for the analyzer; receiving paused", self.queue.maxsize
                )

    def _run(self) -> None:
        import asyncio

        try:
            self._dispatcher.start()
        except asyncio.CancelledError:
            pass
        except Exception as err:
            self.error = err
            log.exception("the document receiver failed")

    def start(self) -> None:
        """Connect to the proxy and start receiving."""
        self._thread.start()
        log.info("receiving documents from the 0MQ proxy at %s", self.address)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving (idempotent)."""
        self._stopping.set()
        task = getattr(self._dispatcher, "_task", None)
        if task is not None and not self._dispatcher.loop.is_closed():
            self._dispatcher.loop.call_soon_threadsafe(task.cancel)
        if self._thread.is_alive():
            self._thread.join(timeout)
