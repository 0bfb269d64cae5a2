"""Drift of the particle population over a campaign, watched by river's drift detectors.

After each field of view, the median of each watched attribute over the field's confirmed
particles (all of them: a median shrugs off one or two abnormal particles) is divided by a fixed
scale (the prior's between-particle spread) and fed to one river detector per attribute:
:class:`river.drift.PageHinkley` by default (a cumulative-sum test, right for a few values per
hour), or :class:`river.drift.ADWIN`. A detection becomes a :class:`DriftEvent`, which the session
turns into a ``data_quality`` alert: a monochromator calibration that walks, a sample that
changes state, a beam that moves would all shift every particle together.

Checkpoint: the per-field medians are kept (one small row per field) and replayed on load, which
rebuilds the detectors exactly.

Examples
--------
>>> monitor = PopulationDriftMonitor({"e0_half": 0.3})
>>> events = []
>>> for i, e0 in enumerate([7722.3, 7722.25, 7722.35, 7722.3, 7723.5, 7723.6, 7723.5]):
...     events += monitor.update(f"fov{i}", {"e0_half": e0}, n_particles=8)
>>> [(e.attribute, e.fov_key) for e in events]
[('e0_half', 'fov5')]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from river import drift

__all__ = ["DriftEvent", "PopulationDriftMonitor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftEvent:
    """The population of particles shifted in one attribute (JSON-able)."""

    attribute: str
    fov_key: str
    n_fields: int
    field_median: float
    previous_median: float
    shift: float
    detector: str
    message: str


class PopulationDriftMonitor:
    """One river drift detector per attribute over per-field particle medians.

    Parameters
    ----------
    scales : mapping attribute -> float
        Fixed divisor of each attribute (typically the prior's between-particle spread), so that
        the detector thresholds are in units of normal particle-to-particle variation.
    detector : {"page_hinkley", "adwin"}
    min_fields : int
        Fields before a detection may happen.
    threshold, delta : float
        Page-Hinkley's lambda and delta, in units of ``scales`` (ADWIN: ``delta`` is its
        confidence and ``threshold`` is unused).
    min_particles : int
        Fields with fewer confirmed particles are not fed (their median is too noisy).
    """

    def __init__(
        self,
        scales: Mapping[str, float],
        *,
        detector: str = "page_hinkley",
        min_fields: int = 3,
        threshold: float = 4.0,
        delta: float = 0.5,
        min_particles: int = 3,
    ) -> None:
        if detector not in ("page_hinkley", "adwin"):
            raise ValueError(f"detector must be 'page_hinkley' or 'adwin', got {detector!r}")
        bad = {a: s for a, s in scales.items() if not (np.isfinite(s) and s > 0)}
        if bad:
            raise ValueError(f"scales must be positive and finite, got {bad}")
        self.scales = dict(scales)
        self.detector = detector
        self.min_fields = int(min_fields)
        self.threshold = float(threshold)
        self.delta = float(delta)
        self.min_particles = int(min_particles)
        self._detectors = {a: self._new_detector() for a in self.scales}
        self.history_: list[tuple[str, dict[str, float]]] = []
        self._recent: dict[str, list[float]] = {a: [] for a in self.scales}

    def _new_detector(self):
        if self.detector == "adwin":
            return drift.ADWIN(
                delta=self.delta if self.delta < 1 else 0.002,
                min_window_length=2,
                grace_period=self.min_fields,
            )
        return drift.PageHinkley(
            min_instances=self.min_fields,
            delta=self.delta,
            threshold=self.threshold,
            alpha=1.0,
            mode="both",
        )

    def update(
        self, fov_key: str, field_medians: Mapping[str, float], *, n_particles: int
    ) -> list[DriftEvent]:
        """Feed one field's particle medians; return the drift events it triggered."""
        if n_particles < self.min_particles:
            logger.debug(
                "field %s: %d particles, not fed to the drift monitor", fov_key, n_particles
            )
            return []
        values = {
            a: float(field_medians[a])
            for a in self.scales
            if a in field_medians and np.isfinite(field_medians[a])
        }
        self.history_.append((str(fov_key), values))
        return self._feed(str(fov_key), values)

    def _feed(self, fov_key: str, values: Mapping[str, float]) -> list[DriftEvent]:
        events = []
        for a, value in values.items():
            det = self._detectors[a]
            recent = self._recent[a]
            det.update(value / self.scales[a])
            if det.drift_detected:
                previous = float(np.median(recent)) if recent else float("nan")
                shift = value - previous
                unit = "" if a == "white_line_height" else " eV"
                events.append(
                    DriftEvent(
                        attribute=a,
                        fov_key=fov_key,
                        n_fields=len(self.history_),
                        field_median=value,
                        previous_median=previous,
                        shift=shift,
                        detector=self.detector,
                        message=(
                            f"particle population drift in {a}: field {fov_key} median "
                            f"{value:.3f} vs {previous:.3f} before ({shift:+.3f}{unit})"
                        ),
                    )
                )
                self._recent[a] = [value]
            else:
                recent.append(value)
                del recent[:-20]
        return events

    # -- checkpoint -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "scales": self.scales,
            "detector": self.detector,
            "min_fields": self.min_fields,
            "threshold": self.threshold,
            "delta": self.delta,
            "min_particles": self.min_particles,
            "history": [[k, v] for k, v in self.history_],
        }

    @classmethod
    def from_state(cls, meta: dict) -> PopulationDriftMonitor:
        """Rebuild by replaying the stored per-field medians (events are not re-emitted)."""
        self = cls(
            meta["scales"],
            detector=meta["detector"],
            min_fields=meta["min_fields"],
            threshold=meta["threshold"],
            delta=meta["delta"],
            min_particles=meta["min_particles"],
        )
        for key, values in meta["history"]:
            self.history_.append((key, values))
            self._feed(key, values)
        return self
