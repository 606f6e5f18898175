"""The whole configuration of a run (:class:`BaselineConfig`), its validation, and the checks that
need the model's T."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thermojax.core.quant import ACT_BITS_RANGE
from thermojax.errors import UserInputError
from thermojax.pipeline.settings.act import ActConfig, validate_act
from thermojax.pipeline.settings.checks import MAX_INT32, MAX_SEED, check_count, fail
from thermojax.pipeline.settings.model import (
    MAX_HELDOUT_WINDOWS,
    CalibrationConfig,
    DataConfig,
    ModelConfig,
    SamplingConfig,
    samplers_of,
    validate_model_choice,
)
from thermojax.pipeline.settings.quant import (
    BIT_WIDTHS_TEXT,
    SUPPORTED_BIT_WIDTHS,
    ExportConfig,
    QuantConfig,
    WeightsConfig,
    validate_export,
    validate_quant,
)
from thermojax.pipeline.settings.reporting import (
    WANDB_MODES,
    InterpretationConfig,
    WandbConfig,
    validate_interpretation,
)
from thermojax.pipeline.settings.thermo import (
    PhasesConfig,
    ThermoConfig,
    TimeGroupsConfig,
    validate_chain_budget,
    validate_phases,
    validate_thermo,
    validate_time_groups,
)
from thermojax.pipeline.weights.rules import validate_rules

__all__ = ["MAX_SEED", "BaselineConfig", "check_model_limits", "validate_config"]


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """The whole configuration of ``python -m thermojax.baseline``.

    Attributes:
        bit_width: weight bits (2, 4 or 8).
        act_bits: activation bits (2..16, fake-quantized per time group, or per token with
            ``act.mode=dynamic``).
        num_time_groups: G, contiguous groups of the model's T timesteps (1 <= G <= T).
        smoothness_threshold: a scale jump above this at a boundary is a violation.
        group_size: weight quantization group size along the input dimension.
        seed: seeds calibration and sampling noise (same seed, same numbers).
        thermo: Phase 2 smoothing and Phase 3 optimization, and the chain's error budget (all
            off by default).
        time_groups: uniform or adaptive group boundaries.
        phases: the phase experiment (off by default; ``experiment=phases``).
        act: how activations are quantized (static time-group parameters by default) and
            rotated first (not by default).
    """

    bit_width: int = 2
    act_bits: int = 8
    num_time_groups: int = 4
    smoothness_threshold: float = 0.3
    group_size: int = 64
    seed: int = 0
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    calibration: CalibrationConfig = dataclasses.field(default_factory=CalibrationConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
    interpretation: InterpretationConfig = dataclasses.field(default_factory=InterpretationConfig)
    thermo: ThermoConfig = dataclasses.field(default_factory=ThermoConfig)
    time_groups: TimeGroupsConfig = dataclasses.field(default_factory=TimeGroupsConfig)
    phases: PhasesConfig = dataclasses.field(default_factory=PhasesConfig)
    weights: WeightsConfig = dataclasses.field(default_factory=WeightsConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    quant: QuantConfig = dataclasses.field(default_factory=QuantConfig)
    act: ActConfig = dataclasses.field(default_factory=ActConfig)

    def __post_init__(self) -> None:
        validate_config(self)

    @property
    def enhanced(self) -> bool:
        """Whether any enhancement (smoothing, optimization, adaptive groups) is on."""
        return (
            self.thermo.smoothing.enabled
            or self.thermo.optimization.enabled
            or self.time_groups.strategy != "uniform"
        )

    def sampler_settings(self) -> dict[str, Any]:
        """``{"sampler", "steps", "eta"}`` of the sampler that samples (``steps`` None: T)."""
        return samplers_of(self.to_dict())[0]

    def calibration_settings(self) -> dict[str, Any]:
        """``{"sampler", "steps", "eta"}`` of the sampler that calibrates (:func:`samplers_of`)."""
        return samplers_of(self.to_dict())[1]

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain nested dicts with the YAML key names (JSON, HTML, W&B)."""
        data = dataclasses.asdict(self)
        data["time_groups"] = _yaml_time_groups(data["time_groups"])
        return data


def _yaml_time_groups(section: Mapping[str, Any]) -> dict[str, Any]:
    """``lam`` -> ``lambda``, in field order."""
    return {("lambda" if k == "lam" else k): v for k, v in section.items()}


def validate_config(cfg: BaselineConfig) -> None:
    """Check every value that the types alone do not constrain.

    ``num_time_groups <= T`` needs the model and is checked by the pipeline after loading it.

    Raises:
        UserInputError: naming the first offending key and its value.
    """
    if cfg.bit_width not in SUPPORTED_BIT_WIDTHS:
        raise fail("bit_width", cfg.bit_width, f"weight bits must be {BIT_WIDTHS_TEXT}")
    lo, hi = ACT_BITS_RANGE
    if not lo <= cfg.act_bits <= hi:
        raise fail("act_bits", cfg.act_bits, f"activation bits must be between {lo} and {hi}")
    if cfg.num_time_groups < 1:
        raise fail("num_time_groups", cfg.num_time_groups, "need at least 1 time group")
    threshold = cfg.smoothness_threshold
    if not math.isfinite(threshold) or threshold < 0:
        raise fail("smoothness_threshold", threshold, "must be a finite number >= 0")
    if cfg.group_size < 1:
        raise fail("group_size", cfg.group_size, "must be a positive integer")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise fail(
            "seed",
            cfg.seed,
            f"must be within [0, {MAX_SEED}] (a PRNG key holds 32 bits: a larger seed would "
            "repeat a smaller one's numbers)",
        )
    if cfg.model.path is not None and not _path_is("model.path", cfg.model.path, "exists"):
        raise fail("model.path", cfg.model.path, "no such file or directory")
    stats = cfg.calibration.stats
    if stats is not None and not _path_is("calibration.stats", stats, "is_file"):
        raise fail("calibration.stats", stats, "no such file")
    check_count(
        "data.heldout_windows",
        cfg.data.heldout_windows,
        at_most=MAX_HELDOUT_WINDOWS,
        why="windows of the held-out bound",
    )
    for key in ("heldout", "calibration"):  # is_file: a FIFO or a folder is refused unread
        text = getattr(cfg.data, key)
        if text is not None and not _path_is(f"data.{key}", text, "is_file"):
            raise fail(f"data.{key}", text, "no such file (a UTF-8 text file)")
    try:
        validate_rules(cfg.weights.rules, bits=cfg.bit_width, group_size=cfg.group_size)
    except UserInputError as exc:
        raise UserInputError(f"weights.rules: {exc}") from None
    validate_export(cfg.export)
    export = cfg.export.path
    if export is not None:
        target = Path(export).expanduser()
        if "\0" in export:  # no file system takes it; Path.exists() just says False
            raise fail("export.path", export, "a path cannot hold a NUL character")
        if _path_is("export.path", export, "exists") and (
            not target.is_dir() or any(target.iterdir())
        ):
            raise fail(
                "export.path", export, "exists and is not an empty folder (nothing is overwritten)"
            )
    if cfg.calibration.samples < 1:
        raise fail("calibration.samples", cfg.calibration.samples, "need at least 1 sample")
    if cfg.calibration.samples_per_step < 1:
        raise fail("calibration.samples_per_step", cfg.calibration.samples_per_step, "must be >= 1")
    if cfg.sampling.num_samples < 2:
        raise fail(
            "sampling.num_samples",
            cfg.sampling.num_samples,
            "need at least 2 samples (the quality figures compare two sample sets' spread)",
        )
    for key in ("calibration.samples", "calibration.samples_per_step", "sampling.num_samples"):
        section, name = key.split(".")
        count = getattr(getattr(cfg, section), name)
        if count > MAX_INT32:
            raise fail(key, count, f"must be <= {MAX_INT32} (JAX counts samples in int32)")
    validate_model_choice(cfg.model, cfg.sampling, cfg.calibration)
    validate_quant(cfg.quant)
    if cfg.wandb.mode not in WANDB_MODES:
        raise fail("wandb.mode", cfg.wandb.mode, "must be offline, online or disabled")
    validate_interpretation(cfg.interpretation)
    validate_thermo(cfg.thermo, cfg.time_groups, num_time_groups=cfg.num_time_groups)
    validate_time_groups(cfg.time_groups)
    validate_phases(cfg.phases, seed=cfg.seed, num_time_groups=cfg.num_time_groups)
    validate_act(
        cfg.act,
        enhanced=cfg.enhanced,
        phases=cfg.phases.enabled,
        export_path=cfg.export.path,
        devices=cfg.model.devices,
    )
    validate_chain_budget(
        cfg.thermo.chain_budget, act_mode=cfg.act.mode, smoothing=cfg.thermo.smoothing
    )


def _path_is(key: str, path: str, test: str) -> bool:
    """``Path(path).expanduser().<test>()``; a path the system cannot look at (too long, a
    folder it may not enter) is the user's, named with its key."""
    try:
        return bool(getattr(Path(path).expanduser(), test)())
    except OSError as err:
        raise fail(key, path, f"cannot be looked at: {err.strerror or err}") from None


def check_model_limits(cfg: BaselineConfig, num_timesteps: int) -> None:
    """The checks that need the model's T: groups, windows and adaptive group sizes.

    Raises:
        UserInputError: naming the key, its value and the limit.
    """
    groups = cfg.num_time_groups
    if groups > num_timesteps:
        raise UserInputError(
            f"num_time_groups={groups}: exceeds the model's {num_timesteps} timesteps"
        )
    smallest = num_timesteps // groups
    smoothing = cfg.thermo.smoothing
    if (
        smoothing.enabled
        and smoothing.level == "timestep"
        and cfg.time_groups.strategy == "uniform"
        and smoothing.window > smallest
    ):
        raise fail(
            "thermo.smoothing.window",
            smoothing.window,
            f"larger than a group: the smallest of the {groups} time groups has {smallest} "
            "timesteps",
        )
    if cfg.time_groups.strategy == "adaptive" and cfg.time_groups.min_group_size > smallest:
        raise fail(
            "time_groups.min_group_size",
            cfg.time_groups.min_group_size,
            f"must be <= T // num_time_groups = {smallest}",
        )
    if cfg.phases.enabled:
        for window in cfg.phases.windows:
            if window > smallest:
                raise fail(
                    "phases.windows",
                    window,
                    f"larger than a group: the smallest of the {groups} time groups has "
                    f"{smallest} timesteps",
                )
        if cfg.phases.min_group_size > smallest:
            raise fail(
                "phases.min_group_size",
                cfg.phases.min_group_size,
                f"must be <= T // num_time_groups = {smallest}",
            )
