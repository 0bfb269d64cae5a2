"""HTML and text rendering of the campaign report (``index.html``), with no external assets.

Everything written into the page is escaped; figures are linked by paths relative to the
report folder so the folder can be copied or served as a whole.
"""

from __future__ import annotations

import html
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["alert_line", "cell_text", "render_index"]

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; }
th { background: #f0f0f0; }
tr.critical td, tr.error td { background: #fde0e0; } tr.warning td { background: #fff4d6; }
tr.resolved td { color: #888; }
img { max-width: 100%; border: 1px solid #ddd; margin: 4px 0; }
.figs img { max-width: 48%; } .muted { color: #777; }
"""

#: Particle columns shown in the HTML tables, with their headings.
PARTICLE_COLUMNS = (
    ("name", "particle"),
    ("area_px", "area (px)"),
    ("centroid_px", "centroid [row, col] (px)"),
    ("score", "score"),
    ("e0_half_median", "E0 half (eV)"),
    ("e0_half_iqr", "E0 IQR (eV)"),
    ("white_line_energy_median", "white line (eV)"),
    ("white_line_height_median", "white-line height"),
    ("unusual_fraction", "unusual fraction"),
)
ALERT_COLUMNS = (
    ("time", "time"),
    ("seq", "seq"),
    ("kind", "kind"),
    ("severity", "severity"),
    ("status", "status"),
    ("scan_id", "scan"),
    ("particle", "particle"),
    ("energy_index", "energy index"),
    ("score", "score"),
    ("threshold", "threshold"),
    ("message", "message"),
)


def cell_text(value) -> str:
    """Plain-text form of a table cell (None empty, floats to 6 significant digits)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return " ".join(cell_text(v) for v in value)
    return str(value)


def _alert_cell(alert: Mapping, key: str) -> str:
    value = alert.get(key)
    if key == "time" and isinstance(value, int | float):
        return time.strftime("%H:%M:%S", time.localtime(value))
    if key == "particle" and isinstance(value, Mapping):
        return cell_text(value.get("id"))
    if key == "energy_index" and value is not None:
        return f"{int(value) + 1}/{alert.get('n_energies', '?')}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return cell_text(value)


def alert_line(alert: Mapping) -> str:
    """One line per alert, for the text summary."""
    particle = alert.get("particle") or {}
    where = f" particle {particle.get('id')}" if particle.get("id") is not None else ""
    index = alert.get("energy_index")
    at = "" if index is None else f" at energy {int(index) + 1}/{alert.get('n_energies', '?')}"
    return (
        f"[{alert.get('severity', '?')}] {alert.get('kind', '?')} {alert.get('status', '')}"
        f" scan {alert.get('scan_id', '?')}{where}{at}: {alert.get('message', '')}"
    )


def _table(headings: Sequence[str], rows: Sequence[Sequence[str]], classes=None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{html.escape(classes[i])}"' if classes and classes[i] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _particle_table(rows: Sequence[Mapping], max_rows: int) -> str:
    shown = [c for c in PARTICLE_COLUMNS if any(c[0] in r for r in rows)]
    cells = [[cell_text(r.get(k)) for k, _ in shown] for r in rows[:max_rows]]
    more = len(rows) - max_rows
    note = f'<p class="muted">{more} more in particles.csv</p>' if more > 0 else ""
    return _table([h for _, h in shown], cells) + note


def _relative(path, out: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()


def _img(path, out: Path) -> str:
    src = html.escape(_relative(path, out))
    return f'<a href="{src}"><img src="{src}" alt="{html.escape(Path(path).name)}"></a>'


def render_index(
    title: str,
    out: Path,
    figures: Sequence[Path],
    fovs: Sequence[Mapping],
    rows: Sequence[Mapping],
    alerts: Sequence[Mapping],
    truth: Sequence[Mapping] | None,
    summary: str,
    *,
    max_rows: int = 500,
) -> str:
    """The campaign page: figures, alerts, flagged particles, fields, all particles, truth."""
    flagged = [r for r in rows if r.get("flagged")]
    kinds = Counter(str(a.get("kind")) for a in alerts)
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">written {time.strftime("%Y-%m-%d %H:%M:%S")}; '
        '<a href="summary.txt">summary.txt</a>'
        + (' · <a href="particles.csv">particles.csv</a>' if rows else "")
        + "</p>",
        f"<p><b>{len(fovs)}</b> fields of view, <b>{len(rows)}</b> particles, "
        f"<b>{len(flagged)}</b> flagged; alerts: "
        + html.escape(", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none")
        + "</p>",
    ]
    if figures:
        parts.append("<h2>Campaign</h2>" + "".join(_img(f, out) for f in figures))
    parts.append(f"<h2>Alerts ({len(alerts)})</h2>")
    if alerts:
        shown = list(alerts[:max_rows])
        cells = [[_alert_cell(a, k) for k, _ in ALERT_COLUMNS] for a in shown]
        classes = [
            "resolved" if a.get("status") == "resolved" else str(a.get("severity", ""))
            for a in shown
        ]
        parts.append(_table([h for _, h in ALERT_COLUMNS], cells, classes))
        if len(alerts) > max_rows:
            parts.append(f'<p class="muted">{len(alerts) - max_rows} more not shown</p>')
    else:
        parts.append("<p>none</p>")
    parts.append(f"<h2>Flagged particles ({len(flagged)})</h2>")
    parts.append(_particle_table(flagged, max_rows) if flagged else "<p>none</p>")
    if truth:
        keys: list[str] = []
        for t in truth:
            keys.extend(k for k in t if k not in keys)
        parts.append("<h2>Ground truth: planted versus found</h2>")
        parts.append(_table(keys, [[cell_text(t.get(k)) for k in keys] for t in truth]))
    parts.append(f"<h2>Fields of view ({len(fovs)})</h2>")
    for fov in fovs:
        scalars = {
            k: v
            for k, v in fov.items()
            if k not in ("image", "labels", "flagged", "figures", "image_label")
        }
        n_flagged = len(fov.get("flagged", ()))
        parts.append(f"<h3>{html.escape(str(fov.get('fov_id')))} ({n_flagged} flagged)</h3>")
        parts.append(_table(list(scalars), [[cell_text(v) for v in scalars.values()]]))
        figs = fov.get("figures") or ()
        if figs:
            parts.append('<div class="figs">' + "".join(_img(f, out) for f in figs) + "</div>")
    if rows:
        parts.append(f"<h2>All particles ({len(rows)})</h2>")
        parts.append(_particle_table(rows, max_rows))
    parts.append("<h2>Text summary</h2><pre>" + html.escape(summary) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
