"""External frames: event_model.Filler with callbacks.handlers returns the simulator's arrays."""

from __future__ import annotations

import event_model
import h5py
import numpy as np
import pytest

from callbacks.handlers import HANDLER_REGISTRY, AreaDetectorHDF5Handler


def _fill(docs):
    filler = event_model.Filler(HANDLER_REGISTRY, inplace=False)
    out = {}
    for name, doc in docs:
        name, filled = filler(name, doc)
        if name == "event":
            out[doc["uid"]] = filled["data"]["Andor_image"]
    filler.close()
    return out


def test_filler_returns_exact_frames(external_survey):
    filled = _fill(external_survey.docs)
    assert len(filled) == len(external_survey.frames) > 0
    for uid, frames in external_survey.frames.items():
        got = np.asarray(filled[uid])
        assert got.dtype == np.uint16 and got.shape == frames.shape
        np.testing.assert_array_equal(got, frames)


def test_resource_and_datum_documents(external_survey):
    resources = [d for n, d in external_survey.docs if n == "resource"]
    datums = [d for n, d in external_survey.docs if n == "datum"]
    starts = {d["uid"] for n, d in external_survey.docs if n == "start"}
    assert len(resources) == 3
    for r in resources:
        assert r["spec"] == "AD_HDF5"
        assert r["resource_kwargs"] == {"frame_per_point": 3}
        assert r["run_start"] in starts
    by_resource = {}
    for d in datums:
        by_resource.setdefault(d["resource"], []).append(d["datum_kwargs"]["point_number"])
    for points in by_resource.values():
        assert points == list(range(len(points)))


def test_external_and_inline_frames_are_identical(external_survey, tmp_path):
    """Same seed and plan: the external files hold exactly the frames sent inline."""
    from .conftest import run_survey

    plan = external_survey.docs[0][1]["plan_name"]
    inline_survey = run_survey(plan=plan, external=False, tmp_path=tmp_path)
    inline = [d["data"]["Andor_image"] for n, d in inline_survey.docs if n == "event"]
    filled = _fill(external_survey.docs)
    external = [filled[d["uid"]] for n, d in external_survey.docs if n == "event"]
    assert len(inline) == len(external)
    for a, b in zip(inline, external, strict=True):
        np.testing.assert_array_equal(a, b)


def test_handler_reads_points_and_rejects_missing(tmp_path):
    path = tmp_path / "frames.h5"
    data = np.arange(6 * 4 * 5, dtype=np.uint16).reshape(6, 4, 5)
    with h5py.File(path, "w") as f:
        f["/entry/data/data"] = data
    h = AreaDetectorHDF5Handler(str(path), frame_per_point=2)
    np.testing.assert_array_equal(h(1), data[2:4])
    with pytest.raises(IndexError, match="point 3"):
        h(3)
    with pytest.raises(IndexError):
        h(-1)
    assert h.get_file_list([{"point_number": 0}]) == [str(path)]
    h.close()
    with pytest.raises(ValueError):
        AreaDetectorHDF5Handler(str(path), frame_per_point=0)
    with pytest.raises(KeyError, match="no dataset"):
        AreaDetectorHDF5Handler(str(path), dataset="/nope")(0)


def test_live_fill_while_the_run_is_writing(tmp_path):
    """Filling each event as it is emitted (same process) sees the frames just written."""
    from bluesky import RunEngine

    from sim.instrument import SimulatedTXM
    from sim.plans import xanes_scan2
    from sim.sample import make_field_of_view

    txm = SimulatedTXM(
        fov=make_field_of_view(shape=(64, 64), n_particles=2), external=True, data_dir=tmp_path
    )
    filler = event_model.Filler(HANDLER_REGISTRY, inplace=False)
    checked = []

    def live(name, doc):
        name, filled = filler(name, doc)
        if name == "event":
            np.testing.assert_array_equal(filled["data"]["Andor_image"], txm.Andor.last_frames)
            checked.append(doc["seq_num"])

    RE = RunEngine({})
    RE.subscribe(live)
    RE(xanes_scan2(txm, [7.70, 7.73, 7.76], chunk_size=2))
    assert len(checked) == 7
