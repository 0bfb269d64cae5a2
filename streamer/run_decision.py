"""The decide half of one run's analysis: campaign scores, the alert book, the end of the run.

A :class:`RunDecider` takes the steps that the compute half
(:class:`streamer.run_analysis.RunAnalysis`) produces, in order, and turns them into alerts with
the session's campaign model. Live, each step is applied as it is produced; in a distributed
replay (:mod:`streamer.distributed`) the steps of a run computed on a worker are applied here, on
the client, run after run in scan order, so the campaign model sees exactly the sequence of a
serial replay and the alerts are the same.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.decisions import RunAlertBook, RunContext
from streamer.run_analysis import RunInfo
from streamer.run_steps import Evaluation, EvaluationSnapshot, Step

if TYPE_CHECKING:
    from streamer.session import AnalysisSession

log = logging.getLogger(__name__)


class RunDecider:
    """Per-run decision state: the run's alert context and book, its problems and its end.

    Parameters
    ----------
    info
        The run.
    session
        Campaign model, alert sink and record of runs.
    spectra
        ``spectra() -> (energies_ev, od)`` of the run for the per-field report; ``None`` when the
        cube lives elsewhere (then the field's figures are not drawn).
    """

    def __init__(
        self,
        info: RunInfo,
        *,
        session: AnalysisSession,
        spectra: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.info = info
        self.session = session
        self._spectra = spectra
        self.ctx = RunContext(
            run_uid=info.run_uid,
            scan_id=info.scan_id,
            plan_name=info.plan_name,
            mode=info.mode,
            n_energies=len(info.planned_energies_ev or ()) or 0,
            stage_position=info.stage_position,
            pixel_size_um=info.pixel_size_um,
        )
        self.book = RunAlertBook(self.ctx, session.send)
        self.dropped = 0
        self.problems: list[str] = []
        self.last: Evaluation | None = None
        self.final: Evaluation | None = None
        #: The particle table of the run's early evaluation (learned at the end with the final
        #: one, for the particles confirmed normal), or ``None``.
        self.early_table: list[dict] | None = None
        self.finished = False
        self.t_start = time.time()
        self.t_stop: float | None = None
        self.n_energies = 0
        self.shifts_rms_px: float | None = None

    @property
    def has_spectra(self) -> bool:
        """Whether :meth:`ready_spectra` can give the run's spectra (for the report)."""
        return self._spectra is not None

    def ready_spectra(self) -> tuple[np.ndarray, np.ndarray]:
        """The run's energies and OD rows (only where the cube is in this process)."""
        if self._spectra is None:
            raise RuntimeError(f"the spectra of run {self.info.run_uid[:8]} are not here")
        return self._spectra()

    # -- steps -------------------------------------------------------------------------------
    def __call__(self, kind: str, payload: Any) -> Any:
        """Apply one step of the compute half (see :class:`~streamer.run_steps.StepRecorder`)."""
        if self.finished:
            return None
        if kind == "evaluation":
            return self.evaluation(payload)
        if kind == "problem":
            return self.problem(payload["message"], energy_index=payload["energy_index"])
        if kind == "dropped":
            return self.note_dropped(payload.get("role"), energy_index=payload["energy_index"])
        if kind == "finalizing":
            if self.ctx.n_energies == 0:
                self.ctx.n_energies = int(payload["n_energies_seen"])
            return None
        if kind == "abort":
            self.n_energies = int(payload.get("n_energies", 0))
            if not payload.get("quiet"):
                self.problem(payload["message"], energy_index=payload.get("energy_index"))
            return self.end(evaluation=None)
        if kind == "end":
            return self.finish(**payload)
        raise ValueError(f"unknown analysis step {kind!r}")

    def apply(self, steps: list[Step]) -> None:
        """Apply a run's recorded steps in order."""
        for kind, payload in steps:
            self(kind, payload)

    def note_dropped(self, role: str | None, *, energy_index: int) -> None:
        """An event of this run was dropped by the overload policy."""
        self.dropped += 1
        if self.dropped == 1:  # one alert per run; the count goes into the scan summary
            self.book.simple(
                "data_quality",
                severity="warning",
                energy_index=energy_index,
                subject="check:dropped_frames",
                message=f"analysis overloaded: {role or 'a'} frame of scan {self.info.scan_id} "
                "was dropped (more are counted in the scan summary)",
            )

    def problem(self, message: str, *, energy_index: int | None) -> None:
        """A problem with the data of this run: alerted once per message."""
        if message not in self.problems and len(self.problems) < 100:
            self.problems.append(message)
            self.book.simple(
                "data_quality",
                severity="warning",
                energy_index=energy_index,
                subject="check:" + message.split(":")[0],
                message=message,
            )

    def evaluation(self, snap: EvaluationSnapshot) -> Evaluation:
        """Score one evaluation's particles on the campaign model and apply the alert rules.

        An early snapshot (:mod:`streamer.provisional`) is scored against early values only.
        """
        early = bool(getattr(snap, "early", False)) and not snap.final
        scores = self.session.campaign.score_particles(
            self.info.fov_key, snap.table, provisional=not snap.final, early=early
        )
        if not snap.final:
            scores = self._hold_field_wide(scores, snap.energy_index, early=early)
        if early and self.early_table is None:
            self.early_table = snap.table
        self.book.particles(
            scores,
            {row["id"]: row for row in snap.table},
            energy_index=snap.energy_index,
            final=snap.final,
            shape=tuple(snap.shape),
            aborted=snap.aborted,
        )
        ev = Evaluation.from_snapshot(snap, scores)
        self.last = ev
        if snap.final:
            self.final = ev
        return ev

    def _hold_field_wide(self, scores: list[Any], energy_index: int, *, early: bool) -> list[Any]:
        """Scores of an evaluation before the end, or none flagged when they flag most of the
        field (see :func:`field_wide`): values shifted for a whole field while the scan goes on
        are not particle anomalies; the final evaluation, never held, decides."""
        flagged = sum(bool(s.anomalous) for s in scores)
        if not field_wide(flagged, len(scores)):
            return scores
        log.warning(
            "run %s: the %s evaluation at energy %d flagged %d of %d particles, a shift of the "
            "whole field's values rather than so many anomalies: no alert, a later evaluation "
            "decides",
            self.info.run_uid[:8],
            "early" if early else "provisional",
            energy_index,
            flagged,
            len(scores),
        )
        return [dataclasses.replace(s, anomalous=False) for s in scores]

    def finish(
        self,
        *,
        exit_status: str,
        reason: str,
        stop_time: float,
        n_energies: int,
        shifts_rms_px: float | None,
        evaluated: bool,
        energy_index: int | None = None,
    ) -> None:
        """The run ended: say so if it was aborted, then learn and summarise it."""
        self.t_stop = stop_time
        self.n_energies = n_energies
        self.shifts_rms_px = shifts_rms_px
        if exit_status != "success":
            self.problem(
                f"scan aborted: exit_status={exit_status} {reason}".strip(),
                energy_index=energy_index,
            )
        self.end(evaluation=self.final if evaluated else None)

    def end(self, *, evaluation: Evaluation | None) -> None:
        self.finished = True
        self.session.end_run(self, evaluation)


FIELD_WIDE_MIN = 3
"""Fewest particles flagged before the end that can be a field-wide shift (:func:`field_wide`)."""
FIELD_WIDE_FRACTION = 0.5
"""Fraction of a field's particles above which flags before the end are taken for a field-wide
shift."""


def field_wide(n_flagged: int, n_particles: int) -> bool:
    """Whether an evaluation before the end flagging ``n_flagged`` of ``n_particles`` flags the
    field rather than particles.

    A field's values can all shift together while its scan goes on: on a grid coarser than the
    seed study's (every other seed energy), the fixed early reference 12-20 eV past the edge
    holds few energies, and the early evaluation of one 64x64 field flagged 3 of its 4 particles;
    in the campaign benchmark (40 fields of 512x512) the provisional evaluation at energy 95 of
    two fields flagged 10 and 11 of their particles. All were resolved at the end
    (``docs/detection-results.md``). Anomalies are a few particles of a field; more than half of
    them, and at least ``FIELD_WIDE_MIN``, is the field.

    Examples
    --------
    >>> field_wide(3, 4), field_wide(2, 4), field_wide(2, 2), field_wide(4, 12)
    (True, False, False, False)
    """
    return n_flagged >= FIELD_WIDE_MIN and n_flagged > FIELD_WIDE_FRACTION * n_particles
