"""The run of a model thermojax samples, whatever its family: named stages from the loaded model
to the :class:`~thermojax.pipeline.results.schema.Result`.

Data flows one way: the family's model -> weight quantization -> per-timestep calibration ->
time-group activation parameters -> Markov metrics (one vectorized call over all layers) ->
quantized sampling and the quality of the family's kind of sample -> a ``Result``. The family
(:class:`~thermojax.pipeline.families.base.DiffusionFamily`) loads the model, describes its
sampler and writes its quantized checkpoint; this module never asks which family it is.

With smoothing, optimization or adaptive groups on, two more stages compute the enhanced
parameters from the same calibration and sample them from the same noise; the ``Result``'s top
level then describes the enhanced parameters (measured on what the sampler used) with the
baseline beside them. With ``thermo.chain_budget.enabled`` the chain's error budget of the
parameters the sampler used follows (:mod:`thermojax.pipeline.measure.chain`), with the run's
quantized weights, sampler and seed. With ``phases.enabled`` the run ends with the phase
experiment (:mod:`thermojax.pipeline.run.phases`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.core.markov import MarkovMetrics, markov_metrics
from thermojax.core.timegroups import group_activation_params, group_ranges, uniform_edges
from thermojax.errors import UserInputError
from thermojax.models.base import DiffusionModel, SamplerSpec
from thermojax.pipeline.cache.stages import QualityEntry, StageCache, sample_and_evaluate
from thermojax.pipeline.families.registry import evaluate_quality
from thermojax.pipeline.measure.calibrate import CalibrationStats
from thermojax.pipeline.measure.chain import ChainBudget, chain_budget
from thermojax.pipeline.measure.memory import check_memory
from thermojax.pipeline.measure.sampling import ActParams, check_channel_groups, sample
from thermojax.pipeline.quality.kind import QualityKind, SampleQuality, quality_kind
from thermojax.pipeline.results.build import (
    build_result,
    group_means,
    with_chain,
    with_enhancement,
    with_phases,
)
from thermojax.pipeline.results.schema import Result
from thermojax.pipeline.run.stages import (
    CHAIN_STAGE,
    ENHANCE_STAGE,
    EXPORT_STAGE,
    PHASES_STAGE,
    SAMPLE_ENHANCED_STAGE,
    ProgressCallback,
    Stages,
    stage_names,
)
from thermojax.pipeline.run.variants import ParameterSet, compute_parameters, config_variant
from thermojax.pipeline.settings import BaselineConfig, check_model_limits
from thermojax.pipeline.weights.quantize import (
    WeightReport,
    dense_weights,
    measure_weights,
    model_weights_section,
    quantize_weights,
)
from thermojax.pipeline.weights.section import WeightsSection

__all__ = [
    "GroupParameters",
    "SampledFamily",
    "chain_samples",
    "run_diffusion",
    "shipped_act_params",
]

log = logging.getLogger(__name__)


class SampledFamily(Protocol):
    """What the diffusion run needs of the family it runs (a
    :class:`~thermojax.pipeline.families.base.DiffusionFamily` gives all of it): declared here so
    that the run imports no family."""

    quality: QualityKind
    weights_format: str

    def load(self, config: BaselineConfig) -> Any:
        """A ``LoadedModel``: the model, and an export's codes or ``None``."""
        ...

    def step_bytes(self, model: Any, num_samples: int) -> float:
        """Memory one sampler step of ``num_samples`` takes beyond the state (bytes)."""
        ...

    def rotate(self, model: Any, seed: int) -> Any:
        """``model`` with the rotations of ``act.rotation=hadamard``, signs from ``seed``."""
        ...

    def describe_rotation(self, model: Any) -> str:
        """What :meth:`rotate` did to ``model``, in words."""
        ...

    def sampler_record(self, model: Any, spec: SamplerSpec) -> dict[str, Any]:
        """``Result.sampler``'s record of ``spec`` on ``model``."""
        ...

    def export(
        self, config: BaselineConfig, model: Any, qweights: Mapping[str, Any], act_params: Any
    ) -> Any:
        """Write the run's quantized checkpoint to ``config.export.path``; returns its path."""
        ...


@dataclasses.dataclass(frozen=True)
class GroupParameters:
    """Uniform time groups with one activation scale and zero point per layer and group.

    Attributes:
        edges: int32 ``[G + 1]`` on the model's T timesteps (what the sampler, the results and
            a checkpoint use); scales, zero_points: float32 ``[L, G]`` (``[2 L, G]``
            mask-aware: the unmasked positions' rows, then the masked ones');
        metrics: their :class:`MarkovMetrics` at the run's threshold, over every row.
        mask_aware: ``act.mask_aware``.
        channel_groups: K of ``act.granularity=channel`` (rows ``k L + j``), else 1.
    """

    edges: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    metrics: MarkovMetrics
    mask_aware: bool = False
    channel_groups: int = 1

    def act_params(self, bits: int, mode: str = "static") -> ActParams:
        """The sampler's :class:`ActParams` (``mode``: ``act.mode``)."""
        return ActParams(
            self.scales,
            self.zero_points,
            self.edges,
            bits,
            mode,
            mask_aware=self.mask_aware,
            channel_groups=self.channel_groups,
        )


def run_diffusion(
    family: SampledFamily, config: BaselineConfig, progress: ProgressCallback | None = None
) -> Result:
    """Quantize ``family``'s model of ``config`` with Markov validation and measure everything.

    Args:
        family: the family that recognised ``config.model`` (its :meth:`check` already ran).
        config: the validated settings.
        progress: optional ``progress(stage, index, total)`` callback (see :func:`stage_names`).

    Returns:
        The :class:`Result`, with the full sample arrays in ``result.samples``.
    """
    start = time.perf_counter()
    stages = Stages(progress, stage_names(config))
    with stages("load model"):
        loaded = family.load(config)
        model = _rotated(family, config, loaded)
    if channel_groups(config) > 1:
        try:
            check_channel_groups(model, channel_groups(config))
        except ValueError as err:
            raise UserInputError(f"act.channel_groups={config.act.channel_groups}: {err}") from None
    check_memory(  # refuses, with the estimate, a run that cannot fit
        model,
        config,
        comparison_copies=family.quality.comparison_copies,
        step_bytes=family.step_bytes(model, int(config.sampling.num_samples)),
    )
    if loaded.full_precision is not None:  # the two models do not fit together
        from thermojax.pipeline.run.apart import run_apart

        return run_apart(family, config, loaded, stages, start)
    with stages("quantize weights"):
        if loaded.qtensors is None:
            qweights, weight_report = _quantize_weights(model, config)
        else:  # the exported codes, as they are
            qweights = {name: jax.tree.map(jnp.asarray, q) for name, q in loaded.qtensors.items()}
            weight_report = measure_weights(model, qweights)
    weights = model_weights_section(
        model,
        qweights,
        weight_report,
        seconds=stages.timings["quantize weights"],
        source_format=family.weights_format,
    )
    with stages("calibrate"):
        # Calibration, fp32 samples and quantized quality are shared by the jobs of a sweep (and
        # later runs) through the on-disk cache: thermojax.pipeline.cache.stages says what each
        # entry depends on (the weights these qweights are, not the settings that made them).
        cached = StageCache(model, config.to_dict(), qweights)
        stats = cached.calibration()
    with stages("time groups + metrics"):
        baseline = _group_parameters(stats, config)
    enhanced = None
    if config.enhanced:
        with stages(ENHANCE_STAGE):
            enhanced = _enhanced_parameters(stats, config, baseline)
    # Waiting for another worker's calibration (the cache lock) is not this run's quantization.
    quantization_time_s = sum(stages.timings.values()) - sum(cached.waited_s.values())
    with stages("sample fp32"):
        fp32 = cached.fp32_samples()
    with stages("sample quantized"):
        shared = cached.quality(
            lambda: sample_and_evaluate(
                model,
                fp32,
                qweights=qweights,
                act_params=baseline.act_params(config.act_bits, config.act.mode),
                weight_report=weight_report,
                num_samples=config.sampling.num_samples,
                seed=config.seed,
            )
        )
    enhanced_x0 = enhanced_quality = None
    if enhanced is not None:
        with stages(SAMPLE_ENHANCED_STAGE):
            enhanced_samples = sample(
                model,
                weights=qweights,
                act_params=enhanced.act_params(config.act_bits),
                num_samples=config.sampling.num_samples,
                seed=config.seed,
                sampler=fp32.sampler,
            )
            enhanced_x0 = enhanced_samples.x0
    with stages("evaluate quality"):
        _log_quality("baseline" if enhanced is not None else "", shared.quality)
        if enhanced is not None:
            enhanced_quality = evaluate_quality(
                model,
                fp32,
                enhanced_samples,
                enhanced.model_edges,
                weight_report,
                qweights=qweights,
                act_params=enhanced.act_params(config.act_bits),
                seed=config.seed,
            )
            _log_quality("enhanced", enhanced_quality)
    chain = None
    if config.thermo.chain_budget.enabled:
        with stages(CHAIN_STAGE):
            used = (
                baseline.act_params(config.act_bits)
                if enhanced is None
                else enhanced.act_params(config.act_bits)
            )
            chain = _chain_budget(model, config, qweights, used, fp32.sampler)
    phases = None
    if config.phases.enabled:
        from thermojax.pipeline.run.phases import run_phases

        with stages(PHASES_STAGE):
            phases = run_phases(model, qweights, weight_report, stats, config)

    result = _assemble(
        config,
        model,
        weight_report,
        stats,
        baseline,
        shared,
        fp32_x0=fp32.x0,
        enhanced=enhanced,
        enhanced_quality=enhanced_quality,
        enhanced_x0=enhanced_x0,
        quantization_time_s=quantization_time_s,
        timings_s={**stages.timings, "total": time.perf_counter() - start},
        weights=weights,
    )
    if chain is not None:
        result = with_chain(result, chain, num_samples=chain_samples(config))
    if phases is not None:
        result = with_phases(result, *phases)
    if config.export.path is not None:
        with stages(EXPORT_STAGE):
            act_params = (baseline if enhanced is None else enhanced).act_params(config.act_bits)
            path = family.export(config, model, qweights, shipped_act_params(config, act_params))
            log.info("quantized checkpoint written to %s", path)
            result = dataclasses.replace(
                result, weights=dataclasses.replace(result.weights, export_path=str(path))
            )
    result = dataclasses.replace(
        result, cache=dict(cached.record), sampler=_sampler_record(family, model, stats, fp32)
    )
    _log_details(result)
    return result


def _rotated(family: SampledFamily, config: BaselineConfig, loaded: Any) -> DiffusionModel:
    """The loaded model, rotated with ``act.rotation=hadamard`` (signs from ``seed``): what
    every later stage sees (weight quantization, calibration, fp32 and quantized samples), the
    same function as the loaded model within float32 rounding."""
    if config.act.rotation == "none":
        return loaded.model
    if loaded.qtensors is not None or loaded.full_precision is not None:
        # family.check refuses an export, and the LM's memory plan model.residency=apart.
        raise ValueError("act.rotation rotates a full-precision model held whole in memory")
    rotated = family.rotate(loaded.model, config.seed)
    log.info(
        "act.rotation=%s (signs from seed %d): %s",
        config.act.rotation,
        config.seed,
        family.describe_rotation(rotated),
    )
    return rotated


def shipped_act_params(config: BaselineConfig, act_params: ActParams) -> ActParams | None:
    """The activation parameters an export ships: none with ``act.mode=dynamic``, whose
    quantized model quantizes each token by its own range and uses no calibrated parameters."""
    if config.act.mode == "dynamic":
        log.info("act.mode=dynamic: the checkpoint ships no activation parameters")
        return None
    return act_params


def _sampler_record(
    family: SampledFamily, model: DiffusionModel, stats: CalibrationStats, fp32: Any
) -> dict[str, Any]:
    """``Result.sampler``: the sampler that sampled and the one that calibrated, with their
    steps, in the family's words."""
    calibration = SamplerSpec(
        stats.sampler["sampler"], stats.sampler["steps"], stats.sampler["eta"]
    )
    return {
        **family.sampler_record(model, fp32.sampler or SamplerSpec()),
        "timesteps": [int(t) for t in fp32.timesteps],
        "calibration": {
            **family.sampler_record(model, calibration),
            "timesteps": [int(t) for t in stats.timesteps],
        },
    }


def _quantize_weights(model: DiffusionModel, config: BaselineConfig) -> tuple[Any, WeightReport]:
    """The weights by ``quant.method``; for GPTQ, first the Hessians of the run's time groups
    (and, weighted by sensitivity, the minmax weights whose error each group's steps receive)."""
    quant, bits, group_size = config.quant, config.bit_width, config.group_size
    hessians = None
    if quant.method == "gptq":
        from thermojax.pipeline.measure.hessians import gptq_hessians

        check_model_limits(config, int(model.num_timesteps))
        injected = None
        if quant.hessian == "sensitivity":
            plain, _ = quantize_weights(
                model,
                bits=bits,
                group_size=group_size,
                quant=dataclasses.replace(quant, method="minmax"),
            )
            injected = dense_weights(model, plain)
        found = gptq_hessians(
            model,
            weighting=quant.hessian,
            edges=uniform_edges(model.num_timesteps, config.num_time_groups),
            num_samples=quant.hessian_samples,
            seed=config.seed,
            injected=injected,
        )
        hessians = found.hessians
        log.info(
            "GPTQ Hessians (%s): group weights %s%s",
            found.weighting,
            np.array2string(found.group_weights, precision=4),
            ""
            if found.sensitivity is None
            else f", sensitivity {np.array2string(found.sensitivity, precision=4)}",
        )
    qweights, report = quantize_weights(
        model, bits=bits, group_size=group_size, quant=quant, hessians=hessians
    )
    log.info(
        "weights at %d bits (%s%s): cosine %.4f, compression %.2fx, %.4f MB",
        bits,
        quant.method,
        f", kept {dict(quant.keep_bits)}" if quant.keep_bits else "",
        report.model_cosine,
        report.compression_ratio,
        report.model_size_mb,
    )
    return qweights, report


def _group_parameters(stats: CalibrationStats, config: BaselineConfig) -> GroupParameters:
    """Uniform groups of the model's timesteps, their activation parameters from the calibration
    steps in each, and one Markov evaluation over all layers."""
    edges = uniform_edges(stats.model_timesteps, config.num_time_groups)
    scales, zero_points = group_activation_params(
        stats.act_min, stats.act_max, stats.step_edges(edges), bits=config.act_bits
    )
    # One evaluation over every layer: [L, G] in, [L, G-1] / [L] out.
    metrics = markov_metrics(
        scales, zero_points, qmax=2**config.act_bits - 1, threshold=config.smoothness_threshold
    )
    log.info("time groups %s", group_ranges(edges))
    return GroupParameters(
        edges,
        np.asarray(scales),
        np.asarray(zero_points),
        metrics,
        config.act.mask_aware,
        channel_groups(config),
    )


def channel_groups(config: BaselineConfig) -> int:
    """K of ``act.granularity=channel``, else 1 (one parameter set per layer's whole input)."""
    return config.act.channel_groups if config.act.granularity == "channel" else 1


def _enhanced_parameters(
    stats: CalibrationStats, config: BaselineConfig, baseline: GroupParameters
) -> ParameterSet:
    """The parameters of the run's ``thermo.*`` / ``time_groups.*`` settings."""
    enhanced = compute_parameters(
        stats,
        config_variant(config),
        num_groups=config.num_time_groups,
        act_bits=config.act_bits,
        threshold=config.smoothness_threshold,
        optimization=config.thermo.optimization,
    )
    log.info(
        "enhanced (%s): smoothness %.4f (baseline %.4f), time groups %s",
        enhanced.variant.description,
        float(np.mean(enhanced.metrics.windows.smoothness_score)),
        float(np.mean(np.asarray(baseline.metrics.smoothness_score))),
        group_ranges(enhanced.edges),
    )
    return enhanced


def chain_samples(config: BaselineConfig) -> int:
    """The chains' size of ``thermo.chain_budget``: its ``samples``, else ``sampling.num_samples``."""
    samples = config.thermo.chain_budget.samples
    return int(config.sampling.num_samples if samples is None else samples)


def _chain_budget(
    model: DiffusionModel,
    config: BaselineConfig,
    qweights: Mapping[str, Any],
    act_params: ActParams,
    sampler: SamplerSpec | None,
) -> ChainBudget:
    """The chain's error budget of the run's quantized weights and the activation parameters
    the quantized sampler used, on its sampler and seed (the settings refused what it cannot
    budget: dynamic activations, a per-timestep schedule, a family without a float state)."""
    num_samples = chain_samples(config)
    budget = chain_budget(
        model,
        qweights=qweights,
        act_params=act_params,
        num_samples=num_samples,
        seed=config.seed,
        sampler=sampler,
    )
    log.info(
        "chain budget (%d samples, final-state MSE): total %.4g, per group [%s], per boundary "
        "[%s], additivity %.3f",
        num_samples,
        budget.total,
        ", ".join(f"{v:.4g}" for v in budget.per_group),
        ", ".join(f"{v:+.4g}" for v in budget.per_boundary),
        budget.additivity,
    )
    return budget


def _assemble(
    config: BaselineConfig,
    model: DiffusionModel,
    weight_report: WeightReport,
    stats: CalibrationStats,
    baseline: GroupParameters,
    shared: QualityEntry,
    *,
    fp32_x0: np.ndarray,
    enhanced: ParameterSet | None,
    enhanced_quality: SampleQuality | None,
    enhanced_x0: np.ndarray | None,
    quantization_time_s: float,
    timings_s: dict[str, float],
    weights: WeightsSection,
) -> Result:
    """The Result; its top level describes the parameters the quantized sampler used."""
    if enhanced is None:
        edges, scales, zero_points = baseline.edges, baseline.scales, baseline.zero_points
        metrics, quality, quantized_x0 = baseline.metrics, shared.quality, shared.quantized_x0
    else:
        edges = enhanced.model_edges
        scales = group_means(enhanced.scales, enhanced.param_edges, enhanced.edges)
        zero_points = group_means(enhanced.zero_points, enhanced.param_edges, enhanced.edges)
        metrics, quality, quantized_x0 = enhanced.metrics.windows, enhanced_quality, enhanced_x0
    # One row per parameter set: mask-aware, each layer's unmasked then masked positions,
    # both rows with the layer's weight cosine.
    repeat = len(stats.layer_names) // len(model.layer_names)
    result = build_result(
        config=config,
        model_name=config.model.name or model.name,
        layer_names=stats.layer_names,
        edges=edges,
        scales=scales,
        zero_points=zero_points,
        metrics=metrics,
        act_min=stats.act_min,
        act_max=stats.act_max,
        layer_cosine=list(weight_report.layer_cosine) * repeat,
        model_cosine=weight_report.model_cosine,
        compression_ratio=weight_report.compression_ratio,
        model_size_mb=weight_report.model_size_mb,
        quality=quality,
        fp32_x0=fp32_x0,
        quantized_x0=quantized_x0,
        quantization_time_s=quantization_time_s,
        timings_s=timings_s,
        weights=weights,
    )
    if enhanced is None:
        return result
    return with_enhancement(
        result,
        config=config,
        enhanced=enhanced,
        edges=baseline.edges,
        scales=baseline.scales,
        zero_points=baseline.zero_points,
        metrics=baseline.metrics,
        quality=shared.quality,
        quantized_x0=shared.quantized_x0,
    )


def _log_quality(label: str, quality: SampleQuality) -> None:
    where = f" ({label})" if label else ""
    log.info("quality%s: %s", where, quality_kind(quality.kind).log_summary(quality))


def _log_details(result: Result) -> None:
    """Per-layer parameters, violations, patterns and interpretation, for the run log."""
    for layer in result.layers:
        log.info(
            "layer %-12s smoothness %.4f cosine %.4f scales [%s] zero points [%s]",
            layer.name,
            layer.smoothness_score,
            layer.cosine_similarity,
            ", ".join(f"{s:.4g}" for s in layer.scales),
            ", ".join(f"{z:.0f}" for z in layer.zero_points),
        )
    log.info("boundary scores %s", ", ".join(f"{s:.4f}" for s in result.boundary_scores))
    for v in result.violations:
        log.info(
            "violation: layer %s boundary %d scale jump %.3f zero-point jump %.4f (%s)",
            v.layer,
            v.boundary_idx,
            v.scale_jump,
            v.zero_point_jump,
            v.severity,
        )
    for p in result.common_violation_patterns:
        log.info("pattern %s: %s", p.name, p.detail)
    log.info("interpretation: %s", result.interpretation.summary)
    for action in result.interpretation.actions:
        log.info("recommended: %s", action)
    log.info(
        "smoothness %.4f (smoothness band: %s), quality band: %s, %d violations, cosine %.4f, "
        "total %.1f s",
        result.smoothness_score,
        result.interpretation.band,
        result.interpretation.quality_band,
        result.violation_count,
        result.cosine_similarity,
        result.timings_s["total"],
    )
