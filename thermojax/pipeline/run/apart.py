"""The diffusion run when the full-precision model and its quantized copy do not fit in memory
together (``model.residency``): the same stages and numbers as
:func:`~thermojax.pipeline.run.diffusion.run_diffusion`, in another order.

1. The family loaded the model without its linear layers. They are quantized straight from
   the checkpoint, one at a time (the model's ``quantizable_weights`` read each from the file),
   and the network then runs packed: calibration, the time groups and their Markov metrics,
   the export (when asked for), quantized sampling and the figures that need the quantized
   model (:attr:`~thermojax.pipeline.quality.kind.QualityKind.quantized_figures`).
2. The packed codes are let go; the linear layers are read in at full precision (the other
   tensors are shared), and the fp32 samples and every figure of the reference follow.

So memory holds the larger of the two, not both. The stage cache keys the model by its
checkpoint's fingerprint (:func:`~thermojax.pipeline.cache.stages.checkpoint_model_fingerprint`)
and looks for the quantized samples' entry before anything is sampled; a run on a cache that
holds them and the fp32 samples never reads the linear layers in. GPTQ, the enhanced parameters
and the phase experiment need both models at once, so such runs stay together (the family
refuses them apart).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from thermojax.pipeline.cache.stages import (
    QualityEntry,
    StageCache,
    checkpoint_model_fingerprint,
)
from thermojax.pipeline.families.registry import evaluate_quality
from thermojax.pipeline.measure.memory import release_freed_memory
from thermojax.pipeline.measure.sampling import sample
from thermojax.pipeline.results.schema import Result
from thermojax.pipeline.run.stages import EXPORT_STAGE, Stages
from thermojax.pipeline.settings import BaselineConfig
from thermojax.pipeline.weights.quantize import model_weights_section

__all__ = ["APART_STAGES", "run_apart"]

log = logging.getLogger(__name__)

LOAD_REFERENCE_STAGE = "load full precision"

APART_STAGES = (
    "load model",
    "quantize weights",
    "calibrate",
    "time groups + metrics",
    "sample quantized",
    LOAD_REFERENCE_STAGE,
    "sample fp32",
    "evaluate quality",
)
"""The stages of a run held apart, in order (the export, when asked for, after the time groups)."""


def run_apart(
    family: Any,
    config: BaselineConfig,
    loaded: Any,
    stages: Stages,
    start: float,
) -> Result:
    """The run of module doc, after the family's ``load`` gave a model held apart.

    Args:
        family: the family (:class:`~thermojax.pipeline.run.diffusion.SampledFamily`).
        config: the validated settings (none that needs both models at once).
        loaded: the family's ``LoadedModel`` with ``full_precision`` set.
        stages: the run's stages, "load model" done.
        start: ``time.perf_counter()`` at the run's start.
    """
    from thermojax.pipeline.run.diffusion import (
        _assemble,
        _group_parameters,
        _log_details,
        _log_quality,
        _quantize_weights,
        _sampler_record,
        shipped_act_params,
    )

    names = list(APART_STAGES)
    if config.export.path is not None:
        names.insert(names.index("sample quantized"), EXPORT_STAGE)
    stages.names = tuple(names)
    packed = loaded.model
    with stages("quantize weights"):
        qweights, weight_report = _quantize_weights(packed, config)
    weights = model_weights_section(
        packed,
        qweights,
        weight_report,
        seconds=stages.timings["quantize weights"],
        source_format=family.weights_format,
    )
    with stages("calibrate"):
        path = str(Path(config.model.path).expanduser().resolve())
        cached = StageCache(
            packed,
            config.to_dict(),
            qweights,
            model_id=checkpoint_model_fingerprint(packed, path, dtype=config.model.dtype),
        )
        stats = cached.calibration()
    with stages("time groups + metrics"):
        baseline = _group_parameters(stats, config)
    quantization_time_s = sum(stages.timings.values()) - sum(cached.waited_s.values())
    act_params = baseline.act_params(config.act_bits, config.act.mode)
    export_path = None
    if config.export.path is not None:
        with stages(EXPORT_STAGE):
            export_path = family.export(
                config, packed, qweights, shipped_act_params(config, act_params)
            )
            log.info("quantized checkpoint written to %s", export_path)
    stored = cached.stored("quality")
    quantized = figures = None
    with stages("sample quantized"):
        if stored is None:
            quantized = sample(
                packed,
                weights=qweights,
                act_params=act_params,
                num_samples=config.sampling.num_samples,
                seed=config.seed,
                sampler=cached.sampler,
            )
            by_kind = family.quality.quantized_figures
            figures = {} if by_kind is None else by_kind(packed, qweights, act_params, config.seed)
    # The packed codes go before the full-precision layers come in, and the packed phase's
    # compiled programs with them (the reference's are others; their code is held in memory).
    cached.qweights = qweights = None
    jax.clear_caches()
    release_freed_memory()
    with stages(LOAD_REFERENCE_STAGE):
        reference = _Reference(loaded.full_precision)
        if stored is None:  # the evaluation needs it; the fp32 samples only on a miss
            reference()
    with stages("sample fp32"):
        fp32 = cached.fp32_samples(reference)
    with stages("evaluate quality"):
        if stored is None:
            quality = evaluate_quality(
                reference(),
                fp32,
                quantized,
                act_params.edges,
                weight_report,
                qweights=None,
                act_params=act_params,
                seed=config.seed,
            )
            quality = dataclasses.replace(quality, **figures)
            entry = QualityEntry(quality=quality, quantized_x0=quantized.x0)
            stored = cached.quality(lambda: entry)
        _log_quality("", stored.quality)
    result = _assemble(
        config,
        packed,
        weight_report,
        stats,
        baseline,
        stored,
        fp32_x0=fp32.x0,
        enhanced=None,
        enhanced_quality=None,
        enhanced_x0=None,
        quantization_time_s=quantization_time_s,
        timings_s={**stages.timings, "total": time.perf_counter() - start},
        weights=weights,
    )
    if export_path is not None:
        result = dataclasses.replace(
            result, weights=dataclasses.replace(result.weights, export_path=str(export_path))
        )
    result = dataclasses.replace(
        result, cache=dict(cached.record), sampler=_sampler_record(family, packed, stats, fp32)
    )
    _log_details(result)
    return result


class _Reference:
    """The full-precision model, read in on the first call and kept."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self._model: Any = None

    def __call__(self) -> Any:
        if self._model is None:
            self._model = self._load()
            log.info("full-precision linear layers read in from the checkpoint")
        return self._model
