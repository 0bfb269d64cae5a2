"""Flow control for the publisher: per-kind token buckets and a bounded, severity-aware outbox.

Neither class locks: the publisher calls them under its own lock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any


def is_material_update(
    previous: Mapping[str, Any], new: Mapping[str, Any], *, tolerance: float
) -> bool:
    """Whether ``new`` re-states a firing alert with a change worth sending (an *update*).

    True when ``severity``, ``provisional`` or ``extra`` (where callers put qualitative context,
    such as a guessed anomaly kind) differ, or ``score`` moved by more than ``tolerance``
    relative to the last sent score (either way). Everything else (``time``, ``energy_index``,
    ``message``, attribute and population values) is re-evaluation noise.

    >>> old = {"severity": "warning", "provisional": True, "score": 5.0, "extra": {}}
    >>> is_material_update(old, {**old, "score": 5.2}, tolerance=0.1)
    False
    >>> is_material_update(old, {**old, "provisional": False}, tolerance=0.1)
    True
    >>> is_material_update(old, {**old, "extra": {"kind_guess": "reduced"}}, tolerance=0.1)
    True
    """
    if any(previous.get(k) != new.get(k) for k in ("severity", "provisional", "extra")):
        return True
    old, score = previous["score"], new["score"]
    if old is None or score is None:
        return old != score
    return abs(score - old) > tolerance * abs(old) if old else score != old


class TokenBucket:
    """Allow ``rate`` events per second on average, bursts of up to ``burst``.

    Parameters
    ----------
    rate
        Refill rate, tokens per second (> 0).
    burst
        Capacity; the bucket starts full.
    clock
        Monotonic clock in seconds (injectable for tests).

    Examples
    --------
    >>> now = [0.0]
    >>> bucket = TokenBucket(1.0, burst=2, clock=lambda: now[0])
    >>> [bucket.take() for _ in range(3)]
    [True, True, False]
    >>> now[0] = 1.0
    >>> bucket.take(), bucket.take()
    (True, False)
    """

    def __init__(self, rate: float, *, burst: float, clock: Callable[[], float] = time.monotonic):
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"need rate > 0 and burst >= 1; got rate={rate}, burst={burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> bool:
        """Consume one token if there is one; return whether the event may pass."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def is_full(self) -> bool:
        """Whether the bucket has refilled completely (the burst is over)."""
        self._refill()
        return self._tokens >= self.burst


class Outbox:
    """Bounded FIFO of messages waiting for the sender thread, with a priority overload policy.

    When full, a new item evicts the **oldest item of the lowest rank** strictly below its own
    (debug before info before warning...); if there is none, the new item is refused. Callers count
    both outcomes.

    Parameters
    ----------
    maxlen
        Capacity (>= 1).

    Examples
    --------
    >>> box = Outbox(2)
    >>> box.put("a", rank=1), box.put("b", rank=0)
    ((True, None), (True, None))
    >>> box.put("c", rank=2)      # evicts the lowest rank, "b"
    (True, 'b')
    >>> box.put("d", rank=0)      # nothing lower to evict: refused
    (False, None)
    >>> box.drain()
    ['a', 'c']
    """

    def __init__(self, maxlen: int):
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1; got {maxlen}")
        self.maxlen = int(maxlen)
        self._items: deque[tuple[int, Any]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any, *, rank: int) -> tuple[bool, Any]:
        """Append ``item``; return ``(accepted, evicted_item_or_None)``."""
        evicted = None
        if len(self._items) >= self.maxlen:
            lowest = min(range(len(self._items)), key=lambda i: (self._items[i][0], i))
            if self._items[lowest][0] >= rank:
                return False, None
            evicted = self._items[lowest][1]
            del self._items[lowest]
        self._items.append((rank, item))
        return True, evicted

    def drain(self) -> list[Any]:
        """Remove and return every queued item, oldest first."""
        items = [item for _, item in self._items]
        self._items.clear()
        return items


class RateLimiter:
    """Per-kind token buckets whose excess is counted and summarised, never dropped silently.

    Parameters
    ----------
    max_rate_per_s
        Sustained alerts per second, one number for every kind or a mapping kind -> rate (kinds
        not in the mapping are unlimited); ``None`` disables rate limiting.
    burst
        Bucket capacity (default: ``max(1, 2 * rate)``).
    summary_interval
        Seconds between two summaries of the same kind while it is being limited.
    clock
        Monotonic clock in seconds (injectable for tests).

    Notes
    -----
    While alerts of a kind are suppressed, :meth:`due` returns at most one ``"fire"`` summary per
    ``summary_interval`` (a ``data_quality`` alert with subject ``rate_limit:<kind>``, counting what
    was suppressed), and a ``"resolve"`` once the kind's bucket has refilled.

    Examples
    --------
    >>> now = [0.0]
    >>> limiter = RateLimiter(1.0, burst=1, clock=lambda: now[0])
    >>> limiter.allow("new_cluster", mode="live", message="a"), limiter.allow(
    ...     "new_cluster", mode="live", message="b")
    (True, False)
    >>> [(action, fields["attributes"]["suppressed"]) for action, fields in limiter.due()]
    [('fire', 1)]
    >>> now[0] = 5.0
    >>> [action for action, _ in limiter.due()]
    ['resolve']
    """

    MAX_EXAMPLES = 5

    def __init__(
        self,
        max_rate_per_s: float | dict[str, float] | None,
        *,
        burst: float | None = None,
        summary_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_rate_per_s is None:
            rates: dict[str, float] = {}
        elif isinstance(max_rate_per_s, dict):
            rates = dict(max_rate_per_s)
        else:
            from .schema import KINDS

            rates = dict.fromkeys(KINDS, float(max_rate_per_s))
        self.buckets = {
            kind: TokenBucket(rate, burst=burst or max(1.0, 2.0 * rate), clock=clock)
            for kind, rate in rates.items()
        }
        self.summary_interval = float(summary_interval)
        self._clock = clock
        self.suppressed_total: dict[str, int] = dict.fromkeys(rates, 0)
        self._pending: dict[str, int] = dict.fromkeys(rates, 0)
        self._examples: dict[str, list[str]] = {kind: [] for kind in rates}
        self._mode: dict[str, str] = dict.fromkeys(rates, "live")
        self._active_since: dict[str, float | None] = dict.fromkeys(rates)
        self._last_summary: dict[str, float] = dict.fromkeys(rates, -float("inf"))

    def allow(self, kind: str, *, mode: str, message: str) -> bool:
        """Whether one alert of ``kind`` may be sent now; count and remember it if not."""
        bucket = self.buckets.get(kind)
        if bucket is None or bucket.take():
            return True
        self.suppressed_total[kind] += 1
        self._pending[kind] += 1
        self._mode[kind] = mode
        if len(self._examples[kind]) < self.MAX_EXAMPLES:
            self._examples[kind].append(message)
        return False

    def due(self) -> list[tuple[str, dict[str, Any]]]:
        """Summaries to publish now: ``("fire", make_alert fields)`` or ``("resolve", fields)``."""
        now = self._clock()
        actions = []
        for kind, bucket in self.buckets.items():
            pending = self._pending[kind]
            fields: dict[str, Any] = {
                "severity": "warning",
                "subject": f"rate_limit:{kind}",
                "mode": self._mode[kind],
            }
            if pending and now - self._last_summary[kind] >= self.summary_interval:
                if self._active_since[kind] is None:
                    self._active_since[kind] = now
                fields["attributes"] = {
                    "kind": kind,
                    "suppressed": pending,
                    "suppressed_total": self.suppressed_total[kind],
                    "max_rate_per_s": bucket.rate,
                    "burst": bucket.burst,
                }
                fields["extra"] = {"examples": self._examples[kind]}
                fields["message"] = (
                    f"rate limit: {pending} {kind} alerts suppressed (limit {bucket.rate:g}/s, "
                    f"burst {bucket.burst:g}; {self.suppressed_total[kind]} in total)"
                )
                actions.append(("fire", fields))
                self._pending[kind] = 0
                self._examples[kind] = []
                self._last_summary[kind] = now
            elif self._active_since[kind] is not None and not pending and bucket.is_full():
                fields["message"] = f"rate limit for {kind} alerts no longer active"
                actions.append(("resolve", fields))
                self._active_since[kind] = None
        return actions
