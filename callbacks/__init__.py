"""bluesky side of txm-streamer: event-model routers that feed the :mod:`streamer` engine.

>>> from callbacks import XanesAnalyzer   # subscribe an instance to a RunEngine
"""

from callbacks.analyzer import XanesAnalyzer
from callbacks.dialects import XanesDialect, detect_dialect

__all__ = ["XanesAnalyzer", "XanesDialect", "detect_dialect"]
