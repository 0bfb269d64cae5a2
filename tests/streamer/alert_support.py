"""Helpers shared by the alert socket tests (real sockets on 127.0.0.1)."""

from __future__ import annotations

import time

import zmq

from streamer.alerts import AlertPublisher

BOUND = 20.0  # upper bound on any wait; the tests go on as soon as the condition holds


def rebind_publisher(endpoint: str, **options) -> AlertPublisher:
    """A new publisher on the ``endpoint`` a closed one used (a restart), once the port is free."""
    deadline = time.monotonic() + BOUND
    while True:
        try:
            return AlertPublisher(endpoint, **options)
        except zmq.ZMQError:
            assert time.monotonic() < deadline, "could not rebind the publisher port"
            time.sleep(0.01)  # the old listener is still closing: retry, bounded
