"""What ``bench_live`` subscribes to a RunEngine besides ``XanesAnalyzer`` itself.

:class:`RemoteAnalyzer`
    The analyzer in another process, fed through bluesky's 0MQ ``Publisher`` -> ``Proxy`` ->
    ``RemoteDispatcher`` with a msgpack serializer (:func:`pack_document`: arrays as raw bytes,
    no pickle), as a facility's document proxy would feed it.
:class:`IdleCompetitor`
    No analysis at all: another process at ``SCHED_IDLE`` that runs a fixed load only while a
    scan runs (between its ``start`` and ``stop`` documents): ``"cpu"`` (a Python counting loop,
    no memory traffic) or ``"memory"`` (numpy streaming 2 x 32 MB arrays). It tells what the
    machine charges the RunEngine for work on its other core, apart from any analysis: scheduling
    (the CPU load) or the memory system the cores share (the memory load).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


# -- msgpack documents (no pickle on the wire) -----------------------------------------------
def pack_document(doc: dict) -> bytes:
    """msgpack a bluesky document; numpy arrays travel as dtype, shape and raw bytes."""
    import msgpack

    return msgpack.packb(doc, default=_encode, use_bin_type=True)


def unpack_document(data: bytes) -> dict:
    """Inverse of :func:`pack_document`."""
    import msgpack

    return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            return obj.tolist()
        arr = np.ascontiguousarray(obj)
        return {"__ndarray__": [arr.dtype.str, list(arr.shape)], "data": arr.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot msgpack a {type(obj).__name__}")


def _decode(obj: dict) -> Any:
    spec = obj.get("__ndarray__")
    if spec is None:
        return obj
    return np.frombuffer(obj["data"], dtype=np.dtype(spec[0])).reshape(spec[1])


# -- the analyzer in another process ----------------------------------------------------------
def remote_analyzer_main(nice: int = 0) -> None:
    """Child process: a 0MQ proxy, a ``RemoteDispatcher`` and a ``XanesAnalyzer``.

    Protocol on stdout, one JSON line each: ``{"addresses": [in, out]}`` once the proxy is bound,
    ``{"ready": true}`` at the first ping (a ``start`` document with ``bench_control="ping"``),
    ``{"flushed": stats, "flagged": {run uid: particle ids}}`` after each ``stop`` with
    ``bench_control="flush"``; a ``stop`` with ``bench_control="exit"`` ends the process.
    ``nice`` lowers the whole process's priority (proxy included, unlike a facility's proxy).
    """
    if nice > 0:
        os.nice(nice)
    import asyncio

    from bluesky.callbacks.zmq import Proxy, RemoteDispatcher

    from callbacks import XanesAnalyzer

    logging.basicConfig(level=logging.ERROR)
    proxy = Proxy("tcp://127.0.0.1", "tcp://127.0.0.1")  # loopback, random ports
    threading.Thread(target=proxy.start, daemon=True).start()
    print(json.dumps({"addresses": [proxy.in_port, proxy.out_port]}), flush=True)
    analyzer = XanesAnalyzer(alerts=None, report=False)
    dispatcher = RemoteDispatcher(proxy.out_port, deserializer=unpack_document)
    ready = False

    def route(name: str, doc: dict) -> None:
        nonlocal ready
        control = doc.get("bench_control")
        if control is None:
            analyzer(name, doc)
        elif control == "ping" and not ready:
            ready = True
            print(json.dumps({"ready": True}), flush=True)
        elif control == "flush":
            analyzer.flush()
            print(
                json.dumps({"flushed": analyzer.stats, "flagged": analyzer.run_flags()}), flush=True
            )
        elif control == "exit":
            for task in asyncio.all_tasks(dispatcher.loop):
                task.cancel()

    dispatcher.subscribe(route)
    try:
        dispatcher.start()
    except asyncio.CancelledError:  # "exit"
        pass
    analyzer.close()


class RemoteAnalyzer:
    """The benchmark side of :func:`remote_analyzer_main`: a ``Publisher`` to subscribe."""

    def __init__(self, timeout: float = 120.0, *, nice: int = 0) -> None:
        from bluesky.callbacks.zmq import Publisher

        self.timeout = timeout
        code = f"from bench.live_sinks import remote_analyzer_main as m; m({int(nice)})"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        in_address, _ = self._expect("addresses")
        self.publisher = Publisher(in_address, serializer=pack_document)
        deadline = time.monotonic() + timeout
        while True:  # PUB drops what it sends before the connection is up: ping until heard
            self.publisher("start", {"bench_control": "ping"})
            try:
                self._expect("ready", timeout=0.1)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        self.flagged: dict[str, list[int]] = {}  # run uid -> flagged particles, at flush

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._lines.put(json.loads(line))

    def _expect(self, key: str, timeout: float | None = None) -> Any:
        return self._expect_message(key, timeout)[key]

    def _expect_message(self, key: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                msg = self._lines.get(timeout=max(deadline - time.monotonic(), 1e-3))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"remote analyzer exited ({self.proc.returncode})") from None
                raise TimeoutError(f"remote analyzer: no {key!r} within the timeout") from None
            if key in msg:
                return msg

    def __call__(self, name: str, doc: dict) -> None:
        self.publisher(name, doc)

    def flush(self) -> dict:
        """Wait until the remote analyzer has analysed everything sent; its counters."""
        self.publisher("stop", {"bench_control": "flush"})
        msg = self._expect_message("flushed")
        self.flagged = msg["flagged"]
        return msg["flushed"]

    def close(self) -> None:
        self.publisher("stop", {"bench_control": "exit"})
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.publisher.close()
        self.proc.stdout.close()


# -- a load on the other core, no analysis ------------------------------------------------------
COMPETITOR_LOADS = {
    "cpu": "x = 0\nwhile True:\n    x += 1\n",
    "memory": (
        "import numpy as np\n"
        "a = np.ones(8_000_000, np.float32); b = np.empty_like(a)\n"
        "while True:\n"
        "    np.multiply(a, 1.0001, out=b); np.multiply(b, 0.9999, out=a)\n"
    ),
}


class IdleCompetitor:
    """A ``SCHED_IDLE`` process running ``load`` (:data:`COMPETITOR_LOADS`) during each scan.

    Subscribed like an analyzer; the process is stopped (``SIGSTOP``) outside scans.
    """

    backend = "competitor"

    def __init__(self, load: str) -> None:
        if load not in COMPETITOR_LOADS:
            raise ValueError(f"load must be one of {sorted(COMPETITOR_LOADS)}, not {load!r}")
        code = (
            "import os\n"
            "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
            "print('ready', flush=True)\n" + COMPETITOR_LOADS[load]
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        self.proc.stdout.readline()  # started and idle-scheduled
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.stats = {"dropped_events": 0}

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            os.kill(self.proc.pid, signal.SIGCONT)
        elif name == "stop":
            os.kill(self.proc.pid, signal.SIGSTOP)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def run_flags(self) -> dict:
        return {}

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
