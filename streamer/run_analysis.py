"""The analysis of one XANES run (one field of view), frame by frame, with no bluesky import.

:class:`RunAnalysis` receives dark, flat and sample stacks in whatever order the plan produced
them, keeps the per-pixel spectra in a :class:`~streamer.cube.SpectralCube`, and decides early:
as soon as the energies past the edge and the white line have arrived, it computes provisional
attributes, segments particles, asks the campaign model for scores and lets
:class:`~streamer.decisions.RunAlertBook` alert. It re-evaluates every few energies (skipped
while the analysis is behind), and at the end of the scan confirms, updates or resolves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.attributes import compute_attributes
from streamer.cube import FrameShapeError, SpectralCube
from streamer.decisions import RunAlertBook, RunContext
from streamer.normalize import estimate_e0
from streamer.particles import odd_value_mask, particle_table, segment_particles
from streamer.provisional import attribute_requirements, attribute_validity
from streamer.tracking import match_labels

if TYPE_CHECKING:
    from streamer.session import AnalysisSession

log = logging.getLogger(__name__)


@dataclass
class RunInfo:
    """What the engine needs to know about a run (taken from its start document)."""

    run_uid: str
    scan_id: int | None = None
    plan_name: str | None = None
    dialect: str = "generic"
    mode: str = "live"
    planned_energies_ev: tuple[float, ...] | None = None
    chunk_size: int | None = None
    stage_position: dict[str, float] = field(default_factory=dict)
    sample_name: str = ""
    pixel_size_um: float | None = None

    @property
    def fov_key(self) -> str:
        """A short, unique name of the field of view this run imaged."""
        return f"scan{self.scan_id}-{self.run_uid[:8]}"


@dataclass(frozen=True)
class DecisionPolicy:
    """When a run is evaluated before its scan ends.

    Attributes
    ----------
    e0_hint_ev
        Expected edge energy (eV), used to place the analysis windows; ``None`` estimates it from
        the field's mean spectrum. Early evaluation starts once the energies that the
        ``decisive`` attributes need have been normalised.
    every
        Re-evaluate after this many more energies.
    max_backlog
        Skip optional evaluations while the analysis queue is fuller than this (0-1).
    """

    e0_hint_ev: float | None = None
    every: int = 8
    max_backlog: float = 0.5
    decisive: tuple[str, ...] = ("e0_half", "white_line_energy", "white_line_height")


@dataclass
class Evaluation:
    """The result of one evaluation of a run (provisional or final)."""

    energy_index: int
    final: bool
    energies_ev: np.ndarray
    attributes: dict[str, np.ndarray]
    valid_pixels: np.ndarray
    labels: np.ndarray
    table: list[dict]
    scores: list[Any]


class RunAnalysis:
    """Per-run state: the cube, the evaluations and the run's alerts.

    Created by :meth:`streamer.session.AnalysisSession.begin_run`; the caller serialises calls.
    """

    def __init__(
        self,
        info: RunInfo,
        *,
        session: AnalysisSession,
        policy: DecisionPolicy | None = None,
        backlog: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.info = info
        self.session = session
        self.policy = policy or session.policy
        self._backlog = backlog
        self.cube = SpectralCube(energies=info.planned_energies_ev)
        n_planned = len(info.planned_energies_ev or ()) or 0
        self.ctx = RunContext(
            run_uid=info.run_uid,
            scan_id=info.scan_id,
            plan_name=info.plan_name,
            mode=info.mode,
            n_energies=n_planned,
            stage_position=info.stage_position,
            pixel_size_um=info.pixel_size_um,
        )
        self.book = RunAlertBook(self.ctx, session.send)
        self.n_samples = 0
        self.dropped = 0
        self.problems: list[str] = []
        self.last: Evaluation | None = None
        self.finished = False
        self.t_start = time.time()
        self.t_stop: float | None = None
        self._next_eval_at: int | None = None
        self._labels: np.ndarray | None = None

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
        self.dropped += 1
        if self.dropped == 1:  # one alert per run; the count goes into the scan summary
            self.book.simple(
                "data_quality",
                severity="warning",
                energy_index=self.n_samples,
                subject="check:dropped_frames",
                message=f"analysis overloaded: {role or 'a'} frame of scan {self.info.scan_id} "
                "was dropped (more are counted in the scan summary)",
            )

    def note_problem(self, message: str) -> None:
        """A problem with the data of this run: logged, counted, alerted once per message."""
        log.warning("run %s: %s", self.info.run_uid[:8], message)
        if message not in self.problems and len(self.problems) < 100:
            self.problems.append(message)
            self.book.simple(
                "data_quality",
                severity="warning",
                energy_index=self.n_samples,
                subject="check:" + message.split(":")[0],
                message=message,
            )

    def abort(self, message: str, *, quiet: bool = False) -> None:
        """Stop analysing this run (analysis failure, or not a XANES run after all)."""
        if not quiet:
            self.note_problem(message)
        self.finished = True
        self.session.end_run(self, None)

    # -- evaluations ------------------------------------------------------------------------
    def ready_spectra(self) -> tuple[np.ndarray, np.ndarray]:
        """Energies (eV) and OD rows normalised so far (a view when they are contiguous)."""
        ready = np.flatnonzero(self.cube.ready_)
        if ready.size and ready[-1] - ready[0] + 1 == ready.size:
            rows = slice(int(ready[0]), int(ready[-1]) + 1)
            return self.cube.energies_[rows], self.cube.od_[rows]
        return self.cube.energies_[ready], self.cube.od_[ready]

    def _maybe_evaluate(self) -> None:
        n_ready = int(np.count_nonzero(self.cube.ready_))
        if n_ready < 8 or (self._next_eval_at is not None and n_ready < self._next_eval_at):
            return
        if self.last is not None and self._backlog() > self.policy.max_backlog:
            return  # degrade: behind the RunEngine, skip an optional re-evaluation
        energies, od = self.ready_spectra()
        e0 = self.policy.e0_hint_ev or estimate_e0(energies, od)
        if e0 is None:
            self._next_eval_at = n_ready + 1
            return
        covered = attribute_validity(
            energies, attribute_requirements(e0), planned_energies_ev=self.info.planned_energies_ev
        )
        if not all(covered[k] for k in self.policy.decisive):
            self._next_eval_at = n_ready + 1
            return
        self._next_eval_at = n_ready + self.policy.every
        self.evaluate(final=False)

    def evaluate(self, *, final: bool, aborted: bool = False) -> Evaluation | None:
        """Compute attributes, particles and scores on the energies normalised so far."""
        energies, od = self.ready_spectra()
        if energies.size < 8 or self.cube.frame_shape_ is None:
            return None
        result = compute_attributes(
            energies,
            od,
            e0_hint=self.policy.e0_hint_ev,
            planned_energies_ev=self.info.planned_energies_ev,
        )
        if not all(result.valid.get(k, False) for k in self.policy.decisive):
            if final:
                self.note_problem(
                    f"incomplete spectra: only {energies.size} energies up to {energies[-1]:.1f} "
                    "eV were normalised, too few for edge and white-line attributes"
                )
            return None
        shape = self.cube.frame_shape_
        maps = {k: v.reshape(shape) for k, v in result.values.items()}
        valid = np.asarray(result.valid_pixels).reshape(shape)
        if self.cube.valid_ is not None:
            valid = valid & self.cube.valid_.reshape(shape)
        # masked pixels hold no usable absorber: background for the segmentation
        labels = segment_particles(np.where(valid, maps["edge_jump"], 0.0))
        if self._labels is not None:
            labels = match_labels(self._labels, labels)
        self._labels = labels
        odd = odd_value_mask(
            maps, energy_range_ev=(float(energies[0]), float(energies[-1])), within=labels > 0
        )
        table = particle_table(labels, maps, unusual=odd)
        scores = self.session.campaign.score_particles(
            self.info.fov_key, table, provisional=not final
        )
        energy_index = self._energy_index(energies)
        self.book.particles(
            scores,
            {row["id"]: row for row in table},
            energy_index=energy_index,
            final=final,
            shape=shape,
            aborted=aborted,
        )
        ev = Evaluation(
            energy_index,
            final,
            np.asarray(energies),
            result.values,
            valid.ravel(),
            labels,
            table,
            scores,
        )
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
        """Normalise what is left, evaluate on the complete run, confirm or resolve, learn.

        ``stop_time`` is when the scan ended (the stop document's time), for reporting how long
        before the end of the scan each decision came.
        """
        if self.finished:
            return self.last
        self.t_stop = stop_time if stop_time is not None else time.time()
        aborted = exit_status != "success"
        self.cube.finalize()
        self._report_cube_counters()
        if self.ctx.n_energies == 0:
            self.ctx.n_energies = int(np.count_nonzero(self.cube.ready_)) or len(self.cube.energies_)
        ev = self.evaluate(final=True, aborted=aborted)
        if aborted:
            self.note_problem(f"scan aborted: exit_status={exit_status} {reason}".strip())
        self.finished = True
        self.session.end_run(self, ev)
        return ev
