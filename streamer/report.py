"""The logbook report: PNG figures per field of view and for the campaign, HTML and text summary.

Pure over numpy arrays and plain dicts (no bluesky): whoever holds the analysis results calls
:func:`write_fov_report` once per field of view and :func:`write_campaign_report` at the end (or
whenever an up-to-date overview is wanted; files are overwritten). Figures are built by
:mod:`streamer.report_figures` without pyplot and saved as PNG; each field takes well under a
second. Energies are in eV; maps are ``(ny, nx)`` images or flat ``(ny * nx,)`` per-pixel
arrays (reshaped to the label map's shape).

Layout of ``out_dir``::

    <fov>_e0.png  <fov>_white_line.png  <fov>_clusters.png  <fov>_anomaly.png  <fov>_spectra.png
    campaign_mosaic.png  campaign_particles.png  campaign_histograms.png
    particles.csv  summary.txt  index.html
"""

from __future__ import annotations

import csv
import logging
import re
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from streamer import report_campaign_figures as rcf
from streamer import report_figures as rf
from streamer.report_html import alert_line, cell_text, render_index

__all__ = ["mean_spectra", "write_campaign_report", "write_fov_report"]

logger = logging.getLogger(__name__)

#: Rows shown at most in each HTML table (the CSV holds every particle).
MAX_TABLE_ROWS = 500
#: Fields of view shown at most in the campaign mosaic.
MAX_MOSAIC_TILES = 64


def _safe_name(text: str) -> str:
    """A file-name-safe version of a field-of-view id."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "fov"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    fig.clear()
    return path


def _as_image(values, shape: tuple[int, int], name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.size != shape[0] * shape[1]:
        raise ValueError(f"{name} has shape {array.shape}, the label map is {shape}")
    return array.reshape(shape)


def _flag_entry(entry) -> tuple[int, float | None]:
    """Particle id and score of a flagged entry: an id, a particle row or an alert dict."""
    if isinstance(entry, Mapping):
        particle = entry.get("particle", entry)
        if not isinstance(particle, Mapping) or "id" not in particle:
            raise ValueError(f"a flagged entry needs a particle id, got keys {sorted(entry)}")
        score = entry.get("score", particle.get("score"))
        return int(particle["id"]), None if score is None else float(score)
    return int(entry), None


def mean_spectra(
    spectra: np.ndarray, groups: np.ndarray, ids: Sequence[int] | None = None
) -> dict[int, np.ndarray]:
    """Mean spectrum of each group of pixels (clusters, particles), ignoring NaN.

    Parameters
    ----------
    spectra : ndarray, shape (n_energies, n_pixels)
        Normalised spectra (the cube layout).
    groups : ndarray of int, n_pixels elements
        Group of each pixel (cluster id, particle label); negative means none.
    ids : sequence of int, optional
        Groups wanted; default every group >= 0 present (particle labels: pass ids > 0).

    Returns
    -------
    dict of int to ndarray (n_energies,)

    Examples
    --------
    >>> spectra = np.array([[0.0, 1.0, 2.0], [1.0, 3.0, 5.0]])
    >>> mean_spectra(spectra, np.array([0, 0, 1]))
    {0: array([0.5, 2. ]), 1: array([2., 5.])}
    """
    spectra = np.asarray(spectra, dtype=np.float64)
    groups = np.asarray(groups).reshape(-1)
    if spectra.ndim != 2 or spectra.shape[1] != groups.size:
        raise ValueError(f"spectra {spectra.shape} do not match {groups.size} pixel groups")
    finite_groups = np.where(np.isfinite(groups), groups, -1).astype(np.int64)
    wanted = np.unique(finite_groups[finite_groups >= 0]) if ids is None else ids
    out = {}
    for group in wanted:
        columns = spectra[:, finite_groups == int(group)]
        if columns.shape[1]:
            with warnings.catch_warnings():  # all-NaN energies stay NaN, quietly
                warnings.simplefilter("ignore", RuntimeWarning)
                out[int(group)] = np.nanmean(columns, axis=1)
    return out


def write_fov_report(
    out_dir: str | Path,
    *,
    fov_id: str,
    energies_ev: np.ndarray,
    attributes: Mapping[str, np.ndarray],
    labels: np.ndarray,
    cluster_map: np.ndarray | None = None,
    anomaly_score_map: np.ndarray | None = None,
    particle_scores: Mapping[int, float] | None = None,
    flagged: Sequence = (),
    cluster_spectra: Mapping[int, np.ndarray] | None = None,
    flagged_spectra: Mapping[int, np.ndarray] | None = None,
    threshold: float | None = None,
    pixel_size_um: float | None = None,
    title: str | None = None,
    particles_only: bool = True,
) -> list[Path]:
    """Write the PNG figures of one field of view.

    Parameters
    ----------
    out_dir : path
        Created if needed.
    fov_id : str
        Name of the field of view (file-name prefix and figure titles).
    energies_ev : ndarray (n_energies,)
        Energies of the spectra (eV).
    attributes : mapping of str to ndarray
        Per-pixel attributes; ``e0_half`` (or ``e0_deriv``) and ``white_line_energy`` are mapped.
    labels : ndarray of int, shape (ny, nx)
        Particle label map (0 = background).
    cluster_map : ndarray, optional
        Pixel cluster ids (negative or NaN = none).
    anomaly_score_map : ndarray, optional
        Per-pixel anomaly score; when omitted, painted from ``particle_scores``.
    particle_scores : mapping of int to float, optional
        Anomaly score per particle id.
    flagged : sequence
        Flagged particles: ids, particle-table rows or alert dicts (with ``particle.id``).
    cluster_spectra, flagged_spectra : mapping of int to ndarray (n_energies,), optional
        Mean normalised spectrum per cluster and per flagged particle (see
        :func:`mean_spectra`).
    threshold : float, optional
        Alert threshold of the score, drawn on the colour bar.
    pixel_size_um : float, optional
        Adds scale bars.
    title : str, optional
        Prefix of every figure title (default ``fov_id``).
    particles_only : bool
        Draw attribute values only inside particles (``labels > 0``, when there are any): the
        attributes of empty pixels are noise and would dominate the colour scale.

    Returns
    -------
    list of Path
        The figures written (maps that cannot be drawn for lack of input are skipped and logged).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a (ny, nx) image, got shape {labels.shape}")
    shape = labels.shape
    prefix = _safe_name(fov_id)
    heading = title or str(fov_id)
    entries = [_flag_entry(f) for f in flagged]
    marks = {pid: f"#{pid}" for pid, _ in entries}
    maps = {k: _as_image(v, shape, k).astype(np.float32) for k, v in attributes.items()}
    if particles_only and labels.any():
        maps = {k: np.where(labels > 0, v, np.float32(np.nan)) for k, v in maps.items()}
    common = {"labels": labels, "flagged": marks, "pixel_size_um": pixel_size_um}
    written = []

    e0_name = next((k for k in ("e0_half", "e0_deriv") if k in maps), None)
    if e0_name is not None:
        what = "half jump" if e0_name == "e0_half" else "maximum derivative"
        fig = rf.attribute_map_figure(
            maps[e0_name],
            title=f"{heading}: edge energy E0 ({what})",
            colourbar_label="E0 (eV)",
            cmap="viridis",
            **common,
        )
        written.append(_save(fig, out / f"{prefix}_e0.png"))
    if "white_line_energy" in maps:
        fig = rf.attribute_map_figure(
            maps["white_line_energy"],
            title=f"{heading}: white-line energy",
            colourbar_label="white-line energy (eV)",
            cmap="plasma",
            **common,
        )
        written.append(_save(fig, out / f"{prefix}_white_line.png"))
    if cluster_map is not None:
        clusters = _as_image(cluster_map, shape, "cluster_map")
        fig = rf.cluster_map_figure(clusters, title=f"{heading}: pixel clusters", **common)
        written.append(_save(fig, out / f"{prefix}_clusters.png"))
    scores = _score_map(anomaly_score_map, particle_scores, labels)
    if scores is not None:
        finite = scores[np.isfinite(scores)]
        top = max(float(finite.max()) if finite.size else 1.0, threshold or 0.0)
        low = min(float(finite.min()) if finite.size else 0.0, 0.0)
        label = "anomaly score" + ("" if threshold is None else f" (alert above {threshold:g})")
        fig = rf.attribute_map_figure(
            scores,
            title=f"{heading}: anomaly score, flagged particles outlined",
            colourbar_label=label,
            cmap="magma",
            limits=(low, top),
            decimals=1,
            **common,
        )
        if threshold is not None:
            fig.axes[-1].axhline(threshold, color=rf.FLAG_COLOUR, lw=2)
        written.append(_save(fig, out / f"{prefix}_anomaly.png"))
    else:
        logger.info("no anomaly scores for %s: anomaly map skipped", fov_id)
    if cluster_spectra or flagged_spectra:
        score_of = dict(entries)
        texts = {
            pid: f"particle #{pid}"
            + ("" if score_of.get(pid) is None else f" (score {score_of[pid]:.1f})")
            for pid in (flagged_spectra or {})
        }
        fig = rf.spectra_figure(
            energies_ev,
            cluster_spectra or {},
            flagged_spectra or {},
            title=f"{heading}: mean spectrum per cluster and flagged particles",
            flagged_text=texts,
        )
        written.append(_save(fig, out / f"{prefix}_spectra.png"))
    logger.debug("report of %s: %d figures in %s", fov_id, len(written), out)
    return written


def _score_map(score_map, particle_scores, labels: np.ndarray) -> np.ndarray | None:
    if score_map is not None:
        return _as_image(score_map, labels.shape, "anomaly_score_map").astype(np.float32)
    if not particle_scores:
        return None
    lookup = np.full(int(labels.max(initial=0)) + 1, np.nan, dtype=np.float32)
    for pid, score in particle_scores.items():
        if 0 < int(pid) < lookup.size and score is not None:
            lookup[int(pid)] = float(score)
    return lookup[labels]


def write_campaign_report(
    out_dir: str | Path,
    *,
    fovs: Sequence[Mapping],
    particles: Sequence[Mapping],
    alerts: Sequence[Mapping],
    truth: Sequence[Mapping] | None = None,
    title: str = "txm-streamer campaign report",
) -> Path:
    """Write the campaign figures, ``particles.csv``, ``summary.txt`` and ``index.html``.

    Parameters
    ----------
    out_dir : path
        Created if needed; the per-field figures are expected there or below.
    fovs : sequence of mapping
        One per field of view: ``fov_id`` (required); optional ``image`` (``(ny, nx)`` map shown in
        the mosaic, e.g. the edge jump or E0), ``image_label`` (its colour-bar label, default
        ``"edge jump (OD)"``), ``labels``, ``flagged`` (ids, particle rows or alert dicts),
        ``figures`` (paths from :func:`write_fov_report`), and scalars shown in the fields table
        (``scan_id``, ``run_uid``, ``n_energies``, ``n_particles``, ``stage_xy_um``...).
    particles : sequence of mapping
        Particle-table rows with ``fov_id`` and, when known, ``score`` and ``flagged`` (bool).
    alerts : sequence of mapping
        Alert messages (the schema of :mod:`streamer.alerts`).
    truth : sequence of mapping, optional
        Rows of a planted-versus-found table (simulations), shown as given.
    title : str
        Page title.

    Returns
    -------
    Path
        ``out_dir / "index.html"``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [dict(p) for p in particles]
    for row in rows:
        row["name"] = f"{row.get('fov_id', '?')}#{row.get('id', '?')}"
    figures = []
    tiles = [_tile(f) for f in fovs if f.get("image") is not None]
    if len(tiles) > MAX_MOSAIC_TILES:
        logger.warning("mosaic shows the first %d of %d fields", MAX_MOSAIC_TILES, len(tiles))
        tiles = tiles[:MAX_MOSAIC_TILES]
    if tiles:
        label = str(
            next(f for f in fovs if f.get("image") is not None).get("image_label", "edge jump (OD)")
        )
        fig = rcf.mosaic_figure(
            tiles, title="fields of view, flagged particles outlined", colourbar_label=label
        )
        figures.append(_save(fig, out / "campaign_mosaic.png"))
    if rows:
        fig = rcf.particle_scatter_figure(
            rows, title=f"per-particle medians, {len(rows)} particles"
        )
        figures.append(_save(fig, out / "campaign_particles.png"))
        fig = rcf.particle_histograms_figure(rows, title="per-particle medians")
        figures.append(_save(fig, out / "campaign_histograms.png"))
        _write_csv(out / "particles.csv", rows)
    summary = _summary_text(title, fovs, rows, alerts, truth)
    (out / "summary.txt").write_text(summary, encoding="utf-8")
    index = out / "index.html"
    index.write_text(
        render_index(
            title, out, figures, fovs, rows, alerts, truth, summary, max_rows=MAX_TABLE_ROWS
        ),
        encoding="utf-8",
    )
    return index


def _tile(fov: Mapping) -> dict:
    flagged = {pid: f"#{pid}" for pid, _ in (_flag_entry(f) for f in fov.get("flagged", ()))}
    return {
        "image": fov["image"],
        "labels": fov.get("labels"),
        "flagged": flagged,
        "name": f"{fov['fov_id']} ({len(flagged)} flagged)",
    }


def _write_csv(path: Path, rows: Sequence[Mapping]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})


def _csv_cell(value) -> str:
    """CSV cell: full precision, lists space-separated, None empty."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(_csv_cell(v) for v in value)
    return str(value)


def _row_col(centroid) -> str:
    if not centroid:
        return "?"
    return "[" + ", ".join(f"{float(v):.1f}" for v in centroid) + "]"


def _summary_text(title, fovs, rows, alerts, truth) -> str:
    flagged = [r for r in rows if r.get("flagged")]
    kinds = Counter(str(a.get("kind")) for a in alerts)
    lines = [
        title,
        "=" * len(title),
        f"written {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"fields of view: {len(fovs)}   particles: {len(rows)}   flagged: {len(flagged)}",
        "alerts: " + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"),
        "",
        "flagged particles:",
    ]
    for r in flagged:
        score = r.get("score")
        lines.append(
            f"  {r['name']}: area {r.get('area_px', '?')} px,"
            f" centroid {_row_col(r.get('centroid_px'))}"
            + ("" if score is None else f", score {float(score):.2f}")
        )
    if not flagged:
        lines.append("  none")
    lines += ["", "alerts:"] + [f"  {alert_line(a)}" for a in alerts if a.get("kind")]
    if truth:
        lines += ["", "ground truth (planted vs found):"]
        lines += ["  " + ", ".join(f"{k}={cell_text(v)}" for k, v in t.items()) for t in truth]
    return "\n".join(lines) + "\n"
