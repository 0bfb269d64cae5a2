"""The steps one run's compute half hands to its decide half.

:class:`~streamer.run_analysis.RunAnalysis` (compute: the cube, the evaluations) produces a
sequence of steps ``(kind, payload)``; a decider (:class:`~streamer.run_decision.RunDecider`, or
a :class:`StepRecorder` that keeps them for a decider elsewhere) consumes them. The payload of an
``"evaluation"`` step is an :class:`EvaluationSnapshot`; the decider turns it into an
:class:`Evaluation` with the campaign's scores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streamer.run_info import RunInfo

__all__ = ["Evaluation", "EvaluationSnapshot", "Step", "StepRecorder"]


@dataclass
class EvaluationSnapshot:
    """What the decide half needs from one evaluation of a run (the compute half's result).

    ``attributes``, ``valid_pixels`` and ``labels`` are per-pixel and may be ``None`` on a
    provisional snapshot that was slimmed for shipping (:meth:`slim`); the final one keeps them,
    the campaign learns from them. ``early``: the attributes are early values (on the fixed early
    reference of :mod:`streamer.provisional`, the post-edge window still short).
    """

    energy_index: int
    final: bool
    aborted: bool
    shape: tuple[int, int]
    energies_ev: np.ndarray
    table: list[dict]
    attributes: dict[str, np.ndarray] | None = None
    valid_pixels: np.ndarray | None = None
    labels: np.ndarray | None = None
    early: bool = False

    def slim(self) -> EvaluationSnapshot:
        """The same snapshot without per-pixel maps when it is provisional."""
        if self.final:
            return self
        return replace(self, attributes=None, valid_pixels=None, labels=None)


@dataclass
class Evaluation:
    """The result of one evaluation of a run (provisional or final), with its scores."""

    energy_index: int
    final: bool
    energies_ev: np.ndarray
    attributes: dict[str, np.ndarray] | None
    valid_pixels: np.ndarray | None
    labels: np.ndarray | None
    table: list[dict]
    scores: list[Any]
    early: bool = False

    @classmethod
    def from_snapshot(cls, snap: EvaluationSnapshot, scores: list[Any]) -> Evaluation:
        return cls(
            snap.energy_index,
            snap.final,
            snap.energies_ev,
            snap.attributes,
            snap.valid_pixels,
            snap.labels,
            snap.table,
            scores,
            snap.early,
        )


Step = tuple[str, Any]
"""One step of a run's compute half: ``(kind, payload)``, see :class:`StepRecorder`."""


class StepRecorder:
    """A decider that only records the steps (compute on a worker, decide elsewhere).

    Step kinds: ``"problem"`` ``{"message", "energy_index"}``, ``"dropped"``
    ``{"role", "energy_index"}``, ``"abort"``
    ``{"message", "quiet", "energy_index", "n_energies"}``,
    ``"finalizing"`` ``{"n_energies_seen"}``, ``"evaluation"``
    (an :class:`EvaluationSnapshot`, provisional ones slimmed), ``"end"`` ``{"exit_status",
    "reason", "stop_time", "n_energies", "shifts_rms_px", "evaluated", "energy_index"}``.
    """

    def __init__(self, info: RunInfo) -> None:
        self.info = info
        self.steps: list[Step] = []

    def __call__(self, kind: str, payload: Any) -> None:
        if kind == "evaluation":
            payload = payload.slim()
        self.steps.append((kind, payload))
