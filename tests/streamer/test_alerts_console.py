"""``txm-streamer alerts``: the real console script as a subprocess, and its line format."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.alerts import AlertPublisher, make_alert, validate_alert
from streamer.alerts.console import format_alert, run
from streamer.cli import build_parser

SCRIPT = Path(sys.executable).with_name("txm-streamer")
BOUND = 60.0


def particle(pid, severity="warning"):
    return make_alert(
        "anomalous_particle",
        run_uid="run-9",
        scan_id=41,
        particle={"id": pid},
        score=7.5,
        threshold=4.0,
        severity=severity,
    )


@pytest.fixture
def publisher():
    if not SCRIPT.exists():
        pytest.skip(f"console script not installed at {SCRIPT}")
    with AlertPublisher("tcp://127.0.0.1:*", heartbeat_interval=0.2) as pub:
        yield pub


def start_console(endpoint, *options):
    env = {**os.environ, "NO_COLOR": ""}
    command = [str(SCRIPT), "alerts", "--connect", endpoint, *options]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_console_subprocess_receives_firing_and_new_alerts_as_json(publisher):
    before = [publisher.publish(particle(i)) for i in (1, 2)]  # firing before it starts
    console = start_console(publisher.endpoint, "--count", "4", "--json", "--timeout", "50")
    try:
        assert publisher.wait_for_subscribers(BOUND)
        after = [publisher.publish(particle(i)) for i in (3, 4)]
        out, err = console.communicate(timeout=BOUND)
    finally:
        console.kill()
    assert console.returncode == 0, err
    received = [json.loads(line) for line in out.splitlines()]
    for alert in received:
        validate_alert(alert)
    assert [a["fingerprint"] for a in received] == [a["fingerprint"] for a in before + after]
    assert "Traceback" not in err


def test_console_filters_and_prints_readable_lines(publisher):
    console = start_console(
        publisher.endpoint,
        "--count",
        "1",
        "--min-severity",
        "critical",
        "--kind",
        "anomalous_particle",
        "--timeout",
        "50",
    )
    try:
        assert publisher.wait_for_subscribers(BOUND)
        publisher.publish(make_alert("new_cluster", severity="critical", subject="cluster:2"))
        publisher.publish(particle(5, severity="warning"))
        publisher.publish(particle(6, severity="critical"))
        out, err = console.communicate(timeout=BOUND)
    finally:
        console.kill()
    assert console.returncode == 0, err
    [line] = out.splitlines()
    assert "CRITICAL" in line and "particle 6" in line and "scan 41" in line
    assert "\033[" not in line  # not a terminal: no colour codes


def test_console_exits_cleanly_on_ctrl_c(publisher):
    console = start_console(publisher.endpoint)
    try:
        assert publisher.wait_for_subscribers(BOUND)
        console.send_signal(signal.SIGINT)
        out, err = console.communicate(timeout=BOUND)
    finally:
        console.kill()
    assert console.returncode == 130
    assert "Traceback" not in err and out == ""


def test_timeout_before_count_exits_1_and_format_marks_updates_and_resolutions(publisher):
    args = build_parser().parse_args(
        ["alerts", "--connect", publisher.endpoint, "--count", "5", "--timeout", "0.3"]
    )
    stdout = io.StringIO()
    publisher.publish(particle(1))
    assert run(args, stdout=stdout) == 1
    assert len(stdout.getvalue().splitlines()) == 1
    alert = {**particle(1), "time": 0.0, "revision": 2, "mode": "replay"}
    assert "[replay] [update 2]" in format_alert(alert)
    resolved = format_alert({**alert, "status": "resolved"}, color=True)
    assert "\033[32mRESOLVED" in resolved and "[update" not in resolved
    assert "\033[1;31mCRITICAL" in format_alert({**alert, "severity": "critical"}, color=True)
    bad = build_parser().parse_args(["alerts", "--count", "0"])
    assert run(bad) == 2
