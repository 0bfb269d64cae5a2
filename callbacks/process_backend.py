"""The RunEngine's side of ``XanesAnalyzer(backend="process")``: forward documents to a child.

The analysis then never shares an interpreter (a GIL) or a scheduling priority with the
RunEngine. On the RunEngine's thread a document only enters the analyzer's bounded
:class:`~callbacks.worker.DocumentQueue` (the overload policy of :mod:`callbacks.worker` holds
unchanged: control documents always, events dropped and marked when it is full). One forwarding
thread serialises each document with :mod:`streamer.wire` (msgpack, arrays as raw bytes, never
pickle) and sends it over a 0MQ ``PUSH`` socket on 127.0.0.1 to the analysis process
(:mod:`callbacks.process_child`), which runs at lower priority (``nice``) with one BLAS/OpenMP
thread. A second thread receives the child's alerts and hands them to the user's ``alerts``
callable, in this process, so an :class:`~streamer.alerts.AlertPublisher` works unchanged.

Only a few messages wait in 0MQ (``SEND_HWM``): when the child falls behind, the backlog stays in
the analyzer's queue, where the overload policy sees it.

Detector frames travel out of band: a message is one msgpack frame (:func:`streamer.wire.dumps`
of ``[kind, name, doc, depth, arrays]``, the document without its array data values) followed by
one 0MQ frame per array, sent from the array's own memory (no copy, no GIL held while 0MQ's I/O
thread writes it). Serialising the frames in-band cost the forwarding thread about 1.3 ms of GIL
per 640 kB event, 0.27 s per 256x256 scan, taken from the RunEngine.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from callbacks.worker import DocumentQueue, QueueThread
from streamer.wire import dumps, loads

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
SEND_HWM = 4
"""Messages allowed to wait in 0MQ between the processes."""
THREAD_LIMITS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class AnalysisProcessError(RuntimeError):
    """The analysis process could not be started, or died."""


class AnalysisProcess:
    """A child process running the analysis, and the two sockets that talk to it.

    Parameters
    ----------
    options
        The ``options`` message of :mod:`callbacks.process_child` (analyzer and session options),
        JSON-like.
    alerts
        Called with each alert dict the child sends (on this object's receiving thread); its
        exceptions are logged and counted in :attr:`sink_errors`.
    start_timeout
        Seconds to wait for the child to import the analysis and answer.
    nice
        The child's scheduling priority below this process's: a niceness increment or
        ``"idle"`` (``SCHED_IDLE``), applied by the child before it starts any thread.
    """

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        alerts: Callable[[dict], Any] | None = None,
        start_timeout: float = 120.0,
        nice: int | str = 0,
    ) -> None:
        self.alerts = alerts
        self.sink_errors = 0
        self.last_report: dict[str, Any] = {"stats": {}, "flagged": {}}
        self._context = zmq.Context()
        self._docs = self._context.socket(zmq.PUSH)
        self._docs.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._docs.setsockopt(zmq.LINGER, 0)
        docs_port = self._docs.bind_to_random_port("tcp://127.0.0.1")
        self._replies = self._context.socket(zmq.PULL)
        replies_port = self._replies.bind_to_random_port("tcp://127.0.0.1")
        env = {**os.environ, **dict.fromkeys(THREAD_LIMITS, "1")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "callbacks.process_child",
                f"tcp://127.0.0.1:{docs_port}",
                f"tcp://127.0.0.1:{replies_port}",
                str(nice),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        self._tokens = itertools.count(1)
        self._answered: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._receiver = threading.Thread(
            target=self._receive, name="txm-streamer-alerts", daemon=True
        )
        self._receiver.start()
        self.send("options", "options", dict(options))
        deadline = time.monotonic() + start_timeout
        while not self._ready.wait(0.1) and self.alive and time.monotonic() < deadline:
            pass
        if not self._ready.is_set():
            self._shutdown()
            raise AnalysisProcessError(
                f"the analysis process did not start within {start_timeout} s "
                f"(exit code {self.proc.returncode})"
            )

    @property
    def alive(self) -> bool:
        """Whether the child process is running."""
        return self.proc.poll() is None

    # -- parent -> child -------------------------------------------------------------------
    def send(self, kind: str, name: str, doc: Mapping[str, Any], depth: float = 0.0) -> None:
        """Send one message, waiting while 0MQ is full; raise if the child is gone."""
        frames = encode_message(kind, name, doc, depth)
        while not (self.alive and self._docs.poll(200, zmq.POLLOUT)):
            if not self.alive or self._closed.is_set():
                raise AnalysisProcessError(
                    f"the analysis process is gone (exit code {self.proc.poll()}): "
                    f"a {name!r} document was not analysed"
                )
        self._docs.send_multipart(frames, copy=False)

    def try_send(self, kind: str, name: str, doc: Mapping[str, Any], depth: float = 0.0) -> bool:
        """Send one message if 0MQ has room right now; never waits."""
        try:
            frames = encode_message(kind, name, doc, depth)
            self._docs.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def request(self, kind: str, send: Callable[[dict], Any]) -> tuple[threading.Event, int]:
        """Ask for a ``flush`` or ``close`` report through ``send(doc)``; an event set on answer."""
        token = next(self._tokens)
        answered = threading.Event()
        with self._lock:
            self._answered[token] = answered
        send({"token": token})
        return answered, token

    # -- child -> parent -------------------------------------------------------------------
    def _receive(self) -> None:
        while not self._closed.is_set():
            if not self._replies.poll(200):
                if not self.alive and not self._closed.is_set():
                    log.error("the analysis process exited (%s)", self.proc.returncode)
                    self._wake_all()
                    return
                continue
            try:
                kind, payload = loads(self._replies.recv())
            except Exception:
                log.exception("unreadable message from the analysis process: ignored")
                continue
            if kind == "alert":
                self._deliver(payload)
            elif kind == "ready":
                self._ready.set()
            elif kind in ("flushed", "closed"):
                self.last_report = payload
                with self._lock:
                    answered = self._answered.pop(payload.get("token"), None)
                if answered is not None:
                    answered.set()
                if kind == "closed":
                    return
            else:
                log.error("unknown message %r from the analysis process: ignored", kind)

    def _deliver(self, alert: dict) -> None:
        if self.alerts is None:
            return
        try:
            self.alerts(alert)
        except Exception:
            self.sink_errors += 1
            log.exception("the alert sink failed on a %s alert", alert.get("kind"))

    def _wake_all(self) -> None:
        with self._lock:
            for answered in self._answered.values():
                answered.set()
            self._answered.clear()

    # -- end ---------------------------------------------------------------------------------
    def wait(self, timeout: float | None) -> None:
        """Wait for the child to exit after ``close``; kill it after ``timeout`` seconds."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the analysis process did not exit within %s s: killed", timeout)
            self.proc.kill()
            self.proc.wait()
        self._shutdown()

    def _shutdown(self) -> None:
        self._closed.set()
        if self.alive:
            self.proc.kill()
            self.proc.wait()
        self._receiver.join(5)
        self._wake_all()
        self._docs.close(linger=0)
        self._replies.close(linger=0)
        self._context.term()


class DocumentForwarder(QueueThread):
    """Hands documents to an :class:`AnalysisProcess`, from the caller's thread when it can.

    :meth:`put`, on the RunEngine's thread, sends a document straight away when nothing waits in
    ``queue`` and 0MQ has room (a few tens of microseconds, no other thread woken, so no GIL
    hand-over); otherwise it enters ``queue`` (overload policy of :mod:`callbacks.worker`) and
    this thread sends it, waiting for room. Both paths send under one lock and the direct one
    only when the queue is empty, so documents keep their order. Items are
    ``(target, name, doc)`` as for :class:`~callbacks.worker.AnalysisWorker`: ``target(name,
    doc)`` sends.
    """

    def __init__(
        self, queue: DocumentQueue, process: AnalysisProcess, *, name: str = "txm-streamer-forward"
    ) -> None:
        super().__init__(queue, name=name)
        self.process = process
        self._lock = threading.Lock()

    def depth(self) -> float:
        """The backlog the child's analysis degrades on (0 when blocking: replay)."""
        return 0.0 if self.queue.block else self.queue.depth

    def put(self, name: str, doc: Mapping[str, Any], *, run_key: str = "") -> None:
        """Forward one document; never waits unless the queue is blocking (replay)."""
        if self._lock.acquire(blocking=False):
            try:
                if not len(self.queue) and self.process.try_send("doc", name, doc, self.depth()):
                    self.queue.count_bypass()
                    return
            finally:
                self._lock.release()
        self.queue.put(self._send_doc, name, doc, run_key=run_key)

    def _send_doc(self, name: str, doc: Mapping[str, Any]) -> None:
        self.process.send("doc", name, doc, self.depth())

    def run(self) -> None:
        while not self._stopping():
            if not self.queue.wait(timeout=0.1):
                continue
            with self._lock:
                item = self.queue.get(timeout=0)
                if item is not None:
                    self._handle(item)

    def _call(self, target: Callable, name: str, doc: Mapping[str, Any]) -> None:
        try:
            target(name, doc)
        except AnalysisProcessError as err:
            self.queue.stats.errors += 1
            if self.queue.stats.errors == 1:  # once: the child is gone for good
                log.error("%s; further documents are counted, not logged", err)
        except Exception:
            self.queue.stats.errors += 1
            log.exception("a %r document could not be sent to the analysis process", name)


def handler_paths(registry: Mapping[str, Any]) -> dict[str, str]:
    """``spec -> "module:qualname"`` of each handler class, to import in the child."""
    paths = {}
    for spec, handler in registry.items():
        module = getattr(handler, "__module__", None)
        qualname = getattr(handler, "__qualname__", "")
        if not module or "<" in qualname:
            raise ValueError(
                f"handler {handler!r} for spec {spec!r} must be importable (a module-level class) "
                "to be used with backend='process'"
            )
        paths[spec] = f"{module}:{qualname}"
    return paths


def encode_message(kind: str, name: str, doc: Mapping[str, Any], depth: float) -> list:
    """0MQ frames of one message: msgpack header, then each array data value's own buffer."""
    data = doc.get("data") if isinstance(doc, Mapping) else None
    arrays: list[np.ndarray] = []
    specs: list[list] = []
    if isinstance(data, Mapping) and any(type(v) is np.ndarray for v in data.values()):
        inline = {}
        for key, value in data.items():
            if type(value) is np.ndarray and not value.dtype.hasobject:
                arr = np.ascontiguousarray(value)
                specs.append([key, arr.dtype.str, list(arr.shape)])
                arrays.append(arr)
            else:
                inline[key] = value
        doc = {**doc, "data": inline}
    return [dumps([kind, name, doc, depth, specs]), *(memoryview(a).cast("B") for a in arrays)]


def decode_message(frames: list) -> tuple[str, str, dict, float]:
    """Inverse of :func:`encode_message`; arrays come back read-only, sharing the frames' memory."""
    header = frames[0]
    kind, name, doc, depth, specs = loads(header if isinstance(header, bytes) else header.bytes)
    if len(specs) != len(frames) - 1:
        raise ValueError(f"message announces {len(specs)} arrays but has {len(frames) - 1}")
    if specs:
        data = doc["data"]
        for (key, dtype, shape), frame in zip(specs, frames[1:], strict=True):
            buffer = getattr(frame, "buffer", frame)
            data[key] = np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape)
    return kind, name, doc, depth
