"""The enhancements composed for a run: which activation parameters a variant computes.

A :class:`Variant` names one way to compute the activation quantization parameters from a
calibration: the baseline (uniform groups, one parameter pair per group), Phase 2 smoothing
(per-timestep blend across boundaries, or ArrowQuant V2's group-level blend), Phase 3 transition
optimization, adaptive time groups, or a combination. :func:`compute_parameters` turns a variant
and the calibration statistics into the parameters the sampler uses plus their Markov metrics,
always measured on those parameters (:func:`thermojax.core.schedule_metrics.schedule_metrics`: a
per-timestep schedule reports, per group boundary, the largest per-step jump inside its window).
The experiment that compares them all is :mod:`thermojax.pipeline.run.phases`.

Example:
    >>> from thermojax.pipeline.settings import BaselineConfig, PhasesConfig
    >>> variants = build_variants(BaselineConfig(phases=PhasesConfig(enabled=True)))
    >>> [v.name for v in variants][:3]
    ['baseline', 'smooth-linear-w25', 'smooth-linear-w100']
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from thermojax.core.adaptive import adaptive_edges
from thermojax.core.schedule_metrics import ScheduleMetrics, schedule_metrics
from thermojax.core.smoothing import smooth_boundaries, smooth_groups
from thermojax.core.timegroups import expand_to_timesteps, group_activation_params
from thermojax.errors import UserInputError
from thermojax.pipeline.measure.calibrate import CalibrationStats
from thermojax.pipeline.measure.sampling import ActParams
from thermojax.pipeline.settings import BaselineConfig, OptimizationConfig

__all__ = [
    "ParameterSet",
    "Smoothing",
    "Variant",
    "baseline_variant",
    "build_variants",
    "compute_parameters",
    "config_variant",
]


@dataclasses.dataclass(frozen=True)
class Smoothing:
    """Phase 2 settings of a variant (``level`` ``timestep`` or ``group``, window in its units)."""

    method: str
    window: int
    level: str = "timestep"
    steepness: float = 10.0


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to compute activation parameters from the calibration.

    Attributes:
        name: short unique name (file names, table rows).
        phase: ``baseline``, ``phase 2``, ``phase 2 (groups)``, ``phase 3``, ``adaptive`` or
            ``combination``.
        strategy: ``uniform`` or ``adaptive`` time groups.
        lam: adaptive objective's jump weight; min_group_size: smallest adaptive group.
        cost: adaptive within-group cost (``range`` or ``mse``).
        smoothing: Phase 2 settings, or ``None``.
        markov_weight: Phase 3 on (with this weight) or ``None``.
    """

    name: str
    phase: str
    strategy: str = "uniform"
    lam: float = 0.0
    min_group_size: int = 1
    cost: str = "range"
    smoothing: Smoothing | None = None
    markov_weight: float | None = None

    @property
    def description(self) -> str:
        """One line for people: what the variant does."""
        parts = []
        if self.strategy == "adaptive":
            parts.append(
                f"adaptive groups (lambda {self.lam:g}, {self.cost} cost, "
                f"min {self.min_group_size} steps)"
            )
        if self.smoothing is not None:
            unit = "timesteps" if self.smoothing.level == "timestep" else "groups"
            scope = "" if self.smoothing.level == "timestep" else "group-level "
            parts.append(
                f"{scope}{self.smoothing.method} blend, window {self.smoothing.window} {unit}"
            )
        if self.markov_weight is not None:
            target = "schedule" if self.per_timestep else "groups"
            parts.append(f"Phase 3 on the {target}, markov_weight {self.markov_weight:g}")
        return "; ".join(parts) if parts else "uniform groups, group min/max parameters"

    @property
    def per_timestep(self) -> bool:
        """Whether the parameters are a per-timestep schedule ``[L, T]``."""
        return self.smoothing is not None and self.smoothing.level == "timestep"


def baseline_variant() -> Variant:
    """Uniform groups, unsmoothed, unoptimized."""
    return Variant(name="baseline", phase="baseline")


def config_variant(config: BaselineConfig) -> Variant:
    """The enhanced variant that a single run's ``thermo.*`` / ``time_groups.*`` settings describe."""
    smoothing_cfg = config.thermo.smoothing
    smoothing = (
        Smoothing(
            method=smoothing_cfg.method,
            window=smoothing_cfg.window,
            level=smoothing_cfg.level,
            steepness=smoothing_cfg.steepness,
        )
        if smoothing_cfg.enabled
        else None
    )
    opt = config.thermo.optimization
    groups = config.time_groups
    used = [
        name
        for name, on in (
            ("adaptive", groups.strategy == "adaptive"),
            ("smoothing", smoothing is not None),
            ("phase 3", opt.enabled),
        )
        if on
    ]
    phase = {"adaptive": "adaptive", "smoothing": "phase 2", "phase 3": "phase 3"}
    return Variant(
        name="enhanced",
        phase=phase[used[0]] if len(used) == 1 else ("combination" if used else "baseline"),
        strategy=groups.strategy,
        lam=groups.lam,
        min_group_size=groups.min_group_size,
        cost=groups.cost,
        smoothing=smoothing,
        markov_weight=opt.markov_weight if opt.enabled else None,
    )


def build_variants(config: BaselineConfig) -> list[Variant]:
    """The phase table's variants from ``config.phases`` (``baseline`` first, always included).

    Raises:
        UserInputError: ``phases.variants`` names a variant that the lists do not produce.
    """
    phases = config.phases
    steepness = config.thermo.smoothing.steepness
    adaptive = {
        "strategy": "adaptive",
        "min_group_size": phases.min_group_size,
        "cost": config.time_groups.cost,
    }
    variants = [baseline_variant()]
    for method in phases.methods:
        for window in phases.windows:
            variants.append(
                Variant(
                    name=f"smooth-{method}-w{window}",
                    phase="phase 2",
                    smoothing=Smoothing(method, window, "timestep", steepness),
                )
            )
    for window in phases.group_windows:
        method = phases.methods[0] if phases.methods else "linear"
        variants.append(
            Variant(
                name=f"smooth-groups-{method}-w{window}",
                phase="phase 2 (groups)",
                smoothing=Smoothing(method, window, "group", steepness),
            )
        )
    for weight in phases.markov_weights:
        variants.append(Variant(name=f"phase3-mw{weight:g}", phase="phase 3", markov_weight=weight))
    for lam in phases.lambdas:
        variants.append(Variant(name=f"adaptive-lam{lam:g}", phase="adaptive", lam=lam, **adaptive))
    if phases.combinations and phases.methods and phases.windows:
        method = phases.methods[0]
        window = min(phases.windows[0], phases.min_group_size)
        lam = phases.lambdas[0] if phases.lambdas else config.time_groups.lam
        weights = phases.markov_weights or [config.thermo.optimization.markov_weight]
        weight = weights[len(weights) // 2]
        smooth = Smoothing(method, window, "timestep", steepness)
        variants += [
            Variant(
                name="adaptive+smooth", phase="combination", lam=lam, smoothing=smooth, **adaptive
            ),
            Variant(
                name="smooth+phase3",
                phase="combination",
                smoothing=Smoothing(method, phases.windows[0], "timestep", steepness),
                markov_weight=weight,
            ),
            Variant(
                name="adaptive+smooth+phase3",
                phase="combination",
                lam=lam,
                smoothing=smooth,
                markov_weight=weight,
                **adaptive,
            ),
        ]
    if phases.variants:
        known = [v.name for v in variants]
        unknown = [name for name in phases.variants if name not in known]
        if unknown:
            raise UserInputError(
                f"phases.variants={list(phases.variants)!r}: unknown variant(s) "
                f"{', '.join(unknown)}; this configuration has {', '.join(known)}"
            )
        variants = [v for v in variants if v.name == "baseline" or v.name in phases.variants]
    return variants


@dataclasses.dataclass(frozen=True)
class ParameterSet:
    """The activation parameters of a variant, as the sampler uses them, and their metrics.

    Attributes:
        variant: what produced them.
        edges: int32 ``[G + 1]`` time groups (uniform or adaptive).
        scales, zero_points: float32 ``[L, S]`` (zero points rounded and clipped to ``[0, qmax]``).
        param_edges: int32 ``[S + 1]``: ``edges`` (S = G) or ``arange(T + 1)`` (S = T schedule).
        metrics: :class:`ScheduleMetrics` of the parameters expanded to timesteps, cut at ``edges``
            (numpy leaves; ``metrics.windows`` is the headline view).
        optimization: the Phase 3 :class:`~thermojax.core.transition.TransitionResult` (numpy), or None.
        seconds: wall time of computing the parameters (compilation included when first run).
        model_edges, model_param_edges: ``edges`` and ``param_edges`` on the model's T
            timesteps (the others count the calibration sampler's steps; the same for the full
            sampler): what the sampler, the results and a checkpoint use.
    """

    variant: Variant
    edges: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    param_edges: np.ndarray
    metrics: ScheduleMetrics
    optimization: Any
    seconds: float
    model_edges: np.ndarray | None = None
    model_param_edges: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.model_edges is None:
            object.__setattr__(self, "model_edges", self.edges)
        if self.model_param_edges is None:
            object.__setattr__(self, "model_param_edges", self.param_edges)

    def act_params(self, bits: int) -> ActParams:
        """The sampler's :class:`ActParams` (groups on the model's timesteps)."""
        return ActParams(self.scales, self.zero_points, self.model_param_edges, bits)


def compute_parameters(
    stats: CalibrationStats,
    variant: Variant,
    *,
    num_groups: int,
    act_bits: int,
    threshold: float,
    optimization: OptimizationConfig,
) -> ParameterSet:
    """Edges, parameters, optional smoothing and optimization, then the Markov metrics.

    Phase 3 optimizes the group parameters (``S = G``), or the smoothed schedule (``S = T``) when
    the variant smooths at timestep level, on the calibration's ``act_samples [L, T, K]``.
    ``optimization`` supplies every Phase 3 setting except the variant's ``markov_weight``.

    Raises:
        UserInputError: a smoothing window larger than one of the variant's groups.
    """
    qmax = 2**act_bits - 1
    num_timesteps = stats.num_timesteps
    start = time.perf_counter()
    if variant.strategy == "adaptive":
        edges = adaptive_edges(
            stats.act_min,
            stats.act_max,
            num_groups,
            bits=act_bits,
            lam=variant.lam,
            cost=variant.cost,
            min_group_size=variant.min_group_size,
        )
    else:
        edges = stats.uniform_edges(num_groups)
    scales, zero_points = group_activation_params(
        stats.act_min, stats.act_max, edges, bits=act_bits
    )
    param_edges = edges
    smoothing = variant.smoothing
    if smoothing is not None and smoothing.level == "group":
        scales, zero_points = smooth_groups(
            scales,
            zero_points,
            window=smoothing.window,
            method=smoothing.method,
            steepness=smoothing.steepness,
        )
    elif smoothing is not None:
        smallest = int(np.diff(edges).min())
        if smoothing.window > smallest:
            raise UserInputError(
                f"thermo.smoothing.window={smoothing.window}: larger than a group (the smallest "
                f"of the time groups {edges.tolist()} has {smallest} timesteps)"
            )
        scales, zero_points = smooth_boundaries(
            scales,
            zero_points,
            edges,
            num_timesteps=num_timesteps,
            method=smoothing.method,
            window=smoothing.window,
            steepness=smoothing.steepness,
        )
        param_edges = np.arange(num_timesteps + 1, dtype=np.int32)
    result = None
    if variant.markov_weight is not None:
        from thermojax.core.transition import optimize_transitions  # optax only where Phase 3 runs

        result = optimize_transitions(
            stats.act_samples,
            scales,
            zero_points,
            param_edges,
            bits=act_bits,
            markov_weight=variant.markov_weight,
            learning_rate=optimization.learning_rate,
            max_iterations=optimization.max_iterations,
            convergence_threshold=optimization.convergence_threshold,
            patience=optimization.patience,
            grad_clip=optimization.grad_clip,
            kl_weight=optimization.kl_weight,
            entropy_weight=optimization.entropy_weight,
        )
        result = jax.tree_util.tree_map(np.asarray, result)
        scales, zero_points = result.scales, result.zero_points
    scales = np.asarray(scales, np.float32)
    # Smoothing blends zero points to fractions; the quantizer applies integers in [0, qmax].
    zero_points = np.clip(np.round(np.asarray(zero_points, np.float32)), 0.0, qmax)
    seconds = time.perf_counter() - start
    metrics = schedule_metrics(
        expand_to_timesteps(scales, param_edges),
        expand_to_timesteps(zero_points, param_edges),
        edges,
        qmax=qmax,
        threshold=threshold,
    )
    return ParameterSet(
        variant=variant,
        edges=np.asarray(edges, np.int32),
        scales=scales,
        zero_points=zero_points.astype(np.float32),
        param_edges=np.asarray(param_edges, np.int32),
        metrics=jax.tree_util.tree_map(np.asarray, metrics),
        optimization=result,
        seconds=seconds,
        model_edges=stats.model_edges(edges),
        model_param_edges=stats.model_edges(param_edges),
    )
