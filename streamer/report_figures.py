"""Matplotlib figures of one field of view: attribute maps, clusters, anomalies, spectra.

Every function here is pure over numpy arrays and returns a :class:`matplotlib.figure.Figure`
built without :mod:`matplotlib.pyplot`, so no GUI backend, no global figure registry and nothing
to close: the caller saves it (:mod:`streamer.report` does) and drops it. Images are shown with
row 0 at the top, in pixels (``row``, ``column``), with a scale bar when the pixel size is known.
Energies are in eV.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter
from skimage.segmentation import find_boundaries

__all__ = [
    "CLUSTER_COLOURS",
    "FLAG_COLOUR",
    "attribute_map_figure",
    "cluster_map_figure",
    "colour_map_with_bad",
    "outline_particles",
    "robust_limits",
    "spectra_figure",
]

#: Categorical colours of clusters (matplotlib's tab10 without its red, kept for flagged
#: particles), reused by the spectra figure.
CLUSTER_COLOURS: tuple = tuple(c for i, c in enumerate(colormaps["tab10"].colors) if i != 3)
FLAG_COLOUR = "#e8000b"
_BAD_COLOUR = "#d9d9d9"  # NaN pixels: background, masked
DPI = 100


def cluster_colour(cluster: int) -> str:
    """Colour of a cluster id, consistent across figures."""
    return CLUSTER_COLOURS[int(cluster) % len(CLUSTER_COLOURS)]


def robust_limits(values: np.ndarray, where: np.ndarray | None = None) -> tuple[float, float]:
    """2nd-98th percentile of the finite values (inside ``where`` when it has any): a few
    outliers (thin particle rims) do not wash out the contrast; they saturate instead."""
    finite = np.isfinite(values)
    if where is not None and (finite & where).any():
        finite &= where
    if not finite.any():
        return 0.0, 1.0
    low, high = np.percentile(values[finite], [2.0, 98.0])
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return float(low), float(high)


def _frame_axes(ax, shape: tuple[int, int], pixel_size_um: float | None) -> None:
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    if pixel_size_um and pixel_size_um > 0:
        ny, nx = shape
        target = 0.2 * nx * pixel_size_um  # about a fifth of the frame width
        nice = [v for v in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if v <= target]
        length_um = nice[-1] if nice else target
        length_px = length_um / pixel_size_um
        x0, y0 = 0.05 * nx, 0.93 * ny
        ax.plot([x0, x0 + length_px], [y0, y0], color="white", lw=3, solid_capstyle="butt")
        ax.text(
            x0 + length_px / 2,
            y0 - 0.02 * ny,
            f"{length_um:g} µm",
            color="white",
            ha="center",
            va="bottom",
            fontsize=8,
        )


def outline_particles(
    ax,
    labels: np.ndarray | None,
    flagged: Mapping[int, str],
    *,
    colour: tuple[float, float, float] = (0.3, 0.3, 0.3),
) -> None:
    """One-pixel outlines of all particles, drawn just outside them so that no particle pixel
    is hidden (except along a contact with a neighbour); red contours and id labels for the
    flagged ones."""
    if labels is None or not labels.any():
        return
    edges = (find_boundaries(labels, mode="outer") & (labels == 0)) | _contacts(labels)
    overlay = np.zeros((*labels.shape, 4), dtype=np.float32)
    overlay[edges] = (*colour, 0.9)
    ax.imshow(overlay, interpolation="nearest")
    for particle_id, text in flagged.items():
        inside = labels == particle_id
        if not inside.any():
            continue
        ax.contour(inside.astype(np.float32), levels=[0.5], colors=FLAG_COLOUR, linewidths=1.5)
        rows, cols = np.nonzero(inside)
        ax.annotate(
            text,
            (cols.mean(), rows.min()),
            xytext=(0, 4),
            textcoords="offset points",
            color=FLAG_COLOUR,
            fontsize=8,
            fontweight="bold",
            ha="center",
            va="bottom",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75},
        )


def _contacts(labels: np.ndarray) -> np.ndarray:
    """Particle pixels whose right or lower neighbour is another particle (one side of each
    contact between touching particles)."""
    out = np.zeros(labels.shape, dtype=bool)
    right = (labels[:, :-1] != labels[:, 1:]) & (labels[:, :-1] > 0) & (labels[:, 1:] > 0)
    below = (labels[:-1, :] != labels[1:, :]) & (labels[:-1, :] > 0) & (labels[1:, :] > 0)
    out[:, :-1] |= right
    out[:-1, :] |= below
    return out


def attribute_map_figure(
    image: np.ndarray,
    *,
    title: str,
    colourbar_label: str,
    labels: np.ndarray | None = None,
    flagged: Mapping[int, str] | None = None,
    cmap: str = "viridis",
    limits: tuple[float, float] | None = None,
    pixel_size_um: float | None = None,
    decimals: int = 1,
) -> Figure:
    """One attribute as an image with a colour bar, particles outlined, flagged ones labelled.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        The map; ``NaN`` pixels (background, masked) are drawn in light grey.
    title, colourbar_label : str
        Texts; the colour-bar label carries the unit, e.g. ``"E0 (eV)"``.
    labels : ndarray of int, optional
        Particle label map, outlined.
    flagged : mapping of int to str, optional
        Flagged particle ids and the text written next to them.
    cmap : str
        Matplotlib colour map.
    limits : (float, float), optional
        Colour range; default the 2nd-98th percentile inside the particles.
    pixel_size_um : float, optional
        Adds a scale bar.
    decimals : int
        Decimals of the colour-bar ticks (absolute energies need no offset notation).
    """
    image = np.asarray(image, dtype=np.float32)
    if limits is None:
        limits = robust_limits(image, None if labels is None else labels > 0)
    fig, ax, bar_ax = _map_canvas()
    palette = colour_map_with_bad(cmap)
    shown = ax.imshow(image, cmap=palette, vmin=limits[0], vmax=limits[1], interpolation="nearest")
    bar = fig.colorbar(shown, cax=bar_ax)
    bar.set_label(colourbar_label)
    bar.ax.yaxis.set_major_formatter(FormatStrFormatter(f"%.{decimals}f"))
    outline_particles(ax, labels, flagged or {})
    _frame_axes(ax, image.shape, pixel_size_um)
    ax.set_title(title, fontsize=10)
    return fig


def _map_canvas():
    """Figure, image axes and colour-bar axes at fixed positions (no layout engine: fast)."""
    fig = Figure(figsize=(6.0, 5.0), dpi=DPI)
    ax = fig.add_axes((0.1, 0.1, 0.7, 0.82))
    bar_ax = fig.add_axes((0.83, 0.14, 0.03, 0.74))
    return fig, ax, bar_ax


def colour_map_with_bad(cmap: str, *, bad: str | None = _BAD_COLOUR):
    """The named colour map with NaN drawn light grey (or ``bad``; None: its lowest colour)."""
    palette = colormaps[cmap]
    return palette.with_extremes(bad=palette(0.0) if bad is None else bad)


def cluster_map_figure(
    cluster_map: np.ndarray,
    *,
    title: str,
    labels: np.ndarray | None = None,
    flagged: Mapping[int, str] | None = None,
    pixel_size_um: float | None = None,
) -> Figure:
    """Categorical map of pixel clusters (ids >= 0; negative or NaN = no cluster)."""
    clusters = np.asarray(cluster_map, dtype=np.float64)
    present = np.unique(clusters[np.isfinite(clusters) & (clusters >= 0)]).astype(int)
    n_colours = int(present.max()) + 1 if present.size else 1
    palette = ListedColormap([cluster_colour(i) for i in range(n_colours)]).with_extremes(
        bad=_BAD_COLOUR
    )
    shown = np.where(np.isfinite(clusters) & (clusters >= 0), clusters, np.nan)
    fig = Figure(figsize=(6.0, 5.0), dpi=DPI)
    ax = fig.add_axes((0.11, 0.1, 0.84, 0.82))
    norm = BoundaryNorm(np.arange(n_colours + 1) - 0.5, n_colours)
    ax.imshow(shown, cmap=palette, norm=norm, interpolation="nearest")
    counts = {int(c): int(np.sum(clusters == c)) for c in present}
    handles = [
        Patch(color=cluster_colour(c), label=f"cluster {c} ({counts[c]} px)") for c in present
    ]
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.8)
    outline_particles(ax, labels, flagged or {})
    _frame_axes(ax, clusters.shape, pixel_size_um)
    ax.set_title(title, fontsize=10)
    return fig


def spectra_figure(
    energies_ev: np.ndarray,
    cluster_spectra: Mapping[int, np.ndarray],
    flagged_spectra: Mapping[int, np.ndarray],
    *,
    title: str,
    flagged_text: Mapping[int, str] | None = None,
) -> Figure:
    """Mean normalised spectrum per cluster with the flagged particles' spectra over them.

    Two panels: the whole scan and a zoom on the edge and white line (around the steepest rise of
    the average cluster spectrum).
    """
    energies = np.asarray(energies_ev, dtype=np.float64)
    fig = Figure(figsize=(10.0, 4.2), dpi=DPI)
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.86, wspace=0.22)
    flagged_text = flagged_text or {}
    for ax in axes:
        for cluster, spectrum in sorted(cluster_spectra.items()):
            ax.plot(
                energies,
                spectrum,
                color=cluster_colour(cluster),
                lw=1.6,
                label=f"cluster {cluster} (mean)",
            )
        for k, (particle_id, spectrum) in enumerate(sorted(flagged_spectra.items())):
            ax.plot(
                energies,
                spectrum,
                color=FLAG_COLOUR,
                lw=1.2,
                ls=("--", ":", "-.")[k % 3],
                label=flagged_text.get(particle_id, f"particle {particle_id}"),
            )
        ax.set_xlabel("energy (eV)")
        ax.set_ylabel("normalised µ (edge step = 1)")
        ax.grid(alpha=0.3)
    axes[0].set_title("whole scan", fontsize=9)
    reference = [np.asarray(s, dtype=np.float64) for s in cluster_spectra.values()]
    reference = reference or [np.asarray(s, dtype=np.float64) for s in flagged_spectra.values()]
    if reference and energies.size > 3:
        mean = np.nanmean(np.vstack(reference), axis=0)
        slope = np.gradient(np.nan_to_num(mean), energies)
        edge = energies[int(np.argmax(slope))]
        axes[1].set_xlim(edge - 25.0, edge + 45.0)
        window = (energies >= edge - 25.0) & (energies <= edge + 45.0)
        stacked = np.vstack(reference + [np.asarray(s) for s in flagged_spectra.values()])
        values = stacked[:, window]
        if np.isfinite(values).any():
            low, high = np.nanmin(values), np.nanmax(values)
            pad = 0.05 * (high - low or 1.0)
            axes[1].set_ylim(low - pad, high + pad)
    axes[1].set_title("edge and white line", fontsize=9)
    axes[1].xaxis.set_major_formatter(FormatStrFormatter("%.0f"))
    axes[0].xaxis.set_major_formatter(FormatStrFormatter("%.0f"))
    if cluster_spectra or flagged_spectra:
        axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    return fig
