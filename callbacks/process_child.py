"""The analysis process of ``XanesAnalyzer(backend="process")``: the child's side of the link.

Started by :class:`callbacks.process_backend.AnalysisProcess` as
``python -m callbacks.process_child DOCS_ADDRESS REPLIES_ADDRESS [NICE]``. It first lowers its
scheduling priority (``NICE``: a niceness increment, or ``idle``), before it starts any thread
(Linux applies a niceness or a policy per thread, and new threads inherit it, so 0MQ's I/O thread
and the analysis threads all run at the lowered priority). Then it receives
``[kind, name, doc, depth]`` messages on a 0MQ ``PULL`` socket
(:func:`~callbacks.process_backend.encode_message`: msgpack and raw array frames, never pickle),
runs an ordinary in-process :class:`~callbacks.analyzer.XanesAnalyzer` on them and sends alerts
and replies back on a ``PUSH`` socket. The first message holds the analyzer's options.
Message kinds:

``options`` (parent -> child, once)
    ``{"analyzer": {...}, "session": {...}}``; answered by ``ready``.
``doc``
    A bluesky document, or a ``dropped`` marker of an event the parent's queue dropped; ``depth``
    is how full the parent's queue was when it was sent (the backlog the analysis degrades on).
``flush`` / ``close``
    Finish what was received; answer ``flushed`` / ``closed`` with the counters and the flagged
    particles of every finished run. ``close`` also closes the session and ends the process.

The child exits by itself when its parent disappears.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)

RECEIVE_HWM = 4
"""Messages allowed to wait in 0MQ on this side (the parent's ``SEND_HWM`` is the other)."""
POLL_MS = 500
"""How often the child checks that its parent is still alive while idle."""


def lower_priority(nice: int | str) -> None:
    """Lower this process's scheduling priority: add ``nice`` (0: unchanged), or ``"idle"``.

    ``"idle"`` is Linux's ``SCHED_IDLE`` policy: the process runs only on a core nothing else
    wants (niceness 19 where that policy is missing). Failures are logged, not raised.
    """
    if nice == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except (AttributeError, OSError) as err:
            log.warning("SCHED_IDLE is not available (%s): niceness 19 instead", err)
            nice = 19
    if int(nice) <= 0:
        return
    try:
        os.nice(int(nice))
    except OSError as err:
        log.warning("could not lower the analysis process's priority: %s", err)


def build_analyzer(options: dict[str, Any], send_alert: Any) -> Any:
    """The in-process analyzer described by the parent's ``options`` message."""
    import importlib

    from callbacks.analyzer import XanesAnalyzer
    from streamer.run_analysis import DecisionPolicy

    analyzer_options = dict(options["analyzer"])
    session_options = dict(options["session"])
    registry = {}
    for spec, path in (analyzer_options.pop("handler_registry", None) or {}).items():
        module, _, qualname = path.partition(":")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        registry[spec] = obj
    if session_options.get("policy") is not None:
        session_options["policy"] = DecisionPolicy(**session_options["policy"])
    parent_block = bool(analyzer_options.pop("block"))
    analyzer = XanesAnalyzer(
        alerts=send_alert,
        handler_registry=registry or None,
        nice=0,  # the whole process is already niced
        block=True,  # the parent's queue applied the overload policy: lose nothing more here
        max_queue_events=analyzer_options.pop("max_queue_events", 8),
        **analyzer_options,
        **session_options,
    )
    analyzer.parent_depth = 0.0
    if not parent_block:  # degrade on the parent's backlog, the one the RunEngine fills
        analyzer.backlog_source = lambda: max(analyzer.parent_depth, analyzer.queue.depth)
    return analyzer


def main(argv: list[str] | None = None) -> int:
    """Run the analysis process (see the module docstring); return the exit status."""
    args = list(argv if argv is not None else sys.argv[1:])
    docs_address, replies_address = args[:2]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if len(args) > 2:  # before any thread starts: they all inherit it
        lower_priority(args[2] if args[2] == "idle" else int(args[2]))
    import zmq

    from callbacks.process_backend import decode_message
    from streamer.wire import dumps

    context = zmq.Context()
    docs = context.socket(zmq.PULL)
    docs.setsockopt(zmq.RCVHWM, RECEIVE_HWM)  # a backlog waits in the parent's bounded queue
    docs.connect(docs_address)
    replies = context.socket(zmq.PUSH)
    replies.setsockopt(zmq.LINGER, 5000)
    replies.connect(replies_address)
    parent = os.getppid()
    analyzer = None
    lock = threading.Lock()  # alerts come from the analysis thread, replies from this one

    def reply(kind: str, payload: dict) -> None:
        with lock:
            replies.send(dumps([kind, payload]))

    try:
        while True:
            if not docs.poll(POLL_MS):
                if os.getppid() != parent:
                    log.error("the RunEngine's process is gone: the analysis process exits")
                    return 1
                continue
            kind, name, doc, depth = decode_message(docs.recv_multipart(copy=False))
            if kind == "doc":
                analyzer.parent_depth = depth
                analyzer(name, doc)
            elif kind == "options":
                analyzer = build_analyzer(doc, lambda alert: reply("alert", alert))
                reply("ready", {"pid": os.getpid()})
            elif kind in ("flush", "close"):
                analyzer.flush()
                if kind == "close":
                    analyzer.close(timeout=None)
                report = {"token": doc.get("token"), "stats": analyzer.stats}
                report["flagged"] = analyzer.run_flags()
                reply("flushed" if kind == "flush" else "closed", report)
                if kind == "close":
                    return 0
            else:
                log.error("unknown message kind %r from the RunEngine's process: ignored", kind)
    finally:
        docs.close(linger=0)
        replies.close()
        context.term()


if __name__ == "__main__":
    sys.exit(main())
