"""The ``alerts.jsonl`` log: every published alert and resolution, one JSON object per line.

The log is the durable record of what the publisher sent (ZeroMQ subscribers may come and go). It is
appended to, one line per alert, flushed after each line so a crash loses at most the line being
written; :func:`read_alert_log` reads it back and tolerates a truncated last line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .schema import dumps, loads

log = logging.getLogger(__name__)


class AlertLog:
    """Append-only JSON-lines file of alerts.

    Parameters
    ----------
    path
        File to append to; its parent directory is created if needed.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "alerts.jsonl"
    >>> with AlertLog(path) as alert_log:
    ...     alert_log.write({"seq": 1, "message": "hello"})
    >>> [a["seq"] for a in read_alert_log(path)]
    [1]
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")
        self.n_written = 0

    def write(self, alert: Mapping[str, Any]) -> None:
        """Append one alert as one line and flush it to the operating system."""
        self.write_line(dumps(alert))

    def write_line(self, payload: bytes) -> None:
        """Append one already-serialised JSON alert (no newline inside) and flush it."""
        if self._file.closed:
            raise ValueError(f"alert log {self.path} is closed")
        self._file.write(payload + b"\n")
        self._file.flush()
        self.n_written += 1

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> AlertLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_json_lines(
    path: str | os.PathLike[str], *, parse: Callable[[bytes], Any] = loads, what: str = "JSON alert"
) -> Iterator[Any]:
    """Yield ``parse(line)`` for every non-blank line of a JSON-lines file, in order.

    A malformed last line (a write cut short by a crash) is skipped with a warning; a malformed
    line anywhere else raises ``ValueError`` naming the line and ``what`` it should have been.
    """
    with open(path, "rb") as file:
        lines = file.read().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield parse(line)
        except ValueError as err:
            if number == len(lines):
                log.warning("%s: skipping truncated last line %d (%s)", path, number, err)
                return
            raise ValueError(f"{path}:{number}: not a {what}: {err}") from err


def read_alert_log(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the alerts of an ``alerts.jsonl`` file in order (see :func:`read_json_lines`)."""
    return read_json_lines(path)
