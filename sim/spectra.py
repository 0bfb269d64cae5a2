"""Parametric Co K-edge XANES of LiCoO2: the model and its reference states.

The normalised absorption ``mu(E)`` (pre-edge 0, edge step 1) is a sum of

* an arctangent edge step centred at ``e0`` with half width ``edge_width``;
* a weak Gaussian pre-edge peak (1s -> 3d) and a Gaussian shoulder on the rising edge, placed at
  fixed offsets from ``e0``;
* a Gaussian white line at ``wl_energy`` whose amplitude is chosen so that the total ``mu`` at
  ``wl_energy`` equals ``wl_height``;
* post-edge structure: a uniform cubic B-spline in photoelectron wavenumber
  ``k = sqrt(0.2625 (E - e0))`` (1/angstrom), so features spread out with energy as in real XAFS.

All shape parameters broadcast over pixels, so one call returns ``(n_energies, n_pixels)``.
:data:`PRISTINE` and :data:`CHARGED` were fitted to the measured LiCoO2 TXM standards (see
:mod:`sim.calibration` and ``tests/sim/test_calibration.py``); :data:`REDUCED` (toward CoO) has no
measured standard here and is a documented assumption.

Two neighbouring concepts live in their own modules and are re-exported here: the absolute
absorption for a thickness, :func:`licoo2_mu_per_um` (:mod:`sim.absorption`, xraydb's Elam
tables), and the observable edge and white-line attributes of a spectrum,
:func:`spectrum_features` (:mod:`sim.spectrum_features`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from sim.absorption import LICOO2_DENSITY_G_CM3, licoo2_mu_per_um
from sim.spectrum_features import spectrum_features

__all__ = [
    "CHARGED",
    "LICOO2_DENSITY_G_CM3",
    "PRISTINE",
    "REDUCED",
    "SEED_ENERGIES_EV",
    "ReferenceState",
    "interpolate_states",
    "licoo2_mu_per_um",
    "normalized_mu",
    "spectrum_features",
    "state_params",
]

logger = logging.getLogger(__name__)

#: The seed study's 106-point grid (eV): 10 eV steps 7562.4-7702.4, 1 eV to 7772.4, 10 eV to 7982.4.
SEED_ENERGIES_EV: np.ndarray = np.round(
    np.concatenate(
        [
            7562.4 + 10.0 * np.arange(15),
            7703.4 + 1.0 * np.arange(70),
            7782.4 + 10.0 * np.arange(21),
        ]
    ),
    1,
)
SEED_ENERGIES_EV.setflags(write=False)

#: eV -> (1/angstrom)^2 for the photoelectron wavenumber, k^2 = ETOK * (E - e0).
ETOK = 0.2625
#: Post-edge B-spline knots in k: centre of the first basis function and spacing (1/angstrom).
POST_K0 = 1.5
POST_DK = 0.5
N_POST = 15


@dataclass(frozen=True)
class ReferenceState:
    """Parameters of one reference Co K-edge spectrum (energies in eV, heights in edge steps).

    ``e0`` is the centre of the arctangent step, not the half-jump energy that an analysis
    measures; use :func:`spectrum_features` for the observable edge and white-line attributes.
    """

    name: str
    e0: float
    edge_width: float
    wl_energy: float
    wl_height: float
    wl_width: float
    pre_edge_offset: float
    pre_edge_width: float
    pre_edge_height: float
    shoulder_offset: float
    shoulder_width: float
    shoulder_height: float
    post_coeffs: tuple[float, ...]

    def params(self) -> dict[str, float | np.ndarray]:
        """Keyword arguments of :func:`normalized_mu` for this state."""
        out: dict[str, float | np.ndarray] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"
        }
        out["post_coeffs"] = np.asarray(self.post_coeffs, dtype=np.float64)
        return out

    def mu(self, energies_ev: np.ndarray) -> np.ndarray:
        """Normalised mu of this state on ``energies_ev``, shape ``(n_energies,)`` float64."""
        return normalized_mu(energies_ev, **self.params(), dtype=np.float64)


# Fitted jointly by sim.calibration.fit_reference_states to the measured LiCoO2 TXM standards in
# ../shared/data/co-k-edge (tests/sim/test_calibration.py re-checks them); widths shared.
PRISTINE = ReferenceState(
    name="pristine",
    e0=7722.4329,
    edge_width=1.3234,
    wl_energy=7727.3996,
    wl_height=1.5896,
    wl_width=1.4403,
    pre_edge_offset=-12.16,
    pre_edge_width=1.8471,
    pre_edge_height=0.0162,
    shoulder_offset=-3.0807,
    shoulder_width=1.5534,
    shoulder_height=0.1915,
    post_coeffs=(
        0.7146,
        -0.2236,
        0.2098,
        -0.3435,
        -0.247,
        0.2544,
        -0.0839,
        -0.0794,
        0.2254,
        -0.2738,
        0.0815,
        0.1029,
        -0.1881,
        0.1209,
        -0.0061,
    ),
)
CHARGED = ReferenceState(
    name="charged",
    e0=7723.3582,
    edge_width=1.3234,
    wl_energy=7730.1665,
    wl_height=1.9238,
    wl_width=1.4403,
    pre_edge_offset=-12.16,
    pre_edge_width=1.8471,
    pre_edge_height=0.0471,
    shoulder_offset=-3.0807,
    shoulder_width=1.5534,
    shoulder_height=0.1353,
    post_coeffs=(
        0.6601,
        -0.0648,
        0.2792,
        -0.3774,
        -0.2258,
        0.1216,
        0.035,
        0.163,
        0.0185,
        -0.1649,
        -0.0821,
        0.0114,
        -0.0385,
        0.1191,
        -0.0712,
    ),
)
# No measured reduced standard is available: toward CoO (Co2+), the edge about 6 eV lower than
# pristine LiCoO2 and a weaker, broader white line about 4 eV lower (an assumption, documented).
REDUCED = dataclasses.replace(
    PRISTINE,
    name="reduced",
    e0=PRISTINE.e0 - 6.0,
    wl_energy=PRISTINE.wl_energy - 4.0,
    wl_height=1.45,
    wl_width=1.9,
    pre_edge_height=0.03,
)


def _bspline3(x: np.ndarray) -> np.ndarray:
    """Uniform cubic B-spline kernel, support ``(-2, 2)``."""
    a = np.abs(x)
    return np.where(
        a < 1.0, (4.0 - 6.0 * a**2 + 3.0 * a**3) / 6.0, np.where(a < 2.0, (2.0 - a) ** 3 / 6.0, 0.0)
    )


def _post_edge(k: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Post-edge B-spline at wavenumbers ``k`` (nE, n) with ``coeffs`` (N_POST, n or 1)."""
    t = (k - POST_K0) / POST_DK
    base = np.floor(t).astype(np.intp)
    padded = np.concatenate(
        [np.zeros((2, coeffs.shape[1])), coeffs, np.zeros((3, coeffs.shape[1]))], axis=0
    )
    cols = np.arange(coeffs.shape[1]) if coeffs.shape[1] > 1 else np.zeros(1, dtype=np.intp)
    out = np.zeros(np.broadcast_shapes(k.shape, (1, coeffs.shape[1])))
    for j in range(-1, 3):
        idx = np.clip(base + j, -2, N_POST + 2) + 2
        out += padded[idx, cols] * _bspline3(t - (base + j))
    return out


def _gauss(e: np.ndarray, centre: np.ndarray, width: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * ((e - centre) / width) ** 2)


def _baseline(e, p) -> np.ndarray:
    """Everything except the white line, for energies ``e`` broadcast against params ``p``."""
    step = 0.5 + np.arctan((e - p["e0"]) / p["edge_width"]) / np.pi
    pre = p["pre_edge_height"] * _gauss(e, p["e0"] + p["pre_edge_offset"], p["pre_edge_width"])
    shoulder = p["shoulder_height"] * _gauss(e, p["e0"] + p["shoulder_offset"], p["shoulder_width"])
    k = np.sqrt(ETOK * np.clip(e - p["e0"], 0.0, None))
    post = p["post_scale"] * _post_edge(k, p["post_coeffs"])
    return step + pre + shoulder + post


def normalized_mu(
    energies_ev: np.ndarray,
    *,
    e0,
    wl_energy,
    wl_height,
    edge_width=PRISTINE.edge_width,
    wl_width=PRISTINE.wl_width,
    pre_edge_offset=PRISTINE.pre_edge_offset,
    pre_edge_width=PRISTINE.pre_edge_width,
    pre_edge_height=PRISTINE.pre_edge_height,
    shoulder_offset=PRISTINE.shoulder_offset,
    shoulder_width=PRISTINE.shoulder_width,
    shoulder_height=PRISTINE.shoulder_height,
    post_coeffs=None,
    post_scale=1.0,
    dtype=np.float32,
) -> np.ndarray:
    """Normalised Co K-edge absorption, vectorised over pixels.

    Parameters
    ----------
    energies_ev : array_like, shape (n_energies,)
        Photon energies in eV.
    e0, wl_energy, wl_height, edge_width, wl_width, pre_edge_*, shoulder_*, post_scale : \
float or ndarray
        Shape parameters (see the module docstring); scalars or arrays broadcastable to a common
        pixel shape ``S`` (typically ``(n_pixels,)``).
    post_coeffs : ndarray, shape (15,) or (15, *S), optional
        Post-edge B-spline coefficients; default :data:`PRISTINE`'s.
    dtype : numpy dtype
        Output dtype (float32 by default).

    Returns
    -------
    ndarray, shape (n_energies, *S)

    Examples
    --------
    >>> mu = normalized_mu(SEED_ENERGIES_EV, e0=[7725.0, 7720.0], wl_energy=7728.3, wl_height=1.6)
    >>> mu.shape, mu.dtype.name
    ((106, 2), 'float32')
    >>> bool(abs(mu[0, 0]) < 0.05 and mu[-1, 0] > 0.7)
    True
    """
    energies = np.asarray(energies_ev, dtype=np.float64)
    if energies.ndim != 1:
        raise ValueError(f"energies_ev must be 1-D, got shape {energies.shape}")
    scalars = {
        "e0": e0,
        "wl_energy": wl_energy,
        "wl_height": wl_height,
        "edge_width": edge_width,
        "wl_width": wl_width,
        "pre_edge_offset": pre_edge_offset,
        "pre_edge_width": pre_edge_width,
        "pre_edge_height": pre_edge_height,
        "shoulder_offset": shoulder_offset,
        "shoulder_width": shoulder_width,
        "shoulder_height": shoulder_height,
        "post_scale": post_scale,
    }
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in scalars.values()))
    shape = arrays[0].shape
    p = {name: a.reshape(1, -1) for name, a in zip(scalars, arrays, strict=True)}
    n = p["e0"].shape[1]
    coeffs = np.asarray(PRISTINE.post_coeffs if post_coeffs is None else post_coeffs, float)
    if coeffs.shape[0] != N_POST:
        raise ValueError(f"post_coeffs must have {N_POST} rows, got shape {coeffs.shape}")
    p["post_coeffs"] = (
        coeffs.reshape(N_POST, 1)
        if coeffs.ndim == 1
        else np.broadcast_to(coeffs.reshape(N_POST, -1), (N_POST, n))
    )
    if np.any(p["edge_width"] <= 0) or np.any(p["wl_width"] <= 0):
        raise ValueError("edge_width and wl_width must be positive")
    amp = p["wl_height"] - _baseline(p["wl_energy"], p)
    mu = _baseline(energies[:, None], p) + amp * _gauss(
        energies[:, None], p["wl_energy"], p["wl_width"]
    )
    return mu.reshape((energies.size, *shape)).astype(dtype, copy=False)


def interpolate_states(a: ReferenceState, b: ReferenceState, fraction) -> dict[str, np.ndarray]:
    """Parameters moving linearly from state ``a`` (fraction 0) to ``b`` (fraction 1).

    ``fraction`` may be an array of shape ``(n,)``; scalar parameters come back with shape
    ``(n,)`` and ``post_coeffs`` with shape ``(15, n)``. Interpolating parameters (rather than
    mixing two spectra) gives the continuous edge shifts seen in per-pixel maps of real particles.
    """
    f = np.atleast_1d(np.asarray(fraction, dtype=np.float64))
    pa, pb = a.params(), b.params()
    out = {}
    for name, va in pa.items():
        vb = pb[name]
        if name == "post_coeffs":
            out[name] = va[:, None] * (1.0 - f) + vb[:, None] * f
        else:
            out[name] = va * (1.0 - f) + vb * f
    return out


def state_params(soc, *, reduction=0.0) -> dict[str, np.ndarray]:
    """Per-pixel parameters for a state of charge and an optional reduction toward CoO.

    Parameters
    ----------
    soc : float or ndarray, shape (n,)
        0 = :data:`PRISTINE`, 1 = :data:`CHARGED` (4.9 V); values in between interpolate.
    reduction : float or ndarray, shape (n,)
        0 = no reduction, 1 = fully :data:`REDUCED`; applied after the state of charge.

    Returns
    -------
    dict
        Keyword arguments for :func:`normalized_mu`, arrays of shape ``(n,)`` (``post_coeffs``
        ``(15, n)``).
    """
    soc = np.atleast_1d(np.asarray(soc, dtype=np.float64))
    red = np.broadcast_to(np.asarray(reduction, dtype=np.float64), soc.shape)
    base = interpolate_states(PRISTINE, CHARGED, soc)
    if not np.any(red):
        return base
    target = REDUCED.params()
    out = {}
    for name, v in base.items():
        t = target[name]
        out[name] = v * (1.0 - red) + (t[:, None] if name == "post_coeffs" else t) * red
    return out
