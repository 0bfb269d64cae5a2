"""Checkpoint files without pickle: one ``.npz`` holding numeric arrays and a JSON document.

The file is written with :func:`numpy.savez_compressed` and read with ``allow_pickle=False``;
the JSON document (parameters, counters, events, generator states) is stored as a UTF-8 byte
array under the key ``__json__``. Writes go to a temporary file in the same directory and are
renamed into place, so a crash never leaves a half-written checkpoint.

Examples
--------
>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "campaign.npz")
>>> _ = write_checkpoint(path, {"version": 1, "name": "demo"}, {"x": np.arange(3.0)})
>>> meta, arrays = read_checkpoint(path)
>>> meta["name"], arrays["x"].tolist()
('demo', [0.0, 1.0, 2.0])
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["read_checkpoint", "write_checkpoint"]

_JSON_KEY = "__json__"


def write_checkpoint(path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``meta`` (JSON-able) and ``arrays`` (numeric) atomically to ``path``."""
    path = Path(path)
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"checkpoint array {key!r} has dtype object (would need pickle)")
    if _JSON_KEY in arrays:
        raise ValueError(f"{_JSON_KEY!r} is reserved")
    blob = np.frombuffer(json.dumps(meta, allow_nan=True).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **{_JSON_KEY: blob}, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a checkpoint written by :func:`write_checkpoint` (never unpickles)."""
    with np.load(Path(path), allow_pickle=False) as data:
        if _JSON_KEY not in data.files:
            raise ValueError(f"{path} is not a txm-streamer checkpoint (no {_JSON_KEY})")
        meta = json.loads(bytes(data[_JSON_KEY]).decode("utf-8"))
        arrays = {k: data[k] for k in data.files if k != _JSON_KEY}
    return meta, arrays
