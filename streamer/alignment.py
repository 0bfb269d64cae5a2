"""Make provisional particle attributes comparable with the campaign's confirmed ones.

While a scan is still running, some attributes carry a bias that is the same for every particle
of the field: before the post-edge window is covered, the edge jump comes from a provisional
post-edge, so normalised white-line heights are too low by a common factor (about 0.8-0.9 for
LiCoO2 on the seed grid) and half-jump energies move a little. Compared with a population of
*confirmed* particles, every particle would then look abnormal.

The bias is common to the field, so it cancels in comparisons **within** the field. Before a
provisional table is scored, each attribute of every particle is therefore moved so that the
field's median particle sits at the campaign's reference value (a shift for energies, a ratio for
heights and jumps). A particle that differs from its neighbours keeps that difference; a field in
which most particles are abnormal is not caught provisionally, only at the end of its scan, when the
complete spectra are scored without any alignment.

>>> table = [{"id": i, "white_line_height_median": h} for i, h in enumerate([1.4, 1.5, 1.45, 1.9])]
>>> aligned = align_provisional_table(table, {"white_line_height": 1.7})
>>> [round(r["white_line_height_median"], 2) for r in aligned]
[1.61, 1.73, 1.67, 2.19]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

MULTIPLICATIVE = frozenset({"white_line_height", "edge_jump"})
"""Attributes whose provisional bias is a common factor (the others get a common shift)."""

MIN_PARTICLES = 4
"""Fewer particles in a field than this: no robust field median, no provisional alignment."""


def align_provisional_table(
    table: Sequence[Mapping],
    reference: Mapping[str, float],
    *,
    attributes: Iterable[str] | None = None,
    min_particles: int = MIN_PARTICLES,
) -> list[dict] | None:
    """Align a field's provisional particle medians to reference values.

    Parameters
    ----------
    table
        Particle table rows with ``<attr>_median`` values (``None`` when unknown).
    reference
        Campaign reference value per attribute name (e.g. the population median of confirmed
        particles, or the prior before there is a population).
    attributes
        Attributes to align (default: every attribute in ``reference``).
    min_particles
        Return ``None`` when fewer particles have a value: the field median would not be robust.

    Returns
    -------
    list of dict or None
        Copies of the rows with aligned ``<attr>_median`` values (``<attr>_iqr`` scaled alike
        for multiplicative attributes); ``None`` when the field is too small to align.
    """
    names = list(attributes if attributes is not None else reference)
    rows = [dict(r) for r in table]
    for name in names:
        key = f"{name}_median"
        values = np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])
        finite = np.isfinite(values)
        if finite.sum() < min_particles:
            return None
        field_median = float(np.median(values[finite]))
        target = float(reference[name])
        if name in MULTIPLICATIVE:
            if field_median <= 0 or target <= 0:
                return None
            factor = target / field_median
            for r, v in zip(rows, values, strict=True):
                if np.isfinite(v):
                    r[key] = float(v * factor)
                    if r.get(f"{name}_iqr") is not None:
                        r[f"{name}_iqr"] = float(r[f"{name}_iqr"] * factor)
        else:
            shift = target - field_median
            for r, v in zip(rows, values, strict=True):
                if np.isfinite(v):
                    r[key] = float(v + shift)
        log.debug("provisional %s aligned: field median %.4g -> %.4g", name, field_median, target)
    return rows
