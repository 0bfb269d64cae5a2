"""Simulated fields of view: geometry, chemistry, planted anomalies, surveys, truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim import sample, spectra
from sim.truth import decode_labels

ALL_KINDS = [
    {"kind": "reduced"},
    {"kind": "white_line"},
    {"kind": "reduced", "partial": True},
    {"kind": "white_line", "subtle": True},
]


@pytest.fixture(scope="module")
def fov():
    return sample.make_field_of_view(n_particles=9, anomalies=ALL_KINDS, seed=7)


def test_geometry(fov):
    assert fov.shape == (256, 256)
    assert fov.labels.dtype == np.int32 and fov.thickness_um.dtype == np.float32
    ids = np.unique(fov.labels)
    assert list(ids) == list(range(len(fov.particles) + 1))
    assert len(fov.particles) >= 8
    for p in fov.particles:
        mask = fov.labels == p.id
        assert mask.sum() == p.area_px
        # sizes fit the frame: equivalent diameters 15-75 px
        assert 15 < 2 * np.sqrt(p.area_px / np.pi) < 75
        r0, c0, r1, c1 = p.bbox_px
        assert mask[r0:r1, c0:c1].sum() == p.area_px
        # thicker in the middle than at the rim
        t = fov.thickness_um[mask]
        assert t.max() > 3 * np.percentile(t, 5)
    assert np.all(fov.thickness_um[fov.labels == 0] == 0)
    jump = fov.edge_jump_od()
    assert 0.1 < jump.max() < 1.5


def test_state_of_charge_varies_between_and_within_particles(fov):
    means = [np.nanmean(fov.soc[fov.labels == p.id]) for p in fov.particles]
    assert np.std(means) > 0.1
    spreads = [np.nanstd(fov.soc[fov.labels == p.id]) for p in fov.particles]
    assert max(spreads) > 0.04
    assert np.all(np.isnan(fov.soc[fov.labels == 0]))


def test_planted_anomalies(fov):
    kinds = [(p.kind, p.partial, p.subtle) for p in fov.particles if p.kind != "normal"]
    assert sorted(kinds) == sorted(
        [
            ("reduced", False, False),
            ("white_line", False, False),
            ("reduced", True, False),
            ("white_line", False, True),
        ]
    )
    pop = fov.population()
    for p in fov.particles:
        if p.kind == "normal":
            assert p.anomalous_area_px == 0
            continue
        assert fov.particle_mask(p.id, anomalous_only=True).sum() == p.anomalous_area_px
        assert set(p.planted) == {"e0", "wl_energy", "wl_height", "soc"}
        inside = fov.anomalous_mask[fov.labels == p.id]
        if p.partial:
            assert 0.15 < inside.mean() < 0.6
        else:
            assert inside.all()
        if p.kind == "reduced":
            shift = pop["e0_half"] - p.observed["e0_half"]
            assert 2.0 < shift < 6.5, shift
            assert p.observed["white_line_energy"] < pop["white_line_energy"] - 0.8
        else:
            excess = p.observed["white_line_height"] - pop["white_line_height"]
            assert (0.08 < excess < 0.3) if p.subtle else (0.3 < excess < 0.8), excess
            assert abs(p.observed["e0_half"] - pop["e0_half"]) < 0.6


def test_observed_maps_match_particle_truth(fov):
    for p in fov.particles:
        sel = (fov.labels == p.id) & (fov.anomalous_mask if p.kind != "normal" else True)
        assert np.nanmedian(fov.e0_map[sel]) == pytest.approx(p.observed["e0_half"], abs=0.05)
        assert np.nanmedian(fov.wl_height_map[sel]) == pytest.approx(
            p.observed["white_line_height"], abs=0.01
        )
    assert np.all(np.isnan(fov.wl_energy_map[fov.labels == 0]))


def test_od_is_thickness_times_attenuation(fov):
    e = np.array([7650.0, 7730.0, 7900.0])
    od = fov.od(e)
    assert od.shape == (3, 256, 256) and od.dtype == np.float32
    bg, jump = spectra.licoo2_mu_per_um(e)
    p = fov.labels > 0
    mu = fov.normalized_mu(e)
    assert np.all(np.abs(mu[0]) < 0.01)  # pre-edge
    expected = fov.thickness_um[p] * (bg[:, None] + jump[:, None] * mu)
    np.testing.assert_allclose(od[:, p], expected, rtol=1e-5, atol=1e-6)
    assert np.all(od[:, ~p] == 0)
    assert np.all(od[1][p] > od[0][p])


def test_truth_is_json_and_decodes(fov):
    truth = json.loads(json.dumps(fov.truth(), allow_nan=False))
    labels = decode_labels(truth["labels_rle"], truth["shape"])
    np.testing.assert_array_equal(labels, fov.labels)
    assert truth["n_particles"] == len(fov.particles)
    assert len(truth["anomalous_particles"]) == 4
    p = truth["particles"][0]
    assert {"id", "kind", "centroid_px", "bbox_px", "area_px", "observed"} <= set(p)


def test_deterministic():
    a = sample.make_field_of_view(shape=(96, 96), n_particles=4, anomalies=ALL_KINDS[:2], seed=3)
    b = sample.make_field_of_view(shape=(96, 96), n_particles=4, anomalies=ALL_KINDS[:2], seed=3)
    c = sample.make_field_of_view(shape=(96, 96), n_particles=4, anomalies=ALL_KINDS[:2], seed=4)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.od([7725.0]), b.od([7725.0]))
    assert a.truth() == b.truth()
    assert not np.array_equal(a.labels, c.labels)


def test_bad_anomaly_requests():
    with pytest.raises(ValueError, match="kind"):
        sample.make_field_of_view(shape=(64, 64), n_particles=2, anomalies=[{"kind": "weird"}])
    with pytest.raises(ValueError, match="unknown anomaly option"):
        sample.make_field_of_view(shape=(64, 64), anomalies=[{"kind": "reduced", "size": 3}])
    with pytest.raises(ValueError, match="only"):
        sample.make_field_of_view(shape=(64, 64), n_particles=1, anomalies=ALL_KINDS[:2])
    with pytest.raises(ValueError, match="not available"):
        sample.make_field_of_view(
            shape=(64, 64),
            n_particles=2,
            anomalies=[{"kind": "reduced", "particle": 1}, {"kind": "white_line", "particle": 1}],
        )


def test_default_survey():
    fovs = sample.make_survey(n_fovs=8, shape=(256, 256), seed=0)
    assert len(fovs) == 8
    assert sum(len(f.particles) for f in fovs) >= 60
    planted = [(f.index, p.kind) for f in fovs for p in f.particles if p.kind != "normal"]
    assert sorted(k for _, k in planted) == ["reduced", "white_line"]
    positions = {tuple(f.stage_xy_um) for f in fovs}
    assert len(positions) == 8


def test_survey_anomalies_are_spread_over_fields():
    where = set()
    for seed in range(6):
        fovs = sample.make_survey(n_fovs=4, shape=(64, 64), seed=seed, n_particles=3)
        where |= {f.index for f in fovs for p in f.particles if p.kind != "normal"}
    assert len(where) >= 3 and where != {0}
    fovs = sample.make_survey(
        n_fovs=3,
        shape=(64, 64),
        seed=0,
        n_particles=3,
        anomalies_per_survey=[{"kind": "white_line", "fov": 2}],
    )
    assert [p.kind for p in fovs[2].particles].count("white_line") == 1
