"""Issue 6's enhancements composed for a run, and the phase experiment that measures them.

A :class:`Variant` names one way to compute the activation quantization parameters from a
calibration: the baseline (uniform groups, one parameter pair per group), Phase 2 smoothing
(per-timestep blend across boundaries, or the seed's group-level blend), Phase 3 transition
optimization, adaptive time groups, or a combination. :func:`compute_parameters` turns a variant
and the calibration statistics into the parameters the sampler uses plus their Markov metrics,
always measured on those parameters (:func:`thermojax.schedule_metrics.schedule_metrics`: a
per-timestep schedule reports, per group boundary, the largest per-step jump inside its window).

:func:`run_phases` is the phase table: every variant on ONE shared calibration and weight
quantization, sampled from the same noise as fp32 for each seed. Parameters do not depend on the
seed (only the sampling noise does), so smoothness and violations have no spread; the quality
figures get a mean and a sample standard deviation (``ddof=1``) over the seeds. The fp32 samples of
a seed are shared by every variant, and the sampler compiles once per parameter shape (``[L, G]``
and ``[L, T]``); parameters go in as arrays.

Example:
    >>> variants = build_variants(to_config({"phases": {"enabled": True}}))  # doctest: +SKIP
    >>> [v.name for v in variants][:3]  # doctest: +SKIP
    ['baseline', 'smooth-linear-w25', 'smooth-linear-w100']
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from thermojax.adaptive import adaptive_edges
from thermojax.calibrate import CalibrationStats
from thermojax.config import BaselineConfig, OptimizationConfig
from thermojax.errors import UserInputError
from thermojax.evaluate import ActParams, WeightReport, evaluate_quality, sample
from thermojax.results import PHASE_SPREADS
from thermojax.schedule_metrics import ScheduleMetrics, schedule_metrics
from thermojax.smoothing import smooth_boundaries, smooth_groups
from thermojax.timegroups import expand_to_timesteps, group_activation_params, uniform_edges

__all__ = [
    "PAIRED_METRICS",
    "RECORD_METRICS",
    "ParameterSet",
    "Smoothing",
    "Variant",
    "baseline_variant",
    "build_variants",
    "compute_parameters",
    "config_variant",
    "phase_table",
    "record_file_name",
    "run_phases",
]

log = logging.getLogger(__name__)

RECORD_METRICS = PHASE_SPREADS
"""Scalar figures of every per-run record that the table summarizes as mean and std over seeds."""

WARM_REPEATS = 3
"""Warm parameter computations per variant; the fastest is the reported ``param_time_s``."""

PAIRED_METRICS = ("drift_mean", "final_mse", "frechet_quantized", "class_coverage_quantized")
"""Quality figures also given as paired differences to the baseline run of the same seed.

Every variant of a seed samples from the same noise, so the seed-to-seed spread is shared; the
paired difference's spread is the one to compare a change against."""


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
        optimization: the Phase 3 :class:`~thermojax.transition.TransitionResult` (numpy), or None.
        seconds: wall time of computing the parameters (compilation included when first run).
    """

    variant: Variant
    edges: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    param_edges: np.ndarray
    metrics: ScheduleMetrics
    optimization: Any
    seconds: float

    def act_params(self, bits: int) -> ActParams:
        """The sampler's :class:`ActParams`."""
        return ActParams(self.scales, self.zero_points, self.param_edges, bits)


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
        edges = uniform_edges(num_timesteps, num_groups)
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
        from thermojax.transition import optimize_transitions  # optax only where Phase 3 runs

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
    )


def record_file_name(index: int, variant: str, seed: int) -> str:
    """``NN-<variant>-seedS.json`` with anything but letters, digits, ``.`` and ``-`` as ``_``."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", variant)
    return f"{index:02d}-{slug}-seed{seed}.json"


ProgressFn = Callable[[str], None]


def run_phases(
    model: Any,
    qweights: Mapping[str, Any],
    weight_report: WeightReport,
    stats: CalibrationStats,
    config: BaselineConfig,
    *,
    progress: ProgressFn | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run every variant of ``config.phases`` on one calibration over the configured seeds.

    Args:
        model: the model ``stats`` came from.
        qweights, weight_report: the weight quantization shared by every variant.
        stats: the shared calibration.
        config: the run's configuration (``phases``, ``thermo.optimization``, sampling, ...).
        progress: optional callback, given one line per finished step.

    Returns:
        ``(table, records)``: the table (:func:`phase_table` plus the run's settings) and one
        record per variant and seed (plain dicts, in run order).
    """
    start = time.perf_counter()
    variants = build_variants(config)
    num_groups = config.num_time_groups
    uniform = uniform_edges(stats.num_timesteps, num_groups)

    def compute(variant: Variant) -> ParameterSet:
        return compute_parameters(
            stats,
            variant,
            num_groups=num_groups,
            act_bits=config.act_bits,
            threshold=config.smoothness_threshold,
            optimization=config.thermo.optimization,
        )

    params: list[ParameterSet] = []
    compile_s: dict[str, float] = {}
    for variant in variants:
        cold = compute(variant)
        # Timed again without compilation, best of a few: other processes share the CPU, and a
        # millisecond computation picks up their noise.
        warm = min((compute(variant) for _ in range(WARM_REPEATS)), key=lambda p: p.seconds)
        params.append(warm)
        compile_s[variant.name] = max(cold.seconds - warm.seconds, 0.0)
        _tell(progress, f"parameters {variant.name}: {warm.seconds * 1e3:.1f} ms")
    seeds = [config.seed + i for i in range(config.phases.seeds)]
    num_samples = config.sampling.num_samples
    # One compilation per parameter shape, outside the timings.
    for shape in {p.scales.shape: p for p in params}.values():
        sample(
            model,
            weights=qweights,
            act_params=shape.act_params(config.act_bits),
            num_samples=num_samples,
            seed=seeds[0],
        )
    records: list[dict[str, Any]] = []
    fp32_quality: list[dict[str, float]] = []
    for seed in seeds:
        fp32 = sample(model, num_samples=num_samples, seed=seed)
        for index, p in enumerate(params):
            t0 = time.perf_counter()
            quantized = sample(
                model,
                weights=qweights,
                act_params=p.act_params(config.act_bits),
                num_samples=num_samples,
                seed=seed,
            )
            sampling_s = time.perf_counter() - t0
            # Drift per group on the uniform groups, so the columns line up across variants.
            quality = evaluate_quality(model, fp32, quantized, uniform, weight_report)
            records.append(_record(index, p, seed, quality, sampling_s, compile_s))
            _tell(
                progress,
                f"seed {seed} {p.variant.name}: final MSE {quality.final_mse:.3f}, "
                f"Frechet {quality.frechet_quantized:.2f}",
            )
        fp32_quality.append(
            {"frechet": quality.frechet_fp32, "class_coverage": quality.class_coverage_fp32}
        )
        del fp32
    table = {
        "seeds": seeds,
        "num_samples": num_samples,
        "bit_width": config.bit_width,
        "act_bits": config.act_bits,
        "num_time_groups": num_groups,
        "smoothness_threshold": config.smoothness_threshold,
        "drift_group_edges": [int(e) for e in uniform],
        "fp32_frechet": _mean_std([q["frechet"] for q in fp32_quality]),
        "fp32_class_coverage": _mean_std([q["class_coverage"] for q in fp32_quality]),
        "rows": phase_table(records),
        "total_time_s": time.perf_counter() - start,
    }
    return table, records


def _tell(progress: ProgressFn | None, line: str) -> None:
    log.info("phases: %s", line)
    if progress is not None:
        progress(line)


def _record(
    index: int,
    p: ParameterSet,
    seed: int,
    quality: Any,
    sampling_s: float,
    compile_s: Mapping[str, float],
) -> dict[str, Any]:
    windows, groups = p.metrics.windows, p.metrics.groups
    opt = p.optimization
    return {
        "index": index,
        "variant": p.variant.name,
        "phase": p.variant.phase,
        "description": p.variant.description,
        "seed": seed,
        "edges": [int(e) for e in p.edges],
        "per_timestep": p.variant.per_timestep,
        "smoothness_score": float(np.mean(windows.smoothness_score)),
        "violation_count": int(np.sum(windows.violations)),
        "group_view_smoothness_score": float(np.mean(groups.smoothness_score)),
        "max_step_scale_jump": float(np.max(p.metrics.steps.scale_jumps, initial=0.0)),
        "drift_mean": float(quality.drift_mean),
        "drift_per_group": [float(v) for v in quality.drift_per_group],
        "drift_per_timestep": [float(v) for v in quality.drift_per_timestep],
        "final_mse": float(quality.final_mse),
        "frechet_quantized": float(quality.frechet_quantized),
        "frechet_fp32": float(quality.frechet_fp32),
        "class_coverage_quantized": float(quality.class_coverage_quantized),
        "class_coverage_fp32": float(quality.class_coverage_fp32),
        "param_time_s": float(p.seconds),
        "param_compile_s": float(compile_s[p.variant.name]),
        "sampling_time_s": float(sampling_s),
        "optimization_iterations": ([int(i) for i in opt.iterations] if opt is not None else None),
        "optimization_converged": ([bool(c) for c in opt.converged] if opt is not None else None),
    }


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value)."""
    arr = np.asarray(values, np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std}


def phase_table(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant (in first-seen order) from per-run records.

    Each figure of :data:`RECORD_METRICS` becomes ``{"mean", "std"}`` over the variant's seeds
    (sample std, ``ddof=1``), as do the per-group drifts (``drift_per_group``: one per group); the
    per-timestep drift is averaged over seeds. ``paired_delta[m]`` for ``m`` in
    :data:`PAIRED_METRICS` is the mean and std over seeds of (variant - baseline of the same seed). Timings relative to the ``baseline`` row:
    ``param_extra_s`` (parameter computation, warm, minus the baseline's), ``sampling_ratio``
    (mean quantized sampling time over the baseline's). Rows keep the records' ``edges``.
    """
    by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_variant.setdefault(record["variant"], []).append(record)
    rows = []
    for name, runs in by_variant.items():
        first = runs[0]
        drift_groups = np.asarray([r["drift_per_group"] for r in runs], np.float64)
        row: dict[str, Any] = {
            "variant": name,
            "phase": first["phase"],
            "description": first["description"],
            "edges": list(first["edges"]),
            "num_seeds": len(runs),
        }
        for metric in RECORD_METRICS:
            row[metric] = _mean_std([r[metric] for r in runs])
        row["drift_per_group"] = [_mean_std(col) for col in drift_groups.T]
        row["drift_per_timestep"] = [
            float(v) for v in np.mean([r["drift_per_timestep"] for r in runs], axis=0)
        ]
        row["paired_delta"] = {}
        row["param_time_s"] = float(np.mean([r["param_time_s"] for r in runs]))
        row["param_compile_s"] = float(np.mean([r["param_compile_s"] for r in runs]))
        rows.append(row)
    base = next((r for r in rows if r["variant"] == "baseline"), rows[0] if rows else None)
    base_runs = {r["seed"]: r for r in by_variant.get(base["variant"], [])} if base else {}
    for row in rows:
        runs = [r for r in by_variant[row["variant"]] if r["seed"] in base_runs]
        for metric in PAIRED_METRICS:
            row["paired_delta"][metric] = _mean_std(
                [r[metric] - base_runs[r["seed"]][metric] for r in runs]
            )
        row["param_extra_s"] = row["param_time_s"] - base["param_time_s"]
        denominator = base["sampling_time_s"]["mean"]
        row["sampling_ratio"] = (
            row["sampling_time_s"]["mean"] / denominator if denominator > 0 else math.nan
        )
    return rows
