"""How fast every per-pixel attribute comes out, against larch and a plain numpy sketch.

``features_spectra_per_s`` times :func:`streamer.attributes.compute_attributes` (all attributes,
no reference fit) on simulated 106-energy spectra of the seed grid (2**21 pixels, a 2048 x 1024
field; ``quick``: 2**16) using both cores. In the same run the same spectra go through a loop of
larch's ``find_e0`` + ``pre_edge`` (a few hundred of them) for ``features_vs_larch_ratio``, and
through a plain single-threaded numpy sketch of five attributes for scale. CPU time per spectrum
is reported too: on a loaded machine wall-clock rates drop, CPU time much less.

``OPENBLAS_CORETYPE`` (if set) is left alone for the main figures; then the throughput is measured
again in a subprocess without it (``features_spectra_per_s_default_openblas``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np

from sim.spectra import SEED_ENERGIES_EV, licoo2_mu_per_um, normalized_mu, state_params
from streamer.attributes import compute_attributes

logger = logging.getLogger(__name__)

E = np.asarray(SEED_ENERGIES_EV, dtype=np.float64)
#: OD noise per energy: a pre-edge noise about 2 % of the edge jump, as in the seed study.
NOISE_OD = 0.006


def simulated_cube(n_pixels: int, *, seed: int = 0, distinct: int = 8192) -> np.ndarray:
    """``(106, n_pixels)`` float32 OD: ``distinct`` LiCoO2 spectra tiled, with fresh noise."""
    rng = np.random.default_rng(seed)
    k = min(distinct, n_pixels)
    soc = rng.uniform(0.0, 1.0, k)
    reduction = np.where(rng.random(k) < 0.1, rng.uniform(0.3, 1.0, k), 0.0)
    mu = normalized_mu(E, **state_params(soc, reduction=reduction), dtype=np.float64)
    bg, jump = licoo2_mu_per_um(E)
    od = (rng.uniform(1.5, 4.0, k) * (bg[:, None] + jump[:, None] * mu)).astype(np.float32)
    cube = np.empty((E.size, n_pixels), dtype=np.float32)
    for start in range(0, n_pixels, k):
        stop = min(n_pixels, start + k)
        cube[:, start:stop] = od[:, : stop - start]
        cube[:, start:stop] += NOISE_OD * rng.standard_normal((E.size, stop - start), np.float32)
    return cube


def numpy_sketch(energies: np.ndarray, mu: np.ndarray, *, chunk: int = 16384) -> dict:
    """A plain single-threaded numpy sketch of five attributes (the baseline for scale).

    Edge jump as post-edge minus pre-edge mean, edge energy as the largest step, half-jump index,
    white-line energy and height at the maximum, pre-edge noise as a standard deviation; no fits,
    no sub-grid refinement, no masks.
    """
    n = mu.shape[1]
    out = {k: np.empty(n, np.float32) for k in ("jump", "e0", "half", "wl", "noise")}
    pre, post = slice(0, 14), slice(mu.shape[0] - 20, None)
    edge = slice(14, 50)
    wl = slice(30, 55)
    for s in range(0, n, chunk):
        m = mu[:, s : s + chunk]
        lo, hi = m[pre].mean(axis=0), m[post].mean(axis=0)
        jump = hi - lo
        out["jump"][s : s + chunk] = jump
        out["e0"][s : s + chunk] = energies[edge][np.argmax(np.diff(m[edge], axis=0), axis=0)]
        below = (m[edge] < lo + 0.5 * jump).sum(axis=0)
        out["half"][s : s + chunk] = energies[edge][np.minimum(below, 35)]
        k = np.argmax(m[wl], axis=0)
        out["wl"][s : s + chunk] = energies[wl][k]
        out["noise"][s : s + chunk] = m[pre].std(axis=0) / jump
    return out


def _time(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and matching CPU seconds of ``repeat`` calls."""
    best = (np.inf, np.inf)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best = min(best, (wall, cpu))
    return best


def measure_ours(n_pixels: int, *, n_threads: int = 2, repeat: int = 3) -> dict:
    cube = simulated_cube(n_pixels)
    compute_attributes(E, cube[:, :65536], n_threads=n_threads)  # plans and caches
    wall, cpu = _time(lambda: compute_attributes(E, cube, n_threads=n_threads), repeat)
    return {"wall_s": wall, "cpu_s": cpu, "n_pixels": n_pixels}


def _larch_seconds_per_spectrum(cube: np.ndarray, n: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds per spectrum of larch's ``find_e0`` + ``pre_edge``."""
    from larch.xafs import find_e0, pre_edge

    spectra = cube[:, :n].astype(np.float64)
    t0, c0 = time.perf_counter(), time.process_time()
    for j in range(n):
        e0 = find_e0(E, spectra[:, j])
        pre_edge(E, spectra[:, j], e0=e0)
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def run(*, quick: bool = False) -> dict[str, dict]:
    """Measure (``quick``: 2**16 pixels and 50 larch spectra instead of 2**21 and 300)."""
    n_pixels = 2**16 if quick else 2**21
    n_larch = 50 if quick else 300
    load = os.getloadavg()[0]
    ours = measure_ours(n_pixels, n_threads=2)
    one = measure_ours(n_pixels // 4, n_threads=1, repeat=2)
    cube = simulated_cube(n_pixels // 4, seed=1)
    sketch_wall, _ = _time(lambda: numpy_sketch(E, cube), 2)
    larch_s, larch_cpu_s = _larch_seconds_per_spectrum(cube, n_larch)
    ours_s = ours["wall_s"] / n_pixels
    rate = 1.0 / ours_s
    figures = {
        "features_spectra_per_s": {
            "value": rate,
            "unit": "spectra/s",
            "n_pixels": n_pixels,
            "n_energies": int(E.size),
            "n_threads": 2,
            "load_average_1min": load,
            "target": 1_500_000,
        },
        "features_cpu_ns_per_spectrum": {
            "value": ours["cpu_s"] / n_pixels * 1e9,
            "unit": "ns (CPU, all threads)",
        },
        "features_spectra_per_s_1thread": {
            "value": one["n_pixels"] / one["wall_s"],
            "unit": "spectra/s",
            "n_pixels": one["n_pixels"],
        },
        "features_numpy_sketch_spectra_per_s": {
            "value": cube.shape[1] / sketch_wall,
            "unit": "spectra/s",
            "note": "plain single-threaded numpy, five crude attributes (no fits, grid points)",
        },
        "features_vs_larch_ratio": {
            "value": larch_s / ours_s,
            "unit": "x",
            "larch_s_per_spectrum": larch_s,
            "ours_s_per_spectrum": ours_s,
            "larch_spectra": n_larch,
            "cpu_ratio": larch_cpu_s / (ours["cpu_s"] / n_pixels),
            "target": 3000,
        },
    }
    if os.environ.get("OPENBLAS_CORETYPE"):
        figures["features_spectra_per_s_default_openblas"] = _without_coretype(n_pixels)
    return figures


def _without_coretype(n_pixels: int) -> dict:
    """Throughput in a subprocess without OPENBLAS_CORETYPE (OpenBLAS picks its own kernels)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = (
        "import json, bench.bench_features as b; "
        f"print(json.dumps(b.measure_ours({n_pixels}, n_threads=2, repeat=2)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    res = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "value": res["n_pixels"] / res["wall_s"],
        "unit": "spectra/s",
        "OPENBLAS_CORETYPE_removed": os.environ["OPENBLAS_CORETYPE"],
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
