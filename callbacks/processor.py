"""One XANES run's documents, turned into engine calls (runs on the analysis thread).

A :class:`XanesRunProcessor` is created per run by the :class:`~callbacks.analyzer.XanesAnalyzer`'s
``RunRouter`` factory, so its state dies with the run. It fills external frames with
``event_model.Filler``, maps each stream to a frame role (sample, flat, dark) with the run's
:class:`~callbacks.dialects.XanesDialect`, converts energies to eV, and calls the engine's
:class:`streamer.run_analysis.RunAnalysis`. It never touches the RunEngine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import event_model
import numpy as np

from callbacks.dialects import ROLE_BY_STREAM, NotXanesError, XanesDialect
from streamer.run_analysis import RunAnalysis, RunInfo

log = logging.getLogger(__name__)


def _scalar(value: Any) -> float | None:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return float(arr.reshape(-1)[0]) if arr.size else None


class XanesRunProcessor(event_model.DocumentRouter):
    """Route one run's documents into a :class:`~streamer.run_analysis.RunAnalysis`.

    Parameters
    ----------
    dialect
        How the run keeps its frames and energies.
    begin_run
        ``begin_run(info) -> RunAnalysis``: the analysis session's factory for per-run analyses.
    handler_registry, root_map
        Passed to ``event_model.Filler`` for external (area-detector) frames.
    mode
        ``"live"`` or ``"replay"``, copied into every alert.
    """

    def __init__(
        self,
        dialect: XanesDialect,
        *,
        begin_run: Any,
        handler_registry: Mapping[str, Any],
        root_map: Mapping[str, str] | None = None,
        mode: str = "live",
    ) -> None:
        super().__init__()
        self.dialect = dialect
        self._begin_run = begin_run
        self._filler = event_model.Filler(dict(handler_registry), root_map=root_map, inplace=False)
        self._mode = mode
        self._roles: dict[str, str] = {}  # descriptor uid -> role
        self._streams: dict[str, str] = {}  # descriptor uid -> stream name
        self._analysis: RunAnalysis | None = None
        self._start: Mapping[str, Any] = {}
        self._baseline: dict[str, float] = {}
        self._last_sample_energy: float | None = None
        self._n_flats = 0
        self.failed: BaseException | None = None

    # -- dispatch ---------------------------------------------------------------------------
    def __call__(self, name: str, doc: Mapping[str, Any], validate: bool = False) -> Any:
        if self.failed is not None:
            return None
        if name == "dropped":
            if self._analysis is not None:
                self._analysis.note_dropped(dict(doc), role=self._roles.get(doc.get("descriptor")))
            return None
        return super().__call__(name, doc, validate)

    def fail(self, exc: BaseException) -> None:
        """Stop analysing this run after an unexpected error, and say so in an alert."""
        self.failed = exc
        if self._analysis is not None:
            self._analysis.abort(f"analysis failed: {type(exc).__name__}: {exc}")

    # -- documents --------------------------------------------------------------------------
    def start(self, doc: Mapping[str, Any]) -> None:
        self._start = doc
        info = RunInfo(
            run_uid=doc["uid"],
            scan_id=doc.get("scan_id"),
            plan_name=doc.get("plan_name"),
            dialect=self.dialect.name,
            mode=self._mode,
            planned_energies_ev=self.dialect.planned_energies_ev,
            chunk_size=self.dialect.chunk_size,
            stage_position=_stage_position(doc),
            sample_name=str(doc.get("sample_name") or doc.get("note") or ""),
        )
        self._analysis = self._begin_run(info)

    def descriptor(self, doc: Mapping[str, Any]) -> None:
        self._filler("descriptor", doc)
        stream = doc.get("name", "primary")
        role = ROLE_BY_STREAM.get(stream)
        self._streams[doc["uid"]] = stream
        if role is None:
            return
        if role == "sample":
            try:
                self.dialect = self.dialect.with_descriptor(doc)
            except NotXanesError as err:
                log.info("run %s is not analysed: %s", self._start.get("uid", "?")[:8], err)
                if self._analysis is not None:
                    self._analysis.abort(str(err), quiet=True)
                self.failed = err
                return
        if self.dialect.image_key not in doc.get("data_keys", {}):
            log.warning(
                "stream %r of run %s has no %r data key: its frames are ignored",
                stream,
                self._start.get("uid", "?")[:8],
                self.dialect.image_key,
            )
            return
        self._roles[doc["uid"]] = role

    def resource(self, doc: Mapping[str, Any]) -> None:
        self._filler("resource", doc)

    def datum(self, doc: Mapping[str, Any]) -> None:
        self._filler("datum", doc)

    def datum_page(self, doc: Mapping[str, Any]) -> None:
        self._filler("datum_page", doc)

    def event(self, doc: Mapping[str, Any]) -> None:
        stream = self._streams.get(doc["descriptor"])
        if stream == "baseline":
            self._baseline.update(
                {
                    k: v
                    for k, v in ((k, _scalar(v)) for k, v in doc["data"].items())
                    if v is not None
                }
            )
            return
        role = self._roles.get(doc["descriptor"])
        if role is None or self._analysis is None:
            return
        _, filled = self._filler("event", doc)
        data = filled["data"]
        stack = np.asarray(data[self.dialect.image_key])
        energy = self._energy(data, role)
        i0 = _scalar(data.get(self.dialect.i0_key)) if self.dialect.i0_key else None
        if role == "dark":
            self._analysis.add_dark(stack)
        elif role == "flat":
            self._n_flats += 1
            self._analysis.add_flat(stack, energy_ev=energy, i0=i0)
        else:
            if energy is None:
                self._analysis.note_problem(
                    f"sample frame seq_num={doc.get('seq_num')} has no energy "
                    f"({self.dialect.energy_key!r} missing): skipped"
                )
                return
            self._last_sample_energy = energy
            self._analysis.add_sample(stack, energy_ev=energy, i0=i0)

    def stop(self, doc: Mapping[str, Any]) -> None:
        if self._analysis is None:
            return
        if self._baseline:
            self._analysis.info.stage_position.update(_stage_position(self._baseline))
        self._analysis.finalize(
            exit_status=doc.get("exit_status", "success"),
            reason=doc.get("reason", ""),
            stop_time=doc.get("time"),
        )

    # -- helpers ----------------------------------------------------------------------------
    def _energy(self, data: Mapping[str, Any], role: str) -> float | None:
        key = self.dialect.energy_key
        if key and key in data:
            value = _scalar(data[key])
            if value is not None and np.isfinite(value):
                return self.dialect.to_ev(value)
        if role == "flat":
            planned = self.dialect.planned_energies_ev
            if self.dialect.flats_after_all and planned and self._n_flats <= len(planned):
                return planned[self._n_flats - 1]
            return self._last_sample_energy
        return None


def _stage_position(doc: Mapping[str, Any]) -> dict[str, float]:
    """Sample-stage position (FXI ``zps_sx``/``zps_sy``, um) from a start or baseline document."""
    position = {}
    for key, out in (("zps_sx", "sx"), ("zps_sy", "sy"), ("sx", "sx"), ("sy", "sy")):
        value = _scalar(doc.get(key)) if key in doc else None
        if value is not None and out not in position:
            position[out] = value
    return position
