"""A run: ``run(settings) -> Result``, whatever the model.

The registered model families (:mod:`thermojax.pipeline.families`) are asked which one claims
the configured model; that family checks the settings against what it takes and runs it: a
model thermojax samples goes through the named stages of
:func:`~thermojax.pipeline.run.diffusion.run_diffusion`, a checkpoint measured weight-only
through :mod:`thermojax.pipeline.run.checkpoint_run`. No Hydra here: the CLI, sweeps and tests
call :func:`run` directly with a :class:`BaselineConfig`.

Example:
    >>> from thermojax.pipeline import BaselineConfig, run
    >>> result = run(BaselineConfig(bit_width=2, num_time_groups=4))  # doctest: +SKIP
    >>> result.smoothness_score, result.interpretation.band  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging

from thermojax.models import shipped_path
from thermojax.pipeline.families import recognise
from thermojax.pipeline.results.schema import Result
from thermojax.pipeline.run.stages import STAGES, ProgressCallback, stage_names
from thermojax.pipeline.settings import BaselineConfig

__all__ = ["STAGES", "ProgressCallback", "run", "stage_names"]

log = logging.getLogger(__name__)


def run(config: BaselineConfig, *, progress: ProgressCallback | None = None) -> Result:
    """Quantize the configured model with Markov validation and measure everything.

    Args:
        config: the validated settings (a :class:`BaselineConfig` is valid once it exists).
        progress: optional ``progress(stage, index, total)`` callback (see :func:`stage_names`).

    Returns:
        The :class:`Result`, with the full sample arrays in ``result.samples``.

    Raises:
        UserInputError: a bad model path, settings the model's family does not take,
            ``num_time_groups`` above the model's timestep count, a smoothing window larger than
            a group, or a ``group_size`` that does not fit the model.
    """
    if not isinstance(config, BaselineConfig):
        raise TypeError(
            f"run() takes a BaselineConfig, got {type(config).__name__}; "
            "thermojax.cli.config.to_config converts a mapping or a Hydra config"
        )
    config = _with_shipped_path(config)
    family = recognise(config)
    config = family.check(config)
    log.info("config: %s", config.to_dict())
    log.info("model family: %s", family.name)
    return family.run(config, progress)


def _with_shipped_path(config: BaselineConfig) -> BaselineConfig:
    """``model.path`` of a shipped model other than the default one (``model.path`` unset)
    filled in."""
    default = type(config.model)().shipped
    if config.model.path is not None or config.model.shipped == default:
        return config
    path = str(shipped_path(config.model.shipped))
    return dataclasses.replace(config, model=dataclasses.replace(config.model, path=path))
