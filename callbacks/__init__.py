"""bluesky side of txm-streamer: event-model routers that feed the :mod:`streamer` engine."""
