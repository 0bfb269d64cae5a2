"""Read an embedded catalog's run layout straight from its SQLite file, without HTTP requests.

Replaying a run through the tiled client costs about eight requests (the run, its streams, each
stream's parts, each stream's event table), each one a trip through tiled's in-process ASGI app,
its async SQL layer and its serialisers: about 0.45 s of CPU per run here, 18 s for a campaign of
40 runs, more than reading the frames themselves. For an embedded catalog (a directory opened
with :func:`streamer.catalog.open_catalog` in this process) the same layout is a handful of
indexed queries on ``catalog.db``: :class:`SqliteRunIndex` returns objects that look, to
:func:`streamer.replay_source.documents_from_arrays`, like the tiled client's run, streams and
nodes (``metadata``, ``items()``, ``structure()``, ``data_sources()``, ``read()``).

Why this is safe
----------------
- It reads only what tiled's own catalog adapter reads (nodes, their data sources, structures
  and assets), in the same child order (tiled's default sorting: by node id), and builds the
  structures with tiled's own classes; the event tables are read by tiled's own
  :class:`tiled.adapters.sql.SQLAdapter`, exactly as the server does before serialising them.
- The database schema is checked: only the alembic revisions in :data:`KNOWN_REVISIONS` (the
  catalog schema of the pinned tiled version) are read this way. Any other revision, a uid that
  is not an exact key (partial uids), a node kind it does not know or an unregistered table
  storage makes :meth:`SqliteRunIndex.run` return None and the caller uses the tiled client,
  with a logged warning for anything but a partial uid.
- Array rows not on this machine are read through the tiled client, node by node.
- The tests compare the documents of both paths for the same catalog.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import CATALOG_DB, catalog_directory, connect

logger = logging.getLogger(__name__)

__all__ = ["KNOWN_REVISIONS", "SqliteRunIndex", "close_run_indexes", "run_index"]

#: alembic revisions of tiled's catalog schema this module reads (tiled 0.2.20).
KNOWN_REVISIONS = frozenset({"917dbbcfc4b1"})

_TABLE_MIMETYPE = "application/x-tiled-sql-table"


class _Unsupported(Exception):
    """Something the direct reader does not handle: the caller uses the tiled client."""


@dataclass(frozen=True)
class _Asset:
    data_uri: str
    is_directory: bool
    parameter: str | None
    num: int | None


@dataclass(frozen=True)
class _DataSource:
    mimetype: str
    parameters: dict
    structure: Any
    assets: list


class _ArrayNode:
    """An array node: ``structure()``, ``data_sources()``; slicing goes through the client."""

    def __init__(self, structure, sources: list, client_node: Callable[[], Any]):
        self._structure, self._sources, self._client_node = structure, sources, client_node

    def structure(self):
        return self._structure

    def data_sources(self) -> list:
        return self._sources

    def __getitem__(self, index):  # rows that are not in local files
        return self._client_node()[index]


class _TableNode:
    """A stream's event table, read by tiled's own SQL adapter."""

    def __init__(self, source: _DataSource):
        self._source = source

    def read(self):
        from tiled.adapters.sql import SQLAdapter

        params = self._source.parameters
        adapter = SQLAdapter(
            self._source.assets[0].data_uri,
            structure=self._source.structure,
            table_name=params["table_name"],
            dataset_id=params["dataset_id"],
            order_by_args=params.get("order_by_args"),
            primary_key=params.get("primary_key"),
        )
        return adapter.read()


class _Container:
    """A run or a stream: ``metadata``, ``items()``; ``base`` and ``include_data_sources()``."""

    def __init__(self, metadata: dict, children: list[tuple[str, Any]]):
        self.metadata = metadata
        self._children = children

    @property
    def base(self) -> _Container:
        return self

    def include_data_sources(self) -> _Container:
        return self

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._children)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._children)

    def __getitem__(self, key: str):
        for k, v in self._children:
            if k == key:
                return v
        raise KeyError(key)


class SqliteRunIndex:
    """Run layouts of an embedded catalog, read from ``catalog.db`` (see the module docstring).

    Parameters
    ----------
    directory : str or Path
        The catalog directory.
    client : tiled client
        The catalog's client, open in this process (it registers the table storage; array rows
        that are not local are read through it).

    Raises
    ------
    ValueError
        If the directory holds no catalog of a known schema revision.
    """

    def __init__(self, directory: str | Path, client: Any):
        path = Path(directory) / CATALOG_DB
        if not path.is_file():
            raise ValueError(f"no {CATALOG_DB} in {directory}")
        self.directory = Path(directory)
        self._client = client
        self._lock = threading.Lock()
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        try:
            (revision,) = self._db.execute("SELECT version_num FROM alembic_version").fetchone()
        except (sqlite3.Error, TypeError) as err:
            self.close()
            raise ValueError(f"{path} has no readable schema revision: {err}") from err
        if revision not in KNOWN_REVISIONS:
            self.close()
            raise ValueError(
                f"{path} has catalog schema revision {revision}; this reader knows "
                f"{sorted(KNOWN_REVISIONS)}"
            )

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def run(self, uid: str) -> _Container | None:
        """The run whose key is exactly ``uid`` as a client-like container, or None.

        None (use the tiled client) for a partial uid, or anything this reader does not handle
        (logged as a warning).
        """
        try:
            with self._lock:  # one connection, shared by the threads of this process
                row = self._db.execute(
                    "SELECT id, metadata FROM nodes WHERE parent = 0 AND key = ?", (uid,)
                ).fetchone()
                if row is None:
                    return None
                return self._run(uid, row[0], json.loads(row[1]))
        except (_Unsupported, KeyError, ValueError, TypeError, sqlite3.Error) as err:
            logger.warning(
                "run %s: reading its layout from %s failed (%s: %s); using the tiled client",
                uid[:8], CATALOG_DB, type(err).__name__, err,
            )  # fmt: skip
            return None

    # ---------------------------------------------------------------- internals
    def _children(self, node_id: int) -> list[tuple[int, str, str, dict]]:
        rows = self._db.execute(
            "SELECT id, key, structure_family, metadata FROM nodes WHERE parent = ? ORDER BY id",
            (node_id,),
        ).fetchall()
        return [(i, k, family, json.loads(meta)) for i, k, family, meta in rows]

    def _run(self, uid: str, run_id: int, metadata: dict) -> _Container:
        streams = []
        for stream_id, name, family, stream_meta in self._children(run_id):
            if family != "container":
                raise _Unsupported(f"run child {name!r} is a {family}, not a stream container")
            parts = []
            for node_id, key, part_family, _ in self._children(stream_id):
                sources = self._data_sources(node_id, part_family)
                if part_family == "table":
                    if len(sources) != 1 or sources[0].mimetype != _TABLE_MIMETYPE:
                        raise _Unsupported(f"table {name}/{key} is not a tiled SQL table")
                    self._check_table_storage(sources[0])
                    parts.append((key, _TableNode(sources[0])))
                elif part_family == "array":
                    if not sources:
                        raise _Unsupported(f"array {name}/{key} has no data source")
                    node = self._client_node(uid, name, key)
                    parts.append((key, _ArrayNode(sources[0].structure, sources, node)))
                else:
                    raise _Unsupported(f"{name}/{key} is a {part_family} node")
            streams.append((name, _Container(stream_meta, parts)))
        return _Container(metadata, streams)

    def _data_sources(self, node_id: int, family: str) -> list[_DataSource]:
        from tiled.structures.array import ArrayStructure
        from tiled.structures.table import TableStructure

        build = {"array": ArrayStructure.from_json, "table": TableStructure.from_json}[family]
        out = []
        rows = self._db.execute(
            "SELECT d.id, d.mimetype, d.parameters, d.structure_family, s.structure "
            "FROM data_sources d LEFT JOIN structures s ON s.id = d.structure_id "
            "WHERE d.node_id = ? ORDER BY d.id",
            (node_id,),
        ).fetchall()
        for source_id, mimetype, parameters, source_family, structure in rows:
            if source_family != family or structure is None:
                raise _Unsupported(
                    f"data source {source_id} is a {source_family} without structure"
                )
            assets = [
                _Asset(uri, bool(is_dir), parameter, num)
                for uri, is_dir, parameter, num in self._db.execute(
                    "SELECT a.data_uri, a.is_directory, x.parameter, x.num "
                    "FROM data_source_asset_association x JOIN assets a ON a.id = x.asset_id "
                    "WHERE x.data_source_id = ? ORDER BY x.num, a.id",
                    (source_id,),
                )
            ]
            params = json.loads(parameters or "{}")
            out.append(_DataSource(mimetype, params, build(json.loads(structure)), assets))
        return out

    @staticmethod
    def _check_table_storage(source: _DataSource) -> None:
        from tiled.storage import get_storage

        if len(source.assets) != 1:
            raise _Unsupported("a SQL table with several assets")
        try:
            get_storage(source.assets[0].data_uri)
        except KeyError as err:
            raise _Unsupported("the table storage is not registered in this process") from err

    def _client_node(self, uid: str, stream: str, key: str) -> Callable[[], Any]:
        def node():
            return self._client[uid][stream].base[key]

        return node


_INDEXES: dict[Path, SqliteRunIndex | None] = {}
_INDEXES_LOCK = threading.Lock()


def run_index(catalog: Any) -> SqliteRunIndex | None:
    """The :class:`SqliteRunIndex` of an embedded catalog (one per directory), or None.

    ``catalog`` is a directory or a client :func:`streamer.catalog.open_catalog` returned; None
    for a tiled server, or a catalog of an unknown schema (logged once as a warning).
    """
    directory = catalog_directory(catalog)
    if directory is None:
        return None
    with _INDEXES_LOCK:
        if directory not in _INDEXES:
            client = connect(catalog if not isinstance(catalog, (str, Path)) else directory)
            try:
                _INDEXES[directory] = SqliteRunIndex(directory, client)
            except ValueError as err:
                logger.warning("%s; run layouts are read through the tiled client", err)
                _INDEXES[directory] = None
        return _INDEXES[directory]


def close_run_indexes() -> None:
    """Close the indexes :func:`run_index` opened (their clients stay open)."""
    with _INDEXES_LOCK:
        while _INDEXES:
            _, index = _INDEXES.popitem()
            if index is not None:
                index.close()
