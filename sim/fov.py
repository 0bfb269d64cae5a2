"""The ground-truth container of a simulated field of view and its absorption.

A :class:`FieldOfView` holds the planted recipe per pixel (thickness, state of charge, reduction
shift, white-line excess); spectral parameters, noiseless optical density and the observable
attributes an ideal analysis would measure all derive from it. Build one with
:func:`sim.sample.make_field_of_view`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import numpy as np

from sim import spectra

__all__ = ["FEATURES", "FieldOfView", "ParticleTruth", "reduction_fraction"]

#: Observable attributes reported in the truth (names as in ``streamer.attributes``).
FEATURES = ("e0_half", "white_line_energy", "white_line_height")
#: Fine grid (eV) on which the observable attributes of the noiseless model are computed.
FINE_GRID_EV = np.arange(7700.0, 7760.0, 0.05)
_SOC_GRID = np.linspace(0.0, 1.0, 101)
#: State-of-charge table on which spectra are evaluated and linearly interpolated (see
#: ``FieldOfView.normalized_mu``); the interpolation error is below 1e-6 in normalised mu.
_SOC_TABLE_STEPS = 1000


def reduction_fraction(shift_ev, soc) -> np.ndarray:
    """Fraction toward :data:`sim.spectra.REDUCED` that lowers the edge by about ``shift_ev``.

    The edge parameter of a pixel at state of charge ``soc`` is interpolated between PRISTINE and
    CHARGED; moving a fraction ``f`` toward REDUCED lowers it by ``f`` times its distance to
    REDUCED's, so ``f = shift / distance`` (clipped to [0, 1]).
    """
    e0 = spectra.PRISTINE.e0 + np.asarray(soc, float) * (spectra.CHARGED.e0 - spectra.PRISTINE.e0)
    return np.clip(np.asarray(shift_ev, float) / (e0 - spectra.REDUCED.e0), 0.0, 1.0)


def recipe_params(soc, reduction_shift_ev, wl_excess) -> dict[str, np.ndarray]:
    """:func:`sim.spectra.normalized_mu` parameters for per-pixel recipe arrays of shape (n,)."""
    soc = np.atleast_1d(np.asarray(soc, dtype=np.float64))
    params = spectra.state_params(soc, reduction=reduction_fraction(reduction_shift_ev, soc))
    params["wl_height"] = params["wl_height"] + np.asarray(wl_excess, dtype=np.float64)
    return params


def features_of(soc, reduction_shift_ev=0.0, wl_excess=0.0) -> dict[str, np.ndarray]:
    """Observable attributes (``FEATURES``) of the noiseless model for recipe arrays (n,)."""
    params = recipe_params(soc, reduction_shift_ev, wl_excess)
    mu = spectra.normalized_mu(FINE_GRID_EV, **params, dtype=np.float64)
    return spectra.spectrum_features(FINE_GRID_EV, mu)


@dataclass
class ParticleTruth:
    """Ground truth of one particle (pixel coordinates ``[row, col]``, bbox half-open)."""

    id: int
    kind: str
    partial: bool
    subtle: bool
    centroid_px: tuple[float, float]
    bbox_px: tuple[int, int, int, int]
    area_px: int
    anomalous_area_px: int
    max_thickness_um: float
    mean_soc: float
    #: Planted recipe: e0 shift toward reduced (eV, >= 0) and white-line excess (edge steps).
    reduction_shift_ev: float = 0.0
    wl_height_excess: float = 0.0
    #: Planted model parameters (``e0``, ``wl_energy``, ``wl_height``, ``soc``) at the median
    #: recipe of the abnormal pixels (of the whole particle when normal).
    planted: dict[str, float] = field(default_factory=dict)
    #: Observable attributes of the noiseless spectrum at that same median recipe.
    observed: dict[str, float] = field(default_factory=dict)
    #: Same for the particle's normal pixels (empty when the whole particle is abnormal).
    observed_normal: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return dataclasses.asdict(self)


@dataclass
class FieldOfView:
    """One simulated field of view: geometry, per-pixel chemistry and ground truth.

    Attributes
    ----------
    labels : int32 (ny, nx)
        0 = background, particles 1..n.
    thickness_um : float32 (ny, nx)
    soc : float32 (ny, nx)
        Planted state of charge (0 pristine, 1 charged; NaN outside particles).
    reduction_shift_ev, wl_excess : float32 (ny, nx)
        Planted anomalies: edge shift toward reduced Co (eV) and white-line height excess.
    anomalous_mask : bool (ny, nx)
        Pixels with planted abnormal chemistry.
    particles : list of ParticleTruth
    seed, pixel_size_um, stage_xy_um, index :
        Provenance and position in a survey.
    """

    labels: np.ndarray
    thickness_um: np.ndarray
    soc: np.ndarray
    reduction_shift_ev: np.ndarray
    wl_excess: np.ndarray
    anomalous_mask: np.ndarray
    particles: list[ParticleTruth]
    seed: int
    pixel_size_um: float
    stage_xy_um: tuple[float, float] = (0.0, 0.0)
    index: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.labels.shape)

    @functools.cached_property
    def pixels(self) -> np.ndarray:
        """Flat indices of the particle pixels."""
        return np.flatnonzero(self.labels.reshape(-1))

    def _flat(self, image: np.ndarray) -> np.ndarray:
        return image.reshape(-1)[self.pixels].astype(np.float64)

    @functools.cached_property
    def params(self) -> dict[str, np.ndarray]:
        """:func:`sim.spectra.normalized_mu` parameters of the particle pixels (``pixels``)."""
        return recipe_params(
            self._flat(self.soc), self._flat(self.reduction_shift_ev), self._flat(self.wl_excess)
        )

    @functools.cached_property
    def _observed(self) -> dict[str, np.ndarray]:
        soc = self._flat(self.soc)
        shift = self._flat(self.reduction_shift_ev)
        excess = self._flat(self.wl_excess)
        maps = {k: np.full(self.labels.size, np.nan, np.float32) for k in FEATURES}
        # The recipe is piecewise constant in (shift, excess); interpolate features along soc.
        pairs, inverse = np.unique(np.column_stack([shift, excess]), axis=0, return_inverse=True)
        for j, (sh, ex) in enumerate(pairs):
            sel = inverse.reshape(-1) == j
            table = features_of(_SOC_GRID, sh, ex)
            for k in FEATURES:
                maps[k][self.pixels[sel]] = np.interp(soc[sel], _SOC_GRID, table[k])
        return {k: v.reshape(self.shape) for k, v in maps.items()}

    def observed_maps(self) -> dict[str, np.ndarray]:
        """Per-pixel observable attributes of the noiseless model, NaN outside particles.

        ``e0_half``, ``white_line_energy`` (eV) and ``white_line_height`` (edge steps): what an
        ideal analysis of this field measures (0.05 eV model grid, interpolated along the state of
        charge to better than 0.01 eV).
        """
        return self._observed

    @property
    def e0_map(self) -> np.ndarray:
        """Observable half-jump edge energy (eV) per pixel, float32, NaN outside particles."""
        return self._observed["e0_half"]

    @property
    def wl_energy_map(self) -> np.ndarray:
        """Observable white-line energy (eV) per pixel, float32, NaN outside particles."""
        return self._observed["white_line_energy"]

    @property
    def wl_height_map(self) -> np.ndarray:
        """Observable white-line height (normalised mu) per pixel, NaN outside particles."""
        return self._observed["white_line_height"]

    def particle_mask(self, particle_id: int, *, anomalous_only: bool = False) -> np.ndarray:
        """Boolean image of particle ``particle_id`` (only its abnormal pixels if asked)."""
        mask = self.labels == particle_id
        return mask & self.anomalous_mask if anomalous_only else mask

    def param_map(self, name: str) -> np.ndarray:
        """Planted model parameter ``name`` (e.g. ``"e0"``) as an image, NaN outside particles."""
        if name not in self.params or name == "post_coeffs":
            raise KeyError(f"no scalar parameter {name!r}; have {sorted(self.params)}")
        out = np.full(self.labels.size, np.nan, dtype=np.float32)
        out[self.pixels] = self.params[name]
        return out.reshape(self.shape)

    @functools.cached_property
    def _soc_table_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Recipe groups and each pixel's position on the state-of-charge table."""
        soc = np.clip(self._flat(self.soc), 0.0, 1.0) * _SOC_TABLE_STEPS
        idx = np.minimum(soc.astype(np.intp), _SOC_TABLE_STEPS - 1)
        frac = soc - idx
        recipe = np.column_stack([self._flat(self.reduction_shift_ev), self._flat(self.wl_excess)])
        pairs, inverse = np.unique(recipe, axis=0, return_inverse=True)
        return pairs, inverse.reshape(-1), idx, frac

    def normalized_mu(self, energies_ev, *, exact: bool = False) -> np.ndarray:
        """Noiseless normalised spectra of the particle pixels, ``(n_energies, n_pixels)``.

        By default the spectra are evaluated on a 0.001 state-of-charge table per planted recipe
        and interpolated linearly (error below 1e-6, about 20 times faster on large fields);
        ``exact=True`` evaluates :func:`sim.spectra.normalized_mu` for every pixel.
        """
        energies = np.atleast_1d(np.asarray(energies_ev, dtype=np.float64))
        if exact:
            return spectra.normalized_mu(energies, **self.params, dtype=np.float64)
        pairs, inverse, idx, frac = self._soc_table_index
        grid = np.linspace(0.0, 1.0, _SOC_TABLE_STEPS + 1)
        out = np.empty((energies.size, self.pixels.size))
        for j, (shift, excess) in enumerate(pairs):
            sel = np.flatnonzero(inverse == j)
            table = spectra.normalized_mu(
                energies, **recipe_params(grid, shift, excess), dtype=np.float64
            )
            i, w = idx[sel], frac[sel]
            out[:, sel] = table[:, i] * (1.0 - w) + table[:, i + 1] * w
        return out

    def od(self, energies_ev) -> np.ndarray:
        """Noiseless optical density, shape ``(n_energies, ny, nx)`` float32.

        ``OD = t * (background(E) + jump(E) * mu_norm(E))`` with the LiCoO2 attenuation of
        :func:`sim.spectra.licoo2_mu_per_um`; zero outside particles.
        """
        energies = np.atleast_1d(np.asarray(energies_ev, dtype=np.float64))
        background, jump = spectra.licoo2_mu_per_um(energies)
        t = self._flat(self.thickness_um)
        out = np.zeros((energies.size, self.labels.size), dtype=np.float32)
        mu = self.normalized_mu(energies)
        out[:, self.pixels] = t * (background[:, None] + jump[:, None] * mu)
        return out.reshape((energies.size, *self.shape))

    def edge_jump_od(self) -> np.ndarray:
        """Edge jump in OD (at 7730 eV) per pixel, float32 (ny, nx)."""
        _, jump = spectra.licoo2_mu_per_um(np.array([7730.0]))
        return (self.thickness_um * np.float32(jump[0])).astype(np.float32)

    def population(self) -> dict[str, float]:
        """Median observable attributes over all normal particle pixels of this field."""
        normal = (self.labels > 0) & ~self.anomalous_mask
        if not normal.any():
            return {}
        return {k: float(np.median(v[normal])) for k, v in self._observed.items()}

    def truth(self) -> dict:
        """Everything needed to score detections, JSON-able (labels run-length encoded).

        ``labels_rle`` is a list of ``[label, count]`` runs over the C-ordered frame; decode with
        :func:`sim.truth.decode_labels`.
        """
        flat = self.labels.reshape(-1)
        starts = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1])
        counts = np.diff(np.concatenate([starts, [flat.size]]))
        return {
            "index": self.index,
            "seed": self.seed,
            "shape": list(self.shape),
            "pixel_size_um": self.pixel_size_um,
            "stage_xy_um": list(self.stage_xy_um),
            "n_particles": len(self.particles),
            "anomalous_particles": [p.id for p in self.particles if p.kind != "normal"],
            "population": self.population(),
            "particles": [p.to_dict() for p in self.particles],
            "labels_rle": [[int(v), int(c)] for v, c in zip(flat[starts], counts, strict=True)],
        }
