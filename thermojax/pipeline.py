"""The baseline run as plain functions: ``run(cfg) -> Result`` and ``write_outputs(result, dir)``.

Data flows one way: config -> model -> weight quantization -> per-timestep calibration ->
time-group activation parameters -> Markov metrics (one vectorized call over all layers) ->
quantized sampling and quality -> a :class:`~thermojax.results.Result`. No Hydra here: the CLI,
sweeps and tests call these functions directly.

With smoothing, optimization or adaptive groups on (issue 6), the same calibration also gives the
enhanced parameters; both sets are sampled from the same noise, and the ``Result``'s top level
describes the enhanced parameters (measured on what the sampler used) with the baseline beside
them. With ``phases.enabled`` the run ends with the phase table (:mod:`thermojax.phases`).

Example:
    >>> from thermojax.pipeline import run, write_outputs
    >>> result = run({"bit_width": 2, "num_time_groups": 4})  # doctest: +SKIP
    >>> write_outputs(result, "outputs/int2")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig

import thermojax
from thermojax.config import BaselineConfig, check_model_limits, to_config
from thermojax.errors import UserInputError
from thermojax.evaluate import ActParams, evaluate_quality, quantize_weights, sample
from thermojax.markov import MarkovMetrics, markov_metrics
from thermojax.patterns import analyze_violations, detect_patterns, interpret, severity_label
from thermojax.results import (
    PHASE_SPREADS,
    BaselineSection,
    EnhancementSection,
    LayerResult,
    MetricsView,
    OptimizationSection,
    PhasesSection,
    QualitySection,
    Result,
    SamplePreview,
    Violation,
    atomic_write_bytes,
    float32_list,
    write_result,
)
from thermojax.stage_cache import StageCache, load_model_once, sample_and_evaluate
from thermojax.timegroups import group_activation_params, group_ranges, uniform_edges

__all__ = [
    "OUTPUT_FILES",
    "PHASE_FILES",
    "STAGES",
    "build_result",
    "run",
    "stage_names",
    "write_outputs",
]

log = logging.getLogger(__name__)

STAGES = (
    "load model",
    "quantize weights",
    "calibrate",
    "time groups + metrics",
    "sample fp32",
    "sample quantized",
    "evaluate quality",
)
"""The stages of a baseline run, in order (an enhanced run adds stages: :func:`stage_names`)."""

ENHANCE_STAGE = "enhance parameters"
SAMPLE_ENHANCED_STAGE = "sample enhanced"
PHASES_STAGE = "phase experiment"


def stage_names(config: BaselineConfig) -> tuple[str, ...]:
    """The stages ``run(config)`` reports to its ``progress`` callback, in order."""
    names = list(STAGES)
    if config.enhanced:
        names.insert(names.index("sample fp32"), ENHANCE_STAGE)
        names.insert(names.index("evaluate quality"), SAMPLE_ENHANCED_STAGE)
    if config.phases.enabled:
        names.append(PHASES_STAGE)
    return tuple(names)


OUTPUT_FILES = {
    "json": "baseline_metrics.json",
    "html": "baseline_metrics.html",
    "samples": "samples.npz",
}
"""What :func:`write_outputs` writes into the output folder (the CLI adds the log)."""

PHASE_FILES = {"json": "phases.json", "csv": "phases.csv", "runs": "phases"}
"""The phase table's files: ``phases.json``, ``phases.csv``, one record per run in ``phases/``."""

PREVIEW_SAMPLES = 16
"""Samples of each kind kept in the ``Result`` for the report's image grids."""

ProgressCallback = Callable[[str, int, int], None]
"""``progress(stage, index, total)``, called as each stage starts and once with ``"done"``."""


class _Stages:
    """Times the stages, logs them, and tells the progress callback."""

    def __init__(self, progress: ProgressCallback | None, names: Sequence[str] = STAGES) -> None:
        self.progress = progress
        self.names = tuple(names)
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        index, total = self.names.index(name), len(self.names)
        if self.progress is not None:
            self.progress(name, index, total)
        log.info("stage %d/%d: %s", index + 1, total, name)
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start
        log.info("stage %s took %.2f s", name, self.timings[name])
        if self.progress is not None and index == total - 1:
            self.progress("done", total, total)


def run(
    cfg: BaselineConfig | DictConfig | Mapping[str, Any],
    *,
    progress: ProgressCallback | None = None,
) -> Result:
    """Quantize the configured model with Markov validation and measure everything.

    Args:
        cfg: a :class:`BaselineConfig`, a composed Hydra config or a (partial) mapping.
        progress: optional ``progress(stage, index, total)`` callback (see :func:`stage_names`).

    Returns:
        The :class:`Result`, with the full sample arrays in ``result.samples``.

    Raises:
        UserInputError: an invalid config value, a bad model path, ``num_time_groups`` above the
            model's timestep count, a smoothing window larger than a group, or a ``group_size``
            that does not fit the model.
    """
    config = to_config(cfg)
    stages = _Stages(progress, stage_names(config))
    start = time.perf_counter()
    log.info("config: %s", config.to_dict())

    with stages("load model"):
        try:
            model = load_model_once(config.model.path)
        except UserInputError as exc:
            raise UserInputError(f"model.path={config.model.path!r}: {exc}") from None
        num_timesteps = int(model.num_timesteps)
        check_model_limits(config, num_timesteps)
        if config.phases.enabled:
            from thermojax.phases import build_variants

            build_variants(config)  # an unknown phases.variants name fails before any work
        log.info("model %s: T=%d, layers %s", model.name, num_timesteps, model.layer_names)

    with stages("quantize weights"):
        qweights, weight_report = quantize_weights(
            model, bits=config.bit_width, group_size=config.group_size
        )
        log.info(
            "weights at %d bits: cosine %.4f, compression %.2fx, %.4f MB",
            config.bit_width,
            weight_report.model_cosine,
            weight_report.compression_ratio,
            weight_report.model_size_mb,
        )

    with stages("calibrate"):
        # Calibration, fp32 samples and quantized quality are shared by the jobs of a sweep
        # (and later runs) through the on-disk cache: thermojax.stage_cache says what each
        # entry depends on.
        cached = StageCache(model, config.to_dict())
        stats = cached.calibration(qweights)

    with stages("time groups + metrics"):
        edges = uniform_edges(num_timesteps, config.num_time_groups)
        scales, zero_points = group_activation_params(
            stats.act_min, stats.act_max, edges, bits=config.act_bits
        )
        # One evaluation over every layer: [L, G] in, [L, G-1] / [L] out.
        metrics = markov_metrics(
            scales,
            zero_points,
            qmax=2**config.act_bits - 1,
            threshold=config.smoothness_threshold,
        )
        scales, zero_points = np.asarray(scales), np.asarray(zero_points)
        log.info("time groups %s", group_ranges(edges))
    enhanced = None
    if config.enhanced:
        from thermojax.phases import compute_parameters, config_variant

        with stages(ENHANCE_STAGE):
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
                float(np.mean(np.asarray(metrics.smoothness_score))),
                group_ranges(enhanced.edges),
            )
    quantization_time_s = sum(stages.timings.values())

    act_params = ActParams(
        scales=scales, zero_points=zero_points, edges=edges, bits=config.act_bits
    )
    with stages("sample fp32"):
        fp32 = cached.fp32_samples()
    with stages("sample quantized"):
        shared = cached.quality(
            lambda: sample_and_evaluate(
                model,
                fp32,
                qweights=qweights,
                act_params=act_params,
                weight_report=weight_report,
                num_samples=config.sampling.num_samples,
                seed=config.seed,
            )
        )
    enhanced_samples = None
    if enhanced is not None:
        with stages(SAMPLE_ENHANCED_STAGE):
            enhanced_samples = sample(
                model,
                weights=qweights,
                act_params=enhanced.act_params(config.act_bits),
                num_samples=config.sampling.num_samples,
                seed=config.seed,
            )
    with stages("evaluate quality"):
        quality = shared.quality  # evaluated with the quantized samples (one cache entry)
        _log_quality("baseline" if enhanced is not None else "", quality)
        enhanced_quality = None
        if enhanced is not None:
            enhanced_quality = evaluate_quality(
                model, fp32, enhanced_samples, enhanced.edges, weight_report
            )
            _log_quality("enhanced", enhanced_quality)
    phases = None
    if config.phases.enabled:
        from thermojax.phases import run_phases

        with stages(PHASES_STAGE):
            phases = run_phases(model, qweights, weight_report, stats, config)

    # The top level describes the parameters the quantized sampler used.
    used = {
        "edges": edges,
        "scales": scales,
        "zero_points": zero_points,
        "metrics": metrics,
        "quality": quality,
        "quantized_x0": shared.quantized_x0,
    }
    if enhanced is not None:
        used = {
            "edges": enhanced.edges,
            "scales": _group_means(enhanced.scales, enhanced.param_edges, enhanced.edges),
            "zero_points": _group_means(enhanced.zero_points, enhanced.param_edges, enhanced.edges),
            "metrics": enhanced.metrics.windows,
            "quality": enhanced_quality,
            "quantized_x0": enhanced_samples.x0,
        }
    result = build_result(
        config=config,
        model_name=config.model.name or model.name,
        layer_names=model.layer_names,
        edges=used["edges"],
        scales=used["scales"],
        zero_points=used["zero_points"],
        metrics=used["metrics"],
        act_min=stats.act_min,
        act_max=stats.act_max,
        layer_cosine=weight_report.layer_cosine,
        model_cosine=weight_report.model_cosine,
        compression_ratio=weight_report.compression_ratio,
        model_size_mb=weight_report.model_size_mb,
        quality=used["quality"].to_dict(),
        fp32_x0=fp32.x0,
        quantized_x0=used["quantized_x0"],
        quantization_time_s=quantization_time_s,
        timings_s={**stages.timings, "total": time.perf_counter() - start},
    )
    if enhanced is not None:
        result = dataclasses.replace(
            result,
            baseline=BaselineSection(
                time_groups=tuple((int(a), int(b)) for a, b in group_ranges(edges)),
                scales=tuple(float32_list(row) for row in scales),
                zero_points=tuple(float32_list(row) for row in zero_points),
                metrics=_metrics_view(metrics),
                quality=QualitySection.from_dict(quality.to_dict()),
            ),
            enhancement=_enhancement_section(config, enhanced),
            samples={
                **result.samples,
                "baseline_quantized": np.asarray(shared.quantized_x0, np.float32),
            },
        )
    if phases is not None:
        table, records = phases
        result = dataclasses.replace(
            result, phases=PhasesSection.from_dict(table), phase_records=tuple(records)
        )
    result = dataclasses.replace(result, cache=dict(cached.record))
    _log_details(result)
    log.info(
        "smoothness %.4f (%s), %d violations, cosine %.4f, total %.1f s",
        result.smoothness_score,
        result.interpretation.band,
        result.violation_count,
        result.cosine_similarity,
        result.timings_s["total"],
    )
    return result


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
    quality: Mapping[str, Any],
    fp32_x0: np.ndarray,
    quantized_x0: np.ndarray,
    quantization_time_s: float,
    timings_s: Mapping[str, float],
) -> Result:
    """Assemble a :class:`Result` from measured arrays (no model needed; tests use it too).

    The model-level figures are computed from the per-layer values exactly as they are written
    to the JSON, so anyone can recompute them from ``layers``.

    Args:
        metrics: ``markov_metrics`` of ``scales``/``zero_points`` ``[L, G]`` at one threshold.
        act_min, act_max: per-timestep calibration ranges ``[L, T]``.
        quality: ``Quality.to_dict()`` of the evaluator.
        fp32_x0, quantized_x0: samples ``[N, 8, 8]`` from the same noise.
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
    return Result(
        model_name=model_name,
        bit_width=config.bit_width,
        num_time_groups=len(time_groups),
        smoothness_score=smoothness,
        violation_count=len(violations),
        violations=violations,
        boundary_scores=boundary_scores,
        cosine_similarity=float(model_cosine),
        compression_ratio=float(compression_ratio),
        model_size_mb=float(model_size_mb),
        quantization_time_s=float(quantization_time_s),
        min_boundary_score=summary[0],
        max_boundary_score=summary[1],
        mean_boundary_score=summary[2],
        std_boundary_score=summary[3],
        common_violation_patterns=detect_patterns(
            analysis, time_groups=time_groups, bands=config.interpretation
        ),
        act_bits=config.act_bits,
        smoothness_threshold=config.smoothness_threshold,
        num_timesteps=int(edges[-1]),
        time_groups=time_groups,
        layers=layers,
        violation_analysis=analysis,
        quality=QualitySection.from_dict(quality),
        interpretation=interpret(
            smoothness_score=smoothness,
            violations=violations,
            boundary_scores=boundary_scores,
            cosine_similarity=float(model_cosine),
            bands=config.interpretation,
        ),
        sample_preview=SamplePreview(fp32=_preview(fp32_x0), quantized=_preview(quantized_x0)),
        timings_s=dict(timings_s),
        environment=_environment(),
        config=config.to_dict(),
        samples={
            "fp32": np.asarray(fp32_x0, np.float32),
            "quantized": np.asarray(quantized_x0, np.float32),
        },
    )


def _log_quality(label: str, quality: Any) -> None:
    log.info(
        "quality%s: drift mean %.5f, final MSE %.4f, Frechet fp32 %.3f / quantized %.3f",
        f" ({label})" if label else "",
        quality.drift_mean,
        quality.final_mse,
        quality.frechet_fp32,
        quality.frechet_quantized,
    )


def _group_means(params: np.ndarray, param_edges: np.ndarray, edges: np.ndarray) -> np.ndarray:
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


def _write_phases(result: Result, out: Path) -> dict[str, Path]:
    """The phase table as JSON and CSV, and the per-run records (each file atomic)."""
    from thermojax.phases import record_file_name

    table = result.phases.to_dict()
    paths = {
        "phases_json": atomic_write_bytes(
            out / PHASE_FILES["json"],
            (json.dumps(table, indent=2, allow_nan=False) + "\n").encode("utf-8"),
        )
    }
    paths["phases_csv"] = atomic_write_bytes(
        out / PHASE_FILES["csv"], _phases_csv(result.phases).encode("utf-8")
    )
    if result.phase_records is not None:
        runs = out / PHASE_FILES["runs"]
        for record in result.phase_records:
            name = record_file_name(record["index"], record["variant"], record["seed"])
            text = json.dumps(_json_ready(record), indent=1, allow_nan=False) + "\n"
            atomic_write_bytes(runs / name, text.encode("utf-8"))
        paths["phases_runs"] = runs
    return paths


def _phases_csv(phases: PhasesSection) -> str:
    """One row per variant: mean and std columns, paired deltas, per-group drift, timings."""
    from thermojax.phases import PAIRED_METRICS

    groups = len(phases.drift_group_edges) - 1
    header = ["variant", "phase", "description", "num_seeds"]
    for name in PHASE_SPREADS:
        header += [f"{name}_mean", f"{name}_std"]
    for name in PAIRED_METRICS:
        header += [f"{name}_paired_delta_mean", f"{name}_paired_delta_std"]
    for g in range(groups):
        header += [f"drift_group{g}_mean", f"drift_group{g}_std"]
    header += ["param_time_s", "param_extra_s", "param_compile_s", "sampling_ratio", "edges"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in phases.rows:
        line: list[Any] = [row.variant, row.phase, row.description, row.num_seeds]
        for name in PHASE_SPREADS:
            spread = getattr(row, name)
            line += [repr(spread.mean), repr(spread.std)]
        for name in PAIRED_METRICS:
            line += [repr(row.paired_delta[name].mean), repr(row.paired_delta[name].std)]
        for spread in row.drift_per_group:
            line += [repr(spread.mean), repr(spread.std)]
        line += [
            repr(row.param_time_s),
            repr(row.param_extra_s),
            repr(row.param_compile_s),
            repr(row.sampling_ratio),
            " ".join(str(e) for e in row.edges),
        ]
        writer.writerow(line)
    return buffer.getvalue()


def _json_ready(value: Any) -> Any:
    """Non-finite floats as ``null`` (strict JSON), recursively."""
    if isinstance(value, Mapping):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


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
    }


def write_outputs(
    result: Result,
    out_dir: str | os.PathLike[str],
    *,
    json_path: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Write ``baseline_metrics.json``, ``baseline_metrics.html`` and ``samples.npz``, atomically.

    Each file goes to a temporary name in ``out_dir`` and is renamed into place, so an
    interrupted run never leaves a half-written report. ``samples.npz`` (arrays ``fp32`` and
    ``quantized``, ``[N, 8, 8]``, plus ``baseline_quantized`` for an enhanced run) is written only
    when ``result.samples`` is present. With a phase table: ``phases.json``, ``phases.csv`` and,
    when ``result.phase_records`` is present, one JSON record per variant and seed in ``phases/``.
    ``json_path`` (default ``out_dir/baseline_metrics.json``) lets the baseline command stage the
    JSON, the sweep's completion marker, under a temporary name and rename it after the log.

    Returns:
        The written paths keyed ``json``, ``html`` (and ``samples``, ``phases_json``,
        ``phases_csv``, ``phases_runs``).
    """
    from thermojax.report import render_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html = render_report(result)
    paths = {"html": atomic_write_bytes(out / OUTPUT_FILES["html"], html.encode("utf-8"))}
    if result.samples is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v) for k, v in result.samples.items()})
        paths["samples"] = atomic_write_bytes(out / OUTPUT_FILES["samples"], buffer.getvalue())
    if result.phases is not None:
        paths.update(_write_phases(result, out))
    # The JSON goes last: a sweep's resume takes a parseable report as "this job finished".
    paths["json"] = write_result(
        result, out / OUTPUT_FILES["json"] if json_path is None else json_path
    )
    for kind, path in paths.items():
        log.info("wrote %s: %s", kind, path)
    return paths
