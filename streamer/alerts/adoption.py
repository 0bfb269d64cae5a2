"""Adopting the alerts an earlier lifetime of a publisher left firing, without sending them again.

A service that restarts (``txm-streamer serve`` after a crash or a kill) gets a new publisher whose
memory is empty. The alerts its previous lifetime sent and never resolved are still firing for
the people who saw them; :meth:`~streamer.alerts.AlertPublisher.adopt` (read them back with
:class:`~streamer.alert_journal.AlertJournal`, whose ``inherited_firing_`` folds the
``alerts.jsonl`` log and the journal) gives them back to the new publisher:

- they are held as firing, so they are in the snapshot a (late or re-synchronising) subscriber
  gets, and count in the heartbeats' ``n_firing``;
- a re-statement of one is deduplicated like any firing alert (an *update* only if material), and
  :meth:`~streamer.alerts.AlertPublisher.resolve` resolves it;
- they keep the ``epoch``, ``seq``, ``revision`` and ``time`` they were sent with, so a consumer
  can tell them from alerts of the new lifetime; their updates and resolution are numbered in the
  new epoch (subscribers still see a new epoch, hence a restart), with ``revision`` continuing;
- nothing is sent, except the resolution of the old publisher's own rate-limit summaries
  (``subject="rate_limit:<kind>"``): the new rate limiter starts afresh and would never resolve
  them.

A method rather than a constructor option: the caller decides what to adopt after reading its
journal, possibly after the publisher is bound, and may adopt more than once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .ledger import AlertLedger
from .schema import EVENT_KINDS, dumps, loads, validate_alert

__all__ = ["AdoptingLedger", "adoptable"]

RATE_LIMIT_SUBJECT_PREFIX = "rate_limit:"


def adoptable(alerts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validated copies of published firing ``alerts``; raise on the first that is not one.

    Raises
    ------
    AlertValidationError
        An alert breaks the schema (published fields included).
    ValueError
        An alert is not firing.

    >>> adoptable([{"kind": "data_quality"}])
    Traceback (most recent call last):
    ...
    streamer.alerts.schema.AlertValidationError: alert field 'schema' is missing
    """
    out = []
    for alert in alerts:
        validate_alert(alert)
        if alert["status"] != "firing":
            raise ValueError(
                f"only firing alerts can be adopted; {alert['fingerprint']} is {alert['status']}"
            )
        out.append(loads(dumps(alert)))
    return out


class AdoptingLedger(AlertLedger):
    """An :class:`~streamer.alerts.ledger.AlertLedger` that can adopt firing alerts.

    (:meth:`adopt` belongs in :class:`~streamer.alerts.ledger.AlertLedger` itself; it lives here
    until that module takes it.)
    """

    def adopt(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hold :func:`adoptable` ``alerts`` as firing (events: as recent) without queueing them.

        A fingerprint already held is skipped (what is held is newer); returns copies of the
        alerts adopted and counts them as ``adopted``.
        """
        adopted = []
        with self._lock:
            self._check_open()
            for alert in alerts:
                known = self._recent_events if alert["kind"] in EVENT_KINDS else self._firing
                if alert["fingerprint"] in known:
                    continue
                known[alert["fingerprint"]] = alert
                adopted.append(loads(dumps(alert)))
                self._counts["adopted"] += 1
            for alert in adopted:
                if alert["kind"] == "data_quality" and str(alert.get("subject")).startswith(
                    RATE_LIMIT_SUBJECT_PREFIX
                ):
                    self._resolve(alert["fingerprint"], message="resolved: the publisher restarted")
        return adopted
