"""Simulated FXI runs (64x64 frames) archived, then replayed: the frames equal what was acquired."""

from __future__ import annotations

import event_model
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count

from callbacks.handlers import HANDLER_REGISTRY
from sim.instrument import SimulatedTXM
from sim.plans import xanes_scan2
from streamer.archive import Archiver
from streamer.archived_arrays import ArrayRows
from streamer.catalog import open_catalog
from streamer.catalog_runs import lookup_run, run_start
from streamer.replay_source import (
    ReplayError,
    documents_from_arrays,
    documents_from_export,
)

ENERGIES_KEV = [7.70, 7.71, 7.725, 7.74]
CHUNK = 2


class Acquired:
    """Frames as the live analyzer would see them (external data filled), in emission order."""

    def __init__(self):
        self.filler = event_model.Filler(HANDLER_REGISTRY, inplace=False)
        self.streams = {}
        self.sequence = []  # (document name, stream) without asset documents
        self.frames = []  # (stream, Andor_image) per event

    def __call__(self, name, doc):
        if name in ("resource", "datum", "datum_page"):
            self.filler(name, doc)
            return
        if name == "descriptor":
            self.streams[doc["uid"]] = doc["name"]
        stream = self.streams.get(doc.get("descriptor", doc.get("uid")), None)
        self.sequence.append((name, stream if name in ("event", "descriptor") else None))
        if name == "event":
            _, doc = self.filler(name, doc)
            self.frames.append((stream, np.array(doc["data"]["Andor_image"])))
        else:
            self.filler(name, doc)

    def close(self):
        self.filler.close()  # releases the HDF5 files before tiled opens them


def _replayed(docs):
    streams, sequence, frames = {}, [], []
    for name, doc in docs:
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        stream = streams.get(doc.get("descriptor", doc.get("uid")), None)
        sequence.append((name, stream if name in ("event", "descriptor") else None))
        if name == "event":
            frames.append((stream, doc["data"]["Andor_image"]))
    return sequence, frames


@pytest.fixture(scope="module")
def archived(tmp_path_factory):
    """Simulated runs archived at once into two catalogs: external frames filled (``filled``)
    and external frames referenced (``referenced``); live frames recorded per run."""
    root = tmp_path_factory.mktemp("sim-catalog")
    data_dir = root / "frames"
    filled = open_catalog(root / "filled", readable_storage=[data_dir])
    referenced = open_catalog(root / "referenced", readable_storage=[data_dir])
    archivers = [Archiver(filled, handler_registry=HANDLER_REGISTRY), Archiver(referenced)]
    RE = RunEngine()
    for archiver in archivers:
        RE.subscribe(archiver)
    runs = {}
    for name, external, plan in [
        ("inline", False, _scan),
        ("external", True, _scan),
        ("one-stream", True, lambda txm: count([txm.Andor, txm.ic3], 3)),
    ]:
        txm = SimulatedTXM(frame_shape=(64, 64), external=external, data_dir=data_dir, seed=3)
        acquired = Acquired()
        token = RE.subscribe(acquired)
        (uid,) = RE(plan(txm))
        RE.unsubscribe(token)
        acquired.close()
        runs[name] = (uid, acquired)
    for archiver in archivers:
        assert archiver.close(timeout=120)
        assert archiver.stats.total_errors == 0 and archiver.stats.total_dropped == 0
    yield {"filled": filled, "referenced": referenced, **runs}
    filled.context.close()
    referenced.context.close()


def _assert_replay_matches(client, uid, acquired):
    run = lookup_run(client, uid)
    for docs in (documents_from_arrays(run), documents_from_export(run)):
        sequence, frames = _replayed(list(docs))
        assert sequence == acquired.sequence
        assert len(frames) == len(acquired.frames)
        for (stream, frame), (live_stream, live) in zip(frames, acquired.frames, strict=True):
            assert stream == live_stream
            assert frame.dtype == np.uint16 and frame.shape == (CHUNK, 64, 64)
            np.testing.assert_array_equal(frame, live)


def _scan(txm):
    return xanes_scan2(txm, ENERGIES_KEV, chunk_size=CHUNK)


@pytest.mark.parametrize("name", ["inline", "external"])
def test_simulated_xanes_scan2_replays_the_acquired_frames(archived, name):
    client = archived["filled"]
    uid, acquired = archived[name]
    assert [s for n, s in acquired.sequence if n == "event"] == ["dark"] + ["primary", "flat"] * 4
    start = run_start(client, uid)
    assert start["plan_name"] == "xanes_scan2" and start["num_eng"] == len(ENERGIES_KEV)
    _assert_replay_matches(client, uid, acquired)


def test_external_frames_of_one_stream_are_archived_by_reference(archived):
    """A detector file holding one stream's frames is referenced, and read back directly."""
    client = archived["referenced"]
    uid, acquired = archived["one-stream"]
    node = lookup_run(client, uid).include_data_sources()["primary"].base["Andor_image"]
    assert node.data_sources()[0].mimetype == "application/x-hdf5"  # not copied into the catalog
    assert ArrayRows(node).direct  # the detector's HDF5 file is read directly
    run = lookup_run(client, uid)
    for docs in (
        documents_from_arrays(run, direct=True),
        documents_from_arrays(run, direct=False),
        documents_from_export(run),
    ):
        _, frames = _replayed(docs)
        assert len(frames) == 3
        for (_, frame), (_, live) in zip(frames, acquired.frames, strict=True):
            np.testing.assert_array_equal(frame, live)


def test_shared_detector_file_by_reference_fails_clearly(archived):
    """FXI's layout (dark, primary and flat frames in one file) needs handler_registry."""
    uid, _ = archived["external"]
    with pytest.raises(ReplayError, match="Andor_image"):
        list(documents_from_arrays(lookup_run(archived["referenced"], uid)))
