"""Helpers shared by the alert socket tests (real sockets on 127.0.0.1)."""

from __future__ import annotations

import time

import pytest
import zmq

from streamer.alerts import AlertPublisher

BOUND = 20.0  # upper bound on any wait; the tests go on as soon as the condition holds


def wait_until(predicate, what: str = "condition", *, timeout: float = BOUND) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)  # polling interval, not synchronisation


def receive(subscriber, n: int, *, timeout: float = BOUND) -> list[dict]:
    """The next ``n`` alerts ``subscriber`` shows; fail the test if they do not come in time."""
    deadline = time.monotonic() + timeout
    got = []
    while len(got) < n:
        alert = subscriber.recv(timeout=max(0.0, deadline - time.monotonic()))
        if alert is None:
            pytest.fail(f"received {len(got)} of {n} alerts: {[a['message'] for a in got]}")
        got.append(alert)
    return got


def rebind_publisher(endpoint: str, **options) -> AlertPublisher:
    """A new publisher on the ``endpoint`` a closed one used (a restart), once the port is free."""
    deadline = time.monotonic() + BOUND
    while True:
        try:
            return AlertPublisher(endpoint, **options)
        except zmq.ZMQError:
            assert time.monotonic() < deadline, "could not rebind the publisher port"
            time.sleep(0.01)  # the old listener is still closing: retry, bounded
