"""``txm-streamer replay``: archived runs give the alerts and particles of the live analysis.

One small survey (2 fields of 64x64 px, planted anomalies) runs on a real RunEngine with the live
analyzer and the archiver subscribed; the catalog is then replayed in a new process (the
command), through the JSON document export, and on a dask LocalCluster of 2 worker processes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count
from ophyd.sim import det

from callbacks import XanesAnalyzer
from callbacks.handlers import HANDLER_REGISTRY
from callbacks.replay import replay, replay_distributed, select_runs
from sim.instrument import SimulatedTXM
from sim.plans import survey
from sim.sample import make_survey
from sim.spectra import SEED_ENERGIES_EV
from streamer.archive import Archiver
from streamer.catalog import open_catalog
from streamer.cli import main

ENG_KEV = list(SEED_ENERGIES_EV[::2] / 1000.0)
ANOMALIES = [{"kind": "reduced", "fov": 1}, {"kind": "white_line", "fov": 0}]


@pytest.fixture(scope="module")
def archived(tmp_path_factory):
    """The live survey: catalog directory, run uids, live alerts and run summaries."""
    root = tmp_path_factory.mktemp("replay")
    fovs = make_survey(
        n_fovs=2, shape=(64, 64), seed=5, n_particles=5, anomalies_per_survey=ANOMALIES
    )
    txm = SimulatedTXM(fov=fovs[0], seed=5, data_dir=root / "frames")
    RE = RunEngine({})
    sent: list[dict] = []
    analyzer = XanesAnalyzer(alerts=sent.append)
    archiver = Archiver(root / "catalog", handler_registry=HANDLER_REGISTRY)
    RE.subscribe(analyzer)
    RE.subscribe(archiver)
    uids = RE(survey(txm, fovs, eng_list=ENG_KEV, chunk_size=1))
    (count_uid,) = RE(count([det], num=2))
    assert analyzer.flush(timeout=300)
    assert archiver.close(timeout=300)
    analyzer.close()
    return {
        "catalog": root / "catalog",
        "uids": list(uids),
        "count_uid": count_uid,
        "alerts": sent,
        "runs": {s.info.run_uid: s for s in analyzer.session.runs},
        "stats": analyzer.stats,
    }


def _alert_key(a: dict) -> tuple:
    """What must agree between two analyses of the same runs (not the mode)."""
    particle = a.get("particle") or {}
    return (
        a["kind"],
        a["status"],
        a["run_uid"],
        a.get("energy_index"),
        particle.get("id"),
        a.get("subject"),
        (a.get("extra") or {}).get("kind_guess"),
    )


def _flagged(runs) -> set[tuple]:
    return {(r["run_uid"], int(pid), kind) for r in runs for pid, kind in r["flagged"].items()}


def _assert_tables_close(tables_a: dict, tables_b: dict) -> None:
    assert tables_a.keys() == tables_b.keys()
    for uid in tables_a:
        a, b = tables_a[uid], tables_b[uid]
        assert [r["id"] for r in a] == [r["id"] for r in b]
        for ra, rb in zip(a, b, strict=True):
            assert ra.keys() == rb.keys()
            for key, va in ra.items():
                np.testing.assert_allclose(
                    np.asarray(va, float),
                    np.asarray(rb[key], float),
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=f"run {uid[:8]} particle {ra['id']} {key}",
                )


def _live_runs(archived) -> list[dict]:
    return [
        {
            "run_uid": s.info.run_uid,
            "flagged": {str(p): a["extra"]["kind_guess"] for p, a in s.flagged.items()},
            "table": json.loads(json.dumps(s.table)),
        }
        for s in archived["runs"].values()
    ]


def _replay_cli(archived, out, *extra) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamer.cli",
            "replay",
            str(archived["catalog"]),
            "--out",
            str(out),
            "--endpoint",
            "tcp://127.0.0.1:*",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    return {"summary": json.loads((out / "replay.json").read_text()), "alerts": alerts}


@pytest.fixture(scope="module")
def serial(archived, tmp_path_factory):
    """The command, in a new process, on the whole catalog (the count run is skipped)."""
    return _replay_cli(archived, tmp_path_factory.mktemp("serial"))


def test_live_analysis_flagged_the_planted_anomalies(archived):
    assert archived["stats"]["dropped_events"] == 0
    flagged = _flagged(_live_runs(archived))
    assert flagged, "nothing flagged live: the comparison with replay would be vacuous"


def test_replay_in_a_new_process_equals_live(archived, serial):
    summary, alerts = serial["summary"], serial["alerts"]
    assert [r["run_uid"] for r in summary["runs"]] == archived["uids"]
    assert summary["stats"]["dropped_events"] == 0
    assert {a["mode"] for a in alerts} == {"replay"}
    assert [_alert_key(a) for a in alerts] == [_alert_key(a) for a in archived["alerts"]]
    assert _flagged(summary["runs"]) == _flagged(_live_runs(archived))
    _assert_tables_close(
        {r["run_uid"]: r["table"] for r in summary["runs"]},
        {r["run_uid"]: r["table"] for r in _live_runs(archived)},
    )
    live = {
        (a["run_uid"], a["particle"]["id"], a["status"], a["energy_index"]): a
        for a in archived["alerts"]
        if a["kind"] == "anomalous_particle"
    }
    for a in alerts:
        if a["kind"] == "anomalous_particle":
            ref = live[(a["run_uid"], a["particle"]["id"], a["status"], a["energy_index"])]
            assert a["attributes"].keys() == ref["attributes"].keys()
            for k, v in a["attributes"].items():
                assert v == pytest.approx(ref["attributes"][k], rel=1e-5, abs=1e-4)


def _replay_here(archived, tmp_path, *, method="arrays", workers=None) -> tuple[list, dict]:
    client = open_catalog(archived["catalog"], create=False)
    runs = select_runs(client)
    sent: list[dict] = []
    analyzer = XanesAnalyzer(alerts=sent.append, mode="replay", out_dir=tmp_path, report=False)
    if workers:
        replay_distributed(
            str(archived["catalog"]),
            runs,
            analyzer,
            workers=workers,
            method=method,
            progress=False,
        )
    else:
        replay(client, runs, analyzer, method=method, progress=False)
    analyzer.close()
    return sent, {s.info.run_uid: s.table for s in analyzer.session.runs}


def test_documents_path_equals_the_fast_path(archived, serial, tmp_path):
    sent, tables = _replay_here(archived, tmp_path, method="export")
    assert [_alert_key(a) for a in sent] == [_alert_key(a) for a in serial["alerts"]]
    assert [a["fingerprint"] for a in sent] == [a["fingerprint"] for a in serial["alerts"]]
    _assert_tables_close(
        json.loads(json.dumps(tables)),
        {r["run_uid"]: r["table"] for r in serial["summary"]["runs"]},
    )


def test_dask_replay_on_two_worker_processes_equals_the_serial_replay(archived, serial, tmp_path):
    sent, tables = _replay_here(archived, tmp_path, workers=2)
    assert [a["fingerprint"] for a in sent] == [a["fingerprint"] for a in serial["alerts"]]
    assert [_alert_key(a) for a in sent] == [_alert_key(a) for a in serial["alerts"]]
    _assert_tables_close(
        json.loads(json.dumps(tables)),
        {r["run_uid"]: r["table"] for r in serial["summary"]["runs"]},
    )


def test_replay_keeps_every_event_when_the_queue_is_tiny(archived, tmp_path):
    client = open_catalog(archived["catalog"], create=False)
    runs = select_runs(client, [archived["uids"][0]])
    sent: list[dict] = []
    analyzer = XanesAnalyzer(alerts=sent.append, mode="replay", max_queue_events=1, report=False)
    replay(client, runs, analyzer, progress=False)
    analyzer.close()
    assert analyzer.stats["dropped_events"] == 0
    first = [_alert_key(a) for a in archived["alerts"] if a["run_uid"] == runs[0].uid]
    assert [_alert_key(a) for a in sent] == first


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing uid", "no run with uid"),
        ("not xanes", "is not a XANES run"),
        ("no catalog", "cannot read the run catalog"),
    ],
)
def test_clear_errors(archived, tmp_path, capsys, case, message):
    catalog = str(archived["catalog"])
    uid = {"missing uid": "deadbeef42", "not xanes": archived["count_uid"]}.get(case)
    if case == "no catalog":
        catalog = str(tmp_path / "nowhere")
    argv = ["replay", catalog, "--out", str(tmp_path / "out"), "--endpoint", "tcp://127.0.0.1:*"]
    if uid:
        argv += ["--uid", uid]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_select_runs_skips_other_runs_with_a_warning(archived, caplog):
    runs = select_runs(open_catalog(archived["catalog"], create=False))
    assert [r.uid for r in runs] == archived["uids"]
    assert "not a XANES run: skipped" in caplog.text
    assert all(r.n_events > 0 for r in runs)


def test_final_only_mining_evaluates_each_run_once_on_its_complete_spectra(archived, tmp_path):
    from streamer.run_analysis import DecisionPolicy

    client = open_catalog(archived["catalog"], create=False)
    runs = select_runs(client)
    sent: list[dict] = []
    analyzer = XanesAnalyzer(
        alerts=sent.append, mode="replay", report=False, policy=DecisionPolicy(provisional=False)
    )
    replay(client, runs, analyzer, progress=False)
    analyzer.close()
    particles = [a for a in sent if a["kind"] == "anomalous_particle"]
    assert particles and all(not a["provisional"] for a in particles)
    n_last = len(ENG_KEV) - 1
    assert {a["energy_index"] for a in particles} == {n_last}
    summaries = {s.info.run_uid: s for s in analyzer.session.runs}
    assert list(summaries) == archived["uids"]
