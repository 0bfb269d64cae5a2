"""Early decisions: values on the fixed early reference, scored like for like, learned, saved.

Issue 4's "Early decisions": as soon as the edge and the white line are in, score and alert; the
early values (edge jump on a fixed reference 12-20 eV past the edge) are compared only with early
values (neighbours, the campaign's early population, an early prior) above a stricter threshold.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamer.attributes import compute_attributes, expected_validity
from streamer.field_evaluation import FieldEvaluator
from streamer.learning import CampaignModel
from streamer.learning.checkpoint import read_checkpoint, write_checkpoint
from streamer.learning.synthetic import synthetic_campaign
from streamer.normalize import EdgeWindows, plan_normalization
from streamer.provisional import attribute_requirements
from streamer.run_analysis import DecisionPolicy, RunAnalysis, RunInfo
from streamer.run_steps import StepRecorder
from tests.streamer.field_support import DECISIVE, E, noisy_field

E0 = 7723.4


@pytest.fixture(scope="module")
def field():
    return noisy_field("white_line", seed=4, noise=0.004, noise_seed=1)


def test_the_provisional_flat_post_edge_is_the_fixed_early_reference():
    n = int(np.searchsorted(E, E0 + 20.0, "right"))  # the reference window just complete
    plan = plan_normalization(E[:n], e0_ev=E0)
    lo, hi = E0 + 12.0, E0 + 20.0
    assert plan.provisional and plan.early_reference_complete
    assert E[plan.post.start] >= lo and E[plan.post.stop - 1] <= hi
    assert not plan_normalization(E[: n - 2], e0_ev=E0).early_reference_complete
    later = plan_normalization(E[: n + 20], e0_ev=E0)  # more energies, post-edge still short
    assert (later.post.start, later.post.stop) == (plan.post.start, plan.post.stop)
    with pytest.raises(ValueError, match="early reference"):
        EdgeWindows(early_reference=(-2.0, 5.0))


def test_early_values_are_the_same_at_every_coverage_until_the_post_edge(field):
    _, od = field
    req = attribute_requirements(E0, early=True)["white_line_height"]
    assert req == (E0 - 25.0, E0 + 20.0)
    n_early = int(np.searchsorted(E, E0 + 20.0, "right"))
    before = expected_validity(E[: n_early - 1], e0_ev=E0, planned_energies_ev=E, early=True)
    assert not before["white_line_height"]
    results = [
        compute_attributes(E[:n], od[:n], e0_hint=E0, planned_energies_ev=E)
        for n in (n_early, n_early + 15)
    ]
    for res in results:
        assert all(res.early_valid[k] for k in DECISIVE) and not res.valid["white_line_height"]
    a, b = (r.values["white_line_height"] for r in results)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    final = compute_attributes(E, od, e0_hint=E0, planned_energies_ev=E)
    assert final.valid["white_line_height"] and not final.early_valid["white_line_height"]


def test_the_field_evaluator_marks_early_evaluations(field):
    _, od = field
    n = int(np.searchsorted(E, E0 + 20.0, "right"))
    plain = FieldEvaluator((64, 64), decisive=DECISIVE, planned_energies_ev=E)
    assert plain.evaluate(E[:n], od[:n], e0_ev=E0, final=False) is None
    ev = FieldEvaluator((64, 64), decisive=DECISIVE, early=DECISIVE, planned_energies_ev=E)
    result = ev.evaluate(E[:n], od[:n], e0_ev=E0, final=False)
    assert result is not None and result.early and len(result.table) >= 3
    later = ev.evaluate(E[:95], od[:95], e0_ev=E0, final=False)
    assert later is not None and not later.early


@pytest.mark.parametrize("step", [1, 2])
def test_a_run_is_evaluated_once_early_then_when_decisive(field, step):
    """Seed grid and the sparse grid of the serve tests (every other energy)."""
    _, od = field
    grid, cube = E[::step], od[::step]
    info = RunInfo(run_uid=f"run-{step}", scan_id=1, planned_energies_ev=tuple(grid))
    recorder = StepRecorder(info)
    run = RunAnalysis(info, decider=recorder, policy=DecisionPolicy(e0_hint_ev=E0))
    frame = np.ones((64, 64), dtype=np.float32)
    run.add_dark(np.zeros((1, 64, 64), np.float32))
    for energy, row in zip(grid, cube, strict=True):
        run.add_flat(frame[None], energy_ev=energy)
        run.add_sample(np.exp(-row).reshape(1, 64, 64), energy_ev=energy)
    run.finalize()
    snaps = [p for k, p in recorder.steps if k == "evaluation"]
    assert snaps[0].early and not any(s.early for s in snaps[1:])
    assert grid[snaps[0].energy_index] <= E0 + 22.0  # the white line and the reference are in
    assert snaps[1].energy_index > snaps[0].energy_index and snaps[-1].final


def _tables(n_fields=4, seed=0):
    return synthetic_campaign(seed=seed, n_fields=n_fields, anomalies=[{"kind": "reduced"}])


def test_early_scores_use_the_early_population_prior_and_threshold():
    model = CampaignModel(seed=0, early_threshold=6.5)
    key, table, _ = _tables(1)[0]
    early = model.score_particles(key, table, early=True)
    assert all(s.provisional and s.threshold == 6.5 for s in early)
    assert [s.threshold for s in model.score_particles(key, table)] == [model.threshold] * len(
        table
    )


def test_only_confirmed_normal_particles_enter_the_early_population():
    model = CampaignModel(seed=0)
    for key, table, truth in _tables():
        n_before = int(model.early_population.n_.max(initial=0))
        scores = model.learn_particles(key, table, early_table=table)
        learned = sum(s.reliable and not s.anomalous for s in scores)
        assert int(model.early_population.n_.max()) - n_before == learned
        assert learned < len(table) or "reduced" not in truth
    # an early row whose particle changed a lot in area is not learned
    model2 = CampaignModel(seed=0)
    key, table, _ = _tables(1)[0]
    shrunk = [{**r, "area_px": r["area_px"] / 3} for r in table]
    model2.learn_particles(key, table, early_table=shrunk)
    assert int(model2.early_population.n_.max(initial=0)) == 0


def test_checkpoints_keep_the_early_population_and_old_ones_still_load(tmp_path):
    model = CampaignModel(seed=2, early_threshold=5.5)
    for key, table, _ in _tables():
        model.learn_particles(key, table, early_table=table)
    path = tmp_path / "v3.npz"
    model.save(path)
    clone = CampaignModel.load(path)
    np.testing.assert_array_equal(clone.early_population.n_, model.early_population.n_)
    assert clone.early_threshold == 5.5
    key, table, _ = _tables(1, seed=9)[0]
    a = [s.to_dict() for s in model.score_particles(key, table, early=True)]
    assert a == [s.to_dict() for s in clone.score_particles(key, table, early=True)]
    # a version-2 checkpoint (written before early decisions) loads with an empty early record
    meta, arrays = read_checkpoint(path)
    meta["version"] = 2
    for k in ("early_threshold", "early_prior"):
        meta["init"].pop(k)
    meta.pop("early_population")
    old = {k: v for k, v in arrays.items() if not k.startswith("early_population.")}
    write_checkpoint(tmp_path / "v2.npz", meta, old)
    resumed = CampaignModel.load(tmp_path / "v2.npz")
    assert int(resumed.early_population.n_.max(initial=0)) == 0
    np.testing.assert_array_equal(resumed.population.n_, model.population.n_)
    meta["version"] = 1
    write_checkpoint(tmp_path / "v1.npz", meta, old)
    with pytest.raises(ValueError, match="unsupported checkpoint version 1"):
        CampaignModel.load(tmp_path / "v1.npz")


def test_an_empty_segmentation_is_not_reused(field):
    """A spurious evaluation that segmented nothing must not leave every later one empty."""
    _, od = field
    ev = FieldEvaluator((64, 64), decisive=DECISIVE, early=DECISIVE, planned_energies_ev=E)
    ev._segment(np.zeros(64 * 64, dtype=np.float32))  # what noise before the edge gives
    assert not (ev.labels_ > 0).any()
    n = int(np.searchsorted(E, E0 + 20.0, "right"))
    result = ev.evaluate(E[:n], od[:n], e0_ev=E0, final=False)
    assert result is not None and not result.reused_labels and len(result.table) >= 3


def test_no_evaluation_on_a_spurious_edge_before_the_real_one(field):
    """A drift in the pre-edge that :func:`estimate_e0` takes for an edge is not evaluated."""
    _, od = field
    info = RunInfo(run_uid="run-drift", scan_id=1, planned_energies_ev=tuple(E))
    recorder = StepRecorder(info)
    # the nominal edge far below the real one: the "edge" there is only noise
    run = RunAnalysis(info, decider=recorder, policy=DecisionPolicy(e0_hint_ev=7622.4))
    frame = np.ones((1, 64, 64), dtype=np.float32)
    run.add_dark(np.zeros((1, 64, 64), np.float32))
    for energy, row in zip(E[:12], od[:12], strict=True):
        run.add_flat(frame, energy_ev=energy)
        run.add_sample(np.exp(-row).reshape(1, 64, 64), energy_ev=energy)
    assert not [p for k, p in recorder.steps if k == "evaluation"]


@pytest.mark.parametrize("n_flagged, alerted, early", [(3, 0, True), (3, 0, False), (1, 1, True)])
def test_an_evaluation_before_the_end_flagging_most_of_a_field_alerts_nothing(
    n_flagged, alerted, early, caplog
):
    from streamer.learning.particle_scoring import ParticleScore
    from streamer.run_decision import RunDecider
    from streamer.run_steps import EvaluationSnapshot
    from streamer.session import AnalysisSession

    table = _tables(1)[0][1][:4]
    session = AnalysisSession()
    flags = [i < n_flagged for i in range(len(table))]

    def score_particles(fov_key, rows, *, provisional, early):
        return [
            ParticleScore(int(r["id"]), 9.0 if f else 1.0, 5.0, f, "reduced", provisional=True)
            for r, f in zip(rows, flags, strict=True)
        ]

    session.campaign.score_particles = score_particles
    info = RunInfo(run_uid="run-early", scan_id=1, planned_energies_ev=tuple(E))
    decider = RunDecider(info, session=session)
    snap = EvaluationSnapshot(
        energy_index=55, final=False, aborted=False, shape=(64, 64), energies_ev=E[:56],
        table=table, early=early,
    )  # fmt: skip
    ev = decider.evaluation(snap)
    sent = [a for a in session.alerts if a["kind"] == "anomalous_particle"]
    assert len(sent) == alerted
    assert sum(s.anomalous for s in ev.scores) == alerted
    if not alerted:
        assert "rather than so many anomalies" in caplog.text
