"""The alert sink of a restartable service: publish what the journal says was not published yet.

:class:`JournaledSink` sits between the analyzer and the publisher of ``txm-streamer serve``; it
suppresses an alert whose state an earlier lifetime already published (see
:mod:`streamer.alert_journal` for the states, the journal file and its durability), journals
what it publishes, and hands the publisher the alerts an earlier lifetime left firing
(:meth:`JournaledSink.adopt_inherited`).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "journal.jsonl"
>>> sent = []
>>> class Publisher:
...     def publish(self, alert):
...         sent.append(alert)
...         return {**alert, "seq": len(sent), "epoch": "e1", "revision": 0}
>>> from streamer.alerts import make_alert
>>> warn = make_alert("anomalous_particle", run_uid="r1", particle={"id": 3}, severity="warning",
...                   energy_index=10, n_energies=50)
>>> sink = JournaledSink(Publisher(), path)
>>> sink(warn)["seq"]
1
>>> sink.close()
>>> sink = JournaledSink(Publisher(), path)             # a restarted service
>>> sink(warn) is None, sink.stats["suppressed"]         # the same state: not published again
(True, 1)
>>> confirmed = {**warn, "severity": "critical", "provisional": False, "energy_index": 49}
>>> sink(confirmed)["seq"]                               # a new state: published
2
>>> sink.close()

A publisher that can :meth:`~streamer.alerts.AlertPublisher.adopt` gets the alerts left firing
through :meth:`JournaledSink.adopt_inherited`, before the first alert of the new lifetime.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

from streamer.alert_journal import AlertJournal, alert_state

__all__ = ["JournaledSink"]

log = logging.getLogger(__name__)


class _Publisher(Protocol):
    def publish(self, alert: Mapping[str, Any]) -> dict[str, Any] | None: ...


class JournaledSink:
    """An alert sink that publishes through ``publisher`` and journals what it published.

    Parameters
    ----------
    publisher
        An :class:`~streamer.alerts.AlertPublisher` (anything with ``publish(alert)`` returning the
        sent alert or ``None``).
    journal
        An :class:`AlertJournal`, or a path to open one at (with ``fsync`` and ``delivery_log``).
    fsync, delivery_log
        Options of the :class:`AlertJournal` opened from a path.

    Notes
    -----
    A resolution of a fingerprint whose firing state was suppressed must reach a publisher that
    holds the fingerprint as firing (a publisher drops a resolution of an alert it does not hold).
    :meth:`adopt_inherited` hands the publisher the alerts left firing, so their resolutions go
    straight out. For a fingerprint the publisher does not hold (a publisher without ``adopt``,
    or a journal that cannot tell what was left firing), the sink falls back to re-publishing the
    suppressed firing state first (marked ``extra["restored_after_restart"] = True``, counted as
    ``restored``), then the resolution: subscribers then see that firing state twice, but never
    miss the resolution.
    """

    def __init__(
        self,
        publisher: _Publisher,
        journal: AlertJournal | str | os.PathLike[str],
        *,
        fsync: str = "line",
        delivery_log: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(journal, AlertJournal):
            journal = AlertJournal(journal, fsync=fsync, delivery_log=delivery_log)
        self.publisher = publisher
        self.journal = journal
        self.counts: Counter[str] = Counter()
        self._held_back: dict[str, dict[str, Any]] = {}  # fingerprint -> suppressed firing alert
        self._adopted: set[str] = set()  # fingerprints the publisher holds from an earlier lifetime
        self._lock = threading.Lock()

    def adopt_inherited(self) -> list[dict[str, Any]]:
        """Give the publisher the alerts earlier lifetimes left firing, without sending them.

        Call it once, right after a restart and before the first alert. Returns the alerts the
        publisher adopted (empty if it has no ``adopt`` method: resolutions then fall back to
        re-publishing the firing state, see the class notes). An alert the publisher refuses
        (``ValueError``: it breaks the current schema) is logged and left to that fallback.
        """
        adopt = getattr(self.publisher, "adopt", None)
        if adopt is None:
            return []
        adopted: list[dict[str, Any]] = []
        with self._lock:
            for alert in self.journal.inherited_firing_.values():
                try:
                    adopted += adopt([alert])
                except ValueError as err:
                    log.warning("cannot adopt alert %s: %s", alert.get("fingerprint"), err)
            self._adopted.update(a["fingerprint"] for a in adopted)
            self.counts["adopted"] += len(adopted)
        return adopted

    def __call__(self, alert: Mapping[str, Any]) -> dict[str, Any] | None:
        """Publish ``alert`` unless its state was already published; return what was sent."""
        with self._lock:
            out = self._submit(dict(alert))
            if alert.get("kind") == "scan_summary" and alert.get("run_uid"):
                self.journal.mark_run_completed(str(alert["run_uid"]))
            return out

    publish = __call__

    def _submit(self, alert: dict[str, Any]) -> dict[str, Any] | None:
        state = alert_state(alert)
        fingerprint, status = state[0], state[1]
        self.counts["received"] += 1
        if state in self.journal.published_:
            self.counts["suppressed"] += 1
            if status == "firing":
                self._held_back[fingerprint] = alert
            log.debug("suppressed an already published %s alert (%s)", alert.get("kind"), state)
            return None
        held = self._held_back.pop(fingerprint, None)
        if held is not None and status == "resolved" and fingerprint not in self._adopted:
            log.info("re-publishing the firing state of %s so that it can be resolved", fingerprint)
            extra = {**(held.get("extra") or {}), "restored_after_restart": True}
            restored = self.publisher.publish({**held, "extra": extra})
            if restored is not None:
                self.counts["restored"] += 1
                self.journal.record_alert(restored)
        sent = self.publisher.publish(alert)
        if sent is not None:
            self.counts["published"] += 1
            self.journal.record_alert(sent)
            if status == "resolved":
                self._adopted.discard(fingerprint)  # no longer held by the publisher
        return sent

    @property
    def stats(self) -> dict[str, int]:
        """Counters: received, published, suppressed, adopted, restored."""
        keys = ("received", "published", "suppressed", "adopted", "restored")
        return {k: self.counts[k] for k in keys}

    def close(self) -> None:
        """Close the journal (not the publisher, which the caller owns)."""
        self.journal.close()
