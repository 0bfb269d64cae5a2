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
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq

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
        The ``options`` message of :mod:`callbacks.process_child` (analyzer and session options,
        ``nice``), JSON-like.
    alerts
        Called with each alert dict the child sends (on this object's receiving thread); its
        exceptions are logged and counted in :attr:`sink_errors`.
    start_timeout
        Seconds to wait for the child to import the analysis and answer.
    """

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        alerts: Callable[[dict], Any] | None = None,
        start_timeout: float = 120.0,
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
        if not self._ready.wait(start_timeout):
            self._shutdown()
            raise AnalysisProcessError(
                f"the analysis process did not start within {start_timeout} s "
                f"(exit code {self.proc.poll()})"
            )

    @property
    def alive(self) -> bool:
        """Whether the child process is running."""
        return self.proc.poll() is None

    # -- parent -> child -------------------------------------------------------------------
    def send(self, kind: str, name: str, doc: Mapping[str, Any], depth: float = 0.0) -> None:
        """Send one message, waiting while 0MQ is full; raise if the child is gone."""
        data = dumps([kind, name, doc, depth])
        while not self._docs.poll(200, zmq.POLLOUT):
            if not self.alive or self._closed.is_set():
                raise AnalysisProcessError(
                    f"the analysis process is gone (exit code {self.proc.poll()}): "
                    f"a {name!r} document was not analysed"
                )
        self._docs.send(data, copy=False)

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
