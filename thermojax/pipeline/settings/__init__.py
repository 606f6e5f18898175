"""The typed settings of a run: frozen dataclasses, validated when they are made.

A :class:`BaselineConfig` that exists is valid: ``__post_init__`` checks every value that the
types alone do not constrain and raises :class:`~thermojax.errors.UserInputError` with one line
naming the key and the value. The checks that need the model's T (:func:`check_model_limits`)
run once the model is loaded. Nothing here knows Hydra or OmegaConf: ``thermojax.cli.config``
turns a composed config or a plain mapping into these objects.

Example:
    >>> cfg = BaselineConfig(bit_width=4, calibration=CalibrationConfig(samples=16))
    >>> cfg.bit_width, cfg.calibration.samples, cfg.num_time_groups
    (4, 16, 4)
    >>> BaselineConfig(bit_width=3)
    Traceback (most recent call last):
    ...
    thermojax.errors.UserInputError: bit_width=3: weight bits must be 2, 4 or 8

The YAML / command-line key ``time_groups.lambda`` is a Python keyword, so the typed object calls it
``time_groups.lam``; :meth:`BaselineConfig.to_dict` writes it back as ``lambda``.
"""

from __future__ import annotations

from thermojax.pipeline.settings.act import ACT_MODES, ACT_ROTATIONS, ActConfig
from thermojax.pipeline.settings.baseline import BaselineConfig, check_model_limits, validate_config
from thermojax.pipeline.settings.model import (
    MAX_DEVICES,
    MODEL_DTYPES,
    MODEL_RESIDENCIES,
    MODEL_RUNS,
    SHIPPED_MODELS,
    CalibrationConfig,
    DataConfig,
    ModelConfig,
    SamplingConfig,
    sampler_specs,
    samplers_of,
)
from thermojax.pipeline.settings.quant import (
    HESSIAN_WEIGHTINGS,
    SUPPORTED_BIT_WIDTHS,
    WEIGHT_METHOD_NAMES,
    ExportConfig,
    QuantConfig,
    WeightsConfig,
)
from thermojax.pipeline.settings.reporting import WANDB_MODES, InterpretationConfig, WandbConfig
from thermojax.pipeline.settings.thermo import (
    SEGMENTATION_COSTS,
    SMOOTHING_LEVELS,
    SMOOTHING_METHODS,
    TIME_GROUP_STRATEGIES,
    ChainBudgetConfig,
    OptimizationConfig,
    PhasesConfig,
    SmoothingConfig,
    ThermoConfig,
    TimeGroupsConfig,
)

__all__ = [
    "ACT_MODES",
    "ACT_ROTATIONS",
    "HESSIAN_WEIGHTINGS",
    "MAX_DEVICES",
    "MODEL_DTYPES",
    "MODEL_RESIDENCIES",
    "MODEL_RUNS",
    "SEGMENTATION_COSTS",
    "SHIPPED_MODELS",
    "SMOOTHING_LEVELS",
    "SMOOTHING_METHODS",
    "SUPPORTED_BIT_WIDTHS",
    "TIME_GROUP_STRATEGIES",
    "WANDB_MODES",
    "WEIGHT_METHOD_NAMES",
    "ActConfig",
    "BaselineConfig",
    "CalibrationConfig",
    "ChainBudgetConfig",
    "DataConfig",
    "ExportConfig",
    "InterpretationConfig",
    "ModelConfig",
    "OptimizationConfig",
    "PhasesConfig",
    "QuantConfig",
    "SamplingConfig",
    "SmoothingConfig",
    "ThermoConfig",
    "TimeGroupsConfig",
    "WandbConfig",
    "WeightsConfig",
    "check_model_limits",
    "sampler_specs",
    "samplers_of",
    "validate_config",
]
