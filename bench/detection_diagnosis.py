"""Diagnosis of one analysed survey: every planted particle and every false or retracted alert.

:func:`diagnose` matches the particles the analyzer detected with the simulation's ground truth
(label maps, planted masks) and with the evaluations logged while the survey ran, and returns the
rows :mod:`bench.bench_detection` reports: per planted particle, whether and when it was found,
the detected particles covering it with their score history and strongest drivers; per false or
retracted alert, the truth particle it covers, its score, kind guess and drivers; the new pixel
clusters and their share of planted pixels; and every detected particle's final and maximum score
(for the threshold sweep).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["diagnose"]


def _fired(session) -> dict[tuple[str, int], dict]:
    """First ``anomalous_particle`` alert of every particle that ever fired, by (run, id)."""
    fired: dict[tuple[str, int], dict] = {}
    for a in session.alerts:
        if a.get("kind") == "anomalous_particle" and a.get("status") == "firing":
            fired.setdefault((a["run_uid"], int(a["particle"]["id"])), a)
    return fired


def _named_by_new_clusters(session) -> set[tuple[str, int]]:
    """(run, particle id) of every particle a ``new_cluster`` alert named."""
    return {
        (a["run_uid"], int(p["id"]))
        for a in session.alerts
        if a.get("kind") == "new_cluster" and a.get("status") == "firing"
        for p in (a.get("extra") or {}).get("particles", [])
    }


def _overlaps_of(truth: np.ndarray, detected: np.ndarray | None, truth_id: int) -> dict:
    """Detected particle id -> fraction of truth particle ``truth_id`` it covers."""
    if detected is None:
        return {}
    inside = truth == truth_id
    n = max(int(inside.sum()), 1)
    det = detected[inside]
    ids, counts = np.unique(det[det > 0], return_counts=True)
    return {int(i): round(float(c) / n, 3) for i, c in zip(ids, counts, strict=True)}


def _score_brief(score: Any) -> dict[str, Any] | None:
    if score is None:
        return None
    drivers = sorted(score.drivers.items(), key=lambda kv: -abs(kv[1].get("z", 0.0)))
    return {
        "score": round(float(score.score), 2),
        "threshold": round(float(score.threshold), 2),
        "kind_guess": score.kind_guess,
        "n_population": score.n_population,
        "n_neighbours": score.n_neighbours,
        "drivers": {
            name: {
                "value": round(d["value"], 3),
                "reference": round(d["reference"], 3),
                "spread": round(d["spread"], 3),
                "z": round(d["z"], 2),
                "z_given_others": round(d.get("z_given_others", 0.0), 2),
            }
            for name, d in drivers[:3]
        },
    }


def diagnose(scores, result: dict, evaluations: dict[str, list[dict]]) -> dict[str, Any]:
    """Rows for every planted particle and every false alert, with scores and drivers."""
    from sim.truth import decode_labels

    session = result["analyzer"].session
    summaries = {s.info.run_uid: s for s in session.runs}
    fired = _fired(session)
    named = _named_by_new_clusters(session)
    planted_rows, false_rows, retracted_rows, new_clusters, particle_scores = [], [], [], [], []
    decision_indices = []
    for s in scores:
        run = result["truth"]["runs"][s.run_uid]
        fov = run["fov"]
        labels = decode_labels(fov["labels_rle"], fov["shape"])
        summary = summaries[s.run_uid]
        truth_particles = {p["id"]: p for p in fov["particles"]}
        planted_mask = result["anomalous_masks"][fov["index"]]
        new_cluster_rows, in_new_cluster = _new_clusters(summary, planted_mask)
        for row in new_cluster_rows:
            new_clusters.append({"scan_id": s.scan_id, **row})
        evs = evaluations.get(s.run_uid, [])
        final = next((e for e in reversed(evs) if e["final"]), evs[-1] if evs else None)
        first_eval = evs[0]["energy_index"] if evs else None
        for tid, kind in s.planted.items():
            p = truth_particles[tid]
            overlaps = _overlaps_of(labels, summary.labels, tid)
            detected = []
            for pid, frac in sorted(overlaps.items(), key=lambda kv: -kv[1]):
                history = [
                    (e["energy_index"], round(float(e["scores"][pid].score), 1))
                    for e in evs
                    if pid in e["scores"]
                ]
                detected.append(
                    {
                        "particle": pid,
                        "covers_fraction": frac,
                        "final": _score_brief(final["scores"].get(pid)) if final else None,
                        "score_history": history,
                        "early": _early_score(evs, pid),
                    }
                )
            if tid in s.decision_index:
                decision_indices.append(s.decision_index[tid])
            found = s.found.get(tid)
            first_alert = fired.get((s.run_uid, found), {}) if found is not None else {}
            planted_rows.append(
                {
                    "scan_id": s.scan_id,
                    "truth_id": tid,
                    "kind": kind,
                    "partial": p.get("partial"),
                    "subtle": p.get("subtle"),
                    "area_px": p["area_px"],
                    "anomalous_area_px": p["anomalous_area_px"],
                    "max_thickness_um": round(p["max_thickness_um"], 2),
                    "reduction_shift_ev": round(p["reduction_shift_ev"], 2),
                    "wl_height_excess": round(p["wl_height_excess"], 3),
                    "observed": {k: round(v, 3) for k, v in p.get("observed", {}).items()},
                    "found_as": found,
                    "decision_index": s.decision_index.get(tid),
                    "first_kind_guess": first_alert.get("extra", {}).get("kind_guess"),
                    "first": _score_brief(_score_at(evs, found, s.decision_index.get(tid))),
                    "first_evaluation_index": first_eval,
                    "n_energies": s.n_energies,
                    "detected": detected,
                    "in_new_cluster_fraction": _fraction(
                        in_new_cluster, planted_mask & (labels == tid)
                    ),
                    # the detected particle covering most of it, named by a new-cluster alert
                    "named_by_new_cluster": bool(detected)
                    and (s.run_uid, detected[0]["particle"]) in named,
                }
            )
        detected_to_truth = _detected_to_truth(labels, summary.labels)
        for pid, covers in detected_to_truth.items():
            main = max(covers, key=covers.get)
            history = [float(e["scores"][pid].score) for e in evs if pid in e["scores"]]
            particle_scores.append(
                {
                    "truth_kind": truth_particles.get(main, {}).get("kind", "background"),
                    "final": history[-1] if final and final["final"] and history else None,
                    "max": max(history) if history else None,
                    "early": _early_score(evs, pid),
                }
            )
        retracted = [pid for (uid, pid) in fired if uid == s.run_uid and pid not in summary.flagged]
        for pid in [*s.false_alerts, *retracted]:
            covers = detected_to_truth.get(pid, {})
            main = max(covers, key=covers.get) if covers else 0
            tp = truth_particles.get(main, {})
            alert = fired.get((s.run_uid, pid), {})
            rows = false_rows if pid in s.false_alerts else retracted_rows
            rows.append(
                {
                    "scan_id": s.scan_id,
                    "particle": pid,
                    "first_decision": summary.first_decision.get(pid),
                    "first_kind_guess": alert.get("extra", {}).get("kind_guess"),
                    "first_score": alert.get("score"),
                    "truth_covered": covers,  # truth id -> fraction of the detected particle
                    "truth_kind": tp.get("kind", "background"),
                    "truth_area_px": tp.get("area_px"),
                    "truth_max_thickness_um": round(tp.get("max_thickness_um", 0.0), 2),
                    "truth_mean_soc": round(tp.get("mean_soc", 0.0), 3),
                    "first": _score_brief(_score_at(evs, pid, summary.first_decision.get(pid))),
                    "final": _score_brief(final["scores"].get(pid)) if final else None,
                    "table": _table_brief(final["table"].get(pid)) if final else None,
                }
            )
    return {
        "planted": planted_rows,
        "false": false_rows,
        "retracted": retracted_rows,
        "decision_indices": decision_indices,
        "new_clusters": new_clusters,
        "particle_scores": particle_scores,
    }


def _new_clusters(summary, planted_mask: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """The run's new pixel clusters: size and share on planted pixels; mask of their pixels."""
    events = list(getattr(summary, "new_clusters", []) or [])
    cmap = getattr(summary, "cluster_map", None)
    if cmap is None:
        return [], np.zeros(planted_mask.shape, bool)
    cmap = np.asarray(cmap).reshape(planted_mask.shape)
    rows, union = [], np.zeros(planted_mask.shape, bool)
    for event in events:
        mine = cmap == int(getattr(event, "cluster_id", -2))
        union |= mine
        rows.append(
            {
                "cluster_id": int(getattr(event, "cluster_id", -2)),
                "n_pixels": int(mine.sum()),
                "on_planted_fraction": _fraction(planted_mask, mine),
            }
        )
    return rows, union


def _fraction(numerator_mask: np.ndarray, within: np.ndarray) -> float | None:
    """Fraction of the ``within`` pixels that are set in ``numerator_mask``."""
    n = int(within.sum())
    return round(float((numerator_mask & within).sum()) / n, 3) if n else None


def _early_score(evaluations: list[dict], pid: int) -> float | None:
    """The score of particle ``pid`` in the run's early evaluation (``None``: none, or absent)."""
    for e in evaluations:
        if e.get("early") and pid in e["scores"]:
            return round(float(e["scores"][pid].score), 2)
    return None


def _score_at(evaluations: list[dict], pid: int, energy_index: int | None) -> Any:
    """The score of particle ``pid`` in the first evaluation at ``energy_index``."""
    for e in evaluations:
        if e["energy_index"] == energy_index and pid in e["scores"]:
            return e["scores"][pid]
    return None


def _detected_to_truth(truth: np.ndarray, detected: np.ndarray | None) -> dict[int, dict]:
    if detected is None:
        return {}
    out: dict[int, dict] = {}
    for pid in np.unique(detected[detected > 0]):
        inside = detected == pid
        t = truth[inside]
        ids, counts = np.unique(t, return_counts=True)
        out[int(pid)] = {
            int(i): round(float(c) / inside.sum(), 3) for i, c in zip(ids, counts, strict=True)
        }
    return out


def _table_brief(row: dict | None) -> dict | None:
    if row is None:
        return None
    keep = ("area_px", "edge_jump_median", "e0_half_median", "e0_half_iqr")
    keep += ("white_line_height_median", "white_line_energy_median", "r_squared_median")
    keep += ("pre_edge_noise_median", "unusual_fraction")
    return {k: round(float(row[k]), 4) for k in keep if isinstance(row.get(k), (int, float))}
