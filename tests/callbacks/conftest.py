"""Fixtures of the ``txm-streamer serve`` tests; helpers in :mod:`tests.callbacks.serve_support`."""

from __future__ import annotations

import pytest

from tests.callbacks.serve_support import Processes


@pytest.fixture
def procs(tmp_path):
    """Processes started by a test (output in ``tmp_path/<name>.log``), stopped at its end."""
    processes = Processes(tmp_path)
    yield processes
    processes.close()


@pytest.fixture
def offline_service(tmp_path):
    """Make :class:`callbacks.serve.LiveService` objects on ``tmp_path`` that receive nothing.

    Call it (``offline_service(**options)``) for each lifetime; a service still running at the end
    of the test is shut down. The source is never connected (the receiver is not started), and
    alerts are published on a free loopback port.
    """
    from callbacks.serve import LiveService

    services: list[LiveService] = []

    def make(**options) -> LiveService:
        options = {"lag_warning": 5.0, **options}
        service = LiveService(
            source="zmq://127.0.0.1:9", out_dir=tmp_path, endpoint="tcp://127.0.0.1:*", **options
        )
        services.append(service)
        return service

    yield make
    for service in services:
        if service.state != "stopped":
            service.shutdown()
