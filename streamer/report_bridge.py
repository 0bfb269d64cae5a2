"""Feed the report writers (:mod:`streamer.report`) from a run's analysis and a session.

The report functions are pure over arrays; this module gathers those arrays from a finished
:class:`~streamer.run_analysis.RunAnalysis` (attribute maps, label map, cluster map, scores, mean
spectra per cluster and per flagged particle) and from an
:class:`~streamer.session.AnalysisSession` (fields, particles, alerts) for the campaign page.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.normalize import normalize
from streamer.report import mean_spectra, write_campaign_report, write_fov_report

if TYPE_CHECKING:
    from streamer.run_analysis import Evaluation, RunAnalysis
    from streamer.session import AnalysisSession

log = logging.getLogger(__name__)

MOSAIC_TILE_PX = 256
"""Largest side of the per-field image kept for the campaign mosaic."""


def _normalised_means(
    energies: np.ndarray, od: np.ndarray, groups: np.ndarray, ids: list[int] | None = None
) -> dict[int, np.ndarray]:
    """Mean OD spectrum per group, then normalised (cheaper than normalising every pixel)."""
    means = mean_spectra(od, groups, ids)
    if not means:
        return {}
    keys = list(means)
    stacked = np.stack([means[k] for k in keys], axis=1)
    good = np.all(np.isfinite(stacked), axis=0)
    out: dict[int, np.ndarray] = {}
    if good.any():
        try:
            norm = normalize(energies, stacked[:, good]).norm
        except ValueError as err:
            log.info("mean spectra not normalised (%s): shown as optical density", err)
            norm = stacked[:, good]
        for j, k in enumerate(np.asarray(keys)[good]):
            out[int(k)] = norm[:, j]
    return out


def thumbnail(image: np.ndarray, max_px: int = MOSAIC_TILE_PX) -> np.ndarray:
    """Block-average an image so that its larger side is at most ``max_px``."""
    step = max(1, int(np.ceil(max(image.shape) / max_px)))
    if step == 1:
        return image
    ny, nx = (s // step * step for s in image.shape)
    return np.nanmean(image[:ny, :nx].reshape(ny // step, step, nx // step, step), axis=(1, 3))


def write_run_report(
    out_dir: Path, analysis: RunAnalysis, ev: Evaluation, cluster_map: Any
) -> list[Path]:
    """Write the figures of one run (one field of view)."""
    info = analysis.info
    energies, od = analysis.ready_spectra()
    labels = ev.labels
    scores = {int(s.id): float(s.score) for s in ev.scores}
    flagged = sorted(analysis.book.firing)
    threshold = float(ev.scores[0].threshold) if ev.scores else None
    cluster_spectra = {}
    if cluster_map is not None:
        cluster_spectra = _normalised_means(energies, od, np.asarray(cluster_map).ravel())
    flagged_spectra = _normalised_means(energies, od, labels.ravel(), flagged) if flagged else {}
    figures = write_fov_report(
        out_dir,
        fov_id=info.fov_key,
        energies_ev=np.asarray(energies),
        attributes=ev.attributes,
        labels=labels,
        cluster_map=None if cluster_map is None else np.asarray(cluster_map).reshape(labels.shape),
        particle_scores=scores,
        flagged=flagged,
        cluster_spectra=cluster_spectra,
        flagged_spectra=flagged_spectra,
        threshold=threshold,
        pixel_size_um=info.pixel_size_um,
        title=f"scan {info.scan_id} ({info.run_uid[:8]})",
    )
    analysis.session.figures[info.run_uid] = figures
    jump = ev.attributes.get("edge_jump")
    if jump is not None:
        analysis.session.thumbnails[info.run_uid] = (
            thumbnail(np.asarray(jump).reshape(labels.shape)),
            labels if max(labels.shape) <= MOSAIC_TILE_PX else None,
        )
    return figures


def write_session_report(
    out_dir: Path, session: AnalysisSession, truth: list[dict] | None = None
) -> Path:
    """Write the campaign page (mosaic, particle scatter, tables, summary) of a session."""
    fovs, particles = [], []
    for summary in session.runs:
        info = summary.info
        thumb = session.thumbnails.get(info.run_uid)
        fovs.append(
            {
                "fov_id": info.fov_key,
                "scan_id": info.scan_id,
                "run_uid": info.run_uid,
                "n_energies": summary.n_energies,
                "n_particles": summary.n_particles,
                "flagged": sorted(summary.flagged),
                "image": None if thumb is None else thumb[0],
                "labels": None if thumb is None else thumb[1],
                "figures": session.figures.get(info.run_uid, []),
            }
        )
        for row in summary.table:
            particles.append(
                {**row, "fov_id": info.fov_key, "flagged": int(row["id"]) in summary.flagged}
            )
    return write_campaign_report(
        out_dir, fovs=fovs, particles=particles, alerts=list(session.alerts), truth=truth
    )
