"""The engine (``streamer``) never imports bluesky or ophyd: it must run wherever numpy does."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import streamer


def test_importing_every_streamer_module_loads_no_bluesky_or_ophyd():
    names = [m.name for m in pkgutil.walk_packages(streamer.__path__, "streamer.")]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('bluesky', 'ophyd'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"streamer imported {out.stdout.strip()}"
