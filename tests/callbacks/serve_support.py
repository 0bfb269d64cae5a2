"""Helpers for the ``txm-streamer serve`` tests: real processes on 127.0.0.1, free ports.

Not a test module (fixtures in ``conftest.py``): it holds the RunEngine script the tests write into
their tmp dir (a simulated survey published through the 0MQ proxy with :func:`streamer.wire.dumps`,
optionally archived, with file gates the test opens), and small process and subscriber helpers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamer.alerts import AlertSubscriber

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 180.0

RUNENGINE_SCRIPT = r'''
"""RunEngine process for the serve tests: a simulated survey published through the 0MQ proxy.

Run as ``python serve_runengine.py CONFIG.json``. CONFIG keys: ``proxy_in`` ("host:port"),
``catalog`` (directory or null), ``workdir``, ``n_fovs``, ``anomalies`` (make_survey's
``anomalies_per_survey``), ``seed``, and ``gates``: a list of ``{"run": i, "event": k, "name": n}``
(pause on the k-th primary event of run i; ``"event": "stop"`` pauses after run i's stop
document). At a gate the script writes ``WORKDIR/<n>.paused`` and waits until
``WORKDIR/<n>.go`` exists (bounded), so the test decides when the RunEngine goes on. The uids of
the runs go to ``WORKDIR/uids.json`` at the end. Before the survey (until ``WORKDIR/start.go``)
and at every gate, it sends probe runs (not XANES), so the test can wait until documents reach
the service before it lets the RunEngine go on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

GATE_TIMEOUT_S = 120.0


def wait_for_file(path: Path, probe) -> None:
    """Wait (bounded) for ``path``; meanwhile send probe runs, so that the test can tell when the
    documents reach the service (ZeroMQ PUB drops what it sends before a subscriber is connected).
    """
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no {path.name} within {GATE_TIMEOUT_S} s")
        probe()
        time.sleep(0.1)


class Probe:
    """Publishes a tiny run that is not XANES (the analyzer ignores it; the service counts it)."""

    def __init__(self, publisher):
        self.publisher = publisher
        self.n = 0

    def __call__(self):
        self.n += 1
        uid = f"probe-{os.getpid()}-{self.n}"
        self.publisher("start", {"uid": uid, "time": time.time(), "plan_name": "probe"})
        self.publisher("stop", {"uid": uid + "-stop", "run_start": uid, "time": time.time(),
                                "exit_status": "success", "num_events": {}})


class Gate:
    """A RunEngine callback that blocks at the configured documents until a file appears."""

    def __init__(self, gates, workdir: Path, probe, archiver=None):
        self.gates = gates
        self.workdir = workdir
        self.probe = probe
        self.archiver = archiver
        self.run_index = -1
        self.primary = set()
        self.n_primary = 0

    def _wait(self, name: str) -> None:
        if self.archiver is not None:
            self.archiver.flush(timeout=60)
        (self.workdir / f"{name}.paused").write_text("paused")
        wait_for_file(self.workdir / f"{name}.go", self.probe)

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self.run_index += 1
            self.n_primary = 0
        elif name == "descriptor" and doc.get("name") == "primary":
            self.primary.add(doc["uid"])
        elif name == "event" and doc.get("descriptor") in self.primary:
            self.n_primary += 1
        for gate in self.gates:
            if gate["run"] != self.run_index:
                continue
            if (name == "event" and gate["event"] == self.n_primary and doc.get("descriptor")
                    in self.primary) or (name == "stop" and gate["event"] == "stop"):
                self._wait(gate["name"])


def main(config_path: str) -> None:
    from bluesky import RunEngine
    from bluesky.callbacks.zmq import Publisher

    from callbacks.handlers import HANDLER_REGISTRY
    from sim.instrument import SimulatedTXM
    from sim.plans import survey
    from sim.sample import make_survey
    from sim.spectra import SEED_ENERGIES_EV
    from streamer.wire import dumps

    config = json.loads(Path(config_path).read_text())
    workdir = Path(config["workdir"])
    fovs = make_survey(
        n_fovs=config["n_fovs"], shape=(64, 64), seed=config["seed"], n_particles=4,
        anomalies_per_survey=config["anomalies"],
    )
    txm = SimulatedTXM(fov=fovs[0], seed=config["seed"], data_dir=workdir / "frames")
    RE = RunEngine({})
    publisher = Publisher(config["proxy_in"], serializer=dumps)
    RE.subscribe(publisher)
    probe = Probe(publisher)
    archiver = None
    if config.get("catalog"):
        from streamer.archive import Archiver

        archiver = Archiver(config["catalog"], handler_registry=HANDLER_REGISTRY)
        RE.subscribe(archiver)
    RE.subscribe(Gate(config["gates"], workdir, probe, archiver))
    wait_for_file(workdir / "start.go", probe)
    eng_kev = list(SEED_ENERGIES_EV[::2] / 1000.0)
    uids = RE(survey(txm, fovs, eng_list=eng_kev, chunk_size=2))
    if archiver is not None:
        archiver.close()
    (workdir / "uids.json").write_text(json.dumps(list(uids)))


if __name__ == "__main__":
    main(sys.argv[1])
'''


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(pair: bool = False) -> int:
    """A free TCP port on 127.0.0.1 (with ``pair``, also the next one), outside the ephemeral range.

    Outside, because a client reconnecting to a port of the ephemeral range while nothing listens
    there (a killed service) can be handed that very port as its own source port and connect to
    itself; it then never reaches the restarted service.
    """
    low, high = _ephemeral_range()
    candidates = [p for p in range(20_000, 30_000) if not low <= p <= high + 1]
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for port in rng.sample(candidates, 200):
        try:
            for candidate in (port, port + 1) if pair else (port,):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port (pair) on 127.0.0.1 between 20000 and 30000")


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded); return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Processes:
    """Start processes with their output in files; stop (then kill) the survivors at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        out = open(self.workdir / f"{name}.log", "ab")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        out.close()
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Campaign:
    """The proxy, the RunEngine script and the serve command of one test, on free ports."""

    def __init__(
        self,
        workdir: Path,
        procs: Processes,
        *,
        n_fovs: int,
        anomalies: list,
        gates: list,
        catalog: bool = False,
        seed: int = 3,
    ) -> None:
        self.workdir, self.procs = workdir, procs
        self.proxy_in, self.proxy_out = free_port(), free_port()
        self.alert_port = free_port(pair=True)
        self.endpoint = f"tcp://127.0.0.1:{self.alert_port}"
        self.out = workdir / "out"
        self.catalog = workdir / "catalog" if catalog else None
        script = workdir / "runengine.py"
        script.write_text(RUNENGINE_SCRIPT)
        config = {
            "proxy_in": f"127.0.0.1:{self.proxy_in}",
            "catalog": str(self.catalog) if catalog else None,
            "workdir": str(workdir),
            "n_fovs": n_fovs,
            "seed": seed,
            "anomalies": anomalies,
            "gates": gates,
        }
        (workdir / "config.json").write_text(json.dumps(config))
        self.service: subprocess.Popen | None = None
        self.n_services = 0

    def start_proxy(self) -> None:
        self.procs.start("proxy", [
            str(Path(sys.executable).parent / "bluesky-0MQ-proxy"),
            "--in-address", f"127.0.0.1:{self.proxy_in}",
            "--out-address", f"127.0.0.1:{self.proxy_out}",
        ])  # fmt: skip

    def start_runengine(self) -> subprocess.Popen:
        return self.procs.start(
            "runengine", [sys.executable, str(self.workdir / "runengine.py"),
                          str(self.workdir / "config.json")]
        )  # fmt: skip

    def start_service(
        self, *extra: str, while_waiting: Callable[[], Any] = lambda: None
    ) -> subprocess.Popen:
        """Start ``txm-streamer serve`` and wait until it reports ``live``.

        ``while_waiting`` runs at every poll: pass a subscriber's pump, since a ZeroMQ socket
        (re)connects and (re)subscribes only while its owner thread calls into it.
        """
        status = self.out / "serve-status.json"
        status.unlink(missing_ok=True)
        args = [sys.executable, "-m", "streamer.cli", "-v", "serve",
                "--source", f"zmq://127.0.0.1:{self.proxy_out}", "--out", str(self.out),
                "--endpoint", self.endpoint, "--status-interval", "0.5", *extra]  # fmt: skip
        if self.catalog is not None:
            args += ["--catalog", str(self.catalog)]
        self.n_services += 1
        self.service = self.procs.start(f"serve{self.n_services}", args)
        wait_for(
            lambda: while_waiting() or self.status().get("state") == "live"
            or self.service.poll() is not None,
            "the service to go live",
        )  # fmt: skip
        assert self.service.poll() is None, self.procs.log(f"serve{self.n_services}")
        return self.service

    def wait_connected(self) -> None:
        """Wait until the running service has received documents (the RunEngine's probes)."""
        pid = self.service.pid
        wait_for(
            lambda: self.status().get("pid") == pid and self.status().get("received_documents"),
            "documents to reach the service",
        )

    def status(self) -> dict:
        try:
            return json.loads((self.out / "serve-status.json").read_text())
        except (OSError, ValueError):
            return {}

    def gate_paused(self, name: str) -> bool:
        return (self.workdir / f"{name}.paused").exists()

    def open_gate(self, name: str) -> None:
        (self.workdir / f"{name}.go").write_text("go")


class Collector:
    """An :class:`AlertSubscriber` pumped by the test: every alert received, in order."""

    def __init__(self, endpoint: str) -> None:
        self.sub = AlertSubscriber(endpoint, heartbeat_timeout=30.0)
        self.alerts: list[dict] = []

    def pump(self, seconds: float = 0.1) -> None:
        deadline = time.monotonic() + seconds
        while True:
            alert = self.sub.recv(timeout=max(0.0, deadline - time.monotonic()))
            if alert is None:
                return
            self.alerts.append(alert)

    def wait(self, predicate: Callable[[dict], bool], what: str, timeout: float = DEADLINE_S):
        """Pump until an alert satisfying ``predicate`` was received; return it."""

        def found():
            self.pump(0.2)
            return next((a for a in self.alerts if predicate(a)), None)

        return wait_for(found, what, timeout)

    def wait_synced(self) -> None:
        wait_for(lambda: self.pump(0.2) or self.sub.synced, "the subscriber to sync")

    def close(self) -> None:
        self.sub.close()


def state_key(alert: dict) -> tuple:
    """What must never be received twice: fingerprint, status, severity, provisional."""
    return (alert["fingerprint"], alert["status"], alert["severity"], alert["provisional"])
