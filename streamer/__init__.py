"""txm-streamer engine: streaming TXM-XANES analysis with no bluesky import.

Modules, in the order one frame travels through them:

- :mod:`streamer.cube`          incremental per-pixel spectra (dark/flat/sample frames,
  deferred normalisation); its kernels in :mod:`streamer.flatfield`
- :mod:`streamer.registration`  drift correction between energies
- :mod:`streamer.xrm`           reader of Xradia ``.xrm`` frames (SSRL 6-2c)
- :mod:`streamer.normalize`     pre-/post-edge lines, edge jump, normalised mu (vectorised)
- :mod:`streamer.attributes`    per-pixel spectroscopic attributes, provisional while frames arrive
- :mod:`streamer.particles`     masks, particle segmentation, per-particle aggregates
- :mod:`streamer.tracking`      stable particle ids between evaluations of a run
- :mod:`streamer.run_analysis`  one run: the cube, early evaluations, decisions
- :mod:`streamer.learning`      online clustering and anomaly scoring across a campaign
- :mod:`streamer.decisions`     the alert policy of a run (provisional, confirmed, resolved)
- :mod:`streamer.session`       campaign-wide state shared by the runs of an analyzer
- :mod:`streamer.alerts`        the alert schema, the ZeroMQ publisher and subscriber
- :mod:`streamer.report`        PNG figures and the HTML/text summary
- :mod:`streamer.catalog`       the embedded tiled catalog; :mod:`streamer.archive` writes it,
  :mod:`streamer.replay_source` reads runs back as documents
- :mod:`streamer.wire`          pickle-free msgpack serializer for documents
- :mod:`streamer.cli`           the ``txm-streamer`` command
"""

__version__ = "0.1.0"
