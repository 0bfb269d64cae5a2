"""Evaluations of a field that reuse its segmentation, and the pieces they are built from.

A reusing evaluation must give the particle table a full evaluation gives on the same label map,
compute attributes of the particles only, and fall back to segmenting again when the edge jump no
longer fits the label map.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamer.attribute_plan import plan_attributes
from streamer.attributes import compute_attributes, expected_validity
from streamer.field_evaluation import FieldEvaluator
from streamer.particles import odd_value_mask, particle_table
from tests.streamer.field_support import DECISIVE, E, noisy_field


@pytest.fixture(scope="module")
def field():
    return noisy_field("reduced", seed=3, noise=0.006, noise_seed=0)


def test_attributes_of_some_pixels_equal_those_of_all_pixels(field):
    _, od = field
    e0 = 7727.4
    full = compute_attributes(E, od, e0_hint=e0)
    pixels = np.flatnonzero(np.arange(od.shape[1]) % 3 == 0)
    part = compute_attributes(E, od, e0_hint=e0, pixels=pixels)
    part64 = compute_attributes(E, od.astype(np.float64), e0_hint=e0, pixels=pixels[::-1])
    rest = np.setdiff1d(np.arange(od.shape[1]), pixels)
    assert not part.valid_pixels[rest].any()
    np.testing.assert_array_equal(part.valid_pixels[pixels], full.valid_pixels[pixels])
    ok = pixels[full.valid_pixels[pixels]]
    for name, values in full.values.items():
        assert np.isnan(part.values[name][rest]).all(), name
        np.testing.assert_allclose(part.values[name][ok], values[ok], rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(part64.values[name][ok], values[ok], rtol=1e-4, err_msg=name)
    with pytest.raises(ValueError, match="column indices"):
        compute_attributes(E, od, e0_hint=e0, pixels=[od.shape[1]])


def test_edge_jump_only_gives_the_edge_jump_and_nothing_else(field):
    _, od = field
    full = compute_attributes(E, od, e0_hint=7727.4)
    only = compute_attributes(E, od, e0_hint=7727.4, edge_jump_only=True)
    ok = full.valid_pixels
    np.testing.assert_allclose(only.values["edge_jump"][ok], full.values["edge_jump"][ok])
    assert only.valid["edge_jump"] and only.valid["e0_deriv"]
    assert not any(only.valid[k] for k in DECISIVE)
    assert np.isnan(only.values["white_line_energy"]).all()


@pytest.mark.parametrize("n", [60, 85, 87, 94, 106])
def test_expected_validity_is_what_the_computation_reports(field, n):
    _, od = field
    got = compute_attributes(E[:n], od[:n], e0_hint=7727.4, planned_energies_ev=E).valid
    assert expected_validity(E[:n], e0_ev=7727.4, planned_energies_ev=E) == got


def test_plan_builds_every_projection_ahead():
    plan = plan_attributes(E[:94], e0_ev=7727.4).build_projections()
    n_rows = plan.deriv_rows.stop - plan.deriv_rows.start
    assert n_rows > 3 and len(plan._projections) == n_rows


def test_evaluations_segment_first_then_reuse_then_segment_the_complete_scan(field):
    fov, od = field
    evaluator = FieldEvaluator(
        fov.shape, decisive=DECISIVE, planned_energies_ev=E, n_threads=1, max_mask_change=0.25
    )
    assert evaluator.evaluate(E[:86], od[:86], e0_ev=7727.4, final=False) is None
    assert evaluator.n_segmentations_ == 1 and evaluator.labels_.max() >= 2
    prepared = evaluator.labels_.copy()
    reused = evaluator.evaluate(E[:94], od[:94], e0_ev=7727.4, final=False)
    assert reused.reused_labels and evaluator.n_reused_ == 1
    np.testing.assert_array_equal(reused.labels, prepared)
    outside = np.setdiff1d(np.arange(od.shape[1]), evaluator._support)
    assert np.isnan(reused.attributes["e0_half"][outside]).all()
    # the same table as attributes of every pixel on the same label map
    full = compute_attributes(E[:94], od[:94], e0_hint=7727.4, planned_energies_ev=E)
    maps = {k: v.reshape(fov.shape) for k, v in full.values.items()}
    odd = odd_value_mask(maps, energy_range_ev=(E[0], E[93]), within=prepared > 0)
    want = particle_table(prepared, maps, unusual=odd)
    assert [r["id"] for r in reused.table] == [r["id"] for r in want]
    for got_row, want_row in zip(reused.table, want, strict=True):
        for key in ("area_px", "e0_half_median", "white_line_height_median", "unusual_fraction"):
            assert got_row[key] == pytest.approx(want_row[key], rel=1e-5), key
    final = evaluator.evaluate(E, od, e0_ev=None, final=True)
    assert not final.reused_labels and evaluator.n_full_ == 1
    assert np.isfinite(final.attributes["e0_half"][outside]).any()  # every pixel computed


def test_a_moved_edge_jump_is_segmented_again(field):
    fov, od = field
    evaluator = FieldEvaluator(fov.shape, decisive=DECISIVE, planned_energies_ev=E, n_threads=1)
    evaluator.evaluate(E[:86], od[:86], e0_ev=7727.4, final=False)
    moved = np.roll(od[:94].reshape(94, *fov.shape), 6, axis=2).reshape(94, -1)
    ev = evaluator.evaluate(E[:94], np.ascontiguousarray(moved), e0_ev=7727.4, final=False)
    assert not ev.reused_labels and evaluator.n_full_ == 1 and evaluator.n_reused_ == 0


def test_no_reuse_segments_every_evaluation(field):
    fov, od = field
    evaluator = FieldEvaluator(
        fov.shape, decisive=DECISIVE, planned_energies_ev=E, reuse_segmentation=False
    )
    evaluator.evaluate(E[:86], od[:86], e0_ev=7727.4, final=False)
    assert not evaluator.evaluate(E[:94], od[:94], e0_ev=7727.4, final=False).reused_labels


def test_particle_quantiles_ignore_non_finite_values():
    labels = np.array([[1, 1, 1, 1, 2, 2, 3, 3]])
    values = np.array([[4.0, np.nan, 1.0, 2.0, np.inf, -np.inf, 5.0, 7.0]], dtype=np.float32)
    table = particle_table(labels, {"a": values})
    assert [r["a_median"] for r in table] == [2.0, None, 6.0]
    assert table[0]["a_iqr"] == pytest.approx(
        np.subtract(*np.percentile([4.0, 1.0, 2.0], [75, 25]))
    )
