"""txm-streamer engine: streaming TXM-XANES analysis with no bluesky import.

Modules, in the order one frame travels through them:

- :mod:`streamer.cube`          incremental per-pixel spectra (dark/flat/sample frames, deferred normalisation)
- :mod:`streamer.registration`  drift correction between energies
- :mod:`streamer.normalize`     pre-/post-edge lines, edge jump, normalised mu (vectorised)
- :mod:`streamer.attributes`    per-pixel spectroscopic attributes, provisional while frames arrive
- :mod:`streamer.particles`     masks, particle segmentation, per-particle aggregates
- :mod:`streamer.learning`      online clustering and anomaly scoring across a campaign
- :mod:`streamer.alerts`        the alert schema, the ZeroMQ publisher and subscriber
- :mod:`streamer.report`        PNG figures and the HTML/text summary
- :mod:`streamer.cli`           the ``txm-streamer`` command
"""

__version__ = "0.1.0"
