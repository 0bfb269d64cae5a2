"""Ground truth per run: keyed by uid and scan_id, written to and read back from a file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.truth import read_truth, write_truth

from .conftest import ENG_KEV


def test_recorder_maps_runs_to_fields(inline_survey):
    rec = inline_survey.recorder
    assert set(rec.runs) == set(inline_survey.uids)
    starts = [d for n, d in inline_survey.docs if n == "start"]
    for i, start in enumerate(starts):
        run = rec.runs[start["uid"]]
        assert run["scan_id"] == start["scan_id"]
        assert run["plan_name"] == start["plan_name"]
        assert run["exit_status"] == "success"
        assert run["fov"]["index"] == i
        assert run["fov"]["seed"] == inline_survey.txm.fovs[i].seed
        np.testing.assert_allclose(run["energies_ev"], np.array(ENG_KEV) * 1e3)
        assert len(run["drift_px"]) == len(run["i0_counts_per_s"]) == len(ENG_KEV)
        assert run["n_events"] == {"dark": 1, "primary": len(ENG_KEV), "flat": len(ENG_KEV)}
        assert all(i0 > 0 for i0 in run["flat_i0_counts_per_s"])
    truth = rec.truth()
    assert truth["by_scan_id"] == {str(s["scan_id"]): s["uid"] for s in starts}


@pytest.mark.parametrize("sidecar", [False, True])
def test_truth_file_round_trip(inline_survey, tmp_path, sidecar):
    path = write_truth(tmp_path / "truth.json", inline_survey.recorder, sidecar_labels=sidecar)
    raw = json.loads(path.read_text())
    assert ("labels_npz" in raw) is sidecar
    back = read_truth(path)
    for i, uid in enumerate(inline_survey.uids):
        np.testing.assert_array_equal(
            back["runs"][uid]["fov"]["labels"], inline_survey.txm.fovs[i].labels
        )


def test_read_truth_rejects_other_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(ValueError, match="sim-truth"):
        read_truth(path)
