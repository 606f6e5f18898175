"""The run of a checkpoint thermojax cannot execute: weight-only, with Markov metrics if given.

A Hugging Face folder of an architecture thermojax has no sampler for still gets the measured
part of the baseline: every tensor streamed once, the rules deciding what is quantized, each
quantized tensor's cosine, SQNR, outlier share and honest packed size, summed per block and for
the model; the quantized checkpoint written when ``export.path`` is set. With
``calibration.stats=FILE`` (:mod:`thermojax.pipeline.measure.activation_stats`) the time groups, their
activation parameters and the Markov metrics come from those per-step statistics, exactly as for
a model thermojax calibrates itself. What needs a forward pass (sample quality) is not there, and
the result says so (``mode: weight-only``, ``quality: null``) instead of inventing it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.core.markov import markov_metrics
from thermojax.core.timegroups import group_activation_params, group_ranges, uniform_edges
from thermojax.errors import UserInputError
from thermojax.pipeline.cache.stages import weights_key
from thermojax.pipeline.cache.stages import weights_section as cached_weights_section
from thermojax.pipeline.measure.activation_stats import ActivationStats, read_activation_stats
from thermojax.pipeline.measure.sampling import ActParams
from thermojax.pipeline.results.build import build_weight_only_result, markov_fields
from thermojax.pipeline.results.schema import Result
from thermojax.pipeline.settings import BaselineConfig
from thermojax.pipeline.weights.section import BlockRow, TensorRow, WeightsSection
from thermojax.pipeline.weights.stream import (
    OUTLIER_SIGMAS,
    WeightOnlyReport,
    block_name,
    quantize_checkpoint,
)

__all__ = [
    "WEIGHT_ONLY_STAGES",
    "run_checkpoint",
    "run_quantized",
    "weight_only_stage_names",
    "weights_section",
]

log = logging.getLogger(__name__)

WEIGHT_ONLY_STAGES = ("open checkpoint", "time groups + metrics", "quantize weights")
"""The stages of a weight-only run (``time groups + metrics`` only with activation statistics)."""

Stages = Callable[[str], AbstractContextManager[None]]


def weight_only_stage_names(config: BaselineConfig) -> tuple[str, ...]:
    """The stages a weight-only run reports, in order."""
    if config.calibration.stats is None:
        return tuple(s for s in WEIGHT_ONLY_STAGES if s != "time groups + metrics")
    return WEIGHT_ONLY_STAGES


def run_checkpoint(
    config: BaselineConfig, checkpoint: Any, stages: Stages, timings: dict[str, float]
) -> Result:
    """Measure ``checkpoint`` (a :class:`~thermojax.models.hf.SafetensorsFolder`, opened by the
    caller inside its ``open checkpoint`` stage) weight-only.

    Raises:
        UserInputError: settings that need a runnable model (the enhancements, the phase
            experiment), bad statistics, or rules that do not fit the checkpoint's tensors.
    """
    _refuse_diffusion_settings(config)
    start = time.perf_counter()
    markov = activations = None
    stats = None
    if config.calibration.stats is not None:
        with stages("time groups + metrics"):
            # A layer the model lacks is refused here, not shown as a layer without a cosine.
            stats = read_activation_stats(
                config.calibration.stats, checkpoint_tensors=checkpoint.tensors
            )
            markov, activations = _markov(config, stats)
    record = {}
    with stages("quantize weights"):
        if config.export.path is None:  # an export writes the codes: it always streams
            key = weights_key(config.to_dict(), checkpoint, outlier_sigmas=OUTLIER_SIGMAS)
            weights, record["weights"] = cached_weights_section(
                key,
                lambda: weights_section(_quantize(config, checkpoint, None, None)[0], checkpoint),
            )
            weights = dataclasses.replace(weights, source=_source(checkpoint))  # this path
        else:
            report, export_path = _quantize(config, checkpoint, stats, activations)
            weights = weights_section(report, checkpoint, export_path=export_path)
    if markov is not None:
        markov = _with_layer_cosines(markov, weights)
    log.info(
        "weight-only: %d of %d tensors quantized, %.4g GB -> %.4g GB (%.2fx), cosine %.4f, %.2f GB/s",
        len(weights.quantized_tensors),
        len(weights.tensors),
        weights.total_source_bytes / 1e9,
        weights.total_quantized_bytes / 1e9,
        weights.compression_vs_source,
        weights.model_cosine if weights.model_cosine is not None else float("nan"),
        weights.bytes_per_second / 1e9,
    )
    result = build_weight_only_result(
        config=config,
        model_name=config.model.name or checkpoint.path.resolve().name,
        weights=weights,
        markov=markov,
        quantization_time_s=time.perf_counter() - start,
        timings_s=timings,
    )
    return dataclasses.replace(result, cache=record)


def _refuse_diffusion_settings(config: BaselineConfig) -> None:
    """Settings that need a model thermojax can run are impossible here: one line each."""
    if config.enhanced:
        raise UserInputError(
            "thermo.* / time_groups.strategy: the enhancements need a model thermojax can run; "
            f"model.path={config.model.path!r} is measured weight-only"
        )
    if config.phases.enabled:
        raise UserInputError(
            f"phases.enabled=True: the phase experiment samples the model; "
            f"model.path={config.model.path!r} is measured weight-only"
        )
    if config.act.mode != "static":
        raise UserInputError(
            f"act.mode={config.act.mode!r}: activations are quantized per token while the model "
            f"samples; model.path={config.model.path!r} is measured weight-only"
        )


def _markov(config: BaselineConfig, stats: ActivationStats) -> tuple[dict[str, Any], ActParams]:
    """Uniform groups over the statistics' T steps, their parameters and Markov metrics."""
    steps = stats.num_timesteps
    if config.num_time_groups > steps:
        raise UserInputError(
            f"num_time_groups={config.num_time_groups}: exceeds the {steps} steps of "
            f"calibration.stats={config.calibration.stats!r}"
        )
    edges = uniform_edges(steps, config.num_time_groups)
    scales, zero_points = group_activation_params(
        stats.act_min, stats.act_max, edges, bits=config.act_bits
    )
    metrics = markov_metrics(
        scales, zero_points, qmax=2**config.act_bits - 1, threshold=config.smoothness_threshold
    )
    log.info(
        "time groups %s over %d steps of %d layers",
        group_ranges(edges),
        steps,
        len(stats.layer_names),
    )
    scales, zero_points = np.asarray(scales), np.asarray(zero_points)
    fields = {
        "config": config,
        "layer_names": stats.layer_names,
        "edges": edges,
        "scales": scales,
        "zero_points": zero_points,
        "metrics": metrics,
        "act_min": stats.act_min,
        "act_max": stats.act_max,
    }
    return fields, ActParams(scales, zero_points, np.asarray(edges), config.act_bits)


def _with_layer_cosines(fields: dict[str, Any], weights: WeightsSection) -> dict[str, Any]:
    """The Markov fields, each layer (``fields["layer_names"]``) with its weight's cosine (NaN if
    the checkpoint has no ``NAME.weight`` or ``NAME`` for it)."""
    cosine = {row.name: row.cosine for row in weights.tensors if row.cosine is not None}
    layer_cosine = [
        cosine.get(f"{name}.weight", cosine.get(name, float("nan")))
        for name in fields["layer_names"]
    ]
    model_cosine = float("nan") if weights.model_cosine is None else weights.model_cosine
    return markov_fields(**fields, layer_cosine=layer_cosine, model_cosine=model_cosine)


def _quantize(
    config: BaselineConfig,
    checkpoint: Any,
    stats: ActivationStats | None,
    activations: ActParams | None,
) -> tuple[WeightOnlyReport, str | None]:
    rules = list(config.weights.rules)
    if config.export.path is None:
        report = quantize_checkpoint(
            checkpoint, rules, bits=config.bit_width, group_size=config.group_size
        )
        return report, None
    from thermojax.pipeline.checkpoint.export import export_checkpoint

    path, report = export_checkpoint(
        checkpoint,
        Path(config.export.path).expanduser(),
        rules,
        bits=config.bit_width,
        group_size=config.group_size,
        activations=activations,
        layer_names=stats.layer_names if stats is not None else None,
        source={"path": str(checkpoint.path), "fingerprint": checkpoint.fingerprint()},
        orbax=config.export.orbax,
        export_format=config.export.format,
    )
    log.info("quantized checkpoint written to %s", path)
    return report, str(path)


def weights_section(
    report: WeightOnlyReport, checkpoint: Any, *, export_path: str | None = None
) -> WeightsSection:
    """The result schema's ``weights`` section from a :class:`WeightOnlyReport`."""
    return WeightsSection(
        tensors=report.tensors,
        blocks=report.blocks,
        total_source_bytes=int(report.total_source_bytes),
        total_quantized_bytes=int(report.total_quantized_bytes),
        fp32_bytes=int(report.fp32_bytes),
        compression_vs_source=float(report.compression_vs_source),
        compression_vs_fp32=float(report.compression_vs_fp32),
        model_cosine=report.model_cosine,
        seconds=float(report.seconds),
        bytes_per_second=float(report.bytes_per_second),
        source=_source(checkpoint),
        export_path=export_path,
    )


def _source(checkpoint: Any) -> dict[str, Any]:
    return {
        "path": str(checkpoint.path),
        "fingerprint": checkpoint.fingerprint(),
        "architecture": checkpoint.architecture,
        "format": "safetensors",
    }


def run_quantized(
    config: BaselineConfig, loaded: Any, stages: Stages, timings: dict[str, float]
) -> Result:
    """Report an exported quantized checkpoint (:func:`thermojax.pipeline.checkpoint.reload.load_quantized`).

    The codes are the exported ones, never re-quantized: each tensor's packed size is counted
    from the reloaded tensors, and its cosine, SQNR and outlier share (which need the source's
    full-precision weights) are those measured at export and stored in ``quantization.json``.
    The shipped activation parameters, when there are any, give the Markov metrics again.

    Raises:
        UserInputError: a quantized digits checkpoint (``thermojax.pipeline.run`` samples it
            against its recorded full-precision source), or settings that need a runnable
            model.
    """
    from thermojax.core.quant import storage_bytes

    document = loaded.quantization
    if document.get("model_format") != "huggingface-safetensors":
        raise UserInputError(
            f"model.path={config.model.path!r}: a quantized {document.get('model_format')} "
            "checkpoint runs through thermojax.pipeline.run, which samples it against the "
            "full-precision model it was exported from"
        )
    _refuse_diffusion_settings(config)
    start = time.perf_counter()
    markov = None
    with stages("time groups + metrics"):
        if loaded.activations is not None:
            act = loaded.activations
            names = tuple(document["activations"]["layer_names"] or ())
            metrics = markov_metrics(
                act.scales,
                act.zero_points,
                qmax=2**act.bits - 1,
                threshold=config.smoothness_threshold,
            )
            empty = np.zeros((len(names), 0), np.float32)  # the ranges stay with the source run
            markov_inputs = {
                "config": config,
                "layer_names": names,
                "edges": np.asarray(act.edges),
                "scales": np.asarray(act.scales),
                "zero_points": np.asarray(act.zero_points),
                "metrics": metrics,
                "act_min": empty,
                "act_max": empty,
            }
    with stages("quantize weights"):
        rows = []
        for name, entry in document["tensors"].items():
            figures = entry["report"]
            counted = (
                storage_bytes(loaded.qtensors[name])
                if name in loaded.qtensors
                else int(loaded.tensors[name].nbytes)
            )
            if counted != figures["quantized_bytes"]:
                raise UserInputError(
                    f"model.path={config.model.path!r}: {name}: holds {counted} bytes, "
                    f"quantization.json says {figures['quantized_bytes']}"
                )
            rows.append(
                TensorRow(
                    name=name,
                    shape=tuple(entry["shape"]),
                    dtype=entry["dtype"],
                    rule=entry["rule"],
                    bits=entry["bits"],
                    group_size=entry["group_size"],
                    cosine=figures["cosine"],
                    sqnr_db=figures["sqnr_db"],
                    outlier_share=figures["outlier_share"],
                    source_bytes=int(figures["source_bytes"]),
                    quantized_bytes=counted,
                    block=block_name(name),
                )
            )
    report = document["report"]
    weights = WeightsSection(
        tensors=tuple(rows),
        blocks=tuple(BlockRow(**block) for block in report["blocks"]),
        total_source_bytes=int(report["total_source_bytes"]),
        total_quantized_bytes=sum(row.quantized_bytes for row in rows),
        fp32_bytes=int(report["fp32_bytes"]),
        compression_vs_source=float(report["compression_vs_source"]),
        compression_vs_fp32=float(report["compression_vs_fp32"]),
        model_cosine=report["model_cosine"],
        seconds=float(report["seconds"]),
        bytes_per_second=float(report["bytes_per_second"]),
        source={**document.get("source", {}), "format": "thermojax-quantized"},
        export_path=str(loaded.path),
    )
    if loaded.activations is not None:
        markov = _with_layer_cosines(markov_inputs, weights)
    return build_weight_only_result(
        config=config,
        model_name=config.model.name or Path(loaded.path).resolve().name,
        weights=weights,
        markov=markov,
        quantization_time_s=time.perf_counter() - start,
        timings_s=timings,
    )
