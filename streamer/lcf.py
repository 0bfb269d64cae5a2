"""Non-negative linear-combination fits of many spectra to a few references, vectorised.

For ``K`` references (columns of ``R``) and one spectrum ``y`` the non-negative least-squares
solution is the unconstrained least-squares solution on its support. With few references we can
therefore solve *every* support at once for all pixels: for each non-empty subset ``S`` of the
references, ``w_S = G_S^-1 b_S`` with ``G = R^T R`` and ``b = R^T y``; a subset is feasible when
``w_S >= 0``, and among feasible subsets the optimum maximises the explained sum of squares
``b_S . w_S`` (equivalently minimises the residual). Only ``b`` (``K`` numbers per pixel) is
needed, so the cost is one small matrix product plus ``2**K`` tiny solves per pixel.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_REFERENCES", "ReferenceSet", "nnls_all_subsets", "reference_set"]

#: Subset enumeration costs 2**K solves per pixel: keep K small.
MAX_REFERENCES = 6


@dataclass(frozen=True, eq=False)
class ReferenceSet:
    """References interpolated onto a grid window, with their subset solves precomputed."""

    names: tuple[str, ...]
    #: Rows of the grid covered by the fit.
    rows: slice
    #: Reference spectra on those rows, shape (K, n_rows), float64.
    spectra: np.ndarray
    #: Gram matrix ``spectra @ spectra.T``, shape (K, K).
    gram: np.ndarray
    #: For each non-empty subset: (indices, inverse Gram of the subset).
    subsets: tuple[tuple[np.ndarray, np.ndarray], ...]


def reference_set(
    energies_ev: np.ndarray, references: Mapping[str, tuple[np.ndarray, np.ndarray]], *, rows: slice
) -> ReferenceSet:
    """Interpolate references onto ``energies_ev[rows]`` and precompute the subset solves.

    Parameters
    ----------
    energies_ev : ndarray
        The grid (eV).
    references : mapping
        ``name -> (energies_ev, normalised_mu)`` of each reference spectrum; must cover the rows.
    rows : slice
        Rows of the grid to fit.

    Raises
    ------
    ValueError
        For too many references, a reference that does not cover the fit range, or references
        that are linearly dependent on the fit range.
    """
    names = tuple(references)
    if not 1 <= len(names) <= MAX_REFERENCES:
        raise ValueError(f"give 1 to {MAX_REFERENCES} references, got {len(names)}")
    e = np.asarray(energies_ev, dtype=np.float64)[rows]
    if e.size < len(names) + 1:
        raise ValueError("too few energies in the linear-combination range for the references")
    spectra = []
    for name in names:
        re, rmu = (np.asarray(a, dtype=np.float64) for a in references[name])
        if re.ndim != 1 or re.shape != rmu.shape:
            raise ValueError(f"reference {name!r} must be (energies, mu) of equal 1-D shapes")
        order = np.argsort(re)
        re, rmu = re[order], rmu[order]
        if re[0] > e[0] + 1e-6 or re[-1] < e[-1] - 1e-6:
            raise ValueError(
                f"reference {name!r} covers {re[0]:.1f}-{re[-1]:.1f} eV, "
                f"the fit needs {e[0]:.1f}-{e[-1]:.1f} eV"
            )
        spectra.append(np.interp(e, re, rmu))
    spectra = np.array(spectra)
    gram = spectra @ spectra.T
    if np.linalg.cond(gram) > 1e10:
        raise ValueError("the references are linearly dependent on the fit range")
    subsets = []
    for size in range(1, len(names) + 1):
        for combo in itertools.combinations(range(len(names)), size):
            idx = np.array(combo)
            subsets.append((idx, np.linalg.inv(gram[np.ix_(idx, idx)])))
    return ReferenceSet(names, rows, spectra, gram, tuple(subsets))


def nnls_all_subsets(refs: ReferenceSet, b: np.ndarray) -> np.ndarray:
    """Non-negative least-squares weights from the projections ``b = spectra @ y``.

    Parameters
    ----------
    refs : ReferenceSet
    b : ndarray, shape (K, n)
        Projections of ``n`` spectra onto the references.

    Returns
    -------
    ndarray, shape (K, n), same float dtype as ``b``
        Weights ``>= 0``; columns of ``b`` with NaN give NaN.

    Examples
    --------
    >>> e = np.linspace(0.0, 1.0, 50)
    >>> refs = reference_set(e, {"a": (e, e), "b": (e, 1 - e)}, rows=slice(0, 50))
    >>> y = np.stack([0.3 * e + 0.7 * (1 - e), 2.0 * e - 0.2 * (1 - e)], axis=1)
    >>> np.round(nnls_all_subsets(refs, refs.spectra @ y), 3).tolist()
    [[0.3, 1.903], [0.7, 0.0]]
    """
    b = np.asarray(b)
    k, n = b.shape
    best = np.zeros((k, n), dtype=b.dtype)
    best_score = np.zeros(n, dtype=b.dtype)  # the empty support explains nothing
    tol = -1e-7
    for idx, inv in refs.subsets:
        bs = b[idx]
        w = inv.astype(b.dtype) @ bs
        score = np.einsum("ij,ij->j", w, bs)
        take = np.all(w >= tol, axis=0) & (score > best_score)
        if not take.any():
            continue
        best_score = np.where(take, score, best_score)
        best[:, take] = 0.0
        best[np.ix_(idx, np.flatnonzero(take))] = np.maximum(w[:, take], 0.0)
    best[:, ~np.all(np.isfinite(b), axis=0)] = np.nan
    return best
