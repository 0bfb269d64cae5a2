"""Alert transport: publish -> receive latency and throughput between two processes on 127.0.0.1.

The publisher runs in this process; a subscriber (:class:`streamer.alerts.AlertSubscriber`, with
its validation, sequence checks and filters) runs in a child process and reports, per alert, the
receipt time minus the alert's publication ``time`` (same machine, same clock). Two phases:

- latency: alerts paced at ``rate`` per second (an analyzer's realistic load), p50/p95/max;
- throughput: alerts published as fast as one thread can, until the subscriber has them all;
  also the caller-side cost of one ``publish()`` call, which is what an analyzer thread pays.

This measures the alert path only; ``alert_latency_p95_s`` (event document to receipt) belongs
to the analyzer's benchmark.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from streamer.alerts import AlertPublisher, make_alert
from streamer.alerts.schema import dumps

SUBSCRIBER = """
import json, sys, time
from streamer.alerts import AlertSubscriber
endpoint, n = sys.argv[1], int(sys.argv[2])
latencies, last = [], None
with AlertSubscriber(endpoint, heartbeat_timeout=60.0) as sub:
    while len(latencies) < n:
        alert = sub.recv(timeout=60.0)
        if alert is None:
            break
        last = time.time()
        latencies.append(last - alert["time"])
    counts = dict(sub.counts)
print(json.dumps({"latencies": latencies, "last_receipt": last, "counts": counts}))
"""


def _alert(i: int) -> dict:
    rng = np.random.default_rng(i)
    return make_alert(
        "anomalous_particle",
        run_uid=f"bench-{i // 100}",
        scan_id=i // 100,
        plan_name="xanes_scan2",
        particle={"id": i, "centroid_px": rng.uniform(0, 512, 2), "bbox_px": [0, 0, 20, 20],
                  "area_px": 400, "stage_position": {"sx": 10.0, "sy": -3.0}},
        score=float(rng.uniform(5, 10)),
        threshold=4.0,
        energy_index=60,
        n_energies=106,
        attributes={name: float(v) for name, v in zip(("e0_half", "white_line_energy",
                    "white_line_height", "edge_jump"), rng.normal(size=4), strict=True)},
        population={"e0_half": {"median": 7722.0, "mad": 0.8}},
    )  # fmt: skip


def _phase(n: int, publish_all) -> tuple[dict, float]:
    options = {"max_rate_per_s": None, "heartbeat_interval": 0.5}
    with AlertPublisher("tcp://127.0.0.1:*", **options) as publisher:
        child = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, publisher.endpoint, str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        if not publisher.wait_for_subscribers(60.0):
            child.kill()
            raise RuntimeError("the subscriber process never subscribed")
        t_first = time.time()
        publish_all(publisher)
        out, _ = child.communicate(timeout=600)
    if child.returncode != 0:
        raise RuntimeError(f"subscriber process failed with status {child.returncode}")
    return json.loads(out), t_first


def run(*, quick: bool = False) -> dict[str, dict]:
    """Measure the alert path; return figures by name (``value``, ``unit``, details)."""
    n_paced, rate = (100, 100.0) if quick else (500, 100.0)
    n_flood = 2_000 if quick else 20_000
    alerts = [_alert(i) for i in range(max(n_paced, n_flood))]

    def paced(publisher):
        for i in range(n_paced):
            publisher.publish(alerts[i])
            time.sleep(1.0 / rate)

    paced_result, _ = _phase(n_paced, paced)
    lat = np.asarray(paced_result["latencies"])
    call_seconds = []

    def flood(publisher):
        t0 = time.perf_counter()
        for i in range(n_flood):
            publisher.publish(alerts[i])
        call_seconds.append((time.perf_counter() - t0) / n_flood)

    flood_result, t_first = _phase(n_flood, flood)
    received = len(flood_result["latencies"])
    elapsed = flood_result["last_receipt"] - t_first
    common = {"alert_bytes": len(dumps({**alerts[0], "seq": 1, "time": 0.0})), "quick": quick}
    return {
        "alert_transport_latency_p50_s": {
            "value": float(np.percentile(lat, 50)), "unit": "s", "n": int(lat.size),
            "rate_per_s": rate, **common},
        "alert_transport_latency_p95_s": {
            "value": float(np.percentile(lat, 95)), "unit": "s", "max_s": float(lat.max()),
            "n": int(lat.size), "rate_per_s": rate, **common},
        "alert_throughput_per_s": {
            "value": received / elapsed, "unit": "alerts/s", "n_published": n_flood,
            "n_received": received, "missed": flood_result["counts"].get("missed", 0),
            "latency_p95_under_flood_s": float(np.percentile(flood_result["latencies"], 95)),
            **common},
        "alert_publish_call_us": {
            "value": call_seconds[0] * 1e6, "unit": "us", "n": n_flood, **common},
    }  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
