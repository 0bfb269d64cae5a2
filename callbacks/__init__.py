"""bluesky side of txm-streamer: event-model routers that feed the :mod:`streamer` engine.

>>> from callbacks import XanesAnalyzer   # subscribe an instance to a RunEngine

Names are imported lazily, so that ``callbacks.handlers`` (used by any ``event_model.Filler``)
stays importable on its own.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "XanesAnalyzer": "callbacks.analyzer",
    "XanesDialect": "callbacks.dialects",
    "detect_dialect": "callbacks.dialects",
    "HANDLER_REGISTRY": "callbacks.handlers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'callbacks' has no attribute {name!r}")
