"""Tests for streamer.masks and streamer.particles on synthetic blobs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.draw import ellipse

from sim.sample import make_field_of_view
from streamer.masks import (
    edge_jump_threshold,
    estimate_noise_sigma,
    odd_value_mask,
    thickness_mask,
)
from streamer.particles import particle_table, segment_particles

SHAPE = (128, 128)


def matched_iou(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of each truth particle with the found particle that covers most of it."""
    ious = np.zeros(int(truth.max()))
    for t in range(1, int(truth.max()) + 1):
        inside = truth == t
        found, counts = np.unique(labels[inside], return_counts=True)
        counts, found = counts[found > 0], found[found > 0]
        if found.size == 0:
            continue
        best = found[np.argmax(counts)]
        intersection = counts.max()
        ious[t - 1] = intersection / (inside.sum() + (labels == best).sum() - intersection)
    return ious


def spheres(
    centers_radii: list[tuple[float, float, float]], *, shape=SHAPE, noise=0.02, seed=0
) -> tuple[np.ndarray, np.ndarray]:
    """Edge-jump image of projected spheres (thickness profile) and their truth labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    thickness = np.zeros((len(centers_radii), *shape))
    for i, (row, col, radius) in enumerate(centers_radii):
        rho2 = (yy - row) ** 2 + (xx - col) ** 2
        thickness[i] = np.sqrt(np.clip(radius**2 - rho2, 0.0, None)) / radius * (0.3 + 0.1 * i)
    total = thickness.sum(axis=0)
    truth = np.where(total > 0, thickness.argmax(axis=0) + 1, 0).astype(np.int32)
    image = total + rng.normal(0.0, noise, shape)
    return image.astype(np.float32), truth


def random_spheres(seed: int, *, n=10, touching_pairs=2, noise=0.02):
    """Random separate spheres plus pairs of touching spheres (centres 0.9-1.0 (r1 + r2) apart)."""
    rng = np.random.default_rng(seed)
    placed: list[tuple[float, float, float]] = []
    while len(placed) < n:
        radius = rng.uniform(5, 13)
        center = rng.uniform(radius + 1, np.array(SHAPE) - radius - 1)
        if len(placed) < 2 * touching_pairs and len(placed) % 2 == 1:
            prev_row, prev_col, prev_r = placed[-1]
            angle = rng.uniform(0, 2 * np.pi)
            d = (prev_r + radius) * rng.uniform(0.9, 1.0)
            center = np.array([prev_row + d * np.sin(angle), prev_col + d * np.cos(angle)])
            others = placed[:-1]
        else:
            others = placed
        inside = np.all((center > radius + 1) & (center < np.array(SHAPE) - radius - 1))
        apart = all(np.hypot(center[0] - r, center[1] - c) > rr + radius + 3 for r, c, rr in others)
        if inside and apart:
            placed.append((float(center[0]), float(center[1]), float(radius)))
    return spheres(placed, noise=noise, seed=seed)


# --- masks -------------------------------------------------------------------------------------


def test_threshold_sits_above_background_noise_and_below_particles():
    image, _ = spheres([(40, 40, 15), (90, 80, 20)], noise=0.02)
    threshold = edge_jump_threshold(image)
    assert 5 * 0.02 * 0.5 < threshold < edge_jump_threshold(image, method="otsu")
    with pytest.raises(ValueError, match="unknown threshold method"):
        edge_jump_threshold(image, method="magic")
    with pytest.raises(ValueError, match="two distinct"):
        edge_jump_threshold(np.zeros((8, 8)))


def test_thickness_mask_recovers_particles_and_ignores_nan():
    image, truth = spheres([(40, 40, 15), (90, 80, 20)], noise=0.02)
    image[40, 40] = np.nan  # a dead pixel inside a particle
    image[5:10, 5:10] = np.nan  # a masked patch in the background
    mask = thickness_mask(image)
    assert mask[40, 40]
    assert not mask[5:10, 5:10].any()
    iou = (mask & (truth > 0)).sum() / (mask | (truth > 0)).sum()
    assert iou > 0.9


@pytest.mark.parametrize("noise", [0.005, 0.02, 0.08])
def test_noise_estimate_ignores_particles_and_masked_pixels(noise):
    image, truth = spheres([(40, 40, 15), (90, 80, 20), (30, 100, 10)], noise=noise)
    assert estimate_noise_sigma(image) == pytest.approx(noise, rel=0.1)
    image[(truth == 0) & (np.arange(image.size).reshape(SHAPE) % 3 > 0)] = np.nan
    assert estimate_noise_sigma(image) == pytest.approx(noise, rel=0.15)


@pytest.mark.parametrize("value", [np.nan, 0.0])
def test_thickness_mask_without_contrast_is_empty(caplog, value):
    mask = thickness_mask(np.full((16, 16), value))
    assert mask.shape == (16, 16) and not mask.any()
    assert "no contrast" in caplog.text
    assert segment_particles(np.full((16, 16), value)).max() == 0


def test_threshold_falls_back_to_otsu_when_noise_cannot_be_measured(caplog):
    image = np.full((32, 32), np.nan)
    image[::2, ::2] = 0.0  # no pixel has a complete 3x3 neighbourhood
    image[8:24:2, 8:24:2] = 1.0
    mask = thickness_mask(image, median_size_px=1)
    assert mask.sum() == 64
    assert "Otsu" in caplog.text


def test_thickness_mask_rejects_non_image():
    with pytest.raises(ValueError, match="2D image"):
        thickness_mask(np.zeros(64))


def test_odd_value_mask_flags_nan_and_out_of_range():
    attributes = {
        "edge_jump": np.array([0.5, -0.1, 0.5, 0.5, 0.5]),
        "e0_half": np.array([7722.0, 7722.0, 9000.0, 7722.0, 7722.0]),
        "white_line_height": np.array([1.4, 1.4, 1.4, np.nan, 1.4]),
        "frac_ref": np.array([0.2, 0.2, 0.2, 0.2, np.inf]),
    }
    odd = odd_value_mask(attributes, energy_range_ev=(7560.0, 7980.0))
    assert odd.tolist() == [False, True, True, True, True]
    # Without the scanned range energies are only checked for being finite.
    assert odd_value_mask(attributes).tolist() == [False, True, False, True, True]
    within = np.array([True, True, False, False, True])
    assert odd_value_mask(attributes, within=within).tolist() == [False, True, False, False, True]
    custom = odd_value_mask(attributes, ranges={"edge_jump": (-1.0, 6.0)})
    assert custom.tolist() == [False, False, False, True, True]


def test_odd_value_mask_checks_shapes():
    with pytest.raises(ValueError, match="at least one"):
        odd_value_mask({})
    with pytest.raises(ValueError, match="shape"):
        odd_value_mask({"edge_jump": np.zeros(4), "r_squared": np.zeros(5)})


# --- segmentation ------------------------------------------------------------------------------


def test_segment_separate_spheres():
    image, truth = spheres([(30, 30, 12), (30, 90, 8), (90, 40, 16), (95, 100, 10)])
    labels = segment_particles(image)
    assert labels.dtype == np.int32
    assert labels.max() == 4
    assert matched_iou(labels, truth).min() > 0.85


@pytest.mark.parametrize("seed", range(6))
def test_segment_splits_touching_spheres(seed):
    image, truth = random_spheres(seed)
    labels = segment_particles(image)
    ious = matched_iou(labels, truth)
    assert labels.max() == truth.max()
    assert (ious >= 0.8).mean() >= 0.9


def test_split_touching_off_gives_connected_components():
    image, _ = spheres([(60, 40, 15), (60, 68, 15)], noise=0.01)
    assert segment_particles(image).max() == 2
    assert segment_particles(image, split_by="shape").max() == 2
    assert segment_particles(image, split_touching=False).max() == 1
    with pytest.raises(ValueError, match="split_by"):
        segment_particles(image, split_by="colour")


@pytest.mark.parametrize("seed", range(3))
def test_irregular_shapes_are_not_over_split(seed):
    """Elongated ellipses and wavy outlines stay whole."""
    rng = np.random.default_rng(seed)
    image = np.zeros(SHAPE)
    truth = np.zeros(SHAPE, dtype=np.int32)
    for i, (row, col) in enumerate([(32, 32), (32, 96), (96, 32), (96, 96)]):
        a = rng.uniform(16, 26)
        rr, cc = ellipse(row, col, a, a / rng.uniform(1.8, 3.0), SHAPE, rotation=rng.uniform(0, 3))
        truth[rr, cc] = i + 1
        image[rr, cc] = rng.uniform(0.3, 0.8)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    theta = np.arctan2(yy - 64, xx - 64)
    wavy = np.hypot(yy - 64, xx - 64) < 12 * (1 + 0.2 * np.cos(3 * theta) + 0.1 * np.sin(5 * theta))
    truth[wavy & (truth == 0)] = 5
    image[wavy] = 0.5
    image += rng.normal(0.0, 0.03, SHAPE)
    labels = segment_particles(image.astype(np.float32))
    assert labels.max() == 5
    assert matched_iou(labels, truth).min() > 0.9


def test_min_area_drops_specks_and_explicit_mask_is_used():
    image, _ = spheres([(60, 60, 20)], noise=0.0)
    image[5:8, 5:8] = 1.0  # 9 px speck
    assert segment_particles(image, min_area_px=20).max() == 1
    assert segment_particles(image, min_area_px=5).max() == 2
    mask = np.zeros(SHAPE, dtype=bool)
    mask[100:120, 100:120] = True
    labels = segment_particles(image, mask=mask)
    assert labels.max() == 1 and labels[110, 110] == 1
    with pytest.raises(ValueError, match="mask has shape"):
        segment_particles(image, mask=mask[:10])


def test_empty_image_gives_no_particles():
    rng = np.random.default_rng(1)
    labels = segment_particles(rng.normal(0.0, 0.01, SHAPE), threshold=0.5)
    assert labels.shape == SHAPE and labels.max() == 0
    assert particle_table(labels, {}) == []


# --- particle table ----------------------------------------------------------------------------


def test_particle_table_matches_a_per_particle_loop():
    image, _ = random_spheres(7)
    labels = segment_particles(image)
    rng = np.random.default_rng(2)
    e0 = (7722.0 + rng.normal(0.0, 0.5, SHAPE)).astype(np.float32)
    e0[labels == 1] += 3.0
    e0[rng.random(SHAPE) < 0.05] = np.nan  # masked pixels are left out
    unusual = rng.random(SHAPE) < 0.1
    attributes = {"edge_jump": image.ravel(), "e0_half": e0}  # flat and image shapes both work
    table = particle_table(labels, attributes, unusual=unusual)
    json.dumps(table)  # JSON-serialisable as is
    assert [row["id"] for row in table] == list(range(1, labels.max() + 1))
    for row in table:
        inside = labels == row["id"]
        rows, cols = np.nonzero(inside)
        assert row["area_px"] == inside.sum()
        np.testing.assert_allclose(row["centroid_px"], [rows.mean(), cols.mean()])
        assert row["bbox_px"] == [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
        assert row["unusual_fraction"] == pytest.approx(unusual[inside].mean())
        for name, values in (("edge_jump", image), ("e0_half", e0)):
            v = values[inside].astype(np.float64)
            q25, q50, q75 = np.nanpercentile(v, [25, 50, 75])
            assert row[f"{name}_median"] == pytest.approx(q50)
            assert row[f"{name}_iqr"] == pytest.approx(q75 - q25)
    assert table[0]["e0_half_median"] == pytest.approx(7725.0, abs=0.3)


def test_particle_table_handles_all_nan_particles_and_border():
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[0:3, 0:3] = 1
    labels[5:8, 5:8] = 3  # ids need not be contiguous
    values = np.ones((10, 10), dtype=np.float32)
    values[labels == 3] = np.nan
    table = particle_table(labels, {"r_squared": values})
    assert [row["id"] for row in table] == [1, 3]
    assert table[0]["touches_border"] and not table[1]["touches_border"]
    assert table[0]["r_squared_median"] == 1.0 and table[0]["r_squared_iqr"] == 0.0
    assert table[1]["r_squared_median"] is None and table[1]["r_squared_iqr"] is None
    assert table[1]["unusual_fraction"] == 0.0


def test_particle_table_rejects_bad_input():
    labels = np.zeros((4, 4), dtype=np.int32)
    labels[1, 1] = 1
    with pytest.raises(ValueError, match="integer"):
        particle_table(labels.astype(float), {})
    with pytest.raises(ValueError, match="non-negative"):
        particle_table(-labels, {})
    with pytest.raises(ValueError, match="attribute 'x'"):
        particle_table(labels, {"x": np.zeros(5)})
    with pytest.raises(ValueError, match="unusual"):
        particle_table(labels, {}, unusual=np.zeros(3, dtype=bool))


# --- against the simulator's ground truth ------------------------------------------------------

#: Noise of one OD frame (the edge-jump image is the difference of two frames).
SIM_FRAME_NOISE_OD = 0.02


def simulated_edge_jump(seed: int, *, noise=SIM_FRAME_NOISE_OD):
    fov = make_field_of_view(shape=(256, 256), n_particles=10, seed=seed)
    below, above = fov.od([7700.0, 7800.0])
    rng = np.random.default_rng(seed)
    noise_above, noise_below = rng.normal(0.0, noise, (2, *below.shape))
    image = (above + noise_above) - (below + noise_below)
    return image.astype(np.float32), fov.labels


def test_segmentation_survives_a_masked_background(caplog):
    """When the caller masks most empty pixels (NaN), the background level is taken as 0."""
    image, truth = simulated_edge_jump(0)
    rng = np.random.default_rng(3)
    masked = (image <= 0) | ((truth == 0) & (rng.random(image.shape) < 0.8))
    labels = segment_particles(np.where(masked, np.nan, image))
    assert (matched_iou(labels, truth) >= 0.8).mean() >= 0.9
    assert "assuming a background edge jump of 0" in caplog.text


def test_segmentation_recovers_simulated_particles():
    """Done-when: >= 95 % of planted particles found with IoU >= 0.8, over several seeds."""
    recovered, planted = 0, 0
    for seed in range(5):
        image, truth = simulated_edge_jump(seed)
        labels = segment_particles(image)
        ious = matched_iou(labels, truth)
        recovered += int((ious >= 0.8).sum())
        planted += ious.size
        assert abs(int(labels.max()) - int(truth.max())) <= 1, f"seed {seed}"
    assert recovered / planted >= 0.95


# --- on the seed study's real edge-jump maps ---------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize("particle", [1, 2, 3])
def test_real_edge_jump_maps(shared_data, particle):
    """The authors masked the background to 0: our foreground must agree, without over-splitting."""
    from scipy import io, ndimage

    path = shared_data / "seed-licoo2-maps" / f"particle{particle}" / "edgejumpmap.mat"
    image = np.asarray(io.loadmat(path)["edgejumpmap"], dtype=np.float64)
    labels = segment_particles(image)
    authors = image != 0
    foreground = labels > 0
    assert (foreground & authors).sum() / (foreground | authors).sum() > 0.95
    components, _ = ndimage.label(authors, structure=np.ones((3, 3)))
    n_components = int((np.bincount(components.ravel())[1:] >= 20).sum())
    assert n_components <= labels.max() <= 2 * n_components
