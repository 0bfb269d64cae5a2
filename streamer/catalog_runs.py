"""Finding runs in a catalog: look one up by uid (clear errors), read its start, list them all.

The catalog is a tiled client, a directory or a server URL (:func:`streamer.catalog.connect`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import RunNotFoundError, connect

__all__ = ["RunSummary", "list_runs", "lookup_run", "plain", "run_start"]

logger = logging.getLogger(__name__)


def plain(obj: Any) -> Any:
    """Deep-copy tiled's read-only metadata views into plain dicts and lists.

    >>> plain({"a": ({"b": 1},)})
    {'a': [{'b': 1}]}
    """
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def _location(catalog, client) -> str:
    if isinstance(catalog, (str, Path)):
        return str(catalog)
    uri = str(getattr(client, "uri", ""))
    return "" if uri.startswith("http://local-tiled-app") else uri


def lookup_run(catalog, uid: str, *, n_hint: int = 5):
    """Return the run ``uid`` (a full uid or a unique prefix of at least 5 characters).

    Raises
    ------
    RunNotFoundError
        If no run matches; its message names up to ``n_hint`` of the most recent uids.
    ValueError
        If a partial uid is too short or matches several runs.
    """
    client = connect(catalog)
    try:
        return client[uid]
    except KeyError:
        pass
    known = []
    try:
        known = list(client.keys().tail(n_hint))
    except Exception:  # the hint is a courtesy; the missing uid is the error to report
        logger.debug("could not list runs for the not-found hint", exc_info=True)
    raise RunNotFoundError(uid, known, location=_location(catalog, client)) from None


def run_start(catalog, uid: str) -> dict:
    """The start document of run ``uid``, read from its metadata only (no data read)."""
    return plain(lookup_run(catalog, uid).metadata["start"])


@dataclass(frozen=True)
class RunSummary:
    """One line of :func:`list_runs`."""

    uid: str
    scan_id: int | None
    plan_name: str | None
    num_eng: int | None
    time: float
    exit_status: str | None


def _num_eng(start: Mapping) -> int | None:
    if start.get("num_eng") is not None:
        return int(start["num_eng"])
    if start.get("eng_list") is not None:
        return len(start["eng_list"])
    return None


def list_runs(catalog, *, plan_names: Iterable[str] | None = None) -> list[RunSummary]:
    """Summaries of the runs in ``catalog``, oldest first, optionally only some plans.

    Parameters
    ----------
    catalog : tiled client, str or Path
        See :func:`connect`.
    plan_names : iterable of str, optional
        Keep only runs whose start document's ``plan_name`` is one of these.
    """
    from tiled.queries import In

    client = connect(catalog)
    if plan_names is not None:
        client = client.search(In("start.plan_name", list(plan_names)))
    out = []
    for uid, run in client.items():
        metadata = run.metadata
        start = metadata.get("start") or {}
        stop = metadata.get("stop") or {}
        out.append(
            RunSummary(
                uid=uid,
                scan_id=start.get("scan_id"),
                plan_name=start.get("plan_name"),
                num_eng=_num_eng(start),
                time=float(start.get("time", 0.0)),
                exit_status=stop.get("exit_status"),
            )
        )
    out.sort(key=lambda s: s.time)
    return out
