"""The shared-facility path: ``tiled serve config docs/tiled-config.yml`` on 127.0.0.1."""

from __future__ import annotations

import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine

from sim.instrument import SimulatedTXM
from sim.plans import xanes_scan2
from streamer.archive import Archiver
from streamer.catalog import connect, open_catalog
from streamer.catalog_runs import list_runs, lookup_run
from streamer.replay_source import documents_from_arrays, documents_from_export

CONFIG = Path(__file__).resolve().parents[2] / "docs" / "tiled-config.yml"
TILED = Path(sys.executable).with_name("tiled")
STARTUP_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scan(txm):
    return xanes_scan2(txm, [7.70, 7.72], chunk_size=2)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A catalog with one archived run, served by a real ``tiled serve`` subprocess."""
    if not TILED.exists():
        pytest.skip(f"the tiled command is not installed next to {sys.executable}")
    directory = tmp_path_factory.mktemp("served") / "catalog"
    client = open_catalog(directory)
    archiver = Archiver(client)
    RE = RunEngine()
    RE.subscribe(archiver)
    (uid,) = RE(_scan(SimulatedTXM(frame_shape=(64, 64), external=False, seed=5)))
    assert archiver.close(timeout=120)
    embedded = list(documents_from_arrays(lookup_run(client, uid)))
    client.context.close()

    key, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "TXM_CATALOG": str(directory), "TILED_SINGLE_USER_API_KEY": key}
    cmd = [str(TILED), "serve", "config", str(CONFIG), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    output, deadline = [], time.monotonic() + STARTUP_S
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"tiled serve did not start in {STARTUP_S} s:\n{''.join(output)}")
            if line is None:
                pytest.fail(f"tiled serve exited ({proc.wait()}):\n{''.join(output)}")
            output.append(line)
            if "Uvicorn running on" in line or "Application startup complete" in line:
                break
        url = f"http://127.0.0.1:{port}"
        yield {"url": url, "key": key, "uid": uid, "embedded": embedded}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _frames(docs):
    return [d["data"]["Andor_image"] for n, d in docs if n == "event"]


def test_served_catalog_replays_like_the_embedded_one(server):
    client = connect(server["url"], api_key=server["key"])
    assert [r.uid for r in list_runs(client)] == [server["uid"]]
    run = lookup_run(client, server["uid"][:8])
    expected = _frames(server["embedded"])
    for docs in (
        documents_from_arrays(run),  # local files: read directly
        documents_from_arrays(run, direct=False),  # through tiled's array API
        documents_from_export(run),  # through the server's JSON document export
    ):
        docs = list(docs)
        assert [n for n, _ in docs] == [n for n, _ in server["embedded"]]
        for frame, want in zip(_frames(docs), expected, strict=True):
            np.testing.assert_array_equal(frame, want)


def test_archiver_writes_through_the_server(server):
    archiver = Archiver(server["url"], api_key=server["key"])
    RE = RunEngine()
    RE.subscribe(archiver)
    (uid,) = RE(_scan(SimulatedTXM(frame_shape=(64, 64), external=False, seed=6)))
    assert archiver.close(timeout=120)
    assert archiver.stats.total_errors == 0
    run = lookup_run(connect(server["url"], api_key=server["key"]), uid)
    assert run.metadata["stop"]["exit_status"] == "success"
    assert len(_frames(documents_from_arrays(run))) == 5
