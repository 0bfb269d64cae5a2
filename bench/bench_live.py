"""The live path: RunEngine slowdown and end-to-end demo throughput (latency: ``bench_latency``).

``runengine_slowdown``
    Wall time of the same simulated ``xanes_scan2`` run (256x256, the seed study's 106 energies,
    same sample and seed) with the :class:`callbacks.XanesAnalyzer` subscribed over without,
    measured side by side in this process, the order rotated each repetition. The figure is the
    median over repetitions of the *paired* ratio (a scan with the analyzer over the scan
    without it in the same repetition, seconds apart), with a bootstrap 90 % interval of that
    median (``ci90``): on this shared 2-core VM single scans of the same run vary by +-10 %,
    so a ratio of two medians of a few scans moves by more than the effect measured; pairing
    cancels the slow drifts of the machine's speed, and more repetitions narrow the interval.
    The ratio of the medians is kept beside it (``ratio_of_medians``).
    The figure ``runengine_slowdown`` is ``XanesAnalyzer(backend="process")`` in this process
    (analysis in a child process at ``SCHED_IDLE``, see :mod:`callbacks.process_backend`), on
    ``HEADLINE_REPEATS`` pairs of scans measured on their own. Then, interleaved with scans
    without: ``backend="thread"`` (the worker thread shares the interpreter and its GIL with the
    RunEngine), the analyzer in another process fed by bluesky's 0MQ ``Publisher`` -> ``Proxy``
    -> ``RemoteDispatcher`` with a msgpack serializer (arrays as raw bytes, no pickle), and two
    loads that are no analysis at all (:class:`bench.live_sinks.IdleCompetitor`, a ``SCHED_IDLE``
    process busy only while the scan runs): a counting loop, which costs the RunEngine nothing
    measurable (the scheduler keeps it off the RunEngine's core), and numpy streaming 64 MB,
    which costs it about 20 %: what remains of ``runengine_slowdown`` flat out is the memory
    traffic of the analysis on the other core, not CPU time taken from the RunEngine. Each way
    of analysing must flag the same particles in every scan (``same_flags``).
    The simulator computes every frame on the RunEngine's thread as fast as it can, a
    worst case: a beamline waits seconds per energy on hardware. The same comparison is repeated
    on a *paced* scan, where each camera trigger also waits ``pace_s`` of real time (the
    RunEngine idle, as when it waits on a detector).
``demo_spectra_per_s``, ``demo_wall_s``
    The default demo (``txm-streamer demo``: 8 fields of 256x256, subscriber process, catalog,
    report) run as a command: its wall time, and runs x pixels over the time from the first start
    to the analyzer flushed (from its ``summary.json``).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.live_sinks import ROOT, IdleCompetitor, RemoteAnalyzer

logger = logging.getLogger(__name__)

CONFIGS = ("alone", "thread", "process", "remote")
OTHER_CONFIGS = ("alone", "thread", "remote", "cpu_hog", "memory_hog")
HEADLINE_REPEATS = 25
"""Paired scans of ``runengine_slowdown`` (with the process backend and without)."""


# -- scans --------------------------------------------------------------------------------------
def paced(plan, camera, pace_s: float):
    """``plan`` with ``pace_s`` of real waiting before every trigger of ``camera``."""
    from bluesky import plan_stubs as bps
    from bluesky.preprocessors import plan_mutator

    def insert(msg):
        if msg.command == "trigger" and msg.obj is camera:

            def head():
                yield from bps.sleep(pace_s)
                return (yield msg)

            return head(), None
        return None, None

    return plan_mutator(plan, insert)


class ThreadClock:
    """Subscribed first: CPU time of the RunEngine's thread between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.t_start = self.t_stop = 0.0

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self.t_start = time.thread_time()
        elif name == "stop":
            self.t_stop = time.thread_time()

    @property
    def cpu_s(self) -> float:
        return self.t_stop - self.t_start


def scan_once(fov, *, seed: int, callbacks=(), pace_s: float = 0.0, data_dir=None) -> dict:
    """One ``xanes_scan2`` run of ``fov`` on a fresh simulated TXM and RunEngine; times.

    ``wall_s``: the ``RE(...)`` call; ``cpu_s``: CPU time of this process (all threads) during
    it; ``re_thread_cpu_s``: CPU time of the RunEngine's thread from start to stop document.
    """
    from bluesky import RunEngine

    from sim.instrument import SimulatedTXM
    from sim.plans import xanes_scan2

    txm = SimulatedTXM(fov=fov, seed=seed, data_dir=data_dir)
    RE = RunEngine({}, context_managers=[])
    thread_clock = ThreadClock()
    RE.subscribe(thread_clock)
    for cb in callbacks:
        RE.subscribe(cb)
    plan = xanes_scan2(txm)
    if pace_s > 0:
        plan = paced(plan, txm.Andor, pace_s)
    t0, c0 = time.perf_counter(), time.process_time()
    (uid,) = RE(plan)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"uid": uid, "wall_s": wall, "cpu_s": cpu, "re_thread_cpu_s": thread_clock.cpu_s}


def _sink_factories() -> dict[str, Any]:
    from callbacks import XanesAnalyzer

    return {
        "thread": lambda: XanesAnalyzer(alerts=None, report=False, backend="thread"),
        "process": lambda: XanesAnalyzer(alerts=None, report=False, backend="process"),
        "remote": lambda: RemoteAnalyzer(),
        "cpu_hog": lambda: IdleCompetitor("cpu"),
        "memory_hog": lambda: IdleCompetitor("memory"),
    }


#: ``config -> zero-argument factory`` of extra ways of subscribing (for experiments).
EXTRA_SINKS: dict[str, Any] = {}


def measure_slowdown(
    *, size: int, repeats: int, pace_s: float, seed: int = 11, configs: tuple = CONFIGS
) -> dict:
    """Median scan wall time per way of subscribing, order rotated every repetition.

    Also checks that every way of subscribing flagged the same particles in every scan
    (``same_flags``; particle ids of the run's final evaluation).
    """
    from sim.sample import make_field_of_view

    fov = make_field_of_view(
        shape=(size, size),
        n_particles=9,
        anomalies=[{"kind": "reduced"}, {"kind": "white_line"}],
        seed=seed,
    )
    fov.od([7700.0])  # per-pixel tables, once, outside the timings
    factories = {**_sink_factories(), **EXTRA_SINKS}
    sinks: dict[str, Any] = {"alone": None}
    times: dict[str, list[dict]] = {c: [] for c in configs}
    try:
        for c in configs:
            if c != "alone":
                sinks[c] = factories[c]()
        for rep in range(repeats):
            for k in range(len(configs)):
                config = configs[(rep + k) % len(configs)]
                sink = sinks[config]
                gc.collect()  # no collection of an earlier scan's garbage inside this one
                t = scan_once(fov, seed=seed, callbacks=[sink] if sink else [], pace_s=pace_s)
                t0 = time.perf_counter()
                if sink is not None:  # analysis still running when the scan ended
                    stats, flags = _flush(sink)
                    t["lag_s"] = time.perf_counter() - t0
                    t["dropped_events_total"] = stats["dropped_events"]
                    if not isinstance(sink, IdleCompetitor):  # no analysis: nothing flagged
                        t["flagged"] = flags.get(t["uid"])
                times[config].append(t)
                logger.info("slowdown %s pace %.2f: %s", config, pace_s, _round(t))
    finally:
        for sink in sinks.values():
            if sink is not None:
                sink.close()
    med = {c: float(np.median([t["wall_s"] for t in times[c]])) for c in configs}
    best = {c: float(np.min([t["wall_s"] for t in times[c]])) for c in configs}
    runs = {c: [_round(t) for t in times[c]] for c in configs}
    flags = {json.dumps(t["flagged"]) for c in configs for t in times[c] if "flagged" in t}
    return {
        "median_wall_s": med,
        "min_wall_s": best,
        "runs": runs,
        "same_flags": len(flags) <= 1,
        "flagged": sorted(flags),
        "size": size,
        "pace_s": pace_s,
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }


def _flush(sink: Any) -> tuple[dict, dict]:
    """Wait for a sink's analysis; its counters and ``run uid -> flagged particles``."""
    if isinstance(sink, RemoteAnalyzer):
        stats = sink.flush()
        return stats, sink.flagged
    if not sink.flush(timeout=600):
        raise TimeoutError(f"the {sink.backend} analyzer did not catch up within 600 s")
    return sink.stats, sink.run_flags()


def _round(t: dict) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in t.items() if k != "uid"}


# -- the demo as a command ------------------------------------------------------------------------
def measure_demo(*, fovs: int, size: int) -> dict:
    """Run ``txm-streamer demo`` and read its summary."""
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as out:
        port = _free_port()
        cmd = [sys.executable, "-m", "streamer.cli", "demo", "--fovs", str(fovs)]
        cmd += ["--size", str(size), "--out", out, "--endpoint", f"tcp://127.0.0.1:{port}"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"demo failed ({proc.returncode}): {proc.stderr[-2000:]}")
        summary = json.loads((Path(out) / "summary.json").read_text())["summary"]
    return {"wall_s": wall, "summary": summary, "fovs": fovs, "size": size}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- figures ------------------------------------------------------------------------------------
def paired_ratio(with_s: list[float], alone_s: list[float], *, seed: int = 0) -> dict:
    """Median of per-repetition ratios ``with / alone`` and a bootstrap 90 % interval of it.

    Examples
    --------
    >>> r = paired_ratio([1.1, 2.2, 3.3], [1.0, 2.0, 3.0])
    >>> r["median"], r["ci90"]
    (1.1, [1.1, 1.1])
    """
    ratios = np.asarray(with_s, float) / np.asarray(alone_s, float)
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(ratios, size=(2000, ratios.size)), axis=1)
    low, high = np.percentile(boot, [5, 95])
    return {
        "median": round(float(np.median(ratios)), 3),
        "ci90": [round(float(low), 3), round(float(high), 3)],
        "ratios": [round(float(r), 3) for r in ratios],
    }


def _ratio(res: dict, config: str, note: str) -> dict:
    med = res["median_wall_s"]
    cpu = {c: float(np.median([t["re_thread_cpu_s"] for t in res["runs"][c]])) for c in res["runs"]}
    walls = {c: [t["wall_s"] for t in res["runs"][c]] for c in (config, "alone")}
    paired = paired_ratio(walls[config], walls["alone"])
    return {
        "value": paired["median"],
        "unit": "ratio",
        "target": 1.05,
        "ci90": paired["ci90"],
        "paired_ratios": paired["ratios"],
        "ratio_of_medians": round(med[config] / med["alone"], 3),
        "scan_alone_s": round(med["alone"], 2),
        f"scan_with_{config}_s": round(med[config], 2),
        "min_ratio": round(res["min_wall_s"][config] / res["min_wall_s"]["alone"], 3),
        "re_thread_cpu_ratio": round(cpu[config] / cpu["alone"], 3),
        "re_thread_cpu_alone_s": round(cpu["alone"], 3),
        f"re_thread_cpu_with_{config}_s": round(cpu[config], 3),
        "frame": f"{res['size']}x{res['size']}",
        "pace_s_per_trigger": res["pace_s"],
        "loadavg_1min_after": res["loadavg_1min_after"],
        "runs": res["runs"],
        "note": note,
    }


def run(*, quick: bool = False) -> dict[str, dict]:
    """All figures of this module (``quick``: 128x128, one repetition, a 3-field demo)."""
    size = 128 if quick else 256
    headline = 1 if quick else HEADLINE_REPEATS
    fast = measure_slowdown(size=size, repeats=headline, pace_s=0.0, configs=("alone", "process"))
    others = measure_slowdown(
        size=size, repeats=1 if quick else 7, pace_s=0.0, configs=OTHER_CONFIGS
    )
    slow = measure_slowdown(size=size, repeats=1 if quick else 4, pace_s=0.1)
    figures = {
        "runengine_slowdown": _ratio(
            fast,
            "process",
            "XanesAnalyzer(backend='process') subscribed in the RunEngine's process (analysis in "
            "a niced child process, frames forwarded zero-copy over 0MQ), simulator flat out",
        ),
        "runengine_slowdown_thread": _ratio(
            others,
            "thread",
            "XanesAnalyzer(backend='thread'): analysis on a worker thread of the RunEngine's "
            "process (shares the GIL), simulator flat out",
        ),
        "runengine_slowdown_remote": _ratio(
            others,
            "remote",
            "analyzer in another process via bluesky 0MQ Publisher/Proxy/RemoteDispatcher "
            "(msgpack), simulator flat out",
        ),
        "runengine_slowdown_paced": _ratio(
            slow,
            "process",
            "backend='process', each camera trigger also waits 0.1 s",
        ),
        "runengine_slowdown_thread_paced": _ratio(
            slow,
            "thread",
            "backend='thread', each camera trigger also waits 0.1 s",
        ),
        "runengine_slowdown_remote_paced": _ratio(
            slow,
            "remote",
            "analyzer in another process, each camera trigger also waits 0.1 s",
        ),
    }
    for load in ("cpu", "memory"):
        figures[f"runengine_slowdown_idle_{load}_load"] = _ratio(
            others,
            f"{load}_hog",
            f"no analyzer: a SCHED_IDLE process running a {load} load ("
            + ("a counting loop" if load == "cpu" else "numpy streaming 2 x 32 MB arrays")
            + ") while the scan runs, simulator flat out: what the machine charges the RunEngine "
            "for work on its other core",
        )
    flags = set(fast["flagged"]) | set(others["flagged"])
    for key in list(figures):
        res = slow if "paced" in key else None
        figures[key]["same_flags"] = res["same_flags"] if res else len(flags) <= 1
    demo = measure_demo(fovs=3, size=128) if quick else measure_demo(fovs=8, size=256)
    s = demo["summary"]
    figures["demo_spectra_per_s"] = {
        "value": s["spectra_per_s"],
        "unit": "spectra/s",
        "fovs": demo["fovs"],
        "frame": f"{demo['size']}x{demo['size']}",
        "scan_seconds": s["scan_seconds"],
        "analysed_seconds": s["analysed_seconds"],
        "found": f"{s['found']}/{s['planted']}",
        "false_alerts": s["false_alerts"],
    }
    figures["demo_wall_s"] = {
        "value": round(demo["wall_s"], 1),
        "unit": "s",
        "target": 300,
        "fovs": demo["fovs"],
        "frame": f"{demo['size']}x{demo['size']}",
        "note": "the whole command: start-up, subscriber process, catalog, report",
    }
    return figures
