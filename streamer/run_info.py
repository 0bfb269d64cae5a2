"""What the engine knows of a run, and when it evaluates it.

:class:`RunInfo` comes from the run's start document; :class:`DecisionPolicy` says when the run is
evaluated before its scan ends. Both are plain data, re-exported by :mod:`streamer.run_analysis`,
which acts on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DecisionPolicy", "RunInfo"]


@dataclass
class RunInfo:
    """What the engine needs to know about a run (taken from its start document)."""

    run_uid: str
    scan_id: int | None = None
    plan_name: str | None = None
    dialect: str = "generic"
    mode: str = "live"
    planned_energies_ev: tuple[float, ...] | None = None
    chunk_size: int | None = None
    stage_position: dict[str, float] = field(default_factory=dict)
    sample_name: str = ""
    pixel_size_um: float | None = None

    @property
    def fov_key(self) -> str:
        """A short, unique name of the field of view this run imaged."""
        return f"scan{self.scan_id}-{self.run_uid[:8]}"


@dataclass(frozen=True)
class DecisionPolicy:
    """When a run is evaluated before its scan ends.

    Attributes
    ----------
    e0_hint_ev
        Expected edge energy (eV), used to place the analysis windows; ``None`` estimates it from
        the field's mean spectrum. Early evaluation starts once the energies that the
        ``decisive`` attributes need have been normalised.
    every
        Re-evaluate after this many more energies.
    max_backlog
        Skip optional evaluations while the analysis queue is fuller than this (0-1).
    provisional
        Evaluate before the end of the scan at all. ``False`` (mining a campaign from the
        archive with a new model, where only the final decisions matter) evaluates each run
        once, on its complete spectra.
    decisive
        Attributes that must be valid for an evaluation to be decided on.
    early
        Attributes that, once *early-valid* (:mod:`streamer.provisional`) while the ``decisive``
        ones are not yet valid, give one early evaluation (empty: none). The default suits
        LiCoO2 at the Co K edge: the edge (reduced particles) and the white line (its energy and
        height) are in 30 energies before the post-edge.
    reuse_segmentation
        Provisional evaluations reuse the previous evaluation's particles and compute attributes
        on them only (:class:`~streamer.field_evaluation.FieldEvaluator`); the final one always
        segments the complete scan.
    min_edge_significance
        A provisional evaluation needs the field's mean spectrum to show an edge at the nominal
        edge energy at least this many times its pre-edge scatter
        (:func:`~streamer.normalize.edge_significance`; a pre-edge of fewer than 3 points, which
        cannot tell, does not qualify either: such runs are evaluated at the end only).
        Before the scan reaches the edge, a drift can look like one to
        :func:`~streamer.normalize.estimate_e0` (seen at energy 11 of the seed grid: a
        "decisive" evaluation on noise, whose empty segmentation was then reused); real edges
        of the simulated surveys are far above 10.
    """

    e0_hint_ev: float | None = None
    every: int = 8
    max_backlog: float = 0.5
    provisional: bool = True
    decisive: tuple[str, ...] = ("e0_half", "white_line_energy", "white_line_height")
    early: tuple[str, ...] = ("e0_half", "white_line_energy", "white_line_height")
    reuse_segmentation: bool = True
    min_edge_significance: float = 10.0
