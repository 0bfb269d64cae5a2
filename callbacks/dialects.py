"""Recognise TXM-XANES runs from their start document, and say where their data live.

Three dialects (see DESIGN.md):

1. **FXI** (NSLS-II 18-ID): ``plan_name`` in :data:`FXI_XANES_PLANS`, ``eng_list`` in keV; streams
   ``dark`` (one event, a stack of ``chunk_size`` frames), ``primary`` (``Andor_image`` and
   ``XEng`` in keV, one event per energy) and ``flat`` (per energy after each primary event in
   ``xanes_scan2``, all after the last energy in ``xanes_scan``).
2. **Generic**: any run whose start document names an energy axis (``motors`` or ``hints``
   dimensions matching :data:`ENERGY_NAME`, or an explicit ``txm_streamer`` metadata block) and
   whose primary descriptor has a 2D (or stack of 2D) data key. Flats and darks are taken from
   streams named ``flat``/``dark`` (or ``bkg``/``background``) when they exist.
3. Anything else is ignored: :func:`detect_dialect` returns ``None`` after looking at a handful of
   keys of the start document, so the cost for a ``count`` or a tomography run is negligible.

An explicit block in the start document always wins, for beamlines with other names::

    RE(plan(), txm_streamer={"image_key": "cam_image", "energy_key": "mono_energy",
                             "energy_units": "eV", "i0_key": "I0"})
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)

FXI_XANES_PLANS = frozenset(
    {
        "xanes_scan",
        "xanes_scan2",
        "multipos_2D_xanes_scan",
        "multipos_2D_xanes_scan2",
        "multipos_2D_xanes_scan3",
        "mosaic_2D_xanes",
    }
)
"""FXI plan names whose runs are 2D XANES energy scans."""

FXI_FLATS_AFTER_ALL = frozenset({"xanes_scan"})
"""FXI plans that take every flat after the last energy (deferred normalisation)."""

ENERGY_NAME = re.compile(r"(^|_)(x?eng|energy|mono|dcm)($|_)", re.IGNORECASE)
"""Names that denote an energy axis in the generic dialect."""

ROLE_BY_STREAM = {
    "primary": "sample",
    "flat": "flat",
    "bkg": "flat",
    "background": "flat",
    "dark": "dark",
}
"""Which frames a stream holds. Streams not listed (``baseline``, monitors) are metadata only."""


@dataclass(frozen=True)
class XanesDialect:
    """Where a recognised XANES run keeps its frames, energies and monitor.

    Attributes
    ----------
    name
        ``"fxi_xanes_scan2"``, ``"fxi_xanes_scan"`` or ``"generic"``.
    image_key
        Data key of the detector image (a frame or a stack of frames); ``None`` until the primary
        descriptor names it (generic dialect).
    energy_key
        Data key of the energy readback in the sample stream.
    energy_scale
        Factor from the documents' energy unit to eV (1000.0 for keV); ``None`` when the unit is
        unknown, and then :meth:`to_ev` guesses per value (absorption edges lie above 100 eV).
    planned_energies_ev
        The energies the plan will visit, in eV, when the start document says so.
    i0_key
        Data key of the incident-flux monitor, if any.
    chunk_size
        Exposures per event (FXI ``chunk_size``), if known.
    flats_after_all
        True when all flats follow the last energy (informational: the engine copes either way).
    """

    name: str
    image_key: str | None
    energy_key: str | None
    energy_scale: float | None = 1000.0
    planned_energies_ev: tuple[float, ...] | None = None
    i0_key: str | None = "ic3"
    chunk_size: int | None = None
    flats_after_all: bool = False

    def to_ev(self, value: float) -> float:
        """Convert an energy read from the documents to eV."""
        value = float(value)
        if self.energy_scale is None:
            return value * 1000.0 if value < 100.0 else value
        return value * self.energy_scale

    def with_descriptor(self, descriptor: Mapping[str, Any]) -> XanesDialect:
        """Fill in what only the sample stream's descriptor can tell (generic dialect).

        Raises
        ------
        NotXanesError
            When the descriptor holds no image-like data key.
        """
        data_keys = descriptor.get("data_keys", {})
        image_key = self.image_key
        if image_key is None or image_key not in data_keys:
            image_key = find_image_key(data_keys)
        if image_key is None:
            raise NotXanesError(
                f"stream {descriptor.get('name')!r} has no 2D image data key "
                f"(keys: {sorted(data_keys)})"
            )
        energy_key = self.energy_key
        if energy_key is None or energy_key not in data_keys:
            energy_key = next((k for k in data_keys if ENERGY_NAME.search(k)), energy_key)
        scale = self.energy_scale
        units = str(data_keys.get(energy_key, {}).get("units", "") or "").strip().lower()
        if units == "kev":
            scale = 1000.0
        elif units == "ev":
            scale = 1.0
        i0_key = self.i0_key if self.i0_key in data_keys else None
        return replace(
            self, image_key=image_key, energy_key=energy_key, energy_scale=scale, i0_key=i0_key
        )


class NotXanesError(ValueError):
    """The run looked like XANES from its start document but its data say otherwise."""


def find_image_key(data_keys: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Return the first data key whose shape is a 2D frame or a stack of 2D frames."""
    for key, info in data_keys.items():
        shape = [int(s) for s in (info.get("shape") or []) if s is not None]
        if len(shape) in (2, 3) and min(shape[-2:], default=0) > 1:
            return key
    return None


def _energies_ev(values: Any, scale: float | None) -> tuple[float, ...] | None:
    try:
        energies = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if not energies:
        return None
    if scale is None:  # unit unknown: X-ray absorption edges of interest lie above 100 eV
        scale = 1000.0 if max(energies) < 100.0 else 1.0
    return tuple(e * scale for e in energies)


def detect_dialect(start: Mapping[str, Any]) -> XanesDialect | None:
    """Return the dialect of a run from its start document, or ``None`` for a non-XANES run.

    Parameters
    ----------
    start
        The run's start document.

    Examples
    --------
    >>> detect_dialect({"plan_name": "count", "detectors": ["det"]}) is None
    True
    >>> d = detect_dialect({"plan_name": "xanes_scan2", "eng_list": [7.7, 7.71], "chunk_size": 5})
    >>> d.name, d.image_key, d.planned_energies_ev
    ('fxi_xanes_scan2', 'Andor_image', (7700.0, 7710.0))
    """
    explicit = start.get("txm_streamer")
    if isinstance(explicit, Mapping):
        units = str(explicit.get("energy_units", "")).lower()
        scale = {"kev": 1000.0, "ev": 1.0}.get(units)
        return XanesDialect(
            name=str(explicit.get("dialect", "generic")),
            image_key=explicit.get("image_key"),
            energy_key=explicit.get("energy_key"),
            energy_scale=scale,
            planned_energies_ev=_energies_ev(explicit.get("energies", ()), scale),
            i0_key=explicit.get("i0_key"),
            chunk_size=explicit.get("chunk_size"),
        )

    plan_name = start.get("plan_name")
    if plan_name in FXI_XANES_PLANS and "eng_list" in start:
        return XanesDialect(
            name=f"fxi_{plan_name}" if plan_name in ("xanes_scan", "xanes_scan2") else "fxi_other",
            image_key="Andor_image",
            energy_key="XEng",
            energy_scale=1000.0,
            planned_energies_ev=_energies_ev(start.get("eng_list"), 1000.0),
            i0_key="ic3",
            chunk_size=_int_or_none(start.get("chunk_size")),
            flats_after_all=plan_name in FXI_FLATS_AFTER_ALL,
        )

    motors = start.get("motors") or ()
    dims = (start.get("hints") or {}).get("dimensions") or ()
    dim_fields = [f for fields, _stream in dims for f in fields] if dims else []
    names = [str(m) for m in (*motors, *dim_fields)]
    energy_axis = next((n for n in names if ENERGY_NAME.search(n)), None)
    if energy_axis is None:
        return None
    return XanesDialect(
        name="generic",
        image_key=None,
        energy_key=energy_axis,
        energy_scale=None,
        planned_energies_ev=_energies_ev(start.get("eng_list", start.get("energies", ())), None),
        i0_key=None,
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
