"""The embedded catalog, the Archiver and replay, with small ophyd devices in a real RunEngine."""

from __future__ import annotations

import logging
import threading

import event_model
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count
from ophyd import Signal
from ophyd.sim import NumpySeqHandler, SynSignalWithRegistry, det

from streamer.archive import Archiver
from streamer.archive_writer import batch_size_for
from streamer.archived_arrays import ArrayRows
from streamer.catalog import CatalogUnreadableError, RunNotFoundError, connect, open_catalog
from streamer.catalog_runs import list_runs, lookup_run, run_start
from streamer.catalog_sqlite import run_index
from streamer.replay_source import (
    count_events,
    documents_from_arrays,
    documents_from_export,
    replay_documents,
)

SHAPE = (24, 32)


class InlineCamera(Signal):
    """A 2D detector whose float32 frames travel inside the event documents."""

    def __init__(self, *args, shape=SHAPE, seed=0, **kwargs):
        super().__init__(*args, value=np.zeros(shape, np.float32), **kwargs)
        self._shape = shape
        self._rng = np.random.default_rng(seed)

    def trigger(self):
        self.put(self._rng.random(self._shape, dtype=np.float32))
        return super().trigger()

    def describe(self):
        out = super().describe()
        out[self.name].update(dtype="array", shape=list(self._shape), dtype_numpy="<f4")
        return out


class Recorder:
    """Keeps (name, stream, filled event data) of what the RunEngine emitted."""

    def __init__(self):
        self.filler = event_model.Filler({"NPY_SEQ": NumpySeqHandler}, inplace=False)
        self.streams = {}
        self.events = []

    def __call__(self, name, doc):
        if name == "descriptor":
            self.streams[doc["uid"]] = doc["name"]
        if name == "event":
            _, doc = self.filler(name, doc)
            data = {
                k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in doc["data"].items()
            }
            self.events.append((self.streams[doc["descriptor"]], doc["seq_num"], data))
        else:
            self.filler(name, doc)


@pytest.fixture(scope="module")
def archived(tmp_path_factory):
    """A catalog with a 4-event run of inline + external (npy) frames and a scalar run."""
    root = tmp_path_factory.mktemp("catalog")
    npy_dir = root / "npy"
    npy_dir.mkdir()
    rng = np.random.default_rng(1)
    ext = SynSignalWithRegistry(
        lambda: rng.integers(0, 4000, size=(8, 8)).astype(np.uint16),
        name="ext",
        save_path=str(npy_dir),
    )
    cam = InlineCamera(name="cam", seed=2)
    client = open_catalog(root / "cat", readable_storage=[npy_dir])
    archiver = Archiver(client)
    recorder = Recorder()
    RE = RunEngine()
    RE.subscribe(archiver)
    RE.subscribe(recorder)
    (xanes,) = RE(count([cam, ext, det], 4, md={"plan_name": "xanes_scan2", "num_eng": 4}))
    (scalar,) = RE(count([det], 2))
    assert archiver.close(timeout=120)
    stats = archiver.stats
    assert stats.total_dropped == 0 and stats.total_errors == 0
    yield {"client": client, "dir": root / "cat", "xanes": xanes, "scalar": scalar, "rec": recorder}
    client.context.close()


def _assert_same_documents(docs_a, docs_b):
    assert [n for n, _ in docs_a] == [n for n, _ in docs_b]
    for (name, a), (_, b) in zip(docs_a, docs_b, strict=True):
        if name != "event":
            assert a == b
            continue
        assert a.keys() == b.keys()
        assert {k: v for k, v in a.items() if k != "data"} == {
            k: v for k, v in b.items() if k != "data"
        }
        assert a["data"].keys() == b["data"].keys()
        for key, value in a["data"].items():
            if isinstance(value, np.ndarray):
                assert value.dtype == b["data"][key].dtype
                np.testing.assert_array_equal(value, b["data"][key])
            else:
                assert value == b["data"][key]


# ---------------------------------------------------------------------------- catalog
def test_open_catalog_creates_the_layout_and_reopens(tmp_path):
    client = open_catalog(tmp_path / "c")
    assert type(client).__name__ == "CatalogOfBlueskyRuns"
    assert len(client) == 0
    client.context.close()
    assert {p.name for p in (tmp_path / "c").iterdir()} >= {"catalog.db", "data"}
    again = open_catalog(tmp_path / "c", create=False)
    assert len(again) == 0
    assert connect(again) is again
    again.context.close()


def test_unreadable_catalogs_name_their_path(tmp_path):
    with pytest.raises(CatalogUnreadableError, match="no such directory") as info:
        open_catalog(tmp_path / "missing", create=False)
    assert info.value.path == str(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogUnreadableError, match=r"no catalog\.db"):
        open_catalog(tmp_path / "empty", create=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "catalog.db").write_text("not a database")
    with pytest.raises(CatalogUnreadableError, match=str(tmp_path / "bad")):
        open_catalog(tmp_path / "bad", create=False)


def test_list_runs_and_filter_by_plan(archived):
    runs = list_runs(archived["client"])
    assert [r.uid for r in runs] == [archived["xanes"], archived["scalar"]]
    xanes = runs[0]
    assert (xanes.plan_name, xanes.num_eng, xanes.scan_id, xanes.exit_status) == (
        "xanes_scan2",
        4,
        1,
        "success",
    )
    only = list_runs(archived["client"], plan_names=["xanes_scan2", "xanes_scan"])
    assert [r.uid for r in only] == [archived["xanes"]]


def test_missing_uid_is_a_keyerror_listing_known_runs(archived):
    with pytest.raises(RunNotFoundError) as info:
        lookup_run(archived["client"], "0123456789")
    err = info.value
    assert isinstance(err, KeyError)
    assert err.uid == "0123456789"
    assert "0123456789" in str(err) and archived["xanes"] in str(err)
    with pytest.raises(KeyError):
        list(replay_documents(archived["client"], "0123456789"))


def test_partial_uid_and_cheap_start_document(archived):
    run = lookup_run(archived["client"], archived["xanes"][:8])
    assert run.metadata["start"]["uid"] == archived["xanes"]
    start = run_start(archived["client"], archived["xanes"])
    assert start["plan_name"] == "xanes_scan2" and start["num_eng"] == 4
    assert count_events(run) == 4


# ---------------------------------------------------------------------------- replay
def test_fast_path_equals_json_export_and_what_was_acquired(archived):
    run = lookup_run(archived["client"], archived["xanes"])
    fast = list(documents_from_arrays(run))
    slow = list(documents_from_export(run))
    _assert_same_documents(fast, slow)
    assert [n for n, _ in fast] == ["start", "descriptor", *["event"] * 4, "stop"]
    events = [d for n, d in fast if n == "event"]
    live = [data for stream, _, data in archived["rec"].events if stream == "primary"][:4]
    for event, acquired in zip(events, live, strict=True):
        assert event["data"]["cam"].dtype == np.float32
        np.testing.assert_array_equal(event["data"]["cam"], acquired["cam"])
        np.testing.assert_array_equal(event["data"]["ext"], acquired["ext"])
        assert event["filled"] == {"ext": True}
        assert event["data"]["det"] == acquired["det"]


def test_direct_file_reads_equal_tiled_array_reads(archived):
    run = lookup_run(archived["client"], archived["xanes"])
    parts = run.include_data_sources()["primary"].base
    assert ArrayRows(parts["cam"]).direct  # zarr written by tiled
    assert ArrayRows(parts["ext"]).direct  # npy files written by the detector
    _assert_same_documents(
        list(documents_from_arrays(run, direct=True)),
        list(documents_from_arrays(run, direct=False)),
    )


def test_scalar_run_replays_both_ways(archived):
    fast = list(replay_documents(archived["client"], archived["scalar"], method="arrays"))
    slow = list(replay_documents(archived["dir"], archived["scalar"], method="export"))
    _assert_same_documents(fast, slow)
    with pytest.raises(ValueError, match="method"):
        replay_documents(archived["client"], archived["scalar"], method="bogus")


def test_sqlite_layout_gives_the_same_documents_as_the_client(archived):
    index = run_index(archived["client"])
    assert index is not None and run_index(archived["dir"]) is index  # one per directory
    for uid in (archived["xanes"], archived["scalar"]):
        direct = index.run(uid)
        assert direct is not None
        _assert_same_documents(
            list(documents_from_arrays(direct)),
            list(documents_from_arrays(lookup_run(archived["client"], uid))),
        )
    # inline zarr and external npy frames: read from their files; forced through the client too
    parts = index.run(archived["xanes"])["primary"].base
    assert ArrayRows(parts["cam"]).direct and ArrayRows(parts["ext"]).direct
    np.testing.assert_array_equal(
        ArrayRows(parts["cam"], direct=False).rows(0, 2), ArrayRows(parts["cam"]).rows(0, 2)
    )
    assert index.run(archived["xanes"][:8]) is None  # partial uid: the client resolves it
    assert index.run("no-such-run") is None


def test_unknown_catalog_schema_falls_back_to_the_client(archived, tmp_path, caplog, monkeypatch):
    import shutil

    import streamer.catalog_sqlite

    copy = tmp_path / "cat"
    shutil.copytree(archived["dir"], copy)
    # a tiled upgrade whose catalog schema this reader does not know yet
    monkeypatch.setattr(streamer.catalog_sqlite, "KNOWN_REVISIONS", frozenset({"newer"}))
    client = open_catalog(copy, create=False)
    try:
        with caplog.at_level(logging.WARNING, logger="streamer.catalog_sqlite"):
            assert run_index(client) is None
        assert "this reader knows ['newer']" in caplog.text
        docs = list(replay_documents(client, archived["xanes"]))  # through the client
        expected = documents_from_arrays(lookup_run(archived["client"], archived["xanes"]))
        _assert_same_documents(docs, list(expected))
    finally:
        client.context.close()
    assert run_index("http://127.0.0.1:1/api") is None  # a server: always the client


def test_progress_is_reported_per_event(archived):
    calls = []
    docs = replay_documents(
        archived["client"], archived["xanes"], progress=lambda i, n: calls.append((i, n))
    )
    list(docs)
    assert calls == [(i, 4) for i in range(1, 5)]
    list(replay_documents(archived["client"], archived["xanes"], progress=True))  # tqdm bar


# ---------------------------------------------------------------------------- archiver
class GatedWriter:
    """Wraps a real writer; every event waits for ``gate`` (the catalog is 'slow')."""

    def __init__(self, inner, gate):
        self.inner, self.gate = inner, gate

    def __call__(self, name, doc):
        if name == "event":
            self.gate.wait()
        self.inner(name, doc)


def test_archiver_under_overload_drops_events_but_never_blocks(tmp_path):
    from bluesky_tiled_plugins import TiledWriter

    gate = threading.Event()
    timed_out = threading.Event()
    watchdog = threading.Timer(120, lambda: (timed_out.set(), gate.set()))
    watchdog.start()
    archiver = Archiver(
        tmp_path / "c",
        max_queue_bytes=1,
        max_wait=0.0,
        writer_factory=lambda client, n: GatedWriter(TiledWriter(client, batch_size=n), gate),
    )
    RE = RunEngine()
    RE.subscribe(archiver)
    n = 12
    (uid,) = RE(count([InlineCamera(name="cam")], n))
    # The RunEngine finished while the writer was still stuck on the first event.
    assert not gate.is_set()
    dropped = archiver.stats.dropped_events[uid]
    assert n - 2 <= dropped <= n - 1
    gate.set()
    assert archiver.close(timeout=120)
    watchdog.cancel()
    assert not timed_out.is_set()
    run = archiver.client[uid]
    assert run.metadata["txm_streamer_archive"]["dropped_events"] == dropped
    assert run.metadata["stop"]["exit_status"] == "success"  # control documents are never dropped
    assert run["primary"]["cam"].shape == (n - dropped, *SHAPE)
    archiver.client.context.close()


def test_archiver_errors_are_logged_with_the_run_uid_and_counted(tmp_path, caplog):
    def broken(client, n):
        def write(name, doc):
            if name == "event":
                raise OSError("disk full")

        return write

    archiver = Archiver(tmp_path / "c", writer_factory=broken)
    RE = RunEngine()
    RE.subscribe(archiver)
    with caplog.at_level(logging.ERROR, logger="streamer.archive"):
        (uid,) = RE(count([det], 3))
        assert archiver.flush(timeout=60)
    assert archiver.stats.errors == {uid: 3}
    assert any(uid in r.getMessage() for r in caplog.records)
    archiver.close()
    archiver("start", {"uid": "late", "time": 0.0})  # closed: logged and counted, not raised
    assert archiver.stats.dropped_events["late"] == 1
    archiver.client.context.close()


def test_batches_stay_under_tiled_first_write_limit(tmp_path):
    stack = {"data_keys": {"img": {"dtype": "array", "shape": [5, 512, 512], "dtype_numpy": "<u2"}}}
    n = batch_size_for(stack, max_batch_bytes=32 << 20)
    assert n * 5 * 512 * 512 * 2 <= 32 << 20 and n >= 1
    with pytest.raises(ValueError, match="100"):
        Archiver(tmp_path / "c", max_batch_bytes=200_000_000)


def test_incomplete_run_replays_without_a_stop_document(tmp_path, caplog):
    from event_model import compose_run

    archiver = Archiver(tmp_path / "c", batch_size=1)
    run = compose_run()
    archiver("start", run.start_doc)
    desc = run.compose_descriptor(
        name="primary", data_keys={"x": {"source": "s", "dtype": "number", "shape": []}}
    )
    archiver("descriptor", desc.descriptor_doc)
    for i in range(3):
        archiver("event", desc.compose_event(data={"x": i}, timestamps={"x": 0.0}, seq_num=i + 1))
    assert archiver.flush(timeout=60)  # no stop document: the run stays open
    client = archiver.client
    with caplog.at_level(logging.WARNING, logger="streamer.replay_source"):
        fast = list(replay_documents(client, run.start_doc["uid"]))
        slow = list(replay_documents(client, run.start_doc["uid"], method="export"))
    _assert_same_documents(fast, slow)
    assert [n for n, _ in fast] == ["start", "descriptor", "event", "event", "event"]
    assert "no stop document" in caplog.text
    archiver.close()
    client.context.close()
