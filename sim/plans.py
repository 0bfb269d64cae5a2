"""FXI-shaped XANES plans for the simulated TXM, and a survey over many fields of view.

:func:`xanes_scan2` and :func:`xanes_scan` follow NSLS-II FXI's profile collection
(``startup/41-scans.py``): the same start metadata keys (including FXI's own spellings), the same
detectors and motors read in every event, and the same stream order:

* ``xanes_scan2``: ``dark`` (one event, shutter closed), then for each energy a ``primary`` event
  followed by a ``flat`` event taken with the sample moved out;
* ``xanes_scan``: ``dark``, one ``primary`` event per energy, then, with the sample out, one
  ``flat`` event per energy (all flats after the last energy).

Each event holds ``Andor_image`` (a stack of ``chunk_size`` frames), ``ic3``, ``XEng`` (keV) and
the ``zps`` positions. Energies are keV in the plans' arguments, as at FXI.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.utils import RequestAbort

from sim.fov import FieldOfView
from sim.instrument import SimulatedTXM
from sim.spectra import SEED_ENERGIES_EV

__all__ = ["DEFAULT_ENG_LIST_KEV", "survey", "xanes_scan", "xanes_scan2"]

logger = logging.getLogger(__name__)

#: The seed study's 106 energies, in keV as FXI's ``eng_list``.
DEFAULT_ENG_LIST_KEV: tuple[float, ...] = tuple(
    float(e) for e in np.round(SEED_ENERGIES_EV / 1e3, 5)
)
#: Default relative move (um) of ``zps.sy`` that takes the sample out of the beam for flats.
DEFAULT_OUT_Y_UM = -2000.0


def _eng_list(eng_list) -> list[float]:
    eng = DEFAULT_ENG_LIST_KEV if eng_list is None else eng_list
    out = [float(e) for e in np.asarray(eng, dtype=np.float64).ravel()]
    if not out:
        raise ValueError("eng_list is empty")
    if max(out) > 100.0:
        raise ValueError(f"eng_list is in keV (FXI convention); got values up to {max(out)}")
    return out


def _xanes(
    plan_name: str,
    txm: SimulatedTXM,
    eng_list,
    *,
    chunk_size: int,
    exposure_time: float,
    out_x,
    out_y,
    out_z,
    out_r,
    relative_move_flag: int,
    note: str,
    md: dict | None,
    abort_after: int | None,
):
    eng = _eng_list(eng_list)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    zps, andor = txm.zps, txm.Andor
    detectors = [andor, txm.ic3]
    motors = [txm.XEng, zps.sx, zps.sy, zps.sz, zps.pi_r]
    ini = [zps.sx.position, zps.sy.position, zps.sz.position, zps.pi_r.position]
    outs = []
    for start, rel in zip(ini, (out_x, out_y, out_z, out_r), strict=True):
        if rel is None:
            outs.append(start)
        else:
            outs.append(start + rel if relative_move_flag else rel)

    plan_args = {
        "eng_list": "eng_list",
        "exposure_time": exposure_time,
        "chunk_size": chunk_size,
        "out_x": out_x,
        "out_y": out_y,
        "out_z": out_z,
        # FXI's xanes_scan2 spells this key "our_r"; kept for fidelity.
        ("our_r" if plan_name == "xanes_scan2" else "out_r"): out_r,
        "relative_move_flag": relative_move_flag,
        "note": note if note else "None",
        "zone_plate": "simulated",
    }
    if plan_name == "xanes_scan2":
        plan_args["filters"] = "None"
    _md = {
        "detectors": [d.name for d in detectors],
        "motors": [m.name for m in motors],
        "num_eng": len(eng),
        "num_bkg_images": chunk_size,
        "num_dark_images": chunk_size,
        "chunk_size": chunk_size,
        "out_x": out_x,
        "out_y": out_y,
        "exposure_time": exposure_time,
        "eng_list": eng,
        "XEng": float(txm.XEng.position),
        "plan_args": plan_args,
        "plan_name": plan_name,
        "hints": {},
        "operator": "FXI",
        "zone_plate": "simulated",
        "note": note if note else "None",
    }
    if plan_name == "xanes_scan":
        _md.update(out_z=out_z, out_r=out_r, relative_move_flag=relative_move_flag)
    _md.update(md or {})

    def move_out():
        yield from bps.mv(zps.sx, outs[0], zps.sy, outs[1], zps.sz, outs[2])
        yield from bps.mv(zps.pi_r, outs[3])

    def move_in():
        yield from bps.mv(zps.sx, ini[0], zps.sy, ini[1], zps.sz, ini[2])
        yield from bps.mv(zps.pi_r, ini[3])

    def take(stream):
        yield from bps.trigger_and_read(detectors + motors, name=stream)

    @bpp.stage_decorator(detectors + motors)
    @bpp.run_decorator(md=_md)
    def inner():
        yield from bps.mv(txm.shutter, 0)
        yield from take("dark")
        yield from bps.mv(txm.shutter, 1)
        for i, e in enumerate(eng):
            yield from bps.mv(txm.XEng, e)
            yield from take("primary")
            if abort_after is not None and i + 1 >= abort_after:
                logger.info("%s: aborting after %d energies as requested", plan_name, i + 1)
                raise RequestAbort(f"abort_after={abort_after}")
            if plan_name == "xanes_scan2":
                yield from move_out()
                yield from take("flat")
                yield from move_in()
        if plan_name == "xanes_scan":
            yield from move_out()
            for e in eng:
                yield from bps.mv(txm.XEng, e)
                yield from take("flat")
            yield from move_in()
        yield from bps.mv(txm.shutter, 0)

    yield from bps.mv(andor.cam.num_images, chunk_size, andor.cam.acquire_time, exposure_time)
    e_ini = txm.XEng.position
    uid = yield from inner()
    yield from bps.mv(txm.XEng, e_ini)
    return uid


def xanes_scan2(
    txm: SimulatedTXM,
    eng_list: Sequence[float] | None = None,
    *,
    chunk_size: int = 5,
    exposure_time: float = 0.05,
    out_x: float | None = None,
    out_y: float | None = DEFAULT_OUT_Y_UM,
    out_z: float | None = None,
    out_r: float | None = None,
    relative_move_flag: int = 1,
    note: str = "",
    md: dict | None = None,
    abort_after: int | None = None,
):
    """FXI ``xanes_scan2``: a flat (sample out) right after each energy's sample frames.

    Parameters
    ----------
    txm : SimulatedTXM
    eng_list : sequence of float, optional
        Energies in keV (default: the seed study's 106 points, :data:`DEFAULT_ENG_LIST_KEV`).
    chunk_size : int
        Frames per event (also the number of dark and flat frames).
    exposure_time : float
        Seconds per frame.
    out_x, out_y, out_z, out_r : float, optional
        Stage move that takes the sample out for flats (relative when ``relative_move_flag``).
    note : str
    md : dict, optional
        Extra start metadata.
    abort_after : int, optional
        Abort the run (exit status ``"abort"``) right after this many ``primary`` events, before
        the corresponding flat: for testing incomplete runs.

    Returns
    -------
    str
        The run uid (from ``RE(...)``).
    """
    return (
        yield from _xanes(
            "xanes_scan2",
            txm,
            eng_list,
            chunk_size=chunk_size,
            exposure_time=exposure_time,
            out_x=out_x,
            out_y=out_y,
            out_z=out_z,
            out_r=out_r,
            relative_move_flag=relative_move_flag,
            note=note,
            md=md,
            abort_after=abort_after,
        )
    )


def xanes_scan(
    txm: SimulatedTXM,
    eng_list: Sequence[float] | None = None,
    *,
    chunk_size: int = 5,
    exposure_time: float = 0.05,
    out_x: float | None = None,
    out_y: float | None = DEFAULT_OUT_Y_UM,
    out_z: float | None = None,
    out_r: float | None = None,
    relative_move_flag: int = 1,
    note: str = "",
    md: dict | None = None,
    abort_after: int | None = None,
):
    """FXI ``xanes_scan``: all sample energies first, then one flat per energy (sample out).

    Parameters are those of :func:`xanes_scan2`.
    """
    return (
        yield from _xanes(
            "xanes_scan",
            txm,
            eng_list,
            chunk_size=chunk_size,
            exposure_time=exposure_time,
            out_x=out_x,
            out_y=out_y,
            out_z=out_z,
            out_r=out_r,
            relative_move_flag=relative_move_flag,
            note=note,
            md=md,
            abort_after=abort_after,
        )
    )


_PLANS = {"xanes_scan2": xanes_scan2, "xanes_scan": xanes_scan}


def survey(
    txm: SimulatedTXM,
    fovs: Sequence[FieldOfView],
    *,
    plan: str = "xanes_scan2",
    eng_list: Sequence[float] | None = None,
    md: dict | None = None,
    **plan_kwargs,
):
    """Visit every field of view (moving ``zps`` to its stage position) and scan it: one run each.

    Parameters
    ----------
    txm : SimulatedTXM
    fovs : sequence of FieldOfView
        Loaded onto the stage at their ``stage_xy_um`` (replacing the current sample).
    plan : {"xanes_scan2", "xanes_scan"}
    eng_list : sequence of float, optional
        Energies in keV (default :data:`DEFAULT_ENG_LIST_KEV`).
    md : dict, optional
        Extra start metadata for every run; each run also gets
        ``survey = {"uid", "index", "n_fovs"}``.
    **plan_kwargs
        Passed to the scan plan (``chunk_size``, ``exposure_time``, ...).

    Returns
    -------
    list of str
        Run uids, in visiting order.
    """
    if plan not in _PLANS:
        raise ValueError(f"plan must be one of {sorted(_PLANS)}, got {plan!r}")
    fovs = list(fovs)
    txm.load_sample(fovs)
    survey_uid = str(uuid.uuid4())
    uids = []
    for i, fov in enumerate(fovs):
        x, y = fov.stage_xy_um
        yield from bps.mv(txm.zps.sx, x, txm.zps.sy, y)
        run_md = {**(md or {}), "survey": {"uid": survey_uid, "index": i, "n_fovs": len(fovs)}}
        uid = yield from _PLANS[plan](txm, eng_list, md=run_md, **plan_kwargs)
        uids.append(uid)
    return uids
