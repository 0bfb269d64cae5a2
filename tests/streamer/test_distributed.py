"""``streamer.distributed.map_in_order``: results are decided in task order, with bounded flight."""

from __future__ import annotations

import pytest

from streamer.distributed import dask_client, map_in_order


class _Future:
    def __init__(self, client, value=None, error=None):
        self.client, self.value, self.error, self.cancelled = client, value, error, False

    def result(self):
        self.client.in_flight -= 1
        if self.error is not None:
            raise self.error
        return self.value

    def release(self):
        pass

    def cancel(self):
        self.cancelled = True


class _Client:
    """Runs each task at submission, remembers how many were in flight."""

    def __init__(self):
        self.submitted: list = []
        self.in_flight = 0
        self.max_in_flight = 0

    def scheduler_info(self):
        return {"workers": {"a": {}, "b": {}}}

    def submit(self, fn, *args, key, pure):
        assert pure is False and key
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            fut = _Future(self, fn(*args))
        except Exception as err:
            fut = _Future(self, error=err)
        self.submitted.append(fut)
        return fut


def test_results_are_decided_in_task_order_with_at_most_max_in_flight():
    client = _Client()
    order = []

    def decide(i, result):
        order.append((i, result))
        return result * 10

    out = map_in_order(client, pow, [(2, k) for k in range(7)], decide, max_in_flight=3)
    assert order == [(k, 2**k) for k in range(7)]
    assert out == [10 * 2**k for k in range(7)]
    assert client.max_in_flight == 3


def test_a_failing_task_raises_on_the_client_and_cancels_the_rest():
    client = _Client()
    with pytest.raises(ZeroDivisionError):
        map_in_order(client, divmod, [(1, 1), (1, 0), (1, 2), (1, 3)], lambda i, r: r)
    assert any(f.cancelled for f in client.submitted)


def test_dask_client_needs_exactly_one_of_workers_and_scheduler():
    with pytest.raises(ValueError, match="exactly one"):
        with dask_client():
            pass


def test_decisions_run_with_the_client_threads_limit_and_it_is_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info()]
    seen = []

    def decide(i, result):
        seen.extend(i["num_threads"] for i in threadpoolctl.threadpool_info())
        return result

    map_in_order(_Client(), pow, [(2, 3)], decide, client_threads=1)
    assert all(n == 1 for n in seen)
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info()] == before
