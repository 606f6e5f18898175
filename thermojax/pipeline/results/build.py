"""Measured arrays in, a :class:`~thermojax.pipeline.results.schema.Result` out (no model needed).

The model-level figures are computed from the per-layer values exactly as they are written to the
JSON, so anyone can recompute them from ``layers``: :func:`build_result` assembles a run's top
level, :func:`with_enhancement` adds the baseline beside the enhanced parameters of an enhanced run,
:func:`with_phases` the phase table and :func:`with_chain` the chain's error budget.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

import thermojax
from thermojax.core.markov import MarkovMetrics
from thermojax.core.timegroups import group_ranges
from thermojax.pipeline.measure.chain import FINAL_ERROR, ChainBudget
from thermojax.pipeline.quality.kind import SampleQuality, quality_from_dict, quality_kind
from thermojax.pipeline.results.schema import (
    BaselineSection,
    ChainSection,
    EnhancementSection,
    LayerResult,
    MetricsView,
    OptimizationSection,
    PhasesSection,
    Result,
    SamplePreview,
    Violation,
    float32_list,
)
from thermojax.pipeline.results.verdict import (
    analyze_violations,
    chain_reading,
    detect_patterns,
    interpret,
    severity_label,
)
from thermojax.pipeline.settings import BaselineConfig
from thermojax.pipeline.weights.section import WeightsSection

__all__ = [
    "NO_MARKOV_FIELDS",
    "PREVIEW_SAMPLES",
    "build_result",
    "build_weight_only_result",
    "group_means",
    "markov_fields",
    "with_chain",
    "with_enhancement",
    "with_phases",
]

PREVIEW_SAMPLES = 16
"""Samples of each kind kept in the ``Result`` for the report's image grids."""


def _quality(quality: SampleQuality | Mapping[str, Any]) -> SampleQuality:
    """An evaluator's quality, or its JSON form (``kind`` names its type)."""
    return quality if isinstance(quality, SampleQuality) else quality_from_dict(quality)


def markov_fields(
    *,
    config: BaselineConfig,
    layer_names: Sequence[str],
    edges: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray,
    metrics: MarkovMetrics,
    act_min: np.ndarray,
    act_max: np.ndarray,
    layer_cosine: Sequence[float],
    model_cosine: float,
    quality: SampleQuality | None = None,
) -> dict[str, Any]:
    """The Markov-smoothness fields of a :class:`Result`, from the per-layer parameters.

    The model-level figures are computed from the per-layer values exactly as they are written
    to the JSON, so anyone can recompute them from ``layers``.

    Args:
        metrics: ``markov_metrics`` of ``scales``/``zero_points`` ``[L, G]`` at one threshold.
        act_min, act_max: per-timestep activation ranges ``[L, T]``.
        layer_cosine: each layer's weight cosine (NaN where unknown).
        quality: the run's sample quality, for the interpretation's quality band and verdict
            (``None``: no quality band, no verdict).
    """
    metrics = jax.tree_util.tree_map(np.asarray, metrics)
    layers = tuple(
        LayerResult(
            name=name,
            scales=float32_list(scales[i]),
            zero_points=float32_list(zero_points[i]),
            scale_jumps=float32_list(metrics.scale_jumps[i]),
            zero_point_jumps=float32_list(metrics.zero_point_jumps[i]),
            boundary_scores=float32_list(metrics.boundary_scores[i]),
            smoothness_score=float32_list(metrics.smoothness_score[i])[0],
            cosine_similarity=float(layer_cosine[i]),
            activation_min=float32_list(act_min[i]),
            activation_max=float32_list(act_max[i]),
        )
        for i, name in enumerate(layer_names)
    )
    violations = tuple(
        Violation(
            layer=layers[i].name,
            boundary_idx=int(b),
            scale_jump=layers[i].scale_jumps[b],
            zero_point_jump=layers[i].zero_point_jumps[b],
            severity=severity_label(int(metrics.severity[i, b])),
        )
        for i, b in np.argwhere(metrics.violations)
    )
    time_groups = tuple((int(a), int(b)) for a, b in group_ranges(edges))
    num_boundaries = len(time_groups) - 1
    layer_boundaries = np.array([layer.boundary_scores for layer in layers], np.float64)
    boundary_scores = tuple(float(v) for v in layer_boundaries.reshape(len(layers), -1).mean(0))
    smoothness = float(np.mean([layer.smoothness_score for layer in layers]))
    if boundary_scores:
        bs = np.asarray(boundary_scores)
        summary = (float(bs.min()), float(bs.max()), float(bs.mean()), float(bs.std()))
    else:  # one time group: no boundaries, nothing to summarize
        summary = (float("nan"),) * 4
    analysis = analyze_violations(
        violations, layer_names=layer_names, num_boundaries=num_boundaries
    )
    return {
        "num_time_groups": len(time_groups),
        "smoothness_score": smoothness,
        "violation_count": len(violations),
        "violations": violations,
        "boundary_scores": boundary_scores,
        "min_boundary_score": summary[0],
        "max_boundary_score": summary[1],
        "mean_boundary_score": summary[2],
        "std_boundary_score": summary[3],
        "common_violation_patterns": detect_patterns(
            analysis,
            time_groups=time_groups,
            bands=config.interpretation,
            advise_phase3=quality is None or quality_kind(quality.kind).advise_phase3,
        ),
        "num_timesteps": int(edges[-1]),
        "time_groups": time_groups,
        "layers": layers,
        "violation_analysis": analysis,
        "interpretation": interpret(
            smoothness_score=smoothness,
            violations=violations,
            boundary_scores=boundary_scores,
            cosine_similarity=float(model_cosine),
            bands=config.interpretation,
            quality=quality,
            bit_width=config.bit_width,
            act_bits=config.act_bits,
        ),
    }


NO_MARKOV_FIELDS: dict[str, Any] = {
    "smoothness_score": None,
    "violation_count": None,
    "violations": (),
    "boundary_scores": (),
    "min_boundary_score": float("nan"),
    "max_boundary_score": float("nan"),
    "mean_boundary_score": float("nan"),
    "std_boundary_score": float("nan"),
    "common_violation_patterns": (),
    "num_timesteps": None,
    "time_groups": (),
    "layers": (),
    "violation_analysis": None,
    "interpretation": None,
}
"""The Markov fields of a weight-only result without activation statistics: unknown, not zero."""


def build_result(
    *,
    config: BaselineConfig,
    model_name: str,
    layer_names: Sequence[str],
    edges: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray,
    metrics: MarkovMetrics,
    act_min: np.ndarray,
    act_max: np.ndarray,
    layer_cosine: Sequence[float],
    model_cosine: float,
    compression_ratio: float,
    model_size_mb: float,
    quality: SampleQuality | Mapping[str, Any],
    fp32_x0: np.ndarray,
    quantized_x0: np.ndarray,
    quantization_time_s: float,
    timings_s: Mapping[str, float],
    weights: WeightsSection | None = None,
) -> Result:
    """Assemble a diffusion run's :class:`Result` from measured arrays (no model needed).

    Args:
        metrics, act_min, act_max, layer_cosine: as for :func:`markov_fields`.
        quality: the evaluator's quality (or its ``to_dict()``).
        fp32_x0, quantized_x0: samples ``[N, *data_shape]`` from the same noise; a few are
            kept as pixels for the report when the kind of sample is shown as images.
        weights: the per-tensor section, if measured.
    """
    section = _quality(quality)
    return Result(
        model_name=model_name,
        bit_width=config.bit_width,
        cosine_similarity=float(model_cosine),
        compression_ratio=float(compression_ratio),
        model_size_mb=float(model_size_mb),
        quantization_time_s=float(quantization_time_s),
        act_bits=config.act_bits,
        smoothness_threshold=config.smoothness_threshold,
        quality=section,
        sample_preview=SamplePreview(fp32=_preview(fp32_x0), quantized=_preview(quantized_x0))
        if quality_kind(section.kind).pixel_preview
        else None,
        timings_s=dict(timings_s),
        environment=_environment(),
        config=config.to_dict(),
        weights=weights,
        samples={"fp32": _samples(fp32_x0), "quantized": _samples(quantized_x0)},
        **markov_fields(
            config=config,
            layer_names=layer_names,
            edges=edges,
            scales=scales,
            zero_points=zero_points,
            metrics=metrics,
            act_min=act_min,
            act_max=act_max,
            layer_cosine=layer_cosine,
            model_cosine=model_cosine,
            quality=section,
        ),
    )


def build_weight_only_result(
    *,
    config: BaselineConfig,
    model_name: str,
    weights: WeightsSection,
    markov: Mapping[str, Any] | None,
    quantization_time_s: float,
    timings_s: Mapping[str, float],
) -> Result:
    """Assemble a weight-only run's :class:`Result`.

    Args:
        weights: every tensor, block and total.
        markov: :func:`markov_fields` of the given activation statistics, or ``None`` without
            them (the Markov figures are then ``None``: unknown, not zero).
    """
    return Result(
        model_name=model_name,
        bit_width=config.bit_width,
        cosine_similarity=float("nan") if weights.model_cosine is None else weights.model_cosine,
        compression_ratio=float(weights.compression_vs_fp32),
        model_size_mb=weights.total_quantized_bytes / 1e6,
        quantization_time_s=float(quantization_time_s),
        act_bits=config.act_bits,
        smoothness_threshold=config.smoothness_threshold,
        quality=None,
        sample_preview=None,
        timings_s=dict(timings_s),
        environment=_environment(),
        config=config.to_dict(),
        mode="weight-only",
        weights=weights,
        **(
            {"num_time_groups": config.num_time_groups, **NO_MARKOV_FIELDS}
            if markov is None
            else dict(markov)
        ),
    )


def group_means(params: np.ndarray, param_edges: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each time group's mean of ``[L, S]`` parameters (identity when ``param_edges == edges``)."""
    per_step = np.repeat(np.asarray(params, np.float64), np.diff(param_edges), axis=1)
    sums = np.add.reduceat(per_step, np.asarray(edges[:-1]), axis=1)
    return (sums / np.diff(edges)[None, :]).astype(np.float32)


def _metrics_view(metrics: MarkovMetrics) -> MetricsView:
    """Model-level summary of per-layer metrics ``[L, G - 1]``, defined as for the top level."""
    metrics = jax.tree_util.tree_map(np.asarray, metrics)
    # From the float32 values as written to the JSON, exactly as build_result does.
    scores = np.array([float32_list(row) for row in metrics.boundary_scores], np.float64)
    return MetricsView(
        smoothness_score=float(np.mean(float32_list(metrics.smoothness_score))),
        violation_count=int(np.sum(metrics.violations)),
        boundary_scores=tuple(float(v) for v in scores.reshape(scores.shape[0], -1).mean(0)),
        scale_jumps=tuple(float32_list(row) for row in metrics.scale_jumps),
    )


def _enhancement_section(config: BaselineConfig, enhanced: Any) -> EnhancementSection:
    variant = enhanced.variant
    opt = enhanced.optimization
    optimization = None
    if opt is not None:
        optimization = OptimizationSection(
            target="timesteps" if variant.per_timestep else "groups",
            settings={
                **dataclasses.asdict(config.thermo.optimization),
                "markov_weight": variant.markov_weight,
            },
            iterations=tuple(int(i) for i in opt.iterations),
            converged=tuple(bool(c) for c in opt.converged),
            initial_loss=float32_list(opt.initial_loss),
            final_loss=float32_list(opt.final_loss),
            quant_error_before=float32_list(opt.quant_error_before),
            quant_error_after=float32_list(opt.quant_error_after),
            markov_penalty_before=float32_list(opt.markov_penalty_before),
            markov_penalty_after=float32_list(opt.markov_penalty_after),
            loss_history=tuple(
                float32_list(history[:steps])
                for history, steps in zip(opt.loss_history, opt.iterations, strict=True)
            ),
        )
    schedule = variant.per_timestep
    return EnhancementSection(
        description=variant.description,
        strategy=variant.strategy,
        lam=float(variant.lam),
        smoothing=dataclasses.asdict(variant.smoothing) if variant.smoothing else None,
        per_timestep=schedule,
        schedule_scales=tuple(float32_list(r) for r in enhanced.scales) if schedule else None,
        schedule_zero_points=(
            tuple(float32_list(r) for r in enhanced.zero_points) if schedule else None
        ),
        group_view=_metrics_view(enhanced.metrics.groups),
        max_step_scale_jump=float32_list(
            np.max(enhanced.metrics.steps.scale_jumps, axis=-1, initial=0.0)
        ),
        optimization=optimization,
        parameter_time_s=float(enhanced.seconds),
    )


def _samples(x0: np.ndarray) -> np.ndarray:
    """Samples as ``samples.npz`` keeps them: token ids int32, pixels float32."""
    x0 = np.asarray(x0)
    return x0.astype(np.int32 if np.issubdtype(x0.dtype, np.integer) else np.float32)


def _preview(x0: np.ndarray) -> tuple[tuple[tuple[float, ...], ...], ...]:
    images = np.asarray(x0, np.float32)[:PREVIEW_SAMPLES]
    return tuple(tuple(float32_list(np.round(row, 3)) for row in image) for image in images)


def _environment() -> dict[str, str]:
    return {
        "thermojax": thermojax.__version__,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        # Which machine ran it; the Ray launcher's worker names its Ray node (a sweep's reports
        # then say how the jobs spread over a cluster).
        "hostname": platform.node(),
        "ray_node_id": os.environ.get("THERMOJAX_RAY_NODE_ID", ""),
        "ray_node_ip": os.environ.get("THERMOJAX_RAY_NODE_IP", ""),
    }


def with_enhancement(
    result: Result,
    *,
    config: BaselineConfig,
    enhanced: Any,
    edges: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray,
    metrics: MarkovMetrics,
    quality: SampleQuality | Mapping[str, Any],
    quantized_x0: np.ndarray,
) -> Result:
    """``result`` (built from the enhanced parameters) with the baseline's parameters, metrics,
    quality and samples beside it, and what the enhancement did.

    Args:
        enhanced: the :class:`~thermojax.pipeline.run.variants.ParameterSet` the sampler used.
        edges, scales, zero_points, metrics: the baseline's uniform, unsmoothed parameters.
        quality: the baseline's quality (or its ``to_dict()``); quantized_x0: its quantized
            samples.
    """
    return dataclasses.replace(
        result,
        baseline=BaselineSection(
            time_groups=tuple((int(a), int(b)) for a, b in group_ranges(edges)),
            scales=tuple(float32_list(row) for row in scales),
            zero_points=tuple(float32_list(row) for row in zero_points),
            metrics=_metrics_view(metrics),
            quality=_quality(quality),
        ),
        enhancement=_enhancement_section(config, enhanced),
        samples={**result.samples, "baseline_quantized": _samples(quantized_x0)},
    )


def with_phases(
    result: Result, table: Mapping[str, Any], records: Sequence[Mapping[str, Any]]
) -> Result:
    """``result`` with the phase table and its per-run records."""
    return dataclasses.replace(
        result, phases=PhasesSection.from_dict(table), phase_records=tuple(records)
    )


def with_chain(result: Result, budget: ChainBudget, *, num_samples: int) -> Result:
    """``result`` with the chain's error budget (``budget``, of ``num_samples`` chains), and its
    interpretation reading it (:func:`~thermojax.pipeline.results.verdict.chain_reading`): the
    summary names where the error enters and which jumps cost it, the next steps follow."""
    chain = ChainSection(
        total=float(budget.total),
        per_group=tuple(float(v) for v in budget.per_group),
        per_boundary=tuple(float(v) for v in budget.per_boundary),
        additivity=float(budget.additivity),
        edges=tuple(int(e) for e in budget.edges),
        steps_per_group=tuple(int(n) for n in budget.steps_per_group),
        measure=FINAL_ERROR,
        num_samples=int(num_samples),
    )
    interpretation = result.interpretation
    if interpretation is not None:
        text, actions = chain_reading(chain)
        interpretation = dataclasses.replace(
            interpretation,
            summary=f"{interpretation.summary} {text}",
            actions=(*actions, *interpretation.actions),
        )
    return dataclasses.replace(result, chain=chain, interpretation=interpretation)
