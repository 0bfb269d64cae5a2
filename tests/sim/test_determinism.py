"""Same seed, same frames; a different seed, different frames."""

from __future__ import annotations

import numpy as np

from .conftest import run_survey


def _frames(run):
    return [d["data"]["Andor_image"] for n, d in run.docs if n == "event"]


def test_same_seed_same_frames(tmp_path):
    a = run_survey(plan="xanes_scan", external=False, tmp_path=tmp_path / "a", n_fovs=2, seed=11)
    b = run_survey(plan="xanes_scan", external=False, tmp_path=tmp_path / "b", n_fovs=2, seed=11)
    c = run_survey(plan="xanes_scan", external=False, tmp_path=tmp_path / "c", n_fovs=1, seed=12)
    fa, fb, fc = _frames(a), _frames(b), _frames(c)
    assert len(fa) == len(fb) == 2 * len(fc)
    for x, y in zip(fa, fb, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not any(np.array_equal(x, z) for x, z in zip(fa, fc, strict=False))
    ta = [r["drift_px"] for r in a.recorder.runs.values()]
    tb = [r["drift_px"] for r in b.recorder.runs.values()]
    assert ta == tb
