"""When a run is evaluated while its scan goes on.

:class:`~streamer.run_analysis.RunAnalysis` asks an :class:`EvaluationSchedule` after every
normalised energy what to do now; the answer costs no pixel, only the field's mean spectrum (kept
by the cube row by row) and the energy grid. The answers, in the order a scan meets them:

``"segment"``
    Once, as soon as half the early reference window (to ``PRESEGMENT_AFTER_EV`` past the edge)
    is in: segment the field ahead of its first decision. The edge jump then outlines
    the particles, and the early evaluation some energies later reuses the label map (computing
    the attributes of the particles only) instead of segmenting at the very energy an alert
    waits for, which cost 0.8 s at 512x512 (``alert_latency_p95_s`` in
    ``bench/bench_latency.py``).
``"early"``
    Once, when the ``DecisionPolicy.early`` attributes are *early-valid* (on the fixed early
    reference, :mod:`streamer.provisional`) and the ``decisive`` ones are not yet valid.
``"provisional"``
    Every ``every`` energies once the ``decisive`` attributes are valid; the first one ``every``
    energies after they first become valid (a post-edge fit on its minimum of points, 3 points
    20 eV apart on a sparse grid, flagged whole fields), and none when fewer than ``every``
    planned energies remain (the final evaluation, a few energies on, decides as soon).
``None``
    Nothing now: the next check is at the energy :attr:`EvaluationSchedule.next_at_`.

No answer but ``None`` is given while the nominal edge is too faint to be the field's edge
(``DecisionPolicy.min_edge_significance``): a drift of the beam or the flats can look like an edge
before the real one comes.

Examples
--------
>>> from streamer.run_info import DecisionPolicy
>>> e = np.arange(7600.0, 7900.0, 2.0)
>>> mean = (0.1 + 1.0 * (e > 7722.0) + 1e-3 * np.sin(e))[:, None]
>>> schedule = EvaluationSchedule(DecisionPolicy(), planned_energies_ev=e)
>>> answers = {}
>>> for n in range(8, e.size + 1):
...     if schedule.due(n):
...         _ = answers.setdefault(schedule.next_action(e[:n], mean[:n], 7722.0), n)
>>> {k: float(e[n - 1]) for k, n in answers.items() if k}
{'segment': 7738.0, 'early': 7742.0, 'provisional': 7792.0}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from streamer.attributes import expected_validity
from streamer.normalize import EdgeWindows, edge_significance
from streamer.run_info import DecisionPolicy

__all__ = ["PRESEGMENT_AFTER_EV", "EvaluationSchedule"]

log = logging.getLogger(__name__)

PRESEGMENT_AFTER_EV = sum(EdgeWindows().early_reference) / 2
"""Energy past the edge (eV) from which a field is segmented ahead of its early evaluation: the
middle of :class:`~streamer.normalize.EdgeWindows`' default ``early_reference`` (16 eV), the
edge jump then resting on half the window's energies. From its first energy (12 eV), the edge
jump of a single energy was so noisy that one 512x512 field of the campaign benchmark fell into
69 fragments instead of 15 particles, and its reused label map raised 12 provisional alerts, all
resolved at the end (79 over the campaign's 40 fields); from 16 eV, 14 particles and none."""

MIN_ENERGIES = 8
"""Energies normalised before anything is evaluated."""


class EvaluationSchedule:
    """What to evaluate now, energy by energy (see the module docstring).

    Parameters
    ----------
    policy
        The run's :class:`~streamer.run_info.DecisionPolicy`.
    planned_energies_ev
        The run's planned grid, if known (validity waits for planned energies not yet in).
    run_uid
        For log messages.

    Attributes
    ----------
    next_at_ : int or None
        Normalised energies at which to check again (``None``: at the next one).
    early_tried_, presegmented_ : bool
        The early evaluation, the segmentation ahead of it, were answered.
    decisive_since_ : int or None
        Normalised energies when the decisive attributes first became valid.
    """

    def __init__(
        self,
        policy: DecisionPolicy,
        *,
        planned_energies_ev: Sequence[float] | np.ndarray | None = None,
        run_uid: str = "",
    ) -> None:
        self.policy = policy
        self.planned = planned_energies_ev  # as given: validity tells None from empty
        self.n_planned = len(planned_energies_ev) if planned_energies_ev is not None else 0
        self.run_uid = run_uid
        self.next_at_: int | None = None
        self.early_tried_ = False
        self.presegmented_ = False
        self.decisive_since_: int | None = None

    def due(self, n_ready: int) -> bool:
        """Whether ``n_ready`` normalised energies call for a check (no pixel computed)."""
        return n_ready >= MIN_ENERGIES and (self.next_at_ is None or n_ready >= self.next_at_)

    def next_action(
        self, energies_ev: np.ndarray, mean: np.ndarray, e0_ev: float | None
    ) -> str | None:
        """``"segment"``, ``"early"``, ``"provisional"`` or ``None`` for the energies normalised
        so far, their mean spectrum ``(n_energies, 1)`` and the field's edge energy (``None``:
        not found yet)."""
        n_ready = len(energies_ev)
        self.next_at_ = n_ready + 1  # by default, check again at the next energy
        if e0_ev is None:
            return None
        planned = self.planned
        valid = expected_validity(energies_ev, e0_ev=e0_ev, planned_energies_ev=planned)
        decisive = all(valid.get(k, False) for k in self.policy.decisive)
        early = False
        if not decisive and not self.early_tried_ and self.policy.early:
            early_valid = expected_validity(
                energies_ev, e0_ev=e0_ev, planned_energies_ev=planned, early=True
            )
            early = all(early_valid.get(k, False) for k in self.policy.early)
        if (decisive or early) and self._spurious_edge(energies_ev, mean, e0_ev):
            return None
        if decisive:
            self.next_at_ = n_ready + self.policy.every
            if self.decisive_since_ is None:  # let the post-edge fit settle
                self.decisive_since_ = n_ready
                return None
            return None if self.final_is_near(n_ready) else "provisional"
        if early:
            self.early_tried_ = True  # once: early values stay the same until the post-edge
            return "early"
        if self._presegment_due(energies_ev, mean, e0_ev):
            self.presegmented_ = True
            return "segment"
        return None

    def final_is_near(self, n_ready: int) -> bool:
        """Whether fewer than ``every`` planned energies remain after ``n_ready``: a provisional
        evaluation then would only repeat, some energies earlier, what the final one decides (it
        cost 0.1-0.2 s of a 512x512 field while the scan goes on)."""
        return self.n_planned > 0 and self.n_planned - n_ready < self.policy.every

    def _presegment_due(self, energies_ev: np.ndarray, mean: np.ndarray, e0_ev: float) -> bool:
        if self.presegmented_ or self.early_tried_ or not self.policy.reuse_segmentation:
            return False
        if energies_ev[-1] < e0_ev + PRESEGMENT_AFTER_EV:
            return False
        return not self._spurious_edge(energies_ev, mean, e0_ev)

    def _spurious_edge(self, energies_ev: np.ndarray, mean: np.ndarray, e0_ev: float) -> bool:
        """Whether the nominal edge is too faint to be the field's edge (see the policy)."""
        significance = edge_significance(energies_ev, mean, e0_ev=e0_ev)
        if not significance >= self.policy.min_edge_significance:  # NaN: cannot tell
            log.debug(
                "run %s: no clear edge at %.1f eV yet (%.1f x the pre-edge scatter)",
                self.run_uid[:8],
                e0_ev,
                significance,
            )
            return True
        return False
