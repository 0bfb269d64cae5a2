"""``txm-streamer alerts``: subscribe and print alerts for beamline staff, one line each.

A line reads ``time  SEVERITY  kind  scan  particle  message``, the severity coloured with ANSI
codes when standard output is a terminal and ``NO_COLOR`` is unset; ``--json`` prints each alert as
one JSON line instead (for scripts). Warnings (heartbeats stopped or back, sequence gaps, publisher
restarts) go to standard error through logging. Exit status: 0, or 1 when ``--timeout`` expired
before ``--count`` alerts arrived, 2 for bad options, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from .schema import dumps
from .subscriber import AlertSubscriber

ANSI = {
    "debug": "2",
    "info": "36",
    "warning": "33",
    "critical": "1;31",
    "resolved": "32",
}


def use_color(stream: TextIO) -> bool:
    """Colour when ``stream`` is a terminal and ``NO_COLOR`` is unset or empty (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def format_alert(alert: Mapping[str, Any], *, color: bool = False) -> str:
    """One readable line for an alert.

    Examples
    --------
    >>> from streamer.alerts.schema import make_alert
    >>> alert = make_alert("anomalous_particle", scan_id=12, particle={"id": 7}, score=6.1,
    ...                    threshold=4.0, energy_index=40, n_energies=106)
    >>> alert["time"] = 0.0
    >>> format_alert(alert).split()[1:7]
    ['WARNING', 'anomalous_particle', 'scan', '12', 'particle', '7']
    """
    stamp = time.strftime("%H:%M:%S", time.localtime(alert.get("time") or time.time()))
    resolved = alert.get("status") == "resolved"
    label = "RESOLVED" if resolved else str(alert["severity"]).upper()
    label = f"{label:<8}"
    if color:
        label = f"\033[{ANSI['resolved' if resolved else alert['severity']]}m{label}\033[0m"
    scan = alert.get("scan_id")
    particle = alert.get("particle") or {}
    tags = []
    if alert.get("mode") == "replay":
        tags.append("[replay]")
    if alert.get("revision") and not resolved:
        tags.append(f"[update {alert['revision']}]")
    columns = [
        stamp,
        label,
        f"{alert['kind']:<18}",
        f"scan {scan if scan is not None else '-':<5}",
        f"particle {particle.get('id', '-') if particle else '-':<5}",
        " ".join([*tags, str(alert.get("message", ""))]),
    ]
    return "  ".join(columns)


def _error(text: str) -> int:
    print(f"txm-streamer alerts: {text}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """Run the ``alerts`` subcommand with parsed ``args`` (see ``txm-streamer alerts --help``)."""
    out = stdout or sys.stdout
    if args.count is not None and args.count < 1:
        return _error(f"--count must be at least 1, not {args.count}")
    if args.timeout is not None and args.timeout <= 0:
        return _error(f"--timeout must be positive, not {args.timeout}")
    color = not args.json and use_color(out)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    shown = 0
    with AlertSubscriber(
        args.connect, kinds=args.kind, min_severity=args.min_severity, mode=args.mode
    ) as subscriber:
        try:
            while args.count is None or shown < args.count:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    break
                alert = subscriber.recv(timeout=wait)
                if alert is None:
                    continue
                line = dumps(alert).decode() if args.json else format_alert(alert, color=color)
                print(line, file=out, flush=True)
                shown += 1
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # e.g. piped into `head`: the reader has all it wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            return 0
    if args.count is not None and shown < args.count:
        print(
            f"txm-streamer alerts: timed out after {args.timeout:g} s with {shown} of "
            f"{args.count} alerts",
            file=sys.stderr,
        )
        return 1
    return 0
