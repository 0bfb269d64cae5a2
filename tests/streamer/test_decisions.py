"""The alert policy of a run: provisional, confirmed, resolved; chemistry only."""

from __future__ import annotations

from types import SimpleNamespace

from streamer.decisions import MIN_ALERT_AREA_PX, RunAlertBook, RunContext, alertable

ROW = {"id": 3, "area_px": 500, "centroid_px": [10.0, 12.0], "bbox_px": [0, 0, 20, 24]}


def _score(anomalous=True, kind="reduced", drivers=None):
    drivers = drivers or {
        "e0_half": {"value": 7718.0, "reference": 7722.5, "spread": 0.4, "z": -11.0}
    }
    return SimpleNamespace(
        id=3, score=12.0, threshold=4.0, anomalous=anomalous, kind_guess=kind, drivers=drivers
    )


def _book():
    sent = []
    ctx = RunContext(
        run_uid="run-1", scan_id=7, plan_name="xanes_scan2", mode="live", n_energies=106
    )
    return RunAlertBook(ctx, sent.append), sent


def test_provisional_then_confirmed_share_one_fingerprint():
    book, sent = _book()
    book.particles([_score()], {3: ROW}, energy_index=60, final=False, shape=(64, 64))
    book.particles([_score()], {3: ROW}, energy_index=70, final=False, shape=(64, 64))
    book.particles([_score()], {3: ROW}, energy_index=105, final=True, shape=(64, 64))
    assert [(a["severity"], a["provisional"]) for a in sent] == [
        ("warning", True),
        ("critical", False),
    ]
    assert sent[0]["fingerprint"] == sent[1]["fingerprint"]
    assert book.first_decision == {3: 60}


def test_a_provisional_alert_that_does_not_hold_is_resolved():
    book, sent = _book()
    book.particles([_score()], {3: ROW}, energy_index=60, final=False, shape=(64, 64))
    book.particles(
        [_score(anomalous=False)], {3: ROW}, energy_index=105, final=True, shape=(64, 64)
    )
    assert [a["status"] for a in sent] == ["firing", "resolved"] and not book.firing


def test_quality_driven_scores_and_specks_are_not_chemistry_alerts():
    quality = {
        "r_squared": {"value": 0.6, "reference": 0.99, "spread": 0.01, "z": -7.0},
        "e0_half": {"value": 7722.6, "reference": 7722.5, "spread": 0.4, "z": 0.3},
    }
    assert not alertable(_score(kind="other", drivers=quality), ROW)
    assert not alertable(_score(), {**ROW, "area_px": MIN_ALERT_AREA_PX - 1})
    assert alertable(_score(), ROW)
    book, sent = _book()
    book.particles(
        [_score(kind="other", drivers=quality)],
        {3: ROW},
        energy_index=60,
        final=False,
        shape=(64, 64),
    )
    assert sent == []


def test_a_white_line_strong_for_its_edge_position_is_chemistry():
    """|z| below CHEMISTRY_Z but |z given the others| above it: alerted (the kind guess agrees)."""
    drivers = {
        "white_line_height": {
            "value": 2.2,
            "reference": 1.8,
            "spread": 0.14,
            "z": 2.85,
            "z_given_others": 4.9,
        },
        "r_squared": {"value": 0.98, "reference": 0.98, "spread": 0.01, "z": -0.6},
    }
    assert alertable(_score(kind="white_line", drivers=drivers), ROW)
    quality_only = {
        "r_squared": {
            "value": 0.6,
            "reference": 0.99,
            "spread": 0.01,
            "z": -7.0,
            "z_given_others": -7.5,
        },
        "e0_half": {
            "value": 7722.6,
            "reference": 7722.5,
            "spread": 0.4,
            "z": 0.3,
            "z_given_others": 2.0,
        },
    }
    assert not alertable(_score(kind="other", drivers=quality_only), ROW)
