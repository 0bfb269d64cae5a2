"""Archive a RunEngine's documents into a tiled catalog, off the RunEngine's thread.

:class:`Archiver` is a bluesky callback (``RE.subscribe(archiver)``). The RunEngine's thread
only copies each document into a bounded queue; a worker thread writes them with
``bluesky_tiled_plugins.TiledWriter`` (bluesky's own TiledWriter cannot store 2D images).

Overload policy
---------------
The queue is bounded in bytes (``max_queue_bytes``, array payloads plus a small per-document
overhead). Documents that define a run (start, descriptors, resources, datums, stop) are
always queued: they are small, and losing one would corrupt the whole run. Events
(``event``, ``event_page``) wait for room at most ``max_wait`` seconds on the RunEngine's
thread; an event that still does not fit is **dropped**, counted per run
(:attr:`ArchiveStats.dropped_events`), logged as a warning, and recorded in the run's
metadata (``txm_streamer_archive.dropped_events``) when the run is closed, so an archived run
never silently differs from what was acquired. With the default 1 GiB queue a whole
512x512 XANES run fits; drops mean the disk or catalog is much slower than acquisition.

Errors raised while writing are logged with the run uid, counted
(:attr:`ArchiveStats.errors`) and never reach the RunEngine.

Writing
-------
The worker hands documents to :class:`streamer.archive_writer.CatalogWriter`, which gives each
run its own TiledWriter with a batch size that keeps tiled's arrays correct, and, with
``handler_registry``, archives external detector frames inline (needed when one detector file
holds the frames of several streams, as at FXI; see that module).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .archive_writer import CatalogWriter
from .catalog import connect

logger = logging.getLogger(__name__)

__all__ = ["ArchiveStats", "Archiver"]

#: Documents that may be dropped under overload; everything else is always queued.
DROPPABLE = frozenset({"event", "event_page"})
#: Bytes charged per document on top of its arrays (keeps millions of tiny events bounded).
DOC_OVERHEAD_BYTES = 1024


def _payload_nbytes(name: str, doc: Mapping) -> int:
    if name not in DROPPABLE:
        return DOC_OVERHEAD_BYTES
    data = doc.get("data", {})
    nbytes = DOC_OVERHEAD_BYTES
    for value in data.values():
        if isinstance(value, np.ndarray):
            nbytes += value.nbytes
        elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
            nbytes += sum(v.nbytes for v in value)
    return nbytes


def _copy_arrays(name: str, doc: dict) -> dict:
    """Shallow-copy an event (page) with private copies of its arrays.

    Detectors may reuse their frame buffer for the next exposure; the queued document must
    not change under the writer.
    """
    if name not in DROPPABLE or not any(
        isinstance(v, (np.ndarray, list)) for v in doc.get("data", {}).values()
    ):
        return doc
    data = {}
    for key, value in doc["data"].items():
        if isinstance(value, np.ndarray):
            value = value.copy()
        elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
            value = [v.copy() for v in value]
        data[key] = value
    return {**doc, "data": data}


@dataclass
class ArchiveStats:
    """Counters of an :class:`Archiver` (a snapshot; per-run dicts keyed by run uid)."""

    documents_queued: int = 0
    documents_written: int = 0
    dropped_events: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    queued_bytes: int = 0
    peak_queued_bytes: int = 0

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped_events.values())

    @property
    def total_errors(self) -> int:
        return sum(self.errors.values())


class Archiver:
    """Bluesky callback writing runs into a tiled catalog from a worker thread.

    Parameters
    ----------
    catalog : tiled client, str or Path
        A catalog client, a catalog directory (opened or created with
        :func:`streamer.catalog.open_catalog`) or a tiled server URL.
    max_queue_bytes : int
        Bound of the queue between the RunEngine and the writer (see module docstring).
    max_wait : float
        Longest time, in seconds, an event waits on the RunEngine's thread for room in the
        queue before it is dropped (0: never wait).
    max_batch_bytes : int
        Target size of one TiledWriter batch; must stay under 100 MB.
    batch_size : int, optional
        Fixed events per batch, overriding ``max_batch_bytes``.
    handler_registry : mapping, optional
        Spec -> handler class (e.g. ``callbacks.handlers.HANDLER_REGISTRY``): external
        detector data is read on the worker thread and archived inline.
    copy_arrays : bool
        Copy event arrays on the RunEngine's thread (detectors may reuse buffers).
    writer_factory : callable, optional
        ``writer_factory(client, batch_size) -> callback`` building the per-run writer;
        default ``bluesky_tiled_plugins.TiledWriter(client, batch_size=batch_size)``.
    **catalog_kwargs
        Passed to :func:`streamer.catalog.connect` (e.g. ``readable_storage``).

    Notes
    -----
    Typical use::

        archiver = Archiver("/data/txm-catalog", handler_registry=HANDLER_REGISTRY)
        RE.subscribe(archiver)
        ...
        archiver.close()  # waits until every queued document is written
        archiver.stats.total_dropped

    ``archiver.client`` stays usable after :meth:`close` (close it with
    ``archiver.client.context.close()`` when the Archiver opened it).
    """

    def __init__(
        self,
        catalog,
        *,
        max_queue_bytes: int = 1 << 30,
        max_wait: float = 0.05,
        max_batch_bytes: int = 32 << 20,
        batch_size: int | None = None,
        handler_registry: Mapping[str, Any] | None = None,
        copy_arrays: bool = True,
        writer_factory: Callable[[Any, int], Callable[[str, dict], Any]] | None = None,
        **catalog_kwargs,
    ):
        create = isinstance(catalog, (str, Path)) and not str(catalog).startswith("http")
        self.client = connect(catalog, create=create, **catalog_kwargs)
        self.writer = CatalogWriter(
            self.client,
            max_batch_bytes=max_batch_bytes,
            batch_size=batch_size,
            handler_registry=handler_registry,
            writer_factory=writer_factory,
        )
        self.max_queue_bytes = int(max_queue_bytes)
        self.max_wait = float(max_wait)
        self.copy_arrays = copy_arrays
        self._queue: deque[tuple[str, dict, int]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._stats = ArchiveStats()
        self._dropped: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._producer_desc_run: dict[str, str] = {}  # RunEngine thread: descriptor -> run
        self._worker = threading.Thread(target=self._work, name="txm-archiver", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ RunEngine thread
    def __call__(self, name: str, doc: dict) -> None:
        """Queue one document; never raises and never blocks longer than ``max_wait``."""
        try:
            self._enqueue(name, doc)
        except Exception:
            logger.exception("archiver could not queue a %r document; it is lost", name)
            self._count_drop(doc.get("run_start", "?") if isinstance(doc, Mapping) else "?", name)

    def _producer_run_uid(self, name: str, doc: Mapping) -> str:
        if name == "start":
            return doc.get("uid", "?")
        if name == "descriptor":
            self._producer_desc_run[doc["uid"]] = doc.get("run_start", "?")
        if name in DROPPABLE:
            return self._producer_desc_run.get(doc.get("descriptor", ""), "?")
        if name == "stop":
            for desc, run in list(self._producer_desc_run.items()):
                if run == doc.get("run_start"):
                    del self._producer_desc_run[desc]
        return doc.get("run_start", "?")

    def _count_drop(self, run_uid: str, name: str, n_events: int = 1) -> None:
        with self._cond:
            self._dropped[run_uid] += n_events
            n = self._dropped[run_uid]
        if n == n_events or n // 100 != (n - n_events) // 100:  # the first, then every 100
            logger.warning(
                "archive queue full (%d bytes): dropped %d %s document(s) of run %s so far",
                self.max_queue_bytes,
                n,
                name,
                run_uid,
            )

    def _enqueue(self, name: str, doc: dict) -> None:
        run_uid = self._producer_run_uid(name, doc)
        nbytes = _payload_nbytes(name, doc)
        if self.copy_arrays:
            doc = _copy_arrays(name, doc)
        with self._cond:
            if self._closed:
                logger.error("archiver closed: %s document of run %s not archived", name, run_uid)
                self._dropped[run_uid] += 1
                return
            if name in DROPPABLE:
                deadline = time.monotonic() + self.max_wait
                while not self._has_room(nbytes):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            accepted = name not in DROPPABLE or self._has_room(nbytes)
            if accepted:
                self._queue.append((name, doc, nbytes))
                self._stats.documents_queued += 1
                self._stats.queued_bytes += nbytes
                self._stats.peak_queued_bytes = max(
                    self._stats.peak_queued_bytes, self._stats.queued_bytes
                )
                self._cond.notify_all()
        if not accepted:
            n_events = len(doc.get("seq_num", ())) if name == "event_page" else 1
            self._count_drop(run_uid, name, n_events)

    def _has_room(self, nbytes: int) -> bool:
        queued = self._stats.queued_bytes
        return queued == 0 or queued + nbytes <= self.max_queue_bytes

    # ------------------------------------------------------------------ control
    @property
    def stats(self) -> ArchiveStats:
        """A snapshot of the counters."""
        with self._cond:
            return ArchiveStats(
                documents_queued=self._stats.documents_queued,
                documents_written=self._stats.documents_written,
                dropped_events=dict(self._dropped),
                errors=dict(self._errors),
                queued_bytes=self._stats.queued_bytes,
                peak_queued_bytes=self._stats.peak_queued_bytes,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued document is written; return False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the worker. Later documents are logged and counted as dropped."""
        drained = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)
        if not drained:
            logger.error("archiver closed with %d documents still queued", len(self._queue))
        return drained

    def __enter__(self) -> Archiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed and drained
                name, doc, nbytes = self._queue.popleft()
                self._busy = True
                self._stats.queued_bytes -= nbytes
                self._cond.notify_all()
            try:
                self._write(name, doc)
            finally:
                with self._cond:
                    self._busy = False
                    self._stats.documents_written += 1
                    self._cond.notify_all()

    def _write(self, name: str, doc: dict) -> None:
        try:
            self.writer(name, doc)
            if name == "stop":
                self._record_drops(doc["run_start"])
        except Exception:
            uid = self.writer.current_run or "?"
            with self._cond:
                self._errors[uid] += 1
                n = self._errors[uid]
            if n == 1:
                logger.exception("archiving the %s document of run %s failed", name, uid)
            else:
                logger.error("archiving the %s document of run %s failed (%d errors)", name, uid, n)

    def _record_drops(self, run_uid: str) -> None:
        """Note in the archived run's metadata how many events the queue dropped."""
        with self._cond:
            dropped = self._dropped.get(run_uid, 0)
        if dropped:
            note = {"dropped_events": dropped, "max_queue_bytes": self.max_queue_bytes}
            self.client[run_uid].update_metadata({"txm_streamer_archive": note})
            logger.warning("run %s archived without %d dropped event(s)", run_uid, dropped)
