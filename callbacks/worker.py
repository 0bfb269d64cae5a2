"""The bounded hand-off between the RunEngine's thread and the analysis thread.

Overload policy (stated once, applied everywhere):

- **Control documents** (``start``, ``descriptor``, ``resource``,
  ``datum``, ``datum_page``, ``stop``) are always accepted. They are small, and losing one would
  corrupt a whole run.
- **Event documents** are accepted while fewer than ``max_events`` events and ``max_bytes`` of
  inline array data wait. Beyond that an event is *dropped*, never waited for: the RunEngine is
  never blocked. Every drop is counted per run, logged, and handed to the run's processor as a
  ``("dropped", {...})`` marker in order, so the analysis knows which energy it lost and says so
  in a ``data_quality`` alert.
- In **blocking** mode (``block=True``, for replay, where the producer is a catalog reader and
  nothing may be lost) an event that does not fit makes :meth:`DocumentQueue.put` wait for room
  instead: nothing is dropped, and the analysis is never told it is behind.
- Before it drops, the analysis degrades: the processor sees the backlog
  (:attr:`DocumentQueue.depth`) and skips optional provisional re-evaluations while the queue is
  more than half full.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EVENT_DOCUMENTS = frozenset({"event", "event_page"})

Target = Callable[[str, Mapping[str, Any]], Any]


def inline_nbytes(doc: Mapping[str, Any]) -> int:
    """Bytes of numpy arrays held inline in an event or event page (0 for external data)."""
    total = 0
    for value in (doc.get("data") or {}).values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
            total += sum(v.nbytes for v in value)
    return total


@dataclass
class QueueStats:
    """What went through the queue; counters only grow."""

    accepted: int = 0
    dropped_events: int = 0
    dropped_bytes: int = 0
    max_depth: int = 0
    processed: int = 0
    errors: int = 0
    dropped_by_run: dict[str, int] = field(default_factory=dict)


class DocumentQueue:
    """A FIFO of ``(target, name, doc)`` with the overload policy of this module.

    Parameters
    ----------
    max_events
        Event documents allowed to wait at once.
    max_bytes
        Inline array bytes allowed to wait at once.
    block
        Wait for room instead of dropping an event (replay); an event larger than ``max_bytes``
        is still accepted when the queue is empty.
    """

    def __init__(
        self, *, max_events: int = 512, max_bytes: int = 2 * 1024**3, block: bool = False
    ) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("max_events and max_bytes must be positive")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.block = block
        self._items: deque[tuple[Target, str, Mapping[str, Any], int]] = deque()
        self._cond = threading.Condition()
        self._events = 0
        self._bytes = 0
        self._unfinished = 0
        self.stats = QueueStats()

    @property
    def depth(self) -> float:
        """How full the queue is for events, 0 (empty) to 1 (full)."""
        return max(self._events / self.max_events, self._bytes / self.max_bytes)

    def put(self, target: Target, name: str, doc: Mapping[str, Any], *, run_key: str = "") -> bool:
        """Enqueue a document for ``target``; return False when an event was dropped."""
        nbytes = inline_nbytes(doc) if name in EVENT_DOCUMENTS else 0
        with self._cond:
            if self.block and name in EVENT_DOCUMENTS:
                self._cond.wait_for(
                    lambda: (
                        self._events == 0
                        or (
                            self._events < self.max_events
                            and self._bytes + nbytes <= self.max_bytes
                        )
                    )
                )
            if (
                (not self.block)
                and name in EVENT_DOCUMENTS
                and (self._events + 1 > self.max_events or self._bytes + nbytes > self.max_bytes)
            ):
                self.stats.dropped_events += 1
                self.stats.dropped_bytes += nbytes
                self.stats.dropped_by_run[run_key] = self.stats.dropped_by_run.get(run_key, 0) + 1
                marker = {
                    "name": name,
                    "doc_uid": doc.get("uid"),
                    "seq_num": doc.get("seq_num"),
                    "descriptor": doc.get("descriptor"),
                    "nbytes": nbytes,
                }
                self._append(target, "dropped", marker, 0, is_event=False)
                log.warning(
                    "analysis queue full (%d events, %.0f MB waiting): "
                    "dropped %s seq_num=%s of run %s",
                    self._events,
                    self._bytes / 1e6,
                    name,
                    doc.get("seq_num"),
                    run_key[:8],
                )
                return False
            self._append(target, name, doc, nbytes, is_event=name in EVENT_DOCUMENTS)
            self.stats.accepted += 1
            return True

    def _append(
        self, target: Target, name: str, doc: Mapping[str, Any], nbytes: int, *, is_event: bool
    ) -> None:
        self._items.append((target, name, doc, nbytes))
        self._events += is_event
        self._bytes += nbytes
        self._unfinished += 1
        self.stats.max_depth = max(self.stats.max_depth, len(self._items))
        self._cond.notify_all()

    def get(self, timeout: float | None = None) -> tuple[Target, str, Mapping[str, Any]] | None:
        """Remove and return the oldest item, or None after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout=timeout):
                return None
            target, name, doc, nbytes = self._items.popleft()
            self._events -= name in EVENT_DOCUMENTS
            self._bytes -= nbytes
            self._cond.notify_all()  # room for a blocked producer
            return target, name, doc

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until an item is queued (without removing it); False after ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._items), timeout=timeout)

    def __len__(self) -> int:
        return len(self._items)

    def count_bypass(self) -> None:
        """Count a document handed on directly, without waiting here (the queue was empty)."""
        with self._cond:
            self.stats.accepted += 1
            self.stats.processed += 1

    def task_done(self) -> None:
        """Mark one item returned by :meth:`get` as processed."""
        with self._cond:
            self._unfinished -= 1
            self.stats.processed += 1
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every accepted item was processed; return False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unfinished == 0, timeout=timeout)


def lower_thread_priority(nice: int | str) -> None:
    """Lower the calling thread's priority (Linux: a thread is a task); log failures.

    ``nice``: added to the thread's niceness, or ``"idle"`` for the ``SCHED_IDLE`` policy (the
    thread runs only on a core nothing else wants).
    """
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        log.info("thread priorities are not supported here: the analysis runs at normal priority")
        return
    tid = threading.get_native_id()
    try:
        if nice == "idle":
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        else:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(current + int(nice), 19))
    except (AttributeError, OSError) as err:
        log.warning("could not lower the analysis thread's priority: %s", err)


class QueueThread(threading.Thread):
    """A daemon thread that handles the ``(target, name, doc)`` items of a :class:`DocumentQueue`.

    It runs until :meth:`stop` is called and the queue is drained. Each item is handed to
    :meth:`_call` (what a subclass does with it), timed into ``busy_seconds`` and marked done,
    whatever happens inside.
    """

    def __init__(self, queue: DocumentQueue, *, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.queue = queue
        self.busy_seconds = 0.0
        self._stop_requested = threading.Event()

    def _stopping(self) -> bool:
        return self._stop_requested.is_set() and self.queue.join(timeout=0)

    def _handle(self, item: tuple) -> None:
        target, name, doc = item
        t0 = time.perf_counter()
        try:
            self._call(target, name, doc)
        finally:
            self.busy_seconds += time.perf_counter() - t0
            self.queue.task_done()

    def _call(self, target: Callable, name: str, doc: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def stop(self, timeout: float | None = None) -> None:
        """Handle what is queued, then end the thread."""
        self._stop_requested.set()
        self.join(timeout)


class AnalysisWorker(QueueThread):
    """The one thread that runs the analysis, so the RunEngine's thread only enqueues.

    Each item's target is called in order. An exception in a target is logged with its traceback,
    counted, and reported to the target through ``target.fail(exc)`` when it has one (the run's
    processor then stops analysing that run and says so); it never stops the worker.
    """

    def __init__(
        self,
        queue: DocumentQueue,
        *,
        name: str = "txm-streamer-analysis",
        nice: int | str = 0,
    ) -> None:
        super().__init__(queue, name=name)
        self.nice = nice

    def run(self) -> None:
        if self.nice == "idle" or int(self.nice) > 0:
            lower_thread_priority(self.nice)
        while not self._stopping():
            item = self.queue.get(timeout=0.1)
            if item is not None:
                self._handle(item)

    def _call(self, target: Callable, name: str, doc: Mapping[str, Any]) -> None:
        try:
            target(name, doc)
        except Exception as exc:
            self.queue.stats.errors += 1
            log.exception("analysis of a %r document failed", name)
            fail = getattr(target, "fail", None)
            if fail is not None:
                try:
                    fail(exc)
                except Exception:
                    log.exception("reporting the failure of %r also failed", target)
