"""Catch-up from the catalog for ``txm-streamer serve`` after a restart.

The runs the service may have missed are those archived in the catalog since the campaign's first
``serve`` (the first ``service_start`` record of the alert journal) whose analysis is not journaled
as finished (``run_done``, written when the run's ``scan_summary`` went out). Each is replayed from
the catalog (:func:`streamer.replay_source.replay_documents`, the fast array path) through the
service's own analyzer, so its alerts carry ``mode: live`` and the fingerprints of the live run;
the journal then suppresses what the previous lifetime had already published.

A run that has no stop document in the catalog yet (still running, or not fully archived) is
*deferred*: checked again at every status interval and replayed once its stop document is there,
unless its live start document arrives first (then it is analysed live). Runs older than the
campaign are left alone: a service joining an existing catalog does not re-mine its history (use
``txm-streamer replay`` for that).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

START_MARGIN_S = 1.0
"""Runs that started this long before the campaign's first ``serve`` still count (clock jitter)."""


class CatalogCatchUp:
    """Replay the runs a :class:`callbacks.serve.LiveService` missed from a catalog directory.

    Parameters
    ----------
    service
        The running service (its analyzer, journal, ``caught_up``/``deferred`` sets, stop flag).
    catalog
        Catalog directory (or tiled URL) the RunEngine side archives into.
    """

    def __init__(self, service: Any, catalog: str | Path) -> None:
        self.service = service
        self.catalog = catalog
        self._client = None
        self.replayed = 0

    def _connect(self):
        from streamer.catalog import CatalogUnreadableError, connect

        if self._client is None:
            try:
                self._client = connect(self.catalog)
            except CatalogUnreadableError as err:
                log.warning("no catch-up yet: %s", err)
                return None
        return self._client

    def startup(self) -> None:
        """Replay the finished runs the journal does not know as analysed; defer running ones."""
        from callbacks.dialects import detect_dialect
        from streamer.catalog_runs import list_runs, run_start

        client = self._connect()
        if client is None:
            return
        journal = self.service.journal
        since = (journal.first_start_ or 0.0) - START_MARGIN_S
        missed = [
            r for r in list_runs(client) if r.time >= since and r.uid not in journal.completed_runs_
        ]
        if not missed:
            log.info("catch-up: no run to analyse from %s", self.catalog)
            return
        log.info("catch-up: %d run(s) of %s not analysed to the end", len(missed), self.catalog)
        for summary in missed:
            if self.service.stop_requested.is_set():
                return
            if detect_dialect(run_start(client, summary.uid)) is None:
                journal.mark_run_completed(summary.uid, reason="not a XANES run")
            elif summary.exit_status is None:
                log.info("catch-up: run %s has no stop document yet; deferred", summary.uid[:8])
                self.service.deferred.add(summary.uid)
            else:
                self.replay(summary.uid)

    def check_deferred(self) -> None:
        """Replay the deferred runs whose stop document has been archived since."""
        from streamer.catalog_runs import lookup_run

        client = self._connect()
        if client is None:
            return
        for uid in sorted(self.service.deferred):
            if self.service.stop_requested.is_set():
                return
            try:
                stop = lookup_run(client, uid).metadata.get("stop")
            except Exception as err:
                log.warning("catch-up: cannot read run %s: %s", uid[:8], err)
                continue
            if stop:
                self.service.deferred.discard(uid)
                self.replay(uid)

    def replay(self, uid: str) -> bool:
        """Feed run ``uid`` from the catalog to the analyzer; ``False`` if interrupted."""
        from streamer.replay_source import replay_documents

        analyzer = self.service.analyzer
        log.info("catch-up: analysing run %s from the catalog", uid[:8])
        self.service.caught_up.add(uid)
        n = 0
        for name, doc in replay_documents(self._client, uid):
            if self.service.stop_requested.is_set():
                log.warning("catch-up of run %s interrupted; it is redone at the next start", uid)
                return False
            if analyzer.queue.depth > 0.5:  # never let the analyzer drop catalog events
                analyzer.flush()
            analyzer(name, doc)
            n += 1
        analyzer.flush()
        self.replayed += 1
        log.info("catch-up: run %s analysed (%d documents)", uid[:8], n)
        return True
