"""Ground truth of simulated runs, kept out of the documents, and its JSON file.

Subscribe a :class:`TruthRecorder` to the RunEngine next to the analyzer; it reads only the
document bookkeeping (run uid, scan_id, stream of each event) and takes the truth from the
simulator object: the field of view in the beam (label map, particles, planted anomalies and
their observable attributes) and, per event, energy, drift, image shift and incident intensity.

>>> from bluesky import RunEngine
>>> from sim import SimulatedTXM, make_field_of_view, xanes_scan2
>>> txm = SimulatedTXM(fov=make_field_of_view(shape=(64, 64), n_particles=2), drift_px=0)
>>> RE = RunEngine({}); recorder = TruthRecorder(txm); _ = RE.subscribe(recorder)
>>> (uid,) = RE(xanes_scan2(txm, [7.70, 7.73], chunk_size=1))
>>> run = recorder.runs[uid]
>>> run["plan_name"], run["energies_ev"], run["fov"]["n_particles"]
('xanes_scan2', [7700.0, 7730.0], 2)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

__all__ = ["TRUTH_SCHEMA", "TruthRecorder", "decode_labels", "read_truth", "write_truth"]

logger = logging.getLogger(__name__)

TRUTH_SCHEMA = "txm-streamer/sim-truth/1"


class TruthRecorder:
    """RunEngine callback collecting the simulator's ground truth per run.

    Parameters
    ----------
    txm : sim.instrument.SimulatedTXM

    Attributes
    ----------
    runs : dict
        ``run uid -> truth dict`` (see :meth:`run_truth`), complete once the run has stopped.
    """

    def __init__(self, txm):
        self.txm = txm
        self.runs: dict[str, dict] = {}
        self._open: dict | None = None
        self._streams: dict[str, str] = {}

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            if self._open is not None:
                logger.warning("run %s started before %s stopped", doc["uid"], self._open["uid"])
            self._open = {
                "uid": doc["uid"],
                "scan_id": doc.get("scan_id"),
                "plan_name": doc.get("plan_name"),
                "events": [],
            }
        elif name == "descriptor":
            self._streams[doc["uid"]] = doc.get("name", "primary")
        elif name == "event" and self._open is not None:
            self._record_event(self._streams.get(doc["descriptor"]), doc["seq_num"])
        elif name == "event_page" and self._open is not None:
            for seq in doc["seq_num"]:
                self._record_event(self._streams.get(doc["descriptor"]), seq)
        elif name == "stop" and self._open is not None:
            run = self._open
            self._open = None
            run["exit_status"] = doc.get("exit_status")
            self.runs[run["uid"]] = self.run_truth(run)

    def _record_event(self, stream: str | None, seq_num: int) -> None:
        acq = self.txm.acquisitions[-1] if self.txm.acquisitions else None
        if acq is None:
            logger.warning("event without a camera acquisition; no truth recorded for it")
            return
        self._open["events"].append({"stream": stream, "seq_num": seq_num, **acq})

    def run_truth(self, run: dict) -> dict:
        """Summarise one run: its field of view and per-energy drift and intensity."""
        events = run.pop("events")
        primary = [e for e in events if e["stream"] == "primary"]
        flats = [e for e in events if e["stream"] == "flat"]
        fov_idx = {e["fov_index"] for e in primary if e["fov_index"] is not None}
        if len(fov_idx) > 1:
            logger.warning("run %s imaged several fields of view: %s", run["uid"], fov_idx)
        fov = self.txm.fovs[min(fov_idx)] if fov_idx else None
        return {
            **run,
            "fov": fov.truth() if fov is not None else None,
            "energies_ev": [e["energy_ev"] for e in primary],
            "drift_px": [e["drift_px"] for e in primary],
            "shift_px": [e["shift_px"] for e in primary],
            "i0_counts_per_s": [e["i0_counts_per_s"] for e in primary],
            "ic3": [e.get("ic3") for e in primary],
            "time_s": [e["time_s"] for e in primary],
            "flat_energies_ev": [e["energy_ev"] for e in flats],
            "flat_i0_counts_per_s": [e["i0_counts_per_s"] for e in flats],
            "flat_ic3": [e.get("ic3") for e in flats],
            "n_events": {
                s: sum(e["stream"] == s for e in events) for s in ("dark", "primary", "flat")
            },
        }

    def truth(self) -> dict:
        """All completed runs, keyed by uid, with a ``scan_id -> uid`` index."""
        return {
            "schema": TRUTH_SCHEMA,
            "runs": self.runs,
            "by_scan_id": {str(r["scan_id"]): uid for uid, r in self.runs.items()},
        }


def decode_labels(rle, shape) -> np.ndarray:
    """Label map (int32) from the ``[[label, count], ...]`` runs of ``FieldOfView.truth()``."""
    pairs = np.asarray(rle, dtype=np.int64).reshape(-1, 2)
    flat = np.repeat(pairs[:, 0], pairs[:, 1]).astype(np.int32)
    if flat.size != int(np.prod(shape)):
        raise ValueError(
            f"runs cover {flat.size} pixels, shape {tuple(shape)} needs {np.prod(shape)}"
        )
    return flat.reshape(tuple(shape))


def write_truth(path, truth, *, sidecar_labels: bool = False) -> Path:
    """Write ground truth as JSON (``truth`` is a :class:`TruthRecorder` or its ``truth()``).

    Parameters
    ----------
    path : path
        JSON file to write (parent directories are created).
    truth : TruthRecorder or dict
    sidecar_labels : bool
        Move the label maps into ``<path stem>.labels.npz`` (arrays named by run uid) instead of
        run-length lists inside the JSON; the JSON then names the sidecar file.

    Returns
    -------
    Path of the JSON file.
    """
    data = truth.truth() if isinstance(truth, TruthRecorder) else dict(truth)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sidecar_labels:
        arrays = {}
        runs = {}
        for uid, run in data.get("runs", {}).items():
            run = dict(run)
            if run.get("fov") and "labels_rle" in run["fov"]:
                fov = dict(run["fov"])
                arrays[uid] = decode_labels(fov.pop("labels_rle"), fov["shape"])
                run["fov"] = fov
            runs[uid] = run
        sidecar = path.with_name(path.stem + ".labels.npz")
        np.savez_compressed(sidecar, **arrays)
        data = {**data, "runs": runs, "labels_npz": sidecar.name}
    path.write_text(json.dumps(data, indent=1, allow_nan=False))
    logger.info("wrote ground truth of %d runs to %s", len(data.get("runs", {})), path)
    return path


def read_truth(path) -> dict:
    """Read a truth file; label maps come back as int32 arrays under ``run["fov"]["labels"]``."""
    path = Path(path)
    data = json.loads(path.read_text())
    if data.get("schema") != TRUTH_SCHEMA:
        raise ValueError(f"{path} is not a {TRUTH_SCHEMA} file (schema {data.get('schema')!r})")
    sidecar = None
    if "labels_npz" in data:
        sidecar = np.load(path.with_name(data["labels_npz"]), allow_pickle=False)
    for uid, run in data.get("runs", {}).items():
        fov = run.get("fov")
        if not fov:
            continue
        if "labels_rle" in fov:
            fov["labels"] = decode_labels(fov.pop("labels_rle"), fov["shape"])
        elif sidecar is not None and uid in sidecar:
            fov["labels"] = sidecar[uid]
    return data
