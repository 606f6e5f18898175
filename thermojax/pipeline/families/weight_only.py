"""The weight-only family: a Hugging Face safetensors folder thermojax does not run (any
architecture), or a quantized checkpoint exported from one. It has no samples: its run measures
every tensor's quantization error and size (:mod:`thermojax.pipeline.run.checkpoint_run`), and
the Markov figures from per-timestep activation statistics when ``calibration.stats`` gives them.

Example:
    >>> from thermojax.pipeline.settings import BaselineConfig
    >>> WEIGHT_ONLY.quality is None, WEIGHT_ONLY.recognises(BaselineConfig())
    (True, False)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from thermojax.errors import UserInputError
from thermojax.models import checkpoint_format
from thermojax.pipeline.checkpoint.compressed_tensors import COMPRESSED_TENSORS
from thermojax.pipeline.families.base import (
    refuse_chain_budget,
    refuse_export_format,
    refuse_model_settings,
    refuse_quant_settings,
    refuse_rotation,
    refuse_text_data,
    register_family,
)
from thermojax.pipeline.run.stages import ProgressCallback, Stages
from thermojax.pipeline.settings import BaselineConfig

if TYPE_CHECKING:
    from thermojax.pipeline.results.schema import Result

__all__ = ["WEIGHT_ONLY", "WeightOnlyFamily"]

log = logging.getLogger(__name__)


class WeightOnlyFamily:
    """Checkpoints measured weight-only (module doc): a :class:`ModelFamily` without samples."""

    name = "weight-only-checkpoint"
    description = "a checkpoint measured weight-only"
    quality = None

    def recognises(self, config: BaselineConfig) -> bool:
        """Any Hugging Face folder or quantized checkpoint no family before it claimed."""
        return checkpoint_format(config.model.path) in ("safetensors", "quantized")

    def check(self, config: BaselineConfig) -> BaselineConfig:
        refuse_quant_settings(config, "a checkpoint measured weight-only (weights.rules, minmax)")
        refuse_model_settings(config, "a checkpoint measured weight-only", ())
        refuse_text_data(config, "a checkpoint measured weight-only")
        refuse_rotation(config, "a checkpoint measured weight-only")
        if config.act.mask_aware:
            raise UserInputError(
                "act.mask_aware=true: a checkpoint measured weight-only samples nothing (set "
                "act.mask_aware=false)"
            )
        refuse_chain_budget(config, "a checkpoint measured weight-only")
        refuse_export_format(
            config, "a checkpoint measured weight-only", ("thermojax", COMPRESSED_TENSORS)
        )
        return config

    def run(self, config: BaselineConfig, progress: ProgressCallback | None) -> Result:
        """The checkpoint's weights, streamed; an exported checkpoint's codes, as they are."""
        from thermojax.models.hf import open_checkpoint
        from thermojax.pipeline.checkpoint.reload import load_quantized
        from thermojax.pipeline.run.checkpoint_run import (
            WEIGHT_ONLY_STAGES,
            run_checkpoint,
            run_quantized,
            weight_only_stage_names,
        )

        start = time.perf_counter()
        where = f"model.path={config.model.path!r}"
        if checkpoint_format(config.model.path) == "quantized":
            stages = Stages(progress, WEIGHT_ONLY_STAGES)
            with stages("open checkpoint"):
                if config.export.path is not None:
                    raise UserInputError(
                        f"export.path={config.export.path!r}: {where} is already a quantized "
                        "checkpoint"
                    )
                try:
                    loaded = load_quantized(config.model.path)
                except UserInputError as exc:
                    raise UserInputError(f"{where}: {exc}") from None
            result = run_quantized(config, loaded, stages, stages.timings)
            return dataclasses.replace(
                result, timings_s={**stages.timings, "total": time.perf_counter() - start}
            )
        stages = Stages(progress, weight_only_stage_names(config))
        with stages("open checkpoint"):
            try:
                checkpoint = open_checkpoint(config.model.path)
            except UserInputError as exc:
                raise UserInputError(f"{where}: {exc}") from None
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


WEIGHT_ONLY = register_family(WeightOnlyFamily())
"""The weight-only family."""
