"""EvaluationSchedule: which evaluation comes at which energy of a scan."""

from __future__ import annotations

import numpy as np

from sim.spectra import SEED_ENERGIES_EV
from streamer.evaluation_schedule import MIN_ENERGIES, EvaluationSchedule
from streamer.run_info import DecisionPolicy

E0 = 7722.0


def _answers(schedule: EvaluationSchedule, energies: np.ndarray, mean: np.ndarray, e0=E0):
    out = []
    for n in range(1, energies.size + 1):
        if schedule.due(n):
            action = schedule.next_action(energies[:n], mean[:n], e0)
            if action is not None:
                out.append((action, n))
    return out


def _edge(energies: np.ndarray) -> np.ndarray:
    noise = 1e-3 * np.random.default_rng(0).standard_normal(energies.size)
    return (0.1 + 1.0 * (energies > E0) + noise)[:, None]


def test_seed_grid_segment_early_one_provisional_then_the_final():
    e = np.asarray(SEED_ENERGIES_EV, float)
    policy = DecisionPolicy()
    answers = _answers(EvaluationSchedule(policy, planned_energies_ev=e), e, _edge(e))
    kinds = [a for a, _ in answers]
    assert kinds == ["segment", "early", "provisional"]
    n_provisional = answers[-1][1]
    # none within ``every`` energies of the end: the final evaluation decides as soon
    assert e.size - n_provisional >= policy.every
    assert e[answers[0][1] - 1] >= E0 + 16.0  # segmented once half the early window is in


def test_no_plan_keeps_evaluating_every_few_energies():
    e = np.asarray(SEED_ENERGIES_EV, float)
    answers = _answers(EvaluationSchedule(DecisionPolicy()), e, _edge(e))
    assert [a for a, _ in answers].count("provisional") >= 2


def test_no_edge_no_evaluation_and_checked_again_at_the_next_energy():
    e = np.asarray(SEED_ENERGIES_EV, float)
    flat = (0.1 + 1e-3 * np.random.default_rng(1).standard_normal(e.size))[:, None]
    schedule = EvaluationSchedule(DecisionPolicy(), planned_energies_ev=e)
    assert _answers(schedule, e, flat) == []
    assert not schedule.due(MIN_ENERGIES - 1)
    schedule = EvaluationSchedule(DecisionPolicy(), planned_energies_ev=e)
    assert schedule.next_action(e[:20], flat[:20], None) is None
    assert schedule.next_at_ == 21
