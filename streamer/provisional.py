"""Which energies each attribute needs, and whether the energies present provide them.

While a scan runs, energies arrive in ascending order and attributes are computed from the part of
the grid that exists. Each attribute needs an energy interval around the edge to be covered
(:func:`attribute_requirements`); :func:`attribute_validity` says which are covered by the
energies present, so later stages can act on a provisional value before the scan ends: the edge
energy once the energies past the edge are in, the white line once its window is covered, the edge
jump once some post-edge points exist.

When the planned grid is known (FXI's ``eng_list``), requirements are clipped to it, so a grid that
stops short of a default window still becomes valid when its last energy arrives.

**Early validity.** Before the post-edge window fills, the attributes that need the edge jump are
computed on a provisional flat post-edge over a fixed early reference window
(:class:`~streamer.normalize.EdgeWindows` ``early_reference``, 12-20 eV past the edge). Once that
window and the attribute's own window are covered, the value is *early-valid*
(``attribute_requirements(..., early=True)``): a well-defined quantity that stays the same until
the post-edge arrives, biased against the complete-scan value (the white-line height is lower and
varies less with the state of charge) but alike for every particle of every field measured on the
same grid. Early values are compared only with early values (:mod:`streamer.learning.campaign`).
"""

from __future__ import annotations

import numpy as np

from streamer.normalize import EdgeWindows

__all__ = [
    "ATTRIBUTE_NAMES",
    "NEEDS_NORMALIZATION",
    "attribute_requirements",
    "attribute_validity",
]

#: Attribute names (the contract in docs/architecture.md), besides the optional ``frac_<ref>``.
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "edge_jump",
    "e0_half",
    "e0_deriv",
    "white_line_energy",
    "white_line_height",
    "pre_edge_noise",
    "r_squared",
)

#: Attributes that depend on the edge jump (besides ``frac_<ref>``): valid only once the post-edge
#: window holds ``EdgeWindows.min_post_points`` energies (not the provisional flat post-edge, which
#: for LiCoO2 sits in the dip after the white line, about 20 % low).
NEEDS_NORMALIZATION: tuple[str, ...] = (
    "edge_jump",
    "e0_half",
    "white_line_height",
    "pre_edge_noise",
)


def _union(*intervals: tuple[float, float]) -> tuple[float, float]:
    return min(i[0] for i in intervals), max(i[1] for i in intervals)


def attribute_requirements(
    e0_ev: float, *, windows: EdgeWindows | None = None, references=(), early: bool = False
) -> dict[str, tuple[float, float]]:
    """The absolute energy interval (eV) each attribute needs covered.

    Parameters
    ----------
    e0_ev : float
        Nominal edge energy the windows are relative to.
    windows : EdgeWindows, optional
    references : iterable of str
        Names of linear-combination references (adds ``frac_<name>``).
    early : bool
        The requirements of early validity: the edge jump on the fixed early reference window
        instead of the post-edge window (see the module docstring).

    Returns
    -------
    dict
        ``name -> (low, high)``: the energies present must reach down to ``low`` and up to
        ``high``. Attributes in :data:`NEEDS_NORMALIZATION` (and ``frac_<ref>``) also need
        ``min_post_points`` energies in the post-edge window, which the normalisation plan knows.

    Examples
    --------
    >>> req = attribute_requirements(7722.0)
    >>> req["e0_deriv"], req["edge_jump"]
    ((7704.0, 7737.0), (7697.0, 7772.0))
    >>> attribute_requirements(7722.0, early=True)["white_line_height"]
    (7697.0, 7742.0)
    """
    w = windows or EdgeWindows()
    jump = (w.pre[1], w.early_reference[1] if early else w.post[0])
    rel = {
        "edge_jump": jump,
        "e0_half": _union(w.edge, jump),
        "e0_deriv": w.edge,
        "white_line_energy": w.white_line,
        "white_line_height": _union(w.white_line, jump),
        "pre_edge_noise": jump,
        "r_squared": _union((w.pre[1], w.white_line[1]), w.edge),
    }
    for name in references:
        rel[f"frac_{name}"] = _union(w.lcf, jump)
    return {k: (e0_ev + lo, e0_ev + hi) for k, (lo, hi) in rel.items()}


def attribute_validity(
    energies_ev, requirements: dict[str, tuple[float, float]], *, planned_energies_ev=None
) -> dict[str, bool]:
    """Whether the energies present cover each attribute's requirement.

    Parameters
    ----------
    energies_ev : array_like
        Energies present (eV).
    requirements : dict
        From :func:`attribute_requirements`.
    planned_energies_ev : array_like, optional
        The whole planned grid; requirements are clipped to its range.

    Examples
    --------
    >>> req = {"a": (7700.0, 7740.0)}
    >>> attribute_validity([7600.0, 7730.0], req)
    {'a': False}
    >>> attribute_validity([7600.0, 7730.0], req, planned_energies_ev=[7600.0, 7730.0])
    {'a': True}
    """
    e = np.asarray(energies_ev, dtype=np.float64)
    if e.size == 0:
        return dict.fromkeys(requirements, False)
    lo_have, hi_have = float(e.min()), float(e.max())
    if planned_energies_ev is not None:
        plan = np.asarray(planned_energies_ev, dtype=np.float64)
        p_lo, p_hi = float(plan.min()), float(plan.max())
    else:
        p_lo, p_hi = -np.inf, np.inf
    out = {}
    for name, (lo, hi) in requirements.items():
        lo, hi = max(lo, p_lo), min(hi, p_hi)
        out[name] = bool(lo_have <= lo + 1e-6 and hi_have >= hi - 1e-6)
    return out
