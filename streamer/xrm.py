"""Reader for Xradia/Zeiss ``.xrm`` single-frame files (SSRL 6-2c and other Xradia TXMs).

An ``.xrm`` file is an OLE2 compound document (read with :mod:`olefile`): the image is the stream
``ImageData1/Image1`` (``ImageHeight`` x ``ImageWidth`` values of type ``DataType``, little-endian)
and the acquisition metadata are small binary streams under ``ImageInfo/``. Some beamline macros
leave ``ImageInfo/Energy`` at 0 and write the energy into the file name (``..._08324.0_eV_...``);
:func:`read_xrm` then takes it from the name. Reference (flat-field) frames carry ``_ref_`` in
their names at SSRL.

Examples
--------
>>> energy_from_filename("rep01_20161456_ssrl-test-data_08324.0_eV_001of003.xrm")
8324.0
>>> energy_from_filename("no_energy_here.xrm") is None
True
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import olefile

__all__ = ["XrmFormatError", "energy_from_filename", "read_xrm"]

logger = logging.getLogger(__name__)

#: Xradia ``DataType`` codes of the image stream.
XRM_DTYPES = {
    2: np.int8,
    3: np.uint8,
    4: np.int16,
    5: np.uint16,
    6: np.int32,
    7: np.uint32,
    10: np.float32,
    11: np.float64,
}

# ImageInfo streams read into the metadata: name -> (stream, numpy dtype); "S" is a C string.
_FIELDS = {
    "width": ("ImageWidth", "<i4"),
    "height": ("ImageHeight", "<i4"),
    "data_type": ("DataType", "<i4"),
    "exposure_s": ("ExpTimes", "<f4"),
    "pixel_size_um": ("PixelSize", "<f4"),
    "energy_ev_header": ("Energy", "<f4"),
    "ion_chamber_current": ("IonChamberCurrent", "<f4"),
    "horizontal_bin": ("HorizontalBin", "<i4"),
    "vertical_bin": ("VerticalalBin", "<i4"),  # sic: Xradia's spelling
    "x_um": ("XPosition", "<f4"),
    "y_um": ("YPosition", "<f4"),
    "z_um": ("ZPosition", "<f4"),
    "angle_deg": ("Angles", "<f4"),
    "optical_magnification": ("OpticalMagnification", "<f4"),
    "date": ("Date", "S"),
    "camera": ("CameraName", "S"),
    "objective": ("ObjectiveName", "S"),
}

_ENERGY_IN_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)_?eV", re.IGNORECASE)


class XrmFormatError(ValueError):
    """The file is not a readable single-image ``.xrm``."""


def energy_from_filename(name: str | os.PathLike) -> float | None:
    """Energy (eV) written in an Xradia file name as ``<number>_eV`` or ``<number>eV``, or None."""
    match = _ENERGY_IN_NAME.search(Path(name).name)
    return float(match.group(1)) if match else None


def _read_field(ole: olefile.OleFileIO, stream: str, dtype: str):
    path = f"ImageInfo/{stream}"
    if not ole.exists(path):
        return None
    raw = ole.openstream(path).read()
    if dtype == "S":
        return raw.split(b"\x00", 1)[0].decode("latin-1").strip()
    values = np.frombuffer(raw[: len(raw) - len(raw) % np.dtype(dtype).itemsize], dtype=dtype)
    if values.size == 0:
        return None
    return values.item() if values.size == 1 else values.copy()


def read_xrm(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read the image and metadata of an ``.xrm`` file.

    Parameters
    ----------
    path : path-like
        The ``.xrm`` file.

    Returns
    -------
    image : ndarray, shape (height, width)
        In the file's data type (``uint16`` from the camera).
    metadata : dict
        ``width``, ``height``, ``data_type``, ``exposure_s``, ``pixel_size_um``,
        ``ion_chamber_current``, binning, stage positions (``x_um``, ``y_um``, ``z_um``),
        ``angle_deg``, ``date``, ``camera``, ``objective`` (those present), plus ``energy_ev``
        (the header's energy, or the file name's when the header says 0; None if neither),
        ``energy_source`` (``"header"``, ``"filename"`` or None), ``is_reference`` (``_ref_`` in
        the name) and ``path``.

    Raises
    ------
    XrmFormatError
        Not an OLE2 file, no image stream, unknown data type or inconsistent size.
    """
    path = Path(path)
    if not olefile.isOleFile(str(path)):
        raise XrmFormatError(f"{path} is not an OLE2 (Xradia .xrm) file")
    with olefile.OleFileIO(str(path)) as ole:
        meta = {}
        for key, (stream, dtype) in _FIELDS.items():
            value = _read_field(ole, stream, dtype)
            if value is not None:
                meta[key] = value
        if not ole.exists("ImageData1/Image1"):
            raise XrmFormatError(f"{path} has no ImageData1/Image1 stream")
        raw = ole.openstream("ImageData1/Image1").read()
    code = meta.get("data_type")
    if code not in XRM_DTYPES:
        raise XrmFormatError(f"{path}: unsupported ImageInfo/DataType {code!r}")
    dtype = np.dtype(XRM_DTYPES[code]).newbyteorder("<")
    height, width = int(meta.get("height", 0)), int(meta.get("width", 0))
    if height * width * dtype.itemsize != len(raw):
        raise XrmFormatError(
            f"{path}: image stream has {len(raw)} bytes, expected {height}x{width} of {dtype}"
        )
    image = np.frombuffer(raw, dtype=dtype).reshape(height, width).astype(dtype.newbyteorder("="))
    header_energy = meta.pop("energy_ev_header", None)
    if header_energy:
        meta["energy_ev"], meta["energy_source"] = float(header_energy), "header"
    else:
        from_name = energy_from_filename(path)
        meta["energy_ev"] = from_name
        meta["energy_source"] = "filename" if from_name is not None else None
        if from_name is None:
            logger.warning("%s: no energy in the header nor in the file name", path.name)
    meta["is_reference"] = "_ref_" in path.name.lower()
    meta["path"] = str(path)
    return image, meta
