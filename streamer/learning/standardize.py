"""Standardisation of per-pixel attributes with running campaign statistics.

:class:`RunningScaler` keeps, per attribute, a location and a scale over every valid pixel seen so
far in the campaign, and turns attributes into z-scores (clipped, so that one absurd value cannot
dominate a distance). Two estimators:

``"robust"`` (default)
    median and 1.4826 x MAD of a seeded reservoir sample (Vitter's algorithm R, vectorised) of at
    most ``capacity`` pixels: a streaming quantile sketch with exact quantiles of a uniform sample
    of the campaign, O(capacity) memory, a few ms per 250k-pixel field.
``"mean"``
    Welford / Chan running mean and standard deviation (exact, O(1) memory).

Measured on the seed study's real maps (three particles, six attributes, streamed per field with
the authors' weights, 4 clusters; ``tests/streamer/test_learning_seed.py``), robust scaling is the
better default: with the maps' zero sentinels left in, adjusted Rand index 0.61 (robust) against
0.44 (mean/sd); without them both reach 0.64. One sentinel-valued pixel in a thousand inflates a
standard deviation by orders of magnitude, a MAD not at all.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> scaler = RunningScaler(2, seed=0)
>>> x = rng.normal([7722.0, 1.7], [0.5, 0.05], size=(5000, 2))
>>> x[:5] = 0.0  # a few sentinel values
>>> _ = scaler.update(x)
>>> np.round(scaler.center_, 1).tolist(), np.round(scaler.scale_, 2).tolist()
([7722.0, 1.7], [0.51, 0.05])
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

__all__ = ["RunningScaler"]

logger = logging.getLogger(__name__)

_MAD_TO_SD = 1.482602218505602


class RunningScaler:
    """Running per-column location and scale of a stream of row batches.

    Parameters
    ----------
    n_features : int
        Number of columns.
    method : {"robust", "mean"}
        Median/MAD of a reservoir sample, or Welford mean/standard deviation.
    capacity : int
        Reservoir size (``"robust"``).
    clip : float
        z-scores are clipped to ``[-clip, clip]`` by :meth:`transform`.
    seed : int
        Seed of the reservoir sampling.

    Attributes
    ----------
    center_, scale_ : ndarray (n_features,)
        Current location and scale (scale floored at a tiny positive value).
    n_seen_ : int
        Rows seen so far.
    """

    def __init__(
        self,
        n_features: int,
        *,
        method: str = "robust",
        capacity: int = 50_000,
        clip: float = 8.0,
        seed: int = 0,
    ) -> None:
        if method not in ("robust", "mean"):
            raise ValueError(f"method must be 'robust' or 'mean', got {method!r}")
        if n_features < 1 or capacity < 1 or clip <= 0:
            raise ValueError("n_features and capacity must be >= 1 and clip > 0")
        self.n_features = int(n_features)
        self.method = method
        self.capacity = int(capacity)
        self.clip = float(clip)
        self.seed = int(seed)
        self._rng = np.random.default_rng(seed)
        self.reservoir_ = np.empty((0, self.n_features), dtype=np.float64)
        self.n_seen_ = 0
        self.count_ = np.zeros(self.n_features)
        self.mean_ = np.zeros(self.n_features)
        self.m2_ = np.zeros(self.n_features)
        self.center_ = np.zeros(self.n_features)
        self.scale_ = np.ones(self.n_features)

    # -- learning ---------------------------------------------------------------------------
    def update(self, X: np.ndarray) -> RunningScaler:
        """Add a batch of rows (NaN allowed: ignored per column) and refresh the statistics."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {X.shape}")
        if X.shape[0] == 0:
            return self
        self._update_moments(X)
        self._update_reservoir(X)
        self.n_seen_ += X.shape[0]
        self._refresh()
        return self

    def _update_moments(self, X: np.ndarray) -> None:
        finite = np.isfinite(X)
        n_b = finite.sum(axis=0).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_b = np.where(n_b > 0, np.nansum(np.where(finite, X, 0), 0) / np.maximum(n_b, 1), 0)
            dev = np.where(finite, X - mean_b, 0.0)
        m2_b = (dev**2).sum(axis=0)
        n = self.count_ + n_b
        delta = mean_b - self.mean_
        safe = np.maximum(n, 1)
        self.mean_ = self.mean_ + delta * n_b / safe
        self.m2_ = self.m2_ + m2_b + delta**2 * self.count_ * n_b / safe
        self.count_ = n

    def _update_reservoir(self, X: np.ndarray) -> None:
        room = self.capacity - self.reservoir_.shape[0]
        take = min(room, X.shape[0])
        if take > 0:
            self.reservoir_ = np.vstack([self.reservoir_, X[:take]])
        rest = X[take:]
        if rest.shape[0] == 0:
            return
        # Algorithm R: row t (0-based over the stream) replaces slot j ~ U{0..t} when j < capacity.
        t = self.n_seen_ + take + np.arange(rest.shape[0])
        j = self._rng.integers(0, t + 1)
        keep = j < self.capacity
        self.reservoir_[j[keep]] = rest[keep]

    def _refresh(self) -> None:
        if self.method == "robust" and self.reservoir_.shape[0]:
            with warnings.catch_warnings():  # all-NaN columns: handled below
                warnings.simplefilter("ignore", RuntimeWarning)
                center = np.nanmedian(self.reservoir_, axis=0)
                scale = _MAD_TO_SD * np.nanmedian(np.abs(self.reservoir_ - center), axis=0)
        else:
            center = self.mean_.copy()
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.sqrt(self.m2_ / np.maximum(self.count_ - 1, 1))
        sd = np.sqrt(self.m2_ / np.maximum(self.count_ - 1, 1))
        bad = ~np.isfinite(scale) | (scale <= 1e-12)
        scale = np.where(bad, sd, scale)  # MAD of 0 (quantised values): fall back to sd
        bad = ~np.isfinite(scale) | (scale <= 1e-12)
        if np.any(bad & (self.count_ > 1)):
            logger.debug("constant columns %s: scale set to 1", np.flatnonzero(bad))
        self.scale_ = np.where(bad, 1.0, scale)
        self.center_ = np.where(np.isfinite(center), center, 0.0)

    # -- use --------------------------------------------------------------------------------
    def transform(self, X: np.ndarray) -> np.ndarray:
        """z-scores ``(X - center_) / scale_``, clipped to ``[-clip, clip]`` (NaN stays NaN)."""
        X = np.asarray(X, dtype=np.float64)
        return np.clip((X - self.center_) / self.scale_, -self.clip, self.clip)

    # -- checkpoint -------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able parameters and numeric arrays that rebuild this scaler exactly."""
        meta = {
            "n_features": self.n_features,
            "method": self.method,
            "capacity": self.capacity,
            "clip": self.clip,
            "seed": self.seed,
            "n_seen": int(self.n_seen_),
            "rng": self._rng.bit_generator.state,
        }
        arrays = {
            "reservoir": self.reservoir_,
            "count": self.count_,
            "mean": self.mean_,
            "m2": self.m2_,
        }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> RunningScaler:
        """Inverse of :meth:`state`."""
        self = cls(
            meta["n_features"],
            method=meta["method"],
            capacity=meta["capacity"],
            clip=meta["clip"],
            seed=meta["seed"],
        )
        self._rng.bit_generator.state = meta["rng"]
        self.n_seen_ = int(meta["n_seen"])
        self.reservoir_ = np.asarray(arrays["reservoir"], dtype=np.float64).reshape(
            -1, self.n_features
        )
        self.count_ = np.asarray(arrays["count"], dtype=np.float64)
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        self.m2_ = np.asarray(arrays["m2"], dtype=np.float64)
        if self.n_seen_:
            self._refresh()
        return self
