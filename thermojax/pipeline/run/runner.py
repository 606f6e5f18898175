"""A run as a short sequence of named stages: ``run(settings) -> Result``.

Data flows one way: settings -> model -> weight quantization -> per-timestep calibration ->
time-group activation parameters -> Markov metrics (one vectorized call over all layers) ->
quantized sampling and quality -> a :class:`~thermojax.pipeline.results.schema.Result`. No Hydra here: the
CLI, sweeps and tests call :func:`run` directly with a :class:`BaselineConfig`.

With smoothing, optimization or adaptive groups on, two more stages compute the enhanced
parameters from the same calibration and sample them from the same noise; the ``Result``'s top
level then describes the enhanced parameters (measured on what the sampler used) with the
baseline beside them. With ``phases.enabled`` the run ends with the phase experiment
(:mod:`thermojax.pipeline.run.phases`).

Example:
    >>> from thermojax.pipeline import BaselineConfig, run
    >>> result = run(BaselineConfig(bit_width=2, num_time_groups=4))  # doctest: +SKIP
    >>> result.smoothness_score, result.interpretation.band  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.core.markov import MarkovMetrics, markov_metrics
from thermojax.core.timegroups import (
    group_activation_params,
    group_ranges,
    step_edges,
    uniform_edges,
)
from thermojax.errors import UserInputError
from thermojax.models import checkpoint_format, load_model, shipped_path
from thermojax.models.base import DiffusionModel, SamplerSpec, SkippingModel
from thermojax.pipeline.cache.stages import QualityEntry, StageCache, sample_and_evaluate
from thermojax.pipeline.checkpoint.export import DIGITS_FORMAT, QUANTIZATION_FILE
from thermojax.pipeline.measure.calibrate import CalibrationStats
from thermojax.pipeline.measure.memory import check_memory
from thermojax.pipeline.measure.sampling import ActParams, sample
from thermojax.pipeline.quality.image import Quality, evaluate_quality
from thermojax.pipeline.quality.text import TextQuality
from thermojax.pipeline.results.build import (
    build_result,
    group_means,
    with_enhancement,
    with_phases,
)
from thermojax.pipeline.results.schema import Result
from thermojax.pipeline.run.variants import (
    ParameterSet,
    build_variants,
    compute_parameters,
    config_variant,
)
from thermojax.pipeline.settings import BaselineConfig, check_model_limits, sampler_specs
from thermojax.pipeline.weights.quantize import (
    WeightReport,
    dense_weights,
    measure_weights,
    model_weights_section,
    quantize_weights,
)
from thermojax.pipeline.weights.section import WeightsSection

__all__ = ["STAGES", "ProgressCallback", "run", "stage_names"]

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
EXPORT_STAGE = "export"


def stage_names(config: BaselineConfig) -> tuple[str, ...]:
    """The stages ``run(config)`` reports to its ``progress`` callback, in order."""
    names = list(STAGES)
    if config.enhanced:
        names.insert(names.index("sample fp32"), ENHANCE_STAGE)
        names.insert(names.index("evaluate quality"), SAMPLE_ENHANCED_STAGE)
    if config.phases.enabled:
        names.append(PHASES_STAGE)
    if config.export.path is not None:
        names.append(EXPORT_STAGE)
    return tuple(names)


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


@dataclasses.dataclass(frozen=True)
class GroupParameters:
    """Uniform time groups with one activation scale and zero point per layer and group.

    Attributes:
        edges: int32 ``[G + 1]`` on the model's T timesteps (what the sampler, the results and
            a checkpoint use); scales, zero_points: float32 ``[L, G]``;
        metrics: their :class:`MarkovMetrics` at the run's threshold.
    """

    edges: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    metrics: MarkovMetrics

    def act_params(self, bits: int) -> ActParams:
        """The sampler's :class:`ActParams`."""
        return ActParams(self.scales, self.zero_points, self.edges, bits)


def run(config: BaselineConfig, *, progress: ProgressCallback | None = None) -> Result:
    """Quantize the configured model with Markov validation and measure everything.

    Args:
        config: the validated settings (a :class:`BaselineConfig` is valid once it exists).
        progress: optional ``progress(stage, index, total)`` callback (see :func:`stage_names`).

    Returns:
        The :class:`Result`, with the full sample arrays in ``result.samples``.

    Raises:
        UserInputError: a bad model path, ``num_time_groups`` above the model's timestep count,
            a smoothing window larger than a group, or a ``group_size`` that does not fit the
            model.
    """
    if not isinstance(config, BaselineConfig):
        raise TypeError(
            f"run() takes a BaselineConfig, got {type(config).__name__}; "
            "thermojax.cli.config.to_config converts a mapping or a Hydra config"
        )
    start = time.perf_counter()
    config = _with_shipped_path(config)
    log.info("config: %s", config.to_dict())
    kind = checkpoint_format(config.model.path)
    from_export = kind == "quantized" and _exported_model_format(config.model.path) == DIGITS_FORMAT
    language_model = kind == "safetensors" and _runs_as_language_model(config)
    if kind in ("safetensors", "quantized") and not (from_export or language_model):
        _refuse_quant_settings(config, "a checkpoint measured weight-only (weights.rules, minmax)")
        return _run_weight_only(config, progress, start)
    if from_export:
        _refuse_quant_settings(config, "an exported checkpoint, whose codes are used as they are")
    if not language_model:
        _refuse_language_model_settings(config)
    if config.calibration.stats is not None:
        raise UserInputError(
            f"calibration.stats={config.calibration.stats!r}: only for checkpoints thermojax "
            "cannot run; this model is calibrated by running it"
        )
    stages = _Stages(progress, stage_names(config))
    exported = None
    with stages("load model"):
        if from_export:
            exported, model = _exported_digits(config)
        elif language_model:
            model = _load_language_model(config)
        else:
            model = _load_model(config)
    check_memory(model, config)  # refuses, with the estimate, a run that cannot fit
    with stages("quantize weights"):
        if exported is None:
            qweights, weight_report = _quantize_weights(model, config)
        else:  # the exported codes, as they are
            qweights = {name: jax.tree.map(jnp.asarray, q) for name, q in exported.qtensors.items()}
            weight_report = measure_weights(model, qweights)
    weights = model_weights_section(
        model, qweights, weight_report, seconds=stages.timings["quantize weights"]
    )
    with stages("calibrate"):
        # Calibration, fp32 samples and quantized quality are shared by the jobs of a sweep (and
        # later runs) through the on-disk cache: thermojax.pipeline.cache.stages says what each
        # entry depends on.
        cached = StageCache(model, config.to_dict())
        stats = cached.calibration(qweights)
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
                act_params=baseline.act_params(config.act_bits),
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
    if phases is not None:
        result = with_phases(result, *phases)
    if config.export.path is not None:
        with stages(EXPORT_STAGE):
            result = _export(config, model, qweights, baseline, enhanced, result)
    result = dataclasses.replace(
        result, cache=dict(cached.record), sampler=_sampler_record(model, stats, fp32)
    )
    _log_details(result)
    return result


def _sampler_record(model: DiffusionModel, stats: CalibrationStats, fp32: Any) -> dict[str, Any]:
    """``Result.sampler``: the sampler that sampled and the one that calibrated, with their steps."""
    total = int(model.num_timesteps)
    spec = fp32.sampler or SamplerSpec()
    return {
        **spec.to_dict(total),
        "timesteps": [int(t) for t in fp32.timesteps],
        "description": spec.describe(total),
        "calibration": {
            **stats.sampler,
            "timesteps": [int(t) for t in stats.timesteps],
            "description": stats.describe(),
        },
    }


def _check_samplers(config: BaselineConfig, model: DiffusionModel) -> None:
    """The run's samplers against the model: DDIM only where the model can skip steps, steps
    within its T, every uniform time group visited by both, windows within the calibration steps.

    Raises:
        UserInputError: naming the key and its value.
    """
    total = int(model.num_timesteps)
    edges = uniform_edges(total, config.num_time_groups)
    for prefix, spec in zip(
        ("sampling", "calibration"), sampler_specs(config.to_dict()), strict=True
    ):
        if spec.name == "ddim" and not isinstance(model, SkippingModel):
            raise UserInputError(
                f"{prefix}.sampler=ddim: {model.name} runs its own sampler (sampling.steps sets "
                "its steps); use the default sampler"
            )
        try:
            steps = spec.timesteps(total)
        except ValueError as exc:
            raise UserInputError(f"{prefix}.{exc}") from None
        if len(steps) == total:
            continue
        try:
            step_edges(edges, steps)
        except ValueError as exc:
            raise UserInputError(
                f"num_time_groups={config.num_time_groups}: {exc} ({prefix}: "
                f"{spec.describe(total)})"
            ) from None
        if prefix == "calibration":
            try:
                check_model_limits(config, len(steps))
            except UserInputError as exc:
                raise UserInputError(f"{exc} (calibration runs {spec.describe(total)})") from None


def _run_weight_only(
    config: BaselineConfig, progress: ProgressCallback | None, start: float
) -> Result:
    """A Hugging Face checkpoint: weight-only (:mod:`thermojax.pipeline.run.checkpoint_run`)."""
    from thermojax.models.hf import open_checkpoint
    from thermojax.pipeline.checkpoint.reload import load_quantized
    from thermojax.pipeline.run.checkpoint_run import (
        WEIGHT_ONLY_STAGES,
        run_checkpoint,
        run_quantized,
        weight_only_stage_names,
    )

    if checkpoint_format(config.model.path) == "quantized":
        stages = _Stages(progress, WEIGHT_ONLY_STAGES)
        with stages("open checkpoint"):
            if config.export.path is not None:
                raise UserInputError(
                    f"export.path={config.export.path!r}: model.path={config.model.path!r} is "
                    "already a quantized checkpoint"
                )
            try:
                loaded = load_quantized(config.model.path)
            except UserInputError as exc:
                raise UserInputError(f"model.path={config.model.path!r}: {exc}") from None
        result = run_quantized(config, loaded, stages, stages.timings)
        return dataclasses.replace(
            result, timings_s={**stages.timings, "total": time.perf_counter() - start}
        )
    stages = _Stages(progress, weight_only_stage_names(config))
    with stages("open checkpoint"):
        try:
            checkpoint = open_checkpoint(config.model.path)
        except UserInputError as exc:
            raise UserInputError(f"model.path={config.model.path!r}: {exc}") from None
        log.info(
            "checkpoint %s: %s, %d tensors, %.4g GB in %d file(s)",
            checkpoint.path,
            checkpoint.architecture,
            len(checkpoint.tensors),
            checkpoint.total_bytes / 1e9,
            len(checkpoint.shards),
        )
    result = run_checkpoint(config, checkpoint, stages, stages.timings)
    result = dataclasses.replace(
        result, timings_s={**stages.timings, "total": time.perf_counter() - start}
    )
    log.info("%s: done in %.1f s", result.mode, result.timings_s["total"])
    return result


def _load_model(config: BaselineConfig) -> DiffusionModel:
    """The configured model, checked against the settings that need its T."""
    try:
        model = load_model(config.model.path)
    except UserInputError as exc:
        raise UserInputError(f"model.path={config.model.path!r}: {exc}") from None
    check_model_limits(config, int(model.num_timesteps))
    _check_samplers(config, model)
    if config.phases.enabled:
        build_variants(config)  # an unknown phases.variants name fails before any work
    log.info("model %s: T=%d, layers %s", model.name, model.num_timesteps, model.layer_names)
    return model


def _with_shipped_path(config: BaselineConfig) -> BaselineConfig:
    """``model.path`` of a shipped model other than the default digits DDPM filled in."""
    if config.model.path is not None or config.model.shipped == "digits":
        return config
    path = str(shipped_path(config.model.shipped))
    return dataclasses.replace(config, model=dataclasses.replace(config.model, path=path))


def _runs_as_language_model(config: BaselineConfig) -> bool:
    """Whether a Hugging Face folder runs as a masked-diffusion LM (``model.run``)."""
    from thermojax.models.dream.diffusion import TRAINING_FILE

    if config.model.run == "diffusion":
        return True
    if config.model.run == "weight-only":
        return False
    trained_here = (Path(config.model.path).expanduser() / TRAINING_FILE).is_file()
    if not trained_here:
        log.info(
            "model.path=%s: measured weight-only (model.run=diffusion runs a Qwen2 / Dream "
            "checkpoint as a masked-diffusion LM)",
            config.model.path,
        )
    return trained_here


def _refuse_language_model_settings(config: BaselineConfig) -> None:
    """The masked-diffusion LM's sampler settings, given for another model: one line each."""
    sampling = config.sampling
    given = {
        "sampling.length": sampling.length,
        "sampling.prompt": sampling.prompt or None,
        "sampling.unmasking": sampling.unmasking,
        "sampling.temperature": sampling.temperature,
        "sampling.top_p": sampling.top_p,
    }
    for key, value in given.items():
        if value is not None:
            raise UserInputError(
                f"{key}={value!r}: only for a masked-diffusion LM (model=pydoc-mdlm, or "
                "model.run=diffusion on a Qwen2 / Dream folder); the digits DDPM's sampler is "
                "sampling.sampler (ddpm | ddim) with sampling.steps and sampling.eta"
            )
    if config.model.run == "weight-only" and checkpoint_format(config.model.path) == "digits":
        raise UserInputError(
            "model.run=weight-only: the digits DDPM is run, not measured weight-only "
            "(that is for Hugging Face folders)"
        )


def _refuse_quant_settings(config: BaselineConfig, what: str) -> None:
    """``quant.*`` other than the defaults is for models thermojax quantizes and runs."""
    quant = config.quant
    if quant.method != "minmax":
        raise UserInputError(f"quant.method={quant.method!r}: not for {what}")
    if quant.keep_bits:
        raise UserInputError(f"quant.keep_bits={dict(quant.keep_bits)!r}: not for {what}")


def _load_language_model(config: BaselineConfig) -> DiffusionModel:
    """The configured folder as a masked-diffusion LM with the run's sampler settings."""
    from thermojax.models.dream.diffusion import load_masked_diffusion

    sampling = config.sampling
    try:
        model = load_masked_diffusion(
            config.model.path,
            steps=sampling.steps,
            length=sampling.length,
            unmasking=sampling.unmasking,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            prompt=sampling.prompt,
            name=config.model.name or None,
        )
    except UserInputError as exc:
        raise UserInputError(f"model.path={config.model.path!r}: {exc}") from None
    check_model_limits(config, int(model.num_timesteps))
    _check_samplers(config, model)
    log.info(
        "masked-diffusion LM %s: %d parameters, L=%d, T=%d steps, %s unmasking, layers %d",
        model.name,
        model.num_parameters(),
        model.length,
        model.num_timesteps,
        model.options.unmasking,
        len(model.layer_names),
    )
    return model


def _exported_model_format(path: str) -> str | None:
    """The ``model_format`` of an exported folder's ``quantization.json``, ``None`` if it
    cannot be read (the loader then names the problem)."""
    try:
        document = json.loads((Path(path).expanduser() / QUANTIZATION_FILE).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return document.get("model_format") if isinstance(document, dict) else None


def _exported_digits(config: BaselineConfig) -> tuple[Any, DiffusionModel]:
    """A digits DDPM's quantized checkpoint (``model.path``) and the full-precision model it
    was exported from (its ``source``), which the reference samples need.

    Raises:
        UserInputError: the export is unreadable; its source model is missing or is not the
            one it was exported from (fingerprint); ``bit_width`` / ``group_size`` / ``export.path``
            that contradict it; limits the source's T breaks.
    """
    from thermojax.pipeline.cache.stages import model_fingerprint
    from thermojax.pipeline.checkpoint.reload import load_quantized

    where = f"model.path={config.model.path!r}"
    if config.export.path is not None:
        raise UserInputError(
            f"export.path={config.export.path!r}: {where} is already a quantized checkpoint"
        )
    try:
        exported = load_quantized(config.model.path)
    except UserInputError as exc:
        raise UserInputError(f"{where}: {exc}") from None
    document = exported.quantization
    bits, group_size = document.get("bits"), document.get("group_size")
    if (config.bit_width, config.group_size) != (bits, group_size):
        raise UserInputError(
            f"bit_width={config.bit_width} group_size={config.group_size}: {where} holds "
            f"{bits}-bit weights in groups of {group_size}; run it with bit_width={bits} "
            f"group_size={group_size}"
        )
    source = document.get("source") if isinstance(document.get("source"), dict) else {}
    shown = source.get("path") or "the shipped digits DDPM"
    try:
        model = load_model(source.get("path"))
    except UserInputError as exc:
        raise UserInputError(
            f"{where}: its full-precision source {shown} (needed for the reference samples) "
            f"cannot be loaded: {exc}"
        ) from None
    if model_fingerprint(model) != source.get("fingerprint"):
        raise UserInputError(
            f"{where}: its full-precision source {shown} is not the model it was exported from "
            "(fingerprints differ); the reference samples need that model"
        )
    check_model_limits(config, int(model.num_timesteps))
    _check_samplers(config, model)
    if config.phases.enabled:
        build_variants(config)
    log.info("quantized checkpoint %s of %s (%s)", exported.path, model.name, shown)
    return exported, model


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
    return GroupParameters(edges, np.asarray(scales), np.asarray(zero_points), metrics)


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
    enhanced_quality: Quality | None,
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
    result = build_result(
        config=config,
        model_name=config.model.name or model.name,
        layer_names=model.layer_names,
        edges=edges,
        scales=scales,
        zero_points=zero_points,
        metrics=metrics,
        act_min=stats.act_min,
        act_max=stats.act_max,
        layer_cosine=weight_report.layer_cosine,
        model_cosine=weight_report.model_cosine,
        compression_ratio=weight_report.compression_ratio,
        model_size_mb=weight_report.model_size_mb,
        quality=quality.to_dict(),
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
        quality=shared.quality.to_dict(),
        quantized_x0=shared.quantized_x0,
    )


def _export(
    config: BaselineConfig,
    model: DiffusionModel,
    qweights: Any,
    baseline: GroupParameters,
    enhanced: ParameterSet | None,
    result: Result,
) -> Result:
    """Write the quantized checkpoint with the activation parameters the sampler used."""
    from thermojax.pipeline.checkpoint.export import export_digits

    act_params = (baseline if enhanced is None else enhanced).act_params(config.act_bits)
    path = export_digits(
        model,
        Path(config.export.path).expanduser(),
        qweights,
        bits=config.bit_width,
        group_size=config.group_size,
        activations=act_params,
        source_path=config.model.path,
        orbax=config.export.orbax,
    )
    log.info("quantized checkpoint written to %s", path)
    return dataclasses.replace(
        result, weights=dataclasses.replace(result.weights, export_path=str(path))
    )


def _log_quality(label: str, quality: Any) -> None:
    where = f" ({label})" if label else ""
    if isinstance(quality, TextQuality):
        log.info(
            "quality%s: drift mean %.4f, token agreement %.4f, generative perplexity fp32 %.3f / "
            "quantized %.3f, held-out perplexity fp32 %s / quantized %s",
            where,
            quality.drift_mean,
            quality.token_agreement,
            quality.generative_perplexity_fp32,
            quality.generative_perplexity_quantized,
            quality.heldout_perplexity_fp32,
            quality.heldout_perplexity_quantized,
        )
        return
    log.info(
        "quality%s: drift mean %.5f, final MSE %.4f, Frechet fp32 %.3f / quantized %.3f",
        where,
        quality.drift_mean,
        quality.final_mse,
        quality.frechet_fp32,
        quality.frechet_quantized,
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
