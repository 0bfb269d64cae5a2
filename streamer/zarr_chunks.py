"""Read rows of a local zarr v3 array by decoding its chunk files directly.

tiled stores inline detector frames as zarr v3 arrays chunked along the event axis only
(e.g. ``(64, 1, 512, 512)`` chunks of a ``(106, 1, 512, 512)`` array) with the codecs
``bytes`` + ``zstd``. For that layout, reading rows is: read each chunk file, decompress it
straight into the output array, done. :func:`zarr_v3_row_reader` returns such a reader, or
``None`` for any other layout (sharding, filters, other compressors, chunked along other axes,
zarr v2), so the caller falls back to the ``zarr`` package. Decoding directly skips the
``zarr`` package's asynchronous machinery and a copy: about 2.5x faster here. Whole chunks
decompress straight into the caller's buffer (``read(start, stop, out)``), which
:class:`streamer.archived_arrays.ArrayRows` reuses from block to block: no fresh pages per block
(decoding into fresh memory measured 1.8x slower than into reused memory here).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["zarr_v3_row_reader", "zstd_content_size"]


def _plain_layout(meta: dict) -> tuple[tuple, tuple, np.dtype, str, str | None] | None:
    """``(shape, chunk_shape, dtype, separator, compressor)`` if the layout is the plain one."""
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        return None
    if meta.get("storage_transformers"):
        return None
    grid = meta.get("chunk_grid") or {}
    keys = meta.get("chunk_key_encoding") or {}
    if grid.get("name") != "regular" or keys.get("name") != "default":
        return None
    shape = tuple(int(n) for n in meta.get("shape", ()))
    chunks = tuple(int(n) for n in grid.get("configuration", {}).get("chunk_shape", ()))
    if not shape or len(chunks) != len(shape) or chunks[1:] != shape[1:] or chunks[0] < 1:
        return None  # only chunked along rows
    codecs = list(meta.get("codecs") or [])
    if not codecs or codecs[0].get("name") != "bytes":
        return None
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    compressor = None
    if len(codecs) == 2 and codecs[1].get("name") == "zstd":
        compressor = "zstd"
    elif len(codecs) != 1:
        return None
    try:
        dtype = np.dtype(meta["data_type"]).newbyteorder("<" if endian == "little" else ">")
    except (KeyError, TypeError):
        return None
    separator = (keys.get("configuration") or {}).get("separator", "/")
    return shape, chunks, dtype, separator, compressor


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_content_size(frame: bytes) -> int | None:
    """Decompressed size declared in a zstd frame's header (RFC 8878, 3.1.1), or None.

    None when the header does not declare it, or ``frame`` is not a single zstd frame start.

    >>> from numcodecs import Zstd
    >>> zstd_content_size(Zstd().encode(bytes(1000)))
    1000
    >>> zstd_content_size(b"not zstd") is None
    True
    """
    if len(frame) < 6 or frame[:4] != _ZSTD_MAGIC:
        return None
    descriptor = frame[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    width = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if width == 0 or len(frame) < pos + width:
        return None
    size = int.from_bytes(frame[pos : pos + width], "little")
    return size + 256 if width == 2 else size


def zarr_v3_row_reader(
    directory: str | Path, *, shape: tuple, dtype: np.dtype
) -> Callable[[int, int], np.ndarray] | None:
    """A ``read(start, stop)`` of rows of the zarr v3 array in ``directory``, or None.

    Parameters
    ----------
    directory
        The array's directory (holding ``zarr.json``).
    shape, dtype
        What the caller expects (the catalog's structure); any mismatch, or a file dtype that
        does not cast safely to ``dtype``, gives None.

    Examples
    --------
    >>> import tempfile, zarr
    >>> d = tempfile.mkdtemp()
    >>> z = zarr.create_array(d, shape=(5, 2, 3), chunks=(2, 2, 3), dtype="u2")
    >>> z[:] = np.arange(30, dtype="u2").reshape(5, 2, 3)
    >>> read = zarr_v3_row_reader(d, shape=(5, 2, 3), dtype=np.dtype("u2"))
    >>> bool((read(1, 4) == np.arange(30).reshape(5, 2, 3)[1:4]).all())
    True
    >>> out = np.empty((4, 2, 3), "u2")
    >>> read(0, 4, out) is out and bool((out == np.arange(24).reshape(4, 2, 3)).all())
    True
    """
    directory = Path(directory)
    try:
        meta = json.loads((directory / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    layout = _plain_layout(meta)
    if layout is None:
        return None
    file_shape, chunks, file_dtype, separator, compressor = layout
    if file_shape != tuple(shape) or not np.can_cast(file_dtype, dtype, "safe"):
        return None
    fill = meta.get("fill_value", 0)
    n_rest = len(file_shape) - 1
    codec = None
    if compressor == "zstd":
        from numcodecs import Zstd

        codec = Zstd()

    def chunk_path(index: int) -> Path:
        parts = [str(index)] + ["0"] * n_rest
        if separator == "/":
            return directory.joinpath("c", *parts)
        return directory / separator.join(["c", *parts])

    row_bytes = int(np.prod(chunks[1:], dtype=np.int64)) * file_dtype.itemsize
    chunk_bytes = chunks[0] * row_bytes
    scratch: list[np.ndarray] = []  # one chunk of decoded rows, reused (edge chunks, casts)

    def decode_into(index: int, dst: np.ndarray) -> None:
        """Decode chunk ``index`` into ``dst`` (C-contiguous, exactly one chunk of file dtype)."""
        path = chunk_path(index)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            dst[...] = fill
            return
        if codec is not None and zstd_content_size(raw) == chunk_bytes:
            raw = codec.decode(raw, out=dst.reshape(-1).view(np.uint8))  # checked size: in place
        elif codec is not None:
            raw = codec.decode(raw)  # size undeclared (or wrong: reported below)
        n_bytes = memoryview(raw).nbytes
        if n_bytes != chunk_bytes:
            raise OSError(f"zarr chunk {path} holds {n_bytes} bytes, not {chunk_bytes}")
        if not np.may_share_memory(np.frombuffer(raw, np.uint8), dst):
            dst[...] = np.frombuffer(raw, dtype=file_dtype).reshape(chunks)

    def chunk_rows(index: int) -> np.ndarray:
        if not scratch:
            scratch.append(np.empty(chunks, dtype=file_dtype))
        decode_into(index, scratch[0])
        return scratch[0]

    def read(start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start:stop`` into ``out`` (or a new array): whole chunks decode in place."""
        if out is None:
            out = np.empty((stop - start, *file_shape[1:]), dtype=dtype)
        row = start
        while row < stop:
            index, offset = divmod(row, chunks[0])
            take = min(stop - row, chunks[0] - offset)
            dst = out[row - start : row - start + take]
            if offset == 0 and take == chunks[0] and dtype == file_dtype and dst.flags.c_contiguous:
                decode_into(index, dst)  # straight into the caller's rows
            else:
                dst[...] = chunk_rows(index)[offset : offset + take]
            row += take
        return out

    read.accepts_out = True  # type: ignore[attr-defined]
    return read
