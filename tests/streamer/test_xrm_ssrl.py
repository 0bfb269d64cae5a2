"""Real SSRL 6-2c frames (Xradia .xrm, Ni K-edge of NCA particles) through the SpectralCube.

The data (``../shared/data/ssrl-6-2c-nca``, GPL-3, test use only, never copied into the project):
3 sample and 3 reference (flat) frames at 8324 eV (below the Ni K edge, about 8333 eV) and at
8354 eV (above it). The run has no dark frames: the Retiga camera's offset is a few counts here
(the darkest pixels read 1-5), so the cube normalises without a dark. Sample and reference
exposures differ (0.5 s and 0.3 s) and the ion-chamber current varies from frame to frame, so the
monitor passed as I0 is ``exposure x ion chamber current`` (I0 correction).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from streamer.cube import SpectralCube
from streamer.xrm import XrmFormatError, energy_from_filename, read_xrm

ENERGIES = (8324.0, 8354.0)


def _load(folder):
    """{(energy, is_reference): (stack, i0 per exposure)} from the .xrm files."""
    groups: dict = {}
    for path in sorted(folder.glob("*.xrm")):
        image, meta = read_xrm(path)
        i0 = meta["exposure_s"] * meta["ion_chamber_current"]
        groups.setdefault((meta["energy_ev"], meta["is_reference"]), []).append((image, i0))
    return {
        key: (np.stack([im for im, _ in frames]), [i0 for _, i0 in frames])
        for key, frames in groups.items()
    }


@pytest.fixture(scope="module")
def ssrl(shared_data):
    folder = shared_data / "ssrl-6-2c-nca"
    if not any(folder.glob("*.xrm")):
        pytest.skip(f"no .xrm files in {folder}")
    return folder


def test_read_xrm_metadata(ssrl):
    path = next(ssrl.glob("*_08354.0_eV_002of003.xrm"))
    image, meta = read_xrm(path)
    assert image.shape == (1024, 1024) and image.dtype == np.uint16
    assert meta["energy_ev"] == 8354.0 and meta["energy_source"] == "filename"
    assert not meta["is_reference"] and meta["exposure_s"] == pytest.approx(0.5)
    assert meta["pixel_size_um"] == pytest.approx(0.0312) and meta["horizontal_bin"] == 2
    assert 100 < image.mean() < 1000
    _, ref_meta = read_xrm(next(ssrl.glob("*_ref_*_08324.0_eV_001of010.xrm")))
    assert ref_meta["is_reference"] and ref_meta["exposure_s"] == pytest.approx(0.3)


def test_od_rises_across_the_ni_edge_inside_particles_only(ssrl):
    frames = _load(ssrl)
    assert {k for k in frames} == {(e, r) for e in ENERGIES for r in (False, True)}
    cube = SpectralCube(energies=ENERGIES)
    for energy in ENERGIES:  # FXI xanes_scan2 order: sample, then its flat (no dark here)
        sample, i0_sample = frames[(energy, False)]
        flat, i0_flat = frames[(energy, True)]
        cube.add_sample(sample, energy=energy, i0=i0_sample)
        cube.add_flat(flat, energy=energy, i0=i0_flat)
    cube.finalize()
    assert cube.ready_.all() and np.isfinite(cube.od_).all()
    assert cube.counters_["masked_values"] == 0
    # 28 minutes between the two energies: the sample drifted by tens of pixels
    assert np.hypot(*cube.shifts_[1]) > 5

    below, above = cube.image(0), cube.image(1)
    valid = cube.valid_.reshape(below.shape)
    valid = ndimage.binary_erosion(valid, iterations=4)
    # particles: a simple threshold on the OD above the edge, away from their rims
    threshold = threshold_otsu(above[valid])
    particles = ndimage.binary_erosion((above > threshold) & valid, iterations=5)
    outside = ndimage.binary_erosion((above < threshold) & valid, iterations=5)
    assert particles.mean() > 0.05 and outside.mean() > 0.3
    rise = above - below
    inside_rise, outside_rise = np.median(rise[particles]), np.median(rise[outside])
    assert inside_rise > 0.3  # Ni K-edge jump of the NCA particles
    assert abs(outside_rise) < 0.06  # no nickel: flat across the edge
    assert inside_rise > 8 * abs(outside_rise)


def test_read_xrm_rejects_other_files(tmp_path):
    bad = tmp_path / "frame_08324.0_eV.xrm"
    bad.write_bytes(b"not an OLE file")
    with pytest.raises(XrmFormatError, match="OLE2"):
        read_xrm(bad)
    assert energy_from_filename(bad) == 8324.0
    assert energy_from_filename("scan_7712.5eV_ref.xrm") == 7712.5
