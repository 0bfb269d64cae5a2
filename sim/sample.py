"""Simulated LiCoO2 samples: fields of view of particles with per-pixel chemistry and anomalies.

Every particle pixel carries a state of charge (0 = pristine, 1 = charged to 4.9 V) that varies
between particles and within them (uniform with texture, a linear gradient, or core-shell with a
more delithiated shell), mapped to spectral parameters by :func:`sim.spectra.state_params`.
Anomalies are planted on request:

* ``"reduced"``: Co reduced toward CoO/Co3O4, the edge 2.5-6 eV lower and the white line changed;
* ``"white_line"``: a white line much stronger (+0.4-0.6 edge steps) than the population's at a
  normal edge;

either over the whole particle or over a region of it (``partial``), and at full strength or
``subtle``: edge 0.8-1.2 eV lower, or white line +0.10-0.16. Subtle anomalies sit inside the
population's own spread (the state of charge alone moves the edge by 1 eV and the white-line
height from 1.62 to 1.93) and, for thin particles at short exposures, near the per-pixel noise of
the normalised spectra (a few hundredths); they are detectable per particle, not per pixel.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sim import geometry
from sim.fov import FieldOfView, ParticleTruth, features_of, recipe_params

__all__ = [
    "ANOMALY_KINDS",
    "DEFAULT_SURVEY_ANOMALIES",
    "Anomaly",
    "FieldOfView",
    "ParticleTruth",
    "make_field_of_view",
    "make_survey",
]

logger = logging.getLogger(__name__)

ANOMALY_KINDS = ("reduced", "white_line")
#: Edge shift toward reduced Co (eV) per ``subtle`` option.
_REDUCTION_EV = {False: (2.5, 6.0), True: (0.8, 1.2)}
#: White-line height excess (edge steps) per ``subtle`` option.
_WL_EXCESS = {False: (0.4, 0.6), True: (0.1, 0.16)}


@dataclass(frozen=True)
class Anomaly:
    """Request to plant one abnormal particle.

    Parameters
    ----------
    kind : {"reduced", "white_line"}
    partial : bool
        Only a region of the particle (about a third of its area) is abnormal.
    subtle : bool or None
        Near the noise floor; ``None`` takes the field's default.
    particle : int or None
        Label of the particle to plant into (1..n); random when ``None``.
    fov : int or None
        For :func:`make_survey`: index of the field of view; random when ``None``.
    """

    kind: str
    partial: bool = False
    subtle: bool | None = None
    particle: int | None = None
    fov: int | None = None

    def __post_init__(self):
        if self.kind not in ANOMALY_KINDS:
            raise ValueError(f"anomaly kind must be one of {ANOMALY_KINDS}, got {self.kind!r}")

    @classmethod
    def coerce(cls, spec: Anomaly | Mapping) -> Anomaly:
        """An :class:`Anomaly` from itself or a dict such as ``{"kind": "reduced"}``."""
        if isinstance(spec, cls):
            return spec
        if not isinstance(spec, Mapping):
            raise TypeError(f"an anomaly is an Anomaly or a dict, got {type(spec).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(spec) - names
        if unknown:
            raise ValueError(f"unknown anomaly option(s) {sorted(unknown)}; known: {sorted(names)}")
        return cls(**spec)


def _soc_field(rng, labels, rho, blobs, texture_sigma) -> np.ndarray:
    """State of charge per pixel: per-particle mean plus a gradient or core-shell, plus texture."""
    texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape), texture_sigma)
    texture *= 0.05 / max(float(texture.std()), 1e-12)
    soc = np.full(labels.shape, np.nan, dtype=np.float32)
    rows, cols = np.indices(labels.shape)
    for i, blob in enumerate(blobs):
        m = labels == i + 1
        mean = rng.uniform(0.15, 0.85)
        pattern = rng.choice(["uniform", "gradient", "core_shell"])
        if pattern == "gradient":
            ang = rng.uniform(0, 2 * np.pi)
            proj = (rows[m] - blob.row) * np.sin(ang) + (cols[m] - blob.col) * np.cos(ang)
            value = mean + rng.uniform(0.1, 0.25) * proj / blob.mean_radius
        elif pattern == "core_shell":
            value = mean + rng.uniform(0.1, 0.25) * (rho[m] ** 2 - 0.5)
        else:
            value = np.full(m.sum(), mean)
        soc[m] = np.clip(value + texture[m], 0.0, 1.0)
    return soc


def _region(rng, labels, pid) -> np.ndarray:
    """About a third of particle ``pid``: a disc around a random off-centre pixel."""
    rr, cc = np.nonzero(labels == pid)
    k = int(rng.integers(rr.size))
    d = np.hypot(rr - rr[k], cc - cc[k])
    keep = d <= np.quantile(d, rng.uniform(0.28, 0.4))
    mask = np.zeros(labels.shape, dtype=bool)
    mask[rr[keep], cc[keep]] = True
    return mask


def make_field_of_view(
    *,
    shape: tuple[int, int] = (256, 256),
    n_particles: int = 8,
    anomalies: Iterable[Anomaly | Mapping] = (),
    seed: int = 0,
    subtle: bool = False,
    radius_range_px: tuple[float, float] | None = None,
    pixel_size_um: float | None = None,
    index: int = 0,
    stage_xy_um: tuple[float, float] = (0.0, 0.0),
) -> FieldOfView:
    """Simulate one field of view of LiCoO2 particles.

    Parameters
    ----------
    shape : (ny, nx)
        Frame shape in pixels.
    n_particles : int
        Number of particles (a warning is logged if fewer fit).
    anomalies : iterable of Anomaly or dict
        Abnormal particles to plant, e.g. ``[{"kind": "reduced", "partial": True}]``.
    seed : int
        Seed of everything random in this field.
    subtle : bool
        Default ``subtle`` for anomalies that do not say.
    radius_range_px : (float, float), optional
        Particle mean radii; default 10-30 px scaled by ``min(shape) / 256``.
    pixel_size_um : float, optional
        Default: the frame spans 51.2 um (0.2 um pixels at 256 px).
    index, stage_xy_um :
        Position in a survey (recorded in the truth).

    Examples
    --------
    >>> fov = make_field_of_view(shape=(64, 64), n_particles=3, anomalies=[{"kind": "reduced"}])
    >>> fov.labels.max(), [p.kind for p in fov.particles].count("reduced")
    (np.int32(3), 1)
    >>> fov.od([7700.0, 7750.0]).shape
    (2, 64, 64)
    """
    specs = [Anomaly.coerce(a) for a in anomalies]
    ny, nx = (int(s) for s in shape)
    scale = min(ny, nx) / 256.0
    radius_range = radius_range_px or (10.0 * scale, 30.0 * scale)
    pixel_size = pixel_size_um or 51.2 / max(ny, nx)
    rng = np.random.default_rng(seed)
    blobs = geometry.place_blobs(
        rng, shape=(ny, nx), n=n_particles, radius_range=radius_range, pixel_size_um=pixel_size
    )
    labels, thickness, rho = geometry.rasterize(blobs, (ny, nx))
    soc = _soc_field(rng, labels, rho, blobs, texture_sigma=max(2.0, 4.0 * scale))
    n = len(blobs)
    if len(specs) > n:
        raise ValueError(f"{len(specs)} anomalies requested but only {n} particles in the field")

    reduction = np.zeros(labels.shape, dtype=np.float32)
    wl_excess = np.zeros(labels.shape, dtype=np.float32)
    anomalous = np.zeros(labels.shape, dtype=bool)
    planted: dict[int, Anomaly] = {}
    free = list(range(1, n + 1))
    for spec in specs:
        pid = spec.particle if spec.particle is not None else int(rng.choice(free))
        if pid not in free:
            raise ValueError(f"particle {pid} is not available for an anomaly (1..{n}, unused)")
        free.remove(pid)
        spec = dataclasses.replace(spec, subtle=subtle if spec.subtle is None else spec.subtle)
        planted[pid] = spec
        region = _region(rng, labels, pid) if spec.partial else labels == pid
        anomalous |= region
        if spec.kind == "reduced":
            reduction[region] = rng.uniform(*_REDUCTION_EV[spec.subtle])
        else:
            wl_excess[region] = rng.uniform(*_WL_EXCESS[spec.subtle])

    particles = [
        _particle_truth(
            pid, planted.get(pid), labels, thickness, soc, reduction, wl_excess, anomalous
        )
        for pid in range(1, n + 1)
    ]
    return FieldOfView(
        labels=labels,
        thickness_um=thickness,
        soc=soc,
        reduction_shift_ev=reduction,
        wl_excess=wl_excess,
        anomalous_mask=anomalous,
        particles=particles,
        seed=seed,
        pixel_size_um=pixel_size,
        stage_xy_um=(float(stage_xy_um[0]), float(stage_xy_um[1])),
        index=index,
    )


def _particle_truth(pid, spec, labels, thickness, soc, reduction, wl_excess, anomalous):
    inside = labels == pid
    rr, cc = np.nonzero(inside)
    abn = inside & anomalous

    def median_recipe(sel):
        return [np.median(soc[sel])], [np.median(reduction[sel])], [np.median(wl_excess[sel])]

    def observed(sel):
        if not sel.any():
            return {}
        return {k: float(v[0]) for k, v in features_of(*median_recipe(sel)).items()}

    def planted(sel):
        recipe = median_recipe(sel)
        params = recipe_params(*recipe)
        out = {k: float(params[k][0]) for k in ("e0", "wl_energy", "wl_height")}
        return {**out, "soc": float(recipe[0][0])}

    return ParticleTruth(
        id=pid,
        kind=spec.kind if spec else "normal",
        partial=bool(spec.partial) if spec else False,
        subtle=bool(spec.subtle) if spec else False,
        centroid_px=(float(rr.mean()), float(cc.mean())),
        bbox_px=(int(rr.min()), int(cc.min()), int(rr.max()) + 1, int(cc.max()) + 1),
        area_px=int(rr.size),
        anomalous_area_px=int(abn.sum()),
        max_thickness_um=float(thickness[inside].max()),
        mean_soc=float(soc[inside].mean()),
        reduction_shift_ev=float(reduction[abn].max()) if abn.any() else 0.0,
        wl_height_excess=float(wl_excess[abn].max()) if abn.any() else 0.0,
        planted=planted(abn if spec else inside),
        observed=observed(abn if spec else inside),
        observed_normal=observed(inside & ~anomalous),
    )


#: The demo survey's anomalies: one reduced and one white-line particle somewhere in the survey.
DEFAULT_SURVEY_ANOMALIES = (Anomaly("reduced"), Anomaly("white_line"))


def make_survey(
    *,
    n_fovs: int = 8,
    shape: tuple[int, int] = (256, 256),
    seed: int = 0,
    anomalies_per_survey: Iterable[Anomaly | Mapping] | None = None,
    n_particles: int | tuple[int, int] = (8, 10),
    subtle: bool = False,
    spacing_um: float | None = None,
) -> list[FieldOfView]:
    """Simulate a survey: ``n_fovs`` fields of view on a stage grid, anomalies spread among them.

    Parameters
    ----------
    n_fovs : int
        Number of fields of view.
    shape : (ny, nx)
        Frame shape of each field.
    seed : int
        Survey seed; field ``i`` uses a seed derived from it.
    anomalies_per_survey : iterable of Anomaly or dict, optional
        Anomalies to plant; each goes to the field named by its ``fov`` or to a random field
        (default: :data:`DEFAULT_SURVEY_ANOMALIES`, one reduced and one white-line particle).
    n_particles : int or (low, high)
        Particles per field, fixed or drawn uniformly from ``low..high`` inclusive.
    subtle : bool
        Default ``subtle`` of the anomalies.
    spacing_um : float, optional
        Stage distance between neighbouring fields (default 1.5 field widths).

    Returns
    -------
    list of FieldOfView
    """
    if n_fovs < 1:
        raise ValueError(f"n_fovs must be >= 1, got {n_fovs}")
    rng = np.random.default_rng(seed)
    specs = [
        Anomaly.coerce(a)
        for a in (
            DEFAULT_SURVEY_ANOMALIES if anomalies_per_survey is None else anomalies_per_survey
        )
    ]
    target = []
    for spec in specs:
        if spec.fov is not None and not 0 <= spec.fov < n_fovs:
            raise ValueError(f"anomaly fov {spec.fov} outside 0..{n_fovs - 1}")
    order = rng.permutation(n_fovs)
    for k, spec in enumerate(specs):
        target.append(spec.fov if spec.fov is not None else int(order[k % n_fovs]))
    ny, nx = shape
    pixel_size = 51.2 / max(ny, nx)
    spacing = spacing_um or 1.5 * max(ny, nx) * pixel_size
    ncols = int(np.ceil(np.sqrt(n_fovs)))
    seeds = np.random.SeedSequence(seed).spawn(n_fovs)
    fovs = []
    for i in range(n_fovs):
        if isinstance(n_particles, tuple):
            count = int(rng.integers(n_particles[0], n_particles[1] + 1))
        else:
            count = int(n_particles)
        mine = [s for s, t in zip(specs, target, strict=True) if t == i]
        fovs.append(
            make_field_of_view(
                shape=shape,
                n_particles=count,
                anomalies=mine,
                seed=int(seeds[i].generate_state(1)[0]),
                subtle=subtle,
                index=i,
                stage_xy_um=((i % ncols) * spacing, (i // ncols) * spacing),
            )
        )
    return fovs
