"""Drift correction between the energies of a TXM-XANES scan.

The sample drifts by a few pixels while the monochromator steps through the energies. Each new
optical-density (OD) image is registered against a reference, sub-pixel, as it arrives:

1. :func:`registration_image` reduces the central region of the OD image (binned, so a 2048 px
   frame costs a 256 px problem) and keeps only its edges (gradient magnitude, Hann window). Edges
   stay where they are when contrast changes across the absorption edge (a particle can be faint
   below the edge and dark above it, or invert against a binder), which raw intensities do not.
2. :func:`estimate_shift` cross-correlates those images in Fourier space and refines the peak on
   an upsampled grid by a matrix DFT, as :func:`skimage.registration.phase_cross_correlation`
   does, but in two stages (1/8 px, then 1/``upsample_factor`` px, 17x17 points each) and in
   complex64: 2 ms instead of 100 ms for skimage's one-stage 1/100 px refinement of a 256 px
   image, same answer. It uses the plain cross-correlation (``normalization=None``): on noisy,
   low-contrast pre-edge frames it was 3-5x more accurate than the whitened phase correlation in
   our tests (0.06 vs 0.12-0.35 px RMS).
3. :func:`apply_shift` (from :mod:`streamer.image_shift`, re-exported here) moves the
   full-resolution image back by the measured drift with separable linear interpolation, block by
   block so that the work stays in cache, and fills the pixels that have no data with ``fill``.

:class:`DriftTracker` holds the reference (the first frame, or a running average of the registered
frames kept in Fourier space) and the measured drifts.

Sign convention: a *drift* ``(dy, dx)`` means the content of the moving frame appears displaced by
``(+dy, +dx)`` pixels relative to the reference, ``moving[y, x] = reference[y - dy, x - dx]``;
:func:`apply_shift` with that drift returns ``moving[y + dy, x + dx]``, i.e. the registered frame.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = rng.random((128, 128)).astype(np.float32)
>>> moved = np.roll(ref, (3, -2), axis=(0, 1))
>>> tracker = DriftTracker(bin_factor=1, region=128)
>>> tracker.update(ref).tolist(), tracker.update(moved).round(2).tolist()
([0.0, 0.0], [3.0, -2.0])
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import scipy.fft
from threadpoolctl import ThreadpoolController

from streamer.image_shift import apply_shift, covered_region

__all__ = [
    "DriftTracker",
    "apply_shift",
    "covered_region",
    "estimate_shift",
    "registration_image",
]

logger = logging.getLogger(__name__)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """Created once: inspecting the loaded BLAS libraries takes milliseconds."""
    return ThreadpoolController()


@functools.lru_cache(maxsize=8)
def _hann2d(shape: tuple[int, int]) -> np.ndarray:
    """Separable 2-D Hann window (float32), cached per shape."""
    wy = np.hanning(shape[0]).astype(np.float32)
    wx = np.hanning(shape[1]).astype(np.float32)
    return wy[:, None] * wx[None, :]


def registration_image(image: np.ndarray, *, bin_factor: int = 2, region: int = 256) -> np.ndarray:
    """Reduced, edge-filtered, windowed central region of an image, for registration.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Optical-density image. Non-finite values count as 0.
    bin_factor : int
        Binning (box average) of the full-resolution pixels.
    region : int
        Side of the reduced image in binned pixels (clipped to the image): the central
        ``region * bin_factor`` full-resolution pixels are used.

    Returns
    -------
    ndarray, float32, shape (<= region, <= region)
        Gradient magnitude of the binned region, mean removed, times a Hann window.
    """
    if image.ndim != 2:
        raise ValueError(f"registration_image expects a 2-D image, got shape {image.shape}")
    b = int(bin_factor)
    if b < 1:
        raise ValueError(f"bin_factor must be >= 1, got {bin_factor}")
    ny, nx = image.shape
    hy, hx = min(region, ny // b), min(region, nx // b)
    if hy < 8 or hx < 8:
        raise ValueError(f"image {image.shape} too small for registration with bin_factor={b}")
    y0, x0 = (ny - hy * b) // 2, (nx - hx * b) // 2
    crop = image[y0 : y0 + hy * b, x0 : x0 + hx * b]
    # box binning by strided sums (a reshape-mean over two axes is ~10x slower)
    rows = crop[0::b].astype(np.float32)
    for i in range(1, b):
        rows += crop[i::b]
    binned = rows[:, 0::b].copy()
    for i in range(1, b):
        binned += rows[:, i::b]
    binned[~np.isfinite(binned)] = 0.0
    gy, gx = np.gradient(binned)
    edges = np.hypot(gy, gx, dtype=np.float32)
    edges -= edges.mean()
    edges *= _hann2d((hy, hx))
    return edges


def estimate_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    upsample_factor: int = 100,
    space: str = "real",
    normalization: str | None = None,
) -> np.ndarray:
    """Drift ``(dy, dx)`` of ``moving`` relative to ``reference``, sub-pixel.

    Parameters
    ----------
    reference, moving : ndarray
        Images of the same shape (for example from :func:`registration_image`), or their 2-D
        FFTs when ``space="fourier"``.
    upsample_factor : int
        Sub-pixel precision is ``1 / upsample_factor`` of a pixel of these images.
    space : {"real", "fourier"}
        Whether the inputs are images or their FFTs.
    normalization : {None, "phase"}
        Plain cross-correlation (robust to noise, the default) or phase correlation.

    Returns
    -------
    ndarray, float64, shape (2,)
        The drift in pixels of the given images (sign convention in the module docstring).
    """
    if space == "real":
        reference = scipy.fft.fft2(reference)
        moving = scipy.fft.fft2(moving)
    elif space != "fourier":
        raise ValueError(f"space must be 'real' or 'fourier', got {space!r}")
    if reference.shape != moving.shape or reference.ndim != 2:
        raise ValueError(f"shapes differ or are not 2-D: {reference.shape}, {moving.shape}")
    product = reference * moving.conj()
    if normalization == "phase":
        product /= np.maximum(np.abs(product), 100 * np.finfo(np.float32).eps)
    elif normalization is not None:
        raise ValueError(f"normalization must be None or 'phase', got {normalization!r}")
    cc = scipy.fft.ifft2(product).real
    peak = np.array(np.unravel_index(int(np.argmax(cc)), cc.shape), dtype=np.float64)
    size = np.array(cc.shape)
    peak[peak > size // 2] -= size[peak > size // 2]
    # Refine on an upsampled grid around the peak: steps of 1/8 px, then 1/upsample_factor px.
    # The matrix products are tiny: a multi-threaded BLAS only adds the wake-up latency of its
    # threads, which reached 40-70 ms per call on a loaded 2-core machine (0.3 ms in one thread).
    product = product.astype(np.complex64, copy=False)
    with _blas_controller().limit(limits=1, user_api="blas"):
        for step in sorted({min(8, upsample_factor), upsample_factor}):
            if step > 1:
                peak = _refine_peak(product, peak, np.arange(-8, 9) / step)
    return -peak


def _refine_peak(product: np.ndarray, peak: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Maximum of the cross-correlation on the grid ``peak + offsets`` (matrix DFT)."""
    ky = np.fft.fftfreq(product.shape[0])
    kx = np.fft.fftfreq(product.shape[1])
    ey = np.exp(2j * np.pi * np.outer(peak[0] + offsets, ky)).astype(np.complex64)
    ex = np.exp(2j * np.pi * np.outer(kx, peak[1] + offsets)).astype(np.complex64)
    cc = (ey @ product @ ex).real
    iy, ix = np.unravel_index(int(np.argmax(cc)), cc.shape)
    return np.array([peak[0] + offsets[iy], peak[1] + offsets[ix]])


class DriftTracker:
    """Measure the drift of each new image against a reference, sub-pixel.

    Parameters
    ----------
    reference : {"first", "running"}
        Register against the first image, or against the running average of all registered
        images (less sensitive to the noise of any single frame, still free of random-walk drift).
    bin_factor : int or "auto"
        Passed to :func:`registration_image`; ``"auto"`` bins by ``min(ny, nx) // 256`` clipped to
        1..4 (4 for a 2048 px frame: a 1024 px central region becomes a 256 px problem).
    region : int
        Passed to :func:`registration_image` (side of the reduced image, binned pixels).
    upsample_factor : int
        Sub-pixel precision is ``bin_factor / upsample_factor`` full-resolution pixels.
    max_shift : float, optional
        A measured drift larger than this (full-resolution pixels) is treated as a failed
        registration: the previous drift is reused, a warning is logged and ``n_failed_`` counts it.
        Default: a quarter of the registered region.
    workers : int
        Threads for the FFTs.

    Attributes
    ----------
    shifts_ : list of ndarray
        Drift ``(dy, dx)`` of each image passed to :meth:`update`, full-resolution pixels.
    n_failed_ : int
        Registrations rejected by ``max_shift``.
    """

    def __init__(
        self,
        *,
        reference: str = "first",
        bin_factor: int | str = "auto",
        region: int = 256,
        upsample_factor: int = 100,
        max_shift: float | None = None,
        workers: int = 1,
    ) -> None:
        if reference not in ("first", "running"):
            raise ValueError(f"reference must be 'first' or 'running', got {reference!r}")
        self.reference = reference
        if bin_factor != "auto" and int(bin_factor) < 1:
            raise ValueError(f"bin_factor must be 'auto' or >= 1, got {bin_factor!r}")
        self.bin_factor = bin_factor
        self.region = int(region)
        self.upsample_factor = int(upsample_factor)
        self.max_shift = max_shift
        self.workers = int(workers)
        self.reset()

    def reset(self) -> None:
        """Forget the reference and the measured drifts."""
        self._ref_fft: np.ndarray | None = None
        self._n_ref = 0
        self._freqs: tuple[np.ndarray, np.ndarray] | None = None
        self.shifts_: list[np.ndarray] = []
        self.n_failed_ = 0

    def update(self, image: np.ndarray) -> np.ndarray:
        """Measure the drift of ``image`` (full resolution) against the reference.

        The first image becomes the reference (drift 0).

        Returns
        -------
        ndarray, float64, shape (2,)
            Drift ``(dy, dx)`` in full-resolution pixels.
        """
        b = self._bin(image.shape)
        reduced = registration_image(image, bin_factor=b, region=self.region)
        spectrum = scipy.fft.fft2(reduced, workers=self.workers)
        if self._ref_fft is None or self._ref_fft.shape != spectrum.shape:
            self._ref_fft, self._n_ref = spectrum, 1
            drift = np.zeros(2)
            self.shifts_.append(drift)
            return drift
        reduced_drift = estimate_shift(
            self._ref_fft, spectrum, upsample_factor=self.upsample_factor, space="fourier"
        )
        drift = reduced_drift * b
        limit = self.max_shift if self.max_shift is not None else min(reduced.shape) * b / 4
        if not np.all(np.isfinite(drift)) or np.max(np.abs(drift)) > limit:
            previous = self.shifts_[-1] if self.shifts_ else np.zeros(2)
            logger.warning(
                "registration rejected: measured drift %s px exceeds %.1f px; reusing %s",
                np.round(drift, 2).tolist(),
                limit,
                np.round(previous, 2).tolist(),
            )
            self.n_failed_ += 1
            drift = previous.copy()
        elif self.reference == "running":
            self._add_to_reference(spectrum, reduced_drift)
        self.shifts_.append(drift)
        return drift

    def rows_used(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The rows ``[r0, r1)`` of a full-resolution image of ``shape`` that :meth:`update` reads.

        A caller that computes the image band by band can register as soon as these are done.
        """
        b = self._bin(shape)
        h = min(self.region, shape[0] // b) * b
        r0 = (shape[0] - h) // 2
        return r0, r0 + h

    def _bin(self, shape: tuple[int, ...]) -> int:
        """The binning used for images of this shape."""
        if self.bin_factor == "auto":
            return int(np.clip(min(shape) // 256, 1, 4))
        return int(self.bin_factor)

    def _add_to_reference(self, spectrum: np.ndarray, reduced_drift: np.ndarray) -> None:
        """Fold a registered spectrum into the running-average reference (Fourier shift)."""
        if self._freqs is None or self._freqs[0].shape[0] != spectrum.shape[0]:
            self._freqs = (
                np.fft.fftfreq(spectrum.shape[0])[:, None],
                np.fft.fftfreq(spectrum.shape[1])[None, :],
            )
        ky, kx = self._freqs
        # Content displaced by +drift is moved back by multiplying with exp(+2 pi i k.drift).
        ramp = np.exp(2j * np.pi * (ky * reduced_drift[0] + kx * reduced_drift[1]))
        self._n_ref += 1
        self._ref_fft += (spectrum * ramp - self._ref_fft) / self._n_ref
