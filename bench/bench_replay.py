"""Replay from the embedded catalog: the fast array path versus tiled's JSON document export.

Archives ``n_runs`` runs of ``n_frames`` float32 frames (512x512 by default, the issue's
reference case: 60 frames took about 16 s through ``run.documents()``) with the
:class:`streamer.archive.Archiver`, then replays every run, in the same process, through

- ``documents_from_export`` (tiled's JSON documents, arrays as JSON numbers),
- ``documents_from_arrays(direct=True)`` (zarr files read directly: the default fast path),
- ``documents_from_arrays(direct=False)`` (tiled's binary array API, as for a remote server),

and checks that all three yield equal frames.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def _documents(n_frames: int, shape: tuple[int, int], seed: int):
    """One run's documents: a ``primary`` stream of float32 frames and an energy per event."""
    from event_model import compose_run

    rng = np.random.default_rng(seed)
    run = compose_run(metadata={"plan_name": "bench_replay", "num_eng": n_frames})
    yield "start", run.start_doc
    desc = run.compose_descriptor(
        name="primary",
        data_keys={
            "frame": {
                "source": "bench",
                "dtype": "array",
                "shape": list(shape),
                "dtype_numpy": "<f4",
            },
            "energy": {"source": "bench", "dtype": "number", "shape": []},
        },
    )
    yield "descriptor", desc.descriptor_doc
    for i in range(n_frames):
        now = time.time()
        data = {"frame": rng.random(shape, dtype=np.float32), "energy": 7700.0 + i}
        yield (
            "event",
            desc.compose_event(data=data, timestamps={"frame": now, "energy": now}, seq_num=i + 1),
        )
    yield "stop", run.compose_stop()


def _frames(docs) -> list[np.ndarray]:
    return [doc["data"]["frame"] for name, doc in docs if name == "event"]


def run(*, quick: bool = False) -> dict:
    import zarr  # noqa: F401  (imported before timing: the direct path's first call needs it)

    from streamer.archive import Archiver
    from streamer.catalog import open_catalog
    from streamer.catalog_runs import lookup_run
    from streamer.replay_source import documents_from_arrays, documents_from_export

    n_runs, n_frames, shape = (1, 8, (128, 128)) if quick else (2, 60, (512, 512))
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        client = open_catalog(Path(tmp) / "catalog")
        archiver = Archiver(client)
        uids = []
        t0 = time.perf_counter()
        for k in range(n_runs):
            for name, doc in _documents(n_frames, shape, seed=k):
                archiver(name, doc)
                if name == "start":
                    uids.append(doc["uid"])
        archiver.close()
        t_archive = time.perf_counter() - t0
        stats = archiver.stats
        if stats.total_dropped or stats.total_errors:
            raise RuntimeError(f"archiving failed: {stats}")

        times = {"export": 0.0, "direct": 0.0, "api": 0.0}
        for uid in uids:
            run_client = lookup_run(client, uid)
            readers = {
                "export": lambda r=run_client: documents_from_export(r),
                "direct": lambda r=run_client: documents_from_arrays(r, direct=True),
                "api": lambda r=run_client: documents_from_arrays(r, direct=False),
            }
            frames = {}
            for key, read in readers.items():
                t0 = time.perf_counter()
                frames[key] = _frames(list(read()))
                times[key] += time.perf_counter() - t0
            for key in ("direct", "api"):
                if len(frames[key]) != n_frames or not all(
                    np.array_equal(a, b) for a, b in zip(frames[key], frames["export"], strict=True)
                ):
                    raise RuntimeError(f"replay paths disagree ({key} vs export) on run {uid}")
        client.context.close()

    total = n_runs * n_frames
    size = f"{n_runs} runs x {n_frames} frames {shape[0]}x{shape[1]} float32"
    per_s = {key: total / t for key, t in times.items()}
    logger.info("replay %s: %s s", size, {k: round(t, 2) for k, t in times.items()})
    return {
        "replay_fast_vs_documents_ratio": {
            "value": per_s["direct"] / per_s["export"],
            "unit": "x",
            "fast_s": times["direct"],
            "documents_s": times["export"],
            "size": size,
        },
        "replay_fast_frames_per_s": {"value": per_s["direct"], "unit": "frames/s", "size": size},
        "replay_documents_frames_per_s": {
            "value": per_s["export"],
            "unit": "frames/s",
            "size": size,
        },
        "replay_array_api_frames_per_s": {
            "value": per_s["api"],
            "unit": "frames/s",
            "size": size,
            "note": "fast path through tiled's binary array API (remote server case)",
        },
        "archive_frames_per_s": {
            "value": total / t_archive,
            "unit": "frames/s",
            "size": size,
            "note": "Archiver queue + TiledWriter into the embedded catalog, until flushed",
        },
    }
