"""An analysis session: the campaign model, the alert sink and the record of runs.

One :class:`AnalysisSession` lives as long as the analyzer (a beamtime, a replay); the per-run
state lives in :class:`~streamer.run_analysis.RunAnalysis` objects it creates and forgets. What
it keeps of finished runs is bounded (``keep_runs`` small summaries).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from streamer.cluster_particles import particles_in_cluster
from streamer.decisions import particle_position
from streamer.learning import CampaignModel
from streamer.run_analysis import DecisionPolicy, Evaluation, RunAnalysis, RunInfo
from streamer.run_decision import RunDecider

log = logging.getLogger(__name__)

MIN_NEW_CLUSTER_PX = 200
"""A new pixel cluster smaller than this (a few failed fits, a speck) is logged, not alerted."""


@dataclass
class RunSummary:
    """What a session remembers of a finished run (small; label maps only on request)."""

    info: RunInfo
    exit_ok: bool
    n_energies: int
    n_particles: int
    flagged: dict[int, dict]  # particle id -> last alert sent for it
    first_decision: dict[int, int]  # particle id -> energy index of the first alert
    first_decision_time: dict[int, float]  # particle id -> unix time of the first alert
    table: list[dict]
    dropped: int
    problems: list[str]
    shifts_rms_px: float | None
    t_start: float
    t_end: float
    labels: np.ndarray | None = None
    cluster_map: np.ndarray | None = None
    new_clusters: list = field(default_factory=list)


class AnalysisSession:
    """Campaign-wide state shared by the runs of one analyzer.

    Parameters
    ----------
    alerts
        Callable taking one alert dict (an :class:`~streamer.alerts.AlertPublisher` or any
        function); exceptions it raises are logged and counted, never propagated.
    out_dir
        Where the report (``report/``) and, by default, the checkpoint go; ``None``: nowhere.
    checkpoint
        Campaign checkpoint file: loaded when it exists, saved after every finished run.
    report
        Write per-field PNG figures and the campaign report.
    policy
        When runs are evaluated early (:class:`~streamer.run_analysis.DecisionPolicy`).
    campaign
        An existing :class:`~streamer.learning.CampaignModel`; default a new one (or the
        checkpoint's).
    keep_runs
        How many finished-run summaries to keep.
    keep_label_maps
        Keep each run's particle label map and cluster map in its summary (for demos and tests).
    """

    def __init__(
        self,
        *,
        alerts: Callable[[dict], Any] | None = None,
        out_dir: str | Path | None = None,
        checkpoint: str | Path | None = None,
        report: bool = True,
        policy: DecisionPolicy | None = None,
        campaign: CampaignModel | None = None,
        keep_runs: int = 256,
        keep_label_maps: bool = False,
        seed: int = 0,
    ) -> None:
        self.sink = alerts
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.report = report and self.out_dir is not None
        self.policy = policy or DecisionPolicy()
        if campaign is None and self.checkpoint is not None and self.checkpoint.exists():
            campaign = CampaignModel.load(self.checkpoint)
            log.info("campaign model resumed from %s", self.checkpoint)
        self.campaign = campaign or CampaignModel(seed=seed)
        self.runs: deque[RunSummary] = deque(maxlen=keep_runs)
        self.keep_label_maps = keep_label_maps
        self.alerts: deque[dict] = deque(maxlen=10_000)
        self.figures: dict[str, list[Path]] = {}  # run uid -> report figures (bounded below)
        self.thumbnails: dict[str, tuple] = {}  # run uid -> (small edge-jump image, labels)
        self.sink_errors = 0
        self._lock = threading.Lock()
        self.on_run_end: list[Callable[[RunSummary, Evaluation | None, RunDecider], Any]] = []

    # -- alerts ------------------------------------------------------------------------------
    def send(self, alert: dict) -> None:
        """Hand an alert to the sink; a failing sink is logged and counted, never raised."""
        self.alerts.append(alert)
        if self.sink is None:
            return
        try:
            self.sink(alert)
        except Exception:
            self.sink_errors += 1
            log.exception("the alert sink failed on a %s alert", alert.get("kind"))

    # -- runs --------------------------------------------------------------------------------
    def begin_run(
        self, info: RunInfo, *, backlog: Callable[[], float] = lambda: 0.0
    ) -> RunAnalysis:
        """Create the analysis of a new run."""
        return RunAnalysis(info, session=self, backlog=backlog)

    def begin_decision(self, info: RunInfo) -> RunDecider:
        """The decide half of a run whose compute half ran elsewhere (no per-field figures)."""
        return RunDecider(info, session=self)

    def end_run(self, analysis: RunDecider, ev: Evaluation | None) -> RunSummary:
        """Learn from a finished run, alert on the campaign, write its report, checkpoint."""
        info = analysis.info
        complete = (
            ev is not None
            and ev.final
            and not any(p.startswith("scan aborted") for p in analysis.problems)
        )
        cluster_map = None
        new_clusters: list = []
        if complete:
            # particle rims (thin, partial-volume pixels) bias edge energies: learn from interiors
            interior = ndimage.binary_erosion(ev.labels > 0) | _small_particles(ev.labels)
            inside = interior.ravel() & ev.valid_pixels
            pixel = self.campaign.observe_field(info.fov_key, ev.attributes, inside)
            cluster_map = np.asarray(pixel.cluster_map)
            new_clusters = [
                e for e in pixel.new_clusters if getattr(e, "n_pixels", 0) >= MIN_NEW_CLUSTER_PX
            ]
            for event in pixel.new_clusters:
                if event not in new_clusters:
                    log.info(
                        "new pixel cluster too small to alert (%s px): %s",
                        getattr(event, "n_pixels", "?"),
                        getattr(event, "message", event),
                    )
            for event in new_clusters:
                particles = _cluster_particles(ev, cluster_map, event, analysis)
                message = getattr(event, "message", None) or (
                    f"a new pixel cluster appeared in scan {info.scan_id}"
                )
                if particles:
                    message += "; in " + ", ".join(
                        f"particle {p['id']} ({p['fraction_of_particle']:.0%} of it)"
                        for p in particles[:3]
                    )
                analysis.book.simple(
                    "new_cluster",
                    severity="warning",
                    energy_index=ev.energy_index,
                    subject=f"cluster:{getattr(event, 'cluster_id', '?')}",
                    message=message,
                    particles=particles,
                    **_jsonable_fields(event),
                )
            self.campaign.learn_particles(
                info.fov_key, ev.table, early_table=getattr(analysis, "early_table", None)
            )
            for drift in self.campaign.drift_events():
                analysis.book.simple(
                    "data_quality",
                    severity="warning",
                    energy_index=ev.energy_index,
                    subject=f"drift:{getattr(drift, 'attribute', '?')}",
                    message=getattr(drift, "message", None) or "the particle population drifted",
                    **_jsonable_fields(drift),
                )
        summary = RunSummary(
            info=info,
            exit_ok=complete,
            n_energies=analysis.n_energies,
            n_particles=len(ev.table) if ev is not None else 0,
            flagged=dict(analysis.book.firing),
            first_decision=dict(analysis.book.first_decision),
            first_decision_time=dict(analysis.book.first_decision_time),
            table=ev.table if ev is not None else [],
            dropped=analysis.dropped,
            problems=list(analysis.problems),
            shifts_rms_px=analysis.shifts_rms_px,
            t_start=analysis.t_start,
            t_end=analysis.t_stop or time.time(),
            labels=ev.labels if (ev is not None and self.keep_label_maps) else None,
            cluster_map=cluster_map if self.keep_label_maps else None,
            new_clusters=new_clusters,
        )
        analysis.book.simple(
            "scan_summary",
            severity="info",
            energy_index=summary.n_energies - 1,
            message=(
                f"scan {info.scan_id} {'finished' if complete else 'ended incomplete'}: "
                f"{summary.n_energies} energies, {summary.n_particles} particles, "
                f"{len(summary.flagged)} flagged"
                + (f", {summary.dropped} frames dropped" if summary.dropped else "")
            ),
            n_particles=summary.n_particles,
            flagged_particles=sorted(summary.flagged),
            dropped_frames=summary.dropped,
            drift_rms_px=analysis.shifts_rms_px,
            problems=summary.problems[:10],
        )
        self.runs.append(summary)
        kept = {r.info.run_uid for r in self.runs}
        for cache in (self.figures, self.thumbnails):
            for uid in [u for u in cache if u not in kept and u != info.run_uid]:
                del cache[uid]
        for hook in self.on_run_end:
            hook(summary, ev, analysis)
        if self.report and ev is not None and analysis.has_spectra:
            self._write_fov_report(analysis, ev, cluster_map)
        if self.checkpoint is not None and complete:
            self.campaign.save(self.checkpoint)
        return summary

    def _write_fov_report(self, analysis: RunDecider, ev: Evaluation, cluster_map: Any) -> None:
        from streamer.report_bridge import write_run_report

        try:
            write_run_report(self.out_dir / "report", analysis, ev, cluster_map)
        except Exception:
            log.exception("could not write the report of run %s", analysis.info.run_uid[:8])

    def write_report(self, truth: list[dict] | None = None) -> Path | None:
        """Write the campaign report (``out_dir/report/index.html``); return its path."""
        if not self.report:
            return None
        from streamer.report_bridge import write_session_report

        try:
            return write_session_report(self.out_dir / "report", self, truth=truth)
        except Exception:
            log.exception("could not write the campaign report")
            return None

    def close(self) -> None:
        """Save the checkpoint and write the campaign report."""
        if self.checkpoint is not None:
            self.campaign.save(self.checkpoint)
        self.write_report()


def _small_particles(labels: np.ndarray, max_area_px: int = 60) -> np.ndarray:
    """Pixels of particles too small to lose their rim (kept whole)."""
    area = np.bincount(labels.ravel())
    small = area <= max_area_px
    small[0] = False
    return small[labels]


def _cluster_particles(
    ev: Evaluation, cluster_map: np.ndarray, event: Any, analysis: RunDecider
) -> list[dict]:
    """The particles a new cluster falls in, each with its alert geometry (``particle`` block)."""
    cluster_id = getattr(event, "cluster_id", None)
    if cluster_id is None:
        return []
    named = particles_in_cluster(ev.labels, cluster_map, int(cluster_id))
    rows = {int(row["id"]): row for row in ev.table}
    shape = tuple(ev.labels.shape)
    return [
        {**particle_position(rows[p["id"]], analysis.ctx, shape), **p} if p["id"] in rows else p
        for p in named
    ]


def _jsonable_fields(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return {k: v for k, v in asdict(obj).items() if k != "message"}
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if k != "message"}
    return {}
