"""The enhancements and the experiment: ``thermo.*`` (Phase 2 smoothing, Phase 3 optimization,
the chain's error budget), ``time_groups.*`` and ``phases.*``."""

from __future__ import annotations

import dataclasses
from typing import List, Optional  # noqa: UP035 (OmegaConf reads typing.List)

from thermojax.core.adaptive import MAX_LAM
from thermojax.core.smoothing import MAX_STEEPNESS
from thermojax.pipeline.settings.checks import (
    MAX_INT32,
    MAX_SEED,
    check_choice,
    check_count,
    check_number,
    fail,
)

__all__ = [
    "SEGMENTATION_COSTS",
    "SMOOTHING_LEVELS",
    "SMOOTHING_METHODS",
    "TIME_GROUP_STRATEGIES",
    "ChainBudgetConfig",
    "OptimizationConfig",
    "PhasesConfig",
    "SmoothingConfig",
    "ThermoConfig",
    "TimeGroupsConfig",
    "validate_chain_budget",
    "validate_phases",
    "validate_thermo",
    "validate_time_groups",
]

SMOOTHING_METHODS = ("linear", "cubic", "sigmoid")
SMOOTHING_LEVELS = ("timestep", "group")
TIME_GROUP_STRATEGIES = ("uniform", "adaptive")
SEGMENTATION_COSTS = ("range", "mse")
MAX_OPTIMIZATION_STEPS = 10**6
"""The most ``thermo.optimization.max_iterations`` (and ``patience``): the optimization keeps a
loss history of one float32 per step and layer, allocated up front."""

# OmegaConf resolves the annotations itself; keep Optional (not `X | None`) for its type checker.


@dataclasses.dataclass(frozen=True)
class SmoothingConfig:
    """Phase 2: blend activation parameters across time-group boundaries.

    Attributes:
        enabled: apply smoothing.
        method: blend curve, ``linear``, ``cubic`` (smoothstep) or ``sigmoid``.
        window: ``level=timestep``: timesteps blended on each side of a boundary (1..smallest
            group); ``level=group``: neighbouring groups averaged on each side (1..G-1).
        level: ``timestep`` (a per-timestep schedule ``[L, T]``) or ``group`` (ArrowQuant V2's
            variant: each group blended with its neighbours, stays ``[L, G]``).
        steepness: slope of the ``sigmoid`` blend (> 0).
    """

    enabled: bool = False
    method: str = "linear"
    window: int = 25
    level: str = "timestep"
    steepness: float = 10.0


@dataclasses.dataclass(frozen=True)
class OptimizationConfig:
    """Phase 3: gradient-based transition optimization of scales and zero points (Optax Adam).

    Attributes:
        enabled: run the optimization (on the groups, or on the smoothed schedule when smoothing
            is on at timestep level).
        markov_weight: weight of the smoothness penalty on consecutive parameters (>= 0).
        learning_rate: Adam step (> 0).
        max_iterations: most steps per layer (>= 1).
        convergence_threshold: stop once the best loss improved by less than this over the last
            ``patience`` steps (>= 0).
        patience: steps of that window (>= 1).
        grad_clip: per-layer gradient-norm clip (> 0).
        kl_weight: weight of a Gaussian transition KL term (ArrowQuant V2's) (>= 0).
        entropy_weight: weight of the code-entropy reward (>= 0).
    """

    enabled: bool = False
    markov_weight: float = 1.0
    learning_rate: float = 0.01
    max_iterations: int = 200
    convergence_threshold: float = 1e-4
    patience: int = 20
    grad_clip: float = 1.0
    kl_weight: float = 0.0
    entropy_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class ChainBudgetConfig:
    """The chain's error budget (:mod:`thermojax.pipeline.measure.chain`): where along the
    sampler the final error of the quantized run enters, per time group and boundary, from
    ``2 G + 1`` more sampler runs with the run's weights, activation parameters, sampler and
    seed. A measurement: it changes no other figure and no cache entry.

    Attributes:
        enabled: measure it (the digits DDPM only: a masked-diffusion LM's final state is
            tokens, which the budget has no measure for, and a weight-only run samples nothing).
        samples: the chains' size (``None``: ``sampling.num_samples``).
    """

    enabled: bool = False
    samples: Optional[int] = None  # noqa: UP045


@dataclasses.dataclass(frozen=True)
class ThermoConfig:
    """The enhancements beyond the baseline: Phase 2 smoothing and Phase 3 optimization; and
    the chain's error budget, which measures the parameters the sampler used."""

    smoothing: SmoothingConfig = dataclasses.field(default_factory=SmoothingConfig)
    optimization: OptimizationConfig = dataclasses.field(default_factory=OptimizationConfig)
    chain_budget: ChainBudgetConfig = dataclasses.field(default_factory=ChainBudgetConfig)


@dataclasses.dataclass(frozen=True)
class TimeGroupsConfig:
    """How the T timesteps are cut into ``num_time_groups`` groups.

    Attributes:
        strategy: ``uniform`` (equal widths) or ``adaptive`` (dynamic programming over the
            calibration statistics, :func:`thermojax.core.adaptive.adaptive_edges`).
        lam: the YAML key ``lambda``: weight of the boundary jumps in the adaptive objective (>= 0).
        cost: within-group cost of the adaptive objective, ``range`` or ``mse``.
        min_group_size: smallest adaptive group in timesteps (1..T//G).
    """

    strategy: str = "uniform"
    lam: float = 0.05
    cost: str = "range"
    min_group_size: int = 1


@dataclasses.dataclass(frozen=True)
class PhasesConfig:
    """The phase experiment (``experiment=phases``): every variant on one shared calibration.

    Attributes:
        enabled: run the phase table after the single run.
        seeds: sampling seeds per variant (``seed``, ``seed + 1``, ...).
        methods: Phase 2 blend methods (timestep level).
        windows: Phase 2 windows in timesteps (each method at each window).
        group_windows: windows of the group-level (ArrowQuant V2) variant, in groups.
        markov_weights: Phase 3 weights (optimization on the groups).
        lambdas: adaptive-grouping weights.
        min_group_size: smallest adaptive group in the table's adaptive variants.
        combinations: add adaptive + smoothing, smoothing + Phase 3, and all three.
        variants: keep only these variant names (empty: all; ``baseline`` is always run).
    """

    enabled: bool = False
    seeds: int = 5
    methods: List[str] = dataclasses.field(  # noqa: UP006
        default_factory=lambda: ["linear", "cubic", "sigmoid"]
    )
    windows: List[int] = dataclasses.field(default_factory=lambda: [25, 100])  # noqa: UP006
    group_windows: List[int] = dataclasses.field(default_factory=lambda: [1])  # noqa: UP006
    markov_weights: List[float] = dataclasses.field(  # noqa: UP006
        default_factory=lambda: [0.1, 1.0, 10.0]
    )
    lambdas: List[float] = dataclasses.field(default_factory=lambda: [0.01, 0.1])  # noqa: UP006
    min_group_size: int = 50
    combinations: bool = True
    variants: List[str] = dataclasses.field(default_factory=list)  # noqa: UP006


def check_window(key: str, window: int, *, level: str, num_time_groups: int) -> None:
    """The window checks that need no model: >= 1, and a group-level window within G groups."""
    if window < 1:
        raise fail(key, window, "the smoothing window must be >= 1")
    groups = num_time_groups
    if level == "group" and window > groups - 1:
        raise fail(
            key,
            window,
            f"a group-level window counts neighbouring groups and must be <= num_time_groups - 1 "
            f"= {groups - 1}",
        )


def validate_thermo(
    thermo: ThermoConfig, time_groups: TimeGroupsConfig, *, num_time_groups: int
) -> None:
    """``thermo.*``, with the windows against the run's time groups."""
    smoothing = thermo.smoothing
    check_choice("thermo.smoothing.method", smoothing.method, SMOOTHING_METHODS)
    check_choice("thermo.smoothing.level", smoothing.level, SMOOTHING_LEVELS)
    if smoothing.window < 1:
        raise fail("thermo.smoothing.window", smoothing.window, "the smoothing window must be >= 1")
    check_number(
        "thermo.smoothing.steepness", smoothing.steepness, positive=True, at_most=MAX_STEEPNESS
    )
    if smoothing.enabled:
        check_window(
            "thermo.smoothing.window",
            smoothing.window,
            level=smoothing.level,
            num_time_groups=num_time_groups,
        )
        adaptive = time_groups
        if (
            smoothing.level == "timestep"
            and adaptive.strategy == "adaptive"
            and smoothing.window > adaptive.min_group_size
        ):
            raise fail(
                "thermo.smoothing.window",
                smoothing.window,
                f"larger than a group: adaptive groups may be as small as "
                f"time_groups.min_group_size={adaptive.min_group_size} timesteps",
            )
    opt = thermo.optimization
    for name in ("markov_weight", "convergence_threshold", "kl_weight", "entropy_weight"):
        check_number(f"thermo.optimization.{name}", getattr(opt, name))
    for name in ("learning_rate", "grad_clip"):
        check_number(f"thermo.optimization.{name}", getattr(opt, name), positive=True)
    for name in ("max_iterations", "patience"):
        check_count(
            f"thermo.optimization.{name}",
            getattr(opt, name),
            at_most=MAX_OPTIMIZATION_STEPS,
            why="the loss history holds one value per step and layer",
        )


def validate_chain_budget(
    chain: ChainBudgetConfig, *, act_mode: str, smoothing: SmoothingConfig
) -> None:
    """``thermo.chain_budget.*``, with the activation parameters it needs: static ones, in
    time groups (not a per-timestep schedule, whose ``T`` groups would cost ``2 T`` runs)."""
    if chain.samples is not None:
        check_count(
            "thermo.chain_budget.samples",
            chain.samples,
            at_most=MAX_INT32,
            why="JAX counts samples in int32",
        )
    if not chain.enabled:
        return
    if act_mode != "static":
        raise fail(
            "thermo.chain_budget.enabled",
            chain.enabled,
            f"act.mode={act_mode} quantizes each token by its own range; the budget swaps static "
            "time-group parameters in and out (set act.mode=static)",
        )
    if smoothing.enabled and smoothing.level == "timestep":
        raise fail(
            "thermo.chain_budget.enabled",
            chain.enabled,
            "thermo.smoothing.level=timestep makes a per-timestep schedule, one group per "
            "timestep; the budget is per time group (use thermo.smoothing.level=group)",
        )


def validate_time_groups(groups: TimeGroupsConfig) -> None:
    """``time_groups.*``."""
    check_choice("time_groups.strategy", groups.strategy, TIME_GROUP_STRATEGIES)
    check_number("time_groups.lambda", groups.lam, at_most=MAX_LAM)
    check_choice("time_groups.cost", groups.cost, SEGMENTATION_COSTS)
    if groups.min_group_size < 1:
        raise fail("time_groups.min_group_size", groups.min_group_size, "must be >= 1")


def validate_phases(phases: PhasesConfig, *, seed: int, num_time_groups: int) -> None:
    """``phases.*``, with its seeds after the run's ``seed`` and windows against its groups."""
    if phases.seeds < 1:
        raise fail("phases.seeds", phases.seeds, "need at least 1 seed")
    for method in phases.methods:
        check_choice("phases.methods", method, SMOOTHING_METHODS)
    for lam in phases.lambdas:
        check_number("phases.lambdas", lam, at_most=MAX_LAM)
    for weight in phases.markov_weights:
        check_number("phases.markov_weights", weight)
    if phases.min_group_size < 1:
        raise fail("phases.min_group_size", phases.min_group_size, "must be >= 1")
    if not phases.enabled:
        return
    last = seed + phases.seeds - 1
    if last > MAX_SEED:
        raise fail(
            "phases.seeds",
            phases.seeds,
            f"seeds seed .. seed + phases.seeds - 1 = {last} must stay <= {MAX_SEED} (a PRNG key "
            "holds 32 bits)",
        )
    for window in phases.windows:
        check_window("phases.windows", window, level="timestep", num_time_groups=num_time_groups)
    for window in phases.group_windows:
        check_window("phases.group_windows", window, level="group", num_time_groups=num_time_groups)
