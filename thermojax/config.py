"""Typed configuration of a baseline run: frozen dataclasses, Hydra's ConfigStore, validation.

``conf/config.yaml`` composes on top of the ``baseline_schema`` node registered here, so Hydra
rejects a misspelled key or a wrongly typed value (struct mode stays on). :func:`to_config` turns a
composed ``DictConfig`` (or a plain mapping, as sweeps and tests pass) into a frozen
:class:`BaselineConfig`, and :func:`validate_config` checks the values, raising
:class:`~thermojax.errors.UserInputError` with a one-line message that names the key and value.

Example:
    >>> cfg = to_config({"bit_width": 4, "calibration": {"samples": 16}})
    >>> cfg.bit_width, cfg.calibration.samples, cfg.num_time_groups
    (4, 16, 4)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from thermojax.errors import UserInputError

__all__ = [
    "SUPPORTED_BIT_WIDTHS",
    "WANDB_MODES",
    "BaselineConfig",
    "CalibrationConfig",
    "ConfigRejected",
    "InterpretationConfig",
    "ModelConfig",
    "SamplingConfig",
    "ValidateConfigCallback",
    "WandbConfig",
    "describe_config_error",
    "register_configs",
    "remove_if_fresh_and_empty",
    "to_config",
    "validate_config",
]

SUPPORTED_BIT_WIDTHS = (2, 4, 8)
WANDB_MODES = ("offline", "online", "disabled")
SCHEMA_NAME = "baseline_schema"

# OmegaConf resolves the annotations itself; keep Optional (not `X | None`) for its type checker.


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which model to quantize.

    Attributes:
        name: display name in the reports (defaults to the model's own name when empty).
        path: checkpoint path; ``None`` is the digits DDPM shipped with thermojax.
    """

    name: str = "digits-ddpm"
    path: Optional[str] = None  # noqa: UP045


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """Per-timestep calibration: how many sampler runs and stored values per step."""

    samples: int = 128
    samples_per_step: int = 64


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Sampling for the quality section and ``samples.npz`` (fp32 and quantized, same noise)."""

    num_samples: int = 64


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases tracking: ``offline`` (default, no network), ``online`` or ``disabled``."""

    mode: str = "offline"
    project: str = "thermojax"
    group: Optional[str] = None  # noqa: UP045


@dataclasses.dataclass(frozen=True)
class InterpretationConfig:
    """Band limits and criteria for interpreting a baseline (the seed's values, for Dream 7B INT2).

    The band is set by the smoothness score: ``poor`` below ``poor_below``, ``excellent`` above
    ``excellent_above``, ``good`` in between. The other fields are the bands' criteria.
    """

    poor_below: float = 0.65
    excellent_above: float = 0.78
    good_max_violations: int = 3
    excellent_max_violations: int = 1
    excellent_min_boundary_score: float = 0.70
    good_min_boundary_score: float = 0.60
    poor_boundary_score: float = 0.50
    excellent_min_cosine: float = 0.75
    good_min_cosine: float = 0.70


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """The whole configuration of ``python -m thermojax.baseline``.

    Attributes:
        bit_width: weight bits (2, 4 or 8).
        act_bits: activation bits (2..16, fake-quantized per time group).
        num_time_groups: G, contiguous groups of the model's T timesteps (1 <= G <= T).
        smoothness_threshold: a scale jump above this at a boundary is a violation.
        group_size: weight quantization group size along the input dimension.
        seed: seeds calibration and sampling noise (same seed, same numbers).
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
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
    interpretation: InterpretationConfig = dataclasses.field(default_factory=InterpretationConfig)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain nested dicts (for the JSON, HTML and W&B)."""
        return dataclasses.asdict(self)


def _writable_schema() -> DictConfig:
    """The schema as a typed DictConfig that composition may override.

    OmegaConf marks nodes of frozen dataclasses read-only, which would reject every override;
    the typed objects stay frozen (``to_config``), only this composition node is writable.
    """
    node = OmegaConf.structured(BaselineConfig)
    _clear_readonly(node)
    # Dataclass-typed nodes reject unknown keys by themselves; Hydra puts the composed config in
    # struct mode after adding its own `hydra` node, so the root flag stays unset here.
    return node


def _clear_readonly(node: DictConfig) -> None:
    node._set_flag("readonly", None)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _clear_readonly(child)


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore under ``baseline_schema``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=_writable_schema())


def to_config(cfg: BaselineConfig | DictConfig | Mapping[str, Any]) -> BaselineConfig:
    """Convert a composed config or a (partial) mapping to a typed, validated ``BaselineConfig``.

    A mapping may leave keys out (defaults apply); unknown keys and wrong types are errors.

    Raises:
        UserInputError: an unknown key, a value of the wrong type or an invalid value.
    """
    if isinstance(cfg, BaselineConfig):
        typed = cfg
    else:
        try:
            if isinstance(cfg, DictConfig):
                cfg = copy.deepcopy(cfg)
                if "hydra" in cfg:
                    with read_write(cfg), open_dict(cfg):
                        del cfg["hydra"]
                data = OmegaConf.to_container(cfg, resolve=True)
            else:
                data = dict(cfg)
            merged = OmegaConf.merge(_writable_schema(), data)
            typed = OmegaConf.to_object(merged)
        except OmegaConfBaseException as exc:
            raise UserInputError(describe_config_error(exc)) from None
    validate_config(typed)
    return typed


def _fail(key: str, value: Any, reason: str) -> UserInputError:
    return UserInputError(f"{key}={value!r}: {reason}")


def validate_config(cfg: BaselineConfig) -> None:
    """Check every value that the types alone do not constrain.

    ``num_time_groups <= T`` needs the model and is checked by the pipeline after loading it.

    Raises:
        UserInputError: naming the first offending key and its value.
    """
    if cfg.bit_width not in SUPPORTED_BIT_WIDTHS:
        raise _fail("bit_width", cfg.bit_width, "weight bits must be 2, 4 or 8")
    if not 2 <= cfg.act_bits <= 16:
        raise _fail("act_bits", cfg.act_bits, "activation bits must be between 2 and 16")
    if cfg.num_time_groups < 1:
        raise _fail("num_time_groups", cfg.num_time_groups, "need at least 1 time group")
    threshold = cfg.smoothness_threshold
    if not math.isfinite(threshold) or threshold < 0:
        raise _fail("smoothness_threshold", threshold, "must be a finite number >= 0")
    if cfg.group_size < 1:
        raise _fail("group_size", cfg.group_size, "must be a positive integer")
    if cfg.seed < 0:
        raise _fail("seed", cfg.seed, "must be >= 0")
    if cfg.model.path is not None and not Path(cfg.model.path).expanduser().exists():
        raise _fail("model.path", cfg.model.path, "no such file or directory")
    if cfg.calibration.samples < 1:
        raise _fail("calibration.samples", cfg.calibration.samples, "need at least 1 sample")
    if cfg.calibration.samples_per_step < 1:
        raise _fail(
            "calibration.samples_per_step", cfg.calibration.samples_per_step, "must be >= 1"
        )
    if cfg.sampling.num_samples < 1:
        raise _fail("sampling.num_samples", cfg.sampling.num_samples, "need at least 1 sample")
    if cfg.wandb.mode not in WANDB_MODES:
        raise _fail("wandb.mode", cfg.wandb.mode, "must be offline, online or disabled")
    bands = cfg.interpretation
    for name in ("poor_below", "excellent_above") + tuple(
        f.name for f in dataclasses.fields(bands) if f.name.endswith(("_score", "_cosine"))
    ):
        value = getattr(bands, name)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise _fail(f"interpretation.{name}", value, "must be within [0, 1]")
    if bands.poor_below > bands.excellent_above:
        raise _fail(
            "interpretation.poor_below",
            bands.poor_below,
            f"must not exceed interpretation.excellent_above={bands.excellent_above!r}",
        )
    for name in ("good_max_violations", "excellent_max_violations"):
        if getattr(bands, name) < 0:
            raise _fail(f"interpretation.{name}", getattr(bands, name), "must be >= 0")


_UNKNOWN_KEY_RE = re.compile(
    r"Could not override '(?P<key>[^']+)'.*?use \+(?P<override>\S+)", re.DOTALL
)
_MERGE_RE = re.compile(r"Error merging override (?P<override>\S+)")


def describe_config_error(exc: BaseException) -> str:
    """One line for a Hydra or OmegaConf configuration error, naming the key and the value.

    Hydra reports composition errors (unknown key, value of the wrong type, missing group
    option) over several lines, with OmegaConf's error as the cause; this keeps what the user
    needs: the override as typed, the key, and why it was rejected.
    """
    text = str(exc).strip()
    text = text.removeprefix("In 'config': ").strip()
    cause = exc.__cause__
    cause_line = str(cause).strip().splitlines()[0] if cause is not None and str(cause) else ""
    unknown = _UNKNOWN_KEY_RE.search(text)
    if unknown:
        return (
            f"{unknown.group('override')}: unknown config key '{unknown.group('key')}' "
            "(`python -m thermojax.baseline --cfg job` lists the keys)"
        )
    merge = _MERGE_RE.search(text)
    if merge and cause_line:
        return f"{merge.group('override')}: {cause_line}"
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        first = text.splitlines()[0] if text else type(exc).__name__
        if "not in struct" in first or re.search(r"Key '[^']+' not in '", first):
            return f"unknown config key '{key}'"
        return f"{key}: {first}" if key else first
    kept: list[str] = []
    listing = False
    for line in text.splitlines():
        stripped = line.strip().rstrip(".")
        if stripped.startswith(("Config search path", "Set the environment variable")):
            break
        if not stripped:
            continue
        if listing and line[:1].isspace():  # an option under "Available options in ...:"
            kept[-1] += (" " if kept[-1].endswith(":") else ", ") + stripped
            continue
        kept.append(stripped)
        listing = stripped.endswith(":")
    return "; ".join(kept) if kept else type(exc).__name__


class ConfigRejected(BaseException):
    """Carries a :class:`UserInputError` out of a Hydra callback.

    Hydra turns an ``Exception`` raised in a callback into a warning and starts the job anyway;
    a ``BaseException`` passes through, so a rejected config stops before Hydra creates the run
    folder. ``thermojax.baseline.main`` prints it as one ``error:`` line.
    """

    def __init__(self, error: UserInputError) -> None:
        super().__init__(str(error))
        self.error = error


_fresh_run_dirs: dict[Path, Path] = {}
"""Run folder -> its topmost ancestor that did not exist before this run (set by the callback)."""


def remove_if_fresh_and_empty(run_dir: str | os.PathLike[str]) -> None:
    """Remove ``run_dir`` and the parents Hydra created for it, if this run created them and
    they are still empty (a user error found after Hydra made the folder leaves nothing)."""
    path = Path(run_dir).resolve()
    top = _fresh_run_dirs.get(path)
    if top is None:
        return
    while True:
        try:
            path.rmdir()
        except OSError:
            return
        if path == top:
            return
        path = path.parent


class ValidateConfigCallback(Callback):
    """Hydra callback: validate the composed config before Hydra creates the run directory.

    A bad value (``bit_width=3``) then leaves nothing behind, not even an empty run folder. It
    also records whether the run folder is new, so that a user error found later (one that
    needs the model, e.g. ``num_time_groups`` above its T) can remove the empty folder again.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Raise :class:`ConfigRejected` for an invalid value."""
        try:
            to_config(config)
        except UserInputError as exc:
            raise ConfigRejected(exc) from None
        run_dir = Path(str(config.hydra.run.dir)).resolve()
        top = run_dir
        while not top.parent.exists():
            top = top.parent
        if not run_dir.exists():
            _fresh_run_dirs[run_dir] = top
