"""Recognising XANES runs from start documents and descriptors."""

from __future__ import annotations

import pytest

from callbacks.dialects import NotXanesError, detect_dialect


def test_fxi_xanes_scan2_start_is_recognised_with_energies_in_ev():
    d = detect_dialect(
        {"plan_name": "xanes_scan2", "eng_list": [7.7124, 7.7224], "chunk_size": 5, "XEng": 7.7}
    )
    assert d.name == "fxi_xanes_scan2"
    assert d.image_key == "Andor_image" and d.energy_key == "XEng" and d.i0_key == "ic3"
    assert d.planned_energies_ev == pytest.approx((7712.4, 7722.4))
    assert d.chunk_size == 5 and not d.flats_after_all


def test_fxi_xanes_scan_defers_flats():
    d = detect_dialect({"plan_name": "xanes_scan", "eng_list": [7.7], "chunk_size": 3})
    assert d.name == "fxi_xanes_scan" and d.flats_after_all


@pytest.mark.parametrize(
    "start",
    [
        {"plan_name": "count", "detectors": ["Andor"]},
        {"plan_name": "scan", "motors": ["zps_sx"]},
        {"plan_name": "fly_scan", "motors": ["zps_pi_r"]},
        {},
    ],
)
def test_other_runs_are_ignored(start):
    assert detect_dialect(start) is None


def test_generic_energy_scan_takes_image_key_from_descriptor():
    d = detect_dialect({"plan_name": "list_scan", "motors": ["mono_energy"]})
    assert d.name == "generic" and d.image_key is None
    descriptor = {
        "name": "primary",
        "data_keys": {
            "mono_energy": {"shape": [], "units": "eV", "dtype": "number"},
            "cam_image": {"shape": [128, 96], "dtype": "array"},
        },
    }
    d2 = d.with_descriptor(descriptor)
    assert d2.image_key == "cam_image" and d2.energy_scale == 1.0
    assert d2.to_ev(7712.0) == 7712.0


def test_generic_unknown_units_are_guessed_per_value():
    d = detect_dialect({"motors": ["energy"]})
    assert d.to_ev(7.712) == pytest.approx(7712.0) and d.to_ev(7712.0) == 7712.0


def test_generic_scan_without_image_is_not_xanes():
    d = detect_dialect({"plan_name": "scan", "motors": ["energy"]})
    with pytest.raises(NotXanesError, match="no 2D image"):
        d.with_descriptor({"name": "primary", "data_keys": {"I0": {"shape": []}}})


def test_explicit_metadata_block_wins():
    d = detect_dialect(
        {
            "plan_name": "count",
            "txm_streamer": {
                "image_key": "img",
                "energy_key": "E",
                "energy_units": "eV",
                "energies": [7700, 7710],
            },
        }
    )
    assert d.image_key == "img" and d.planned_energies_ev == (7700.0, 7710.0)
