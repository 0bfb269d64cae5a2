"""Handlers for external detector data referenced by bluesky resource/datum documents.

``AD_HDF5`` is the area-detector HDF5 file-plugin layout used at NSLS-II FXI (and written by the
simulator): frames in ``/entry/data/data`` of shape ``(n_frames, ny, nx)``, ``frame_per_point``
frames per event; datum ``point_number`` ``i`` selects frames ``[i * fpp, (i + 1) * fpp)``.

Use with :class:`event_model.Filler`::

    filler = event_model.Filler(HANDLER_REGISTRY, inplace=False)

This module must not import the simulator: real beamline data goes through it too.
"""

from __future__ import annotations

import logging
import os

import h5py
import numpy as np

__all__ = ["HANDLER_REGISTRY", "AreaDetectorHDF5Handler"]

logger = logging.getLogger(__name__)


class AreaDetectorHDF5Handler:
    """Read the frame stack of one event from an area-detector HDF5 file.

    Parameters
    ----------
    filename : str
        Path of the HDF5 file (the Filler joins ``root`` and ``resource_path``).
    frame_per_point : int
        Frames per event (FXI's ``chunk_size``).
    dataset : str
        Dataset holding the frames.

    Notes
    -----
    The file is opened read-only without HDF5 file locking, so that frames can be read while
    the writer (detector or simulator) still has the file open; when a point lies beyond the
    frames seen so far the file is reopened once, so frames appended later are found.
    """

    specs = frozenset({"AD_HDF5"})

    def __init__(self, filename: str, frame_per_point: int = 1, dataset: str = "/entry/data/data"):
        if int(frame_per_point) < 1:
            raise ValueError(f"frame_per_point must be >= 1, got {frame_per_point}")
        self._filename = os.fspath(filename)
        self._fpp = int(frame_per_point)
        self._dataset_name = dataset
        self._file: h5py.File | None = None

    def _dataset(self) -> h5py.Dataset:
        if self._file is None:
            self._file = h5py.File(self._filename, "r", locking=False)
        try:
            ds = self._file[self._dataset_name]
        except KeyError:
            raise KeyError(f"{self._filename} has no dataset {self._dataset_name!r}") from None
        return ds

    def __call__(self, point_number: int) -> np.ndarray:
        """Frames of event ``point_number``: array of shape ``(frame_per_point, ny, nx)``."""
        if int(point_number) < 0:
            raise IndexError(f"point_number must be >= 0, got {point_number}")
        start = int(point_number) * self._fpp
        stop = start + self._fpp
        ds = self._dataset()
        if stop > ds.shape[0]:
            # another process may have appended frames since we opened the file: reopen once
            self.close()
            ds = self._dataset()
        if stop > ds.shape[0]:
            raise IndexError(
                f"{self._filename}: point {point_number} needs frames [{start}, {stop}) "
                f"but the file holds {ds.shape[0]}"
            )
        return ds[start:stop]

    def get_file_list(self, datum_kwargs_gen) -> list[str]:
        """Files this handler reads (for data-management tools)."""
        return [self._filename]

    def close(self) -> None:
        """Close the HDF5 file."""
        if self._file is not None:
            self._file.close()
            self._file = None


#: ``spec -> handler class`` for :class:`event_model.Filler`.
HANDLER_REGISTRY: dict[str, type] = {"AD_HDF5": AreaDetectorHDF5Handler}
