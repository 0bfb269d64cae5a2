"""``txm-streamer demo``: a simulated survey, analysed live, with alerts and a report.

What happens, in order:

1. A survey of ``--fovs`` fields of view is simulated (:func:`sim.sample.make_survey`), with one
   *reduced* and one *white-line* particle planted in random fields.
2. A separate subscriber process (``txm-streamer alerts --json``) connects to the alert endpoint
   and writes what it receives to ``DIR/subscriber.jsonl``; the publisher waits for its
   subscription so nothing is missed.
3. A real bluesky ``RunEngine`` runs the FXI ``xanes_scan2`` (or ``xanes_scan``) survey plan on the
   simulated TXM, with the :class:`callbacks.XanesAnalyzer` subscribed (alerts go to an
   :class:`streamer.alerts.AlertPublisher`), the runs archived into the embedded tiled catalog
   ``DIR/catalog`` and the ground truth recorded beside it (never in the documents).
4. At the end: ``DIR/truth.json``, ``DIR/alerts.jsonl``, ``DIR/report/index.html``, and a table
   of planted versus found anomalies (energy index of the decision, seconds before the scan
   ended, false alerts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("sim.demo")

FXI_SECONDS_PER_ENERGY = 6.0
"""Real FXI cadence (5 sample + 5 flat frames per energy), to translate energies into time."""


def _start_subscriber(endpoint: str, out: Path) -> tuple[subprocess.Popen, Any]:
    sink = (out / "subscriber.jsonl").open("w")
    cmd = [
        sys.executable,
        "-m",
        "streamer.cli",
        "alerts",
        "--connect",
        endpoint,
        "--json",
        "--min-severity",
        "debug",
    ]
    proc = subprocess.Popen(
        cmd, stdout=sink, stderr=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"}
    )
    return proc, sink


def _stop_subscriber(proc: subprocess.Popen, sink: Any, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    sink.close()


def run_survey(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Run the simulated survey with the analyzer live; return what the summary needs."""
    from bluesky import RunEngine

    from callbacks import XanesAnalyzer
    from sim.instrument import SimulatedTXM
    from sim.plans import survey
    from sim.sample import make_survey
    from sim.truth import TruthRecorder, write_truth
    from streamer.alerts import AlertPublisher

    fovs = make_survey(
        n_fovs=args.fovs, shape=(args.size, args.size), seed=args.seed, subtle=args.subtle
    )
    n_particles = sum(len(f.particles) for f in fovs)
    log.info("simulated %d fields of view, %d particles", len(fovs), n_particles)
    subscriber = None
    if not args.no_subscriber:
        subscriber = _start_subscriber(args.endpoint, out)
    publisher = AlertPublisher(
        args.endpoint,
        log_path=out / "alerts.jsonl",
        wait_for_subscribers=30.0 if subscriber else 0.0,
    )
    txm = SimulatedTXM(fov=fovs[0], seed=args.seed, data_dir=out / "frames")
    RE = RunEngine({})
    truth = TruthRecorder(txm)
    RE.subscribe(truth)
    analyzer = XanesAnalyzer(alerts=publisher, out_dir=out, keep_label_maps=True)
    analyzer.session.on_run_end.append(_progress_line)
    RE.subscribe(analyzer)
    archiver = _archiver(out / "catalog") if not args.no_archive else None
    if archiver is not None:
        RE.subscribe(archiver)
    t0 = time.perf_counter()
    uids = RE(survey(txm, fovs, plan=args.dialect))
    t_scan = time.perf_counter() - t0
    analyzer.flush()
    t_analysed = time.perf_counter() - t0
    write_truth(out / "truth.json", truth)
    if archiver is not None:
        archiver.close()
    return {
        "uids": uids,
        "truth": truth.truth(),
        "analyzer": analyzer,
        "publisher": publisher,
        "subscriber": subscriber,
        "t_scan": t_scan,
        "t_analysed": t_analysed,
        "n_particles": n_particles,
        "n_pixels": args.size * args.size,
    }


def _archiver(directory: Path):
    try:
        from streamer.archive import Archiver
    except ImportError as err:  # the catalog extra is part of the install; say so if absent
        log.warning("runs are not archived: %s", err)
        return None
    from callbacks.handlers import HANDLER_REGISTRY

    # external frames are read on the archiver's thread and stored in the catalog, so that the
    # catalog replays on its own (without DIR/frames)
    return Archiver(directory, handler_registry=HANDLER_REGISTRY)


def _progress_line(summary, ev, analysis) -> None:
    flagged = ", ".join(f"#{p}@{summary.first_decision.get(p)}" for p in sorted(summary.flagged))
    print(
        f"  scan {summary.info.scan_id}: {summary.n_energies} energies, "
        f"{summary.n_particles} particles, flagged: {flagged or 'none'}",
        flush=True,
    )


def score(result: dict[str, Any]) -> tuple[list, dict]:
    """Planted versus found, per run and for the campaign."""
    from sim.truth import decode_labels
    from streamer.evaluation import campaign_score, score_run

    runs = {s.info.run_uid: s for s in result["analyzer"].session.runs}
    scores = []
    for uid, truth in result["truth"]["runs"].items():
        fov = truth.get("fov")
        summary = runs.get(uid)
        if not fov or summary is None:
            continue
        labels = decode_labels(fov["labels_rle"], fov["shape"])
        kinds = {p["id"]: p["kind"] for p in fov["particles"]}
        scores.append(
            score_run(
                run_uid=uid,
                scan_id=truth.get("scan_id"),
                truth_labels=labels,
                truth_kinds=kinds,
                detected_labels=summary.labels,
                flagged=summary.flagged,
                first_decision=summary.first_decision,
                first_decision_time=summary.first_decision_time,
                t_end=summary.t_end,
                n_energies=summary.n_energies,
            )
        )
    return scores, campaign_score(scores)


def truth_rows(scores: list, result: dict[str, Any]) -> list[dict]:
    """One row per planted anomaly, for the table and the report."""
    rows = []
    for s in scores:
        fov = result["truth"]["runs"][s.run_uid]["fov"]
        kinds = {p["id"]: p for p in fov["particles"]}
        for tid, kind in s.planted.items():
            p = kinds[tid]
            rows.append(
                {
                    "scan_id": s.scan_id,
                    "particle": tid,
                    "kind": kind,
                    "partial": p.get("partial"),
                    "subtle": p.get("subtle"),
                    "found_as": s.found.get(tid),
                    "energy_index": s.decision_index.get(tid),
                    "n_energies": s.n_energies,
                    "lead_s": round(s.decision_lead_s[tid], 1)
                    if tid in s.decision_lead_s
                    else None,
                }
            )
        for pid in s.false_alerts:
            rows.append(
                {
                    "scan_id": s.scan_id,
                    "particle": None,
                    "kind": "false alert",
                    "found_as": pid,
                    "energy_index": None,
                    "n_energies": s.n_energies,
                }
            )
    return rows


def run(args: argparse.Namespace) -> int:
    """Entry point of ``txm-streamer demo``."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not logging.getLogger().handlers or logging.getLogger().level > logging.INFO:
        logging.getLogger("sim.demo").setLevel(logging.INFO)
    print(
        f"txm-streamer demo: {args.fovs} fields of {args.size}x{args.size} px, seed "
        f"{args.seed}, {args.dialect}, alerts on {args.endpoint}",
        flush=True,
    )
    result = run_survey(args, out)
    scores, totals = score(result)
    rows = truth_rows(scores, result)
    analyzer = result["analyzer"]
    analyzer.session.write_report(truth=rows)
    analyzer.close()
    result["publisher"].close()
    received = None
    if result["subscriber"] is not None:
        _stop_subscriber(*result["subscriber"])
        received = _count_received(out / "subscriber.jsonl")
    summary = {
        **totals,
        "scan_seconds": round(result["t_scan"], 1),
        "analysed_seconds": round(result["t_analysed"], 1),
        "spectra_per_s": round(len(scores) * result["n_pixels"] / result["t_analysed"]),
        "subscriber_received": received,
        "stats": analyzer.stats,
    }
    (out / "summary.json").write_text(
        json.dumps({"summary": summary, "planted": rows}, indent=1, default=str)
    )
    _print_table(rows, summary, out)
    return 0


def _count_received(path: Path) -> int:
    n = 0
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if line.startswith("{"):
                n += 1
    return n


def _print_table(rows: list[dict], s: dict, out: Path) -> None:
    print("\nplanted vs found   (before end: wall time here, and at FXI's ~6 s per energy)")
    print(
        f"  {'scan':>4}  {'particle':>8}  {'kind':<12} {'found as':>8}  {'decided at':>12}  "
        f"{'before end':>10}  {'at FXI':>8}"
    )
    for r in rows:
        at = f"{r['energy_index'] + 1}/{r['n_energies']}" if r["energy_index"] is not None else "-"
        lead = f"{r['lead_s']:.1f} s" if r.get("lead_s") is not None else "-"
        fxi = "-"
        if r["energy_index"] is not None:
            fxi = (
                f"{FXI_SECONDS_PER_ENERGY * (r['n_energies'] - 1 - r['energy_index']) / 60:.1f} min"
            )
        found = f"#{r['found_as']}" if r["found_as"] is not None else "MISSED"
        particle = f"#{r['particle']}" if r["particle"] is not None else "-"
        print(
            f"  {r['scan_id']!s:>4}  {particle:>8}  {r['kind']:<12} {found:>8}  {at:>12}  "
            f"{lead:>10}  {fxi:>8}"
        )
    print(
        f"\n{s['found']}/{s['planted']} planted anomalies found, {s['false_alerts']} false alerts "
        f"over {s['particles']} particles ({s['false_per_100_normal']:.2f} per 100 normal), "
        f"{s['early']}/{s['found']} decided before the last energy"
    )
    print(
        f"survey {s['scan_seconds']} s, analysed by {s['analysed_seconds']} s "
        f"({s['spectra_per_s']} spectra/s end to end)"
    )
    if s["subscriber_received"] is not None:
        print(
            f"the subscriber process received {s['subscriber_received']} alerts "
            f"({out / 'subscriber.jsonl'})"
        )
    print(
        f"report: {out / 'report' / 'index.html'}   alerts: {out / 'alerts.jsonl'}   "
        f"truth: {out / 'truth.json'}"
    )
