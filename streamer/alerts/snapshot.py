"""Snapshots of the firing alerts for late subscribers (the ZeroMQ guide's Clone pattern).

A subscriber connects its SUB socket first and buffers what arrives, then asks the publisher's
ROUTER socket for a snapshot: the currently firing alerts and the ``seq`` they are current at. It
then applies only buffered and later alerts with a greater ``seq``, so it misses nothing.

One race of the guide's version is closed here: a subscription travels to the publisher
asynchronously, so alerts sent between the snapshot and the subscription's arrival would be lost.
The subscriber subscribes to the alert topics first and the heartbeat topic last, and the publisher
answers every heartbeat subscription with an immediate heartbeat. A subscriber that has received a
heartbeat therefore knows all its subscriptions are active, and only then asks for the snapshot.

Wire format, JSON only. Request: ``{"request": "snapshot"}`` (from a REQ or DEALER socket). Reply::

    {"schema": "txm-streamer.snapshot/1", "publisher": ..., "epoch": ..., "seq": S,
     "time": ..., "alerts": [firing alerts, oldest seq first]}

or ``{"schema": ..., "error": "..."}`` for a request it does not understand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import zmq

from .schema import SNAPSHOT_SCHEMA, dumps, loads

log = logging.getLogger(__name__)

SNAPSHOT_REQUEST = {"request": "snapshot"}


def serve_snapshot_requests(router: zmq.Socket, state: Callable[[], dict[str, Any]]) -> int:
    """Answer every request waiting on ``router`` without blocking; return how many were served.

    Parameters
    ----------
    router
        The publisher's bound ROUTER socket (used only by the publisher's thread).
    state
        Returns ``{"publisher", "epoch", "seq", "alerts"}``, consistent at one ``seq``.
    """
    served = 0
    while True:
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return served
        envelope, body = frames[:-1], frames[-1]
        try:
            request = loads(body)
            if request.get("request") != "snapshot":
                raise ValueError(f"unknown request {request.get('request')!r}")
        except ValueError as err:
            log.warning("bad snapshot request %r: %s", body[:200], err)
            reply: dict[str, Any] = {"schema": SNAPSHOT_SCHEMA, "error": str(err)}
        else:
            reply = {"schema": SNAPSHOT_SCHEMA, "time": time.time(), **state()}
            served += 1
        try:
            router.send_multipart([*envelope, dumps(reply)], zmq.NOBLOCK)
        except zmq.ZMQError as err:  # the requester went away: nothing to answer
            log.debug("could not answer snapshot request: %s", err)


def request_snapshot(
    endpoint: str, *, timeout: float = 2.0, context: zmq.Context | None = None
) -> dict[str, Any]:
    """Ask a publisher's snapshot socket for the firing alerts.

    Parameters
    ----------
    endpoint
        The publisher's snapshot endpoint (a ROUTER).
    timeout
        Seconds to wait for the answer.
    context
        ZeroMQ context (default: the process-wide instance).

    Returns
    -------
    dict
        ``{"schema", "publisher", "epoch", "seq", "time", "alerts"}``.

    Raises
    ------
    TimeoutError
        No answer in time (publisher down, or no snapshot socket there).
    ValueError
        The answer is not a snapshot.
    """
    context = context or zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(dumps(SNAPSHOT_REQUEST))
        if not sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise TimeoutError(f"no snapshot from {endpoint} within {timeout} s")
        reply = loads(sock.recv())
    finally:
        sock.close()
    if reply.get("schema") != SNAPSHOT_SCHEMA or "error" in reply:
        raise ValueError(f"bad snapshot reply from {endpoint}: {reply.get('error', reply)!r}")
    missing = {"epoch", "seq", "alerts"} - set(reply)
    if missing:
        raise ValueError(f"snapshot reply from {endpoint} lacks {sorted(missing)}")
    return reply
