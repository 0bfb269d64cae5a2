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

from bench.detection_diagnosis import diagnose

__all__ = [
    "SEEDS",
    "SETTINGS",
    "diagnose",
    "figures_of",
    "run",
    "run_setting",
    "survey_once",
    "threshold_sweep",
]

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
                        "early": getattr(ev, "early", False),
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
    totals["planted_named_by_new_cluster"] = sum(p["named_by_new_cluster"] for p in planted)
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
        "early_margin": _early_margin(per_seed),
        "totals": totals,
        "per_seed": per_seed,
    }


def _early_margin(per_seed: list[dict]) -> dict[str, Any]:
    """Highest early score of a normal particle and lowest of a planted one (covering >= half)."""
    normal = [
        x["early"]
        for r in per_seed
        for x in r["particle_scores"]
        if x["truth_kind"] == "normal" and x.get("early") is not None
    ]
    planted = []
    for r in per_seed:
        for p in r["planted"]:
            values = [
                d["early"]
                for d in p["detected"]
                if d["covers_fraction"] >= 0.5 and d.get("early") is not None
            ]
            planted.append(max(values) if values else None)
    scored = [v for v in planted if v is not None]
    return {
        "normal_max": max(normal) if normal else None,
        "normal_p99": float(np.percentile(normal, 99)) if normal else None,
        "n_normal": len(normal),
        "planted_min": min(scored) if scored else None,
        "planted_without_early_score": len(planted) - len(scored),
    }


def threshold_sweep(scores: list[dict], *, planted: list[dict]) -> list[dict]:
    """Recall and false alerts per 100 normal particles if the threshold were another.

    ``final``: the score on the complete scan (what stays flagged); ``max``: the highest score of
    any evaluation (what ever alerted); ``early``: the score of the early evaluation (what an
    early threshold would alert on). A planted anomaly counts as found at a threshold when a
    detected particle covering at least half of it scores above it.
    """
    normal = [x for x in scores if x["truth_kind"] == "normal"]
    rows = []
    for t in (3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0):
        row = {"threshold": t}
        for key in ("final", "max", "early"):
            false = sum((x[key] or 0.0) > t for x in normal)
            found = 0
            for p in planted:
                covering = [d for d in p["detected"] if d["covers_fraction"] >= 0.5]
                if key == "final":
                    values = [d["final"]["score"] for d in covering if d["final"]]
                elif key == "early":
                    values = [d["early"] for d in covering if d.get("early") is not None]
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
            "planted_named_by_new_cluster": t["planted_named_by_new_cluster"],
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
            "early_margin": res["early_margin"],
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
