"""The phase table of ``experiment=phases`` (``phases.json``, and ``phases`` in the result).

Each row is one variant over the seeds: its Markov figures, the drift, and the quality figures
its kind of sample compares with a baseline (:attr:`QualityKind.compared
<thermojax.pipeline.quality.kind.QualityKind.compared>`), each a :class:`Spread`. A row's JSON
holds those figures at its top level, beside the fixed keys; before schema 7 a row also held the
other kind's figures as ``null``, which read as absent.

Example:
    >>> table = read_result("outputs/phases/baseline_metrics.json").phases  # doctest: +SKIP
    >>> [(row.variant, row.spread("final_mse")) for row in table.rows][:1]  # doctest: +SKIP
    [('baseline', Spread(mean=36.2, std=0.4))]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from thermojax.pipeline.quality.kind import quality_kind, untagged_kind
from thermojax.pipeline.results.codec import dataclass_from_json, from_json, to_json

__all__ = ["PhaseRow", "PhasesSection", "Spread"]


@dataclasses.dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (``ddof=1``) over the seeds."""

    mean: float
    std: float


@dataclasses.dataclass(frozen=True)
class PhaseRow:
    """One variant of the phase table (figures over the seeds; see :func:`thermojax.pipeline.run.phases.phase_table`).

    ``drift_per_group`` is on the uniform groups (comparable across variants);
    ``drift_per_timestep`` is the mean over seeds ``[T]``. ``param_time_s`` is the warm parameter
    computation, ``param_extra_s`` the same minus the baseline's, ``sampling_ratio`` the mean
    quantized sampling time over the baseline's. ``paired_delta`` holds, per quality figure, the
    mean and std over seeds of (variant - baseline with the same seed's noise). ``figures``
    holds the kind's compared quality figures beyond the drift (not one the run has none of,
    such as held-out perplexity without held-out text).
    """

    variant: str
    phase: str
    description: str
    edges: tuple[int, ...]
    num_seeds: int
    smoothness_score: Spread
    violation_count: Spread
    drift_mean: Spread
    sampling_time_s: Spread
    drift_per_group: tuple[Spread, ...]
    drift_per_timestep: tuple[float, ...]
    paired_delta: dict[str, Spread]
    param_time_s: float
    param_compile_s: float
    param_extra_s: float
    sampling_ratio: float
    figures: dict[str, Spread] = dataclasses.field(default_factory=dict)

    def spread(self, name: str) -> Spread | None:
        """A figure over the seeds by name, fixed or of the kind; ``None`` if the row lacks it."""
        if name in self.figures:
            return self.figures[name]
        value = getattr(self, name, None) if name != "figures" else None
        return value if isinstance(value, Spread) else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the fixed keys, and the kind's figures beside them."""
        fixed = {
            f.name: to_json(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "figures"
        }
        return {**fixed, **{name: to_json(value) for name, value in self.figures.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhaseRow:
        """Inverse of :meth:`to_dict`, checking keys and types; a key that is not a fixed one is
        a quality figure (``null``: one the row does not have)."""
        fixed = {f.name for f in dataclasses.fields(cls)} - {"figures"}
        figures = {
            str(name): from_json(Spread, value, f"phases.rows.{name}")
            for name, value in data.items()
            if name not in fixed and value is not None
        }
        row = dataclass_from_json(cls, {k: v for k, v in data.items() if k in fixed}, "phases.rows")
        return dataclasses.replace(row, figures=figures)


@dataclasses.dataclass(frozen=True)
class PhasesSection:
    """The phase table (``phases.json``): every variant on one calibration, over several seeds.

    ``family`` is the kind of sample its figures are of (a
    :class:`~thermojax.pipeline.quality.kind.QualityKind` name); ``fp32`` holds that kind's
    fp32 reference figures over the seeds (those the run has)."""

    seeds: tuple[int, ...]
    num_samples: int
    bit_width: int
    act_bits: int
    num_time_groups: int
    smoothness_threshold: float
    drift_group_edges: tuple[int, ...]
    rows: tuple[PhaseRow, ...]
    total_time_s: float
    family: str = dataclasses.field(default_factory=lambda: untagged_kind().name)
    fp32: dict[str, Spread] = dataclasses.field(default_factory=dict)

    def spreads(self) -> tuple[str, ...]:
        """The kind's phase spreads (:meth:`QualityKind.phase_spreads`) that the rows have."""
        first = self.rows[0] if self.rows else None
        return tuple(
            name
            for name in quality_kind(self.family).phase_spreads()
            if first is not None and first.spread(name) is not None
        )

    def compared(self) -> tuple[str, ...]:
        """The quality figures with paired deltas (the kind's compared figures the rows have)."""
        return tuple(name for name in quality_kind(self.family).compared if name in self.spreads())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``phases.json`` and the ``phases`` key of ``baseline_metrics.json``)."""
        return {f.name: to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhasesSection:
        """Inverse of :meth:`to_dict`, checking keys and types; a table written before schema 5
        (``fp32_frechet`` and ``fp32_class_coverage`` at the top), or before schema 5 (no
        ``family``) reads as a table of the kind that reads untagged sections."""
        data = dict(data)
        legacy = {"fp32_frechet": "frechet_fp32", "fp32_class_coverage": "class_coverage_fp32"}
        if any(key in data for key in legacy):
            data["fp32"] = {new: data.pop(old) for old, new in legacy.items() if old in data}
        return dataclass_from_json(cls, data, "phases")
