"""Tests for streamer.report: figures per field of view, campaign page, text summary."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streamer.report import mean_spectra, write_campaign_report, write_fov_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPE = (64, 64)
ENERGIES = np.linspace(7600.0, 7800.0, 40)


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= 200


def synthetic_field(seed: int = 0):
    """Three square particles with attributes, clusters, scores and spectra."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[5:20, 5:20] = 1
    labels[30:50, 10:28] = 2
    labels[35:55, 38:60] = 3
    inside = labels > 0
    e0 = np.where(inside, 7722.0 + rng.normal(0, 0.3, SHAPE), np.nan).astype(np.float32)
    e0[labels == 3] -= 4.0  # the abnormal particle
    white_line = np.where(inside, 7729.5 + rng.normal(0, 0.3, SHAPE), np.nan).astype(np.float32)
    height = np.where(inside, 1.5 + rng.normal(0, 0.02, SHAPE), np.nan).astype(np.float32)
    clusters = np.where(inside, 0, -1)
    clusters[labels == 3] = 1
    spectra = 1.0 / (1.0 + np.exp(-(ENERGIES[:, None] - e0.ravel()[None, :]) / 2.0))
    attributes = {
        "edge_jump": np.where(inside, 0.4, 0.0).astype(np.float32).ravel(),  # flat works too
        "e0_half": e0,
        "white_line_energy": white_line,
        "white_line_height": height,
    }
    return labels, attributes, clusters, spectra


def fov_report(tmp_path: Path, fov_id: str = "scan 12/fov-a", **overrides):
    labels, attributes, clusters, spectra = synthetic_field()
    alert = {"kind": "anomalous_particle", "particle": {"id": 3}, "score": 9.5}
    kwargs = {
        "fov_id": fov_id,
        "energies_ev": ENERGIES,
        "attributes": attributes,
        "labels": labels,
        "cluster_map": clusters.ravel(),
        "particle_scores": {1: 0.5, 2: 1.1, 3: 9.5},
        "flagged": [alert],
        "cluster_spectra": mean_spectra(spectra, clusters),
        "flagged_spectra": mean_spectra(spectra, labels, [3]),
        "threshold": 5.0,
        "pixel_size_um": 0.2,
    }
    kwargs.update(overrides)
    return write_fov_report(tmp_path, **kwargs), labels, attributes


def test_fov_report_writes_every_figure(tmp_path):
    paths, _, _ = fov_report(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == [
        f"scan_12_fov-a_{kind}.png"
        for kind in ("anomaly", "clusters", "e0", "spectra", "white_line")
    ]
    for path in paths:
        assert path.parent == tmp_path
        assert_valid_png(path)


def test_fov_report_with_only_attributes_skips_the_rest(tmp_path, caplog):
    labels, attributes, _, _ = synthetic_field()
    with caplog.at_level(logging.INFO, logger="streamer.report"):
        paths = write_fov_report(
            tmp_path / "new" / "dir",
            fov_id="f",
            energies_ev=ENERGIES,
            attributes=attributes,
            labels=labels,
        )
    assert sorted(p.name for p in paths) == ["f_e0.png", "f_white_line.png"]
    assert "anomaly map skipped" in caplog.text


def test_fov_report_takes_a_pixel_score_map_and_plain_ids(tmp_path):
    labels, attributes, _, _ = synthetic_field()
    score_map = np.where(labels > 0, labels * 2.0, np.nan)
    paths = write_fov_report(
        tmp_path,
        fov_id="f",
        energies_ev=ENERGIES,
        attributes={"e0_deriv": attributes["e0_half"]},
        labels=labels,
        anomaly_score_map=score_map,
        flagged=[3, 99],  # 99: not in the map
    )
    assert sorted(p.name for p in paths) == ["f_anomaly.png", "f_e0.png"]


def test_fov_report_rejects_bad_shapes(tmp_path):
    labels, attributes, _, _ = synthetic_field()
    with pytest.raises(ValueError, match="label map"):
        write_fov_report(
            tmp_path,
            fov_id="f",
            energies_ev=ENERGIES,
            attributes={"e0_half": np.zeros(10)},
            labels=labels,
        )
    with pytest.raises(ValueError, match=r"\(ny, nx\)"):
        write_fov_report(
            tmp_path, fov_id="f", energies_ev=ENERGIES, attributes=attributes, labels=labels.ravel()
        )
    with pytest.raises(ValueError, match="particle id"):
        write_fov_report(
            tmp_path,
            fov_id="f",
            energies_ev=ENERGIES,
            attributes=attributes,
            labels=labels,
            flagged=[{"kind": "anomalous_particle"}],
        )


def test_mean_spectra_ignores_nan_and_unassigned_pixels():
    spectra = np.array([[1.0, 3.0, np.nan, 10.0], [2.0, 4.0, 6.0, 10.0]])
    groups = np.array([0, 0, 0, -1])
    means = mean_spectra(spectra, groups)
    assert list(means) == [0]
    np.testing.assert_allclose(means[0], [2.0, 4.0])
    assert mean_spectra(spectra, groups, ids=[0, 5]).keys() == {0}
    with pytest.raises(ValueError, match="do not match"):
        mean_spectra(spectra, groups[:3])


def test_campaign_report_links_every_figure(tmp_path):
    fovs, particles, alerts = [], [], []
    for k in range(2):
        paths, labels, attributes = fov_report(tmp_path / "fovs", fov_id=f"fov{k}")
        flagged = [{"id": 3, "score": 9.5}] if k == 1 else []
        fovs.append(
            {
                "fov_id": f"fov{k}",
                "image": attributes["e0_half"],
                "image_label": "E0 (eV)",
                "labels": labels,
                "flagged": flagged,
                "figures": paths,
                "scan_id": 10 + k,
                "stage_xy_um": [k * 80.0, 0.0],
            }
        )
        for pid in (1, 2, 3):
            particles.append(
                {
                    "fov_id": f"fov{k}",
                    "id": pid,
                    "area_px": 200,
                    "centroid_px": [10.0, 20.0],
                    "e0_half_median": 7722.0 - 4.0 * (pid == 3 and k == 1),
                    "white_line_energy_median": 7729.5,
                    "white_line_height_median": 1.5,
                    "score": 9.5 if (pid == 3 and k == 1) else 0.4,
                    "flagged": pid == 3 and k == 1,
                }
            )
    alerts.append(
        {
            "seq": 7,
            "time": 1.7e9,
            "kind": "anomalous_particle",
            "severity": "critical",
            "status": "firing",
            "scan_id": 11,
            "particle": {"id": 3},
            "energy_index": 59,
            "n_energies": 106,
            "score": 9.5,
            "threshold": 5.0,
            "message": "particle 3: E0 4 eV low <script>alert(1)</script>",
        }
    )
    alerts.append({"seq": 8, "kind": "scan_summary", "severity": "info", "status": "firing"})
    index = write_campaign_report(
        tmp_path,
        fovs=fovs,
        particles=particles,
        alerts=alerts,
        truth=[{"fov": "fov1", "planted": "reduced", "found": True}],
    )
    assert index == tmp_path / "index.html"
    page = index.read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', page)
    for name in ("campaign_mosaic.png", "campaign_particles.png", "campaign_histograms.png"):
        assert name in sources
    assert len(sources) == 3 + 2 * 5
    for source in sources:
        assert_valid_png(tmp_path / source)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "60/106" in page  # energy index shown 1-based
    summary = (tmp_path / "summary.txt").read_text(encoding="utf-8")
    assert "flagged: 1" in summary and "fov1#3" in summary and "score 9.50" in summary
    assert "anomalous_particle firing scan 11 particle 3 at energy 60/106" in summary
    assert "planted=reduced" in summary
    with (tmp_path / "particles.csv").open(encoding="utf-8") as stream:
        table = list(csv.DictReader(stream))
    assert len(table) == 6 and table[0]["centroid_px"] == "10.0 20.0"


def test_empty_campaign_still_writes_a_page(tmp_path):
    index = write_campaign_report(tmp_path, fovs=[], particles=[], alerts=[])
    page = index.read_text(encoding="utf-8")
    assert "<b>0</b> fields of view" in page
    assert not list(tmp_path.glob("*.png"))
    assert (tmp_path / "summary.txt").read_text(encoding="utf-8").count("none") >= 2


def test_mosaic_reduces_large_fields_and_checks_label_shapes(tmp_path):
    labels = np.zeros((600, 520), dtype=np.int32)
    labels[100:300, 100:260] = 1
    image = np.where(labels > 0, 0.4, 0.0).astype(np.float32)
    fov = {"fov_id": "big", "image": image, "labels": labels, "flagged": [1]}
    write_campaign_report(tmp_path, fovs=[fov], particles=[], alerts=[])
    assert_valid_png(tmp_path / "campaign_mosaic.png")
    with pytest.raises(ValueError, match="do not match"):
        write_campaign_report(
            tmp_path, fovs=[{**fov, "labels": labels[:10]}], particles=[], alerts=[]
        )
