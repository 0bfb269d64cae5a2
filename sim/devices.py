"""ophyd devices of the simulated TXM, named like NSLS-II FXI's (18-ID).

``XEng`` (energy, keV) and the ``zps`` stage axes are :class:`TimedAxis`: soft axes whose moves
take simulated time. :class:`Andor` is the camera: on trigger it asks the simulator for a stack of
``cam.num_images`` uint16 frames and publishes it inline or, when ``external``, writes it to an
area-detector-style HDF5 file (``/entry/data/data``; spec ``AD_HDF5``, ``frame_per_point`` in the
resource, ``point_number`` in each datum) and publishes the datum id. :class:`IonChamber` is the
``ic3`` flux monitor. The physics lives in :class:`sim.instrument.SimulatedTXM`.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
from event_model import compose_resource
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import SynAxis
from ophyd.status import StatusBase

if TYPE_CHECKING:
    from sim.instrument import SimulatedTXM

__all__ = ["Andor", "Clock", "IonChamber", "TimedAxis", "ZonePlateStage"]


def _done() -> StatusBase:
    status = StatusBase()
    status.set_finished()
    return status


class Clock:
    """Simulated time (s) shared by the devices; advanced by moves and exposures."""

    def __init__(self):
        self.t = 0.0

    def advance(self, dt: float) -> None:
        self.t += float(dt)


class TimedAxis(SynAxis):
    """A :class:`ophyd.sim.SynAxis` whose moves take simulated time (no real sleeping)."""

    def __init__(self, *args, move_time_s: float = 0.5, egu: str = "um", **kwargs):
        super().__init__(*args, egu=egu, **kwargs)
        self.move_time_s = move_time_s
        self.clock: Clock | None = None

    def set(self, value, **kwargs):
        if self.clock is not None:
            self.clock.advance(self.move_time_s)
        return super().set(value, **kwargs)

    def describe(self):
        out = super().describe()
        for key in out.values():
            key["dtype_numpy"] = "<f8"
        return out


class ZonePlateStage(Device):
    """FXI sample stage ``zps``: ``sx``, ``sy``, ``sz`` (um) and rotation ``pi_r`` (degrees)."""

    sx = Cpt(TimedAxis, move_time_s=1.0, egu="um")
    sy = Cpt(TimedAxis, move_time_s=1.0, egu="um")
    sz = Cpt(TimedAxis, move_time_s=1.0, egu="um")
    pi_r = Cpt(TimedAxis, move_time_s=1.0, egu="deg")


class _ImageSignal(Signal):
    """Holds the last frame stack (inline) or its datum id (external)."""

    def describe(self):
        cam = self.parent
        k = int(cam.cam.num_images.get())
        key = {
            "source": f"SIM:{self.name}",
            "dtype": "array",
            "dtype_numpy": "<u2",
            "shape": [k, *cam.frame_shape],
            "dims": ["frame", "row", "col"],
            "units": "counts",
        }
        if cam.external:
            key["external"] = "FILESTORE:"
        return {self.name: key}


class _AndorCam(Device):
    num_images = Cpt(Signal, value=5, kind="config")
    acquire_time = Cpt(Signal, value=0.05, kind="config")


class Andor(Device):
    """Simulated Andor camera; ``Andor_image`` is a ``(num_images, ny, nx)`` uint16 stack."""

    cam = Cpt(_AndorCam)
    image = Cpt(_ImageSignal, kind="normal")

    def __init__(self, *args, txm: SimulatedTXM, external: bool, data_dir: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self._txm = txm
        self.external = external
        self.data_dir = Path(data_dir)
        self._asset_docs_cache: list[tuple[str, dict]] = []
        self._file: h5py.File | None = None
        self._resource = None
        self._points = None
        self._fpp = None
        self.last_frames: np.ndarray | None = None

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self._txm.frame_shape

    def _open_resource(self, k: int) -> None:
        self._close_file()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex[:16]}.h5"
        self._file = h5py.File(self.data_dir / name, "w", locking=False)
        ny, nx = self.frame_shape
        self._file.create_dataset(
            "/entry/data/data",
            shape=(0, ny, nx),
            maxshape=(None, ny, nx),
            chunks=(1, ny, nx),
            dtype="<u2",
        )
        bundle = compose_resource(
            start={"uid": "replaced-by-the-RunEngine"},
            spec="AD_HDF5",
            root=str(self.data_dir),
            resource_path=name,
            resource_kwargs={"frame_per_point": k},
        )
        resource = dict(bundle.resource_doc)
        resource.pop("run_start", None)
        self._resource = bundle
        self._asset_docs_cache.append(("resource", resource))
        self._points = itertools.count()
        self._fpp = k

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None

    def stage(self):
        if self.external:
            self._open_resource(int(self.cam.num_images.get()))
        return super().stage()

    def unstage(self):
        self._close_file()
        self._resource = None
        return super().unstage()

    def trigger(self):
        k = int(self.cam.num_images.get())
        if k < 1:
            raise ValueError(f"Andor.cam.num_images must be >= 1, got {k}")
        frames = self._txm.acquire(k, float(self.cam.acquire_time.get()))
        self.last_frames = frames
        if not self.external:
            self.image.put(frames)
            return _done()
        if self._file is None or self._fpp != k:
            # not staged, or the chunk size changed: a new file, as a re-staged AD plugin does
            self._open_resource(k)
        ds = self._file["/entry/data/data"]
        n = ds.shape[0]
        ds.resize(n + k, axis=0)
        ds[n : n + k] = frames
        self._file.flush()
        point = next(self._points)
        datum = dict(self._resource.compose_datum(datum_kwargs={"point_number": point}))
        self._asset_docs_cache.append(("datum", datum))
        self._txm.acquisitions[-1]["datum_id"] = datum["datum_id"]
        self.image.put(datum["datum_id"])
        return _done()

    def collect_asset_docs(self):
        items, self._asset_docs_cache = self._asset_docs_cache, []
        yield from items


class IonChamber(Signal):
    """``ic3``: incident flux during the last exposure (arbitrary units, 0.05 % noise)."""

    def __init__(self, *args, txm: SimulatedTXM, **kwargs):
        super().__init__(*args, value=0.0, **kwargs)
        self._txm = txm

    def trigger(self):
        self.put(self._txm.ic3_value())
        return _done()

    def describe(self):
        out = super().describe()
        out[self.name].update(dtype_numpy="<f8", units="a.u.")
        return out
