"""Matplotlib figures of the campaign: a mosaic of fields, per-particle scatter and histograms.

Like :mod:`streamer.report_figures`, pure over arrays and dicts, returning
:class:`matplotlib.figure.Figure` objects built without pyplot.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from streamer.report_figures import (
    DPI,
    FLAG_COLOUR,
    colour_map_with_bad,
    outline_particles,
    robust_limits,
)

__all__ = [
    "MOSAIC_TILE_PX",
    "mosaic_figure",
    "particle_histograms_figure",
    "particle_scatter_figure",
]

#: Largest side (pixels) of a mosaic tile; larger fields are reduced for display.
MOSAIC_TILE_PX = 256


def _reduce_tile(image, labels) -> tuple[np.ndarray, np.ndarray | None]:
    """Block-mean the image and subsample the labels so the larger side fits a mosaic tile."""
    image = np.asarray(image, dtype=np.float32)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != image.shape:
            raise ValueError(f"tile labels {labels.shape} do not match its image {image.shape}")
    step = int(np.ceil(max(image.shape) / MOSAIC_TILE_PX))
    if step <= 1:
        return image, labels
    ny, nx = (size // step * step for size in image.shape)
    blocks = image[:ny, :nx].reshape(ny // step, step, nx // step, step)
    with warnings.catch_warnings():  # all-NaN blocks stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        image = np.nanmean(blocks, axis=(1, 3))
    if labels is not None:
        labels = labels[:ny:step, :nx:step]
    return image, labels


def mosaic_figure(
    tiles: Sequence[Mapping],
    *,
    title: str,
    colourbar_label: str,
    cmap: str = "viridis",
) -> Figure:
    """Thumbnails of many fields of view with their flagged particles outlined and labelled.

    Parameters
    ----------
    tiles : sequence of mapping
        Each with ``image`` (ny, nx), ``name`` (str), and optionally ``labels`` (same shape as
        ``image``) and ``flagged`` (mapping of particle id to text). All tiles share one colour
        range; NaN pixels take its lowest colour. Tiles larger than ``MOSAIC_TILE_PX`` are
        reduced for display (block mean of the image, every n-th pixel of the labels).
    """
    n = len(tiles)
    ncols = int(np.ceil(np.sqrt(n))) if n else 1
    nrows = int(np.ceil(n / ncols)) if n else 1
    fig = Figure(figsize=(3.0 * ncols + 1.2, 3.0 * nrows + 0.6), dpi=DPI)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    fig.subplots_adjust(
        left=0.02,
        right=0.86,
        bottom=0.02,
        top=1 - 0.6 / (3.0 * nrows + 0.6),
        wspace=0.06,
        hspace=0.12,
    )
    reduced = [_reduce_tile(t["image"], t.get("labels")) for t in tiles]
    images = [image for image, _ in reduced]
    values = np.concatenate([im[np.isfinite(im)].ravel() for im in images] or [np.zeros(1)])
    low, high = robust_limits(values)
    palette = colour_map_with_bad(cmap, bad=None)  # masked: no absorber, drawn as the lowest
    shown = None
    for ax, tile, (image, labels) in zip(axes, tiles, reduced, strict=False):
        shown = ax.imshow(image, cmap=palette, vmin=low, vmax=high, interpolation="nearest")
        outline_particles(ax, labels, tile.get("flagged") or {}, colour=(0.95, 0.95, 0.95))
        ax.set_title(str(tile["name"]), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.set_axis_off()
    if shown is not None:
        bar = fig.colorbar(shown, cax=fig.add_axes((0.89, 0.15, 0.025, 0.7)))
        bar.set_label(colourbar_label)
    fig.suptitle(title, fontsize=11)
    return fig


def _particle_values(particles: Sequence[Mapping], key: str) -> np.ndarray:
    return np.array([np.nan if p.get(key) is None else float(p[key]) for p in particles])


def particle_scatter_figure(
    particles: Sequence[Mapping],
    *,
    title: str,
    pairs: Sequence[tuple[str, str, str, str]] = (
        (
            "e0_half_median",
            "white_line_height_median",
            "E0 at half jump (eV)",
            "white-line height (edge steps)",
        ),
        (
            "e0_half_median",
            "white_line_energy_median",
            "E0 at half jump (eV)",
            "white-line energy (eV)",
        ),
    ),
) -> Figure:
    """Scatter plots of per-particle medians, flagged particles in red and named.

    ``particles`` are particle-table rows with ``flagged`` (bool) and ``name`` (text written
    next to flagged points) when known. Pairs whose columns are absent are skipped.
    """
    usable = [p for p in pairs if any(p[0] in row and p[1] in row for row in particles)]
    fig = Figure(figsize=(5.0 * max(len(usable), 1), 4.4), dpi=DPI)
    axes = np.atleast_1d(fig.subplots(1, max(len(usable), 1), squeeze=False)).ravel()
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.12, top=0.9, wspace=0.25)
    flagged = np.array([bool(p.get("flagged")) for p in particles], dtype=bool)
    for ax, (xkey, ykey, xlabel, ylabel) in zip(axes, usable, strict=False):
        x, y = _particle_values(particles, xkey), _particle_values(particles, ykey)
        ax.scatter(
            x[~flagged],
            y[~flagged],
            s=16,
            c="#4c72b0",
            alpha=0.7,
            label=f"particles ({int((~flagged).sum())})",
        )
        ax.scatter(
            x[flagged],
            y[flagged],
            s=40,
            c=FLAG_COLOUR,
            marker="D",
            label=f"flagged ({int(flagged.sum())})",
        )
        for i in np.flatnonzero(flagged):
            if np.isfinite(x[i]) and np.isfinite(y[i]):
                ax.annotate(
                    str(particles[i].get("name", particles[i].get("id", ""))),
                    (x[i], y[i]),
                    xytext=(4, 4),
                    textcoords="offset points",
                    fontsize=7,
                    color=FLAG_COLOUR,
                )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if not usable:
        axes[0].text(0.5, 0.5, "no particle attributes", ha="center", va="center")
        axes[0].set_axis_off()
    fig.suptitle(title, fontsize=10)
    return fig


def particle_histograms_figure(
    particles: Sequence[Mapping],
    *,
    title: str,
    columns: Sequence[tuple[str, str]] = (
        ("e0_half_median", "E0 at half jump (eV)"),
        ("white_line_energy_median", "white-line energy (eV)"),
        ("white_line_height_median", "white-line height (edge steps)"),
        ("score", "anomaly score"),
    ),
) -> Figure:
    """Histograms of per-particle values, with the flagged particles marked as red ticks."""
    usable = [c for c in columns if any(row.get(c[0]) is not None for row in particles)]
    n = max(len(usable), 1)
    fig = Figure(figsize=(3.4 * n, 3.2), dpi=DPI)
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)).ravel()
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.17, top=0.88, wspace=0.3)
    flagged = np.array([bool(p.get("flagged")) for p in particles], dtype=bool)
    for ax, (key, label) in zip(axes, usable, strict=False):
        values = _particle_values(particles, key)
        finite = np.isfinite(values)
        ax.hist(values[finite], bins=min(30, max(5, finite.sum() // 3)), color="#4c72b0", alpha=0.8)
        for v in values[finite & flagged]:
            ax.axvline(v, color=FLAG_COLOUR, lw=1.2)
        ax.set_xlabel(label)
        ax.set_ylabel("particles")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if not usable:
        axes[0].text(0.5, 0.5, "no particle attributes", ha="center", va="center")
        axes[0].set_axis_off()
    fig.suptitle(title + "  (red: flagged)", fontsize=10)
    return fig
