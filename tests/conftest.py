"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The measured data shipped beside the project (never copied into it).
_DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SHARED_DATA = Path(os.environ.get("TXM_STREAMER_SHARED_DATA", _DEFAULT)).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real measured data not available at {SHARED_DATA}")
    return SHARED_DATA
