"""A pickle-free serializer for bluesky documents on the wire (0MQ proxy, files).

bluesky's 0MQ ``Publisher`` and ``RemoteDispatcher`` use :mod:`pickle` by default, which executes
code from the network on load. txm-streamer uses this module on both ends instead::

    # RunEngine side
    from bluesky.callbacks.zmq import Publisher
    from streamer.wire import dumps
    RE.subscribe(Publisher("127.0.0.1:5567", serializer=dumps))

    # analyzer side (what ``txm-streamer serve`` does)
    from bluesky.callbacks.zmq import RemoteDispatcher
    from streamer.wire import loads
    RemoteDispatcher("127.0.0.1:5568", deserializer=loads)

The format is msgpack with one extension type for numpy arrays (dtype string, shape, raw
bytes), so 2D detector frames travel as bytes rather than as JSON lists of numbers. Object arrays
are refused. ``loads`` also accepts plain JSON (a message starting with ``[`` or ``{``), so a
publisher configured with ``json.dumps`` works too (slowly, for images).

>>> import numpy as np
>>> frame = np.arange(6, dtype="<u2").reshape(2, 3)
>>> name, doc = loads(dumps(("event", {"data": {"img": frame}, "seq_num": 1})))
>>> name, doc["seq_num"], doc["data"]["img"].dtype.str, doc["data"]["img"].tolist()
('event', 1, '<u2', [[0, 1, 2], [3, 4, 5]])
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import numpy as np

NDARRAY_EXT = 42
"""msgpack extension code of a numpy array."""


class WireError(ValueError):
    """A message that is not a valid txm-streamer wire message."""


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise WireError("object arrays cannot be serialised (no pickle on the wire)")
        arr = np.ascontiguousarray(obj)
        header = msgpack.packb([arr.dtype.str, list(arr.shape)])
        return msgpack.ExtType(NDARRAY_EXT, header + arr.tobytes())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} for the wire")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != NDARRAY_EXT:
        raise WireError(f"unknown msgpack extension type {code}")
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    dtype, shape = unpacker.unpack()
    offset = unpacker.tell()
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise WireError("object arrays are refused")
    return np.frombuffer(data, dtype=dt, offset=offset).reshape(shape)


def dumps(obj: Any) -> bytes:
    """Serialise a ``(name, doc)`` pair (or any document) to bytes."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def loads(data: bytes) -> Any:
    """Inverse of :func:`dumps`; also reads JSON. Arrays come back read-only."""
    if not data:
        raise WireError("empty message")
    if data[:1] in (b"[", b"{"):
        return json.loads(data)
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as err:
        raise WireError(f"not a txm-streamer wire message: {err}") from err
