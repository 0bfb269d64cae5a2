"""The alert schema, its validation errors, fingerprints, flow control and endpoint rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamer.alerts import AlertPublisher, AlertValidationError, make_alert, validate_alert
from streamer.alerts.endpoints import check_bind_endpoint, default_snapshot_endpoint
from streamer.alerts.flow import Outbox, RateLimiter, is_material_update
from streamer.alerts.schema import FIELDS, SCHEMA, compute_fingerprint, dumps, to_jsonable


def particle_alert(**fields):
    base = {
        "run_uid": "run-1",
        "scan_id": 12,
        "plan_name": "xanes_scan2",
        "particle": {
            "id": 7,
            "centroid_px": [10.5, 20.0],
            "bbox_px": [5, 15, 16, 26],
            "area_px": 90,
            "stage_position": {"sx": 1.5, "sy": -2.0},
        },
        "score": 6.0,
        "threshold": 4.0,
        "energy_index": 40,
        "n_energies": 106,
        "attributes": {"e0_half_median": 7718.2},
        "population": {"e0_half_median": 7722.0},
    }
    return make_alert("anomalous_particle", **{**base, **fields})


def published(alert, seq=1):
    return {
        **alert,
        "seq": seq,
        "epoch": "e1",
        "publisher": "test",
        "time": 1.0,
        "time_iso": "1970-01-01T00:00:01+00:00",
        "revision": 0,
    }


def test_make_alert_fills_every_field_with_defaults():
    alert = particle_alert()
    assert set(alert) == set(FIELDS)
    assert alert["schema"] == SCHEMA
    assert alert["severity"] == "warning" and alert["status"] == "firing"
    assert alert["mode"] == "live" and alert["provisional"] is True
    assert "\n" not in alert["message"] and "particle 7" in alert["message"]
    assert len(alert["fingerprint"]) == 16
    validate_alert(alert, published=False)
    validate_alert(published(alert))
    assert particle_alert(energy_index=105)["provisional"] is False


def test_numpy_values_become_plain_json():
    alert = particle_alert(
        score=np.float32(5.5),
        particle={"id": np.int64(3), "centroid_px": np.array([1.0, 2.0]), "area_px": np.int32(4)},
        attributes={"white_line_height": np.float64(np.nan), "hist": np.arange(3)},
    )
    assert type(alert["score"]) is float and type(alert["particle"]["id"]) is int
    assert alert["particle"]["centroid_px"] == [1.0, 2.0]
    assert alert["attributes"] == {"white_line_height": None, "hist": [0, 1, 2]}
    assert json.loads(dumps(published(alert))) == published(alert)
    with pytest.raises(TypeError, match="JSON only"):
        to_jsonable({"bad": {1, 2}})


def test_fingerprint_ignores_volatile_fields_and_names_the_condition():
    base = particle_alert()
    same = particle_alert(score=9.0, severity="critical", energy_index=105, message="confirmed")
    assert same["fingerprint"] == base["fingerprint"]
    assert compute_fingerprint(published(base, seq=99)) == base["fingerprint"]
    others = [
        particle_alert(particle={"id": 8}),
        particle_alert(run_uid="run-2"),
        particle_alert(mode="replay"),
        particle_alert(subject="rim"),
    ]
    assert len({a["fingerprint"] for a in [base, *others]}) == 5


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"kind": "bogus"}, "kind", "must be one of"),
        ({"severity": "severe"}, "severity", "got 'severe'"),
        ({"status": "open"}, "status", "'firing', 'resolved'"),
        ({"mode": "simulation"}, "mode", "'live', 'replay'"),
        ({"particle": None}, "particle", "required for kind 'anomalous_particle'"),
        ({"particle": {"id": "7"}}, "particle.id", "must be an int"),
        ({"particle": {"id": 7, "centroid_px": [1.0]}}, "particle.centroid_px", "list of 2"),
        ({"particle": {"id": 7, "bbox_px": [0, 0, 1.5, 2]}}, "particle.bbox_px", "list of 4"),
        ({"particle": {"id": 7, "stage_position": {"sz": 1}}}, "particle.stage_position", "sx"),
        ({"energy_index": 106}, "energy_index", "[0, n_energies=106)"),
        ({"scan_id": "12"}, "scan_id", "must be an int or null"),
        ({"score": "high"}, "score", "must be a number or null"),
        ({"message": "two\nlines"}, "message", "single line"),
        ({"message": "x" * 501}, "message", "at most 500"),
        ({"attributes": [1, 2]}, "attributes", "must be an object"),
        ({"fingerprint": "XYZ"}, "fingerprint", "16 lowercase hex"),
        ({"schema": "txm-streamer.alert/0"}, "schema", "must be 'txm-streamer.alert/1'"),
        ({"seq": 0}, "seq", "int >= 1"),
        ({"epoch": ""}, "epoch", "non-empty string"),
    ],
)
def test_validation_errors_name_the_field_and_the_problem(change, field, fragment):
    alert = {**published(particle_alert()), **change}
    with pytest.raises(AlertValidationError, match="alert field") as info:
        validate_alert(alert)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_make_alert_rejects_unknown_fields_and_missing_fields_are_named():
    with pytest.raises(AlertValidationError, match="'partcle' is not in schema"):
        make_alert("anomalous_particle", partcle={"id": 1})
    alert = published(particle_alert())
    del alert["run_uid"]
    with pytest.raises(AlertValidationError, match="'run_uid' is missing"):
        validate_alert(alert)


def test_update_rule_outbox_and_rate_limiter():
    old = {"severity": "warning", "provisional": True, "score": 5.0}
    assert not is_material_update(old, {**old, "score": 5.4}, tolerance=0.1)
    assert is_material_update(old, {**old, "score": 6.0}, tolerance=0.1)
    assert is_material_update(old, {**old, "score": 4.0}, tolerance=0.1)
    assert is_material_update(old, {**old, "severity": "critical"}, tolerance=0.1)
    assert is_material_update(old, {**old, "extra": {"kind_guess": "reduced"}}, tolerance=0.1)
    assert not is_material_update(old, {**old, "message": "reworded"}, tolerance=0.1)
    box = Outbox(3)
    for name, rank in [("info", 1), ("debug", 0), ("warning", 2)]:
        assert box.put(name, rank=rank) == (True, None)
    assert box.put("critical", rank=3) == (True, "debug")
    assert box.put("critical2", rank=3) == (True, "info")
    assert box.put("debug2", rank=0) == (False, None)
    assert box.drain() == ["warning", "critical", "critical2"] and len(box) == 0
    now = [0.0]
    limiter = RateLimiter({"new_cluster": 2.0}, burst=2, clock=lambda: now[0])
    allowed = [limiter.allow("new_cluster", mode="live", message=str(i)) for i in range(5)]
    assert allowed == [True, True, False, False, False]
    assert limiter.allow("data_quality", mode="live", message="unlimited kind")
    [(action, fields)] = limiter.due()
    assert action == "fire" and fields["attributes"]["suppressed"] == 3
    assert fields["extra"]["examples"] == ["2", "3", "4"]
    assert limiter.due() == []  # nothing new, bucket not yet refilled
    now[0] = 10.0
    assert [action for action, _ in limiter.due()] == ["resolve"]


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5577", "tcp://*:5577", "tcp://eth0:5577"])
def test_non_loopback_binding_is_refused_unless_explicit(endpoint):
    with pytest.raises(ValueError, match="allow_remote=True"):
        check_bind_endpoint(endpoint, allow_remote=False)
    with pytest.raises(ValueError, match="refusing to bind"):
        AlertPublisher(endpoint)
    assert check_bind_endpoint(endpoint, allow_remote=True) == endpoint
    assert check_bind_endpoint("tcp://[::1]:5577", allow_remote=False)
    assert default_snapshot_endpoint("tcp://localhost:6000") == "tcp://localhost:6001"
