"""The bounded hand-off queue and the analysis thread."""

from __future__ import annotations

import threading

import numpy as np

from callbacks.worker import AnalysisWorker, DocumentQueue


class Recorder:
    def __init__(self):
        self.seen = []
        self.failed = None

    def __call__(self, name, doc):
        self.seen.append((name, doc))

    def fail(self, exc):
        self.failed = exc


def test_events_beyond_the_bound_are_dropped_and_marked_in_order():
    q = DocumentQueue(max_events=2)
    r = Recorder()
    assert q.put(r, "start", {"uid": "s"})
    assert q.put(r, "event", {"uid": "e1", "seq_num": 1, "data": {}})
    assert q.put(r, "event", {"uid": "e2", "seq_num": 2, "data": {}})
    assert not q.put(r, "event", {"uid": "e3", "seq_num": 3, "data": {}}, run_key="s")
    assert q.put(r, "stop", {"uid": "x"})  # control documents are never dropped
    names = []
    while (item := q.get(timeout=0)) is not None:
        names.append(item[1])
        q.task_done()
    assert names == ["start", "event", "event", "dropped", "stop"]
    assert q.stats.dropped_events == 1 and q.stats.dropped_by_run == {"s": 1}


def test_byte_bound_counts_inline_arrays():
    q = DocumentQueue(max_events=100, max_bytes=1000)
    r = Recorder()
    big = {"uid": "e", "data": {"img": np.zeros(200, dtype=np.float64)}}  # 1600 bytes
    assert not q.put(r, "event", big)
    assert q.put(r, "event", {"uid": "e", "data": {"img": np.zeros(10)}})


def test_worker_isolates_failures_and_drains():
    q = DocumentQueue()
    good, bad = Recorder(), Recorder()

    def explode(name, doc):
        raise RuntimeError("boom")

    explode.fail = bad.fail
    worker = AnalysisWorker(q)
    worker.start()
    q.put(explode, "event", {"data": {}})
    q.put(good, "event", {"data": {}})
    assert q.join(timeout=10)
    worker.stop(timeout=10)
    assert not worker.is_alive()
    assert isinstance(bad.failed, RuntimeError) and len(good.seen) == 1
    assert q.stats.errors == 1


def test_put_never_blocks_when_consumer_is_stuck():
    q = DocumentQueue(max_events=3)
    gate = threading.Event()

    def stuck(name, doc):
        gate.wait(10)

    worker = AnalysisWorker(q)
    worker.start()
    results = [q.put(stuck, "event", {"data": {}}) for _ in range(20)]
    assert results.count(False) >= 16  # the producer went on; the excess was dropped
    gate.set()
    assert q.join(timeout=10)
    worker.stop(timeout=10)


def test_the_analysis_thread_can_run_at_idle_priority():
    import os

    q = DocumentQueue()
    r = Recorder()
    seen = []
    worker = AnalysisWorker(q, nice="idle")
    worker.start()
    q.put(lambda name, doc: seen.append(os.sched_getscheduler(0)), "start", {})
    q.put(r, "stop", {})
    assert q.join(10)
    worker.stop(10)
    assert seen == [os.SCHED_IDLE] and [n for n, _ in r.seen] == ["stop"]
