"""The analysis of one XANES run (one field of view), frame by frame, with no bluesky import.

:class:`RunAnalysis` receives dark, flat and sample stacks in whatever order the plan produced
them, keeps the per-pixel spectra in a :class:`~streamer.cube.SpectralCube`, and evaluates early:
as soon as the energies past the edge and the white line have arrived, it computes provisional
attributes and segments particles. It re-evaluates every few energies (skipped while the analysis
is behind, when a ``backlog`` is given), and at the end of the scan evaluates the complete run.

**Early decisions.** The complete edge jump needs the post-edge window (E0 + 50 eV and more,
energy ~86 of the seed grid's 106), but the edge and the white line are in some 30 energies
earlier. So, once the ``DecisionPolicy.early`` attributes are *early-valid* (determined on the
fixed early reference 12-20 eV past the edge, :mod:`streamer.provisional`; energy ~55 of the seed
grid), the run is evaluated once *early*; its snapshot is marked ``early`` and the decider scores
it against early values only: the field's neighbours (same energies, same bias) and the
campaign's record of early values of confirmed-normal particles, with a stricter threshold
(:class:`streamer.learning.CampaignModel`). The next evaluation comes ``every`` energies after the
decisive attributes first become valid (checked at every energy, without computing any pixel: a
post-edge fit on its minimum of points flagged whole fields of a sparse grid), then every
``every`` energies until the end is near; the final one confirms, updates or resolves. Which
evaluation comes when is decided by :class:`~streamer.evaluation_schedule.EvaluationSchedule`.

It is the **compute** half of a run's analysis: everything it produces is a sequence of *steps*
(``("problem", ...)``, ``("evaluation", EvaluationSnapshot)``, ``("end", ...)``...) handed to a
decider, which owns the **decide** half (campaign scoring, alert book, learning; see
:class:`streamer.run_decision.RunDecider`):

- live, the decider is a :class:`~streamer.run_decision.RunDecider` applying each step at once,
  so scoring and alerts interleave with the frames exactly as the scan goes;
- distributed (:mod:`streamer.distributed`), a :class:`StepRecorder` keeps the steps; they are
  shipped back and applied, run by run in scan order, by a decider on the client.

The steps themselves are defined in :mod:`streamer.run_steps`, the run's description and its
:class:`DecisionPolicy` in :mod:`streamer.run_info` (all re-exported here); what one evaluation
computes, and what it reuses from the previous one, in
:mod:`streamer.field_evaluation`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.cube import FrameShapeError, SpectralCube
from streamer.evaluation_schedule import EvaluationSchedule
from streamer.field_evaluation import FieldEvaluator
from streamer.normalize import estimate_e0
from streamer.run_info import DecisionPolicy, RunInfo
from streamer.run_steps import Evaluation, EvaluationSnapshot, Step, StepRecorder

__all__ = [
    "DecisionPolicy",
    "Evaluation",
    "EvaluationSnapshot",
    "RunAnalysis",
    "RunInfo",
    "Step",
    "StepRecorder",
]

if TYPE_CHECKING:
    from streamer.session import AnalysisSession

log = logging.getLogger(__name__)


class RunAnalysis:
    """Per-run compute state: the cube and the evaluations; decisions go to ``decider``.

    Parameters
    ----------
    info
        The run.
    session
        The analysis session; when given and ``decider`` is not, a
        :class:`~streamer.run_decision.RunDecider` of that session decides live.
    policy
        When to evaluate (default: the session's, else :class:`DecisionPolicy`).
    backlog
        How full the analysis queue is (0-1); optional evaluations are skipped above
        ``policy.max_backlog``. Replay passes none, so nothing is skipped.
    decider
        Callable ``decider(kind, payload)`` taking the steps (see :class:`StepRecorder`).
    attribute_threads
        Threads of :func:`~streamer.attributes.compute_attributes` (1 on a dask worker process
        that has one core to itself).

    The caller serialises calls.
    """

    def __init__(
        self,
        info: RunInfo,
        *,
        session: AnalysisSession | None = None,
        policy: DecisionPolicy | None = None,
        backlog: Callable[[], float] = lambda: 0.0,
        decider: Callable[[str, Any], Any] | None = None,
        attribute_threads: int = 2,
    ) -> None:
        self.info = info
        self.session = session
        self.policy = policy or (session.policy if session is not None else DecisionPolicy())
        if decider is None:
            if session is None:
                raise ValueError("RunAnalysis needs a session or a decider")
            from streamer.run_decision import RunDecider

            decider = RunDecider(info, session=session, spectra=self.ready_spectra)
        self.decider = decider
        self._backlog = backlog
        self.attribute_threads = attribute_threads
        self.cube = SpectralCube(energies=info.planned_energies_ev)
        self.n_samples = 0
        self.finished = False
        self.last: Evaluation | None = None
        self.schedule = EvaluationSchedule(
            self.policy, planned_energies_ev=info.planned_energies_ev, run_uid=info.run_uid
        )
        self.field: FieldEvaluator | None = None

    # -- the live decider's state, for callers that look at a run's alerts ---------------------
    def __getattr__(self, name: str) -> Any:
        if name in ("book", "ctx", "problems", "dropped", "t_start", "t_stop"):
            return getattr(self.__dict__["decider"], name)
        raise AttributeError(name)

    # -- frames -----------------------------------------------------------------------------
    def add_dark(self, stack: np.ndarray) -> None:
        self._guard(self.cube.add_dark, stack)

    def add_flat(
        self, stack: np.ndarray, *, energy_ev: float | None, i0: float | None = None
    ) -> None:
        self._guard(self.cube.add_flat, stack, energy=energy_ev, i0=i0)
        self._maybe_evaluate()

    def add_sample(self, stack: np.ndarray, *, energy_ev: float, i0: float | None = None) -> None:
        if self._guard(self.cube.add_sample, stack, energy=energy_ev, i0=i0) is not None:
            self.n_samples += 1
        self._maybe_evaluate()

    def _guard(self, method: Callable, stack: np.ndarray, **kw: Any) -> Any:
        if self.finished:
            return None
        try:
            return method(np.asarray(stack), **kw)
        except (FrameShapeError, ValueError) as err:
            self.note_problem(f"frame rejected: {err}")
            return None

    # -- problems ---------------------------------------------------------------------------
    def note_dropped(self, marker: dict, *, role: str | None = None) -> None:
        """An event of this run was dropped by the overload policy."""
        self.decider("dropped", {"role": role, "energy_index": self.n_samples})

    def note_problem(self, message: str) -> None:
        """A problem with the data of this run: logged, counted, alerted once per message."""
        log.warning("run %s: %s", self.info.run_uid[:8], message)
        self.decider("problem", {"message": message, "energy_index": self.n_samples})

    def abort(self, message: str, *, quiet: bool = False) -> None:
        """Stop analysing this run (analysis failure, or not a XANES run after all)."""
        if not quiet:
            log.warning("run %s: %s", self.info.run_uid[:8], message)
        self.finished = True
        self.decider(
            "abort",
            {
                "message": message,
                "quiet": quiet,
                "energy_index": self.n_samples,
                "n_energies": len(self.cube.energies_),
            },
        )

    # -- evaluations ------------------------------------------------------------------------
    def ready_spectra(self) -> tuple[np.ndarray, np.ndarray]:
        """Energies (eV) and OD rows normalised so far (a view when they are contiguous)."""
        ready = np.flatnonzero(self.cube.ready_)
        if ready.size and ready[-1] - ready[0] + 1 == ready.size:
            rows = slice(int(ready[0]), int(ready[-1]) + 1)
            return self.cube.energies_[rows], self.cube.od_[rows]
        return self.cube.energies_[ready], self.cube.od_[ready]

    def ready_mean_spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """Energies (eV) normalised so far and the field's mean spectrum on them, shape
        ``(n_energies, 1)``: what :func:`~streamer.normalize.estimate_e0` and
        :func:`~streamer.normalize.edge_significance` need, kept by the cube row by row, so that
        checking at every energy does not read the whole cube again (at 256x256 that re-read
        was 30 % of the analysis's time during a scan, and most of its memory traffic)."""
        ready = self.cube.ready_
        return self.cube.energies_[ready], self.cube.mean_spectrum_[ready][:, None]

    def _maybe_evaluate(self) -> None:
        """Evaluate now if the schedule says so (:mod:`streamer.evaluation_schedule`)."""
        if not self.policy.provisional:
            return
        n_ready = int(np.count_nonzero(self.cube.ready_))
        if not self.schedule.due(n_ready):
            return
        if self.last is not None and self._backlog() > self.policy.max_backlog:
            return  # degrade: behind the RunEngine, skip an optional re-evaluation
        energies, mean = self.ready_mean_spectrum()
        e0 = self.policy.e0_hint_ev or estimate_e0(energies, mean)
        action = self.schedule.next_action(energies, mean, e0)
        if action is None:
            return
        self.evaluate(final=False, e0_ev=e0)  # "segment": not decisive, the field is segmented
        if action == "provisional":
            self._prepare(n_ready, e0)
        elif action == "segment":
            self._prepare_early(n_ready, e0)

    def _planned_in_order(self, n_ready: int) -> np.ndarray | None:
        """The planned grid when its first ``n_ready`` energies are the ones normalised (the
        energies arrive in their planned order, so coming evaluations' grids are known), else
        ``None``; ``None`` too before the field's evaluator exists."""
        planned = self.cube.energies_
        if self.field is None or not self.info.planned_energies_ev or n_ready > planned.size:
            return None
        return planned if self.cube.ready_[:n_ready].all() else None

    def _prepare(self, n_ready: int, e0: float) -> None:
        """Build the operators of the next evaluation's grid while the frames are coming in.

        Only when the energies arrive in their planned order (the cube's grid is then the planned
        one, and the next evaluation's grid is its first ``schedule.next_at_`` energies); after the
        last provisional evaluation, for the complete grid.
        """
        planned = self._planned_in_order(n_ready)
        if planned is None:
            return
        n_next = min(self.schedule.next_at_, planned.size)
        if self.schedule.final_is_near(n_next):  # no provisional evaluation there: the final one
            self.field.prepare(planned, e0_ev=self.policy.e0_hint_ev or e0)
        else:
            self.field.prepare(planned[:n_next], e0_ev=e0)

    def _prepare_early(self, n_ready: int, e0: float) -> None:
        """Build, right after the field is segmented, the operators of its early evaluation:
        that of the first planned grid on which the ``early`` attributes are early-valid (when
        the energies arrive in their planned order), so the evaluation an alert waits for does
        not spend 20-30 ms of a 512x512 field on them."""
        planned = self._planned_in_order(n_ready)
        if planned is None:
            return
        for n_next in range(n_ready + 1, planned.size + 1):
            if self.field.early_ready(planned[:n_next], e0_ev=e0):
                self.field.prepare(planned[:n_next], e0_ev=e0)
                return

    def snapshot(
        self, *, final: bool, aborted: bool = False, e0_ev: float | None = None
    ) -> EvaluationSnapshot | None:
        """Attributes and particles on the energies normalised so far (no campaign involved).

        ``e0_ev`` is the field's edge energy when the caller already estimated it on the same
        spectra (default: the policy's hint, else estimated from the mean spectrum).
        """
        energies, od = self.ready_spectra()
        if energies.size < 8 or self.cube.frame_shape_ is None:
            return None
        shape = tuple(self.cube.frame_shape_)
        if self.field is None or self.field.shape != shape:
            self.field = FieldEvaluator(
                shape,
                decisive=self.policy.decisive,
                early=self.policy.early,
                planned_energies_ev=self.info.planned_energies_ev,
                n_threads=self.attribute_threads,
                reuse_segmentation=self.policy.reuse_segmentation,
            )
        cube_valid = None if self.cube.valid_ is None else self.cube.valid_.ravel()
        if e0_ev is None:
            e0_ev = self.policy.e0_hint_ev or estimate_e0(*self.ready_mean_spectrum())
        result = self.field.evaluate(
            energies,
            od,
            e0_ev=e0_ev,
            final=final,
            pixel_valid=cube_valid,
        )
        if result is None:
            if final:
                self.note_problem(
                    f"incomplete spectra: only {energies.size} energies up to {energies[-1]:.1f} "
                    "eV were normalised, too few for edge and white-line attributes"
                )
            return None
        return EvaluationSnapshot(
            energy_index=self._energy_index(energies),
            final=final,
            aborted=aborted,
            shape=shape,
            energies_ev=np.asarray(energies),
            table=result.table,
            attributes=result.attributes,
            valid_pixels=result.valid_pixels,
            labels=result.labels,
            early=result.early,
        )

    def evaluate(
        self, *, final: bool, aborted: bool = False, e0_ev: float | None = None
    ) -> Evaluation | None:
        """Evaluate on the energies normalised so far and hand the snapshot to the decider."""
        snap = self.snapshot(final=final, aborted=aborted, e0_ev=e0_ev)
        if snap is None:
            return None
        ev = self.decider("evaluation", snap)
        if not isinstance(ev, Evaluation):
            ev = Evaluation.from_snapshot(snap, [])
        self.last = ev
        return ev

    def _report_cube_counters(self) -> None:
        c = self.cube.counters_
        n_pix = int(np.prod(self.cube.frame_shape_ or (0,)))
        if c.get("raw_absorbance"):
            self.note_problem(
                f"missing flats: {c['raw_absorbance']} energies analysed as raw absorbance "
                "(no flat-field correction)"
            )
        if c.get("nearest_flat"):
            self.note_problem(
                f"missing flats: {c['nearest_flat']} energies normalised with the nearest flat"
            )
        if c.get("registration_failed"):
            self.note_problem(f"registration failed at {c['registration_failed']} energies")
        rows = max(int(np.count_nonzero(self.cube.ready_)), 1)
        if n_pix and c.get("masked_values", 0) > 0.01 * n_pix * rows:
            self.note_problem(
                f"masked values: {c['masked_values']} pixel values were zero, negative or not "
                f"finite ({100 * c['masked_values'] / (n_pix * rows):.1f} %)"
            )

    def _energy_index(self, energies: np.ndarray) -> int:
        planned = self.info.planned_energies_ev
        if planned:
            return int(np.argmin(np.abs(np.asarray(planned) - energies[-1])))
        return len(energies) - 1

    # -- end of run -------------------------------------------------------------------------
    def finalize(
        self, *, exit_status: str = "success", reason: str = "", stop_time: float | None = None
    ) -> Evaluation | None:
        """Normalise what is left, evaluate on the complete run, and end it at the decider.

        ``stop_time`` is when the scan ended (the stop document's time), for reporting how long
        before the end of the scan each decision came.
        """
        if self.finished:
            return self.last
        aborted = exit_status != "success"
        self.cube.finalize()
        self._report_cube_counters()
        n_seen = int(np.count_nonzero(self.cube.ready_)) or len(self.cube.energies_)
        self.decider("finalizing", {"n_energies_seen": n_seen})
        ev = self.evaluate(final=True, aborted=aborted)
        self.finished = True
        shifts = getattr(self.cube, "shifts_", None)
        shifts_rms = None
        if shifts is not None and len(shifts):
            shifts_rms = float(np.sqrt(np.mean(np.sum(np.asarray(shifts) ** 2, axis=1))))
        self.decider(
            "end",
            {
                "exit_status": exit_status,
                "reason": reason,
                "stop_time": stop_time if stop_time is not None else time.time(),
                "n_energies": len(self.cube.energies_),
                "shifts_rms_px": shifts_rms,
                "evaluated": ev is not None,
                "energy_index": self.n_samples,
            },
        )
        return ev
