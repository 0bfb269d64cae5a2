"""From particle scores to alert dicts: the alert policy of one run.

Rules (one place, so staff can predict what they will be told):

- A particle scored anomalous on **provisional** attributes (the scan is still running) fires an
  ``anomalous_particle`` alert with severity ``warning``, ``provisional: true`` and the energy index
  at decision time. Later provisional evaluations re-send it only when its guessed kind changes.
- At the **end of the scan** every particle is scored on the complete spectra: a particle that is
  still anomalous is *confirmed* (same fingerprint, severity ``critical``, ``provisional: false``);
  one that no longer is gets a ``resolved`` message; one anomalous only now fires as confirmed.
- Only **chemistry** is alerted as an anomalous particle: a particle whose score is driven by
  the fit-quality attributes alone (no chemical kind guessed, and no edge or white-line attribute
  beyond :data:`CHEMISTRY_Z`; a white line strong *for its edge position* is guessed
  ``white_line`` and is chemistry) is a measurement problem, not a chemical one, and so is a
  region smaller than :data:`MIN_ALERT_AREA_PX` (a fragment or a speck): neither fires.
  Both stay in the particle table and the report.
- An **aborted** scan is scored on what it has; its alerts say ``run_aborted: true`` and stay
  provisional.
- The fingerprint (see :func:`streamer.alerts.schema.compute_fingerprint`) is built from the kind,
  the mode, the run, the particle id and the subject, so the publisher deduplicates repeats and
  matches resolutions. Fields beyond the schema (kind guess, first decision) go under ``extra``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamer.alerts.schema import make_alert

log = logging.getLogger(__name__)

CHEMISTRY = ("e0_half", "e0_deriv", "white_line_energy", "white_line_height")
"""Attributes that describe the chemistry (the others describe the measurement)."""

CHEMISTRY_Z = 3.0
"""Least |z| of some chemistry attribute for an anomalous particle of no chemical kind to be
alerted."""

CHEMICAL_KINDS = ("reduced", "white_line")
"""Kind guesses (:func:`streamer.learning.particle_scoring.guess_kind`) that are chemistry: the
white-line kind includes a white line strong *for its edge position* (z given the others)."""

MIN_ALERT_AREA_PX = 40
"""Smallest particle (pixels) whose chemistry is judged: smaller regions are too noisy."""


def alertable(score: Any, row: Mapping[str, Any]) -> bool:
    """Whether an anomalous score describes chemistry of a particle large enough to judge."""
    if int(row.get("area_px", 0)) < MIN_ALERT_AREA_PX:
        return False
    if getattr(score, "kind_guess", None) in CHEMICAL_KINDS:
        return True
    drivers = getattr(score, "drivers", {}) or {}
    return any(
        abs(float(d.get("z", 0.0))) >= CHEMISTRY_Z for k, d in drivers.items() if k in CHEMISTRY
    )


ATTRIBUTE_LABELS = {
    "e0_half": "edge",
    "e0_deriv": "edge (max derivative)",
    "white_line_energy": "white-line energy",
    "white_line_height": "white-line height",
    "edge_jump": "edge jump",
    "pre_edge_noise": "noise",
    "r_squared": "R^2",
}


@dataclass
class RunContext:
    """What every alert of a run carries."""

    run_uid: str
    scan_id: int | None
    plan_name: str | None
    mode: str
    n_energies: int
    stage_position: dict[str, float] = field(default_factory=dict)
    pixel_size_um: float | None = None

    def base(self, *, severity: str, energy_index: int | None) -> dict[str, Any]:
        return {
            "severity": severity,
            "status": "firing",
            "run_uid": self.run_uid,
            "scan_id": self.scan_id,
            "plan_name": self.plan_name,
            "mode": self.mode,
            "energy_index": energy_index,
            # unknown (0) until the end of a run whose start document planned no energies
            "n_energies": self.n_energies or None,
        }


def _drivers_sentence(drivers: Mapping[str, Mapping[str, float]], limit: int = 2) -> str:
    ranked = sorted(drivers.items(), key=lambda kv: -abs(kv[1].get("z", 0.0)))[:limit]
    parts = []
    for name, d in ranked:
        delta = d["value"] - d["reference"]
        unit = " eV" if name.startswith(("e0", "white_line_energy")) else ""
        parts.append(
            f"{ATTRIBUTE_LABELS.get(name, name)} {delta:+.2f}{unit} (z={d.get('z', 0):+.1f})"
        )
    return ", ".join(parts)


def particle_position(row: Mapping[str, Any], ctx: RunContext, shape: tuple[int, int]) -> dict:
    """The ``particle`` block of an alert: pixel geometry and, when known, stage position."""
    particle = {
        "id": int(row["id"]),
        "centroid_px": [round(float(c), 2) for c in row["centroid_px"]],
        "bbox_px": [int(b) for b in row["bbox_px"]],
        "area_px": int(row["area_px"]),
    }
    stage = {k: float(v) for k, v in ctx.stage_position.items()}
    if stage and ctx.pixel_size_um:
        cy, cx = particle["centroid_px"]
        stage = {
            "sx": stage.get("sx", 0.0) + (cx - shape[1] / 2) * ctx.pixel_size_um,
            "sy": stage.get("sy", 0.0) + (cy - shape[0] / 2) * ctx.pixel_size_um,
        }
    particle["stage_position"] = stage or None
    return particle


_PUBLISHER_OR_DERIVED = frozenset(
    {"schema", "kind", "seq", "epoch", "publisher", "time", "time_iso", "revision", "fingerprint"}
)


class RunAlertBook:
    """The alert state of one run: which particles fire, and what to send next.

    Parameters
    ----------
    ctx
        The run's alert context.
    send
        Where alert dicts go (the session's sink).
    """

    def __init__(self, ctx: RunContext, send: Callable[[dict], Any]) -> None:
        self.ctx = ctx
        self._send = send
        self.firing: dict[int, dict] = {}  # particle id -> last alert sent
        self.first_decision: dict[int, int] = {}  # particle id -> energy index when first fired
        self.first_decision_time: dict[int, float] = {}  # particle id -> unix time of that
        self.sent: int = 0

    def _emit(self, kind: str, fields: dict) -> dict:
        alert = make_alert(kind, **fields)
        self._send(alert)
        self.sent += 1
        return alert

    def particles(
        self,
        scores: list[Any],
        table: Mapping[int, Mapping[str, Any]],
        *,
        energy_index: int,
        final: bool,
        shape: tuple[int, int],
        aborted: bool = False,
    ) -> list[dict]:
        """Apply the rules of this module to one evaluation's scores; return alerts sent."""
        sent = []
        seen = set()
        for s in scores:
            pid = int(s.id)
            seen.add(pid)
            previous = self.firing.get(pid)
            if not (s.anomalous and alertable(s, table[pid])):
                if previous is not None and final:
                    sent.append(self._resolve(pid, previous, s, energy_index))
                continue
            confirmed = final and not aborted
            if (
                previous is not None
                and not confirmed
                and previous["extra"]["kind_guess"] == s.kind_guess
            ):
                continue  # provisional repeat: nothing new to say
            if previous is None and pid not in self.first_decision:
                self.first_decision[pid] = energy_index
                self.first_decision_time[pid] = time.time()
            alert = self.ctx.base(
                severity="critical" if confirmed else "warning", energy_index=energy_index
            )
            row = table[pid]
            alert.update(
                particle=particle_position(row, self.ctx, shape),
                score=round(float(s.score), 4),
                threshold=round(float(s.threshold), 4),
                provisional=not confirmed,
                extra={
                    "kind_guess": s.kind_guess,
                    "run_aborted": aborted,
                    "first_energy_index": self.first_decision[pid],
                },
                attributes={k: round(float(d["value"]), 4) for k, d in s.drivers.items()},
                population={
                    k: {
                        "median": round(float(d["reference"]), 4),
                        "spread": round(float(d["spread"]), 4),
                    }
                    for k, d in s.drivers.items()
                },
                message=(
                    f"{'confirmed' if confirmed else 'provisional'}: particle {pid} of scan "
                    f"{self.ctx.scan_id} looks {s.kind_guess.replace('_', '-')} "
                    f"(score {s.score:.1f} > {s.threshold:.1f}; {_drivers_sentence(s.drivers)})"
                ),
            )
            self.firing[pid] = self._emit("anomalous_particle", alert)
            sent.append(alert)
        if final:  # particles that vanished from the final segmentation
            for pid in [p for p in self.firing if p not in seen]:
                sent.append(self._resolve(pid, self.firing[pid], None, energy_index))
        return sent

    def _resolve(self, pid: int, previous: dict, score: Any, energy_index: int) -> dict:
        alert = {k: v for k, v in previous.items() if k not in _PUBLISHER_OR_DERIVED}
        alert.update(
            status="resolved",
            severity="info",
            energy_index=energy_index,
            provisional=False,
            score=round(float(score.score), 4) if score is not None else None,
            message=(
                f"resolved: particle {pid} of scan {self.ctx.scan_id} is not anomalous on the "
                "complete scan"
            ),
        )
        self.firing.pop(pid, None)
        return self._emit("anomalous_particle", alert)

    def simple(
        self,
        kind: str,
        *,
        severity: str,
        message: str,
        energy_index: int | None,
        subject: str | None = None,
        **extra: Any,
    ) -> dict:
        """Send a ``data_quality``, ``new_cluster`` or ``scan_summary`` alert.

        ``subject`` names what the alert is about (it enters the fingerprint, e.g.
        ``"check:missing_flats"``); everything else goes under ``extra``.
        """
        alert = self.ctx.base(severity=severity, energy_index=energy_index)
        alert.update(subject=subject, message=message, extra=extra)
        return self._emit(kind, alert)
