"""Observable edge and white-line attributes of normalised spectra (model ground truth).

:func:`spectrum_features` measures what an analysis of a normalised Co K-edge spectrum reports
(half-jump energy, white-line energy and height), so that the parameters of
:mod:`sim.spectra` (whose ``e0`` is the centre of the arctangent step, not an observable) can be
compared with what the analysis finds. Evaluate the model on a fine grid first.

>>> import numpy as np
>>> from sim.spectra import PRISTINE
>>> e = np.arange(7700.0, 7760.0, 0.05)
>>> f = spectrum_features(e, PRISTINE.mu(e))
>>> bool(7718 < f["e0_half"] < 7726 and 7725 < f["white_line_energy"] < 7730)
True
"""

from __future__ import annotations

import numpy as np

__all__ = ["spectrum_features"]


def spectrum_features(energies_ev: np.ndarray, mu: np.ndarray) -> dict[str, np.ndarray]:
    """Half-jump energy and white-line energy/height of normalised spectra.

    The half-jump energy is the first crossing of 0.5 (linear interpolation); the white line is the
    maximum refined by a parabola through its two neighbours. For ground truth, evaluate the model
    on a fine grid (for example 0.05 eV steps) before calling this.

    Parameters
    ----------
    energies_ev : ndarray, shape (n_energies,)
    mu : ndarray, shape (n_energies,) or (n_energies, n)

    Returns
    -------
    dict with ``e0_half``, ``white_line_energy``, ``white_line_height`` (floats or ``(n,)``).
    """
    e = np.asarray(energies_ev, dtype=np.float64)
    m = np.asarray(mu, dtype=np.float64)
    squeeze = m.ndim == 1
    m = m.reshape(e.size, -1)
    cols = np.arange(m.shape[1])
    above = m >= 0.5
    i = np.clip(np.argmax(above, axis=0), 1, e.size - 1)
    m0, m1 = m[i - 1, cols], m[i, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        e_half = e[i - 1] + (0.5 - m0) * (e[i] - e[i - 1]) / (m1 - m0)
    e_half = np.where(above.any(axis=0), e_half, np.nan)
    j = np.clip(np.argmax(m, axis=0), 1, e.size - 2)
    ym, y0, yp = m[j - 1, cols], m[j, cols], m[j + 1, cols]
    denom = ym - 2.0 * y0 + yp
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < 0, 0.5 * (ym - yp) / denom, 0.0)
    off = np.clip(off, -0.5, 0.5)
    step = np.where(off >= 0, e[j + 1] - e[j], e[j] - e[j - 1])
    wl_e = e[j] + off * step
    wl_h = y0 - 0.25 * (ym - yp) * off
    out = {"e0_half": e_half, "white_line_energy": wl_e, "white_line_height": wl_h}
    return {k: (float(v[0]) if squeeze else v) for k, v in out.items()}
