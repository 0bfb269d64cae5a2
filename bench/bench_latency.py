"""Event-to-alert latency of the live analyzer.

``alert_latency_p95_s``
    From the moment the event document that made a decision possible was emitted (the flat of the
    energy index the alert was decided at, timed by a callback subscribed before the analyzer) to
    receipt by an :class:`streamer.alerts.AlertSubscriber` in another process, at 512x512 frames
    (external HDF5 data, as at the beamline), with several planted anomalies per field. Reported
    unpaced (simulator flat out) and paced. Each decision also records where its time went: waiting
    in the analyzer's queue (``wait_s``), the evaluation (``evaluate_s``) and the socket
    (``transport_s``); the medians of the evaluations' durations are given over all of them, the
    provisional ones (that decisions wait for) and the final ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_live import ROOT, paced

# -- latency ------------------------------------------------------------------------------------
SUBSCRIBER = """
import json, sys, time
from streamer.alerts import AlertSubscriber
endpoint, n_runs, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
summaries, deadline = 0, time.monotonic() + limit
with AlertSubscriber(endpoint, heartbeat_timeout=60.0) as sub:
    print(json.dumps({"subscribed": True}), flush=True)
    while summaries < n_runs and time.monotonic() < deadline:
        alert = sub.recv(timeout=1.0)
        if alert is None:
            continue
        received = time.time()
        summaries += alert["kind"] == "scan_summary"
        particle = alert.get("particle") or {}
        print(json.dumps({"received": received, "time": alert["time"], "kind": alert["kind"],
                          "status": alert.get("status"), "run_uid": alert.get("run_uid"),
                          "particle": particle.get("id"), "energy_index": alert.get("energy_index"),
                          "provisional": alert.get("provisional")}), flush=True)
"""


class EventClock:
    """Subscribed before the analyzer: when each ``primary``/``flat`` event of a run was emitted."""

    def __init__(self) -> None:
        self.streams: dict[str, tuple[str, str]] = {}  # descriptor uid -> (run uid, stream)
        self.times: dict[tuple[str, str, int], float] = {}  # (run, stream, seq_num) -> time
        self.stops: dict[str, float] = {}

    def __call__(self, name: str, doc: dict) -> None:
        now = time.time()
        if name == "event":
            run, stream = self.streams.get(doc["descriptor"], ("?", "?"))
            self.times[(run, stream, doc["seq_num"])] = now
        elif name == "descriptor":
            self.streams[doc["uid"]] = (doc["run_start"], doc.get("name"))
        elif name == "stop":
            self.stops[doc["run_start"]] = now

    def energy_complete(self, run: str, energy_index: int) -> float | None:
        """When both the sample and the flat of ``energy_index`` had been emitted."""
        seq = energy_index + 1
        got = [self.times.get((run, s, seq)) for s in ("primary", "flat")]
        return max(got) if all(got) else None


class _EvaluationTimer:
    """While active, record when each ``RunAnalysis.evaluate`` call began and ended."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self._original = None

    def __enter__(self) -> _EvaluationTimer:
        from streamer.run_analysis import RunAnalysis

        original = self._original = RunAnalysis.evaluate
        records = self.records

        def timed(analysis, *args, **kwargs):
            t0 = time.time()
            ev = original(analysis, *args, **kwargs)
            records.append(
                {
                    "run": analysis.info.run_uid,
                    "begin": t0,
                    "end": time.time(),
                    "energy_index": getattr(ev, "energy_index", None),
                    "final": kwargs.get("final"),
                }
            )
            return ev

        RunAnalysis.evaluate = timed
        return self

    def __exit__(self, *exc: object) -> None:
        from streamer.run_analysis import RunAnalysis

        RunAnalysis.evaluate = self._original

    def began(self, run: str, energy_index: int, *, before: float) -> float | None:
        """When the evaluation of ``run`` at ``energy_index`` that alerted at ``before`` began."""
        hits = [
            r["begin"]
            for r in self.records
            if r["run"] == run and r["energy_index"] == energy_index and r["begin"] <= before
        ]
        return max(hits) if hits else None

    def durations(self, *, kind: str = "all") -> list[float]:
        """Durations of the evaluations: ``"all"``, ``"provisional"`` (those that gave a result
        before the end of the scan: the ones decisions wait for) or ``"final"``."""
        keep = {
            "all": lambda r: True,
            "provisional": lambda r: r["energy_index"] is not None and not r["final"],
            "final": lambda r: bool(r["final"]),
        }[kind]
        return [r["end"] - r["begin"] for r in self.records if keep(r)]


def measure_latency(
    *,
    size: int,
    n_fovs: int,
    pace_s: float,
    seed: int = 21,
    anomalies_per_fov: int = 4,
    backend: str = "process",
) -> dict:
    """Event-to-receipt latency of every particle decision, in a subscriber process.

    ``backend`` is the analyzer's (``"process"``, recommended in the RunEngine's process, or
    ``"thread"``). With ``"process"`` the evaluations run in the child, so their own durations
    (``wait_s``, ``evaluate_s``) are not timed; the latency itself is measured the same way.
    """
    from bluesky import RunEngine

    from callbacks import XanesAnalyzer
    from sim.instrument import SimulatedTXM
    from sim.plans import survey
    from sim.sample import Anomaly, make_survey
    from streamer.alerts import AlertPublisher

    kinds = [("reduced", "white_line")[i % 2] for i in range(anomalies_per_fov)]
    specs = [Anomaly(k, fov=f) for f in range(n_fovs) for k in kinds]
    fovs = make_survey(
        n_fovs=n_fovs, shape=(size, size), seed=seed, anomalies_per_survey=specs, n_particles=12
    )
    for f in fovs:
        f.od([7700.0])
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        publisher = AlertPublisher("tcp://127.0.0.1:*", log_path=Path(tmp) / "alerts.jsonl")
        child = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, publisher.endpoint, str(n_fovs), "3600"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        if not publisher.wait_for_subscribers(60.0):
            child.kill()
            raise RuntimeError("the subscriber process never subscribed")
        clock = EventClock()
        evaluations = _EvaluationTimer()
        analyzer = XanesAnalyzer(alerts=publisher, report=False, backend=backend)
        txm = SimulatedTXM(fov=fovs[0], seed=seed, data_dir=Path(tmp) / "frames")
        RE = RunEngine({}, context_managers=[])
        RE.subscribe(clock)  # first: sees each document before the analyzer does
        RE.subscribe(analyzer)
        plan = survey(txm, fovs)
        if pace_s > 0:
            plan = paced(plan, txm.Andor, pace_s)
        t0 = time.perf_counter()
        with evaluations:
            RE(plan)
            scan_s = time.perf_counter() - t0
            analyzer.flush()
        out, _ = child.communicate(timeout=300)
        stats = analyzer.stats
        analyzer.close()
        publisher.close()
    received = [json.loads(line) for line in out.splitlines() if line.startswith('{"received"')]
    decisions = []
    seen = set()
    for a in received:
        if a["kind"] != "anomalous_particle" or a["status"] != "firing":
            continue
        key = (a["run_uid"], a["particle"])
        if key in seen:
            continue  # updates and confirmations of a decision already made
        seen.add(key)
        if a["provisional"]:
            emitted = clock.energy_complete(a["run_uid"], a["energy_index"])
        else:  # decided on the complete scan: made possible by the stop document
            emitted = clock.stops.get(a["run_uid"])
        if emitted is None:
            continue
        began = evaluations.began(a["run_uid"], a["energy_index"], before=a["time"])
        decisions.append(
            {
                "run": a["run_uid"][:8],
                "particle": a["particle"],
                "energy_index": a["energy_index"],
                "provisional": a["provisional"],
                "latency_s": round(a["received"] - emitted, 4),
                "wait_s": round(began - emitted, 4) if began else None,
                "evaluate_s": round(a["time"] - began, 4) if began else None,
                "transport_s": round(a["received"] - a["time"], 4),
            }
        )
    lat = np.array([d["latency_s"] for d in decisions])
    durations = evaluations.durations()

    def median(values: list[float]) -> float | None:
        return round(float(np.median(values)), 3) if values else None

    return {
        "evaluations": len(durations),
        "evaluate_median_s": median(durations),
        "evaluate_provisional_median_s": median(evaluations.durations(kind="provisional")),
        "evaluate_final_median_s": median(evaluations.durations(kind="final")),
        "decisions": decisions,
        "p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p95": float(np.percentile(lat, 95)) if lat.size else float("nan"),
        "max": float(lat.max()) if lat.size else float("nan"),
        "n": int(lat.size),
        "n_alerting_evaluations": len({(d["run"], d["energy_index"]) for d in decisions}),
        "planted": len(specs),
        "scan_s": round(scan_s, 1),
        "analyzer": stats,
        "size": size,
        "pace_s": pace_s,
        "backend": backend,
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }


# -- figures ------------------------------------------------------------------------------------
def run(*, quick: bool = False) -> dict[str, dict]:
    """``alert_latency_p95_s`` and ``_p50_s``, unpaced and paced (``quick``: 256x256, one field).

    The headline figures use ``backend="process"``, the configuration the README recommends when
    the analyzer is subscribed in the RunEngine's process (as here); ``_thread`` is the same
    unpaced measurement with the analysis on a worker thread of the RunEngine's process.
    """
    figures: dict[str, dict] = {}
    lat_size = 256 if quick else 512
    configs = (
        ("", 0.0, 1 if quick else 4, "process"),
        ("_paced", 0.25, 1 if quick else 2, "process"),
        ("_thread", 0.0, 1 if quick else 4, "thread"),
    )
    for suffix, pace, n_fovs, backend in configs:
        lat = measure_latency(size=lat_size, n_fovs=n_fovs, pace_s=pace, backend=backend)
        common = {
            "unit": "s",
            "frame": f"{lat_size}x{lat_size}",
            "backend": backend,
            "pace_s_per_trigger": pace,
            "n_decisions": lat["n"],
            "n_alerting_evaluations": lat["n_alerting_evaluations"],
            "planted": lat["planted"],
        }
        figures[f"alert_latency_p95_s{suffix}"] = {
            "value": round(lat["p95"], 4),
            **common,
            "target": 0.25,
            "p50_s": round(lat["p50"], 4),
            "max_s": round(lat["max"], 4),
            "scan_s": lat["scan_s"],
            "evaluations": lat["evaluations"],
            "evaluate_median_s": lat["evaluate_median_s"],
            "evaluate_provisional_median_s": lat["evaluate_provisional_median_s"],
            "evaluate_final_median_s": lat["evaluate_final_median_s"],
            "loadavg_1min_after": lat["loadavg_1min_after"],
            "analyzer": lat["analyzer"],
            "decisions": lat["decisions"],
        }
        figures[f"alert_latency_p50_s{suffix}"] = {"value": round(lat["p50"], 4), **common}
    return figures
