"""What one evaluation of a field of view computes, and what it reuses from the previous one.

A run is evaluated several times while its scan goes on (:mod:`streamer.run_analysis`). Each
evaluation needs per-pixel attributes, a particle label map and the particle table; of these, only
the attributes change meaningfully from one evaluation to the next. The particles are the same
absorber: a later, better estimate of the edge jump moves their outlines by a pixel here and there
(about 1 % of their area between the provisional post-edge and the complete scan on the
simulator), so :class:`FieldEvaluator` segments once and reuses the label map:

- a **full** evaluation computes the attributes of every pixel and segments the edge jump
  (:func:`~streamer.particles.segment_particles`, ids kept stable by
  :func:`~streamer.tracking.match_labels`). The final evaluation is always a full one (the
  campaign learns from all pixels of the complete scan).
- an evaluation before the decisive attributes are valid (the post-edge window is still short)
  decides nothing: it computes the edge jump alone, of every pixel (about half the work), and
  segments it for the next evaluation to reuse; unless the ``early`` attributes are
  *early-valid* (determined on the fixed early reference, :mod:`streamer.provisional`): then it
  is an **early** evaluation, full or reusing as any other, marked ``early`` so that its values
  are compared only with early values.
- a **reusing** evaluation computes the attributes of the particle pixels and a margin around
  them only (a column gather of the cube), and keeps the label map, unless the edge-jump mask
  has changed meaningfully: the new edge jump, median-filtered and thresholded as the
  segmentation was (the threshold scaled by how much the particles' median edge jump changed),
  must agree with the label map on all but ``max_mask_change`` of the particle area within the
  margin. Otherwise the evaluation falls back to a full one.

Per-pixel maps of a reusing evaluation are NaN (and not valid) outside the particles and their
margin; the particle table is the same as a full evaluation on the same label map would give.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from streamer.attribute_plan import plan_attributes
from streamer.attributes import AttributeResult, compute_attributes, expected_validity
from streamer.masks import thickness_mask_and_threshold
from streamer.normalize import EdgeWindows, estimate_e0
from streamer.particles import odd_value_mask, particle_table, segment_particles
from streamer.tracking import match_labels

__all__ = ["FieldEvaluation", "FieldEvaluator"]

log = logging.getLogger(__name__)


@dataclass
class FieldEvaluation:
    """The result of one evaluation of a field of view (see :meth:`FieldEvaluator.evaluate`)."""

    #: Per-pixel attributes, ``name -> (n_pixels,)`` float32 (NaN where not computed or masked).
    attributes: dict[str, np.ndarray]
    #: Pixels with usable attributes, ``(n_pixels,)`` bool.
    valid_pixels: np.ndarray
    #: Particle label map, ``(ny, nx)`` int32.
    labels: np.ndarray
    #: The particle table (:func:`streamer.particles.particle_table`).
    table: list[dict]
    #: Whether the label map was reused from the previous evaluation.
    reused_labels: bool
    #: The attributes are early values (on the fixed early reference, post-edge still short).
    early: bool = False


class FieldEvaluator:
    """Evaluations of one field of view, reusing its particle segmentation between them.

    Parameters
    ----------
    shape
        Frame shape ``(ny, nx)``.
    decisive
        Attributes that must be valid for an evaluation to count (else it returns ``None``).
    early
        Attributes that, when all *early-valid* while the ``decisive`` ones are not yet valid,
        make a provisional evaluation an early one (empty: no early evaluations).
    planned_energies_ev
        The run's planned grid (see :func:`~streamer.attributes.compute_attributes`).
    n_threads
        Threads of :func:`~streamer.attributes.compute_attributes`.
    reuse_segmentation
        Reuse the label map between provisional evaluations; ``False`` segments every time.
    margin_px
        Width of the margin around the particles whose attributes are computed when reusing.
    max_mask_change
        Largest disagreement, as a fraction of the particle area, between the label map and the
        re-thresholded edge jump for the label map to be reused. Between the provisional and
        the complete edge jump it is about 1 % for the simulator's 512 x 512 fields and 3-14 %
        for the small, thin particles of 64 x 64 test fields (whose rims are mostly noise).

    Attributes
    ----------
    labels_ : ndarray of int32 or None
        The current label map.
    n_full_, n_reused_, n_segmentations_ : int
        Evaluations of each kind so far: full, reusing the label map, and segmentation only
        (before the decisive attributes are valid).
    """

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        decisive: tuple[str, ...],
        early: tuple[str, ...] = (),
        planned_energies_ev=None,
        n_threads: int = 2,
        reuse_segmentation: bool = True,
        margin_px: int = 2,
        max_mask_change: float = 0.1,
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.decisive = tuple(decisive)
        self.early = tuple(early)
        self._stage_early = False
        self.planned_energies_ev = planned_energies_ev
        self.n_threads = n_threads
        self.reuse_segmentation = reuse_segmentation
        self.margin_px = int(margin_px)
        self.max_mask_change = float(max_mask_change)
        self.labels_: np.ndarray | None = None
        self.n_full_ = 0
        self.n_reused_ = 0
        self.n_segmentations_ = 0
        self._threshold: float | None = None
        self._segmented_level = 0.0  # median filtered edge jump of the particles segmented
        self._support: np.ndarray | None = None  # pixel indices: particles and their margin

    def evaluate(
        self,
        energies_ev: np.ndarray,
        od: np.ndarray,
        *,
        e0_ev: float | None,
        final: bool,
        pixel_valid: np.ndarray | None = None,
    ) -> FieldEvaluation | None:
        """Attributes, particles and table on the energies given; ``None`` when not decisive.

        Parameters
        ----------
        energies_ev, od
            Energies normalised so far (ascending) and their OD rows ``(n_energies, n_pixels)``.
        e0_ev
            Nominal edge energy; estimated from the mean spectrum when ``None``.
        final
            The scan is complete: always a full evaluation.
        pixel_valid
            Pixels the cube can use at all (``(n_pixels,)`` bool), or ``None``.
        """
        if e0_ev is None:
            e0_ev = estimate_e0(energies_ev, od)  # as compute_attributes would, from all pixels
        if e0_ev is None or not np.isfinite(e0_ev):
            return None
        expected = expected_validity(
            energies_ev, e0_ev=e0_ev, planned_energies_ev=self.planned_energies_ev
        )
        self._stage_early = False
        if not all(expected.get(k, False) for k in self.decisive):
            if not final and self.early_ready(energies_ev, e0_ev=e0_ev):
                self._stage_early = True
            else:
                if not final:  # nothing to decide on yet: segment for the next evaluation
                    self._segment_only(energies_ev, od, e0_ev, pixel_valid)
                return None
        if not final and self.reuse_segmentation and self._support is not None:
            reused = self._reusing(energies_ev, od, e0_ev, pixel_valid)
            if reused is not None:
                self.n_reused_ += 1
                return reused
        return self._full(energies_ev, od, e0_ev, pixel_valid)

    def early_ready(self, energies_ev, *, e0_ev: float) -> bool:
        """Whether the ``early`` attributes are all early-valid on ``energies_ev``."""
        if not self.early:
            return False
        expected = expected_validity(
            energies_ev, e0_ev=e0_ev, planned_energies_ev=self.planned_energies_ev, early=True
        )
        return all(expected.get(k, False) for k in self.early)

    def prepare(self, energies_ev, *, e0_ev: float) -> None:
        """Build now the attribute operators of an evaluation on ``energies_ev`` (the grid a
        coming evaluation will have), so that it does not spend its time on them."""
        plan_attributes(energies_ev, e0_ev=float(e0_ev)).build_projections()

    # -- the two kinds of evaluation ------------------------------------------------------------
    def _attributes(self, energies_ev, od, e0_ev, **kw) -> AttributeResult:
        return compute_attributes(
            energies_ev,
            od,
            e0_hint=e0_ev,
            planned_energies_ev=self.planned_energies_ev,
            n_threads=self.n_threads,
            **kw,
        )

    def _decisive(self, result: AttributeResult) -> bool:
        if self._stage_early:
            return all(result.early_valid.get(k, False) for k in self.early)
        return all(result.valid.get(k, False) for k in self.decisive)

    def _valid(self, result: AttributeResult, pixel_valid) -> np.ndarray:
        valid = np.asarray(result.valid_pixels)
        return valid & pixel_valid if pixel_valid is not None else valid

    def _segment_only(self, energies_ev, od, e0_ev, pixel_valid) -> None:
        image = contrast_image(energies_ev, od, e0_ev)
        if image is None:  # nothing past the edge or no pre-edge yet: the edge jump of all pixels
            result = self._attributes(energies_ev, od, e0_ev, edge_jump_only=True)
            valid = self._valid(result, pixel_valid)
            image = result.values["edge_jump"]
        else:
            valid = np.isfinite(image) if pixel_valid is None else pixel_valid & np.isfinite(image)
        self.n_segmentations_ += 1
        self._segment(np.where(valid, image, 0.0))

    def _full(self, energies_ev, od, e0_ev, pixel_valid) -> FieldEvaluation | None:
        result = self._attributes(energies_ev, od, e0_ev)
        self.n_full_ += 1
        valid = self._valid(result, pixel_valid)
        labels = self._segment(np.where(valid, result.values["edge_jump"], 0.0))
        if not self._decisive(result):
            return None
        return self._finish(energies_ev, result, valid, labels, reused=False)

    def _segment(self, edge_jump: np.ndarray) -> np.ndarray:
        """Segment the edge jump (masked pixels 0: no usable absorber) and keep what a later
        evaluation reuses."""
        edge_jump = edge_jump.astype(np.float32)
        image = edge_jump.reshape(self.shape)
        mask, threshold = thickness_mask_and_threshold(image)
        labels = segment_particles(image, mask=mask)
        if self.labels_ is not None:
            labels = match_labels(self.labels_, labels)
        self.labels_ = labels
        self._threshold = threshold
        particles = labels > 0
        if self.margin_px > 0:
            particles = ndimage.binary_dilation(particles, iterations=self.margin_px)
        self._support = np.flatnonzero(particles.ravel())
        inside = labels.ravel()[self._support] > 0
        filtered = _median3x3_at(edge_jump, self._support, self.shape)
        self._segmented_level = float(np.median(filtered[inside])) if inside.any() else 0.0
        return labels

    def _reusing(self, energies_ev, od, e0_ev, pixel_valid) -> FieldEvaluation | None:
        result = self._attributes(energies_ev, od, e0_ev, pixels=self._support)
        if not self._decisive(result):
            return None  # not valid yet: a full evaluation refreshes the segmentation
        valid = self._valid(result, pixel_valid)
        change = self._mask_change(np.where(valid, result.values["edge_jump"], 0.0))
        if change > self.max_mask_change:
            log.info(
                "the edge-jump mask changed by %.1f %% of the particle area: segmenting again",
                100 * change,
            )
            return None
        return self._finish(energies_ev, result, valid, self.labels_, reused=True)

    def _mask_change(self, edge_jump: np.ndarray) -> float:
        """Disagreement of the new edge jump, median-filtered and thresholded as the segmentation
        was, with the label map within the support (a fraction of the particle area)."""
        support = self._support
        inside = self.labels_.ravel()[support] > 0
        n_inside = int(np.count_nonzero(inside))
        if n_inside == 0:  # nothing was segmented: nothing to reuse
            return float("inf")
        if self._threshold is None:
            return 0.0
        new = _median3x3_at(edge_jump, support, self.shape)
        ref = self._segmented_level
        scale = float(np.median(new[inside])) / ref if ref > 0 else 1.0
        with np.errstate(invalid="ignore"):
            above = new > scale * self._threshold
        return int(np.count_nonzero(above != inside)) / n_inside

    def _finish(self, energies_ev, result, valid, labels, *, reused: bool) -> FieldEvaluation:
        maps = {k: v.reshape(self.shape) for k, v in result.values.items()}
        odd = odd_value_mask(
            maps,
            energy_range_ev=(float(energies_ev[0]), float(energies_ev[-1])),
            within=labels > 0,
        )
        return FieldEvaluation(
            attributes=result.values,
            valid_pixels=valid,
            labels=labels,
            table=particle_table(labels, maps, unusual=odd),
            reused_labels=reused,
            early=self._stage_early,
        )


CONTRAST_PAST_EDGE_EV = 5.0
"""Energies from this far past the edge (eV) up to the newest make :func:`contrast_image`."""
CONTRAST_PRE_EDGE_ROWS = 10
"""Pre-edge energies (the last ones of the pre-edge window) :func:`contrast_image` subtracts."""


def contrast_image(energies_ev, od: np.ndarray, e0_ev: float) -> np.ndarray | None:
    """Absorber contrast of every pixel for segmenting a field ahead of its early evaluation.

    The mean OD from ``CONTRAST_PAST_EDGE_EV`` past the edge to the newest energy (the rise and
    the white line) minus the mean OD of the last ``CONTRAST_PRE_EDGE_ROWS`` energies of the
    pre-edge window: proportional to the edge jump within a particle's chemistry, less noisy than
    an edge jump whose post-edge rests on the few energies of the early reference in so far, and
    two row means instead of the attribute kernel over every pixel (10-20 ms instead of
    0.15-0.2 s of a 512x512 field, time taken from the frames arriving meanwhile). ``None`` when
    there is no pre-edge energy or nothing past the edge yet.

    Examples
    --------
    >>> e = np.arange(7600.0, 7760.0, 1.0)
    >>> od = np.where(e > 7722.0, 1.0, 0.1)[:, None] * np.array([[0.0, 1.0, 2.0]])
    >>> [round(float(v), 2) for v in contrast_image(e, od.astype(np.float32), 7722.0)]
    [0.0, 0.9, 1.8]
    """
    e = np.asarray(energies_ev, dtype=np.float64)
    pre_lo, pre_hi = EdgeWindows().pre
    pre = np.flatnonzero((e >= e0_ev + pre_lo) & (e <= e0_ev + pre_hi))[-CONTRAST_PRE_EDGE_ROWS:]
    post = np.flatnonzero(e >= e0_ev + CONTRAST_PAST_EDGE_EV)
    if pre.size == 0 or post.size == 0:
        return None
    # the rows are ascending: slices, no copy of the cube
    after = od[post[0] : post[-1] + 1].mean(axis=0, dtype=np.float32)
    return after - od[pre[0] : pre[-1] + 1].mean(axis=0, dtype=np.float32)


_NEIGHBOURS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def _median3x3_at(values: np.ndarray, pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """3x3 median of the image ``values`` (flat) at ``pixels``, over those pixels only.

    Pixels outside ``pixels`` or the image rank below every value (as masked pixels do in
    :func:`~streamer.masks.thickness_mask`), so only the pixels computed are filtered, at a
    fraction of the cost of filtering the whole image.
    """
    ny, nx = shape
    kept = np.full((ny + 2, nx + 2), -np.inf, dtype=np.float32)
    rows, cols = np.divmod(pixels, nx)
    kept[rows + 1, cols + 1] = values[pixels]
    offsets = _NEIGHBOURS[:, 0] * (nx + 2) + _NEIGHBOURS[:, 1]
    around = kept.ravel()[((rows + 1) * (nx + 2) + cols + 1)[:, None] + offsets]
    return np.partition(around, 4, axis=1)[:, 4]
