"""The embedded run catalog: a tiled SQLite catalog in a directory, served in-process.

Runs are archived into a directory the user names, with this layout::

    DIRECTORY/
        catalog.db      the tiled catalog (SQLite): run metadata, data sources, assets
        tables.db       tabular event data (SQLite, one table per stream)
        data/           arrays written by tiled (zarr), e.g. inline detector frames

External detector files (the HDF5 files a detector writes itself, referenced by
``resource``/``datum`` documents) stay where they are; tiled serves them only from the
*readable storage* directories the catalog is opened with (the catalog directory is always
one of them).

:func:`open_catalog` builds a tiled app around that directory and returns a client that talks
to it in-process (no server, no socket). The same directory can be served to a whole facility
with ``tiled serve config`` (see ``docs/tiled-server.md``); :func:`connect` accepts either a
directory or the URL of such a server.

The read-side helpers shared by replay (``list_runs``, ``lookup_run`` with a clear
:class:`RunNotFoundError`, ``run_start``) are in :mod:`streamer.catalog_runs`.
"""

from __future__ import annotations

import copy
import logging
import warnings
import weakref
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "CATALOG_DB",
    "DATA_DIR",
    "TABLES_DB",
    "CatalogError",
    "CatalogLayout",
    "CatalogUnreadableError",
    "RunNotFoundError",
    "catalog_directory",
    "connect",
    "open_catalog",
]

CATALOG_DB = "catalog.db"
TABLES_DB = "tables.db"
DATA_DIR = "data"

#: Spec of the catalog's root node, so clients get ``CatalogOfBlueskyRuns`` conveniences
#: (partial-uid and scan_id lookup).
ROOT_SPEC = ("CatalogOfBlueskyRuns", "3.0")

#: The server-side exporter that makes ``run.documents()`` work (registered by
#: :func:`open_catalog`; named in ``docs/tiled-config.yml`` for a server).
JSON_SEQ_EXPORTER = "bluesky_tiled_plugins.exporters:json_seq_exporter"


class CatalogError(Exception):
    """Base class of the errors raised by the catalog and replay helpers."""


class CatalogUnreadableError(CatalogError, OSError):
    """The catalog at ``path`` is missing, is not a tiled catalog, or cannot be read."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read the run catalog at {self.path}: {reason}")

    def __str__(self) -> str:
        return self.args[0]


class RunNotFoundError(CatalogError, KeyError):
    """No run with this uid in the catalog; ``known`` holds a few uids that do exist."""

    def __init__(self, uid: str, known: Sequence[str] = (), *, location: str = ""):
        self.uid = uid
        self.known = list(known)
        hint = (
            "; the catalog holds e.g. " + ", ".join(self.known)
            if self.known
            else "; the catalog holds no runs"
        )
        where = f" in {location}" if location else ""
        super().__init__(f"no run with uid {uid!r}{where}{hint}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


@dataclass(frozen=True)
class CatalogLayout:
    """Paths of one catalog directory (see the module docstring)."""

    directory: Path

    @property
    def catalog_db(self) -> Path:
        return self.directory / CATALOG_DB

    @property
    def tables_db(self) -> Path:
        return self.directory / TABLES_DB

    @property
    def data_dir(self) -> Path:
        return self.directory / DATA_DIR

    def catalog_kwargs(self, readable_storage: Iterable[str | Path] = ()) -> dict[str, Any]:
        """Keyword arguments of ``tiled.catalog.from_uri`` for this directory."""
        readable = [str(self.directory)]
        readable += [str(Path(p).resolve()) for p in readable_storage]
        return {
            "uri": f"sqlite:///{self.catalog_db}",
            "writable_storage": [str(self.data_dir), f"sqlite:///{self.tables_db}"],
            "readable_storage": list(dict.fromkeys(readable)),
            "specs": [{"name": ROOT_SPEC[0], "version": ROOT_SPEC[1]}],
        }


def _serialization_registry():
    """A copy of tiled's default exporters plus the bluesky JSON-seq document exporter."""
    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.media_type_registration import default_serialization_registry

    registry = copy.deepcopy(default_serialization_registry)
    registry.register("BlueskyRun", "application/json-seq", json_seq_exporter)
    return registry


@contextmanager
def _quiet_alembic():
    """Silence alembic's INFO lines (schema checks on every open) while a catalog opens."""
    alembic_logger = logging.getLogger("alembic")
    level = alembic_logger.level
    alembic_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        alembic_logger.setLevel(level)


def _initialize_database(uri: str) -> None:
    """Create tiled's catalog tables in a new SQLite file and stamp its schema revision.

    This is what ``tiled catalog init`` does, run in this process (a fresh thread with its own
    event loop) instead of a subprocess, which would cost seconds of interpreter start-up.
    """
    import asyncio
    import threading

    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
    from tiled.catalog.core import initialize_database
    from tiled.utils import ensure_specified_sql_driver

    uri = ensure_specified_sql_driver(uri)
    errors: list[BaseException] = []

    async def create_tables():
        engine = create_async_engine(uri)
        try:
            await initialize_database(engine)
        finally:
            await engine.dispose()

    def work():
        try:
            asyncio.run(create_tables())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # alembic's ini notice
                stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)
        except BaseException as err:  # re-raised in the calling thread below
            errors.append(err)

    thread = threading.Thread(target=work, name="txm-catalog-init")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def open_catalog(
    directory: str | Path,
    *,
    create: bool = True,
    readable_storage: Iterable[str | Path] = (),
):
    """Open (or create) the embedded catalog in ``directory`` and return a tiled client.

    The client talks to a tiled app running in this process: no server, no socket. It is a
    ``CatalogOfBlueskyRuns`` (``client["a1b2c3"]`` finds a run by partial uid,
    ``client[42]`` by scan_id). Close it with ``client.context.close()``.

    Parameters
    ----------
    directory : str or Path
        The catalog directory (created if ``create``).
    create : bool
        Create the directory and an empty catalog if absent. With ``False`` a missing
        catalog raises :class:`CatalogUnreadableError`.
    readable_storage : iterable of str or Path
        Extra directories tiled may read external detector files from (the catalog
        directory is always readable). Files outside them are refused when read.

    Returns
    -------
    tiled.client.container.Container
        The root of the catalog (a ``CatalogOfBlueskyRuns`` client).

    Raises
    ------
    CatalogUnreadableError
        If the catalog is missing (and ``create`` is false) or cannot be opened.
    """
    layout = CatalogLayout(Path(directory).expanduser().resolve())
    exists = layout.catalog_db.is_file()
    if not exists and not create:
        reason = (
            "no such directory"
            if not layout.directory.exists()
            else f"no {CATALOG_DB} in it (not a txm-streamer/tiled catalog directory)"
        )
        raise CatalogUnreadableError(layout.directory, reason)
    try:
        with _quiet_alembic():
            return _open(layout, exists=exists, readable_storage=readable_storage)
    except CatalogError:
        raise
    except Exception as err:
        raise CatalogUnreadableError(layout.directory, f"{type(err).__name__}: {err}") from err


def _open(layout: CatalogLayout, *, exists: bool, readable_storage: Iterable[str | Path]):
    """Build the in-process tiled app over ``layout`` and a client talking to it."""
    from tiled.catalog import from_uri
    from tiled.client import from_context
    from tiled.client.context import Context
    from tiled.server.app import build_app

    if not exists:
        logger.info("creating a run catalog in %s", layout.directory)
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    kwargs = layout.catalog_kwargs(readable_storage)
    if not exists:
        _initialize_database(kwargs["uri"])
    tree = from_uri(**kwargs)
    app = build_app(tree, serialization_registry=_serialization_registry())
    with warnings.catch_warnings():
        # tiled's in-process transport is starlette's TestClient; its httpx notice is noise.
        warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
        context = Context.from_app(app)
    client = from_context(context)
    len(client)  # one real query: fails here, not later, on a corrupt database
    _EMBEDDED[context] = layout.directory
    return client


#: Directory of each embedded catalog opened in this process, by its client's context.
_EMBEDDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def catalog_directory(catalog) -> Path | None:
    """The directory of an embedded catalog (a directory, or a client :func:`open_catalog` made).

    None for a tiled server's URL or client, or a directory without a catalog.
    """
    if isinstance(catalog, (str, Path)):
        if str(catalog).startswith(("http://", "https://")):
            return None
        directory = Path(catalog).expanduser().resolve()
        return directory if (directory / CATALOG_DB).is_file() else None
    context = getattr(catalog, "context", None)
    try:
        return _EMBEDDED.get(context)
    except TypeError:  # not weak-referenceable: not one of ours
        return None


def connect(catalog, *, create: bool = False, api_key: str | None = None, **kwargs):
    """Return a tiled client for a catalog given as a client, a directory or a server URL.

    Parameters
    ----------
    catalog : tiled client, str or Path
        An open client (returned as is), an ``http(s)://`` URL of a tiled server, or a
        catalog directory (opened with :func:`open_catalog`).
    create : bool
        Passed to :func:`open_catalog` for directories.
    api_key : str, optional
        API key for a server (else tiled's usual ``TILED_API_KEY`` environment variable).
    **kwargs
        Passed to :func:`open_catalog` (e.g. ``readable_storage``).

    Raises
    ------
    CatalogUnreadableError
        If the directory or server cannot be read.
    """
    if not isinstance(catalog, (str, Path)):
        return catalog
    text = str(catalog)
    if text.startswith(("http://", "https://")):
        from tiled.client import from_uri

        try:
            return from_uri(text, api_key=api_key)
        except Exception as err:
            raise CatalogUnreadableError(text, f"{type(err).__name__}: {err}") from err
    return open_catalog(catalog, create=create, **kwargs)
