"""(img - dark) / (flat - dark) of simulated frames recovers the planted OD within shot noise."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import CHUNK, ENG_KEV, run_survey


def _streams(docs):
    out, streams = [], {}
    for name, doc in docs:
        if name == "start":
            out.append({"dark": [], "primary": [], "flat": []})
        elif name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        elif name == "event":
            out[-1][streams[doc["descriptor"]]].append(doc["data"])
    return out


@pytest.mark.parametrize("plan", ["xanes_scan2", "xanes_scan"])
def test_recovers_planted_od(plan, tmp_path):
    run = run_survey(plan=plan, external=False, tmp_path=tmp_path, n_fovs=2, drift_px=0.0)
    for i, streams in enumerate(_streams(run.docs)):
        fov = run.txm.fovs[i]
        dark = streams["dark"][0]["Andor_image"].astype(np.float64).mean(axis=0)
        for sample, flat, e_kev in zip(streams["primary"], streams["flat"], ENG_KEV, strict=True):
            img = sample["Andor_image"].astype(np.float64).mean(axis=0) - dark
            ref = flat["Andor_image"].astype(np.float64).mean(axis=0) - dark
            # xanes_scan takes flats minutes later: correct the beam decay with ic3
            ratio = (img / ref) * (flat["ic3"] / sample["ic3"])
            od = -np.log(ratio)
            truth = fov.od([e_kev * 1e3])[0]
            # expected shot noise of the OD: 1/N_sample + 1/N_flat (N = counts over CHUNK frames)
            sigma = np.sqrt(1.0 / (img * CHUNK) + 1.0 / (ref * CHUNK))
            resid = od - truth
            # common mode: the mean residual is within the shot noise of the mean plus the noise
            # of the two ic3 readings used for the correction
            common = np.sqrt(np.mean(sigma**2) / sigma.size + 2 * run.txm.ic3_noise**2)
            assert abs(resid.mean()) < 4 * common, (plan, e_kev, resid.mean(), common)
            z = (resid - resid.mean()) / sigma
            assert 0.9 < z.std() < 1.1, (plan, e_kev, z.std())
            inside = fov.labels > 0
            assert np.abs(np.median(od[inside] - truth[inside])) < 0.01


def test_drift_moves_the_sample_and_is_recorded(tmp_path):
    run = run_survey(plan="xanes_scan2", external=False, tmp_path=tmp_path, n_fovs=1, drift_px=20.0)
    (truth,) = run.recorder.runs.values()
    drift = np.array(truth["drift_px"])
    assert drift.shape == (len(ENG_KEV), 2)
    assert np.all(drift[0] == 0) and np.abs(drift).max() > 0.05
    np.testing.assert_allclose(truth["shift_px"], drift)
    # the planted OD shifted by the recorded drift matches the frames better than unshifted
    streams = _streams(run.docs)[0]
    dark = streams["dark"][0]["Andor_image"].astype(float).mean(axis=0)
    k = len(ENG_KEV) - 1
    img = streams["primary"][k]["Andor_image"].astype(float).mean(axis=0) - dark
    ref = streams["flat"][k]["Andor_image"].astype(float).mean(axis=0) - dark
    od = -np.log(img / ref)
    e = ENG_KEV[k] * 1e3
    shifted = run.txm.expected_od(e, shift_px=drift[k])
    unshifted = run.txm.expected_od(e)
    assert np.abs(od - shifted).mean() < np.abs(od - unshifted).mean()
