"""Synthetic particle tables for tests and benchmarks of the particle scorer.

Drawn from the documented LiCoO2 distributions, independently per attribute (the physics
simulator :mod:`sim` draws correlated attributes from a state-of-charge model; the benchmark uses
both): population median edge ``e0_half`` 7722.3 eV with a between-particle spread of 0.3 eV,
white line at 7729.0 eV (0.3 eV) with a height of 1.7 edge steps (0.05), small field-to-field
offsets, and per-pixel noise that reaches a particle's median through its area (50-2000 pixels).
Rows have the particle-table layout of ``docs/architecture.md`` (``<attr>_median``,
``<attr>_iqr``, ``area_px``, ...).

Anomalies (``kind``): ``"reduced"``: edge 2.5-6 eV lower, white line 1-3 eV lower and 0.1-0.3
lower; ``"white_line"``: white-line height +0.3-0.6 at a normal edge. ``subtle``: edge 1-1.5 eV
lower, or height +0.12-0.2, near the noise floor. ``shift`` moves every particle of a field (a
population drift, e.g. a monochromator calibration walking).

Examples
--------
>>> fields = synthetic_campaign(seed=0, n_fields=3, anomalies=[{"kind": "reduced", "field": 0}])
>>> key, table, kinds = fields[0]
>>> key, len(table) == len(kinds), kinds.count("reduced")
('fov000', True, 1)
>>> sorted(table[0])[:4]
['area_px', 'bbox_px', 'centroid_px', 'e0_deriv_iqr']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["synthetic_campaign", "synthetic_field"]

#: name: (population location, between-particle sd, per-pixel noise sd)
_NORMAL = {
    "e0_half": (7722.3, 0.3, 0.4),
    "e0_deriv": (7720.8, 0.35, 0.6),
    "white_line_energy": (7729.0, 0.3, 0.6),
    "white_line_height": (1.7, 0.05, 0.06),
    "pre_edge_noise": (0.010, 0.0015, 0.002),
    "r_squared": (0.995, 0.0015, 0.003),
    "edge_jump": (0.8, 0.2, 0.05),
}
_SHIFTS = {  # (kind, subtle) -> attribute -> (low, high) shift
    ("reduced", False): {
        "e0_half": (-6.0, -2.5),
        "e0_deriv": (-6.0, -2.5),
        "white_line_energy": (-3.0, -1.0),
        "white_line_height": (-0.3, -0.1),
    },
    ("reduced", True): {
        "e0_half": (-1.5, -1.0),
        "e0_deriv": (-1.5, -1.0),
        "white_line_energy": (-0.8, -0.3),
    },
    ("white_line", False): {"white_line_height": (0.3, 0.6)},
    ("white_line", True): {"white_line_height": (0.12, 0.2)},
}


def synthetic_field(
    rng: np.random.Generator,
    *,
    n_particles: int = 9,
    anomalies: Sequence[Mapping] = (),
    subtle: bool = False,
    shift: Mapping[str, float] | None = None,
    field_offset_sd: float = 0.05,
) -> tuple[list[dict], list[str]]:
    """One field's particle table and the true kind of each particle."""
    n = int(n_particles)
    if len(anomalies) > n:
        raise ValueError(f"{len(anomalies)} anomalies but only {n} particles")
    kinds = ["normal"] * n
    which = rng.choice(n, size=len(anomalies), replace=False) if anomalies else []
    for idx, spec in zip(which, anomalies, strict=True):
        if spec["kind"] not in ("reduced", "white_line"):
            raise ValueError(f"unknown anomaly kind {spec['kind']!r}")
        kinds[int(idx)] = spec["kind"]
    offset = {a: rng.normal(0.0, field_offset_sd * sd) for a, (_, sd, _) in _NORMAL.items()}
    table = []
    for i in range(n):
        area = int(np.clip(rng.lognormal(np.log(300), 0.7), 50, 2000))
        row: dict = {
            "id": i + 1,
            "area_px": area,
            "centroid_px": [float(rng.uniform(0, 256)), float(rng.uniform(0, 256))],
            "bbox_px": [0, 0, 1, 1],
            "unusual_fraction": float(rng.beta(1, 30)),
        }
        for a, (loc, sd, noise) in _NORMAL.items():
            value = loc + offset[a] + rng.normal(0.0, sd) + (shift or {}).get(a, 0.0)
            if kinds[i] != "normal":
                spec = anomalies[list(which).index(i)]
                lo_hi = _SHIFTS[(kinds[i], bool(spec.get("subtle", subtle)))].get(a)
                if lo_hi is not None:
                    value += rng.uniform(*lo_hi)
            value += rng.normal(0.0, 1.2533 * noise / np.sqrt(area))  # error of the median
            row[f"{a}_median"] = float(value)
            row[f"{a}_iqr"] = float(1.349 * noise * rng.uniform(0.8, 1.25))
        table.append(row)
    return table, kinds


def synthetic_campaign(
    *,
    seed: int = 0,
    n_fields: int = 8,
    n_particles: int | tuple[int, int] = (7, 10),
    anomalies: Sequence[Mapping] = (),
    subtle: bool = False,
    shift_from_field: int | None = None,
    shift: Mapping[str, float] | None = None,
) -> list[tuple[str, list[dict], list[str]]]:
    """A campaign of synthetic fields: ``[(fov_key, table, kinds), ...]``.

    ``anomalies``: dicts with ``kind``, optional ``field`` (index; random otherwise) and
    ``subtle``. ``shift`` applies to every particle of the fields from ``shift_from_field`` on.
    """
    rng = np.random.default_rng(seed)
    per_field: dict[int, list[Mapping]] = {}
    for spec in anomalies:
        f = spec.get("field")
        f = int(rng.integers(n_fields)) if f is None else int(f)
        per_field.setdefault(f, []).append(spec)
    out = []
    for f in range(n_fields):
        count = (
            int(rng.integers(n_particles[0], n_particles[1] + 1))
            if isinstance(n_particles, tuple)
            else int(n_particles)
        )
        shifted = shift_from_field is not None and f >= shift_from_field
        table, kinds = synthetic_field(
            rng,
            n_particles=max(count, len(per_field.get(f, []))),
            anomalies=per_field.get(f, []),
            subtle=subtle,
            shift=shift if shifted else None,
        )
        out.append((f"fov{f:03d}", table, kinds))
    return out
