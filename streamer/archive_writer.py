"""Write the documents of (possibly interleaved) runs into a tiled catalog, one run at a time.

This is the worker-thread half of :class:`streamer.archive.Archiver`: it routes each document
to its run, gives each run its own ``bluesky_tiled_plugins.TiledWriter`` with a batch size
chosen from the run's first descriptor (see :func:`batch_size_for`), and optionally fills
external detector data so that it is archived inline.

Why fill external data? tiled references an external HDF5 file through one array node per
stream, which must hold exactly that stream's frames in order. An area detector that writes
the frames of several streams into one file (FXI's ``dark``, ``primary`` and ``flat`` share
the file of one ``Andor`` stage, selected by datum ``point_number``) cannot be represented
that way: the archived node is unreadable. With ``handler_registry`` the frames are read
with those handlers (``event_model.Filler``) on the worker thread and stored in the catalog's
own zarr arrays; the descriptor's ``external`` marker is dropped for those keys, and
resource/datum documents are not archived.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["TILED_FIRST_WRITE_LIMIT", "CatalogWriter", "batch_size_for", "event_nbytes"]

#: Above this, tiled 0.2.20 chunks a new array oddly and later appends corrupt its shape.
TILED_FIRST_WRITE_LIMIT = 100_000_000
_ASSET_DOCS = frozenset({"resource", "datum", "datum_page"})


def event_nbytes(descriptor: Mapping) -> int:
    """Bytes of the inline arrays of one event of this descriptor (external keys excluded).

    >>> event_nbytes({"data_keys": {"img": {"dtype": "array", "shape": [4, 4],
    ...                                     "dtype_numpy": "<u2"}}})
    32
    """
    total = 0
    for key in descriptor.get("data_keys", {}).values():
        if key.get("external") is not None or key.get("dtype") != "array":
            continue
        shape = [int(n) for n in key.get("shape") or [] if n is not None]
        itemsize = np.dtype(key.get("dtype_numpy") or "<f8").itemsize
        total += math.prod(shape) * itemsize
    return total


def batch_size_for(descriptor: Mapping, *, max_batch_bytes: int, max_events: int = 256) -> int:
    """Events per TiledWriter batch so that a batch stays within ``max_batch_bytes``.

    >>> batch_size_for({"data_keys": {"img": {"dtype": "array", "shape": [512, 512],
    ...                 "dtype_numpy": "<f4"}}}, max_batch_bytes=32 * 2**20)
    32
    """
    nbytes = event_nbytes(descriptor)
    if nbytes == 0:
        return max_events
    return max(1, min(max_events, max_batch_bytes // nbytes))


def _inline_descriptor(descriptor: Mapping) -> dict:
    """A copy of a descriptor whose external keys are declared inline (after filling)."""
    doc = copy.deepcopy(dict(descriptor))
    for key in doc.get("data_keys", {}).values():
        key.pop("external", None)
    return doc


class _Run:
    def __init__(self, uid: str, start: dict, filler):
        self.uid = uid
        self.pending: list[tuple[str, dict]] = [("start", start)]
        self.writer: Callable[[str, dict], Any] | None = None
        self.batch_size = 1
        self.filler = filler


class CatalogWriter:
    """Route documents to one TiledWriter per run (not thread-safe: one caller thread).

    Parameters
    ----------
    client : tiled client
        The catalog root.
    max_batch_bytes : int
        Target bytes of one TiledWriter batch (must stay under 100 MB, see module docs).
    batch_size : int, optional
        Fixed events per batch, overriding ``max_batch_bytes``.
    handler_registry : mapping, optional
        Spec -> handler class; if given, external data is filled and archived inline.
    writer_factory : callable, optional
        ``writer_factory(client, batch_size) -> callback``; default ``TiledWriter``.

    Attributes
    ----------
    current_run : str or None
        Uid of the run of the document being written (for error reports).
    """

    def __init__(
        self,
        client,
        *,
        max_batch_bytes: int,
        batch_size: int | None = None,
        handler_registry: Mapping[str, Any] | None = None,
        writer_factory: Callable[[Any, int], Callable[[str, dict], Any]] | None = None,
    ):
        if max_batch_bytes >= TILED_FIRST_WRITE_LIMIT:
            raise ValueError(
                f"max_batch_bytes={max_batch_bytes} must stay under {TILED_FIRST_WRITE_LIMIT}: "
                "larger first writes give tiled arrays a wrong, padded shape"
            )
        self.client = client
        self.max_batch_bytes = int(max_batch_bytes)
        self.batch_size = batch_size
        self.handler_registry = handler_registry
        self._factory = writer_factory or _tiled_writer
        self._runs: dict[str, _Run] = {}
        self._run_of: dict[str, str] = {}  # descriptor / resource uid -> run uid
        self.current_run: str | None = None

    def route(self, name: str, doc: Mapping) -> str | None:
        """The uid of the run a document belongs to (None if unknown)."""
        if name == "start":
            return doc["uid"]
        if name in ("descriptor", "resource", "stream_resource", "stop"):
            run_uid = doc.get("run_start")
            if run_uid is None and len(self._runs) == 1:
                run_uid = next(iter(self._runs))  # run_start is optional on resources
            return run_uid
        if name in ("event", "event_page", "stream_datum"):
            return self._run_of.get(doc.get("descriptor", ""))
        if name in ("datum", "datum_page"):
            resource = doc.get("resource", "")
            if isinstance(resource, list):
                resource = resource[0] if resource else ""
            return self._run_of.get(resource)
        return None

    def __call__(self, name: str, doc: dict) -> None:
        """Write one document; raises on failure (``current_run`` names the run)."""
        self.current_run = run_uid = self.route(name, doc)
        if name == "start":
            filler = None
            if self.handler_registry is not None:
                from event_model import Filler

                filler = Filler(self.handler_registry, inplace=False)
                filler("start", doc)
            self._runs[run_uid] = _Run(run_uid, doc, filler)
            return
        run = self._runs.get(run_uid) if run_uid is not None else None
        if run is None:
            raise RuntimeError(f"{name} document of an unknown or already finished run")
        if name in ("descriptor", "resource", "stream_resource"):
            self._run_of[doc["uid"]] = run_uid
        try:
            self._write(run, name, doc)
        finally:
            if name == "stop":
                self._forget(run)

    def _write(self, run: _Run, name: str, doc: dict) -> None:
        if run.filler is not None:
            if name in _ASSET_DOCS:
                run.filler(name, doc)
                return
            if name in ("event", "event_page"):
                name, doc = run.filler(name, doc)
            else:
                run.filler(name, doc)
                if name == "descriptor":
                    doc = _inline_descriptor(doc)
        if run.writer is None:
            if name not in ("descriptor", "stop"):
                run.pending.append((name, doc))
                return
            self._start_writer(run, doc if name == "descriptor" else None)
        elif name == "descriptor":
            self._check_batch(run, doc)
        run.writer(name, doc)

    def _start_writer(self, run: _Run, descriptor: Mapping | None) -> None:
        batch = self.batch_size or (
            batch_size_for(descriptor, max_batch_bytes=self.max_batch_bytes)
            if descriptor is not None
            else 1
        )
        logger.debug("archiving run %s with batches of %d events", run.uid, batch)
        run.batch_size = batch
        run.writer = self._factory(self.client, batch)
        pending, run.pending = run.pending, []
        for name, doc in pending:
            run.writer(name, doc)

    def _check_batch(self, run: _Run, descriptor: Mapping) -> None:
        nbytes = event_nbytes(descriptor) * run.batch_size
        if nbytes >= TILED_FIRST_WRITE_LIMIT:
            logger.warning(
                "run %s: stream %r has batches of %d bytes (batch size %d, chosen from the first "
                "stream); over %d bytes tiled may store its arrays with a wrong shape; pass "
                "batch_size= to the Archiver",
                run.uid,
                descriptor.get("name"),
                nbytes,
                run.batch_size,
                TILED_FIRST_WRITE_LIMIT,
            )

    def _forget(self, run: _Run) -> None:
        if run.filler is not None:
            run.filler.close()
        self._runs.pop(run.uid, None)
        for key in [k for k, v in self._run_of.items() if v == run.uid]:
            del self._run_of[key]

    @property
    def open_runs(self) -> list[str]:
        """Uids of runs started and not yet stopped."""
        return list(self._runs)


def _tiled_writer(client, batch_size: int):
    from bluesky_tiled_plugins import TiledWriter

    return TiledWriter(client, batch_size=batch_size)
