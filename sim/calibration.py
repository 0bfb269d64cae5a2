"""Fit :class:`sim.spectra.ReferenceState` parameters to a measured normalised spectrum.

This is how :data:`sim.spectra.PRISTINE` and :data:`sim.spectra.CHARGED` were obtained from the
measured LiCoO2 TXM standards (which are not part of this project; ``tests/sim/test_calibration.py``
reads them from ``../shared/data`` and checks the frozen constants still reproduce them).

The fit is a variable projection: the edge position and widths are non-linear parameters; the
white-line, pre-edge and shoulder amplitudes and the post-edge B-spline coefficients are solved by
ridge-regularised linear least squares at each step. Soft penalties pull the model's half-jump
energy and white-line energy/height onto the measured ones, because those are the attributes the
analysis extracts and the noisy spectra alone do not pin them down to 0.1 eV.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from sim import spectra

__all__ = ["fit_reference_states"]

logger = logging.getLogger(__name__)

_NONLINEAR = (
    "e0",
    "edge_width",
    "wl_energy",
    "wl_width",
    "pre_edge_offset",
    "pre_edge_width",
    "shoulder_offset",
    "shoulder_width",
)
_LOWER = np.array([7712.0, 0.3, 7722.0, 0.8, -20.0, 0.8, -10.0, 0.8])
_UPPER = np.array([7735.0, 6.0, 7738.0, 6.0, -8.0, 5.0, -1.0, 5.0])


def _columns(e: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge step and the linear design matrix for non-linear parameters ``q``."""
    e0, w, wle, wlw, pre_off, pre_w, sh_off, sh_w = q
    step = 0.5 + np.arctan((e - e0) / w) / np.pi
    k = np.sqrt(spectra.ETOK * np.clip(e - e0, 0.0, None))[:, None]
    post = spectra._post_edge(k, np.eye(spectra.N_POST))
    cols = [
        spectra._gauss(e, wle, wlw),
        spectra._gauss(e, e0 + pre_off, pre_w),
        spectra._gauss(e, e0 + sh_off, sh_w),
    ]
    return step, np.column_stack([*cols, post])


def _solve(e, mu, q, ridge):
    step, a = _columns(e, q)
    reg = np.sqrt(ridge) * np.eye(a.shape[1])
    reg[:3, :3] = 0.0
    lhs = np.vstack([a, reg])
    rhs = np.concatenate([mu - step, np.zeros(a.shape[1])])
    coef, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
    return coef


def _state(name: str, q: np.ndarray, coef: np.ndarray) -> spectra.ReferenceState:
    """Build a state from non-linear parameters ``q`` and linear coefficients ``coef``."""
    values = dict(zip(_NONLINEAR, (float(v) for v in q), strict=True))
    wl_amp, pre_h, sh_h, *post = (float(c) for c in coef)
    provisional = spectra.ReferenceState(
        name=name,
        wl_height=0.0,
        pre_edge_height=pre_h,
        shoulder_height=sh_h,
        post_coeffs=tuple(post),
        **values,
    )
    # wl_height is the total mu at wl_energy: the baseline there plus the white-line amplitude.
    p = {k: np.asarray(v, float).reshape(1, -1) for k, v in provisional.params().items()}
    p["post_coeffs"] = np.asarray(post, float).reshape(-1, 1)
    p["post_scale"] = np.ones((1, 1))
    baseline = spectra._baseline(p["wl_energy"], p)
    return dataclasses.replace(provisional, wl_height=float(baseline[0, 0]) + wl_amp)


def fit_reference_states(
    measured: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    initial: dict[str, spectra.ReferenceState] | None = None,
    ridge: float = 0.02,
    feature_weight: float = 1.0,
) -> dict[str, spectra.ReferenceState]:
    """Fit the parametric model jointly to several measured normalised spectra.

    The widths and the pre-edge/shoulder offsets are shared by all states, so that states differ
    only in edge position, white line and amplitudes; interpolating between them (state of charge)
    then moves every feature monotonically.

    Parameters
    ----------
    measured : dict
        ``name -> (energies_ev, mu)``, each a 1-D measured normalised spectrum.
    initial : dict, optional
        ``name -> ReferenceState`` starting points (default :data:`sim.spectra.PRISTINE` for
        every state); the shared parameters start from the first state's.
    ridge : float
        Ridge penalty on the post-edge coefficients (keeps them smooth against noise).
    feature_weight : float
        Weight of the soft penalties matching half-jump energy, white-line energy and height.

    Returns
    -------
    dict
        ``name -> ReferenceState``.
    """
    from scipy.optimize import least_squares

    names = list(measured)
    data = []
    for name in names:
        e = np.asarray(measured[name][0], dtype=np.float64)
        m = np.asarray(measured[name][1], dtype=np.float64)
        if e.shape != m.shape or e.ndim != 1:
            raise ValueError(f"{name}: energies and mu must be 1-D of equal length")
        data.append((e, m, spectra.spectrum_features(e, m), np.arange(e.min(), e.max(), 0.05)))
    shared = [2, 3, 4, 5, 6, 7]  # indices into _NONLINEAR of the shared parameters (widths...)

    def unpack(x):
        qs = []
        for i in range(len(names)):
            q = np.empty(len(_NONLINEAR))
            q[[0, 2]] = x[2 * i : 2 * i + 2]
            q[[1, *shared[1:]]] = x[2 * len(names) :]
            qs.append(q)
        return qs

    def residuals(x):
        out = []
        for q, (e, m, target, fine) in zip(unpack(x), data, strict=True):
            coef = _solve(e, m, q, ridge)
            step, a = _columns(e, q)
            fs, fa = _columns(fine, q)
            feats = spectra.spectrum_features(fine, fs + fa @ coef)
            pen = feature_weight * np.array(
                [
                    (feats["e0_half"] - target["e0_half"]) / 0.05,
                    (feats["white_line_energy"] - target["white_line_energy"]) / 0.1,
                    (feats["white_line_height"] - target["white_line_height"]) / 0.01,
                ]
            )
            out += [step + a @ coef - m, 0.05 * pen]
        return np.concatenate(out)

    initial = initial or {}
    q0 = [
        np.clip(
            np.array([getattr(initial.get(n, spectra.PRISTINE), k) for k in _NONLINEAR]),
            _LOWER + 1e-6,
            _UPPER - 1e-6,
        )
        for n in names
    ]
    x0 = np.concatenate([*(q[[0, 2]] for q in q0), q0[0][[1, 3, 4, 5, 6, 7]]])
    lower = np.concatenate([np.tile(_LOWER[[0, 2]], len(names)), _LOWER[[1, 3, 4, 5, 6, 7]]])
    upper = np.concatenate([np.tile(_UPPER[[0, 2]], len(names)), _UPPER[[1, 3, 4, 5, 6, 7]]])
    fit = least_squares(residuals, x0, bounds=(lower, upper), x_scale="jac")
    logger.info("joint fit of %s: cost %.4g, %d evaluations", names, fit.cost, fit.nfev)
    return {
        name: _state(name, q, _solve(e, m, q, ridge))
        for name, q, (e, m, _, _) in zip(names, unpack(fit.x), data, strict=True)
    }
