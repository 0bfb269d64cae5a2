"""Fixtures for the simulator tests: small surveys run through a real RunEngine."""

from __future__ import annotations

import pytest
from bluesky import RunEngine

from sim.instrument import SimulatedTXM
from sim.plans import survey
from sim.sample import make_survey
from sim.truth import TruthRecorder

#: A few energies around the edge (keV), as FXI's eng_list.
ENG_KEV = [7.65, 7.715, 7.722, 7.728, 7.74, 7.8]
CHUNK = 3


class Run:
    """Documents, frames and truth of one simulated survey."""

    def __init__(self, txm, docs, frames, recorder, uids):
        self.txm = txm
        self.docs = docs
        self.frames = frames  # event uid -> the frames the simulator produced
        self.recorder = recorder
        self.uids = uids


def run_survey(*, plan, external, tmp_path, n_fovs=3, eng=ENG_KEV, drift_px=1.0, seed=5, **kw):
    fovs = make_survey(n_fovs=n_fovs, shape=(64, 64), seed=seed, n_particles=3)
    txm = SimulatedTXM(
        fov=fovs[0], seed=seed, external=external, data_dir=tmp_path, drift_px=drift_px
    )
    RE = RunEngine({})
    docs, frames = [], {}
    recorder = TruthRecorder(txm)

    def collect(name, doc):
        docs.append((name, doc))
        if name == "event":
            frames[doc["uid"]] = txm.Andor.last_frames.copy()

    RE.subscribe(collect)
    RE.subscribe(recorder)
    uids = RE(survey(txm, fovs, plan=plan, eng_list=eng, chunk_size=CHUNK, **kw))
    return Run(txm, docs, frames, recorder, list(uids))


@pytest.fixture(scope="session", params=["xanes_scan2", "xanes_scan"])
def inline_survey(request, tmp_path_factory):
    return run_survey(
        plan=request.param, external=False, tmp_path=tmp_path_factory.mktemp("inline")
    )


@pytest.fixture(scope="session", params=["xanes_scan2", "xanes_scan"])
def external_survey(request, tmp_path_factory):
    return run_survey(plan=request.param, external=True, tmp_path=tmp_path_factory.mktemp("h5"))
