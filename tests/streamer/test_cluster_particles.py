"""A new pixel cluster names the particles it falls in (partial anomalies)."""

from __future__ import annotations

import numpy as np
import pytest

from sim.sample import make_field_of_view
from streamer import session as session_module
from streamer.cluster_particles import particles_in_cluster
from streamer.run_analysis import DecisionPolicy, RunAnalysis, RunInfo
from streamer.session import AnalysisSession
from tests.streamer.field_support import E

E0 = 7722.0


def test_particles_in_cluster_names_regions_not_scattered_pixels():
    labels = np.zeros((40, 40), np.int32)
    labels[:20, :20], labels[20:, 20:], labels[:20, 20:] = 1, 2, 3
    clusters = np.full(labels.size, -1, np.int16)
    flat = labels.ravel()
    clusters[np.flatnonzero(flat == 2)[:150]] = 7  # 150 of particle 2's 400 px
    clusters[np.flatnonzero(flat == 1)[:30]] = 7  # 30 of particle 1's 400 px
    clusters[np.flatnonzero(flat == 3)[::40]] = 7  # 10 scattered pixels of particle 3
    clusters[np.flatnonzero(flat == 0)[:50]] = 7  # and some background
    named = particles_in_cluster(labels, clusters, 7)
    assert [p["id"] for p in named] == [2, 1]
    assert named[0]["fraction_of_particle"] == pytest.approx(0.375)
    assert named[0]["fraction_of_cluster"] == pytest.approx(150 / 240, abs=1e-3)
    assert particles_in_cluster(labels, clusters, 7, limit=1)[0]["id"] == 2
    assert particles_in_cluster(labels, clusters, 99) == []
    with pytest.raises(ValueError, match="pixels"):
        particles_in_cluster(labels, clusters[:-1], 7)


def _analyse(session: AnalysisSession, fov, scan_id: int) -> None:
    od = fov.od(E).reshape(E.size, -1).astype(np.float32)
    od += 0.003 * np.random.default_rng(scan_id).standard_normal(od.shape).astype(np.float32)
    shape = fov.shape
    info = RunInfo(run_uid=f"run-{scan_id}", scan_id=scan_id, planned_energies_ev=tuple(E))
    run = RunAnalysis(info, session=session, policy=DecisionPolicy(e0_hint_ev=E0))
    run.add_dark(np.zeros((1, *shape), np.float32))
    frame = np.ones((1, *shape), np.float32)
    for energy, row in zip(E, od, strict=True):
        run.add_flat(frame, energy_ev=energy)
        run.add_sample(np.exp(-row).reshape(1, *shape), energy_ev=energy)
    run.finalize()


def test_a_partial_anomaly_is_named_by_its_new_cluster_alert(monkeypatch):
    # the abnormal third of a particle of these small fields is ~60 px, under the alert's minimum
    monkeypatch.setattr(session_module, "MIN_NEW_CLUSTER_PX", 40)
    session = AnalysisSession(keep_label_maps=True, seed=0)
    for i in range(3):
        fov = make_field_of_view(shape=(128, 128), n_particles=5, seed=10 + i)
        _analyse(session, fov, i + 1)
    partial = make_field_of_view(
        shape=(128, 128), n_particles=5, seed=20, anomalies=[{"kind": "reduced", "partial": True}]
    )
    _analyse(session, partial, 9)
    alerts = [a for a in session.alerts if a["kind"] == "new_cluster" and a["run_uid"] == "run-9"]
    assert alerts, "the abnormal region formed no new pixel cluster"
    labels = session.runs[-1].labels
    planted = {int(i) for i in np.unique(labels[partial.anomalous_mask]) if i > 0}
    named = {p["id"] for a in alerts for p in a["extra"]["particles"]}
    assert named & planted
    particle = next(p for a in alerts for p in a["extra"]["particles"] if p["id"] in planted)
    assert set(particle) >= {"centroid_px", "bbox_px", "area_px", "fraction_of_particle"}
    assert f"particle {particle['id']}" in next(a["message"] for a in alerts)
