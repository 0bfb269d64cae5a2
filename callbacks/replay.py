"""``txm-streamer replay``: archived runs through the same analyzer as live.

Serial (default): each run's documents are regenerated from the catalog
(:func:`streamer.replay_source.replay_documents`, the fast array path or, with ``--documents``,
tiled's JSON export) and fed to a :class:`~callbacks.XanesAnalyzer` in ``mode="replay"``: its
queue blocks the reader instead of dropping, and no evaluation is skipped for being behind, so
a replay is deterministic and loses nothing. Alerts carry ``mode: replay``, go out on their own
topic (``txm.alert.replay.<kind>``) and into ``OUT/alerts.jsonl``; the campaign report goes to
``OUT/report``; ``OUT/replay.json`` lists each run's particle table and flagged particles.

Distributed (``--workers N`` or ``--scheduler ADDRESS``): :func:`compute_run` reads, normalises
and evaluates one run on a dask worker (the task carries the catalog's location and the run's
uid) and returns its analysis steps; the client applies them run by run in scan order with the
same session (:mod:`streamer.distributed`), so the alerts equal the serial replay's. Per-field
figures are not drawn in this mode (the cubes stay on the workers).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callbacks.dialects import detect_dialect
from callbacks.handlers import HANDLER_REGISTRY
from streamer.catalog import CatalogError, connect
from streamer.catalog_runs import list_runs, plain

log = logging.getLogger(__name__)

__all__ = ["NotXanesRunError", "ReplayRun", "compute_run", "replay", "run", "select_runs"]


class NotXanesRunError(CatalogError, ValueError):
    """A run named for replay is not a XANES run."""


@dataclass(frozen=True)
class ReplayRun:
    """One run to replay: full uid, scan id, plan, start time, number of events."""

    uid: str
    scan_id: int | None
    plan_name: str | None
    time: float
    n_events: int


def select_runs(catalog: Any, uids: Sequence[str] | None = None) -> list[ReplayRun]:
    """The XANES runs of ``catalog`` to replay, in scan order (by start time).

    Parameters
    ----------
    catalog
        A tiled client, a catalog directory or a tiled server URL.
    uids
        Runs to replay (full uids or unique prefixes); ``None``: every XANES run, others skipped
        with a warning.

    Raises
    ------
    RunNotFoundError
        A named uid is not in the catalog.
    NotXanesRunError
        A named run is not a XANES run.
    """
    from streamer.catalog_runs import lookup_run
    from streamer.catalog_sqlite import run_index
    from streamer.replay_source import count_events

    client = connect(catalog)
    index = run_index(client)  # an embedded catalog: metadata without requests

    def run_node(uid: str) -> Any:
        node = index.run(uid) if index is not None else None
        return node if node is not None else lookup_run(client, uid)

    names = uids if uids else [s.uid for s in list_runs(client)]
    nodes = [run_node(uid) for uid in names]
    runs: dict[str, ReplayRun] = {}
    for node in nodes:
        start = plain(node.metadata["start"])
        what = f"run {start['uid'][:8]} (scan {start.get('scan_id')}, {start.get('plan_name')})"
        if detect_dialect(start) is None:
            if uids:
                raise NotXanesRunError(f"{what} is not a XANES run: nothing to replay")
            log.warning("%s is not a XANES run: skipped", what)
            continue
        runs[start["uid"]] = ReplayRun(
            uid=start["uid"],
            scan_id=start.get("scan_id"),
            plan_name=start.get("plan_name"),
            time=float(start.get("time", 0.0)),
            n_events=count_events(node),
        )
    return sorted(runs.values(), key=lambda r: (r.time, r.uid))


# ------------------------------------------------------------------------------ serial
def replay(
    catalog: Any,
    runs: Sequence[ReplayRun],
    analyzer: Any,
    *,
    method: str = "arrays",
    progress: bool = True,
) -> None:
    """Feed each run's archived documents to ``analyzer`` (a replay-mode ``XanesAnalyzer``)."""
    from streamer.replay_source import replay_documents

    client = connect(catalog)
    with _progress_bar(runs, progress) as bar:
        for r in runs:
            done = 0

            def step(n_done: int, n_total: int) -> None:
                nonlocal done
                bar.update(n_done - done)
                done = n_done

            for name, doc in replay_documents(client, r.uid, method=method, progress=step):
                analyzer(name, doc)
            bar.update(max(r.n_events - done, 0))
        analyzer.flush()


# ------------------------------------------------------------------------------ distributed
_CLIENTS: dict[str, Any] = {}


def compute_run(
    catalog: str, uid: str, method: str = "arrays", policy: Any = None, attribute_threads: int = 1
) -> tuple:
    """The compute half of one run's replay, on a dask worker: ``(RunInfo | None, steps)``.

    Reads run ``uid`` from ``catalog`` (a directory or URL, opened once per worker process),
    routes its documents through a :class:`~callbacks.processor.XanesRunProcessor` exactly as
    the analyzer does, and records the analysis steps instead of deciding
    (:class:`streamer.run_analysis.StepRecorder`). ``policy`` is the session's
    :class:`~streamer.run_analysis.DecisionPolicy`; ``attribute_threads`` the threads of the
    attribute computation (1: a worker process per core).
    """
    import dask

    from streamer.run_analysis import RunAnalysis, StepRecorder

    if catalog not in _CLIENTS:
        _CLIENTS[catalog] = connect(catalog)
    client = _CLIENTS[catalog]
    recorders: list[StepRecorder] = []

    def begin_run(info):
        recorders.append(StepRecorder(info))
        analysis = RunAnalysis(
            info, policy=policy, decider=recorders[-1], attribute_threads=attribute_threads
        )
        _limit_ingest_threads(analysis, attribute_threads)
        return analysis

    with dask.config.set(scheduler="synchronous"):  # tiled's table reads, not the cluster
        return _compute_run(client, uid, method, begin_run, recorders)


def _limit_ingest_threads(analysis: Any, n_threads: int) -> None:
    """Give the run's cube the same thread budget as its attributes (before its first frame).

    ``SpectralCube`` normalises frames on up to 2 threads by default; on a dask worker process
    meant to use one core, those threads compete with the other workers' (measured: slower).
    """
    cube = getattr(analysis, "cube", None)
    if cube is not None and hasattr(cube, "n_threads"):
        cube.n_threads = max(1, int(n_threads))


def _compute_run(client: Any, uid: str, method: str, begin_run: Any, recorders: list) -> tuple:
    from callbacks.processor import XanesRunProcessor
    from streamer.replay_source import replay_documents

    processor = None
    for name, doc in replay_documents(client, uid, method=method):
        if processor is None:
            dialect = detect_dialect(doc) if name == "start" else None
            if dialect is None:
                raise NotXanesRunError(f"run {uid[:8]} is not a XANES run")
            processor = XanesRunProcessor(
                dialect, begin_run=begin_run, handler_registry=HANDLER_REGISTRY, mode="replay"
            )
        try:
            processor(name, doc)
        except Exception as exc:  # as the analysis thread does: the run says so in an alert
            log.exception("analysis of a %r document of run %s failed", name, uid[:8])
            processor.fail(exc)
    if not recorders:
        return None, []
    return recorders[0].info, recorders[0].steps


def close_worker_catalogs() -> int:
    """Close the catalogs :func:`compute_run` opened in this process (run it on each worker)."""
    from streamer.catalog_sqlite import close_run_indexes

    close_run_indexes()
    n = len(_CLIENTS)
    while _CLIENTS:
        _, client = _CLIENTS.popitem()
        try:
            client.context.close()
        except Exception:
            log.exception("closing a worker's catalog client failed")
    return n


def replay_distributed(
    catalog: str,
    runs: Sequence[ReplayRun],
    analyzer: Any,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    method: str = "arrays",
    progress: bool = True,
) -> dict[str, Any]:
    """Compute runs on dask workers, decide them in order with ``analyzer``'s session.

    Returns the workers' memory (MB, see :func:`streamer.distributed.worker_memory_mb`).
    """
    from streamer.distributed import dask_client, map_in_order, worker_memory_mb

    session = analyzer.session
    policy = session.policy
    with (
        dask_client(workers=workers, scheduler=scheduler) as client,
        _progress_bar(runs, progress) as bar,
    ):

        def decide(i: int, result: tuple) -> None:
            info, steps = result
            if info is not None:
                session.begin_decision(info).apply(steps)
            bar.update(runs[i].n_events)

        tasks = [(catalog, r.uid, method, policy) for r in runs]
        try:
            map_in_order(client, compute_run, tasks, decide)
            return worker_memory_mb(client)
        finally:
            client.run(close_worker_catalogs)


# ------------------------------------------------------------------------------ command
class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress_bar(runs: Sequence[ReplayRun], progress: bool) -> Any:
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    total = sum(r.n_events for r in runs)
    return tqdm(total=total, unit="event", desc=f"replay {len(runs)} runs", file=sys.stderr)


def _catalog_location(catalog: str) -> str:
    if catalog.startswith(("http://", "https://")):
        return catalog
    return str(Path(catalog).expanduser().resolve())


def write_summary(path: Path, session: Any, extra: Mapping[str, Any]) -> dict:
    """``replay.json``: per run its flagged particles (id -> kind guess) and particle table."""
    runs = []
    for s in session.runs:
        runs.append(
            {
                "run_uid": s.info.run_uid,
                "scan_id": s.info.scan_id,
                "n_energies": s.n_energies,
                "n_particles": s.n_particles,
                "flagged": {
                    str(pid): (a.get("extra") or {}).get("kind_guess")
                    for pid, a in sorted(s.flagged.items())
                },
                "problems": s.problems,
                "table": s.table,
            }
        )
    summary = {**extra, "runs": runs}
    path.write_text(json.dumps(summary, indent=1, default=_json_default))
    return summary


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``txm-streamer replay``; returns the exit status."""
    from callbacks.analyzer import XanesAnalyzer
    from streamer.alerts import AlertPublisher

    out = Path(args.out)
    location = _catalog_location(args.catalog)
    method = "export" if getattr(args, "documents", False) else "arrays"
    workers = getattr(args, "workers", None)
    scheduler = getattr(args, "scheduler", None)
    try:
        client = connect(location)
        runs = select_runs(client, args.uid)
    except CatalogError as err:
        print(f"txm-streamer replay: error: {err}", file=sys.stderr)
        return 2
    if not runs:
        print(f"txm-streamer replay: error: no XANES run in {location}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    publisher = AlertPublisher(args.endpoint, log_path=out / "alerts.jsonl")
    options = {}
    if getattr(args, "final_only", False):
        from streamer.run_analysis import DecisionPolicy

        options["policy"] = DecisionPolicy(provisional=False)
    analyzer = XanesAnalyzer(alerts=publisher, out_dir=out, mode="replay", **options)
    t0 = time.perf_counter()
    memory = None
    try:
        if workers is not None or scheduler is not None:
            memory = replay_distributed(
                location, runs, analyzer, workers=workers, scheduler=scheduler, method=method
            )
        else:
            replay(client, runs, analyzer, method=method)
        seconds = time.perf_counter() - t0
    except CatalogError as err:
        print(f"txm-streamer replay: error: {err}", file=sys.stderr)
        analyzer.close()
        publisher.close()
        return 1
    analyzer.close()
    publisher.close()
    stats = analyzer.stats
    summary = write_summary(
        out / "replay.json",
        analyzer.session,
        {
            "catalog": location,
            "method": method,
            "final_only": bool(getattr(args, "final_only", False)),
            "workers": workers,
            "scheduler": scheduler,
            "seconds": round(seconds, 3),
            "alerts": len(analyzer.session.alerts),
            "worker_memory_mb": memory,
            "stats": stats,
        },
    )
    flagged = sum(len(r["flagged"]) for r in summary["runs"])
    print(
        f"replayed {len(summary['runs'])} runs in {seconds:.1f} s: "
        f"{summary['alerts']} alerts, {flagged} particles flagged; see {out}/replay.json",
        flush=True,
    )
    if stats["worker_errors"] or stats["dropped_events"]:
        log.warning("replay had %s analysis errors", stats["worker_errors"])
        return 1
    return 0
