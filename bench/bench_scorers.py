"""Particle anomaly scorers compared on ground truth (``python -m bench --only scorers``).

Campaigns of 8 fields of view with one ``reduced`` and one ``white_line`` particle each, from two
sources: the physics simulator (:func:`sim.sample.make_survey`, noiseless observable maps plus
per-pixel noise, particle tables by :func:`streamer.particles.particle_table` on the true labels;
attributes correlated through the state of charge) and
:func:`streamer.learning.synthetic.synthetic_campaign` (independent attributes as documented).
Each setting is run at full strength and ``subtle``.

Protocol (as live): each field is scored before it is learned; learning follows the campaign
model's rule (particles it scores below its threshold), and the river detectors learn the same
particles, one at a time. Candidates:

(a) robust statistics: ``robust_z_max`` and ``robust_z_chi`` (the default model's per-attribute
    z-scores, combined by max or root-sum-square), ``mcd_population`` (Mahalanobis distance under
    :class:`~sklearn.covariance.MinCovDet` refit on the population buffer; robust z max until it
    holds 20 particles);
(b) river, one particle at a time: ``river_gaussian`` (:class:`river.anomaly.GaussianScorer` per
    attribute, max), ``river_hst`` (:class:`river.anomaly.HalfSpaceTrees`), ``river_ocsvm``
    (:class:`river.anomaly.OneClassSVM` behind a standard scaler);
(c) ``campaign`` (the default :class:`streamer.learning.CampaignModel`: prior + population +
    neighbours, correlated Mahalanobis) and ``campaign_mcd`` (same with MCD correlations).

Figures: ROC-AUC per scorer and setting, detection at the scorer's own 1 % false-positive point,
and for the default model its false-positive rate and detection at :data:`DEFAULT_THRESHOLD`.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from river import anomaly, preprocessing
from sklearn.covariance import MinCovDet
from sklearn.metrics import roc_auc_score

from streamer.learning import DEFAULT_THRESHOLD, CampaignModel
from streamer.learning.particle_scoring import table_vectors
from streamer.learning.synthetic import synthetic_campaign

log = logging.getLogger(__name__)

PRIMARY = ("e0_half", "white_line_energy", "white_line_height")
_PIXEL_NOISE = {"e0_half": 0.4, "white_line_energy": 0.6, "white_line_height": 0.06}
SCORERS = (
    "campaign",
    "campaign_mcd",
    "robust_z_max",
    "robust_z_chi",
    "mcd_population",
    "river_gaussian",
    "river_hst",
    "river_ocsvm",
)


def sim_campaign(seed: int, *, shape=(128, 128), subtle=False, n_fovs=8):
    """A simulated survey as ``[(fov_key, table, kinds)]`` (truth labels, noisy attributes)."""
    from sim.sample import make_survey
    from streamer.particles import particle_table

    rng = np.random.default_rng(10_000 + seed)
    out = []
    for fov in make_survey(n_fovs=n_fovs, shape=shape, seed=seed, subtle=subtle):
        maps = {}
        for name, sd in _PIXEL_NOISE.items():
            clean = fov.observed_maps()[name]
            maps[name] = (clean + rng.normal(0.0, sd, clean.shape)).astype(np.float32)
        table = particle_table(fov.labels, maps)
        kinds = {p.id: p.kind for p in fov.particles}
        out.append((f"fov{fov.index:03d}", table, [kinds.get(r["id"], "normal") for r in table]))
    return out


class _River:
    """One river detector over the primary attributes, standardised by the LiCoO2 prior."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "river_gaussian":
            self.models = {a: anomaly.GaussianScorer(grace_period=5) for a in PRIMARY}
        elif kind == "river_hst":
            self.models = anomaly.HalfSpaceTrees(
                n_trees=25,
                height=8,
                window_size=50,
                seed=0,
                limits={a: (-8.0, 8.0) for a in PRIMARY},
            )
        else:
            self.models = preprocessing.StandardScaler() | anomaly.OneClassSVM(nu=0.05)
        self.loc = np.array([7722.3, 7729.0, 1.7])
        self.scale = np.array([1.0, 1.0, 0.15])

    def _x(self, v):
        return {a: float(z) for a, z in zip(PRIMARY, (v - self.loc) / self.scale, strict=True)}

    def score(self, v) -> float:
        if not np.isfinite(v).all():
            return 0.0
        if self.kind == "river_gaussian":
            return max(
                m.score_one(None, float(x)) for m, x in zip(self.models.values(), v, strict=True)
            )
        return float(self.models.score_one(self._x(v)))

    def learn(self, v) -> None:
        if not np.isfinite(v).all():
            return
        if self.kind == "river_gaussian":
            for m, x in zip(self.models.values(), v, strict=True):
                m.learn_one(None, float(x))
        else:
            self.models.learn_one(self._x(v))


def _mcd_scores(model: CampaignModel, table, fallback: np.ndarray) -> np.ndarray:
    pop = model.population
    cols = [pop.attributes.index(a) for a in PRIMARY]
    buf = pop.buffer_[:, cols]
    buf = buf[np.isfinite(buf).all(axis=1)]
    if buf.shape[0] < 20:
        return fallback
    mcd = MinCovDet(random_state=0).fit(buf)
    X, _, _ = table_vectors(table, PRIMARY)
    out = np.sqrt(np.clip(mcd.mahalanobis(np.nan_to_num(X, nan=0.0)), 0, None))
    return np.where(np.isfinite(X).all(axis=1), out, fallback)


def evaluate_campaign(campaign) -> dict[str, list]:
    """Scores of every scorer for every particle of one campaign, and truth."""
    model = CampaignModel(seed=0)
    model_mcd = CampaignModel(seed=0, correlation="mcd")
    rivers = {k: _River(k) for k in ("river_gaussian", "river_hst", "river_ocsvm")}
    rec = {k: [] for k in (*SCORERS, "kind", "first", "default_flag")}
    for index, (key, table, kinds) in enumerate(campaign):
        scores = model.score_particles(key, table, provisional=False)
        zmax, zchi = [], []
        for s in scores:
            wz = np.array([d["z"] * d["weight"] for d in s.drivers.values()]) if s.drivers else []
            zmax.append(float(np.max(np.abs(wz))) if len(wz) else 0.0)
            zchi.append(float(np.sqrt(np.sum(np.square(wz)))) if len(wz) else 0.0)
        rec["campaign"] += [s.score for s in scores]
        rec["default_flag"] += [s.anomalous for s in scores]
        rec["campaign_mcd"] += [s.score for s in model_mcd.score_particles(key, table)]
        rec["robust_z_max"] += zmax
        rec["robust_z_chi"] += zchi
        rec["mcd_population"] += list(_mcd_scores(model, table, np.asarray(zmax)))
        X, _, _ = table_vectors(table, PRIMARY)
        for name, det in rivers.items():
            rec[name] += [det.score(v) for v in X]
        rec["kind"] += kinds
        rec["first"] += [index == 0] * len(kinds)
        learned = model.learn_particles(key, table)
        model_mcd.learn_particles(key, table)
        for s, v in zip(learned, X, strict=True):
            if not s.anomalous:
                for det in rivers.values():
                    det.learn(v)
    return rec


def summarise(recs: list[dict]) -> dict:
    """ROC-AUC and detection at the 1 % false-positive point per scorer."""
    merged = {k: [v for r in recs for v in r[k]] for k in recs[0]}
    kind = np.array(merged["kind"])
    first = np.array(merged["first"])
    y = kind != "normal"
    out = {"n_normal": int((~y).sum()), "n_anomalous": int(y.sum())}
    for name in SCORERS:
        s = np.nan_to_num(np.array(merged[name], dtype=float), nan=0.0)
        thr = float(np.quantile(s[~y], 0.99))
        out[name] = {
            "auc": float(roc_auc_score(y, s)),
            "det_at_1pct": float((s[y] > thr).mean()),
            "det_reduced": float((s[kind == "reduced"] > thr).mean()),
            "det_white_line": float((s[kind == "white_line"] > thr).mean()),
            "det_first_field": float((s[y & first] > thr).mean()) if (y & first).any() else None,
        }
    flag = np.array(merged["default_flag"])
    s = np.array(merged["campaign"], dtype=float)
    out["default"] = {
        "threshold": DEFAULT_THRESHOLD,
        "fp_rate": float(flag[~y].mean()),
        "detection": float(flag[y].mean()),
        "detection_first_field": float(flag[y & first].mean()) if (y & first).any() else None,
        "fp_rate_by_threshold": {t: float((s[~y] > t).mean()) for t in (3.0, 3.5, 4.0, 4.5, 5.0)},
        "det_by_threshold": {t: float((s[y] > t).mean()) for t in (3.0, 3.5, 4.0, 4.5, 5.0)},
    }
    return out


def run(*, quick: bool = False) -> dict[str, dict]:
    n_sim, n_syn = (4, 20) if quick else (30, 100)
    shape = (64, 64) if quick else (128, 128)
    figures: dict[str, dict] = {}
    for source in ("sim", "synthetic"):
        for subtle in (False, True):
            t0 = time.perf_counter()
            if source == "sim":
                camps = [sim_campaign(s, shape=shape, subtle=subtle) for s in range(n_sim)]
            else:
                anomalies = [{"kind": "reduced"}, {"kind": "white_line"}]
                camps = [
                    synthetic_campaign(seed=s, anomalies=anomalies, subtle=subtle)
                    for s in range(n_syn)
                ]
            summary = summarise([evaluate_campaign(c) for c in camps])
            tag = f"{source}_{'subtle' if subtle else 'full'}"
            log.info(
                "scorers %s (%d normal, %d anomalous, %.0f s):",
                tag,
                summary["n_normal"],
                summary["n_anomalous"],
                time.perf_counter() - t0,
            )
            for name in SCORERS:
                r = summary[name]
                log.info(
                    "  %-15s AUC %.4f det@1%%FP %.2f (reduced %.2f, white-line %.2f, "
                    "first field %s)",
                    name,
                    r["auc"],
                    r["det_at_1pct"],
                    r["det_reduced"],
                    r["det_white_line"],
                    r["det_first_field"],
                )
                figures[f"scorer_auc_{tag}_{name}"] = {"value": r["auc"], "unit": "ROC-AUC"}
            d = summary["default"]
            log.info(
                "  default threshold %.1f: FP %.4f, detection %.3f, first field %s; "
                "FP by threshold %s; detection by threshold %s",
                d["threshold"],
                d["fp_rate"],
                d["detection"],
                d["detection_first_field"],
                d["fp_rate_by_threshold"],
                d["det_by_threshold"],
            )
            figures[f"scorer_default_fp_rate_{tag}"] = {
                "value": d["fp_rate"],
                "unit": "false alerts per normal particle",
                "n_normal": summary["n_normal"],
            }
            figures[f"scorer_default_detection_{tag}"] = {
                "value": d["detection"],
                "unit": "fraction of planted anomalies",
                "n_anomalous": summary["n_anomalous"],
                "first_field": d["detection_first_field"],
            }
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for key, fig in run(quick=False).items():
        print(f"{key:55s} {fig['value']:.4f}")
