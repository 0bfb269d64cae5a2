"""The alert message: a versioned JSON schema, its constructor and its validator.

An alert is one JSON object (never pickle) sent as the second frame of a ZeroMQ multipart message
``[topic, json]``. Its fields, version ``txm-streamer.alert/1``:

=================  =========================================================================
field              meaning
=================  =========================================================================
``schema``         ``"txm-streamer.alert/1"``
``seq``            strictly increasing per publisher epoch, from 1 (publisher-filled)
``epoch``          random id drawn when the publisher starts; a new one means a restart
``publisher``      publisher id (host:pid by default)
``time``           unix time of publication, float seconds; ``time_iso`` the same in ISO 8601
``kind``           one of :data:`KINDS`
``severity``       one of :data:`SEVERITIES`, lowest first
``status``         ``"firing"`` or ``"resolved"``
``run_uid``        bluesky run uid the alert is about (``None`` for campaign-wide alerts)
``scan_id``        the run's scan id; ``plan_name`` the plan that made it
``mode``           ``"live"`` or ``"replay"``
``energy_index``   index of the last energy received when the decision was taken (0-based)
``n_energies``     number of energies the scan will have
``provisional``    decided before the scan's last energy (defaults to ``energy_index < n - 1``)
``particle``       ``{id, centroid_px: [row, col], bbox_px: [r0, c0, r1, c1], area_px,
                   stage_position: {sx, sy}}`` or ``None``
``score``          anomaly (or other) score; ``threshold`` the value it was compared with
``attributes``     the attribute values that drove the decision, by name
``population``     the population values they were compared with (medians, spreads...)
``message``        one line for people
``subject``        what a non-particle alert is about (e.g. ``"cluster:3"``), else ``None``
``fingerprint``    stable identity of the condition, for deduplication (see below)
``revision``       0 when first fired, +1 for each update and for the resolution (publisher-filled)
``extra``          free-form JSON object for anything else (field of view index, ...)
=================  =========================================================================

The **fingerprint** is the first 16 hex digits of the SHA-256 of the canonical JSON of
``[kind, mode, run_uid, particle id, subject]``. It deliberately leaves out everything that
changes while the same condition is re-evaluated (``seq``, ``time``, ``score``, ``severity``,
``energy_index``, ``attributes``, ``message``), so a provisional alert and its confirmation share
one fingerprint, and the same run replayed (mode ``replay``) never collides with the live one.

Non-finite floats (NaN, inf) have no JSON representation and become ``null``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

SCHEMA = "txm-streamer.alert/1"
HEARTBEAT_SCHEMA = "txm-streamer.heartbeat/1"
SNAPSHOT_SCHEMA = "txm-streamer.snapshot/1"

KINDS = ("anomalous_particle", "new_cluster", "data_quality", "scan_summary")
EVENT_KINDS = frozenset({"scan_summary"})
"""Kinds that are one-off events: never held as firing, never resolved, not in snapshots."""
SEVERITIES = ("debug", "info", "warning", "critical")
STATUSES = ("firing", "resolved")
MODES = ("live", "replay")

ALERT_TOPIC_PREFIX = "txm.alert."
HEARTBEAT_TOPIC = "txm.heartbeat"

DEFAULT_SEVERITY = {
    "anomalous_particle": "warning",
    "new_cluster": "info",
    "data_quality": "warning",
    "scan_summary": "info",
}
PUBLISHER_FIELDS = ("seq", "epoch", "publisher", "time", "time_iso", "revision")
"""Fields the publisher fills; ``None`` before publication."""
FIELDS = (
    "schema", "seq", "epoch", "publisher", "time", "time_iso", "kind", "severity", "status",
    "run_uid", "scan_id", "plan_name", "mode", "energy_index", "n_energies", "provisional",
    "particle", "score", "threshold", "attributes", "population", "message", "subject",
    "fingerprint", "revision", "extra",
)  # fmt: skip
PARTICLE_FIELDS = ("id", "centroid_px", "bbox_px", "area_px", "stage_position")
MAX_MESSAGE_CHARS = 500


class AlertValidationError(ValueError):
    """An alert does not follow the schema; ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, problem: str):
        self.field = field
        super().__init__(f"alert field {field!r} {problem}")


def severity_rank(severity: str) -> int:
    """Position of ``severity`` in :data:`SEVERITIES` (debug = 0 ... critical = 3).

    >>> severity_rank("warning") > severity_rank("info")
    True
    """
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(f"unknown severity {severity!r}; expected one of {SEVERITIES}") from None


def alert_topic(mode: str, kind: str) -> str:
    """ZeroMQ topic of an alert: ``txm.alert.{mode}.{kind}``.

    >>> alert_topic("live", "anomalous_particle")
    'txm.alert.live.anomalous_particle'
    """
    return f"{ALERT_TOPIC_PREFIX}{mode}.{kind}"


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars and arrays, tuples and non-finite floats to plain JSON types.

    >>> to_jsonable({"a": np.float32(1.5), "b": np.arange(2), "c": float("nan")})
    {'a': 1.5, 'b': [0, 1], 'c': None}
    """
    cls = type(obj)
    if obj is None or cls is str or cls is bool or cls is int:  # fast path for plain JSON types
        return obj
    if cls is dict:
        return {k if type(k) is str else str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (np.generic, np.ndarray)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    raise TypeError(f"cannot represent {type(obj).__name__} in an alert (JSON only): {obj!r}")


def dumps(obj: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of an alert, heartbeat or snapshot (already JSON-able)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def loads(data: bytes) -> dict[str, Any]:
    """Parse one JSON object; ``ValueError`` if it is not a JSON object."""
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def compute_fingerprint(alert: Mapping[str, Any]) -> str:
    """Stable identity of the condition an alert describes (see the module docstring).

    >>> a = make_alert("anomalous_particle", run_uid="r1", particle={"id": 3}, score=5.0)
    >>> b = make_alert("anomalous_particle", run_uid="r1", particle={"id": 3}, score=9.0)
    >>> a["fingerprint"] == b["fingerprint"] == compute_fingerprint(a)
    True
    """
    particle = alert.get("particle") or {}
    key = [
        alert.get("kind"),
        alert.get("mode", "live"),
        alert.get("run_uid"),
        particle.get("id") if isinstance(particle, Mapping) else None,
        alert.get("subject"),
    ]
    canonical = json.dumps(to_jsonable(key), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def iso_time(unix_time: float) -> str:
    """ISO 8601 local time with offset, millisecond precision."""
    return _dt.datetime.fromtimestamp(unix_time).astimezone().isoformat(timespec="milliseconds")


def default_message(alert: Mapping[str, Any]) -> str:
    """A one-line human summary built from an alert's fields."""
    words = [alert["kind"].replace("_", " ")]
    particle = alert.get("particle")
    if particle:
        words[0] = words[0].replace(" particle", "")
        words.append(f"particle {particle.get('id')}")
    if alert.get("subject"):
        words.append(str(alert["subject"]))
    if alert.get("scan_id") is not None:
        words.append(f"in scan {alert['scan_id']}")
    if alert.get("score") is not None:
        cmp = f" > {alert['threshold']:.3g}" if alert.get("threshold") is not None else ""
        words.append(f"(score {alert['score']:.3g}{cmp})")
    if alert.get("energy_index") is not None and alert.get("n_energies"):
        words.append(f"at energy {alert['energy_index'] + 1}/{alert['n_energies']}")
    return " ".join(words)


def make_alert(kind: str, **fields: Any) -> dict[str, Any]:
    """Build a schema-complete alert, ready to publish; raise :class:`AlertValidationError`.

    Parameters
    ----------
    kind
        One of :data:`KINDS`.
    **fields
        Any of :data:`FIELDS`. Defaults: ``severity`` by kind (:data:`DEFAULT_SEVERITY`),
        ``status="firing"``, ``mode="live"``, ``provisional`` from ``energy_index`` and
        ``n_energies``, ``message`` from :func:`default_message`, ``fingerprint`` from
        :func:`compute_fingerprint` (a given one must match it). Publisher fields (``seq``,
        ``time``...) stay ``None``. numpy values are converted to plain JSON types.

    Examples
    --------
    >>> a = make_alert("anomalous_particle", run_uid="abc", scan_id=12, particle={"id": 7},
    ...                score=6.1, threshold=4.0, energy_index=40, n_energies=106)
    >>> a["severity"], a["provisional"], a["message"]
    ('warning', True, 'anomalous particle 7 in scan 12 (score 6.1 > 4) at energy 41/106')
    """
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise AlertValidationError(unknown[0], f"is not in schema {SCHEMA}; known fields: {FIELDS}")
    alert: dict[str, Any] = dict.fromkeys(FIELDS)
    alert.update(to_jsonable(fields))
    alert.update(schema=SCHEMA, kind=kind)
    if kind in DEFAULT_SEVERITY and alert["severity"] is None:
        alert["severity"] = DEFAULT_SEVERITY[kind]
    alert["status"] = alert["status"] or "firing"
    alert["mode"] = alert["mode"] or "live"
    alert["attributes"] = alert["attributes"] or {}
    alert["population"] = alert["population"] or {}
    alert["extra"] = alert["extra"] or {}
    if isinstance(alert["particle"], Mapping):
        alert["particle"] = {**dict.fromkeys(PARTICLE_FIELDS), **alert["particle"]}
    if alert["provisional"] is None:
        index, n = alert["energy_index"], alert["n_energies"]
        alert["provisional"] = bool(isinstance(index, int) and isinstance(n, int) and index < n - 1)
    validate_alert(alert, published=False, check_message=False)
    if not alert["message"]:
        alert["message"] = default_message(alert)
    fingerprint = compute_fingerprint(alert)
    if alert["fingerprint"] not in (None, fingerprint):
        raise AlertValidationError(
            "fingerprint",
            f"is {alert['fingerprint']!r} but the identifying fields give {fingerprint!r}",
        )
    alert["fingerprint"] = fingerprint
    _validate_identity(alert)
    return alert


def _check(ok: bool, field: str, problem: str) -> None:
    if not ok:
        raise AlertValidationError(field, problem)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_optional(alert: Mapping[str, Any], field: str, test, what: str) -> None:
    value = alert.get(field)
    _check(value is None or test(value), field, f"must be {what} or null; got {value!r}")


def _validate_particle(particle: Any) -> None:
    _check(isinstance(particle, Mapping), "particle", f"must be an object; got {particle!r}")
    _check(
        _is_int(particle.get("id")), "particle.id", f"must be an int; got {particle.get('id')!r}"
    )
    shapes = {"centroid_px": (2, _is_number), "bbox_px": (4, _is_int)}
    for name, (n, test) in shapes.items():
        value = particle.get(name)
        ok = value is None or (
            isinstance(value, list) and len(value) == n and all(map(test, value))
        )
        _check(ok, f"particle.{name}", f"must be a list of {n} numbers or null; got {value!r}")
    area = particle.get("area_px")
    _check(
        area is None or (_is_int(area) and area >= 0),
        "particle.area_px",
        f"must be a non-negative int or null; got {area!r}",
    )
    stage = particle.get("stage_position")
    if stage is not None:
        _check(
            isinstance(stage, Mapping) and set(stage) <= {"sx", "sy"},
            "particle.stage_position",
            f"must be an object with keys sx, sy; got {stage!r}",
        )
        for axis, value in stage.items():
            _check(
                value is None or _is_number(value),
                f"particle.stage_position.{axis}",
                f"must be a number or null; got {value!r}",
            )


def validate_alert(
    alert: Mapping[str, Any], *, published: bool = True, check_message: bool = True
) -> None:
    """Raise :class:`AlertValidationError` naming the first field that breaks the schema.

    Parameters
    ----------
    alert
        The alert to check.
    published
        Require the publisher-filled fields (``seq``, ``epoch``, ``time``...) too.
    check_message
        Check ``message`` and ``fingerprint`` (off only inside :func:`make_alert`).

    Examples
    --------
    >>> validate_alert(make_alert("data_quality", subject="flats", severity="severe"))
    Traceback (most recent call last):
    ...
    streamer.alerts.schema.AlertValidationError: alert field 'severity' must be one of \
('debug', 'info', 'warning', 'critical'); got 'severe'
    """
    _check(isinstance(alert, Mapping), "<alert>", f"must be a JSON object; got {type(alert)}")
    missing = [f for f in FIELDS if f not in alert]
    _check(not missing, missing[0] if missing else "", "is missing")
    _check(alert["schema"] == SCHEMA, "schema", f"must be {SCHEMA!r}; got {alert['schema']!r}")
    for field, choices in (
        ("kind", KINDS),
        ("severity", SEVERITIES),
        ("status", STATUSES),
        ("mode", MODES),
    ):
        _check(alert[field] in choices, field, f"must be one of {choices}; got {alert[field]!r}")
    if published:
        _check(
            _is_int(alert["seq"]) and alert["seq"] >= 1,
            "seq",
            f"must be an int >= 1; got {alert['seq']!r}",
        )
        for field in ("epoch", "publisher", "time_iso"):
            _check(
                isinstance(alert[field], str) and alert[field] != "",
                field,
                f"must be a non-empty string; got {alert[field]!r}",
            )
        _check(_is_number(alert["time"]), "time", f"must be unix seconds; got {alert['time']!r}")
        _check(
            _is_int(alert["revision"]) and alert["revision"] >= 0,
            "revision",
            f"must be an int >= 0; got {alert['revision']!r}",
        )
    for field in ("run_uid", "plan_name", "subject"):
        _check_optional(alert, field, lambda v: isinstance(v, str), "a string")
    for field in ("scan_id", "energy_index", "n_energies"):
        _check_optional(alert, field, _is_int, "an int")
    for field in ("score", "threshold"):
        _check_optional(alert, field, _is_number, "a number")
    index, n = alert["energy_index"], alert["n_energies"]
    if index is not None and n is not None:
        _check(0 <= index < n, "energy_index", f"must be in [0, n_energies={n}); got {index}")
    _check(
        isinstance(alert["provisional"], bool),
        "provisional",
        f"must be true or false; got {alert['provisional']!r}",
    )
    for field in ("attributes", "population", "extra"):
        _check(isinstance(alert[field], Mapping), field, f"must be an object; got {alert[field]!r}")
    if alert["particle"] is not None:
        _validate_particle(alert["particle"])
    elif alert["kind"] == "anomalous_particle":
        _check(False, "particle", "is required for kind 'anomalous_particle'")
    if check_message:
        _validate_identity(alert)


def _validate_identity(alert: Mapping[str, Any]) -> None:
    """Check the one-line ``message`` and the ``fingerprint``."""
    msg, fp = alert["message"], alert["fingerprint"]
    _check(
        isinstance(msg, str) and msg.strip() != "",
        "message",
        f"must be a non-empty string; got {msg!r}",
    )
    _check("\n" not in msg and "\r" not in msg, "message", "must be a single line")
    _check(
        len(msg) <= MAX_MESSAGE_CHARS,
        "message",
        f"must be at most {MAX_MESSAGE_CHARS} characters; got {len(msg)}",
    )
    _check(
        isinstance(fp, str) and len(fp) == 16 and all(c in "0123456789abcdef" for c in fp),
        "fingerprint",
        f"must be 16 lowercase hex digits; got {fp!r}",
    )
