"""Regenerate an archived run's documents, with image data filled, for replay.

Two ways, yielding the same ``(name, doc)`` sequence (start, then descriptors and events in
time order, then stop):

- :func:`documents_from_arrays` (the fast path): reads each stream's event table once and its
  arrays in blocks, directly from the zarr/HDF5/npy files behind the tiled array nodes when
  they are on this machine, else through tiled's binary array API.
- :func:`documents_from_export` (the reference): tiled's JSON document export
  (``run.documents()``), which is slow for images (every pixel goes through JSON). External
  data, exported as ``stream_resource``/``stream_datum`` documents, is filled from the array
  nodes and those two document kinds are not yielded.

Events carry numpy arrays for image keys; keys the descriptor marks ``external`` are listed
in ``event["filled"]`` as True, so an ``event_model.Filler`` downstream leaves them alone.
Event uids are tiled's synthetic ``event-<descriptor uid>-<seq_num>`` (the archive keeps
the data, not the original event uids).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .archived_arrays import ArrayRows, event_value
from .catalog import CatalogError
from .catalog_runs import lookup_run, plain

logger = logging.getLogger(__name__)

__all__ = [
    "ReplayError",
    "count_events",
    "documents_from_arrays",
    "documents_from_export",
    "replay_documents",
]

Progress = Callable[[int, int], Any]


class ReplayError(CatalogError):
    """A run's data could not be read back (names the run, stream and data key)."""


def _builtin(value: Any) -> Any:
    """Table cells as JSON builtins, exactly as tiled's JSON exporter emits them."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_builtin(v) for v in value]
    return value


# ---------------------------------------------------------------------------- progress
class _Progress:
    def __init__(self, total: int, progress: bool | Progress | None, label: str):
        self.total, self.done, self._bar, self._call = total, 0, None, None
        if progress is True:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="event", desc=label, leave=False)
        elif callable(progress):
            self._call = progress

    def step(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        if self._call is not None:
            self._call(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------------------- fast path
def _stream_plan(stream, stream_name: str, start_uid: str, *, direct: bool):
    """Descriptors and lightweight event records of one stream, plus its array readers.

    ``stream`` is the stream's plain container (``.base``); its children come in one request.
    """
    from bluesky_tiled_plugins.exporters import build_descriptor_docs

    meta = plain(stream.metadata)
    descriptors = build_descriptor_docs(dict(meta), stream_name, run_start_uid=start_uid)
    data_keys = meta.get("data_keys", {})
    parts = dict(stream.items())
    table = parts.pop("internal").read() if "internal" in parts else None
    arrays = {k: ArrayRows(node, direct=direct) for k, node in parts.items()}
    records: dict[int, dict] = {}
    if table is not None:
        keys = [
            k for k in table.columns if k not in ("seq_num", "time") and not k.startswith("ts_")
        ]
        ts_cols = [k for k in table.columns if k.startswith("ts_")]
        for row in table.to_dict(orient="records"):
            records[row["seq_num"]] = {
                "time": row["time"],
                "data": {k: _builtin(row[k]) for k in keys},
                "timestamps": {k: row[f"ts_{k}"] for k in keys},
                "table_ts": {k[3:]: row[k] for k in ts_cols},
            }
    internal = [k for k in arrays if not data_keys.get(k, {}).get("external")]
    if not records and internal:
        n = arrays[internal[0]].shape[0]
        records = {
            sn: {"time": 0.0, "data": {}, "timestamps": {}, "table_ts": {}}
            for sn in range(1, n + 1)
        }
    times = [(d["uid"], d["time"]) for d in descriptors]
    entries = [(d["time"], "descriptor", d) for d in descriptors]
    for index, sn in enumerate(sorted(records)):
        rec = records[sn]
        desc_uid = times[0][0]
        for uid, t in times[1:]:
            if t <= rec["time"]:
                desc_uid = uid
        entries.append((rec["time"], "event", (stream_name, index, sn, desc_uid)))
    return data_keys, records, arrays, entries


def documents_from_arrays(
    run, *, progress: bool | Progress | None = None, direct: bool = True
) -> Iterator[tuple[str, dict]]:
    """Yield a run's documents with arrays read directly (the fast replay path).

    Parameters
    ----------
    run : BlueskyRun client
        A run of a tiled catalog (see :func:`streamer.catalog_runs.lookup_run`).
    progress : bool or callable, optional
        ``True`` for a tqdm bar with ETA, or ``progress(n_done, n_total)`` called per event.
    direct : bool
        Read zarr/HDF5/npy files directly when they are local (else tiled's array API).
    """
    metadata = run.metadata
    start = plain(metadata["start"])
    streams, entries = {}, []
    # One request lists the streams (in the server's order, as its JSON exporter uses), one per
    # stream lists its parts with their data sources; then one table read per stream.
    for name, stream in run.include_data_sources().base.items():
        data_keys, records, arrays, stream_entries = _stream_plan(
            stream.base, name, start["uid"], direct=direct
        )
        streams[name] = (data_keys, records, arrays)
        entries.extend(stream_entries)
    entries.sort(key=lambda e: e[0])  # stable, like the exporter's sort
    n_events = sum(len(s[1]) for s in streams.values())
    bar = _Progress(n_events, progress, f"replay {start['uid'][:8]}")
    try:
        yield "start", start
        for _, kind, payload in entries:
            if kind == "descriptor":
                yield "descriptor", payload
                continue
            stream_name, index, sn, desc_uid = payload
            data_keys, records, arrays = streams[stream_name]
            rec = records[sn]
            event = {
                "seq_num": sn,
                "time": rec["time"],
                "uid": f"event-{desc_uid}-{sn}",
                "descriptor": desc_uid,
                "data": dict(rec["data"]),
                "timestamps": dict(rec["timestamps"]),
            }
            filled = {}
            for key, rows in arrays.items():
                shape = list(data_keys.get(key, {}).get("shape") or rows.shape[1:])
                try:
                    event["data"][key] = event_value(rows, index, shape)
                except Exception as err:
                    raise ReplayError(
                        f"run {start['uid']}: cannot read {stream_name}/{key} event {sn}: {err}"
                    ) from err
                if data_keys.get(key, {}).get("external"):
                    event["timestamps"][key] = rec["time"]
                    filled[key] = True
                else:
                    event["timestamps"][key] = rec["table_ts"].get(key, rec["time"])
            if filled:
                event["filled"] = filled
            yield "event", event
            bar.step()
        for _, _, arrays in streams.values():  # before the stop: the next run may start
            for rows in arrays.values():
                rows.close()
        stop = metadata.get("stop")
        if stop:
            yield "stop", plain(stop)
        else:
            logger.warning("run %s has no stop document (incomplete run)", start["uid"])
    finally:
        for _, _, arrays in streams.values():
            for rows in arrays.values():
                rows.close()
        bar.close()


# ---------------------------------------------------------------------------- JSON export path
def documents_from_export(
    run, *, progress: bool | Progress | None = None
) -> Iterator[tuple[str, dict]]:
    """Yield a run's documents through tiled's JSON export (``run.documents()``), filled.

    The reference path: slow for images. See the module docstring for what is yielded.
    """
    try:
        docs = [(name, plain(doc)) for name, doc in run.documents()]
    except Exception as err:
        raise ReplayError(
            f"run {run.metadata['start']['uid']}: tiled's document export failed ({err}); a "
            "tiled server must register the application/json-seq exporter "
            "(see docs/tiled-server.md)"
        ) from err
    descriptors = {d["uid"]: d for n, d in docs if n == "descriptor"}
    resources = {d["uid"]: d for n, d in docs if n == "stream_resource"}
    # (descriptor uid, data key) -> (stream datum, rows reader)
    external: dict[tuple[str, str], tuple[dict, ArrayRows]] = {}
    for name, doc in docs:
        if name == "stream_datum":
            key = resources[doc["stream_resource"]]["data_key"]
            stream = descriptors[doc["descriptor"]]["name"]
            node = run[stream].base[key]
            external[(doc["descriptor"], key)] = (doc, ArrayRows(node, direct=False))
    desc_of_stream = {}
    for uid, desc in descriptors.items():
        desc_of_stream.setdefault(desc["name"], []).append(uid)
    dtypes: dict[tuple[str, str], np.dtype] = {}
    n_events = sum(1 for n, _ in docs if n == "event")
    start_uid = docs[0][1].get("uid", "?") if docs else "?"
    bar = _Progress(n_events, progress, f"replay {start_uid[:8]}")
    try:
        for name, doc in docs:
            if name in ("stream_resource", "stream_datum"):
                continue
            if name == "stop" and not doc:
                logger.warning("run %s has no stop document (incomplete run)", start_uid)
                continue
            if name != "event":
                yield name, doc
                continue
            descriptor = descriptors[doc["descriptor"]]
            stream = descriptor["name"]
            filled = {}
            for key, spec in descriptor["data_keys"].items():
                if spec.get("external"):
                    ext = _external_for(external, desc_of_stream[stream], key)
                    if ext is None:
                        continue
                    sdatum, rows = ext
                    index = (
                        doc["seq_num"] - sdatum["seq_nums"]["start"] + sdatum["indices"]["start"]
                    )
                    doc["data"][key] = event_value(rows, index, list(spec.get("shape") or []))
                    doc["timestamps"].setdefault(key, doc["time"])
                    filled[key] = True
                elif spec.get("dtype") == "array" and isinstance(doc["data"].get(key), list):
                    if (stream, key) not in dtypes:
                        dtypes[(stream, key)] = _stored_dtype(run, stream, key)
                    dtype = dtypes[(stream, key)]
                    if dtype is not None:
                        doc["data"][key] = np.asarray(doc["data"][key], dtype=dtype)
            if filled:
                doc["filled"] = filled
            yield "event", doc
            bar.step()
    finally:
        bar.close()


def _external_for(external, desc_uids, key):
    for uid in desc_uids:
        if (uid, key) in external:
            return external[(uid, key)]
    return None


def _stored_dtype(run, stream: str, key: str) -> np.dtype | None:
    """dtype of a stream's array node, or None when the key lives in the table (small arrays)."""
    base = run[stream].base
    if key not in base:
        return None
    return np.dtype(base[key].structure().data_type.to_numpy_dtype())


# ---------------------------------------------------------------------------- entry points
def count_events(run) -> int:
    """Number of events of a run, from its stop document (or its tables if it has none)."""
    stop = run.metadata.get("stop") or {}
    if stop.get("num_events"):
        return int(sum(stop["num_events"].values()))
    total = 0
    for name in run:
        base = run[name].base
        if "internal" in base:
            total += len(base["internal"].read())
    return total


def replay_documents(
    catalog,
    uid: str,
    *,
    method: str = "arrays",
    progress: bool | Progress | None = None,
    direct: bool = True,
) -> Iterator[tuple[str, dict]]:
    """Yield the filled documents of run ``uid`` of ``catalog``.

    Parameters
    ----------
    catalog : tiled client, str or Path
        A catalog client, a catalog directory or a tiled server URL.
    uid : str
        Full uid or a unique prefix (at least 5 characters).
    method : {"arrays", "export"}
        ``"arrays"``: :func:`documents_from_arrays` (fast); ``"export"``:
        :func:`documents_from_export` (tiled's JSON documents, slow for images).
    progress : bool or callable, optional
        ``True`` for a tqdm progress bar with ETA, or ``progress(n_done, n_total)``.
    direct : bool
        For ``"arrays"``: read local zarr/HDF5/npy files directly and, for an embedded catalog,
        the run's layout from its SQLite file (:mod:`streamer.catalog_sqlite`; no requests).

    Raises
    ------
    RunNotFoundError
        If the uid is not in the catalog (the message lists some that are).
    CatalogUnreadableError
        If the catalog cannot be opened.
    ReplayError
        If the run's data cannot be read.
    """
    run = None
    if method == "arrays" and direct:
        from .catalog_sqlite import run_index

        index = run_index(catalog)
        run = index.run(uid) if index is not None else None
    if run is None:
        run = lookup_run(catalog, uid)
    if method == "arrays":
        return documents_from_arrays(run, progress=progress, direct=direct)
    if method == "export":
        return documents_from_export(run, progress=progress)
    raise ValueError(f"method must be 'arrays' or 'export', not {method!r}")
