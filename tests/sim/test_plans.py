"""FXI-shaped runs through a real RunEngine: schemas, streams, data keys, metadata, order."""

from __future__ import annotations

import numpy as np
import pytest
from event_model import DocumentNames, schema_validators

from .conftest import CHUNK, ENG_KEV

FXI_START_KEYS = {
    "plan_name",
    "detectors",
    "motors",
    "num_eng",
    "num_bkg_images",
    "num_dark_images",
    "chunk_size",
    "out_x",
    "out_y",
    "exposure_time",
    "eng_list",
    "XEng",
    "plan_args",
    "hints",
    "operator",
    "zone_plate",
    "note",
}
EVENT_KEYS = {"Andor_image", "ic3", "XEng", "zps_sx", "zps_sy", "zps_sz", "zps_pi_r"}


def _validate_all(docs):
    for name, doc in docs:
        schema_validators[DocumentNames[name]].validate(doc)


def _runs(docs):
    """Split documents into runs: list of (start, [(stream, event)], stop)."""
    runs, streams = [], {}
    for name, doc in docs:
        if name == "start":
            runs.append([doc, [], None])
        elif name == "descriptor":
            streams[doc["uid"]] = doc
        elif name == "event":
            runs[-1][1].append((streams[doc["descriptor"]]["name"], doc))
        elif name == "stop":
            runs[-1][2] = doc
    return runs


def test_every_document_validates(inline_survey, external_survey):
    _validate_all(inline_survey.docs)
    _validate_all(external_survey.docs)
    names = {n for n, _ in external_survey.docs}
    assert {"resource", "datum"} <= names
    assert not {"resource", "datum"} & {n for n, _ in inline_survey.docs}


def test_start_metadata_matches_fxi(inline_survey):
    runs = _runs(inline_survey.docs)
    assert len(runs) == 3
    for i, (start, _, stop) in enumerate(runs):
        assert FXI_START_KEYS <= set(start)
        plan = start["plan_name"]
        assert plan in {"xanes_scan2", "xanes_scan"}
        assert start["eng_list"] == ENG_KEV and start["num_eng"] == len(ENG_KEV)
        assert start["chunk_size"] == CHUNK
        assert start["detectors"] == ["Andor", "ic3"]
        assert start["motors"] == ["XEng", "zps_sx", "zps_sy", "zps_sz", "zps_pi_r"]
        assert 5.0 < start["XEng"] < 10.0  # keV
        assert start["plan_args"]["eng_list"] == "eng_list"
        assert start["survey"]["index"] == i and start["survey"]["n_fovs"] == 3
        assert stop["exit_status"] == "success"
        assert stop["num_events"] == {"dark": 1, "primary": len(ENG_KEV), "flat": len(ENG_KEV)}
        # no ground truth in the documents
        assert not {"labels", "particles", "truth", "anomalies"} & set(start)


def test_stream_order(inline_survey):
    n = len(ENG_KEV)
    for start, events, _ in _runs(inline_survey.docs):
        streams = [s for s, _ in events]
        if start["plan_name"] == "xanes_scan2":
            assert streams == ["dark"] + ["primary", "flat"] * n
        else:
            assert streams == ["dark"] + ["primary"] * n + ["flat"] * n
        energies = [e["data"]["XEng"] for s, e in events if s == "primary"]
        flats = [e["data"]["XEng"] for s, e in events if s == "flat"]
        np.testing.assert_allclose(energies, ENG_KEV)
        np.testing.assert_allclose(flats, ENG_KEV)


def test_descriptors_and_event_data(inline_survey, external_survey):
    for run, external in ((inline_survey, False), (external_survey, True)):
        descriptors = [d for n, d in run.docs if n == "descriptor"]
        assert {d["name"] for d in descriptors} == {"dark", "primary", "flat"}
        for d in descriptors:
            assert EVENT_KEYS <= set(d["data_keys"])
            key = d["data_keys"]["Andor_image"]
            assert key["shape"] == [CHUNK, 64, 64]
            assert key["dtype"] == "array" and key["dtype_numpy"] == "<u2"
            assert ("external" in key) is external
        for name, doc in run.docs:
            if name != "event":
                continue
            img = doc["data"]["Andor_image"]
            if external:
                assert isinstance(img, str)
            else:
                assert img.shape == (CHUNK, 64, 64) and img.dtype == np.uint16


def test_dark_flat_sample_levels(inline_survey):
    for _, events, _ in _runs(inline_survey.docs):
        data = {
            s: [np.asarray(e["data"]["Andor_image"], float) for t, e in events if t == s]
            for s in ("dark", "primary", "flat")
        }
        dark = data["dark"][0].mean()
        assert 80 < dark < 120
        flat = np.mean([f.mean() for f in data["flat"]])
        assert 5000 < flat < 20000
        # the sample absorbs: primary below flat, especially above the edge
        above = [p.mean() / f.mean() for p, f in zip(data["primary"], data["flat"], strict=True)]
        assert all(r < 1.0 for r in above) and above[-1] < above[0]
        ic3 = [e["data"]["ic3"] for t, e in events if t == "dark"]
        assert ic3 == [0.0]


@pytest.mark.parametrize("plan", ["xanes_scan2", "xanes_scan"])
def test_abort_after(plan, tmp_path):
    from .conftest import run_survey

    run = run_survey(plan=plan, external=False, tmp_path=tmp_path, n_fovs=1, abort_after=2)
    _validate_all(run.docs)
    ((_start, events, stop),) = _runs(run.docs)
    assert stop["exit_status"] == "abort"
    streams = [s for s, _ in events]
    if plan == "xanes_scan2":
        assert streams == ["dark", "primary", "flat", "primary"]
    else:
        assert streams == ["dark", "primary", "primary"]


def test_full_seed_grid(tmp_path):
    """The default energy grid: 106 energies, one field, chunk of one frame."""
    from bluesky import RunEngine

    from sim.instrument import SimulatedTXM
    from sim.plans import DEFAULT_ENG_LIST_KEV, xanes_scan2
    from sim.sample import make_field_of_view
    from sim.spectra import SEED_ENERGIES_EV

    txm = SimulatedTXM(fov=make_field_of_view(shape=(64, 64), n_particles=3), external=False)
    RE = RunEngine({})
    docs = []
    RE.subscribe(lambda n, d: docs.append((n, d)))
    RE(xanes_scan2(txm, chunk_size=1))
    _validate_all(docs)
    ((start, events, stop),) = _runs(docs)
    assert start["num_eng"] == 106 and start["eng_list"] == list(DEFAULT_ENG_LIST_KEV)
    primary = [e["data"]["XEng"] * 1000 for s, e in events if s == "primary"]
    np.testing.assert_allclose(primary, SEED_ENERGIES_EV, atol=1e-6)
    assert stop["num_events"] == {"dark": 1, "primary": 106, "flat": 106}
