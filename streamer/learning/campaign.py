"""The campaign model: what the live analyzer learns across all fields of view of a beamtime.

:class:`CampaignModel` is the one object the analyzer talks to (``streamer.session``):

``observe_field(fov_key, attributes, valid)``
    Pixel level (:mod:`streamer.learning.pixel_model`): valid pixels standardised with running
    campaign statistics, weighted as in the seed study and clustered online. Returns a cluster
    map (``int16``, ``-1`` masked) and the field's :class:`NewClusterEvent` s.
``score_particles(fov_key, table, provisional=...)``
    Particle level (:mod:`streamer.learning.particle_scoring`): the table's particles against the
    population so far, their neighbours and the LiCoO2 prior. Learns nothing, so provisional
    values never leak into the model. Provisional values (scan still running) are biased alike
    for the whole field, so then the neighbours set the reference (``provisional_offset``).
    With ``early=True`` the table holds *early* values (:mod:`streamer.provisional`: edge jump on
    a fixed reference 12-20 eV past the edge, the post-edge still missing), compared like for
    like: with the neighbours, the campaign's record of early values of confirmed-normal
    particles (``early_population``) and an early prior, above a stricter ``early_threshold``.
``learn_particles(fov_key, table, early_table=None)``
    Once per field, at the end of its scan, with confirmed values. **Population rule**: the table
    is scored first and only reliable particles scoring at or below the threshold are learned;
    anomalous particles never enter the population (they would widen it and hide the next one),
    nor do unreliable ones (fit quality far off: fragments, failed fits); ``early_table`` (the
    field's early evaluation) adds the early values of the same particles (same id, similar
    area) to ``early_population``. A field key is learned once; repeats are ignored with a
    warning. The field's particle medians (all particles) go to the drift monitor
    (:mod:`streamer.learning.drift`).
``drift_events()``, ``save(path)``, ``CampaignModel.load(path)``
    Population drift events for ``data_quality`` alerts; a pickle-free checkpoint
    (:mod:`streamer.learning.checkpoint`). Scores are deterministic for a given sequence of calls
    and seed, and identical after a save/load round trip.

Seed-study check (real maps of three LiCoO2 particles, streamed particle by particle,
``tests/streamer/test_learning_seed.py``): adjusted Rand index 0.63 against the authors' k-means
labels; Hungarian-matched recall majority 0.82, low edge 0.95, very low edge 0.77, high white
line 0.97 (without the consolidation: high white line 0.11).

Examples
--------
>>> import numpy as np
>>> model = CampaignModel(seed=0)
>>> rng = np.random.default_rng(0)
>>> n = 4096
>>> attrs = {"e0_half": rng.normal(7722.3, 0.4, n),
...          "white_line_energy": rng.normal(7729, 0.5, n),
...          "white_line_height": rng.normal(1.7, 0.05, n),
...          "pre_edge_noise": rng.normal(0.01, 0.002, n),
...          "r_squared": rng.normal(0.99, 0.003, n)}
>>> result = model.observe_field("fov0", attrs, np.ones(n, bool))
>>> result.cluster_map.dtype, int(result.cluster_map.min()), result.new_clusters
(dtype('int16'), 0, [])
>>> table = [{"id": i, "area_px": 300, "e0_half_median": 7722.3 + 0.3 * rng.standard_normal(),
...           "white_line_energy_median": 7729.0 + 0.3 * rng.standard_normal(),
...           "white_line_height_median": 1.7 + 0.05 * rng.standard_normal()} for i in range(1, 9)]
>>> table[3]["e0_half_median"] = 7718.0  # a reduced particle in the very first field
>>> [(s.id, s.kind_guess) for s in model.score_particles("fov0", table, provisional=True)
...  if s.anomalous]
[(4, 'reduced')]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from streamer.learning.campaign_checkpoint import campaign_state, restore_campaign
from streamer.learning.checkpoint import read_checkpoint, write_checkpoint
from streamer.learning.drift import DriftEvent, PopulationDriftMonitor
from streamer.learning.particle_scoring import ParticleScore, score_field, table_vectors
from streamer.learning.pixel_model import NewClusterEvent, PixelModel, PixelResult
from streamer.learning.population import ParticlePopulation
from streamer.learning.prior import (
    ATTRIBUTES,
    DEFAULT_WEIGHTS,
    LICOO2_CO_K_EARLY_PRIOR,
    LICOO2_CO_K_PRIOR,
    AttributePrior,
)

__all__ = ["DEFAULT_THRESHOLD", "CampaignModel", "NewClusterEvent", "PixelResult"]  # re-exported

logger = logging.getLogger(__name__)

#: Score above which a particle is anomalous: calibrated in bench/bench_scorers.py for at most
#: one false alert per 100 normal particles (measured 0 % on simulated campaigns, 0.53 % on
#: synthetic ones with independent attributes; see :mod:`streamer.learning.particle_scoring`).
DEFAULT_THRESHOLD = 4.0
#: Score above which an *early* evaluation alerts: stricter than the final one, because staff
#: act on early alerts and a retracted one costs them time (calibrated in
#: bench/bench_detection.py, see docs/detection-results.md).
DEFAULT_EARLY_THRESHOLD = 5.0
#: An early row is learned only if its particle's area is within this factor of the final one.
_EARLY_AREA_RATIO = 1.5
_ENERGY_ATTRIBUTES = ("e0_half", "e0_deriv", "white_line_energy")


class CampaignModel:
    """Campaign-wide online learning: pixel clusters, particle population, drift.

    Parameters
    ----------
    attributes : sequence of str
        Per-pixel attribute names the model may use.
    weights : mapping, optional
        Per-attribute weights (default: the seed study's, :data:`~streamer.learning.prior.
        DEFAULT_WEIGHTS`); attributes with weight 0 are ignored. Used by both levels unless
        ``particle_weights`` is given.
    n_clusters : int
        Initial number of pixel clusters.
    seed : int
        Seed of every random choice.
    scaler : {"robust", "mean"}
        Running median/MAD (reservoir sketch) or Welford mean/sd standardisation.
    threshold : float
        Particle score threshold (:data:`DEFAULT_THRESHOLD`).
    early_threshold : float
        Threshold of early evaluations (:data:`DEFAULT_EARLY_THRESHOLD`).
    prior : mapping attribute -> AttributePrior, optional
        Default :data:`~streamer.learning.prior.LICOO2_CO_K_PRIOR`.
    early_prior : mapping attribute -> AttributePrior, optional
        Prior of early values; default :data:`~streamer.learning.prior.LICOO2_CO_K_EARLY_PRIOR`.
    correlation : {"spearman", "mcd"}
        Between-attribute correlation estimator of the particle population.
    drift_detector : {"page_hinkley", "adwin"}
    clip, far_factor, min_new_pixels, min_new_fraction, max_clusters, batch_size
        Pixel level: z-score clip, new-cluster rules (:mod:`~streamer.learning.pixel_clusters`),
        mini-batch size.
    kind_z, field_offset, correlation_pseudo_count, provisional_offset, quality_z, max_population
        Particle level (:mod:`~streamer.learning.particle_scoring`); bound of the population
        buffer (:mod:`~streamer.learning.population`).
    drift_threshold, drift_delta
        Page-Hinkley parameters in units of the prior spread (:mod:`~streamer.learning.drift`).
    consolidate : bool
        Lloyd refinement of the pixel centres on the campaign reservoir after each field.
    valid_ranges : mapping attribute -> (low, high), optional
        Pixel values outside are rejected; default: energies within 30 eV of the prior's
        location (catches sentinels and failed fits that a mask missed).
    """

    def __init__(
        self,
        *,
        attributes: Sequence[str] = ATTRIBUTES,
        weights: Mapping[str, float] | None = None,
        n_clusters: int = 4,
        seed: int = 0,
        scaler: str = "robust",
        threshold: float = DEFAULT_THRESHOLD,
        early_threshold: float = DEFAULT_EARLY_THRESHOLD,
        prior: Mapping[str, AttributePrior] | None = None,
        early_prior: Mapping[str, AttributePrior] | None = None,
        particle_weights: Mapping[str, float] | None = None,
        correlation: str = "spearman",
        drift_detector: str = "page_hinkley",
        clip: float = 20.0,
        far_factor: float = 3.0,
        min_new_pixels: int = 50,
        min_new_fraction: float = 0.002,
        max_clusters: int = 16,
        batch_size: int = 4096,
        kind_z: float = 3.0,
        field_offset: float = 0.5,
        correlation_pseudo_count: float = 10.0,
        provisional_offset: float = 3.0,
        quality_z: float = 8.0,
        max_population: int = 100_000,
        drift_threshold: float = 4.0,
        drift_delta: float = 0.5,
        consolidate: bool = True,
        valid_ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.attributes = tuple(attributes)
        self.weights = {a: float(weights.get(a, 0.0)) for a in self.attributes}
        pw = dict(weights if particle_weights is None else particle_weights)
        self.particle_weights = {a: float(v) for a, v in pw.items() if float(v) > 0}
        self.pixel_attributes = tuple(a for a in self.attributes if self.weights[a] > 0)
        if not self.pixel_attributes or not self.particle_weights:
            raise ValueError("at least one attribute needs a positive weight")
        self.prior = dict(LICOO2_CO_K_PRIOR if prior is None else prior)
        self.early_prior = dict(LICOO2_CO_K_EARLY_PRIOR if early_prior is None else early_prior)
        if valid_ranges is None:  # energies within 30 eV of where the prior expects them
            valid_ranges = {
                a: (p.location - 30.0, p.location + 30.0)
                for a, p in self.prior.items()
                if a in _ENERGY_ATTRIBUTES and p.location is not None
            }
        self.valid_ranges = {a: (float(lo), float(hi)) for a, (lo, hi) in valid_ranges.items()}
        self.seed = int(seed)
        self.threshold = float(threshold)
        self.early_threshold = float(early_threshold)
        self.kind_z = float(kind_z)
        self.field_offset = float(field_offset)
        self.correlation_pseudo_count = float(correlation_pseudo_count)
        self.provisional_offset = float(provisional_offset)
        self.quality_z = float(quality_z)
        self._options = {
            "n_clusters": int(n_clusters),
            "scaler": scaler,
            "correlation": correlation,
            "drift_detector": drift_detector,
            "clip": float(clip),
            "far_factor": float(far_factor),
            "min_new_pixels": int(min_new_pixels),
            "min_new_fraction": float(min_new_fraction),
            "max_clusters": int(max_clusters),
            "batch_size": int(batch_size),
            "max_population": int(max_population),
            "drift_threshold": float(drift_threshold),
            "drift_delta": float(drift_delta),
            "consolidate": bool(consolidate),
        }
        self.pixels = PixelModel(
            self.weights,
            valid_ranges=self.valid_ranges,
            scaler=scaler,
            clip=clip,
            consolidate=consolidate,
            seed=seed,
            n_clusters=n_clusters,
            batch_size=batch_size,
            far_factor=far_factor,
            min_new_pixels=min_new_pixels,
            min_new_fraction=min_new_fraction,
            max_clusters=max_clusters,
        )
        self.particle_attributes = tuple(self.particle_weights)
        self.population = ParticlePopulation(
            self.particle_attributes, correlation=correlation, max_buffer=max_population, seed=seed
        )
        self.early_population = ParticlePopulation(
            self.particle_attributes, correlation=correlation, max_buffer=max_population, seed=seed
        )
        watched = {
            a: self.prior[a].spread
            for a in ("e0_half", "white_line_energy", "white_line_height")
            if a in self.particle_weights and a in self.prior
        }
        self.drift = PopulationDriftMonitor(
            watched, detector=drift_detector, threshold=drift_threshold, delta=drift_delta
        )
        self._pending_drift: list[DriftEvent] = []
        self.drift_events_: list[DriftEvent] = []
        self.particle_fields_: list[str] = []
        self.n_held_out_ = 0

    # -- pixel level ------------------------------------------------------------------------
    def observe_field(
        self,
        fov_key: str,
        attributes: Mapping[str, np.ndarray],
        valid: np.ndarray,
        *,
        learn: bool = True,
    ) -> PixelResult:
        """Cluster one field's pixels and, with ``learn``, update the campaign model with them.

        ``attributes``: per-pixel arrays ``(n_pixels,)`` by name (NaN = masked); ``valid``: bool
        ``(n_pixels,)``. See :class:`~streamer.learning.pixel_model.PixelModel`.
        """
        return self.pixels.observe(fov_key, attributes, valid, learn=learn)

    @property
    def scaler(self):
        """The running standardisation of the pixel level."""
        return self.pixels.scaler

    @property
    def clusters(self):
        """The online pixel clusters."""
        return self.pixels.clusters

    @property
    def new_cluster_events_(self) -> list[NewClusterEvent]:
        """Every new-cluster event of the campaign so far."""
        return self.pixels.events_

    def cluster_centers(self) -> dict[int, dict[str, float]]:
        """Current cluster centres in attribute units (for reports)."""
        return self.pixels.centers()

    # -- particle level ---------------------------------------------------------------------
    def score_particles(
        self, fov_key: str, table: Sequence[Mapping], *, provisional: bool = False, early=False
    ) -> list[ParticleScore]:
        """Score a field's particle table against the campaign so far. Learns nothing.

        ``early``: the table holds early values (implies ``provisional``), scored like for like
        (see the module docstring).
        """
        return score_field(
            table,
            population=self.early_population if early else self.population,
            priors=self.early_prior if early else self.prior,
            weights=self.particle_weights,
            threshold=self.early_threshold if early else self.threshold,
            kind_z=self.kind_z,
            field_offset=self.field_offset,
            correlation_pseudo_count=self.correlation_pseudo_count,
            provisional=provisional or early,
            provisional_offset=self.provisional_offset,
            quality_z=self.quality_z,
            like_for_like=early,
        )

    def learn_particles(
        self,
        fov_key: str,
        table: Sequence[Mapping],
        *,
        early_table: Sequence[Mapping] | None = None,
    ) -> list[ParticleScore]:
        """Learn a field's confirmed particles (see the population rule above); return scores.

        ``early_table``: the same field's early evaluation, whose rows of the particles learned
        here go to ``early_population``.
        """
        if fov_key in self.particle_fields_:
            logger.warning("field %s was already learned at the particle level: ignored", fov_key)
            return []
        scores = self.score_particles(fov_key, table, provisional=False)
        X, _, _ = table_vectors(table, self.particle_attributes)
        keep = np.array(
            [np.isfinite(s.score) and s.reliable and not s.anomalous for s in scores], dtype=bool
        )
        if keep.any():
            self.population.learn(X[keep])
        if early_table:
            self._learn_early(table, keep, early_table)
        self.n_held_out_ += int((~keep).sum())
        self.particle_fields_.append(str(fov_key))
        with np.errstate(all="ignore"):
            medians = {
                a: float(np.nanmedian(X[:, j])) if np.isfinite(X[:, j]).any() else np.nan
                for j, a in enumerate(self.particle_attributes)
            }
        events = self.drift.update(str(fov_key), medians, n_particles=len(table))
        for event in events:
            logger.warning("%s", event.message)
        self._pending_drift.extend(events)
        self.drift_events_.extend(events)
        return scores

    def _learn_early(self, table, keep: np.ndarray, early_table: Sequence[Mapping]) -> None:
        """Early rows of the particles learned from ``table`` (same id, similar area)."""
        learned = {
            int(r["id"]): float(r.get("area_px") or 0)
            for r, k in zip(table, keep, strict=True)
            if k
        }
        rows = [
            r
            for r in early_table
            if int(r["id"]) in learned
            and 0 < float(r.get("area_px") or 0) <= _EARLY_AREA_RATIO * learned[int(r["id"])]
            and learned[int(r["id"])] <= _EARLY_AREA_RATIO * float(r.get("area_px") or 0)
        ]
        if rows:
            X, _, _ = table_vectors(rows, self.particle_attributes)
            self.early_population.learn(X[np.isfinite(X).any(axis=1)])

    def drift_events(self, *, clear: bool = True) -> list[DriftEvent]:
        """Population drift events not yet collected (all of them with ``clear=False``)."""
        events = list(self._pending_drift) if clear else list(self.drift_events_)
        if clear:
            self._pending_drift.clear()
        return events

    # -- checkpoint -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write a pickle-free checkpoint (``.npz`` with a JSON document)."""
        write_checkpoint(path, *campaign_state(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> CampaignModel:
        """Rebuild a model from :meth:`save`'s checkpoint (:mod:`~streamer.learning.
        campaign_checkpoint`: versions read, what a version 2 checkpoint starts with)."""
        meta, arrays = read_checkpoint(path)
        return restore_campaign(cls, meta, arrays, source=str(path))
