"""The optional sections of an enhanced run's result: the baseline beside the enhanced
parameters, what the enhancement did, and Phase 3's outcome (schema 2 on; ``None`` when absent);
and the chain's error budget of a run with ``thermo.chain_budget.enabled`` (``None`` without).

Example:
    >>> MetricsView(smoothness_score=0.9, violation_count=1, boundary_scores=(0.9,),
    ...             scale_jumps=((0.4,),)).violation_count
    1
"""

from __future__ import annotations

import dataclasses
from typing import Any

from thermojax.pipeline.quality.kind import SampleQuality

__all__ = [
    "BaselineSection",
    "ChainSection",
    "EnhancementSection",
    "MetricsView",
    "OptimizationSection",
]


@dataclasses.dataclass(frozen=True)
class MetricsView:
    """Markov metrics of one set of parameters, summarized like the top-level figures.

    Attributes:
        smoothness_score: mean over layers.
        violation_count: (layer, boundary) pairs whose scale jump exceeds the threshold.
        boundary_scores: per boundary, mean over layers ``[G - 1]``.
        scale_jumps: per layer and boundary ``[L][G - 1]``.
    """

    smoothness_score: float | None
    violation_count: int | None
    boundary_scores: tuple[float, ...]
    scale_jumps: tuple[tuple[float, ...], ...]


@dataclasses.dataclass(frozen=True)
class BaselineSection:
    """The baseline (uniform groups, unsmoothed) of an enhanced run: same calibration, same noise.

    Attributes:
        time_groups: the uniform ``[start, end)`` groups.
        scales, zero_points: ``[L][G]`` baseline parameters.
        metrics: their Markov metrics.
        quality: quantized sampling with them.
    """

    time_groups: tuple[tuple[int, int], ...]
    scales: tuple[tuple[float, ...], ...]
    zero_points: tuple[tuple[float, ...], ...]
    metrics: MetricsView
    quality: SampleQuality


@dataclasses.dataclass(frozen=True)
class OptimizationSection:
    """Phase 3 outcome, per layer (``[L]``; ``loss_history[l]`` has ``iterations[l]`` entries).

    Attributes:
        target: ``groups`` (``S = G``) or ``timesteps`` (the smoothed schedule, ``S = T``).
        settings: the ``thermo.optimization`` values used.
    """

    target: str
    settings: dict[str, Any]
    iterations: tuple[int, ...]
    converged: tuple[bool, ...]
    initial_loss: tuple[float, ...]
    final_loss: tuple[float, ...]
    quant_error_before: tuple[float, ...]
    quant_error_after: tuple[float, ...]
    markov_penalty_before: tuple[float, ...]
    markov_penalty_after: tuple[float, ...]
    loss_history: tuple[tuple[float, ...], ...]


@dataclasses.dataclass(frozen=True)
class EnhancementSection:
    """What an enhanced run did to the parameters, and the views the top level does not show.

    The top-level metrics are the headline view (per boundary window for a schedule).

    Attributes:
        description: one line for people.
        strategy, lam: time grouping (``lam`` is the YAML ``time_groups.lambda``).
        smoothing: the ``thermo.smoothing`` values used, or ``None``.
        per_timestep: the parameters are a per-timestep schedule ``[L][T]``.
        schedule_scales, schedule_zero_points: that schedule (``None`` for group parameters).
        group_view: metrics of each group's mean parameters (ArrowQuant V2's group-level view).
        max_step_scale_jump: per layer, the largest consecutive-timestep scale jump.
        optimization: Phase 3 outcome, or ``None``.
        parameter_time_s: wall time of computing the enhanced parameters.
    """

    description: str
    strategy: str
    lam: float
    smoothing: dict[str, Any] | None
    per_timestep: bool
    schedule_scales: tuple[tuple[float, ...], ...] | None
    schedule_zero_points: tuple[tuple[float, ...], ...] | None
    group_view: MetricsView
    max_step_scale_jump: tuple[float, ...]
    optimization: OptimizationSection | None
    parameter_time_s: float


@dataclasses.dataclass(frozen=True)
class ChainSection:
    """The chain's error budget of the parameters the quantized sampler used
    (:class:`~thermojax.pipeline.measure.chain.ChainBudget`): every figure is ``measure``
    against the fp32 chain from the same noise.

    Attributes:
        total: the fully quantized chain's final error.
        per_group: ``[G]``, the final error with only group ``g``'s steps quantized.
        per_boundary: ``[G - 1]``, at edge ``b + 1``: the final error with group ``b + 1`` on
            group ``b``'s activation parameters, minus ``total`` (positive: the jump helps).
        additivity: ``sum(per_group) / total`` (``null`` in the JSON for ``total == 0``).
            Errors injected at different steps need not add up: it is measured, not assumed.
        edges: the ``G + 1`` time-group edges on the model's T timesteps.
        steps_per_group: the sampler's steps in each group.
        measure: what the figures are (:data:`~thermojax.pipeline.measure.chain.FINAL_ERROR`).
        num_samples: the chains' size.
    """

    total: float
    per_group: tuple[float, ...]
    per_boundary: tuple[float, ...]
    additivity: float
    edges: tuple[int, ...]
    steps_per_group: tuple[int, ...]
    measure: str
    num_samples: int
