"""Score an analysis against ground truth: planted versus found.

Pure functions over label maps and small dicts, so the demo, the tests and the benchmarks score
detections the same way. Ground truth comes from the simulator (or any labelled sample) as a
truth label map and the kind of each truth particle (``"normal"`` or an anomaly kind).

A flagged particle (any particle that was ever alerted as anomalous, including provisional alerts
resolved at the end of the scan: staff saw them) is matched to the truth particle it overlaps most
(by pixels). It is a **true alert** when that truth particle is anomalous, a **false alert**
otherwise. A planted anomaly is **found** when some flagged particle matches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RunScore:
    """Planted versus found for one run (one field of view)."""

    run_uid: str
    scan_id: int | None
    n_truth_particles: int
    n_normal: int
    planted: dict[int, str]  # truth id -> kind
    found: dict[int, int]  # truth id -> detected particle id
    false_alerts: list[int]  # detected particle ids
    decision_index: dict[int, int]  # truth id -> energy index of the first alert
    decision_lead_s: dict[int, float] = field(default_factory=dict)  # truth id -> s before stop
    n_energies: int = 0

    @property
    def missed(self) -> list[int]:
        return [t for t in self.planted if t not in self.found]

    @property
    def early(self) -> list[int]:
        """Found anomalies decided before the last energy of their scan."""
        return [t for t, i in self.decision_index.items() if i < self.n_energies - 1]


def best_overlap(truth_labels: np.ndarray, detected_labels: np.ndarray) -> dict[int, int]:
    """Map each detected particle id to the truth id it overlaps most (0: background only)."""
    t = np.asarray(truth_labels).ravel().astype(np.int64)
    d = np.asarray(detected_labels).ravel().astype(np.int64)
    if t.shape != d.shape:
        raise ValueError(
            f"label maps differ in size: {truth_labels.shape} vs {detected_labels.shape}"
        )
    inside = (d > 0) & (t > 0)
    n_t = int(t.max(initial=0)) + 1
    counts = np.bincount(d[inside] * n_t + t[inside], minlength=(int(d.max(initial=0)) + 1) * n_t)
    counts = counts.reshape(-1, n_t)
    return {
        int(i): int(np.argmax(counts[i])) if counts[i].any() else 0 for i in np.unique(d[d > 0])
    }


def score_run(
    *,
    run_uid: str,
    scan_id: int | None,
    truth_labels: np.ndarray,
    truth_kinds: Mapping[int, str],
    detected_labels: np.ndarray | None,
    flagged: Iterable[int],
    first_decision: Mapping[int, int],
    first_decision_time: Mapping[int, float] | None = None,
    t_end: float | None = None,
    n_energies: int,
) -> RunScore:
    """Compare one run's flagged particles with its planted anomalies."""
    planted = {int(k): v for k, v in truth_kinds.items() if v != "normal"}
    n_normal = sum(1 for v in truth_kinds.values() if v == "normal")
    match = best_overlap(truth_labels, detected_labels) if detected_labels is not None else {}
    found: dict[int, int] = {}
    false_alerts: list[int] = []
    decision: dict[int, int] = {}
    lead: dict[int, float] = {}
    for pid in flagged:
        truth_id = match.get(int(pid), 0)
        if truth_id in planted:
            first = first_decision.get(pid, n_energies - 1)
            if truth_id not in decision or first < decision[truth_id]:
                found[truth_id] = int(pid)
                decision[truth_id] = int(first)
                if first_decision_time and t_end is not None and pid in first_decision_time:
                    lead[truth_id] = float(t_end - first_decision_time[pid])
        else:
            false_alerts.append(int(pid))
    return RunScore(
        run_uid,
        scan_id,
        len(truth_kinds),
        n_normal,
        planted,
        found,
        false_alerts,
        decision,
        lead,
        n_energies,
    )


def campaign_score(scores: Iterable[RunScore]) -> dict[str, float]:
    """Totals over runs: recall, false alerts per 100 normal particles, early fraction."""
    scores = list(scores)
    planted = sum(len(s.planted) for s in scores)
    found = sum(len(s.found) for s in scores)
    false = sum(len(s.false_alerts) for s in scores)
    normal = sum(s.n_normal for s in scores)
    early = sum(len(s.early) for s in scores)
    return {
        "runs": len(scores),
        "particles": sum(s.n_truth_particles for s in scores),
        "planted": planted,
        "found": found,
        "recall": found / planted if planted else float("nan"),
        "false_alerts": false,
        "false_per_100_normal": 100.0 * false / normal if normal else float("nan"),
        "early": early,
        "early_fraction": early / found if found else float("nan"),
    }
