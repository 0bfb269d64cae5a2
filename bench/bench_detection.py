"""Issue 4's "Done when": planted versus found over several seeds of the demo survey.

Each survey is the demo's (:func:`sim.sample.make_survey`: 8 fields of 256x256, 8-10 particles
each, the seed study's 106 energies, one *reduced* and one *white-line* particle planted in random
fields), run by a real RunEngine through the FXI ``xanes_scan2`` plan with a fresh
:class:`callbacks.XanesAnalyzer` subscribed (alerts kept in the session instead of ZeroMQ: the
same code path up to the sink), scored with :mod:`streamer.evaluation` as the demo scores it.
Settings: ``full`` (the demo), ``subtle`` (anomalies within the population's spread) and
``partial`` (a third of each planted particle abnormal).

Figures, per setting: recall (planted anomalies alerted and still firing at the end of their
scan), false alerts per 100 normal particles (particles still flagged at the end that are not
planted), the fraction of true alerts first decided before the last energy, and *retracted*
alerts (provisional alerts on normal particles, later resolved: staff saw them). Each setting's
recall figure carries per-seed details for the diagnosis: every planted particle (found or not,
decided when, the detected particles overlapping it with their scores and drivers) and every
false or retracted alert (which truth particle it covers, its score, kind guess and drivers).

``python -m bench.bench_detection --out FILE`` writes the same figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SETTINGS: dict[str, dict[str, Any]] = {
    "full": {"subtle": False, "anomalies": None},
    "subtle": {"subtle": True, "anomalies": None},
    "partial": {
        "subtle": False,
        "anomalies": (
            {"kind": "reduced", "partial": True},
            {"kind": "white_line", "partial": True},
        ),
    },
}
SEEDS = (1, 2, 3, 4, 5)


class _EvaluationLog:
    """While active, keep every evaluation's particle scores (run uid -> list of evaluations)."""

    def __init__(self) -> None:
        self.runs: dict[str, list[dict]] = {}
        self._original = None

    def __enter__(self) -> _EvaluationLog:
        from streamer.run_analysis import RunAnalysis

        original = self._original = RunAnalysis.evaluate
        runs = self.runs

        def logged(analysis, *args, **kwargs):
            ev = original(analysis, *args, **kwargs)
            if ev is not None:
                runs.setdefault(analysis.info.run_uid, []).append(
                    {
                        "energy_index": ev.energy_index,
                        "final": ev.final,
                        "scores": {int(s.id): s for s in ev.scores},
                        "table": {int(r["id"]): r for r in ev.table},
                    }
                )
            return ev

        RunAnalysis.evaluate = logged
        return self

    def __exit__(self, *exc: object) -> None:
        from streamer.run_analysis import RunAnalysis

        RunAnalysis.evaluate = self._original


def survey_once(
    *, seed: int, n_fovs: int, size: int, subtle: bool, anomalies: Any = None
) -> dict[str, Any]:
    """Simulate, scan and analyse one survey; return its score and diagnosis."""
    from bluesky import RunEngine

    from callbacks import XanesAnalyzer
    from sim.demo import score
    from sim.instrument import SimulatedTXM
    from sim.plans import survey
    from sim.sample import make_survey
    from sim.truth import TruthRecorder

    fovs = make_survey(
        n_fovs=n_fovs,
        shape=(size, size),
        seed=seed,
        subtle=subtle,
        anomalies_per_survey=anomalies,
    )
    txm = SimulatedTXM(fov=fovs[0], seed=seed)
    RE = RunEngine({}, context_managers=[])
    truth = TruthRecorder(txm)
    RE.subscribe(truth)
    analyzer = XanesAnalyzer(alerts=None, report=False, keep_label_maps=True)
    RE.subscribe(analyzer)
    t0 = time.perf_counter()
    with _EvaluationLog() as evaluations:
        RE(survey(txm, fovs))
        analyzer.flush()
    wall = time.perf_counter() - t0
    result = {
        "analyzer": analyzer,
        "truth": truth.truth(),
        "anomalous_masks": {f.index: f.anomalous_mask for f in fovs},
    }
    scores, totals = score(result)
    diagnosis = diagnose(scores, result, evaluations.runs)
    retracted = diagnosis["retracted"]
    stats = analyzer.stats
    analyzer.close()
    normal = sum(s.n_normal for s in scores)
    n_retracted = sum(r["truth_kind"] == "normal" for r in retracted)
    early_kind = sum(
        1
        for r in diagnosis["planted"]
        if r["found_as"] is not None
        and r["decision_index"] < r["n_energies"] - 1
        and r["first_kind_guess"] == r["kind"]
    )
    totals.update(
        retracted_false=n_retracted,
        early_right_kind=early_kind,
        retracted_false_per_100_normal=100.0 * n_retracted / max(normal, 1),
        wall_s=round(wall, 1),
        dropped_events=stats["dropped_events"],
    )
    return {"seed": seed, "totals": totals, **diagnosis}


def _fired(session) -> dict[tuple[str, int], dict]:
    """First ``anomalous_particle`` alert of every particle that ever fired, by (run, id)."""
    fired: dict[tuple[str, int], dict] = {}
    for a in session.alerts:
        if a.get("kind") == "anomalous_particle" and a.get("status") == "firing":
            fired.setdefault((a["run_uid"], int(a["particle"]["id"])), a)
    return fired


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


def run_setting(name: str, *, seeds, n_fovs: int, size: int) -> dict[str, Any]:
    """Every seed of one setting; totals over the seeds."""
    setting = SETTINGS[name]
    per_seed = []
    for seed in seeds:
        res = survey_once(seed=seed, n_fovs=n_fovs, size=size, **setting)
        t = res["totals"]
        logger.info(
            "%s seed %d: %d/%d found, %d false over %d particles, %d/%d early, %d retracted (%s s)",
            name,
            seed,
            t["found"],
            t["planted"],
            t["false_alerts"],
            t["particles"],
            t["early"],
            t["found"],
            t["retracted_false"],
            t["wall_s"],
        )
        per_seed.append(res)
    totals = {
        k: sum(r["totals"][k] for r in per_seed)
        for k in (
            "planted",
            "found",
            "false_alerts",
            "particles",
            "early",
            "early_right_kind",
            "retracted_false",
        )
    }
    normal = totals["particles"] - totals["planted"]
    decisions = [i for r in per_seed for i in r["decision_indices"]]
    clusters = [c for r in per_seed for c in r["new_clusters"]]
    planted = [p for r in per_seed for p in r["planted"]]
    totals["new_cluster_alerts"] = len(clusters)
    totals["new_clusters_on_planted"] = sum(
        (c["on_planted_fraction"] or 0) >= 0.5 for c in clusters
    )
    totals["planted_in_new_cluster"] = sum(
        (p["in_new_cluster_fraction"] or 0) >= 0.5 for p in planted
    )
    return {
        "threshold_sweep": threshold_sweep(
            [x for r in per_seed for x in r["particle_scores"]],
            planted=[p for r in per_seed for p in r["planted"]],
        ),
        "setting": name,
        "seeds": list(seeds),
        "n_fovs": n_fovs,
        "size": size,
        "recall": totals["found"] / totals["planted"] if totals["planted"] else float("nan"),
        "false_per_100_normal": 100.0 * totals["false_alerts"] / max(normal, 1),
        "retracted_false_per_100_normal": 100.0 * totals["retracted_false"] / max(normal, 1),
        "early_fraction": totals["early"] / totals["found"] if totals["found"] else float("nan"),
        "early_right_kind_fraction": totals["early_right_kind"] / totals["found"]
        if totals["found"]
        else float("nan"),
        "decision_index_median": float(np.median(decisions)) if decisions else None,
        "totals": totals,
        "per_seed": per_seed,
    }


def threshold_sweep(scores: list[dict], *, planted: list[dict]) -> list[dict]:
    """Recall and false alerts per 100 normal particles if the threshold were another.

    ``final``: the score on the complete scan (what stays flagged); ``max``: the highest score of
    any evaluation (what ever alerted). A planted anomaly counts as found at a threshold when a
    detected particle covering at least half of it scores above it.
    """
    normal = [x for x in scores if x["truth_kind"] == "normal"]
    rows = []
    for t in (3.0, 3.5, 4.0, 4.5, 5.0):
        row = {"threshold": t}
        for key in ("final", "max"):
            false = sum((x[key] or 0.0) > t for x in normal)
            found = 0
            for p in planted:
                covering = [d for d in p["detected"] if d["covers_fraction"] >= 0.5]
                if key == "final":
                    values = [d["final"]["score"] for d in covering if d["final"]]
                else:
                    values = [h[1] for d in covering for h in d["score_history"]]
                found += any(v > t for v in values)
            row[f"{key}_recall"] = round(found / max(len(planted), 1), 3)
            row[f"{key}_false_per_100_normal"] = round(100.0 * false / max(len(normal), 1), 2)
        rows.append(row)
    return rows


def figures_of(res: dict[str, Any]) -> dict[str, dict]:
    """Bench figures of one setting (``full`` has no infix: ``detection_recall``)."""
    infix = "" if res["setting"] == "full" else f"{res['setting']}_"
    t = res["totals"]
    where = {"seeds": res["seeds"], "fovs": res["n_fovs"], "frame": f"{res['size']}x{res['size']}"}
    per_seed = [
        {
            "seed": r["seed"],
            **{k: r["totals"][k] for k in ("found", "planted", "false_alerts", "particles")},
            "early": r["totals"]["early"],
            "early_right_kind": r["totals"]["early_right_kind"],
            "retracted_false": r["totals"]["retracted_false"],
            "wall_s": r["totals"]["wall_s"],
        }
        for r in res["per_seed"]
    ]
    return {
        f"detection_{infix}recall": {
            "value": round(res["recall"], 4),
            "unit": "fraction",
            "target": 1.0,
            "found": t["found"],
            "planted": t["planted"],
            "per_seed": per_seed,
            "planted_rows": [row for r in res["per_seed"] for row in _tag(r, "planted")],
            "false_rows": [row for r in res["per_seed"] for row in _tag(r, "false")],
            "retracted_rows": [row for r in res["per_seed"] for row in _tag(r, "retracted")],
            "new_cluster_rows": [row for r in res["per_seed"] for row in _tag(r, "new_clusters")],
            "threshold_sweep": res["threshold_sweep"],
            "new_cluster_alerts": t["new_cluster_alerts"],
            "new_clusters_on_planted": t["new_clusters_on_planted"],
            "planted_in_new_cluster": t["planted_in_new_cluster"],
            **where,
        },
        f"detection_{infix}false_per_100_normal": {
            "value": round(res["false_per_100_normal"], 3),
            "unit": "alerts per 100 normal particles",
            "target": 1.0,
            "false_alerts": t["false_alerts"],
            "normal_particles": t["particles"] - t["planted"],
            "retracted_false_per_100_normal": round(res["retracted_false_per_100_normal"], 3),
            **where,
        },
        f"detection_{infix}retracted_per_100_normal": {
            "value": round(res["retracted_false_per_100_normal"], 3),
            "unit": "alerts per 100 normal particles",
            "retracted_false": t["retracted_false"],
            "normal_particles": t["particles"] - t["planted"],
            "note": "provisional alerts on normal particles, resolved at the end of the scan",
            **where,
        },
        f"detection_{infix}early_fraction": {
            "value": round(res["early_fraction"], 4),
            "unit": "fraction",
            "target": 0.8,
            "early": t["early"],
            "found": t["found"],
            "early_right_kind_fraction": round(res["early_right_kind_fraction"], 4),
            "decision_index_median": res["decision_index_median"],
            **where,
        },
    }


def _tag(result: dict, key: str) -> list[dict]:
    return [{"seed": result["seed"], **row} for row in result[key]]


def run(*, quick: bool = False, settings=("full", "subtle", "partial")) -> dict[str, dict]:
    """All settings over 5 seeds of 8 fields of 256x256 (``quick``: 2 seeds, 4 fields of 128)."""
    seeds, n_fovs, size = (SEEDS[:2], 4, 128) if quick else (SEEDS, 8, 256)
    figures: dict[str, dict] = {}
    for name in settings:
        figures.update(figures_of(run_setting(name, seeds=seeds, n_fovs=n_fovs, size=size)))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_detection", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--settings", default="full,subtle,partial")
    parser.add_argument("--out", required=True, help="JSON file for the figures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("streamer", "callbacks", "sim", "bluesky", "ophyd"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    figures = run(quick=args.quick, settings=tuple(args.settings.split(",")))
    with open(args.out, "w") as fh:
        json.dump(figures, fh, indent=1, default=str)
    for key, fig in figures.items():
        print(f"{key:44s} {fig['value']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
