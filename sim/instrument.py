"""Simulated NSLS-II FXI (18-ID) full-field TXM: ophyd devices named like the beamline's.

Devices (ophyd names as at FXI): ``XEng`` (monochromator energy, keV), ``Andor`` (camera; its
``Andor_image`` reading is a stack of ``Andor.cam.num_images`` uint16 frames), ``ic3`` (incident
flux monitor), ``zps`` (sample stage: ``zps_sx``, ``zps_sy``, ``zps_sz``, ``zps_pi_r``; um and
degrees) and ``shutter`` (1 open, 0 closed), defined in :mod:`sim.devices`.
:class:`SimulatedTXM` bundles them with the sample (fields of view placed at stage positions),
the beam model and a simulated clock.

Counts follow ``I = I0(E, t) * flat(x, y, E) * exp(-OD(x - drift(t))) + dark`` with shot noise
(see :mod:`sim.beam`). A field of view is in the beam when the stage is within half a field of its
``stage_xy_um``; moving the stage elsewhere (``out_x``/``out_y``) gives flat fields. Small stage
offsets and the drift shift the image. Frames go out inline or, with ``external=True``, as
area-detector HDF5 files (spec ``AD_HDF5``, dataset ``/entry/data/data``) in ``data_dir``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from ophyd import Signal

from sim.beam import Beam, Drift, noisy_counts, shift_image
from sim.devices import Andor, Clock, IonChamber, TimedAxis, ZonePlateStage
from sim.fov import FieldOfView
from sim.sample import make_field_of_view

__all__ = ["EXTERNAL_MIN_PIXELS", "Andor", "SimulatedTXM", "TimedAxis", "ZonePlateStage"]

logger = logging.getLogger(__name__)

#: Frames with at least this many pixels go out as external HDF5 data when ``external=None``.
EXTERNAL_MIN_PIXELS = 512 * 512


class SimulatedTXM:
    """The simulated FXI TXM: devices, sample, beam, drift and a simulated clock.

    Parameters
    ----------
    fov : FieldOfView, optional
        The sample; default a new 8-particle field of ``frame_shape`` from ``seed``.
    seed : int
        Seed of the beam, drift and detector noise (the sample has its own seed).
    frame_shape : (ny, nx), optional
        Detector frame shape; default ``fov.shape`` (256x256 without a fov). Must equal the
        shape of every field of view.
    external : bool, optional
        Write frames as AD_HDF5 external data (default: when a frame has at least
        :data:`EXTERNAL_MIN_PIXELS` pixels).
    data_dir : path, optional
        Directory for the HDF5 files (default: a new temporary directory, logged).
    drift_px : float
        Drift amplitude (pixels over about 10 minutes); 0 disables drift.
    exposure_s : float
        Initial ``Andor.cam.acquire_time``.
    beam : dict, optional
        Options of :class:`sim.beam.Beam` (``counts_per_s``, ``dark_level``, ...).
    ic3_noise : float
        Relative noise of the ``ic3`` reading.

    Attributes
    ----------
    XEng, Andor, ic3, zps, shutter : ophyd devices
    acquisitions : list of dict
        One record per camera trigger: time, energy, shutter, field of view in the beam, drift,
        total image shift, incident counts (ground truth, never put in documents).
    """

    def __init__(
        self,
        *,
        fov: FieldOfView | None = None,
        seed: int = 0,
        frame_shape: tuple[int, int] | None = None,
        external: bool | None = None,
        data_dir: str | Path | None = None,
        drift_px: float = 1.0,
        exposure_s: float = 0.05,
        beam: dict | None = None,
        ic3_noise: float = 5e-4,
    ):
        if frame_shape is None:
            frame_shape = fov.shape if fov is not None else (256, 256)
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        if fov is None:
            fov = make_field_of_view(shape=self.frame_shape, seed=seed)
        self.seed = seed
        self.clock = Clock()
        self.beam = Beam(self.frame_shape, seed=seed, **(beam or {}))
        self.drift_px = float(drift_px)
        self.ic3_noise = float(ic3_noise)
        self._rng = np.random.default_rng([seed, 0xCA3E7A])
        self._ic_rng = np.random.default_rng([seed, 0x1C3])
        if external is None:
            external = self.frame_shape[0] * self.frame_shape[1] >= EXTERNAL_MIN_PIXELS
        if external and data_dir is None:
            data_dir = tempfile.mkdtemp(prefix="txm-sim-")
            logger.info("simulated frames go to %s", data_dir)
        self.data_dir = Path(data_dir) if data_dir is not None else None

        self.XEng = TimedAxis(name="XEng", value=7.7, egu="keV", precision=5, move_time_s=0.5)
        self.zps = ZonePlateStage(name="zps")
        self.shutter = Signal(name="shutter", value=1)
        self.ic3 = IonChamber(name="ic3", txm=self)
        self.Andor = Andor(
            name="Andor", txm=self, external=bool(external), data_dir=self.data_dir or "."
        )
        self.Andor.cam.acquire_time.put(float(exposure_s))
        for axis in (self.XEng, self.zps.sx, self.zps.sy, self.zps.sz, self.zps.pi_r):
            axis.clock = self.clock
        self.acquisitions: list[dict] = []
        self.fovs: list[FieldOfView] = []
        self._arrival: dict[int, float] = {}
        self._drifts: dict[int, Drift] = {}
        self.set_field_of_view(fov)

    # -- sample -----------------------------------------------------------------------------
    def load_sample(self, fovs: list[FieldOfView]) -> None:
        """Place fields of view on the stage at their ``stage_xy_um`` (replacing the sample)."""
        fovs = list(fovs)
        for f in fovs:
            if f.shape != self.frame_shape:
                raise ValueError(f"field of view shape {f.shape} != frame shape {self.frame_shape}")
        positions = [tuple(f.stage_xy_um) for f in fovs]
        if len(set(positions)) != len(positions):
            raise ValueError(
                "fields of view share a stage position; give them distinct stage_xy_um"
            )
        self.fovs = fovs
        self._arrival = {}
        self._drifts = {
            i: Drift(
                seed=int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0]),
                amplitude_px=self.drift_px,
            )
            for i in range(len(fovs))
        }

    def set_field_of_view(self, fov: FieldOfView) -> None:
        """Load ``fov`` as the only sample and put it in the beam (moves ``zps`` directly)."""
        self.load_sample([fov])
        x, y = fov.stage_xy_um
        self.zps.sx.set(x).wait()
        self.zps.sy.set(y).wait()

    def _in_beam(self) -> tuple[int, FieldOfView, tuple[float, float]] | None:
        """Index, field of view and stage offset (um, (dy, dx)) of the sample in the beam."""
        x, y = self.zps.sx.position, self.zps.sy.position
        for i, f in enumerate(self.fovs):
            half = 0.5 * np.array(f.shape) * f.pixel_size_um
            dy, dx = y - f.stage_xy_um[1], x - f.stage_xy_um[0]
            if abs(dy) < half[0] and abs(dx) < half[1]:
                return i, f, (dy, dx)
        return None

    @property
    def fov_in_beam(self) -> FieldOfView | None:
        """The field of view under the beam at the current stage position, or None."""
        hit = self._in_beam()
        return hit[1] if hit else None

    # -- physics --------------------------------------------------------------------------------
    def energy_ev(self) -> float:
        return float(self.XEng.position) * 1000.0

    def image_shift_px(self) -> tuple[float, float] | None:
        """Current total image shift (drift minus stage offset, pixels) or None if no sample."""
        hit = self._in_beam()
        if hit is None:
            return None
        i, f, (dy, dx) = hit
        t0 = self._arrival.setdefault(i, self.clock.t)
        drift = self._drifts[i](self.clock.t - t0)
        return (drift[0] - dy / f.pixel_size_um, drift[1] - dx / f.pixel_size_um)

    def transmission(self, energy_ev: float) -> tuple[np.ndarray, dict]:
        """Sample transmission ``exp(-OD)`` now (ones when no sample) and its truth record."""
        hit = self._in_beam()
        if hit is None:
            return np.ones(self.frame_shape, np.float32), {"fov_index": None, "shift_px": None}
        i, f, _ = hit
        shift = self.image_shift_px()
        t0 = self._arrival[i]
        od = shift_image(f.od([energy_ev])[0], shift)
        return np.exp(-od), {
            "fov_index": i,
            "fov_seed": f.seed,
            "drift_px": list(self._drifts[i](self.clock.t - t0)),
            "shift_px": list(shift),
        }

    def acquire(self, n_frames: int, exposure_s: float) -> np.ndarray:
        """Expose ``n_frames`` frames now: ``(n_frames, ny, nx)`` uint16; logs the truth."""
        energy = self.energy_ev()
        is_open = bool(self.shutter.get())
        # the record is taken at mid-exposure: drift, shift and I0 all refer to that time
        self.clock.advance(0.5 * n_frames * exposure_s)
        t_mid = self.clock.t
        i0 = float(self.beam.i0(energy, t_mid))
        if is_open:
            trans, record = self.transmission(energy)
            expected = (i0 * exposure_s) * self.beam.flat(energy) * trans
        else:
            record = {"fov_index": None, "shift_px": None}
            expected = np.zeros(self.frame_shape, np.float32)
        frames = noisy_counts(
            expected, n_frames, self._rng, dark=self.beam.dark, read_noise=self.beam.read_noise
        )
        self.clock.advance(0.5 * n_frames * exposure_s + 0.01 * n_frames)
        self.acquisitions.append(
            {
                "index": len(self.acquisitions),
                "time_s": t_mid,
                "energy_ev": energy,
                "shutter_open": is_open,
                "n_frames": n_frames,
                "exposure_s": exposure_s,
                "i0_counts_per_s": i0,
                "ring_current_ma": float(self.beam.ring_current(t_mid)),
                "stage_xy_um": [float(self.zps.sx.position), float(self.zps.sy.position)],
                **record,
            }
        )
        return frames

    def ic3_value(self) -> float:
        """Ion-chamber reading: proportional to the flux of the last exposure (or of now)."""
        last = self.acquisitions[-1] if self.acquisitions else None
        if last is not None and last["shutter_open"]:
            i0 = last["i0_counts_per_s"]
        elif last is not None:
            i0 = 0.0
        else:
            i0 = float(self.beam.i0(self.energy_ev(), self.clock.t))
        value = 1e-3 * i0 * (1.0 + self.ic3_noise * self._ic_rng.standard_normal())
        if last is not None:
            last.setdefault("ic3", value)
        return value

    def expected_od(self, energy_ev: float, shift_px=None) -> np.ndarray:
        """Noiseless planted OD of the field in the beam at ``energy_ev``, shifted as given."""
        f = self.fov_in_beam
        if f is None:
            return np.zeros(self.frame_shape, np.float32)
        od = f.od([energy_ev])[0]
        return shift_image(od, tuple(shift_px)) if shift_px is not None else od

    @property
    def devices(self) -> dict:
        """The ophyd devices by their FXI names."""
        return {
            "XEng": self.XEng,
            "Andor": self.Andor,
            "ic3": self.ic3,
            "zps": self.zps,
            "shutter": self.shutter,
        }
